"""Fit the time per sequence an iteration holds, beyond the kernel tables, per engine
(planner_cli/perf/engines.py: SEQUENCE_OVERHEAD_S), and say how well it holds out.

Reads ../shared/data/raw/aiconfigurator/silicon_dev.csv, the one file of measured serving runs
constants may be fitted to (this script takes no other). For each value on SEQUENCE_US it
refits the decode-step scales as benchmarks/fit_serving.py does (each model's median of
measured / predicted TPOT, the decode steps unscaled), replays every usable row of the engine as
it was launched with those scales, and takes the median |TPOT error|. It prints each value's
error, the value that minimises it (the smallest of equals), and that choice held out: each
model's rows with the value chosen on the engine's other models (and the scales of that value).

Run: python benchmarks/fit_host_time.py [--engine vllm|sglang]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_accuracy import CSV, Run, engine_predictions, usable_runs  # noqa: E402
from fit_serving import refitted_scales  # noqa: E402

from planner_cli.perf import engines  # noqa: E402

SEQUENCE_US = (0, 10, 20, 30, 40, 50, 60)


def replay(runs: list[Run], engine: str, seconds: float) -> list[tuple[str, float, float]]:
    """(model, measured TPOT, predicted TPOT) of every run of the engine, with `seconds` per
    sequence in each iteration and the decode-step scales refitted for it."""
    saved = engines.SEQUENCE_OVERHEAD_S[engine]
    engines.SEQUENCE_OVERHEAD_S[engine] = seconds
    try:
        with refitted_scales(runs, engine):
            return [(run.shape.card.name, float(run.row["silicon_tpot_ms"]),
                     got["mean_tpot_ms"]) for run, got in engine_predictions(runs, engine)]
    finally:
        engines.SEQUENCE_OVERHEAD_S[engine] = saved


def error(rows: list[tuple[str, float, float]]) -> float:
    return float(np.median([abs(r[2] / r[1] - 1) for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=engines.ENGINES, default=None)
    args = parser.parse_args()
    runs = usable_runs(CSV)[0]
    for engine in [args.engine] if args.engine else engines.ENGINES:
        rows = {us: replay(runs, engine, us * 1e-6) for us in SEQUENCE_US}
        print(f"{engine}: {len(rows[0])} rows")
        for us, rs in rows.items():
            print(f"  {us:3d} us per sequence: median |TPOT error| {error(rs):.1%}")
        chosen = min(SEQUENCE_US, key=lambda us: (round(error(rows[us]), 12), us))
        print(f"  chosen: {chosen} us: {error(rows[chosen]):.1%}")
        held: list[tuple[str, float, float]] = []
        for model in sorted({r[0] for r in rows[0]}):
            others = min(SEQUENCE_US, key=lambda us, m=model: (
                round(error([r for r in rows[us] if r[0] != m]), 12), us))
            mine = [r for r in rows[others] if r[0] == model]
            held += mine
            print(f"    without {model:<20} ({len(mine):3d} rows): {others} us")
        print(f"  held out (each model's rows with the value chosen on the others): median "
              f"|TPOT error| {error(held):.1%}")


if __name__ == "__main__":
    main()
