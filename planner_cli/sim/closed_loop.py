"""Closed-loop benchmark clients: what `vllm bench serve --max-concurrency C` would report.

C clients each send a request of `isl` prompt tokens and `osl` output tokens to one replica,
wait for the whole answer, and send the next at once, until `num_prompts` requests are done (the
first C leave at time 0). The figures are the benchmark's own definitions: mean TTFT (send to
first token), mean TPOT ((latency - TTFT) / (output tokens - 1), requests with more than one
output token), output tokens per second and requests per second over the run (first send to
last completion).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from planner_cli.perf.model import CostModel
from planner_cli.sim.client import client_delay, per_token_s
from planner_cli.sim.engine import Replica, Req


@dataclass(frozen=True)
class ServeFigures:
    concurrency: int
    num_prompts: int
    isl: int
    osl: int
    mean_ttft_ms: float
    mean_tpot_ms: float
    mean_e2el_ms: float
    output_throughput_tok_s: float
    request_throughput_rps: float
    duration_s: float
    preemptions: int

    def to_dict(self) -> dict:
        return asdict(self)


def lengths(isl: int, osl: int, num_prompts: int, range_ratio: float,
            seed: int = 0, output_range_ratio: float | None = None
            ) -> tuple[list[int], list[int]]:
    """Each request's (input, output) tokens as `vllm bench serve --random-range-ratio R`
    samples them: uniform integers in [len·(1-R), len·(1+R)], at least 1 (R = 0: fixed);
    the outputs' spread `output_range_ratio` where given (None: R)."""
    out_ratio = range_ratio if output_range_ratio is None else output_range_ratio
    if range_ratio == 0.0 and out_ratio == 0.0:
        return [isl] * num_prompts, [osl] * num_prompts
    rng = np.random.default_rng(seed)

    def draw(n: int, ratio: float) -> list[int]:
        if ratio == 0.0:
            return [n] * num_prompts
        lo, hi = max(int(n * (1 - ratio)), 1), max(int(n * (1 + ratio)), 1)
        return rng.integers(lo, hi + 1, size=num_prompts).tolist()

    return draw(isl, range_ratio), draw(osl, out_ratio)


def closed_loop(cost: CostModel, kv_capacity_tokens: int, isl: int, osl: int,
                concurrency: int, num_prompts: int, max_num_batched_tokens: int,
                max_num_seqs: int, prefill_first: bool = False,
                range_ratio: float = 0.0, seed: int = 0,
                state_tokens: int = 0, frontend_s: float = 0.0,
                recv_interval: int = 1, output_lag: float = 0.0,
                output_range_ratio: float | None = None) -> ServeFigures:
    """Run `num_prompts` requests through one replica from `concurrency` closed-loop clients
    (`prefill_first`: SGLang's scheduling, see sim.engine; `range_ratio`: the spread of the
    lengths around isl and osl, and `output_range_ratio` the outputs' where it differs, see
    `lengths`; `frontend_s`: what a client's TTFT and latency
    add to the engine's, perf.engines.FRONTEND_S; `recv_interval`: SGLang's
    --scheduler-recv-interval, see sim.engine; `output_lag`: decode iterations by which what a
    client sees of a request trails the engine, perf.engines.OUTPUT_LAG)."""
    if min(isl, osl, concurrency, num_prompts) < 1:
        raise ValueError("isl, osl, concurrency and num_prompts must be >= 1")
    for ratio in (range_ratio, output_range_ratio or 0.0):
        if not 0.0 <= ratio < 1.0:
            raise ValueError("range ratios must be in [0, 1)")
    ins, outs = lengths(isl, osl, num_prompts, range_ratio, seed, output_range_ratio)
    if max(i + o for i, o in zip(ins, outs, strict=True)) + state_tokens > kv_capacity_tokens:
        raise ValueError("one request does not fit the KV cache")
    rep = Replica(cost, kv_capacity_tokens, max_num_batched_tokens, max_num_seqs,
                  prefill_first=prefill_first, state_tokens=state_tokens,
                  recv_interval=recv_interval)
    for i in range(min(concurrency, num_prompts)):
        rep.submit(Req(i, 0.0, ins[i], outs[i]))
    sent, seen = min(concurrency, num_prompts), 0
    while rep.step():
        # every answer completed in that step frees its client, which sends the next request
        while seen < len(rep.done):
            r = rep.done[seen]
            seen += 1
            if sent < num_prompts:
                rep.submit(Req(sent, r.finish, ins[sent], outs[sent]))
                sent += 1
    done = rep.done
    if len(done) != num_prompts or rep.rejected:
        raise ValueError("the closed loop lost requests")  # a bug: every request fits
    arrival, first, finish, outputs = (np.array([getattr(r, k) for r in done]) for k in
                                       ("arrival", "first_token", "finish", "output"))
    delay = client_delay(finish - first, outputs, frontend_s, output_lag)
    ttft = (first - arrival + delay).tolist()
    tpot = per_token_s(finish - first, outputs)[outputs > 1].tolist()
    e2e = (finish - arrival + delay).tolist()
    duration = max(r.finish for r in done)
    return ServeFigures(
        concurrency=concurrency, num_prompts=num_prompts, isl=isl, osl=osl,
        mean_ttft_ms=1e3 * sum(ttft) / len(ttft),
        mean_tpot_ms=1e3 * sum(tpot) / len(tpot) if tpot else 0.0,
        mean_e2el_ms=1e3 * sum(e2e) / len(e2e),
        output_throughput_tok_s=sum(r.output for r in done) / duration,
        request_throughput_rps=len(done) / duration, duration_s=duration,
        preemptions=sum(r.preemptions for r in done))
