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

from planner_cli.perf.model import CostModel
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


def closed_loop(cost: CostModel, kv_capacity_tokens: int, isl: int, osl: int,
                concurrency: int, num_prompts: int, max_num_batched_tokens: int,
                max_num_seqs: int) -> ServeFigures:
    """Run `num_prompts` fixed-length requests through one replica from `concurrency`
    closed-loop clients."""
    if min(isl, osl, concurrency, num_prompts) < 1:
        raise ValueError("isl, osl, concurrency and num_prompts must be >= 1")
    if isl + osl > kv_capacity_tokens:
        raise ValueError("one request does not fit the KV cache")
    rep = Replica(cost, kv_capacity_tokens, max_num_batched_tokens, max_num_seqs)
    sent = 0
    for _ in range(min(concurrency, num_prompts)):
        rep.submit(Req(sent, 0.0, isl, osl))
        sent += 1
    seen = 0
    while rep.step():
        # every answer completed in that step frees its client, which sends the next request
        while seen < len(rep.done):
            r = rep.done[seen]
            seen += 1
            if sent < num_prompts:
                rep.submit(Req(sent, r.finish, isl, osl))
                sent += 1
    done = rep.done
    if len(done) != num_prompts or rep.rejected:
        raise ValueError("the closed loop lost requests")  # a bug: every request fits
    ttft = [r.first_token - r.arrival for r in done]
    tpot = [(r.finish - r.first_token) / (r.output - 1) for r in done if r.output > 1]
    e2e = [r.finish - r.arrival for r in done]
    duration = max(r.finish for r in done)
    return ServeFigures(
        concurrency=concurrency, num_prompts=num_prompts, isl=isl, osl=osl,
        mean_ttft_ms=1e3 * sum(ttft) / len(ttft),
        mean_tpot_ms=1e3 * sum(tpot) / len(tpot) if tpot else 0.0,
        mean_e2el_ms=1e3 * sum(e2e) / len(e2e),
        output_throughput_tok_s=osl * len(done) / duration,
        request_throughput_rps=len(done) / duration, duration_s=duration,
        preemptions=sum(r.preemptions for r in done))
