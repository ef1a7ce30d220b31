"""The replay benchmark: the trace in Mooncake JSONL and the commands that replay it against the
deployment (vLLM's timed_trace dataset and AIPerf's mooncake_trace fixed schedule), with the
plan's predicted figures to compare against."""

from __future__ import annotations

import json
import math
import shlex

from planner_cli.export.router import ROUTER_PORT, RouterConfig
from planner_cli.plan import Predicted
from planner_cli.specs.cascade import SloSpec
from planner_cli.workload.trace import Trace

q = shlex.quote
BLOCK = 512  # tokens per prefix-hash block (Mooncake's)


def mooncake_lines(trace: Trace) -> list[str]:
    """Mooncake JSONL: timestamp ms, input/output length, hash_ids of ceil(input/512) blocks
    (the trace's own when it has them, else fresh ids: no shared prefixes assumed)."""
    out = []
    next_id = 0
    ts = trace.timestamps_ms - trace.timestamps_ms[0]
    for r in range(len(trace)):
        inp = int(trace.input_lengths[r])
        hashes = trace.hash_ids(r)
        if hashes is None:
            n = math.ceil(inp / BLOCK)
            hashes = list(range(next_id, next_id + n))
            next_id += n
        t = round(float(ts[r]), 3)
        out.append(json.dumps({"timestamp": int(t) if t.is_integer() else t,
                               "input_length": inp,
                               "output_length": int(trace.output_lengths[r]),
                               "hash_ids": hashes}) + "\n")
    return out


ROUTER_URL = f"http://127.0.0.1:{ROUTER_PORT}"  # where `cascadia-plan route` listens


def commands(cfg: RouterConfig, slo: SloSpec | None, requests: int) -> str:
    """The replay commands, against the cascade router (ROUTER_URL, default the router's own
    address); both benchmarks are told the trace's request count (vLLM's otherwise stops at
    its default 1,000 prompts)."""
    first = cfg.tiers[0]
    url = '"$ROUTER_URL"'
    goodput = []
    if slo is not None:
        if slo.ttft_s:
            goodput.append(f"ttft:{slo.ttft_s * 1000:g}")
        if slo.tpot_s:
            goodput.append(f"tpot:{slo.tpot_s * 1000:g}")
        if slo.e2e_s:
            goodput.append(f"e2el:{slo.e2e_s * 1000:g}")
    vllm_cmd = ["vllm", "bench", "serve", "--backend", "openai-chat", "--base-url", url,
                "--endpoint", "/v1/chat/completions", "--model", q(first.hf_id),
                "--served-model-name", q(cfg.name), "--dataset-name", "timed_trace",
                "--dataset-path", '"$HERE"/trace.mooncake.jsonl', "--num-prompts", str(requests),
                "--timed-trace-chunk-hash-size", str(BLOCK),
                "--timed-trace-sec-multiplier", "0.001", "--save-result",
                "--result-dir", '"$HERE"/results']
    if goodput:
        vllm_cmd += ["--goodput", *goodput]
    aiperf_cmd = ["aiperf", "profile", "--model", q(cfg.name), "--url", url,
                  "--endpoint-type", "chat", "--input-file", '"$HERE"/trace.mooncake.jsonl',
                  "--custom-dataset-type", "mooncake_trace", "--fixed-schedule",
                  "--request-count", str(requests),
                  "--artifact-dir", '"$HERE"/results/aiperf']
    lines = ["#!/usr/bin/env bash",
             "# Replay the planned trace through the cascade router (cascadia-plan export): "
             "start it first,",
             "#   cascadia-plan route --config ../router/cascade.yaml",
             "# and set ROUTER_URL when it listens elsewhere. The tokenizer is tier 1's.",
             "set -euo pipefail", 'HERE="$(cd "$(dirname "$0")" && pwd)"',
             f'ROUTER_URL="${{ROUTER_URL:-{ROUTER_URL}}}"',
             'mkdir -p "$HERE"/results', "",
             "# vLLM's benchmark (timed_trace replays the timestamps)",
             " ".join(vllm_cmd), "",
             "# or AIPerf (mooncake_trace with a fixed schedule)",
             "# " + " ".join(aiperf_cmd)]
    return "\n".join(lines) + "\n"


def predictions(predicted: Predicted | None) -> str:
    if predicted is None:
        return json.dumps({"note": "the plan holds no predicted figures (hand-written plan); "
                                   "run cascadia-plan simulate --plan PLAN"}, indent=2) + "\n"
    sim = predicted.simulated
    keep = {"e2e_latency_s": sim.e2e_latency_s.model_dump(),
            "ttft_s": sim.ttft_s.model_dump(), "throughput_rps": sim.throughput_rps,
            "slo_scale": sim.slo_scale,
            "stages": [{"stage": s.stage, "requests": s.requests,
                        "ttft_s": s.ttft_s.model_dump(), "latency_s": s.latency_s.model_dump(),
                        "tpot_s": s.tpot_s.model_dump()} for s in sim.stages]}
    return json.dumps(keep, indent=2) + "\n"
