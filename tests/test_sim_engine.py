"""The simulator against closed forms: fast cost = analytic model, exact decode runs,
one-request latencies, conservation, KV serialisation, escalation, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_cli.perf.analytic import DEFAULT_CONSTANTS, analytic_iteration
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.sim.cascade import StageConfig, simulate_cascade, simulate_stage
from planner_cli.sim.engine import Replica, Req
from planner_cli.sim.metrics import slo_scale, unloaded_latency
from planner_cli.specs.catalog import load_catalog
from planner_cli.workload.routing import route
from tests.conftest import ROOT

CAT = load_catalog(ROOT)
H100 = CAT.gpu("h100-sxm")


class ConstantCost:
    """Every iteration takes `t` seconds, whatever its batch (closed-form tests)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def time(self, p, b, k, pc=0.0, seqs=1):
        return self.t

    def decode_run(self, b, k0, n):
        return self.t * max(n, 0)

    def decode_time(self, b, k):
        return self.t

    def decode_iterations_within(self, b, k0, budget, cap):
        m = max(0, min(cap, math.floor(budget / self.t + 1e-12)))
        return m, m * self.t


@pytest.mark.parametrize("model,tp,precision", [("llama-3.1-8b", 1, "bf16"),
                                                ("llama-3.1-70b", 4, "fp8"),
                                                ("mixtral-8x7b", 2, "bf16"),
                                                ("deepseek-r1", 8, "int4-awq"),
                                                ("mistral-7b-instruct-v0.1", 1, "bf16")])
def test_fast_cost_equals_the_analytic_model(model, tp, precision):
    shape = ReplicaShape(CAT.model(model), H100, tp, 1, precision)
    constants = DEFAULT_CONSTANTS.with_(single_token_bandwidth_efficiency=0.6)
    cost = IterationCost(shape, constants)
    rng = np.random.default_rng(0)
    for _ in range(60):
        p, b = int(rng.integers(0, 4096)), int(rng.integers(0, 256))
        if p + b == 0:
            b = 1
        k = float(rng.integers(0, 300_000)) if b else 0.0
        pc = float(rng.integers(0, 8000)) if p else 0.0
        want = analytic_iteration(shape, p, b, k, pc, constants).total_s
        assert cost.time(p, b, k, pc) == pytest.approx(want, rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["llama-3.1-8b", "mistral-7b-instruct-v0.1", "deepseek-r1"]),
       st.integers(1, 300), st.integers(0, 200_000), st.integers(0, 400))
def test_decode_run_is_the_exact_sum(model, b, k0, n):
    precision = "int4-awq" if model == "deepseek-r1" else "bf16"
    tp = 8 if model == "deepseek-r1" else 1
    cost = IterationCost(ReplicaShape(CAT.model(model), H100, tp, 1, precision),
                         DEFAULT_CONSTANTS)
    loop = sum(cost.time(0, b, k0 + i * b) for i in range(n))
    assert cost.decode_run(b, k0, n) == pytest.approx(loop, rel=1e-9, abs=1e-15)
    budget = loop * 0.6
    m, spent = cost.decode_iterations_within(b, k0, budget, n)
    assert cost.decode_run(b, k0, m) <= budget + 1e-12
    assert spent == pytest.approx(cost.decode_run(b, k0, m), rel=1e-9, abs=1e-15)
    assert cost.decode_time(b, k0 + n * b) == pytest.approx(cost.time(0, b, k0 + n * b))
    if m < n:
        assert cost.decode_run(b, k0, m + 1) > budget


def run_one_replica(cost, requests, capacity=10**9, budget=8192, seqs=256):
    rep = Replica(cost, capacity, budget, seqs)
    reqs = []
    for rid, (t, p, o) in enumerate(requests):
        rep.advance_until(t)
        r = Req(rid, t, p, o)
        rep.submit(r)
        reqs.append(r)
    rep.advance_until(math.inf)
    return rep, reqs


