"""Replaying a trace through a resolved deployment, and the throughput capacity search.

`simulate_deployment` runs the cascade simulator on a `Deployment` (stage cost models, replica
counts, the judger) with a request mix; `capacity_search` finds the largest arrival-rate
multiple at which the SLO scale holds under sustained load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from planner_cli.errors import InputError
from planner_cli.perf.engines import FRONTEND_S, OUTPUT_LAG, prefill_first
from planner_cli.problem import DeployedStage, Deployment
from planner_cli.sim.cascade import (
    BALANCERS,
    Balancer,
    CascadeResult,
    JudgeModel,
    Late,
    StageConfig,
    TooLate,
    simulate_cascade,
)
from planner_cli.sim.figures import Capacity, CascadeFigures, StageFigures
from planner_cli.sim.metrics import (
    Slo,
    cascade_figures,
    slo_scale,
    stage_figures,
    unloaded_latency,
)
from planner_cli.workload.mix import RequestMix
from planner_cli.workload.routing import Routing, route
from planner_cli.workload.trace import Trace

CAPACITY_SUSTAIN_S = 60.0  # the load of a rate multiple is held this long
CAPACITY_MAX_REQUESTS = 8_000  # beyond this the search stops: capacity is "at least"
CAPACITY_STEPS = 8  # bisection steps
CAPACITY_TOLERANCE = 0.03  # relative width at which the bisection stops
JUDGE_SEED_STREAM = 7  # the random stream of external judge latencies (with the plan's seed)


@dataclass(frozen=True)
class PlanSimulation:
    """A plan replayed on a trace: figures per stage and end to end, and optionally capacity."""

    requests: int
    rate_scale: float
    balancer: str
    thresholds: list[float]
    quality: float  # Q(θ) of the trace's request mix
    scores_from: str
    reach_share: list[float]
    judge_latency_s: float
    slo_reference: str
    figures: CascadeFigures
    capacity: Capacity | None  # None when not asked for, or the trace has < 2 requests
    simulation_wall_s: float
    per_request: dict[str, np.ndarray]

    def summary(self) -> dict:
        """Everything but the per-request columns, as plain data (for --json)."""
        return {"requests": self.requests, "rate_scale": self.rate_scale,
                "balancer": self.balancer, "thresholds": self.thresholds,
                "quality": self.quality, "scores_from": self.scores_from,
                "reach_share": self.reach_share, "judge_latency_s": self.judge_latency_s,
                "slo_reference": self.slo_reference,
                "figures": self.figures.model_dump(mode="python"),
                "capacity": None if self.capacity is None else self.capacity.model_dump(),
                "simulation_wall_s": self.simulation_wall_s}


def _config(s: DeployedStage, name: str) -> StageConfig:
    return StageConfig(name, s.cost, s.stage.replicas, s.kv_capacity_tokens,
                       s.stage.max_num_batched_tokens, s.stage.max_num_seqs,
                       prefill_first(s.engine), s.state_tokens_per_sequence,
                       FRONTEND_S[s.engine], OUTPUT_LAG[s.engine])


def _described(fig: StageFigures, s: DeployedStage) -> StageFigures:
    return fig.model_copy(update={
        "model": s.model, "gpu": s.gpu, "pool": s.pool.name, "tp": s.stage.tp,
        "pp": s.stage.pp, "replicas": s.stage.replicas, "precision": s.stage.precision,
        "kv_capacity_tokens": s.kv_capacity_tokens, "perf_source": s.perf_source})


@dataclass(frozen=True)
class SloBase:
    """Each request's base latency (alone on the SLO reference replica, as its client sees
    it) and the reference's label: what every SLO scale divides by."""

    latency_s: np.ndarray
    label: str

    def head(self, n: int) -> SloBase:
        return SloBase(self.latency_s[:n], self.label)


def slo_base(ref_dep: Deployment, trace: Trace, ref_mix: RequestMix) -> SloBase:
    """The SLO base of a trace on a deployment's reference replica (its largest model's)."""
    engine = ref_dep.reference_engine
    return SloBase(unloaded_latency(ref_dep.reference_cost, trace.input_lengths,
                                    ref_mix.outputs[-1], frontend_s=FRONTEND_S[engine],
                                    output_lag=OUTPUT_LAG[engine]), ref_dep.reference_label)


