"""The inner MILP: GPUs and replica shape per cascade model (Cascadia's allocation problem).

Sets
    I           cascade models (stages), i = 0..m-1
    G           GPU pools of the cluster
    F[i,g]      GPU counts worth giving model i in pool g (the improving entries of its
                latency table)
Parameters
    l[i,g,f]    estimated p95 latency (s) of model i's stage workload on f GPUs of pool g,
                with the best replica shape for f (latency tables)
    N[g]        GPUs in pool g
    c[g]        price of one GPU-hour in pool g (USD), when a budget is given
    B           budget (USD per hour), optional
Variables
    x[i,g,f] ∈ {0,1}   model i gets f GPUs of pool g
    L ≥ 0              the objective's latency (s)
Objective (lexicographic, each phase keeps the optimum of the ones before)
    phase 1: minimise L                                 optimum L*
    phase 2: minimise P = Σ_{i,g,f} l[i,g,f]·x[i,g,f]   (among equally slow slowest stages, the
             fastest path through every stage: what an escalated request pays)  optimum P*
    phase 3: minimise Σ f·x[i,g,f]                      (ties broken toward fewer GPUs)
    A later phase that the solver cannot solve (a tolerance it reads differently) keeps the
    previous phase's solution: it never turns a feasible allocation into "infeasible".
Constraints
    C1 assign_i      Σ_{g,f} x[i,g,f] = 1                    for every model i
    C2 capacity_g    Σ_{i,f} f·x[i,g,f] ≤ N[g]               for every pool g
    C3 latency_i     L ≥ Σ_{g,f} l[i,g,f]·x[i,g,f]            for every i  (p95-max-stage)
       latency_e2e   L ≥ Σ_i Σ_{g,f} l[i,g,f]·x[i,g,f]                      (e2e: a request
                     that visits every stage)
    C4 budget        Σ_{i,g,f} c[g]·f·x[i,g,f] ≤ B            when B is given
    C5 keep_latency  L ≤ L*·(1 + ε) + ε_abs                     phases 2 and 3
    C6 keep_path     P ≤ P*·(1 + ε) + ε_abs                     phase 3 (p95-max-stage)
    with ε = PHASE_RELATIVE_SLACK, ε_abs = PHASE_ABSOLUTE_SLACK_S: solvers accept binaries
    within ~1e-6 of integral, so a tighter slack can exclude the optimum the phase just found.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pulp

from planner_cli.errors import PlannerError

INFEASIBLE_LATENCY = float("inf")
PHASE_RELATIVE_SLACK = 1e-6  # CBC's and HiGHS's integrality tolerances are ~1e-6 .. 1e-7
PHASE_ABSOLUTE_SLACK_S = 1e-9
COST_STEP = 1e-6  # "cheaper than": below by more than the solvers' tolerance


class InfeasibleError(PlannerError):
    """No allocation satisfies the constraints; the message names the binding one."""


@dataclass(frozen=True)
class Option:
    pool: str
    gpus: int
    latency_s: float
    payload: object = None  # the table entry (shape), carried through


@dataclass
class Problem:
    """A built MILP, ready to solve (or to write with write_lp)."""

    lp: pulp.LpProblem
    x: dict[tuple[int, str, int], pulp.LpVariable]
    latency: pulp.LpVariable
    options: dict[int, list[Option]]
    objective: str
    gpus_used: pulp.LpAffineExpression

    def write_lp(self, path: Path) -> None:
        self.lp.writeLP(str(path))


@dataclass(frozen=True)
class Solution:
    assignment: dict[int, Option]  # model index -> chosen option
    latency_s: float  # L
    gpus: int
    solver: str
    status: str
    gap: float | None
    solve_s: float

    def to_dict(self) -> dict:
        return {"objective_latency_s": self.latency_s, "gpus": self.gpus, "solver": self.solver,
                "status": self.status, "gap": self.gap, "solve_s": self.solve_s,
                "assignment": {str(i): {"pool": o.pool, "gpus": o.gpus,
                                        "latency_s": o.latency_s}
                               for i, o in sorted(self.assignment.items())}}


def diagnose(options: Mapping[int, Sequence[Option]], capacity: Mapping[str, int],
             names: Sequence[str], price: Mapping[str, float] | None = None,
             budget: float | None = None, rate_per_s: float | None = None) -> None:
    """Raise InfeasibleError naming the binding constraint, when one obviously binds. The
    options are the GPU counts at which each stage keeps up with its load, so the GPU count
    they need is the load's (at `rate_per_s`, when given), not only the weights'."""
    for i, opts in options.items():
        if not opts:
            raise InfeasibleError(f"{names[i]} has no GPU count of any pool that serves it",
                                  "give it more GPUs, GPU memory or a lower precision")
    least = {i: min(o.gpus for o in opts) for i, opts in options.items()}
    need = sum(least.values())
    total = sum(capacity.values())
    if need > total:
        at = f"at {rate_per_s:.3g} req/s " if rate_per_s is not None else ""
        per = ", ".join(f"{names[i]} {g}" for i, g in sorted(least.items()))
        raise InfeasibleError(f"too few GPUs: {at}the cascade's stages need at least {need} "
                              f"GPUs ({per}); the cluster has {total}",
                              "add GPUs, lower the rate, use a lower precision or drop a model")
    if budget is not None and price is not None:
        cheapest = sum(min(price.get(o.pool, 0.0) * o.gpus for o in opts)
                       for opts in options.values())
        if cheapest > budget:
            raise InfeasibleError(f"budget: the cheapest allocation costs {cheapest:.2f} USD/h, "
                                  f"above the budget of {budget:.2f}",
                                  "raise budget_usd_per_hour or use cheaper GPUs")


def build_problem(options: Mapping[int, Sequence[Option]], capacity: Mapping[str, int],
                  objective: str = "p95-max-stage", price: Mapping[str, float] | None = None,
                  budget: float | None = None,
                  exclude: Sequence[Mapping[int, Option]] = ()) -> Problem:
    """The allocation MILP; `exclude`: assignments it may not return again (the next-best
    allocations are found by excluding the ones before)."""
    lp = pulp.LpProblem("cascadia_allocation", pulp.LpMinimize)
    latency = pulp.LpVariable("L", lowBound=0)
    x: dict[tuple[int, str, int], pulp.LpVariable] = {}
    for i, opts in sorted(options.items()):
        for o in opts:
            x[(i, o.pool, o.gpus)] = pulp.LpVariable(f"x_{i}_{o.pool}_{o.gpus}", cat="Binary")
    lat = {(i, o.pool, o.gpus): o.latency_s for i, opts in options.items() for o in opts}
    lp += latency
    for i in sorted(options):
        keys = [k for k in x if k[0] == i]
        lp += pulp.lpSum(x[k] for k in keys) == 1, f"C1_assign_{i}"
        if objective == "p95-max-stage":
            lp += latency >= pulp.lpSum(lat[k] * x[k] for k in keys), f"C3_latency_{i}"
    if objective == "e2e":
        lp += latency >= pulp.lpSum(lat[k] * x[k] for k in x), "C3_latency_e2e"
    elif objective != "p95-max-stage":
        raise PlannerError(f"objective {objective!r} is not known", "use p95-max-stage or e2e")
    _pool_constraints(lp, x, capacity, price, budget)
    _exclude(lp, x, exclude)
    used = pulp.lpSum(k[2] * x[k] for k in x)
    return Problem(lp=lp, x=x, latency=latency, options={i: list(o) for i, o in
                                                         options.items()},
                   objective=objective, gpus_used=used)


def unit_cost(option: Option, price: Mapping[str, float] | None) -> float:
    """What an option costs per hour (USD) where its pool has a price, else its GPU count."""
    if price and any(price.values()):
        return price.get(option.pool, 0.0) * option.gpus
    return float(option.gpus)


def build_cost_problem(options: Mapping[int, Sequence[Option]], capacity: Mapping[str, int],
                       price: Mapping[str, float] | None = None, budget: float | None = None,
                       exclude: Sequence[Mapping[int, Option]] = (),
                       below: float | None = None) -> Problem:
    """Sizing: one option per stage, within the pools' capacities, at the least cost (USD/h
    where pools have prices, else GPUs); `exclude`: assignments already tried; `below`: only
    allocations cheaper than this."""
    lp = pulp.LpProblem("cascadia_sizing", pulp.LpMinimize)
    latency = pulp.LpVariable("L", lowBound=0)  # unused: the options are pre-filtered
    x = {(i, o.pool, o.gpus): pulp.LpVariable(f"x_{i}_{o.pool}_{o.gpus}", cat="Binary")
         for i, opts in sorted(options.items()) for o in opts}
    cost = pulp.lpSum(unit_cost(o, price) * x[(i, o.pool, o.gpus)]
                      for i, opts in options.items() for o in opts)
    lp += cost
    for i in sorted(options):
        lp += pulp.lpSum(x[k] for k in x if k[0] == i) == 1, f"C1_assign_{i}"
    _pool_constraints(lp, x, capacity, price, budget)
    if below is not None:
        lp += cost <= below - COST_STEP, "C8_cheaper"
    _exclude(lp, x, exclude)
    return Problem(lp=lp, x=x, latency=latency, options={i: list(o) for i, o in
                                                         options.items()},
                   objective="cost", gpus_used=pulp.lpSum(k[2] * x[k] for k in x))


def _pool_constraints(lp: pulp.LpProblem, x: Mapping[tuple[int, str, int], pulp.LpVariable],
                      capacity: Mapping[str, int], price: Mapping[str, float] | None,
                      budget: float | None) -> None:
    """Each pool's GPUs (C2) and, with a budget, the cost per hour (C4)."""
    for g in sorted(capacity):
        lp += (pulp.lpSum(k[2] * x[k] for k in x if k[1] == g) <= capacity[g],
               f"C2_capacity_{g}")
    if budget is not None and price is not None:
        lp += (pulp.lpSum(price.get(k[1], 0.0) * k[2] * x[k] for k in x) <= budget,
               "C4_budget")


