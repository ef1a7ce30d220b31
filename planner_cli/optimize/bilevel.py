"""Cascadia's bi-level optimisation on a resolved `Problem`, checked by simulation.

The outer search over thresholds θ (search.py) asks, for each θ, the inner MILP (milp.py) for
the best allocation of the cluster to the stage workloads θ induces (allocator.py, with the
latency tables of tables.py). The best few θ are replayed through the simulator and the best
simulated plan is kept; baselines.py simulates the baselines on the same trace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from planner_cli.errors import InputError, PlannerError
from planner_cli.optimize import milp
from planner_cli.optimize.allocator import DEFAULT_CAPACITY_SCALE, NoOption, Planner, finite
from planner_cli.optimize.baselines import baselines, gains
from planner_cli.optimize.milp import InfeasibleError, Solution
from planner_cli.optimize.search import Point, ThresholdSearch
from planner_cli.plan import (
    FrontPoint,
    JudgedInfo,
    MilpChoice,
    MilpRecord,
    Plan,
    Predicted,
    TableRow,
    VerifiedCandidate,
)
from planner_cli.problem import PerfLookup, Problem
from planner_cli.sim.run import PlanSimulation
from planner_cli.workload.routing import candidate_thresholds

VERIFY_TOP = 2  # plans replayed through the simulator

Progress = Callable[[str], None]


# ---------------------------------------------------------------- the driver

@dataclass(frozen=True)
class Timings:
    total_s: float
    search_s: float
    milp_solves: int
    last_milp_solve_s: float
    evaluated_thresholds: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OptimizeResult:
    plan: Plan  # with `predicted` set
    timings: Timings
    milp: milp.Problem  # the chosen thresholds' MILP (for --dump-lp)
    no_target: bool  # no quality target: the fastest plan with no quality floor


@dataclass
class _Verified:
    point: Point
    solution: Solution
    plan: Plan
    sim: PlanSimulation


def optimize(problem: Problem, perf: PerfLookup, objective: str = "p95-max-stage",
             capacity_scale: float = DEFAULT_CAPACITY_SCALE,
             progress: Progress | None = None) -> OptimizeResult:
    """Choose thresholds, GPUs and parallelism for the cascade; verify by simulation.

    No quality target means the fastest plan with no quality floor (documented in the README;
    the Pareto front shows what each quality costs)."""
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if problem.cascade.judger.kind == "model":
        raise InputError(f"{problem.files.cascade}: optimize does not size a served judge yet",
                         "use an external judger (kind: external, latency_s) to plan, or "
                         "write the judge's replicas into a plan and run simulate")
    q_min = problem.quality_target
    if q_min is not None and q_min > problem.best.quality + 1e-9:
        bound = "at most" if problem.best.exact else "at least"
        raise InfeasibleError(
            f"quality target {q_min:g} is above the best any thresholds reach "
            f"({bound} {problem.best.quality:.1f}; z1* = {problem.z1:.1f} with every request "
            "at the largest model)",
            f"lower the quality target to at most {problem.best.quality:.1f}")
    pl = Planner(problem, perf, objective, capacity_scale)
    m = len(problem.models)
    candidates = [candidate_thresholds(problem.sample.scores, i) for i in range(m - 1)]
    search = ThresholdSearch(candidates, pl.quality, pl.search_latency, problem.z1, problem.z2)
    say("searching thresholds (MILP per candidate)")
    t_search = time.perf_counter()
    if m > 1:
        search.point(tuple(problem.best.thresholds))  # the best reachable quality, an anchor
        best = search.optimise(q_min)
    else:
        best = ()
        search.point(best)
    search_s = time.perf_counter() - t_search
    chosen = search.point(best)
    if not math.isfinite(chosen.latency_s):
        detail = chosen.detail
        if isinstance(detail, InfeasibleError) and not isinstance(detail, NoOption):
            raise detail
        raise pl.explain(best)
    if q_min is not None and chosen.quality < q_min - 1e-9:
        raise InfeasibleError(f"no thresholds with a feasible allocation reach quality "
                              f"{q_min:g} (best {chosen.quality:.1f})",
                              "lower the quality target or add GPUs")
    feasible = [p for p in search.evaluated.values() if math.isfinite(p.latency_s)
                and (q_min is None or p.quality >= q_min - 1e-9)]
    feasible.sort(key=lambda p: (p.latency_s, -p.quality, p.thresholds))
    top = feasible[:VERIFY_TOP] or [chosen]
    say(f"simulating the best {len(top)} plans")
    verified: list[_Verified] = []
    failure: PlannerError | None = None
    for k, point in enumerate(top):
        _, sol = pl.allocate(point.thresholds, full=True)
        if not isinstance(sol, Solution):
            failure = pl.explain(point.thresholds) if isinstance(sol, NoOption) else sol
            continue
        plan = pl.plan_for(point.thresholds, sol.assignment, f"candidate-{k + 1}")
        verified.append(_Verified(point, sol, plan, pl.simulate(plan)))
    if not verified:
        raise failure or pl.explain(best)

    def score(v: _Verified) -> tuple[float, float]:
        fig = v.sim.figures
        if objective == "e2e":
            return fig.e2e_p95_or_inf, fig.slo_scale_or_inf
        return fig.slo_scale_or_inf, fig.e2e_p95_or_inf

    win = min(verified, key=score)
    say("simulating baselines")
    base = baselines(pl, win.point.thresholds, win.plan)
    capacity = pl.plan_capacity(win.plan)
    tables = {}
    for i in range(m):
        for pool in problem.pools:
            if pl.reached(i, win.point.thresholds):
                tables[f"{problem.names[i]}@{pool.name}"] = [
                    TableRow(**e.to_dict()) for e in pl.table(i, pool, win.point.thresholds)]
    sources = {}
    for s in win.sim.figures.stages:
        sources[f"{s.model}@{s.gpu} tp{s.tp}"] = s.perf_source or ""
    predicted = Predicted(
        quality=win.point.quality, z1=problem.z1, z2=problem.z2, quality_target=q_min,
        objective=objective, milp=_record(win.solution),
        milp_estimate_latency_s=win.point.latency_s, simulated=win.sim.figures,
        capacity=capacity, baselines=base, gains=gains(win.sim.figures, capacity, base),
        pareto_front=[FrontPoint(thresholds=finite(p.thresholds), quality=p.quality,
                                 milp_latency_s=p.latency_s) for p in search.front()],
        latency_tables=tables,
        judged=JudgedInfo(prompts=len(problem.sample), dropped=problem.dropped,
                          scores_from=problem.mix.source),
        perf_sources=dict(sorted(sources.items())),
        verified_candidates=[VerifiedCandidate(
            thresholds=finite(v.point.thresholds), quality=v.point.quality,
            milp_latency_s=v.point.latency_s,
            simulated_e2e_p95_s=v.sim.figures.e2e_latency_s.p95,
            simulated_slo_scale=v.sim.figures.slo_scale) for v in verified])
    plan = win.plan.model_copy(update={"name": "cascadia-plan", "predicted": predicted})
    timings = Timings(total_s=time.perf_counter() - t_start, search_s=search_s,
                      milp_solves=pl.milp_solves, last_milp_solve_s=win.solution.solve_s,
                      evaluated_thresholds=len(search.evaluated))
    return OptimizeResult(plan=plan, timings=timings, milp=pl.build_milp(win.point.thresholds),
                          no_target=q_min is None)


def _record(sol: Solution) -> MilpRecord:
    return MilpRecord(objective_latency_s=sol.latency_s, gpus=sol.gpus, solver=sol.solver,
                      status=sol.status, gap=sol.gap, solve_s=None,
                      assignment={str(i): MilpChoice(pool=o.pool, gpus=o.gpus,
                                                     latency_s=o.latency_s)
                                  for i, o in sorted(sol.assignment.items())})
