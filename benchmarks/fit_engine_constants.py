"""Fit the prompt-iteration scale, the frontend time and the output lag per engine
(planner_cli/perf/engines.py: PREFILL_SCALE, FRONTEND_S, OUTPUT_LAG) to real serving runs, and
say how well they hold out.

Reads ../shared/data/raw/aiconfigurator/silicon_dev.csv, the one file of measured serving runs
constants may be fitted to (this script takes no other), and replays every usable row as it was
launched (bench_serving_accuracy.launch) once per prompt-iteration scale on SCALES. The
frontend time and the output lag (decode iterations: each request's own time per output token,
times the lag) only add to what clients see, so they are tried on the FRONTEND_MS and LAGS
grids without replaying (a run's mean TTFT moves by the frontend time plus the lag times its
mean TPOT). Per engine it prints each scale's best frontend time and lag, the triple that
minimises the median |TTFT error|, and that choice held out: each model's rows predicted with
the triple chosen on the engine's other models.

Run: python benchmarks/fit_engine_constants.py [--engine vllm|sglang] [--no-lag]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_accuracy import CSV, Run, engine_predictions, usable_runs  # noqa: E402

from planner_cli.perf import engines, measured  # noqa: E402

SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)
FRONTEND_MS = tuple(range(0, 301, 10))
LAGS = tuple(range(0, 31, 2))


def replay(runs: list[Run], engine: str, scale: float
           ) -> list[tuple[str, float, float, float, float]]:
    """(model, measured TTFT, engine-side TTFT, measured TPOT, predicted TPOT) in ms of every
    run of the engine, with its prompt iterations scaled by `scale` (engine-side: without the
    frontend time and the output lag)."""
    saved = engines.PREFILL_SCALE[engine]
    engines.PREFILL_SCALE[engine] = scale
    measured.forget_costs()
    out = []
    try:
        for run, got in engine_predictions(runs, engine):
            side = (got["mean_ttft_ms"] - 1e3 * engines.FRONTEND_S[engine]
                    - engines.OUTPUT_LAG[engine] * got["mean_tpot_ms"])
            out.append((run.shape.card.name, float(run.row["silicon_ttft_ms"]), side,
                        float(run.row["silicon_tpot_ms"]), got["mean_tpot_ms"]))
    finally:
        engines.PREFILL_SCALE[engine] = saved
        measured.forget_costs()
    return out


def errors(rows: list, fe: float, lag: float) -> np.ndarray:
    """|TTFT error| of rows with a frontend time (ms) and an output lag added."""
    truth = np.array([r[1] for r in rows])
    seen = np.array([r[2] + fe + lag * r[4] for r in rows])
    return np.abs(seen / truth - 1)


def best(rows: dict[float, list], keep, lags: tuple[int, ...] = LAGS
         ) -> tuple[float, float, float, float]:
    """(median |TTFT error|, scale, frontend ms, lag) of the best triple over the rows `keep`
    picks, the lag on `lags`."""
    found = (np.inf, 1.0, 0.0, 0.0)
    for scale, rs in rows.items():
        picked = [r for r in rs if keep(r)]
        for fe in FRONTEND_MS:
            for lag in lags:
                err = float(np.median(errors(picked, fe, lag)))
                if err < found[0] - 1e-12:
                    found = (err, scale, float(fe), float(lag))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=engines.ENGINES, default=None)
    parser.add_argument("--no-lag", action="store_true",
                        help="fit the scale and frontend time alone, the lag held at 0")
    args = parser.parse_args()
    lags = (0,) if args.no_lag else LAGS
    everything = lambda r: True  # noqa: E731
    runs = usable_runs(CSV)[0]  # read once, replayed per engine and scale
    for engine in [args.engine] if args.engine else engines.ENGINES:
        rows = {scale: replay(runs, engine, scale) for scale in SCALES}
        print(f"{engine}: {len(rows[SCALES[0]])} rows")
        for scale, rs in rows.items():
            err, _, fe, lag = best({scale: rs}, everything, lags)
            plain = float(np.median(errors(rs, 0.0, 0.0)))
            tpot = float(np.median([abs(r[4] / r[3] - 1) for r in rs]))
            print(f"  prompt iterations x{scale:<4g}: best {fe:3g} ms and lag {lag:2g}: |TTFT "
                  f"err| {err:.1%} (0 ms, no lag: {plain:.1%}); |TPOT err| {tpot:.1%}")
        err, scale, fe, lag = best(rows, everything, lags)
        print(f"  chosen: x{scale:g}, {fe:g} ms, lag {lag:g}: median |TTFT error| {err:.1%}")
        held: list[float] = []
        for model in sorted({r[0] for r in rows[SCALES[0]]}):
            _, s, f, g = best(rows, lambda r, m=model: r[0] != m, lags)
            mine = [r for r in rows[s] if r[0] == model]
            held += list(errors(mine, f, g))
            print(f"    without {model:<20} ({len(mine):3d} rows): x{s:g}, {f:g} ms, lag {g:g}")
        print(f"  held out (each model's rows with the triple chosen on the others): median "
              f"|TTFT error| {np.median(held):.1%}")


if __name__ == "__main__":
    main()
