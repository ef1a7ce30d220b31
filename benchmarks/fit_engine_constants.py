"""Fit the prompt-iteration scale and the frontend time per engine (planner_cli/perf/engines.py:
PREFILL_SCALE, FRONTEND_S) to real serving runs, and say how well they hold out.

Reads ../shared/data/raw/aiconfigurator/silicon_dev.csv, the one file of measured serving runs
constants may be fitted to (this script takes no other), and replays every usable row as it was
launched (bench_serving_accuracy.launch) once per prompt-iteration scale on SCALES. The
frontend time only adds to each client's TTFT, so it is tried on a FRONTEND_MS grid without
replaying. Per engine it prints the median |TTFT error| (and |TPOT error|) of every pair, the
pair that minimises the TTFT median, and that choice held out: each model's rows predicted with
the pair chosen on the engine's other models.

Run: python benchmarks/fit_engine_constants.py [--engine vllm|sglang]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_accuracy import CSV, predict, usable_runs  # noqa: E402

from planner_cli.errors import PlannerError  # noqa: E402
from planner_cli.perf import engines, measured  # noqa: E402

SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)
FRONTEND_MS = tuple(range(0, 301, 10))


def replay(engine: str, scale: float) -> list[tuple[str, float, float, float, float]]:
    """(model, measured TTFT, engine-side TTFT, measured TPOT, predicted TPOT) in ms of every
    usable row of the engine, with its prompt iterations scaled by `scale`."""
    saved = engines.PREFILL_SCALE[engine]
    engines.PREFILL_SCALE[engine] = scale
    measured.forget_costs()
    out = []
    try:
        for run in usable_runs(CSV)[0]:
            if run.engine != engine:
                continue
            try:
                got = predict(run)
            except PlannerError:
                continue
            out.append((run.shape.card.name, float(run.row["silicon_ttft_ms"]),
                        got["mean_ttft_ms"] - 1e3 * engines.FRONTEND_S[engine],
                        float(run.row["silicon_tpot_ms"]), got["mean_tpot_ms"]))
    finally:
        engines.PREFILL_SCALE[engine] = saved
        measured.forget_costs()
    return out


def best(rows: dict[float, list], keep) -> tuple[float, float, float]:
    """(median |TTFT error|, scale, frontend ms) of the best pair over the rows `keep` picks."""
    found = (np.inf, 1.0, 0.0)
    for scale, rs in rows.items():
        picked = [r for r in rs if keep(r)]
        truth = np.array([r[1] for r in picked])
        side = np.array([r[2] for r in picked])
        for fe in FRONTEND_MS:
            err = float(np.median(np.abs((side + fe) / truth - 1)))
            if err < found[0] - 1e-12:
                found = (err, scale, float(fe))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=engines.ENGINES, default=None)
    args = parser.parse_args()
    for engine in [args.engine] if args.engine else engines.ENGINES:
        rows = {scale: replay(engine, scale) for scale in SCALES}
        print(f"{engine}: {len(rows[SCALES[0]])} rows")
        for scale, rs in rows.items():
            truth = np.array([r[1] for r in rs])
            side = np.array([r[2] for r in rs])
            tpot = float(np.median([abs(r[4] / r[3] - 1) for r in rs]))
            errs = {fe: float(np.median(np.abs((side + fe) / truth - 1))) for fe in FRONTEND_MS}
            fe = min(errs, key=errs.get)
            print(f"  prompt iterations x{scale:<4g}: best frontend {fe:3d} ms, |TTFT err| "
                  f"{errs[fe]:.1%} (0 ms: {errs[0]:.1%}); |TPOT err| {tpot:.1%}")
        err, scale, fe = best(rows, lambda r: True)
        print(f"  chosen: x{scale:g}, {fe:g} ms: median |TTFT error| {err:.1%}")
        held: list[float] = []
        per_model: dict[str, tuple] = defaultdict(tuple)
        for model in sorted({r[0] for r in rows[SCALES[0]]}):
            _, s, f = best(rows, lambda r, m=model: r[0] != m)
            mine = [r for r in rows[s] if r[0] == model]
            held += [abs((r[2] + f) / r[1] - 1) for r in mine]
            per_model[model] = (s, f, len(mine))
        for model, (s, f, n) in per_model.items():
            print(f"    without {model:<20} ({n:3d} rows): x{s:g}, {f:g} ms")
        print(f"  held out (each model's rows with the pair chosen on the others): median "
              f"|TTFT error| {np.median(held):.1%}")


if __name__ == "__main__":
    main()