def _replay(dep: Deployment, trace: Trace, mix: RequestMix, balancer: str | None,
            slo_reference: tuple[Deployment, RequestMix] | SloBase | None
            ) -> tuple[WindowReplay, Routing, str]:
    """What every replay of the deployment on this trace shares: stage configs, routing,
    judge latencies and each request's base latency (the SLO reference)."""
    plan = dep.plan
    balancer = balancer or plan.simulation.balancer
    if balancer not in BALANCERS:
        raise InputError(f"--balancer {balancer!r} is not known", "use " + " or ".join(BALANCERS))
    routing = route(mix.scores, mix.quality, plan.thresholds)
    configs = [_config(s, s.model) for s in dep.stages]
    if isinstance(slo_reference, SloBase):
        ref = slo_reference
    else:
        ref_dep, ref_mix = slo_reference or (dep, mix)
        ref = slo_base(ref_dep, trace, ref_mix)
    base = ref.latency_s
    judger = plan.cascade.judger
    judge_model = None
    delays: list[np.ndarray] | float = 0.0
    if judger.kind == "external":
        rng = np.random.default_rng([plan.simulation.seed, JUDGE_SEED_STREAM])
        delays = [judger.latency_s * (np.exp(rng.normal(0.0, judger.latency_sigma, len(trace)))
                                      if judger.latency_sigma > 0 else np.ones(len(trace)))
                  for _ in range(len(configs) - 1)]
    elif dep.judge is not None:
        judge_model = JudgeModel(_config(dep.judge, "judge:" + dep.judge.model),
                                 judger.output_tokens)
    arrivals = (trace.timestamps_ms - trace.timestamps_ms[0]) / 1000.0
    replay = WindowReplay(configs, arrivals, trace.input_lengths, list(mix.outputs),
                          routing.answered_by, delays, base, balancer, judge_model)
    return replay, routing, ref.label


def _capacity(replay: WindowReplay, dep: Deployment, target_scale: float | None, start: float,
              window: int | None, latency_limit_s: float | None = None) -> Capacity | None:
    """The capacity search on the first `window` requests; None with fewer than 2 (a rate
    multiple needs a rate: one request has none)."""
    head = replay.head(window or replay.arrivals.shape[0])
    if head.arrivals.shape[0] < 2:
        return None
    # a latency limit, when given, is what the capacity is measured against
    return capacity_search(head.simulate, None if latency_limit_s is not None else target_scale,
                           dep.plan.cascade.slo.attainment_pct, start, head.rate_per_s,
                           latency_limit_s=latency_limit_s)


def simulate_deployment(dep: Deployment, trace: Trace, mix: RequestMix,
                        rate_scale: float = 1.0, balancer: str | None = None,
                        capacity_at_scale: float | None = None,
                        capacity_window: int | None = None,
                        slo_reference: tuple[Deployment, RequestMix] | SloBase | None = None,
                        capacity_latency_s: float | None = None) -> PlanSimulation:
    """Replay `trace` (arrivals scaled by `rate_scale`) through the deployment.

    SLO scales are against each request's unloaded latency on the reference replica of the
    deployment's largest model; a baseline that serves another model passes the cascade's
    deployment and mix as `slo_reference`, so its SLO scale is comparable with the plan's."""
    if rate_scale <= 0:
        raise InputError(f"--rate-scale {rate_scale} is not positive", "use e.g. 1 or 2.5")
    replay, routing, ref_label = _replay(dep, trace, mix, balancer, slo_reference)
    t0 = time.perf_counter()
    result = replay.once(rate_scale)
    wall = time.perf_counter() - t0
    cslo = dep.plan.cascade.slo
    figures = cascade_figures(result, replay.base, Slo(cslo.ttft_s, cslo.tpot_s, cslo.e2e_s),
                              cslo.attainment_pct)
    update: dict = {"stages": [_described(f, s) for f, s in
                               zip(figures.stages, dep.stages, strict=True)]}
    if dep.judge is not None and result.extras.get("judge") is not None:
        update["judge"] = _described(stage_figures(result.extras["judge"]), dep.judge)
    figures = figures.model_copy(update=update)
    capacity = (None if capacity_at_scale is None else
                _capacity(replay, dep, capacity_at_scale, rate_scale, capacity_window,
                          capacity_latency_s))
    return PlanSimulation(
        requests=len(trace), rate_scale=rate_scale, balancer=replay.balancer,
        thresholds=list(dep.plan.thresholds), quality=routing.quality, scores_from=mix.source,
        reach_share=[float(x) for x in routing.reach_fraction],
        judge_latency_s=result.judge_latency_s, slo_reference=ref_label,
        figures=figures, capacity=capacity, simulation_wall_s=wall,
        per_request=per_request(result, replay.base))


