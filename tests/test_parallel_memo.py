"""What makes optimize fast must not change what it answers: work spread over processes gives
the serial results, remembered stage simulations equal fresh ones, a capacity run stopped
early is one that fails, and the estimate's shortcuts give the same figures to the bit."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_cli import parallel
from planner_cli.errors import InputError
from planner_cli.optimize.estimate import Workload, _percentile, p95_latency
from planner_cli.perf.analytic import DEFAULT_CONSTANTS
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.sim import cascade
from planner_cli.sim.cascade import StageConfig, TooLate, simulate_cascade, simulate_stage
from planner_cli.sim.run import SloCheck
from planner_cli.specs.catalog import load_catalog
from tests.conftest import ROOT

CAT = load_catalog(ROOT)
H100 = CAT.gpu("h100-sxm")
COST = IterationCost(ReplicaShape(CAT.model("llama-3.1-8b"), H100, 1), DEFAULT_CONSTANTS)
SHARED: dict = parallel.shared({})


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")


# ---------------------------------------------------------------- run_all

def _square(x: int) -> int:
    return x * x


def test_run_all_gives_the_serial_results_in_order(two_workers):
    tasks = [lambda x=x: _square(x) for x in range(7)]
    assert parallel.run_all(tasks) == [x * x for x in range(7)]


def test_run_all_uses_other_processes_and_keeps_groups_together(two_workers):
    pids = parallel.run_all([os.getpid] * 4, groups=["a", "b", "a", "b"])
    assert pids[0] == pids[2] and pids[1] == pids[3]
    assert os.getpid() not in pids


def test_a_failing_task_raises_here_with_its_own_error(two_workers):
    def boom() -> int:
        raise ValueError("the task's own error")

    with pytest.raises(ValueError, match="the task's own error"):
        parallel.run_all([lambda: 1, boom])


def test_a_worker_that_dies_leaves_its_task_to_this_process(two_workers):
    def dies_in_a_worker() -> str:
        if parallel._in_worker:
            os._exit(9)
        return "ran here"

    assert parallel.run_all([dies_in_a_worker, lambda: "fine"]) == ["ran here", "fine"]


def test_what_workers_add_to_a_shared_cache_comes_back(two_workers):
    SHARED.clear()

    def fill(k: int) -> int:
        SHARED[k] = os.getpid()
        return k

    parallel.run_all([lambda k=k: fill(k) for k in range(4)])
    assert sorted(SHARED) == [0, 1, 2, 3]
    assert os.getpid() not in SHARED.values()


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_worker_count_is_refused(monkeypatch, value):
    monkeypatch.setenv(parallel.WORKERS_ENV, value)
    with pytest.raises(InputError, match=parallel.WORKERS_ENV):
        parallel.workers()


def test_one_worker_runs_here(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.run_all([os.getpid]) == [os.getpid()]


# ---------------------------------------------------------------- remembered stages

def _stage_inputs(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    return (np.arange(n), np.sort(rng.uniform(0, 20, n)), rng.integers(10, 2000, n),
            rng.integers(1, 300, n))


def test_a_remembered_stage_is_the_fresh_result_and_read_only():
    cascade.forget_stages()
    rids, arr, prompts, outs = _stage_inputs(4)
    config = StageConfig("s", COST, 2, 60_000)
    first = simulate_stage(config, rids, arr, prompts, outs, len(rids))
    again = simulate_stage(config, rids, arr, prompts, outs, len(rids))
    assert again is first
    with pytest.raises(ValueError):
        first.finish[0] = 0.0
    # a new cost object of the same shape and constants is the same stage
    twin = StageConfig("s", IterationCost(COST.shape, DEFAULT_CONSTANTS), 2, 60_000)
    assert simulate_stage(twin, rids, arr, prompts, outs, len(rids)) is first
    cascade.forget_stages()
    fresh = simulate_stage(config, rids, arr, prompts, outs, len(rids))
    assert fresh is not first and np.array_equal(fresh.finish, first.finish)
    # anything else that matters is another stage
    other = simulate_stage(StageConfig("s", COST, 3, 60_000), rids, arr, prompts, outs,
                           len(rids))
    assert not np.array_equal(other.finish, first.finish)
    later = arr.copy()
    later[-1] += 1.0
    assert simulate_stage(config, rids, later, prompts, outs, len(rids)) is not fresh


def test_the_memory_is_bounded(monkeypatch):
    cascade.forget_stages()
    monkeypatch.setattr(cascade, "MEMO_REQUESTS", 450)
    for seed in range(4):
        rids, arr, prompts, outs = _stage_inputs(seed)
        simulate_stage(StageConfig("s", COST, 1, 60_000), rids, arr, prompts, outs, len(rids))
    assert len(cascade._MEMO) == 2 and cascade._MEMO.held == 400
    cascade.forget_stages()


# ---------------------------------------------------------------- stopping early

@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 60.0), st.sampled_from([50.0, 90.0, 95.0]),
       st.booleans(), st.integers(1, 3))
def test_a_run_stopped_early_is_one_that_fails(seed, limit, pct, by_scale, replicas):
    cascade.forget_stages()
    rng = np.random.default_rng(seed)
    n = 150
    arr = np.sort(rng.uniform(0, 10, n))
    prompts = rng.integers(10, 3000, n)
    outs = [rng.integers(1, 400, n), rng.integers(1, 400, n)]
    answered = rng.integers(0, 2, n)
    stages = [StageConfig("a", COST, replicas, 60_000), StageConfig("b", COST, 1, 60_000)]
    base = rng.uniform(0.5, 5.0, n)
    slo = (SloCheck(limit / 5.0, None, pct) if by_scale else SloCheck(None, limit, pct))
    whole = simulate_cascade(stages, arr, prompts, outs, answered, 0.2)
    cascade.forget_stages()
    try:
        stopped = simulate_cascade(stages, arr, prompts, outs, answered, 0.2,
                                   late=slo.late(arr, base))
    except TooLate:
        assert not slo.meets(whole.e2e, base)
    else:
        assert np.array_equal(stopped.finish, whole.finish)


def test_an_overloaded_run_stops_early():
    rng = np.random.default_rng(2)
    n = 2000
    arr = np.sort(rng.uniform(0, 5, n))  # 400 req/s on one replica
    stages = [StageConfig("a", COST, 1, 200_000)]
    slo = SloCheck(None, 2.0, 95.0)
    with pytest.raises(TooLate):
        simulate_cascade(stages, arr, rng.integers(500, 2000, n), [rng.integers(100, 400, n)],
                         np.zeros(n, dtype=int), late=slo.late(arr, np.ones(n)))


# ---------------------------------------------------------------- the estimate

@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300),
       st.floats(0, 100))
def test_the_percentile_is_numpys_to_the_bit(values, q):
    a = np.array(values)
    assert _percentile(a.copy(), q) == float(np.percentile(a, q))


def test_p95_with_a_memo_is_the_same_figure():
    rng = np.random.default_rng(5)
    work = Workload(rate_per_s=40.0, prompts=rng.integers(10, 4000, 500).astype(float),
                    outputs=rng.integers(1, 800, 500).astype(float))
    memo: dict = {}
    finite = 0
    for dp in range(1, 40):
        plain = p95_latency(COST, work, dp, 256, 8192, 10**6)
        assert p95_latency(COST, work, dp, 256, 8192, 10**6, memo=memo) == plain
        finite += math.isfinite(plain)
    rows = [k for k in memo if isinstance(k, int)]
    assert finite > 30 and 0 < len(rows) < finite and memo["times"]


def test_a_baseline_is_simulated_beside_the_plans_that_share_its_first_stage():
    """Whole-trace simulations are grouped by what their first stage deploys, baselines
    included, so a baseline that keeps the plan's first stage reuses its simulation in the
    same worker; capacity searches run on their own."""
    from planner_cli import api
    from planner_cli.optimize.allocator import Planner
    from planner_cli.optimize.baselines import BaselineRuns, first_stage
    from planner_cli.perf.model import analytic_lookup

    p = api.load_problem()
    pl = Planner(p, analytic_lookup)
    theta = p.best.thresholds
    _, sol = pl.allocate(theta, full=True)
    plan = pl.plan_for(theta, sol.assignment, "plan")
    runs = BaselineRuns(pl, pl, theta, plan, lambda: None)
    assert len(runs.groups) == len(runs.tasks) == 2 * len(runs.runs) + 1
    sims = runs.groups[:len(runs.runs)]
    assert sims == [first_stage(runs.built[name][1]) for name in runs.runs]
    caps = runs.groups[len(runs.runs):]
    assert len(set(caps)) == len(caps) and not set(caps) & set(sims)


class _GcWatch(IterationCost):
    """The analytic cost, noting whether the cyclic collector ran while it was asked."""

    seen: set[bool]

    def time(self, *args, **kwargs):
        import gc

        self.seen.add(gc.isenabled())
        return super().time(*args, **kwargs)


def test_a_stage_replays_with_the_collector_paused_and_restores_it():
    import gc

    cascade.forget_stages()
    watch = _GcWatch(COST.shape, DEFAULT_CONSTANTS)
    watch.seen = set()
    rids, arr, prompts, outs = _stage_inputs(4)
    assert gc.isenabled()
    simulate_stage(StageConfig("s", watch, 2, 60_000), rids, arr, prompts, outs, len(rids))
    assert watch.seen == {False} and gc.isenabled()
    gc.disable()
    try:  # a caller's own choice is kept
        cascade.forget_stages()
        simulate_stage(StageConfig("s", watch, 2, 60_000), rids, arr, prompts, outs, len(rids))
        assert not gc.isenabled()
    finally:
        gc.enable()


def _frozen() -> int:
    import gc

    return gc.get_freeze_count()


def test_workers_do_not_collect_what_the_parent_held(two_workers):
    import gc

    assert all(n > 0 for n in parallel.run_all([_frozen, _frozen]))
    assert gc.get_freeze_count() == 0  # thawed here after