def test_batch_one_constant_time_exact_latencies():
    # prefill takes one iteration and samples the first token; each further token one more
    t = 0.01
    rep, reqs = run_one_replica(ConstantCost(t), [(0.0, 100, 5), (10.0, 50, 1), (20.0, 10, 3)])
    assert [r.first_token - r.arrival for r in reqs] == pytest.approx([t, t, t])
    assert [r.finish - r.arrival for r in reqs] == pytest.approx([5 * t, 1 * t, 3 * t])
    assert rep.iterations == 5 + 1 + 3


def test_queued_requests_share_iterations():
    # two requests arriving together: both prefill in iteration 1, then decode together
    t = 0.02
    _, reqs = run_one_replica(ConstantCost(t), [(0.0, 10, 4), (0.0, 10, 2)])
    assert reqs[0].finish == pytest.approx(4 * t)
    assert reqs[1].finish == pytest.approx(2 * t)


def test_lightly_loaded_stage_matches_unloaded_latency():
    shape = ReplicaShape(CAT.model("llama-3.1-8b"), H100, 1)
    cost = IterationCost(shape, DEFAULT_CONSTANTS)
    prompts = np.array([300, 1200, 50, 4000])
    outputs = np.array([100, 20, 400, 7])
    arrivals = np.arange(4) * 100.0  # far apart: never two at once
    reqs = [(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs,
                                                           strict=True)]
    _, done = run_one_replica(cost, reqs)
    base = unloaded_latency(cost, prompts, outputs)
    assert [r.finish - r.arrival for r in done] == pytest.approx(base.tolist(), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 3000), st.integers(1, 300)),
                min_size=1, max_size=60),
       st.integers(1, 4), st.sampled_from(["round-robin", "least-outstanding"]),
       st.integers(4000, 200_000))
def test_every_request_completes_once_and_tokens_are_conserved(reqs, replicas, balancer,
                                                               capacity):
    reqs = sorted(reqs)
    cost = IterationCost(ReplicaShape(CAT.model("llama-3.1-8b"), H100, 1), DEFAULT_CONSTANTS)
    n = len(reqs)
    arrivals = np.array([r[0] for r in reqs])
    prompts = np.array([r[1] for r in reqs])
    outputs = np.array([r[2] for r in reqs])
    res = simulate_stage(StageConfig("s", cost, replicas, capacity, 2048, 64),
                         np.arange(n), arrivals, prompts, outputs, n, balancer)
    assert res.rejected == 0
    assert res.visited.all()
    assert np.all(np.isfinite(res.finish))
    assert np.all(res.first_token <= res.finish + 1e-12)
    assert np.all(res.first_token > res.arrival)
    assert res.output_tokens.sum() == outputs.sum()


def test_kv_capacity_for_one_request_serialises():
    # capacity for exactly one request's prompt + output: the second waits for the first
    t = 0.01
    rep, reqs = run_one_replica(ConstantCost(t), [(0.0, 100, 10), (0.0, 100, 10)],
                                capacity=110)
    first, second = sorted(reqs, key=lambda r: r.finish)
    assert second.scheduled >= first.finish - 1e-12 or second.preemptions > 0
    assert second.finish == pytest.approx(first.finish + 10 * t, rel=1e-9)


def test_preemption_recomputes_and_still_completes():
    cost = ConstantCost(0.01)
    rep, reqs = run_one_replica(cost, [(0.0, 40, 60), (0.0, 40, 60), (0.0, 40, 60)],
                                capacity=160)
    assert all(math.isfinite(r.finish) for r in reqs)
    assert sum(r.preemptions for r in reqs) > 0


