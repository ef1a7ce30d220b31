"""Choose how the gap-analysis vLLM runs' outputs are replayed (benchmarks/serving_recipes.py:
EOS_OUTPUT_LOW), and show how much it matters.

Those runs' clients did not ignore end-of-sequence tokens (serving_recipes' docstring), so each
answer ended where the model ended it, at most OSL; the rows do not record the lengths. They
are replayed as uniform in [low·OSL, OSL]. Reads ../shared/data/raw/aiconfigurator/
silicon_dev.csv, the one file of measured serving runs constants may be fitted to. For each
low on LOWS (1: fixed lengths) it refits the vLLM decode-step scales as
benchmarks/fit_serving.py does, replays those runs, and prints their median |TTFT error| and
|TPOT error|; the low that minimises the sum of the two (the smallest of equals) is chosen. The
runs are of one model, so there is nothing to hold out.

Run: python benchmarks/fit_eos_outputs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_recipes  # noqa: E402
from bench_serving_accuracy import CSV, Run, engine_predictions, usable_runs  # noqa: E402
from fit_serving import refitted_scales  # noqa: E402

LOWS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
ENGINE = "vllm"


def replay(runs: list[Run], low: float) -> tuple[float, float, int]:
    """(median |TTFT error|, median |TPOT error|, runs) of the gap-analysis vLLM runs with
    their outputs uniform in [low·OSL, OSL] and the decode-step scales refitted for it."""
    saved = serving_recipes.EOS_OUTPUT_LOW
    serving_recipes.EOS_OUTPUT_LOW = low
    try:
        with refitted_scales(runs, ENGINE):
            mine = [run for run in runs if serving_recipes.eos_outputs(
                run.engine, run.row["silicon_data_source"])]
            got = list(engine_predictions(mine, ENGINE))
    finally:
        serving_recipes.EOS_OUTPUT_LOW = saved
    ttft = [abs(g["mean_ttft_ms"] / float(r.row["silicon_ttft_ms"]) - 1) for r, g in got]
    tpot = [abs(g["mean_tpot_ms"] / float(r.row["silicon_tpot_ms"]) - 1) for r, g in got]
    return float(np.median(ttft)), float(np.median(tpot)), len(got)


def main() -> None:
    runs = usable_runs(CSV)[0]  # read once, replayed per value
    errors = {low: replay(runs, low) for low in LOWS}
    print(f"gap-analysis vLLM runs: {errors[LOWS[0]][2]}")
    for low, (ttft, tpot, _) in errors.items():
        what = "fixed lengths" if low == 1.0 else f"outputs in [{low:g}·OSL, OSL]"
        print(f"  {what:<26} median |TTFT error| {ttft:6.1%}, |TPOT error| {tpot:6.1%}")
    chosen = min(LOWS, key=lambda low: (round(errors[low][0] + errors[low][1], 12), low))
    print(f"  chosen: {chosen:g} (serving_recipes.EOS_OUTPUT_LOW is "
          f"{serving_recipes.EOS_OUTPUT_LOW:g})")


if __name__ == "__main__":
    main()