def _exclude(lp: pulp.LpProblem, x: Mapping[tuple[int, str, int], pulp.LpVariable],
             exclude: Sequence[Mapping[int, Option]]) -> None:
    """Forbid each assignment in `exclude` (one whose options are not all offered is already
    impossible)."""
    for n, taken in enumerate(exclude):
        keys = [(i, o.pool, o.gpus) for i, o in sorted(taken.items())]
        if all(k in x for k in keys):
            lp += pulp.lpSum(x[k] for k in keys) <= len(keys) - 1, f"C7_not_{n}"


def _solver(time_limit_s: float | None) -> pulp.LpSolver:
    """CBC, the solver PuLP ships, even where HiGHS (highspy) is installed: HiGHS runs in
    this process with a thread pool that a forked worker (parallel.run_all) inherits
    locked, so the worker's first solve hangs for ever; it also prints its banner to stdout
    whatever msg says, and on these small MILPs it is no faster."""
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


def _read(problem: Problem, status: int, what: str) -> None:
    """Check both the model status and the solution status; a time limit can report an
    unproven incumbent."""
    lp = problem.lp
    if pulp.LpStatus[status] == "Infeasible" or lp.sol_status == pulp.LpSolutionInfeasible:
        raise InfeasibleError(f"{what}: the MILP is infeasible",
                              "add GPUs, relax the budget or the quality target")
    if lp.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise PlannerError(f"{what}: the solver returned no usable solution "
                           f"(status {pulp.LpStatus[status]}, solution status "
                           f"{lp.sol_status})", "raise the solver time limit")


