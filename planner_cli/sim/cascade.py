"""A cascade of stages, each a set of replicas behind a load balancer, with a judger between.

A request enters stage 1 at its arrival. When stage i finishes it, the judger takes its latency
and, by the request's judge score against stage i's threshold, the answer is returned or the
request enters stage i+1 (same prompt, that model's output length). Escalation only moves
forward, so the stages are simulated one after another: stage i+1's arrivals are stage i's
completions plus the judger's latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from planner_cli.perf.memory import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS
from planner_cli.perf.model import CostModel
from planner_cli.sim.engine import INF, Replica, Req

Balancer = Literal["round-robin", "least-outstanding"]
BALANCERS: tuple[str, ...] = ("round-robin", "least-outstanding")


@dataclass(frozen=True)
class StageConfig:
    name: str
    cost: CostModel  # one replica's iteration time
    replicas: int
    kv_capacity_tokens: int
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    prefill_first: bool = False  # SGLang's scheduling (perf.engines.prefill_first)
    state_tokens: int = 0  # KV tokens each running sequence holds besides its context
    frontend_s: float = 0.0  # what a client's TTFT and latency add to the engine's


@dataclass
class StageResult:
    """Per request of the trace (NaN / inf where the request did not visit this stage)."""

    name: str
    visited: np.ndarray  # bool
    arrival: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    scheduled: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    rejected: int
    replica_busy_s: list[float]
    replica_kv_util: list[float]  # time-averaged share of the KV cache in use
    iterations: int


@dataclass
class CascadeResult:
    arrival: np.ndarray  # s, per trace request
    finish: np.ndarray  # s, when the answer is returned (after the last judgement)
    answered_by: np.ndarray  # stage index that answered
    stages: list[StageResult]
    judge_latency_s: float
    extras: dict = field(default_factory=dict)

    @property
    def e2e(self) -> np.ndarray:
        return self.finish - self.arrival


def simulate_stage(config: StageConfig, rids: np.ndarray, arrivals: np.ndarray,
                   prompts: np.ndarray, outputs: np.ndarray, n_total: int,
                   balancer: Balancer = "round-robin") -> StageResult:
    """Replay the given arrivals (sorted by time) through one stage's replicas."""
    replicas = [Replica(config.cost, config.kv_capacity_tokens, config.max_num_batched_tokens,
                        config.max_num_seqs, index=i, prefill_first=config.prefill_first,
                        state_tokens=config.state_tokens)
                for i in range(config.replicas)]
    reqs = []
    order = np.argsort(arrivals, kind="stable")
    rr = 0
    for j in order.tolist():
        t = float(arrivals[j])
        r = Req(int(rids[j]), t, int(prompts[j]), int(outputs[j]))
        if balancer == "least-outstanding":
            for rep in replicas:
                rep.advance_until(t)
            target = min(replicas, key=lambda x: (x.outstanding, x.index))
        else:
            target = replicas[rr % len(replicas)]
            rr += 1
            target.advance_until(t)
        target.submit(r)
        reqs.append(r)
    for rep in replicas:
        rep.advance_until(INF)
    visited = np.zeros(n_total, dtype=bool)
    first = np.full(n_total, np.inf)
    finish = np.full(n_total, np.inf)
    sched = np.full(n_total, np.inf)
    arr = np.full(n_total, np.nan)
    out = np.zeros(n_total, dtype=np.int64)
    pre = np.zeros(n_total, dtype=np.int64)
    for r in reqs:
        visited[r.rid] = True
        arr[r.rid] = r.arrival
        first[r.rid] = r.first_token + config.frontend_s
        finish[r.rid] = r.finish + config.frontend_s
        sched[r.rid] = r.scheduled
        out[r.rid] = r.output
        pre[r.rid] = r.preemptions
    horizon = max((rep.clock for rep in replicas if rep.clock < INF), default=0.0)
    span = max(horizon - (float(arrivals.min()) if arrivals.size else 0.0), 1e-12)
    return StageResult(
        name=config.name, visited=visited, arrival=arr, first_token=first, finish=finish,
        scheduled=sched, output_tokens=out, preemptions=pre,
        rejected=sum(len(rep.rejected) for rep in replicas),
        replica_busy_s=[rep.busy_s for rep in replicas],
        replica_kv_util=[rep.kv_token_seconds / (span * max(rep.capacity, 1))
                         for rep in replicas],
        iterations=sum(rep.iterations for rep in replicas))


@dataclass(frozen=True)
class JudgeModel:
    """A judger served on the cluster: a stage of its own that every non-final answer visits."""

    config: StageConfig
    output_tokens: int  # tokens of one verdict
    max_rounds: int = 6  # fixed-point passes (judge load and stage arrivals depend on each other)


