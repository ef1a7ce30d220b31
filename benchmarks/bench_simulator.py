"""Benchmark: simulator speed on the full 1-hour Azure conv trace (19,366 requests) through a
3-stage cascade R1-Distill-Qwen-7B -> R1-Distill-Llama-70B -> DeepSeek-R1 (int4) on 32 H100
(issue target: <= 5 s, stretch 1 s), and how run time grows when the trace is tiled 10x and
100x in time. Routing uses seeded synthetic judge scores (timing only, not quality).
Costs come from each shape's default source (aiconfigurator-core's measured vLLM kernels where
they cover it, else the analytic model; printed per stage), or `--source analytic` for the
analytic model throughout.
Run: python benchmarks/bench_simulator.py [--tiles 1,10,100] [--source default|analytic]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from planner_cli import io
from planner_cli.perf.analytic import DEFAULT_CONSTANTS
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.memory import memory_figures
from planner_cli.perf.profiles import perf_model
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.sim.cascade import StageConfig, simulate_cascade
from planner_cli.specs.catalog import load_catalog
from planner_cli.workload.routing import route

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "fixtures" / "azure_conv_2023.csv"
# (model, precision, tp, replicas) on 4 nodes x 8 H100 SXM: 8 + 16 + 8 GPUs
STAGES = [("deepseek-r1-distill-qwen-7b", "bf16", 1, 8),
          ("deepseek-r1-distill-llama-70b", "bf16", 4, 4),
          ("deepseek-r1", "int4-awq", 8, 1)]
THRESHOLDS = [50.0, 60.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="1,10,100")
    parser.add_argument("--balancer", default="round-robin",
                        choices=["round-robin", "least-outstanding"])
    parser.add_argument("--source", default="default", choices=["default", "analytic"])
    args = parser.parse_args()
    catalog = load_catalog()
    gpu = catalog.gpu("h100-sxm")
    configs = []
    for model, precision, tp, replicas in STAGES:
        shape = ReplicaShape(catalog.model(model), gpu, tp, 1, precision)
        mem = memory_figures(shape, max_model_len=32768)
        if args.source == "analytic":
            cost, source = IterationCost(shape, DEFAULT_CONSTANTS), "analytic"
        else:
            pm = perf_model(shape, engine="vllm")
            cost, source = pm.cost(), pm.source
        print(f"{model}: {source}")
        configs.append(StageConfig(model, cost, replicas, mem.kv_capacity_tokens))
    trace = io.read_trace(TRACE)
    base_t = (trace.timestamps_ms - trace.timestamps_ms[0]) / 1000.0
    duration = float(base_t[-1]) + 1.0
    print(f"trace: {len(trace):,} requests over {duration / 60:.1f} min; "
          f"cascade: {' -> '.join(s[0] for s in STAGES)} on 32 x h100-sxm; "
          f"balancer {args.balancer}")
    for tiles in (int(x) for x in args.tiles.split(",")):
        arrivals = np.concatenate([base_t + i * duration for i in range(tiles)])
        prompts = np.tile(trace.input_lengths, tiles)
        outputs = np.tile(trace.output_lengths, tiles)
        n = arrivals.shape[0]
        scores = np.random.default_rng(0).uniform(0, 100, size=(n, 3))
        routing = route(scores, scores, THRESHOLDS)
        t = time.perf_counter()
        result = simulate_cascade(configs, arrivals, prompts, [outputs] * 3,
                                  routing.answered_by, 0.0, args.balancer)
        wall = time.perf_counter() - t
        visits = sum(int(s.visited.sum()) for s in result.stages)
        e2e = result.e2e
        print(f"x{tiles:<4d} {n:>10,} requests ({visits:,} stage visits): {wall:7.2f} s wall, "
              f"{n / wall:,.0f} requests/s simulated; e2e p95 "
              f"{np.percentile(e2e, 95):.2f} s, iterations "
              f"{sum(s.iterations for s in result.stages):,}")


if __name__ == "__main__":
    main()