def solve(problem: Problem, time_limit_s: float | None = 60.0, phases: int = 3) -> Solution:
    """Phase 1 minimises L; phase 2 the sum of stage latencies at that L; phase 3 the GPUs.
    `phases=1` stops after the latency (enough to rank threshold vectors)."""
    solver = _solver(time_limit_s)
    t0 = time.perf_counter()
    status = problem.lp.solve(solver)
    _read(problem, status, "latency phase")
    best = pulp.value(problem.latency)
    proven = problem.lp.sol_status == pulp.LpSolutionOptimal
    solution = _solution(problem, solver, proven, t0)
    if phases == 1:
        return solution
    problem.lp += problem.latency <= _slack(best), "C5_keep_latency"
    if problem.objective == "p95-max-stage":
        path = pulp.lpSum(o.latency_s * problem.x[(i, o.pool, o.gpus)]
                          for i, opts in problem.options.items() for o in opts)
        problem.lp.setObjective(path)
        improved = _next_phase(problem, solver, proven, t0, "path phase")
        if improved is None:
            return solution
        solution = improved
        problem.lp += path <= _slack(pulp.value(path)), "C6_keep_path"
    problem.lp.setObjective(problem.gpus_used)
    return _next_phase(problem, solver, proven, t0, "GPU phase") or solution


