"""Units under the planner: the fast p95 estimate, candidate shapes, latency tables, the MILP's
tie-break phases, the capacity search and the placement of replicas on nodes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from planner_cli.export.placement import place
from planner_cli.optimize import milp
from planner_cli.optimize.candidates import replica_shapes
from planner_cli.optimize.estimate import Workload, p95_latency, steady_iteration_s
from planner_cli.optimize.milp import InfeasibleError, Option, build_problem, solve
from planner_cli.optimize.tables import latency_table, lookup
from planner_cli.perf.analytic import DEFAULT_CONSTANTS
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.memory import memory_figures
from planner_cli.perf.model import analytic_lookup
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.plan import Plan
from planner_cli.problem import Pool, resolve_deployment
from planner_cli.sim.metrics import unloaded_latency
from planner_cli.sim.run import capacity_search
from planner_cli.specs._yaml import load_yaml_model
from planner_cli.specs.catalog import load_catalog
from tests.conftest import FIXTURES

CATALOG = load_catalog()
H100 = CATALOG.gpu("h100-sxm")
POOL = Pool("h100", H100, 1, 8)


def cost(model: str = "llama-3.1-8b", tp: int = 1) -> IterationCost:
    return IterationCost(ReplicaShape(CATALOG.model(model), H100, tp), DEFAULT_CONSTANTS)


def workload(rate: float, n: int = 200, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(rate, rng.integers(100, 2000, n).astype(float),
                    rng.integers(50, 500, n).astype(float))


# ---------------------------------------------------------------- estimate

def test_no_load_estimate_is_the_unloaded_latency():
    c = cost()
    w = workload(0.0)
    unloaded = unloaded_latency(c, w.prompts.astype(int), w.outputs.astype(int))
    assert p95_latency(c, w, 1, 256, 8192, 10**6) == pytest.approx(
        np.percentile(unloaded, 95), rel=0.05)


def test_estimate_grows_with_load_and_falls_with_replicas():
    c = cost()
    light, heavy = workload(1.0), workload(20.0)
    assert p95_latency(c, light, 1, 256, 8192, 10**6) < p95_latency(c, heavy, 1, 256, 8192,
                                                                      10**6)
    many = [p95_latency(c, heavy, dp, 256, 8192, 10**6) for dp in (1, 2, 4, 8)]
    assert many == sorted(many, reverse=True)


def test_overload_is_infinite():
    c = cost()
    assert p95_latency(c, workload(10_000.0), 1, 256, 8192, 10**6) == float("inf")
    # a KV cache too small for the steady batch overloads too
    assert steady_iteration_s(c, 20.0, 1000, 300, 256, 8192, 2_000) is None


# ---------------------------------------------------------------- candidates and tables

def test_candidate_shapes_fit_and_divide_the_node():
    card = CATALOG.model("llama-3.1-70b")
    shapes = replica_shapes(card, POOL, "bf16", 8192)
    assert shapes and all(8 % s.tp == 0 for s, _ in shapes)
    assert 1 not in {s.gpus for s, _ in shapes}  # 141 GB of weights do not fit one 80 GB GPU
    for s, kv in shapes:
        mem = memory_figures(s, max_model_len=8192)
        assert mem.fits and kv == mem.kv_capacity_tokens >= 8192
    # a longer context needs more KV room: never more shapes
    assert len(replica_shapes(card, POOL, "bf16", 131072)) <= len(shapes)


def test_latency_table_is_improving_and_consistent():
    card = CATALOG.model("llama-3.1-8b")
    table = latency_table(card, POOL, "bf16", workload(8.0), lambda s: IterationCost(
        s, DEFAULT_CONSTANTS))
    assert table
    gpus = [e.gpus for e in table]
    lat = [e.latency_s for e in table]
    assert gpus == sorted(gpus) and len(set(gpus)) == len(gpus)
    assert all(a > b for a, b in zip(lat, lat[1:], strict=False))
    assert all(e.gpus == e.tp * e.pp * e.replicas <= POOL.gpus for e in table)
    assert lookup(table, table[0].gpus - 1) is None
    assert lookup(table, POOL.gpus) == table[-1]


# ---------------------------------------------------------------- MILP phases

def test_a_failing_tie_break_phase_keeps_the_previous_solution(monkeypatch):
    options = {0: [Option("a", 1, 4.0), Option("a", 2, 2.0)],
               1: [Option("a", 1, 3.0), Option("a", 2, 1.0)]}
    real = milp._read

    def flaky(problem, status, what):
        if what == "GPU phase":
            raise InfeasibleError(f"{what}: the MILP is infeasible", "x")
        real(problem, status, what)

    monkeypatch.setattr(milp, "_read", flaky)
    sol = solve(build_problem(options, {"a": 4}, "e2e"))
    assert sol.latency_s == pytest.approx(3.0)  # 2 GPUs each: 2.0 + 1.0


def test_near_equal_latencies_tie_break_to_fewer_gpus():
    # latencies that differ by float noise are one optimum: the GPU phase picks the smaller
    # (the slack itself is covered by the brute-force tests and the fallback test above)
    base = 123.456789
    options = {0: [Option("a", 2, base), Option("a", 4, base * (1 + 1e-12))],
               1: [Option("a", 1, 1.0)]}
    sol = solve(build_problem(options, {"a": 8}, "e2e"))
    assert sol.assignment[0].gpus == 2 and sol.status == "optimal"


# ---------------------------------------------------------------- capacity search

def _runner(limit: float, max_multiple: float | None = None):
    base = np.ones(100)

    def run(x: float, slo=None):
        if max_multiple is not None and x > max_multiple:
            return None
        return SimpleNamespace(e2e=base * x / limit), base

    return run


def test_capacity_search_finds_the_largest_multiple():
    cap = capacity_search(_runner(3.0), 1.0, 95.0, 1.0, rate_per_s=2.0)
    assert cap.rate_multiple == pytest.approx(3.0, rel=0.04) and cap.rate_multiple <= 3.0
    assert cap.requests_per_s == pytest.approx(2 * cap.rate_multiple)
    assert not cap.at_least
    low = capacity_search(_runner(0.01), 1.0, 95.0, 1.0, rate_per_s=1.0)
    assert 0 < low.rate_multiple <= 0.01


def test_capacity_search_reports_a_bound_at_its_request_limit():
    cap = capacity_search(_runner(100.0, max_multiple=5.0), 1.0, 95.0, 1.0, rate_per_s=1.0)
    assert cap.at_least and 2.0 <= cap.rate_multiple <= 5.0


# ---------------------------------------------------------------- placement

def _placed(name: str):
    plan = load_yaml_model(FIXTURES / "plans" / name, Plan)
    dep = resolve_deployment(plan, CATALOG, name, analytic_lookup)
    return dep, place(dep)


def test_placement_packs_replicas_without_sharing_a_gpu():
    for name in ("single-node.yaml", "multi-node.yaml"):
        dep, replicas = _placed(name)
        assert len(replicas) == sum(s.stage.replicas for s in dep.stages)
        used = [(n.host, g) for r in replicas for n in r.nodes for g in n.gpus]
        assert len(used) == len(set(used))
        for r in replicas:
            assert sum(len(n.gpus) for n in r.nodes) == r.tp * r.pp
            assert r.max_model_len == dep.stages[r.stage].stage.max_model_len
        ports = [(r.nodes[0].host, r.port) for r in replicas]
        assert len(ports) == len(set(ports))


def test_a_multi_node_replica_takes_whole_nodes():
    _, replicas = _placed("multi-node.yaml")
    big = [r for r in replicas if r.multi_node]
    assert len(big) == 1 and len(big[0].nodes) == 2
    assert all(len(n.gpus) == 8 for n in big[0].nodes)
