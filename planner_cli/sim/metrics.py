"""Figures of a simulated run: latency percentiles, throughput, goodput, SLO scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner_cli.perf.memory import DEFAULT_MAX_NUM_BATCHED_TOKENS
from planner_cli.perf.model import CostModel
from planner_cli.sim.cascade import CascadeResult, StageResult
from planner_cli.sim.client import client_delay
from planner_cli.sim.figures import CascadeFigures, Percentiles, SloTargets, StageFigures

PERCENTILES = (50, 90, 95, 99)
DEFAULT_ATTAINMENT = 95.0  # % of requests that must meet the SLO (the paper's metric)


def percentiles(values: np.ndarray) -> Percentiles:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Percentiles()
    got = np.percentile(finite, PERCENTILES)
    return Percentiles(**{f"p{q}": float(v) for q, v in zip(PERCENTILES, got, strict=True)})


def unloaded_latency(cost: CostModel, prompt: np.ndarray, output: np.ndarray,
                     max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
                     frontend_s: float = 0.0, output_lag: float = 0.0) -> np.ndarray:
    """Latency of each request alone on a replica: its prefill (in chunks of the token
    budget), then output-1 decode iterations of batch 1 (all requests' at once); as its client
    sees it (sim.client) where a frontend time or output lag is given."""
    lengths, where = np.unique(prompt, return_inverse=True)
    prefill = np.empty(lengths.shape[0])
    for i, p in enumerate(lengths.tolist()):
        t, done = 0.0, 0
        while done < p:
            chunk = min(max_num_batched_tokens, p - done)
            t += cost.time(chunk, 0, 0, done)
            done += chunk
        prefill[i] = t
    decode = cost.decode_runs(1, prompt, np.maximum(output - 1, 0))
    alone = prefill[where.reshape(-1)] + decode
    if frontend_s or output_lag:
        alone = alone + client_delay(decode, output, frontend_s, output_lag)
    return alone


def slo_scale(e2e: np.ndarray, base: np.ndarray, attainment_pct: float = DEFAULT_ATTAINMENT
              ) -> float:
    """The smallest s such that attainment_pct % of requests finish within s x base."""
    ratio = np.sort(np.where(np.isfinite(e2e), e2e / base, np.inf))
    need = max(1, math.ceil(attainment_pct / 100.0 * ratio.shape[0] - 1e-9))
    return float(ratio[need - 1])


def attainment_curve(e2e: np.ndarray, base: np.ndarray,
                     scales: np.ndarray | None = None) -> list[tuple[float, float]]:
    """(s, share of requests within s x base) over a range of s."""
    ratio = np.where(np.isfinite(e2e), e2e / base, np.inf)
    if scales is None:
        scales = np.array([0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                           50, 100.0])
    return [(float(s), float(np.mean(ratio <= s))) for s in scales]


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None


def stage_figures(stage: StageResult) -> StageFigures:
    v = stage.visited
    ttft = stage.first_token[v] - stage.arrival[v]
    e2e = stage.finish[v] - stage.arrival[v]
    out = stage.output_tokens[v]
    tpot = np.where(out > 1, (stage.finish[v] - stage.first_token[v]) / np.maximum(out - 1, 1),
                    np.nan)
    queue = stage.scheduled[v] - stage.arrival[v]
    busy = stage.replica_busy_s
    return StageFigures(
        stage=stage.name, requests=int(v.sum()), rejected=stage.rejected,
        ttft_s=percentiles(ttft), tpot_s=percentiles(tpot[np.isfinite(tpot)]),
        latency_s=percentiles(e2e), queueing_s=percentiles(queue),
        preemptions=int(stage.preemptions[v].sum()),
        kv_utilisation_mean=float(np.mean(stage.replica_kv_util)) if busy else 0.0,
        busy_s_per_replica=[round(b, 3) for b in busy],
        iterations=stage.iterations)


def cascade_figures(result: CascadeResult, base: np.ndarray, slo: Slo = Slo(),
                    attainment_pct: float = DEFAULT_ATTAINMENT) -> CascadeFigures:
    e2e = result.e2e
    n = e2e.shape[0]
    duration = float(result.arrival.max() - result.arrival.min()) if n > 1 else 0.0
    finite = np.isfinite(e2e)
    last = float(result.finish[finite].max()) if finite.any() else 0.0
    makespan = max(last - float(result.arrival.min()), 1e-12)
    # the user sees the answering stage's first token after every earlier stage and judgement
    ttft = np.full(n, np.inf)
    for i, stage in enumerate(result.stages):
        mine = result.answered_by == i
        ttft[mine] = stage.first_token[mine] - result.arrival[mine]
    good = finite.copy()
    if slo.e2e_s is not None:
        good &= e2e <= slo.e2e_s
    if slo.ttft_s is not None:
        good &= ttft <= slo.ttft_s
    if slo.tpot_s is not None:
        ans = result.answered_by
        tpot = np.empty(n)
        for i, stage in enumerate(result.stages):
            mine = ans == i
            out = stage.output_tokens[mine]
            tpot[mine] = np.where(out > 1, (stage.finish[mine] - stage.first_token[mine])
                                  / np.maximum(out - 1, 1), 0.0)
        good &= tpot <= slo.tpot_s
    scale = slo_scale(e2e, base, attainment_pct)
    return CascadeFigures(
        requests=n,
        completed=int(finite.sum()),
        answered_by_stage=[int((result.answered_by == i).sum())
                           for i in range(len(result.stages))],
        e2e_latency_s=percentiles(e2e),
        ttft_s=percentiles(ttft),
        throughput_rps=float(finite.sum() / makespan),
        offered_rps=float(n / duration) if duration > 0 else None,
        goodput_rps=float(good.sum() / makespan),
        slo=SloTargets(ttft_s=slo.ttft_s, tpot_s=slo.tpot_s, e2e_s=slo.e2e_s),
        slo_scale=scale if math.isfinite(scale) else None,
        slo_attainment_pct=attainment_pct,
        attainment_curve=attainment_curve(e2e, base),
        stages=[stage_figures(s) for s in result.stages])
