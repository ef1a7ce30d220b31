"""Typed figures of a simulated run, read by attribute by the renderer, the planner and the plan.

Values that can be undefined (a percentile of no request, an SLO scale no share of requests
reaches) are `None` in files: `float | None` fields, written with NaN and inf as null.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict


def clean(obj: Any) -> Any:
    """Plain data for JSON: NaN and inf become None (null), tuples become lists."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


class Figures(BaseModel):
    """Frozen, unknown keys rejected: what the planner writes is what it reads back."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Percentiles(Figures):
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


class SloTargets(Figures):
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None


class StageFigures(Figures):
    stage: str
    requests: int
    rejected: int
    ttft_s: Percentiles
    tpot_s: Percentiles
    latency_s: Percentiles
    queueing_s: Percentiles
    preemptions: int
    kv_utilisation_mean: float
    busy_s_per_replica: list[float]
    iterations: int
    # the deployment the figures belong to (set by sim.run)
    model: str | None = None
    gpu: str | None = None
    pool: str | None = None
    tp: int | None = None
    pp: int | None = None
    replicas: int | None = None
    precision: str | None = None
    kv_capacity_tokens: int | None = None
    perf_source: str | None = None


class CascadeFigures(Figures):
    requests: int
    completed: int
    answered_by_stage: list[int]
    e2e_latency_s: Percentiles
    ttft_s: Percentiles
    throughput_rps: float
    offered_rps: float | None
    goodput_rps: float
    slo: SloTargets
    slo_scale: float | None  # None (inf): the attainment is never reached
    slo_attainment_pct: float
    attainment_curve: list[tuple[float, float]]
    stages: list[StageFigures]
    judge: StageFigures | None = None

    @property
    def slo_scale_or_inf(self) -> float:
        return float("inf") if self.slo_scale is None else self.slo_scale

    @property
    def e2e_p95_or_inf(self) -> float:
        p95 = self.e2e_latency_s.p95
        return float("inf") if p95 is None else p95


class Capacity(Figures):
    """The largest arrival-rate multiple that keeps an SLO scale (or, with `latency_limit_s`,
    the end-to-end latency at the SLO's attainment percentile) under sustained load."""

    slo_scale_target: float | None  # None: an absolute latency limit instead
    latency_limit_s: float | None = None
    rate_multiple: float
    requests_per_s: float
    at_least: bool  # the search hit its request limit: a lower bound
    sustained_s: float