def deployment_capacity(dep: Deployment, trace: Trace, mix: RequestMix,
                        target_scale: float | None, window: int | None = None,
                        slo_reference: tuple[Deployment, RequestMix] | SloBase | None = None,
                        latency_limit_s: float | None = None) -> Capacity | None:
    """Only the capacity search of simulate_deployment (no replay of the whole trace); with
    `latency_limit_s`, for that end-to-end latency at the SLO's attainment percentile."""
    replay, _, _ = _replay(dep, trace, mix, None, slo_reference)
    return _capacity(replay, dep, target_scale, 1.0, window, latency_limit_s)


@dataclass(frozen=True)
class WindowReplay:
    """The trace's requests ready to replay through the stages: once at a rate scale, or a
    window of them tiled in time at a rate multiple (sustained load)."""

    configs: list[StageConfig]
    arrivals: np.ndarray
    prompts: np.ndarray
    outputs: list[np.ndarray]
    answered: np.ndarray
    delays: list[np.ndarray] | float
    base: np.ndarray
    balancer: str
    judge: JudgeModel | None

    def head(self, n: int) -> WindowReplay:
        """The first n requests."""
        w = slice(0, n)
        return WindowReplay(self.configs, self.arrivals[w], self.prompts[w],
                            [o[w] for o in self.outputs], self.answered[w],
                            [d[w] for d in self.delays] if isinstance(self.delays, list)
                            else self.delays, self.base[w], self.balancer, self.judge)

    def once(self, rate_scale: float) -> CascadeResult:
        return simulate_cascade(self.configs, self.arrivals / rate_scale, self.prompts,
                                self.outputs, self.answered, self.delays,
                                cast(Balancer, self.balancer), self.judge)

    @property
    def span_s(self) -> float:
        n = self.arrivals.shape[0]
        return max(float(self.arrivals[-1] - self.arrivals[0]), 1e-9) * (n + 1) / max(n, 1)

    @property
    def rate_per_s(self) -> float:
        return float(self.arrivals.shape[0]) / self.span_s

    def simulate(self, multiple: float, slo: SloCheck | None = None
                 ) -> tuple[CascadeResult, np.ndarray] | None:
        """The window tiled until the scaled arrivals span CAPACITY_SUSTAIN_S seconds (None
        past CAPACITY_MAX_REQUESTS). With `slo`, TooLate as soon as the run certainly
        misses it."""
        span = self.span_s
        tiles = max(1, math.ceil(CAPACITY_SUSTAIN_S * multiple / span))
        if tiles * self.arrivals.shape[0] > CAPACITY_MAX_REQUESTS:
            return None
        arr = np.concatenate([self.arrivals + k * span for k in range(tiles)]) / multiple
        delays = ([np.tile(d, tiles) for d in self.delays] if isinstance(self.delays, list)
                  else self.delays)
        base = np.tile(self.base, tiles)
        res = simulate_cascade(self.configs, arr, np.tile(self.prompts, tiles),
                               [np.tile(o, tiles) for o in self.outputs],
                               np.tile(self.answered, tiles), delays,
                               cast(Balancer, self.balancer), self.judge,
                               None if slo is None else slo.late(arr, base))
        return res, base


