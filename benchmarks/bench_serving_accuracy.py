"""Benchmark: `perf serve` against real serving runs.

Every aggregated (not disaggregated) vLLM and SGLang row of
../shared/data/raw/aiconfigurator/silicon_dev.csv is a measured `bench serve` run: mean TTFT and
TPOT (ms) at a nominal ISL/OSL and client concurrency, with the engine, its version and the
parallelism. For each row we can express (a catalog model and GPU, a precision we plan for, one
replica inside a node, no pipeline parallelism) this runs `perf serve` on the default
source as the run was launched (serving_recipes: the client's length spread, outputs that
ended at the model's end-of-sequence token, and the launch script's engine flags), the same
closed loop on the analytic model alone (not for runs with attention data parallelism, which it
does not model), and asks aiconfigurator-core's own static estimate (EngineHandle.run_static,
batch = concurrency, per attention-DP rank: TTFT = its context phase, TPOT = its generation
phase per token), then prints median and p90 |error| per GPU × engine × model, and how many
rows were left out and why. Constants fitted to this file (the host time, frontend time,
output lag and prompt-iteration scale per engine in perf/engines.py, the decode-step scale per
engine and model in perf/serving_fit.yaml, the gap-analysis vLLM runs' output spread in
serving_recipes.py) make its figures in-sample; their held-out errors are given where they
are fitted. `--unscaled` leaves the decode-step scale out; `--engine-defaults` replays every
run with fixed lengths and the engines' default flags instead of as launched.

Run: python benchmarks/bench_serving_accuracy.py [--csv PATH] [--limit N] [--unscaled]
     [--engine-defaults] [--rows OUT.csv]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from serving_recipes import (
    PROMPTS_PER_CLIENT,
    attention_dp_copies,
    eos_lengths,
    eos_outputs,
    inferencex,
    lengths,
    parallelism,
    recipe,
)

from planner_cli import api
from planner_cli.errors import PlannerError
from planner_cli.perf import measured
from planner_cli.perf.analytic import DEFAULT_CONSTANTS
from planner_cli.perf.engines import FRONTEND_S, OUTPUT_LAG, UNCAPPED_SEQS, prefill_first
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.measured import AIC_SYSTEMS, NotCovered
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.sim.closed_loop import closed_loop
from planner_cli.specs.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT.parent / "shared" / "data" / "raw" / "aiconfigurator" / "silicon_dev.csv"
SYSTEM_TO_GPU = {v: k for k, v in AIC_SYSTEMS.items()}
# the rows' precisions -> ours; int4 rows are Kimi-K2.5's own checkpoint (4-bit weight-only
# experts, group 32), planned as int4-awq (4-bit weight-only, group 128)
PRECISIONS = {"bf16": "bf16", "fp8": "fp8", "fp4": "fp4", "int4": "int4-awq"}
# checkpoints whose 4-bit weights are MXFP4 experts beside bf16 layers (openai/gpt-oss-*): the
# rows' "fp4" is that format on every GPU, Hopper included
MXFP4_CHECKPOINTS = {"gpt-oss-120b"}


def concurrency(source: str) -> int | None:
    m = re.search(r"silicon_concurrency=(\d+)", source or "")
    return int(m.group(1)) if m else None


def aic_static(shape: ReplicaShape, engine: str, isl: int, osl: int, c: int
               ) -> tuple[float, float] | None:
    """aiconfigurator-core's own estimate: static batching of c requests (with attention data
    parallelism, its batch is one rank's: c spread over the ranks)."""
    try:
        try:  # the tables our measured source settled on, else the first it tried
            handle = measured.measured_cost(shape, engine)._h
        except NotCovered:
            handle = measured._handle(measured.coverage(shape, engine), shape,
                                      measured._variants(shape)[0][0])
        with measured._quiet():
            ctx_ms, gen_ms, _ = handle.run_static(batch_size=-(-c // shape.dp), isl=isl,
                                                  osl=osl)
    except (NotCovered, Exception):  # its own errors: no estimate for this row
        return None
    return ctx_ms, gen_ms / max(osl - 1, 1)


@dataclass(frozen=True)
class Run:
    """One measured serving run we can express: its row and what perf serve is given."""
    row: pd.Series
    shape: ReplicaShape
    engine: str
    isl: int
    osl: int
    concurrency: int


def usable_runs(csv: Path) -> tuple[list[Run], Counter[str]]:
    """Every aggregated vLLM and SGLang row of a silicon CSV that perf serve can express, in
    file order, and how many were left out and why."""
    catalog = load_catalog()
    rows = pd.read_csv(csv)
    rows = rows[(rows["mode"] == "agg") & rows["backend"].isin(["vllm", "sglang"])]
    skipped: Counter[str] = Counter()
    runs: list[Run] = []
    records = [r for _, r in rows.iterrows()]
    copies = attention_dp_copies(records)
    for r in records:
        model = r["model_path"]
        if model not in catalog.models:
            skipped[f"no card for {model}"] += 1
            continue
        gpu = SYSTEM_TO_GPU.get(r["system"])
        if gpu is None or gpu not in catalog.gpus:
            skipped[f"no GPU for {r['system']}"] += 1
            continue
        # no precision recorded (the Qwen3-32B runs): the engine served the checkpoint as
        # shipped, in its config's torch_dtype (bfloat16 for every such row)
        precision = PRECISIONS.get(r["precision"]) if isinstance(r["precision"], str) else (
            "bf16" if pd.isna(r["gemm_quant_mode"]) else None)
        if precision is None:
            skipped[f"precision {r['precision']}"] += 1
            continue
        if precision == "fp4" and catalog.model(model).name in MXFP4_CHECKPOINTS:
            precision = "mxfp4"
        # a run of a pre-quantised checkpoint ran in its format (Qwen's FP8 releases are
        # block-scaled, which the rows' "fp8" does not say); a row that says otherwise keeps
        # its own precision
        with contextlib.suppress(PlannerError):
            precision = catalog.model(model).served_precision(model, precision, r["id"])
        if r["pp_size"] > 1:
            skipped["pipeline parallel"] += 1
            continue
        if r["id"] in copies:
            skipped["an attention-DP run's figures, its flag lost"] += 1
            continue
        try:
            tp, moe_ep, dp = parallelism(r)
        except ValueError as exc:
            skipped[str(exc)] += 1
            continue
        c = concurrency(r["silicon_data_source"])
        card = catalog.model(model)
        try:
            shape = ReplicaShape(card, catalog.gpu(gpu), tp, 1, precision,
                                 ep=moe_ep if card.moe else 1, dp=dp)
        except PlannerError as exc:
            skipped[f"shape: {exc.message[:40]}"] += 1
            continue
        if c is None:
            skipped["no concurrency"] += 1
            continue
        runs.append(Run(r, shape, r["backend"], int(r["isl"]), int(r["osl"]), c))
    return runs, skipped


def launch(run: Run, as_launched: bool = True) -> dict:
    """perf serve's arguments that replay a run: its client's lengths and its engine flags
    (serving_recipes), or fixed lengths and the engine's defaults."""
    if not as_launched:
        return {"isl": run.isl, "osl": run.osl}
    if eos_outputs(run.engine, run.row["silicon_data_source"]):
        osl, ratio = eos_lengths(run.osl)
        return {"isl": run.isl, "osl": osl, "output_range_ratio": ratio}
    if not inferencex(run.row["silicon_data_source"]):
        return {"isl": run.isl, "osl": run.osl}
    s = run.shape
    isl, ratio = lengths(run.isl)
    flags = recipe(run.engine, s.card.name, s.precision, s.gpu.name, s.gpus, run.isl,
                   run.osl, run.concurrency)
    return {"isl": isl, "osl": lengths(run.osl)[0], "range_ratio": ratio,
            "precision": flags.precision or s.precision,
            "num_prompts": PROMPTS_PER_CLIENT * run.concurrency,
            "kv_cache_dtype": flags.kv_cache_dtype,
            "max_num_batched_tokens": flags.max_num_batched_tokens,
            "max_num_seqs": flags.max_num_seqs,
            "gpu_memory_utilization": flags.gpu_memory_utilization,
            "scheduler_recv_interval": flags.scheduler_recv_interval}


def predict(run: Run, as_launched: bool = True) -> dict:
    """perf serve's figures for a run (PlannerError where it cannot serve it)."""
    return serve(run, launch(run, as_launched))


def serve(run: Run, how: dict) -> dict:
    """perf serve's figures for a run replayed with `how` (launch's arguments)."""
    s, how = run.shape, dict(how)
    return api.perf_serve(s.card.name, s.gpu.name, how.pop("isl"), how.pop("osl"),
                          run.concurrency, s.tp, 1, s.ep, how.pop("precision", s.precision),
                          dp=s.dp, engine=run.engine, **how)


def engine_predictions(runs: list[Run], engine: str) -> Iterator[tuple[Run, dict]]:
    """(run, perf serve's figures) for every run of `engine` that perf serve can serve."""
    for run in runs:
        if run.engine != engine:
            continue
        try:
            yield run, predict(run)
        except PlannerError:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--limit", type=int, default=None, help="first N usable rows only")
    parser.add_argument("--engine-defaults", action="store_true",
                        help="replay every run with fixed lengths and the engines' default "
                        "flags, not as it was launched")
    parser.add_argument("--rows", type=Path, default=None,
                        help="write every predicted row (measured, ours, analytic, aic) here")
    parser.add_argument("--unscaled", action="store_true",
                        help="the measured tables without the fitted decode-step scale")
    args = parser.parse_args()
    with measured.unscaled() if args.unscaled else contextlib.nullcontext():
        report(args)


def report(args: argparse.Namespace) -> None:
    errors: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    used = 0
    table: list[dict] = []
    t0 = time.perf_counter()
    runs, skipped = usable_runs(args.csv)
    for run in runs:
        r, shape, c, isl, osl = run.row, run.shape, run.concurrency, run.isl, run.osl
        card, gpu, tp, precision = shape.card, shape.gpu.name, shape.tp, shape.precision
        how = launch(run, not args.engine_defaults)
        try:
            ours = serve(run, how)
        except PlannerError as exc:
            skipped[f"perf serve: {exc.message[:50]}"] += 1
            continue
        # the same closed loop as perf serve's (memory, batching, engine), on the analytic cost
        # (which has no attention data parallelism: no figure for those runs)
        analytic = None if shape.dp > 1 else closed_loop(
            IterationCost(replace(shape, kv_dtype=ours["kv_cache_dtype"],
                                  precision=ours["precision"]), DEFAULT_CONSTANTS),
            ours["kv_capacity_tokens"], ours["isl"], ours["osl"], c, ours["num_prompts"],
            ours["max_num_batched_tokens"], ours["max_num_seqs"] or UNCAPPED_SEQS,
            prefill_first(r["backend"]), ours["random_range_ratio"],
            state_tokens=ours["state_tokens_per_sequence"], frontend_s=FRONTEND_S[r["backend"]],
            recv_interval=ours["scheduler_recv_interval"], output_lag=OUTPUT_LAG[r["backend"]],
            output_range_ratio=how.get("output_range_ratio"))
        plain = (analytic.mean_ttft_ms, analytic.mean_tpot_ms) if analytic else None
        key = (gpu, r["backend"], card.name)
        truth = {"ttft": float(r["silicon_ttft_ms"]), "tpot": float(r["silicon_tpot_ms"])}
        aic = aic_static(replace(shape, precision=ours["precision"]), r["backend"], isl, osl, c)
        for what, got in (("ours", (ours["mean_ttft_ms"], ours["mean_tpot_ms"])),
                          ("analytic", plain),
                          ("aic", aic)):
            if got is None:
                continue
            errors[key][f"{what}_ttft"].append(abs(got[0] / truth["ttft"] - 1))
            errors[key][f"{what}_tpot"].append(abs(got[1] / truth["tpot"] - 1))
        errors[key]["sources"].append(ours["source"])  # type: ignore[arg-type]
        table.append({"id": r["id"], "gpu": gpu, "engine": r["backend"], "model": card.name,
                      "precision": precision, "tp": tp, "ep": shape.ep, "dp": shape.dp,
                      "isl": isl, "osl": osl,
                      "concurrency": c, "ttft_ms": truth["ttft"], "tpot_ms": truth["tpot"],
                      "ours_ttft_ms": ours["mean_ttft_ms"], "ours_tpot_ms": ours["mean_tpot_ms"],
                      "analytic_ttft_ms": plain[0] if plain else None,
                      "analytic_tpot_ms": plain[1] if plain else None,
                      "aic_ttft_ms": aic[0] if aic else None,
                      "aic_tpot_ms": aic[1] if aic else None, "source": ours["source"]})
        used += 1
        if args.limit and used >= args.limit:
            break
    if args.rows is not None:
        pd.DataFrame(table).to_csv(args.rows, index=False)
    print(f"{used} rows predicted in {time.perf_counter() - t0:.0f} s; "
          f"{sum(skipped.values())} left out")
    for why, n in skipped.most_common():
        print(f"  left out {n:4d}: {why}")
    header = (f"{'GPU':<10} {'engine':<7} {'model':<14} {'rows':>4}  "
              f"{'TTFT med/p90 ours':>18} {'analytic':>14} {'aic static':>14}  "
              f"{'TPOT med/p90 ours':>18} {'analytic':>14} {'aic static':>14}")
    print(header)

    def cell(values: list[float]) -> str:
        if not values:
            return "—"
        return f"{np.median(values):.0%}/{np.percentile(values, 90):.0%}"

    everything: dict[str, list[float]] = defaultdict(list)
    for key, e in sorted(errors.items()):
        n = len(e["ours_ttft"])
        print(f"{key[0]:<10} {key[1]:<7} {key[2]:<14} {n:>4}  {cell(e['ours_ttft']):>18} "
              f"{cell(e['analytic_ttft']):>14} {cell(e['aic_ttft']):>14}  "
              f"{cell(e['ours_tpot']):>18} {cell(e['analytic_tpot']):>14} "
              f"{cell(e['aic_tpot']):>14}")
        for k, v in e.items():
            if k != "sources":
                everything[k] += v
    print(f"{'all':<33} {len(everything['ours_ttft']):>4}  "
          f"{cell(everything['ours_ttft']):>18} {cell(everything['analytic_ttft']):>14} "
          f"{cell(everything['aic_ttft']):>14}  {cell(everything['ours_tpot']):>18} "
          f"{cell(everything['analytic_tpot']):>14} {cell(everything['aic_tpot']):>14}")


    print("in-sample for the constants fitted to silicon_dev.csv (perf/engines.py: host time "
          "per iteration and per sequence, frontend time, output lag and prompt-iteration "
          "scale per engine; perf/serving_fit.yaml: decode-step scale per engine and model; "
          "serving_recipes.py: the gap-analysis vLLM runs' output spread), whose comments give "
          "their held-out errors")


if __name__ == "__main__":
    main()