def simulate_cascade(stages: Sequence[StageConfig], arrivals_s: np.ndarray,
                     prompts: np.ndarray, outputs_by_stage: Sequence[np.ndarray],
                     answered_by: np.ndarray, judge_latency_s: float | Sequence[np.ndarray] = 0.0,
                     balancer: Balancer = "round-robin",
                     judge_model: JudgeModel | None = None) -> CascadeResult:
    """Replay a trace through the cascade; `answered_by[r]` is the stage whose answer passes
    the judge (the routing function of the thresholds), `outputs_by_stage[i][r]` the tokens
    stage i generates for request r. The judger is an external call (a fixed latency, or per
    boundary i an array of per-request latencies) or a served model (`judge_model`)."""
    n = arrivals_s.shape[0]
    m = len(stages)
    if judge_model is None:
        delays = ([np.full(n, float(judge_latency_s))] * max(m - 1, 0)
                  if isinstance(judge_latency_s, int | float) else list(judge_latency_s))
        results, finish, _ = _pass(stages, arrivals_s, prompts, outputs_by_stage, answered_by,
                                   balancer, lambda i, rids, done: done + delays[i][rids])
        return CascadeResult(arrival=arrivals_s.astype(np.float64), finish=finish,
                             answered_by=answered_by, stages=results,
                             judge_latency_s=float(np.mean(delays[0])) if delays else 0.0)
    # A served judge: its queue mixes the verdicts of every boundary, and stage i+1's arrivals
    # wait for them, so iterate to a fixed point: the stages with the judge latencies of the
    # last pass (none at first), then the judge with the stages' finish times.
    latency = [np.zeros(n) for _ in range(m - 1)]
    judge_result: StageResult | None = None
    results: list[StageResult] = []
    finish = np.full(n, np.inf)
    for _ in range(judge_model.max_rounds):
        finished: list[tuple[int, np.ndarray, np.ndarray]] = []

        def after(i: int, rids: np.ndarray, done: np.ndarray,
                  _seen: list = finished) -> np.ndarray:
            _seen.append((i, rids, done))
            return done + latency[i][rids]

        results, finish, _ = _pass(stages, arrivals_s, prompts, outputs_by_stage, answered_by,
                                   balancer, after)
        ids = np.concatenate([i * n + rids for i, rids, _ in finished])
        judge_result = simulate_stage(
            judge_model.config, ids, np.concatenate([d for _, _, d in finished]),
            np.concatenate([prompts[r] + outputs_by_stage[i][r] for i, r, _ in finished]),
            np.concatenate([np.full(r.shape[0], judge_model.output_tokens)
                            for _, r, _ in finished]),
            max(m - 1, 1) * n, balancer)
        moved = 0.0
        for i, rids, done in finished:
            new = np.zeros(n)
            new[rids] = judge_result.finish[i * n + rids] - done
            moved = max(moved, float(np.max(np.abs(new - latency[i]))))
            latency[i] = new
        if moved < 1e-9:
            break
    result = CascadeResult(arrival=arrivals_s.astype(np.float64), finish=finish,
                           answered_by=answered_by, stages=results,
                           judge_latency_s=float(np.mean(latency[0])) if latency else 0.0)
    result.extras["judge"] = judge_result
    return result


def _pass(stages: Sequence[StageConfig], arrivals_s: np.ndarray, prompts: np.ndarray,
          outputs_by_stage: Sequence[np.ndarray], answered_by: np.ndarray, balancer: Balancer,
          after_judge) -> tuple[list[StageResult], np.ndarray, np.ndarray]:
    """One pass through the stages; after_judge(i, rids, finish) gives when the verdict on
    stage i's answers is known."""
    n = arrivals_s.shape[0]
    m = len(stages)
    ready = arrivals_s.astype(np.float64).copy()  # when each request reaches the next stage
    finish = np.full(n, np.inf)
    results = []
    for i, config in enumerate(stages):
        rids = np.flatnonzero(answered_by >= i)
        res = simulate_stage(config, rids, ready[rids], prompts[rids],
                             outputs_by_stage[i][rids], n, balancer)
        results.append(res)
        done = res.finish[rids]
        if i < m - 1:
            # every answer but the last stage's goes to the judger before it is returned
            # or escalated
            ready[rids] = after_judge(i, rids, done)
            answered = rids[answered_by[rids] == i]
            finish[answered] = ready[answered]
        else:
            finish[rids] = done
    return results, finish, ready