@dataclass(frozen=True)
class SloCheck:
    """What a capacity search holds a run to: the end-to-end latency at the attainment
    percentile within `latency_limit_s`, or the SLO scale within `target_scale`."""

    target_scale: float | None
    latency_limit_s: float | None
    attainment_pct: float

    def meets(self, e2e: np.ndarray, base: np.ndarray) -> bool:
        if self.latency_limit_s is not None:
            done = e2e[np.isfinite(e2e)]
            return (done.size == e2e.size and done.size > 0
                    and float(np.percentile(done, self.attainment_pct)) <= self.latency_limit_s)
        return slo_scale(e2e, base, self.attainment_pct) <= cast(float, self.target_scale)

    def late(self, arrivals: np.ndarray, base: np.ndarray) -> Late:
        """Each request's deadline and how many may miss it before `meets` must fail (a
        deadline a hair late, so a request counted late is late for `meets` too)."""
        n = arrivals.shape[0]
        if self.latency_limit_s is not None:
            # past n - floor(h) late ones, the order statistic at h = p(n-1) is late
            allowed = n - math.floor(self.attainment_pct / 100.0 * (n - 1)) - 1
            within = np.full(n, self.latency_limit_s)
        else:
            allowed = n - max(1, math.ceil(self.attainment_pct / 100.0 * n - 1e-9))
            within = cast(float, self.target_scale) * base
        return arrivals + within * (1 + 1e-9) + 1e-12, allowed


Runner = Callable[[float, SloCheck], "tuple[CascadeResult, np.ndarray] | None"]


def capacity_search(run: Runner, target_scale: float | None, attainment_pct: float,
                    start: float, rate_per_s: float, steps: int = CAPACITY_STEPS,
                    tolerance: float = CAPACITY_TOLERANCE,
                    latency_limit_s: float | None = None) -> Capacity:
    """The largest arrival-rate multiple at which the SLO scale stays within target (or, with
    `latency_limit_s`, the end-to-end latency at the attainment percentile stays within it):
    doubling from `start` while it holds, then bisection. `at_least` when a run hit the
    request limit (run returned None), so the figure is a lower bound."""
    if (target_scale is None) == (latency_limit_s is None):
        raise ValueError("capacity_search holds either an SLO scale or a latency limit")
    limited = False
    slo = SloCheck(target_scale, latency_limit_s, attainment_pct)

    def meets(x: float) -> bool:
        nonlocal limited
        try:
            got = run(x, slo)
        except TooLate:  # stopped as soon as it could not hold
            return False
        if got is None:
            limited = True
            return False
        res, base = got
        return slo.meets(res.e2e, base)

    lo, hi = 0.0, start
    if meets(hi):
        lo = hi
        while hi < 1e4:
            hi *= 2
            if not meets(hi):
                break
            lo = hi
    for _ in range(steps):
        if hi - lo <= tolerance * max(lo, 1e-9):
            break
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
        if lo == 0 and hi < start / 1024:
            break
    return Capacity(slo_scale_target=None if latency_limit_s is not None else target_scale,
                    latency_limit_s=latency_limit_s, rate_multiple=lo,
                    requests_per_s=lo * rate_per_s, at_least=limited and lo > 0,
                    sustained_s=CAPACITY_SUSTAIN_S)


def per_request(result: CascadeResult, base: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of per-request figures (for --requests-out)."""
    n = result.arrival.shape[0]
    ttft = np.full(n, np.inf)
    tpot = np.full(n, np.nan)
    for i, stage in enumerate(result.stages):
        mine = result.answered_by == i
        ttft[mine] = stage.first_token[mine] - result.arrival[mine]
        out = stage.output_tokens[mine]
        tpot[mine] = np.where(out > 1, (stage.finish[mine] - stage.first_token[mine])
                              / np.maximum(out - 1, 1), np.nan)
    return {"request": np.arange(n), "arrival_s": result.arrival,
            "answered_by_stage": result.answered_by + 1, "ttft_s": ttft, "tpot_s": tpot,
            "e2e_s": result.e2e, "base_latency_s": base}