def _slack(optimum: float) -> float:
    return optimum * (1 + PHASE_RELATIVE_SLACK) + PHASE_ABSOLUTE_SLACK_S


def _next_phase(problem: Problem, solver: pulp.LpSolver, proven: bool, t0: float,
                what: str) -> Solution | None:
    """Solve a tie-break phase; None when the solver gives nothing usable (the caller keeps
    the previous phase's solution, which satisfies every constraint but this phase's own)."""
    status = problem.lp.solve(solver)
    try:
        _read(problem, status, what)
        return _solution(problem, solver,
                         proven and problem.lp.sol_status == pulp.LpSolutionOptimal, t0)
    except PlannerError:
        return None


def _solution(problem: Problem, solver: pulp.LpSolver, proven: bool, t0: float) -> Solution:
    assignment: dict[int, Option] = {}
    for (i, g, f), var in problem.x.items():
        if (var.value() or 0.0) > 0.5:  # round binaries
            assignment[i] = next(o for o in problem.options[i] if o.pool == g and o.gpus == f)
    if set(assignment) != set(problem.options):
        raise PlannerError("the solver's solution leaves a model without GPUs",
                           "report this as a bug with --dump-lp output")
    lat = _objective_value(assignment, problem.objective)
    return Solution(assignment=assignment, latency_s=lat,
                    gpus=sum(o.gpus for o in assignment.values()), solver=solver.name,
                    status="optimal" if proven else "feasible (not proven optimal)",
                    gap=0.0 if proven else None, solve_s=time.perf_counter() - t0)


def _objective_value(assignment: Mapping[int, Option], objective: str) -> float:
    """The MILP's latency figure of an assignment (sizing: its slowest stage's estimate)."""
    values = [o.latency_s for o in assignment.values()]
    return sum(values) if objective == "e2e" else max(values)


def brute_force(options: Mapping[int, Sequence[Option]], capacity: Mapping[str, int],
                objective: str = "p95-max-stage") -> tuple[float, float, int] | None:
    """(best L, least path latency at it, fewest GPUs at both) by enumerating every
    allocation (for tests)."""
    keys = sorted(options)
    best: tuple[float, float, int] | None = None
    for combo in product(*(options[i] for i in keys)):
        used: dict[str, int] = {}
        for o in combo:
            used[o.pool] = used.get(o.pool, 0) + o.gpus
        if any(used[g] > capacity.get(g, 0) for g in used):
            continue
        value = _objective_value(dict(zip(keys, combo, strict=True)), objective)
        path = sum(o.latency_s for o in combo)
        cand = (value, path, sum(o.gpus for o in combo))
        if best is None or _lex_less(cand, best):
            best = cand
    return best


def _lex_less(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    tol = 1e-9
    for x, y in zip(a, b, strict=True):
        if x < y - tol * max(1.0, abs(y)):
            return True
        if x > y + tol * max(1.0, abs(y)):
            return False
    return False
