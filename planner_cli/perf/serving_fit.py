"""Decode steps as engines really run them, per model: a scale on the measured tables fitted to
real serving runs.

aiconfigurator-core's kernel tables predict each model's decode step well up to a factor that
belongs to the model under an engine (which MoE, attention and quantised-GEMM kernels the
engine picks for that checkpoint, what it fuses): against the measured serving runs of
../shared/data/raw/aiconfigurator/silicon_dev.csv (the one file constants may be fitted to)
the measured mean TPOT is 0.83x `perf serve`'s for gpt-oss-120b on vLLM and 1.18x for GLM-5
on SGLang, across GPUs, parallelism and concurrency. `serving_fit.yaml`
holds, per (engine, model), the median over that model's usable rows of measured TPOT /
predicted TPOT (the tables unscaled), where the file has at least MIN_ROWS of them; a model is
every catalog card of one architecture (`same_architecture`: DeepSeek-V3 and R1 run the same
kernels, so their runs are pooled and one scale serves both);
`python benchmarks/fit_serving.py` writes it again from the file (perf.measured reads it, and
its `unscaled()` leaves it out). The measured source scales the kernel time of its decode
steps (not the host time) by it and says so in its source label; a model or engine the file
has no runs of keeps the tables as measured.

Median |TPOT error| of `perf serve` on the file's 383 usable rows, each replayed as it was
launched (benchmarks/bench_serving_accuracy.py, with and without --unscaled): 9.9 % unscaled,
8.1 % scaled (in sample; 11.1 % and 8.3 % before per-tensor GEMMs stood in for vLLM's
block-scaled ones, perf.measured, the gap-analysis vLLM runs' outputs were replayed as ending
at the model's end-of-sequence token and InferenceX's B200 gpt-oss runs with the
MXFP8-activation experts their script selects; on the 363 rows before SGLang's steps took a time
per sequence, perf.engines, four copies of attention-DP runs were recognised and the 24
attention-DP runs were replayed: 11.9 % and 8.9 %).
Held out, each configuration's scale fitted to its model's other configurations: 10.4 % with
every row simulated again when it was first fitted (then 13.9 % unscaled, 9.8 % scaled, on
fewer rows); fit_serving.py prints the estimate per model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from planner_cli.specs.model import ModelCard

FIT_FILE = Path(__file__).with_name("serving_fit.yaml")  # read by perf.measured
MIN_ROWS = 3  # a model's scale needs this many measured runs (distinct rows) behind it


def parse(data: dict | None) -> dict[tuple[str, str], tuple[float, int, str]]:
    """{(engine, card): (scale, runs, whose runs)} from the file's mapping: an entry serves
    every card its `models` lists (by default the one it is named after)."""
    out: dict[tuple[str, str], tuple[float, int, str]] = {}
    for engine, models in ((data or {}).get("decode_scale") or {}).items():
        for model, entry in models.items():
            members = list(entry.get("models") or [model])
            for card in members:
                out[(engine, card)] = (float(entry["scale"]), int(entry["rows"]),
                                       " and ".join(members))
    return out


def same_architecture(cards: Iterable[ModelCard]) -> dict[str, tuple[str, ...]]:
    """{card name: the sorted names of every card with its architecture (itself included)}."""
    groups: dict[str, list[str]] = {}
    named = list(cards)
    for card in named:
        groups.setdefault(card.architecture_key, []).append(card.name)
    return {card.name: tuple(sorted(groups[card.architecture_key])) for card in named}


def fit(rows: Iterable[tuple[str, str, float, float]], min_rows: int = MIN_ROWS
        ) -> dict[str, dict[str, dict[str, float | int]]]:
    """{engine: {model: {scale, rows}}} from (engine, model, measured TPOT, predicted TPOT)
    rows: the median ratio per model, rounded to 0.01, for models with at least min_rows."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for engine, model, measured_ms, predicted_ms in rows:
        if measured_ms > 0 and predicted_ms > 0:
            ratios.setdefault((engine, model), []).append(measured_ms / predicted_ms)
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for (engine, model), r in sorted(ratios.items()):
        if len(r) >= min_rows:
            out.setdefault(engine, {})[model] = {"scale": round(float(np.median(r)), 2),
                                                 "rows": len(r)}
    return out
