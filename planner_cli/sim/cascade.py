"""A cascade of stages, each a set of replicas behind a load balancer, with a judger between.

A request enters stage 1 at its arrival. When stage i finishes it, the judger takes its latency
and, by the request's judge score against stage i's threshold, the answer is returned or the
request enters stage i+1 (same prompt, that model's output length). Escalation only moves
forward, so the stages are simulated one after another: stage i+1's arrivals are stage i's
completions plus the judger's latency.
"""

from __future__ import annotations

import gc
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from planner_cli.parallel import shared
from planner_cli.perf.memory import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS
from planner_cli.perf.model import CostModel
from planner_cli.sim.client import client_delay
from planner_cli.sim.engine import INF, Replica, Req

Balancer = Literal["round-robin", "least-outstanding"]
BALANCERS: tuple[str, ...] = ("round-robin", "least-outstanding")
MEMO_REQUESTS = 4_000_000  # stage results remembered, in requests of their traces (~60 B each)


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
    output_lag: float = 0.0  # decode iterations what a client sees trails the engine by


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


class _Memo(OrderedDict):
    """Stage results by what determines them, the least recently used dropped first once
    they hold more than MEMO_REQUESTS requests."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    def clear(self) -> None:
        super().clear()
        self.held = 0

    def __setitem__(self, key: tuple, value: StageResult) -> None:
        if key in self:
            return
        super().__setitem__(key, value)
        self.held += value.visited.shape[0]
        while self.held > MEMO_REQUESTS and len(self) > 1:
            _, old = self.popitem(last=False)
            self.held -= old.visited.shape[0]


# The same stage fed the same requests gives the same result: candidates that share a first
# stage (which every request visits), a baseline equal to the plan, a sizing walk that grows
# only a later stage. Results are read-only.
_MEMO: _Memo = shared(_Memo())


def forget_stages() -> None:
    """Drop every remembered stage result (a benchmark measures a cold run this way)."""
    _MEMO.clear()


def _memo_key(config: StageConfig, rids: np.ndarray, arrivals: np.ndarray,
              prompts: np.ndarray, outputs: np.ndarray, n_total: int, balancer: str
              ) -> tuple | None:
    cost_key = getattr(config.cost, "memo_key", None)
    if cost_key is None:
        return None
    h = hashlib.blake2b(digest_size=20)
    for a in (rids, arrivals, prompts, outputs):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return replace(config, cost=None), cost_key, n_total, balancer, h.digest()


class TooLate(Exception):
    """A simulation stopped early: more requests already missed their deadlines than the
    SLO allows, so it fails whatever the rest do."""


# (per request of the trace, the time by which it must be answered; how many may miss)
Late = tuple[np.ndarray, int]
LATE_CHECK_EVERY = 256  # arrivals between two counts of the requests that missed


def simulate_stage(config: StageConfig, rids: np.ndarray, arrivals: np.ndarray,
                   prompts: np.ndarray, outputs: np.ndarray, n_total: int,
                   balancer: Balancer = "round-robin", late: Late | None = None
                   ) -> StageResult:
    """Replay the given arrivals (sorted by time) through one stage's replicas (remembered:
    the same inputs give the same, read-only, result). With `late`, raise TooLate as soon
    as more of these requests finish after their deadline than it allows."""
    key = _memo_key(config, rids, arrivals, prompts, outputs, n_total, balancer)
    if key is not None and key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    with _no_gc():
        result = _simulate_stage(config, rids, arrivals, prompts, outputs, n_total, balancer,
                                 late)
    if key is not None:
        for a in (result.visited, result.arrival, result.first_token, result.finish,
                  result.scheduled, result.output_tokens, result.preemptions):
            a.setflags(write=False)
        _MEMO[key] = result
    return result


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: a stage replay makes no reference cycles (what it
    drops, reference counting frees), and a collection mid-replay would walk every object of
    the process again and again (up to half of a replay's time in a planner's process)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _simulate_stage(config: StageConfig, rids: np.ndarray, arrivals: np.ndarray,
                    prompts: np.ndarray, outputs: np.ndarray, n_total: int,
                    balancer: Balancer, late: Late | None = None) -> StageResult:
    replicas = [Replica(config.cost, config.kv_capacity_tokens, config.max_num_batched_tokens,
                        config.max_num_seqs, index=i, prefill_first=config.prefill_first,
                        state_tokens=config.state_tokens)
                for i in range(config.replicas)]
    reqs = []
    order = np.argsort(arrivals, kind="stable")
    rr = 0
    missed = _Missed(late, replicas, config.frontend_s) if late is not None else None
    # plain Python numbers, read once (indexing numpy arrays one element at a time is slow)
    rid_l, arr_l = rids.astype(np.int64).tolist(), arrivals.astype(float).tolist()
    prompt_l, out_l = prompts.astype(np.int64).tolist(), outputs.astype(np.int64).tolist()
    least = balancer == "least-outstanding"
    count_r = len(replicas)
    for count, j in enumerate(order.tolist()):
        if missed is not None and count % LATE_CHECK_EVERY == 0:
            missed.check()
        t = arr_l[j]
        r = Req(rid_l[j], t, prompt_l[j], out_l[j])
        if least:
            for rep in replicas:
                rep.advance_until(t)
            target = min(replicas, key=lambda x: (x.outstanding, x.index))
        else:
            target = replicas[rr % count_r]
            rr += 1
            target.advance_until(t)
        target.submit(r)
        reqs.append(r)
    for rep in replicas:
        rep.advance_until(INF)
    if missed is not None:
        missed.check()
    visited = np.zeros(n_total, dtype=bool)
    first = np.full(n_total, np.inf)
    finish = np.full(n_total, np.inf)
    sched = np.full(n_total, np.inf)
    arr = np.full(n_total, np.nan)
    out = np.zeros(n_total, dtype=np.int64)
    pre = np.zeros(n_total, dtype=np.int64)
    visited[rids] = True  # what the requests came with, as given
    arr[rids] = arrivals
    out[rids] = outputs
    if reqs:  # what the replicas made of them, column by column
        idx = np.array([r.rid for r in reqs], dtype=np.int64)
        first_l = np.array([r.first_token for r in reqs])
        finish_l = np.array([r.finish for r in reqs])
        with np.errstate(invalid="ignore"):  # inf - inf: a request never answered
            span = finish_l - first_l
        seen = client_delay(span, np.array([r.output for r in reqs]), config.frontend_s,
                            config.output_lag)
        first[idx] = first_l + seen
        finish[idx] = finish_l + seen
        sched[idx] = [r.scheduled for r in reqs]
        pre[idx] = [r.preemptions for r in reqs]
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


class _Missed:
    """Counts a stage's requests answered after their deadline, as the replicas finish them."""

    def __init__(self, late: Late, replicas: list[Replica], frontend_s: float) -> None:
        self.deadline = late[0].tolist()
        self.allowed = late[1]
        self.replicas = replicas
        self.frontend_s = frontend_s
        self.seen = [0] * len(replicas)
        self.count = 0

    def check(self) -> None:
        dl, extra = self.deadline, self.frontend_s
        for k, rep in enumerate(self.replicas):
            done = rep.done
            for r in done[self.seen[k]:]:
                if r.finish + extra > dl[r.rid]:
                    self.count += 1
            self.seen[k] = len(done)
        # a rejected request is never answered
        if self.count + sum(len(rep.rejected) for rep in self.replicas) > self.allowed:
            raise TooLate


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
                     judge_model: JudgeModel | None = None,
                     late: Late | None = None) -> CascadeResult:
    """Replay a trace through the cascade; `answered_by[r]` is the stage whose answer passes
    the judge (the routing function of the thresholds), `outputs_by_stage[i][r]` the tokens
    stage i generates for request r. The judger is an external call (a fixed latency, or per
    boundary i an array of per-request latencies) or a served model (`judge_model`).
    `late` (each request's deadline, how many may miss it): raise TooLate as soon as more
    are certain to miss (only with an external judger)."""
    n = arrivals_s.shape[0]
    m = len(stages)
    if judge_model is None:
        delays = ([np.full(n, float(judge_latency_s))] * max(m - 1, 0)
                  if isinstance(judge_latency_s, int | float) else list(judge_latency_s))
        results, finish, _ = _pass(stages, arrivals_s, prompts, outputs_by_stage, answered_by,
                                   balancer, lambda i, rids, done: done + delays[i][rids],
                                   late)
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
          after_judge, late: Late | None = None
          ) -> tuple[list[StageResult], np.ndarray, np.ndarray]:
    """One pass through the stages; after_judge(i, rids, finish) gives when the verdict on
    stage i's answers is known. With `late`, TooLate as soon as more requests are certain to
    miss their deadlines than it allows: those answered late by earlier stages, and those a
    stage finishes late (a later answer is later still)."""
    n = arrivals_s.shape[0]
    m = len(stages)
    ready = arrivals_s.astype(np.float64).copy()  # when each request reaches the next stage
    finish = np.full(n, np.inf)
    results = []
    missed = 0  # answered after their deadline by the stages so far
    for i, config in enumerate(stages):
        rids = np.flatnonzero(answered_by >= i)
        res = simulate_stage(config, rids, ready[rids], prompts[rids],
                             outputs_by_stage[i][rids], n, balancer,
                             None if late is None else (late[0], late[1] - missed))
        if late is not None and missed + int(
                np.count_nonzero(res.finish[rids] > late[0][rids])) > late[1]:
            raise TooLate  # (a remembered result is counted here; rejected ones never finish)
        results.append(res)
        done = res.finish[rids]
        if i < m - 1:
            # every answer but the last stage's goes to the judger before it is returned
            # or escalated
            ready[rids] = after_judge(i, rids, done)
            answered = rids[answered_by[rids] == i]
            finish[answered] = ready[answered]
            if late is not None:
                missed += int(np.count_nonzero(finish[answered] > late[0][answered]))
        else:
            finish[rids] = done
    return results, finish, ready
