"""Fit the decode-step scale per (engine, model) to real serving runs: planner_cli/perf/
serving_fit.yaml.

Reads ../shared/data/raw/aiconfigurator/silicon_dev.csv, the one file of measured serving runs
constants may be fitted to (the rest of the field's end-to-end measurements are accuracy gates,
never fitting data, so this script takes no other file), runs `perf serve` on every usable row as
it was launched (bench_serving_accuracy.launch) with the decode steps of the measured tables
unscaled, and writes, per engine and model with at least
serving_fit.MIN_ROWS distinct runs on the measured source, the median of measured mean TPOT /
predicted mean TPOT. A model is every catalog card of one architecture (serving_fit.
same_architecture: DeepSeek-V3 and R1), named after the first; its entry lists them. A run
listed twice (the same configuration and the same measured figures under two ids, or under
two cards of one architecture) counts once. Also prints each model's held-out estimate: the
median |TPOT error| of its runs when each configuration's predicted TPOT is multiplied by the
scale of the model's other configurations (an estimate: the runs are not simulated again).

Run: python benchmarks/fit_serving.py [--check]
  --check: fit, compare with the file, write nothing; exit 1 if they differ
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_accuracy import CSV, Run, predict, usable_runs  # noqa: E402

from planner_cli.errors import PlannerError  # noqa: E402
from planner_cli.perf import measured, serving_fit  # noqa: E402
from planner_cli.specs.catalog import load_catalog  # noqa: E402

HEADER = """\
# Decode-step scale per engine and model: the engine's decode steps for that model against
# aiconfigurator-core's tables (planner_cli/perf/serving_fit.py says how it is used).
# Written by `python benchmarks/fit_serving.py` from
# {csv} ({n} distinct usable runs on the measured source):
# per model, the median over its runs (each replayed as launched) of measured mean TPOT /
# perf serve's mean TPOT with the decode steps unscaled, where it has at least {min_rows} runs.
# Do not edit by hand.
"""


def unscaled_tpots(runs: list[Run], engine: str | None = None
                   ) -> tuple[list[tuple[str, str, float, float]], list[tuple]]:
    """(engine, model, measured TPOT, predicted TPOT with the decode steps unscaled) of each
    distinct run on the measured source (of one engine, or of all), and each one's
    configuration (engine, shape, ISL, OSL, concurrency); a model is named after the first card
    of its architecture."""
    catalog = load_catalog()
    groups = serving_fit.same_architecture(catalog.models.items.values())
    seen: set[tuple] = set()
    fitted: list[tuple[str, str, float, float]] = []
    config: list[tuple] = []
    with measured.unscaled():
        for run in runs:
            if engine is not None and run.engine != engine:
                continue
            r, model = run.row, groups[run.shape.card.name][0]
            s = replace(run.shape, card=catalog.model(model))
            ident = (run.engine, s, run.isl, run.osl, run.concurrency,
                     float(r["silicon_ttft_ms"]), float(r["silicon_tpot_ms"]))
            if ident in seen:
                continue
            seen.add(ident)
            try:
                got = predict(run)
            except PlannerError:
                continue
            if not got["source"].startswith("measured:"):
                continue  # the scale applies to the measured tables only
            fitted.append((run.engine, model, float(r["silicon_tpot_ms"]),
                           got["mean_tpot_ms"]))
            config.append(ident[:5])
    return fitted, config


def scale_table(fitted: list[tuple[str, str, float, float]]) -> dict:
    """serving_fit.yaml's decode_scale table fitted to unscaled_tpots' rows: an entry for
    several cards of one architecture lists them."""
    groups = serving_fit.same_architecture(load_catalog().models.items.values())
    table = serving_fit.fit(fitted)
    for models in table.values():
        for model, entry in models.items():
            if len(groups[model]) > 1:
                entry["models"] = list(groups[model])
    return table


@contextlib.contextmanager
def refitted_scales(runs: list[Run], engine: str) -> Iterator[None]:
    """Inside the block, `engine`'s decode-step scales are those fitted afresh to its runs as
    they replay now (after a fitting script has moved a constant they depend on); outside it,
    serving_fit.yaml's again."""
    table_of = measured._serving_table
    scales = serving_fit.parse({"decode_scale": scale_table(unscaled_tpots(runs, engine)[0])})
    measured._serving_table = lambda: scales  # type: ignore[assignment]
    measured.forget_costs()
    try:
        yield
    finally:
        measured._serving_table = table_of  # type: ignore[assignment]
        measured.forget_costs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare the fit with serving_fit.yaml and write nothing")
    args = parser.parse_args()
    runs, _ = usable_runs(CSV)
    fitted, config = unscaled_tpots(runs)
    table = scale_table(fitted)
    # held out: each configuration's scale from the model's other configurations
    by_model: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (engine, model, _, _) in enumerate(fitted):
        by_model[(engine, model)].append(i)
    print(f"{len(fitted)} distinct runs on the measured source")
    print(f"{'engine':<7} {'model':<20} {'runs':>4} {'scale':>6}  {'|TPOT err| unscaled':>20} "
          f"{'held out':>9}")
    for (engine, model), idx in sorted(by_model.items()):
        entry = table.get(engine, {}).get(model)
        raw = [abs(fitted[i][3] / fitted[i][2] - 1) for i in idx]
        held = []
        for i in idx:
            others = [fitted[j][2] / fitted[j][3] for j in idx if config[j] != config[i]]
            scale = (float(np.median(others)) if len(others) >= serving_fit.MIN_ROWS else 1.0)
            held.append(abs(fitted[i][3] * scale / fitted[i][2] - 1))
        print(f"{engine:<7} {model:<20} {len(idx):>4} "
              f"{entry['scale'] if entry else '-':>6}  {np.median(raw):>20.1%} "
              f"{np.median(held):>9.1%}")
    text = HEADER.format(csv="../shared/data/raw/aiconfigurator/silicon_dev.csv",
                         n=len(fitted), min_rows=serving_fit.MIN_ROWS) + yaml.safe_dump(
        {"decode_scale": table}, sort_keys=True)
    if args.check:
        same = serving_fit.FIT_FILE.read_text(encoding="utf-8") == text
        print("serving_fit.yaml matches the fit" if same else "serving_fit.yaml differs")
        sys.exit(0 if same else 1)
    serving_fit.FIT_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {serving_fit.FIT_FILE}")


if __name__ == "__main__":
    main()