def test_escalation_follows_the_routing_function():
    rng = np.random.default_rng(3)
    n = 400
    scores = rng.uniform(0, 100, size=(n, 3))
    routing = route(scores, scores, [40.0, 60.0])
    cost = ConstantCost(0.001)
    stages = [StageConfig(f"s{i}", cost, 2, 10**9) for i in range(3)]
    arrivals = np.sort(rng.uniform(0, 60, size=n))
    prompts = rng.integers(10, 500, size=n)
    outs = [rng.integers(1, 50, size=n) for _ in range(3)]
    res = simulate_cascade(stages, arrivals, prompts, outs, routing.answered_by,
                           judge_latency_s=0.5)
    reached = [int(s.visited.sum()) for s in res.stages]
    assert reached == [round(f * n) for f in routing.reach_fraction]
    assert np.all(np.isfinite(res.finish))
    # an escalated request pays the judge after every stage it left
    esc = routing.answered_by == 2
    assert np.all(res.stages[1].arrival[esc] >= res.stages[0].finish[esc] + 0.5 - 1e-9)


def test_same_inputs_same_results():
    rng = np.random.default_rng(1)
    n = 300
    cost = IterationCost(ReplicaShape(CAT.model("llama-3.1-8b"), H100, 1), DEFAULT_CONSTANTS)
    arrivals = np.sort(rng.uniform(0, 30, size=n))
    prompts = rng.integers(10, 3000, size=n)
    outs = [rng.integers(1, 400, size=n)]
    a = simulate_cascade([StageConfig("s", cost, 2, 50_000)], arrivals, prompts, outs,
                         np.zeros(n, dtype=int), balancer="least-outstanding")
    b = simulate_cascade([StageConfig("s", cost, 2, 50_000)], arrivals, prompts, outs,
                         np.zeros(n, dtype=int), balancer="least-outstanding")
    assert np.array_equal(a.finish, b.finish)


def test_slo_scale_definition():
    base = np.ones(100)
    e2e = np.linspace(1, 10, 100)
    s = slo_scale(e2e, base, 95)
    assert np.mean(e2e <= s * base) >= 0.95
    assert np.mean(e2e <= (s - 1e-9) * base) < 0.95


def test_the_fused_and_batched_decode_runs_equal_the_plain_ones_exactly():
    # the simulator's commonest call, a run of decodes cut where an iteration would start
    # after the next arrival, and the SLO base's one run per request: each cost's fused and
    # batched forms must give the very same numbers as decode_run, decode_time and
    # decode_iterations_within
    from planner_cli.perf.fast import decode_until
    from planner_cli.perf.measured import MeasuredCost

    costs = [IterationCost(ReplicaShape(CAT.model("deepseek-r1"), H100, 8, 1, "int4-awq"),
                           DEFAULT_CONSTANTS),
             IterationCost(ReplicaShape(CAT.model("mistral-7b-instruct-v0.1"), H100, 1, 1,
                                        "bf16"), DEFAULT_CONSTANTS),
             MeasuredCost(ReplicaShape(CAT.model("llama-3.1-8b"), H100, 1, 1, "bf16"), "vllm")]
    rng = np.random.default_rng(3)
    cut = whole = 0
    for cost in costs:
        for _ in range(400):
            b, n = int(rng.integers(1, 300)), int(rng.integers(0, 400))
            k0 = int(rng.integers(0, 2_000_000)) * (b if rng.random() < 0.5 else 1)
            full = cost.decode_run(b, k0, n)
            budget = full * float(rng.uniform(0.0, 1.2))
            got = cost.decode_until(b, k0, n, budget)
            assert got == decode_until(cost, b, k0, n, budget)
            cut += got[0] < n
            whole += got[0] == n
        for b in (1, 7):
            k0s = rng.integers(0, 200_000, 300)
            ns = rng.integers(-1, 40_000, 300)
            want = [cost.decode_run(b, int(k), int(n)) for k, n in zip(k0s, ns, strict=True)]
            assert cost.decode_runs(b, k0s, ns).tolist() == want
    assert cut > 200 and whole > 200  # both ways were taken
