"""Summary statistics of a trace."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from planner_cli.workload.trace import Trace

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LengthStats:
    mean: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass(frozen=True)
class TraceStats:
    requests: int
    duration_s: float
    mean_rate_per_s: float  # requests / duration
    interarrival_cv: float  # std / mean of the gaps between arrivals; 1 for Poisson
    input_tokens: LengthStats
    output_tokens: LengthStats
    has_hash_ids: bool
    scored_models: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _lengths(values: np.ndarray) -> LengthStats:
    p50, p90, p99 = np.percentile(values, PERCENTILES)
    return LengthStats(mean=float(values.mean()), p50=float(p50), p90=float(p90),
                       p99=float(p99), max=int(values.max()))


def trace_stats(trace: Trace) -> TraceStats:
    gaps = np.diff(trace.timestamps_ms)
    duration = trace.duration_s
    if gaps.size >= 2 and gaps.mean() > 0:
        cv = float(gaps.std() / gaps.mean())
    else:
        cv = float("nan")
    return TraceStats(
        requests=len(trace),
        duration_s=duration,
        mean_rate_per_s=len(trace) / duration if duration > 0 else float("inf"),
        interarrival_cv=cv,
        input_tokens=_lengths(trace.input_lengths),
        output_tokens=_lengths(trace.output_lengths),
        has_hash_ids=trace.hash_offsets is not None,
        scored_models=tuple(sorted(trace.scores)),
    )
