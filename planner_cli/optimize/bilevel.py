"""Cascadia's bi-level optimisation on a resolved `Problem`, checked by simulation, over the
cascade's whole family.

The family is every ordered sub-cascade of the given models: each model alone, each shorter
chain, the whole chain. For each member that can reach the quality target, the outer search over
thresholds θ (search.py) asks, for each θ, the inner MILP (milp.py) for the best allocation of
the cluster to the stage workloads θ induces (allocator.py, with the latency tables of
tables.py); θ that leave a model unreached belong to the shorter member without it. The MILP's
estimates only prune: the best candidates of every member (at least VERIFY_MIN in all) are
replayed through the simulator and the plan with the best simulated figure for the objective
wins, whichever member it belongs to. baselines.py simulates the baselines on the same trace.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from planner_cli.errors import InputError, PlannerError
from planner_cli.optimize import milp
from planner_cli.optimize.allocator import (
    DEFAULT_CAPACITY_SCALE,
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    NoOption,
    Planner,
    finite,
)
from planner_cli.optimize.baselines import BaselineRuns, baselines, first_stage, gains
from planner_cli.optimize.milp import InfeasibleError, Option, Solution, unit_cost
from planner_cli.optimize.search import Point, ThresholdSearch
from planner_cli.parallel import run_all
from planner_cli.plan import (
    CrossValidatedShortfall,
    Family,
    FamilyMember,
    FrontPoint,
    JudgedInfo,
    MilpChoice,
    MilpRecord,
    Plan,
    Predicted,
    QualityPromise,
    Sizing,
    TableRow,
    VerifiedCandidate,
)
from planner_cli.problem import PerfLookup, Problem
from planner_cli.sim.figures import Capacity
from planner_cli.sim.run import PlanSimulation
from planner_cli.workload.confidence import cross_validate
from planner_cli.workload.routing import candidate_thresholds

VERIFY_MIN = 8  # distinct candidates (member, thresholds, allocation) simulated in all
VERIFY_PER_MEMBER = 2  # each member's best few by the MILP estimate are always simulated
ALTERNATIVES_PER_POINT = 3  # next-best allocations of one θ added when θ are too few
# sizing (--objective cost): per member its best SIZING_POINTS thresholds (and its lightest on
# the last model); per θ a simulation-guided scale-up (_scale_up)
CAPACITY_CANDIDATES = 3  # capacity objective: the best few by p95 (and each member's best)
SIZING_POINTS = 2
SIZING_BOUND = 2.0  # the walk starts at the cheapest allocation estimated within 2 × the SLO
SIZING_GROW = 1.25  # each step gives one stage an option costing at least 1.25 × its own
SIZING_MAX_TRIES = 16  # simulated allocations per (member, θ)
# candidates are ranked on the trace's first SCREEN_REQUESTS requests; the best FINALISTS are
# simulated on the whole trace, which decides
SCREEN_REQUESTS = 4000
FINALISTS = 3

Progress = Callable[[str], None]


def family(m: int) -> list[tuple[int, ...]]:
    """Every ordered sub-cascade of m models: the whole chain first, then shorter ones, each
    size in the order of its models."""
    return [idx for size in range(m, 0, -1) for idx in itertools.combinations(range(m), size)]


def chain(names: list[str]) -> str:
    return " → ".join(names)


# ---------------------------------------------------------------- the driver

@dataclass(frozen=True)
class Timings:
    total_s: float
    search_s: float
    milp_solves: int
    last_milp_solve_s: float
    evaluated_thresholds: int
    simulated_candidates: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OptimizeResult:
    plan: Plan  # with `predicted` set
    timings: Timings
    milp: milp.Problem  # the chosen thresholds' MILP (for --dump-lp)
    no_target: bool  # no quality target: the fastest plan with no quality floor


@dataclass
class _Member:
    """One family member's search."""

    idx: tuple[int, ...]
    planner: Planner
    search: ThresholdSearch | None = None
    feasible: list[Point] = field(default_factory=list)  # by MILP estimate, best first
    error: PlannerError | None = None

    @property
    def names(self) -> list[str]:
        return self.planner.problem.names


@dataclass
class _Verified:
    member: _Member
    point: Point
    solution: Solution
    plan: Plan
    screen: PlanSimulation  # on the trace's first SCREEN_REQUESTS (all of a shorter one)
    full: PlanSimulation | None = None  # on the whole trace (the finalists)
    capacity: Capacity | None = None  # the capacity objective's, within the latency SLO

    @property
    def sim(self) -> PlanSimulation:
        return self.full or self.screen


def _score(v: _Verified, sim: PlanSimulation | None = None) -> tuple[float, float, float]:
    """The latency objective: the simulated end-to-end p95 at the planned rate (then the SLO
    scale, then the higher quality), on `sim` (default: the screening run)."""
    fig = (sim or v.screen).figures
    return fig.e2e_p95_or_inf, fig.slo_scale_or_inf, -v.point.quality


def _p95s(a: _Verified, b: _Verified) -> tuple[float, float]:
    """Two candidates' simulated p95 on the same requests: the whole trace when both ran on
    it, else the screening window."""
    if a.full is not None and b.full is not None:
        return a.full.figures.e2e_p95_or_inf, b.full.figures.e2e_p95_or_inf
    return a.screen.figures.e2e_p95_or_inf, b.screen.figures.e2e_p95_or_inf


def _search_member(mem: _Member, q_min: float | None) -> None:
    """The outer threshold search of one member; its feasible points, or why none."""
    pl = mem.planner
    problem = pl.problem
    m = len(problem.models)
    reach, exact = _reachable(problem)
    if q_min is not None and q_min > reach + 1e-9:
        mem.error = InfeasibleError(
            f"{'promises' if problem.bound else 'reaches'} {'at most' if exact else 'at least'}"
            f" quality {reach:.1f}", "lower the quality target")
        return
    search = mem.search = _new_search(pl)
    if m > 1:
        search.point(tuple(problem.best.thresholds))  # the best reachable quality, an anchor
        best = search.optimise(q_min)
    else:
        best = ()
    chosen = search.point(best)
    if not math.isfinite(chosen.latency_s):
        detail = chosen.detail
        mem.error = (detail if isinstance(detail, InfeasibleError)
                     and not isinstance(detail, NoOption) else pl.explain(best))
        if m > 1 and not pl.reached(m - 1, best):
            mem.error = InfeasibleError("its thresholds leave a model unreached",
                                        "a shorter cascade serves them")
        return
    if q_min is not None and chosen.quality < q_min - 1e-9:
        mem.error = InfeasibleError(f"no thresholds with a feasible allocation reach quality "
                                    f"{q_min:g} (best {chosen.quality:.1f})",
                                    "lower the quality target or add GPUs")
        return
    feasible = [p for p in search.evaluated.values() if math.isfinite(p.latency_s)
                and (q_min is None or p.quality >= q_min - 1e-9)]
    feasible.sort(key=lambda p: (p.latency_s, -p.quality, p.thresholds))
    # the search's own choice first: it is the member's answer for the target
    mem.feasible = [chosen] + [p for p in feasible if p.thresholds != chosen.thresholds]


def _new_search(pl: Planner) -> ThresholdSearch:
    """A member's threshold search (nothing evaluated yet)."""
    problem = pl.problem
    candidates = [candidate_thresholds(problem.sample.scores, i)
                  for i in range(len(problem.models) - 1)]
    # the target is held to what θ promises (the bootstrap bound), the front too
    return ThresholdSearch(candidates, problem.promised, pl.search_latency, problem.z1,
                           problem.z2)


@dataclass
class _Searched:
    """What a member's search found, as a worker sends it back."""

    feasible: list[Point]
    evaluated: dict | None
    quality: dict | None
    error: PlannerError | None
    milp_solves: int  # the member planner's count (set, not added: a serial run searched
    # the very planner it is applied to)
    caches: tuple[dict, dict]  # the planner's latency tables and MILP solutions

    def into(self, mem: _Member) -> None:
        mem.feasible, mem.error = self.feasible, self.error
        mem.planner.milp_solves = self.milp_solves
        mem.planner.remember(*self.caches)
        if self.evaluated is not None:
            mem.search = _new_search(mem.planner)
            mem.search.evaluated, mem.search._quality = self.evaluated, self.quality or {}


def _searched(mem: _Member, q_min: float | None) -> _Searched:
    """_search_member, for a worker; with the allocations (every MILP phase) of the points
    that are always simulated (_to_verify), which come back with the planner's caches."""
    _search_member(mem, q_min)
    for p in mem.feasible[:VERIFY_PER_MEMBER]:
        mem.planner.allocate(p.thresholds, full=True)
    s = mem.search
    return _Searched(mem.feasible, None if s is None else s.evaluated,
                     None if s is None else s._quality, mem.error,
                     mem.planner.milp_solves, mem.planner.caches())


def _nothing_serves(members: list[_Member], root: Planner) -> PlannerError:
    """No member of the family has a plan: the whole cascade's reason, and the others'."""
    whole = members[0]
    error = whole.error or root.explain(root.problem.best.thresholds)
    if len(members) == 1:
        return error
    short = [m for m in members[1:] if m.error is not None]
    low = [chain(m.names) for m in short if "quality" in m.error.message
           and ("promises" in m.error.message or "reaches" in m.error.message)]
    other = [f"{chain(m.names)}: {m.error.message}" for m in short
             if chain(m.names) not in low]
    parts = ([f"{', '.join(low)} cannot reach the quality target"] if low else []) + other
    return InfeasibleError(f"{error.message}; no shorter cascade or single model serves "
                           f"either ({'; '.join(parts)})", error.hint)


def _slo_limit(objective: str, slo_p95_s: float | None) -> float:
    """The end-to-end p95 limit the capacity and cost objectives hold (inf for latency, which
    needs none)."""
    if objective == "latency":
        return math.inf
    if slo_p95_s is None:
        raise InputError(f"--objective {objective} "
                         + ("sizes the cluster" if objective == "cost" else "measures capacity")
                         + " for a latency SLO, and none is given",
                         "pass --slo-p95 SECONDS (or set slo.e2e_s in the cascade file)")
    return slo_p95_s


def _reachable(problem: Problem) -> tuple[float, bool]:
    """The most any thresholds promise (at the confidence, when there is one) and whether that
    is exact."""
    if problem.promise is not None:
        return problem.promise.quality, problem.promise.exact
    return problem.best.quality, problem.best.exact


def _to_verify(members: list[_Member]) -> list[tuple[_Member, Point]]:
    """Each member's best VERIFY_PER_MEMBER points, then the family's next best by the MILP
    estimate until VERIFY_MIN are chosen."""
    picked = [(mem, p) for mem in members for p in mem.feasible[:VERIFY_PER_MEMBER]]
    rest = sorted(((mem, p) for k, mem in enumerate(members)
                   for p in mem.feasible[VERIFY_PER_MEMBER:]),
                  key=lambda mp: (mp[1].latency_s, -mp[1].quality, mp[0].idx,
                                  mp[1].thresholds))
    return picked + rest[:max(0, VERIFY_MIN - len(picked))]


def _choose_fastest(ok: list[_Member], window: int | None, say: Progress,
                    then: Callable[[_Verified], BaselineRuns] | None = None
                    ) -> tuple[_Verified | None, list[_Verified], _Ahead | None]:
    """The latency objective: at least VERIFY_MIN candidates simulated (on the window when
    the trace is longer), the best FINALISTS on the whole trace; the lowest p95 wins.
    `then(v)`: the work that follows for a winner v; run for the best screened finalist
    beside the finalists' runs (it usually wins), and returned with their results."""
    cands: list[tuple[_Member, Point, Solution]] = []
    for mem, point in _to_verify(ok):
        _, sol = mem.planner.allocate(point.thresholds, full=True)
        if isinstance(sol, Solution):
            cands.append((mem, point, sol))
    # fewer distinct thresholds than VERIFY_MIN: the next-best allocations of the best ones
    for mem, point, sol in sorted(cands, key=lambda c: (c[2].latency_s, c[0].idx)):
        need = VERIFY_MIN - len(cands)
        if need <= 0:
            break
        cands += [(mem, point, alt) for alt in mem.planner.alternatives(
            point.thresholds, sol, min(need, ALTERNATIVES_PER_POINT))]
    say(f"simulating the best {len(cands)} candidates"
        + (f" on the first {window:,} requests" if window else ""))
    verified = _all_simulated(cands, window)
    if not verified:
        return None, verified, None
    finalists = sorted(verified, key=_score)[:FINALISTS] if window else verified
    ahead = None
    if window:
        say(f"simulating the best {len(finalists)} on the whole trace")
        runs = None if then is None else then(finalists[0])
        extra = [] if runs is None else runs.tasks
        got = run_all([partial(v.member.planner.simulate, v.plan) for v in finalists] + extra,
                      [first_stage(v.plan) for v in finalists]
                      + ([] if runs is None else runs.groups))
        for v, full in zip(finalists, got[:len(finalists)], strict=True):
            v.full = full
        if runs is not None:
            ahead = _Ahead(finalists[0], runs, got[len(finalists):])
    return min(finalists, key=lambda v: _score(v, v.full)), verified, ahead


@dataclass
class _Ahead:
    """Work done ahead for the candidate expected to win: its baselines' results."""

    candidate: _Verified
    runs: BaselineRuns
    results: list


def _choose_most_capacity(ok: list[_Member], slo_s: float, window: int | None,
                          say: Progress) -> tuple[_Verified | None, list[_Verified]]:
    """The capacity objective: the latency objective's candidates; each member's best and the
    family's best CAPACITY_CANDIDATES (by simulated p95) get a sustained-load capacity search
    within the latency SLO; the highest sustainable rate wins (then the lower p95)."""
    _, verified, _ = _choose_fastest(ok, window, say)
    if not verified:
        return None, verified
    ranked = sorted(verified, key=_score)
    chosen: list[_Verified] = []
    for v in ranked:
        if v.member.idx not in {c.member.idx for c in chosen}:
            chosen.append(v)
    chosen += [v for v in ranked[:CAPACITY_CANDIDATES] if v not in chosen]
    say(f"capacity of the best {len(chosen)} candidates")
    for v, cap in zip(chosen, run_all([partial(v.member.planner.plan_capacity, v.plan)
                                       for v in chosen]), strict=True):
        v.capacity = cap
    measured = [v for v in chosen if v.capacity is not None]
    if not measured:
        return None, verified
    win = max(measured, key=lambda v: (v.capacity.rate_multiple,  # type: ignore[union-attr]
                                       -_score(v)[0]))
    if win.full is None:
        win.full = win.member.planner.simulate(win.plan)
    return win, verified


def _simulated(mem: _Member, point: Point, sol: Solution, n: int, window: int | None
               ) -> _Verified:
    return _all_simulated([(mem, point, sol)], window, n)[0]


def _all_simulated(cands: list[tuple[_Member, Point, Solution]], window: int | None,
                   first: int = 0) -> list[_Verified]:
    """Each candidate's plan simulated (on the first `window` requests), on every core."""
    plans = [mem.planner.plan_for(point.thresholds, sol.assignment, f"candidate-{first + n + 1}")
             for n, (mem, point, sol) in enumerate(cands)]
    sims = run_all([partial(mem.planner.simulate, plan, requests=window)
                    for (mem, _, _), plan in zip(cands, plans, strict=True)],
                   [first_stage(plan) for plan in plans])
    return [_Verified(mem, point, sol, plan, sim, None if window else sim)
            for (mem, point, sol), plan, sim in zip(cands, plans, sims, strict=True)]


def plan_cost(v: _Verified) -> float:
    """What a candidate costs: USD per hour where its pools have prices, else GPUs."""
    price = v.member.planner.price
    return sum(unit_cost(o, price) for o in v.solution.assignment.values())


def _sizing_points(mem: _Member) -> list[Point]:
    """The thresholds a member is sized at: its best SIZING_POINTS by the MILP estimate, and
    the feasible θ that sends the fewest requests to its last model (the cheapest load)."""
    points = list(mem.feasible[:SIZING_POINTS])
    if len(mem.names) > 1 and mem.feasible:
        last = len(mem.names) - 1
        light = min(mem.feasible, key=lambda p: (
            float((mem.planner.answered_by(p.thresholds) >= last).mean()), p.latency_s,
            p.thresholds))
        if all(light.thresholds != p.thresholds for p in points):
            points.append(light)
    return points


def _within(sim: PlanSimulation, slo_s: float, ttft_s: float | None) -> bool:
    """The sizing SLO: the end-to-end p95 within slo_s (and the p95 TTFT within ttft_s)."""
    fig = sim.figures
    if fig.e2e_p95_or_inf > slo_s:
        return False
    return ttft_s is None or (fig.ttft_s.p95 is not None and fig.ttft_s.p95 <= ttft_s)


def _choose_cheapest(ok: list[_Member], slo_s: float, window: int | None, say: Progress,
                     ttft_s: float | None = None) -> tuple[_Verified | None, list[_Verified]]:
    """The cost objective (sizing): per member and each of its _sizing_points θ, a
    simulation-guided scale-up (_scale_up) from the cheapest plausible allocation, only
    below the cost of the best plan found so far. The cheapest plan that holds wins."""
    best: _Verified | None = None
    tried: list[_Verified] = []
    for mem in ok:
        for point in _sizing_points(mem):
            found = _scale_up(mem, point, slo_s, window,
                              None if best is None else plan_cost(best), tried, say, ttft_s)
            if found is not None:
                best = found
    return best, tried


def _scale_up(mem: _Member, point: Point, slo_s: float, window: int | None,
              below: float | None, tried: list[_Verified], say: Progress,
              ttft_s: float | None = None) -> _Verified | None:
    """From the cheapest allocation whose stages' estimated p95 are within SIZING_BOUND × the
    SLO (a MILP within the pools), simulate; while the end-to-end p95 misses the SLO, give the
    stage with the highest simulated p95 (the next that can grow, if it cannot) its next
    option costing at least SIZING_GROW × its current one, within the pools. Once one holds,
    the grown stage's options between the last miss and the hit are bisected, so the answer
    is the cheapest along the walk. At most SIZING_MAX_TRIES simulations; only plans cheaper
    than `below`."""
    pl = mem.planner
    sol = pl.cheapest(point.thresholds, SIZING_BOUND * slo_s, [], below)
    if sol is None:
        return None
    options = pl.options(point.thresholds)
    price = pl.price
    ladders = {i: sorted(opts, key=lambda o: (unit_cost(o, price), o.latency_s, o.pool))
               for i, opts in options.items()}
    cache: dict[tuple, _Verified] = {}

    def run(assign: dict[int, Option]) -> _Verified:
        key = tuple(sorted((i, o.pool, o.gpus) for i, o in assign.items()))
        if key not in cache:
            s = Solution(assignment=dict(assign), latency_s=max(
                o.latency_s for o in assign.values()), gpus=sum(o.gpus for o in
                                                               assign.values()),
                solver=sol.solver, status=sol.status, gap=sol.gap, solve_s=0.0)
            say(f"sizing {chain(mem.names)}: simulating {s.gpus} GPUs")
            v = _simulated(mem, point, s, len(tried), window)
            tried.append(v)
            if _within(v.screen, slo_s, ttft_s) and v.full is None:
                v.full = pl.simulate(v.plan)
            cache[key] = v
        return cache[key]

    def holds(v: _Verified) -> bool:
        return v.full is not None and _within(v.full, slo_s, ttft_s)

    def fits(assign: dict[int, Option]) -> bool:
        used: dict[str, int] = {}
        for o in assign.values():
            used[o.pool] = used.get(o.pool, 0) + o.gpus
        return all(g <= pl.capacity.get(name, 0) for name, g in used.items()) and (
            below is None or sum(unit_cost(o, price) for o in assign.values()) < below)

    current = dict(sol.assignment)
    v = run(current)
    while not holds(v) and len(cache) < SIZING_MAX_TRIES:
        figs = v.sim.figures
        stage_p95 = [f.latency_s.p95 or 0.0 for f in figs.stages] + (
            [figs.judge.latency_s.p95 or 0.0] if figs.judge is not None else [])
        stage_p95 += [0.0] * (len(current) - len(stage_p95))
        grown = None
        for i in sorted(current, key=lambda i: -stage_p95[i]):
            now = unit_cost(current[i], price)
            nxt = [o for o in ladders[i] if unit_cost(o, price) >= SIZING_GROW * now
                   and fits(current | {i: o})]
            if nxt:
                grown = (i, nxt[0])
                break
        if grown is None:
            return None
        i, o = grown
        before = current[i]
        current = current | {i: o}
        v = run(current)
        if holds(v):
            # the cheapest of stage i's options between the miss and the hit that holds
            between = [q for q in ladders[i] if unit_cost(before, price) < unit_cost(q, price)
                       < unit_cost(o, price) and fits(current | {i: q})]
            while between and len(cache) < SIZING_MAX_TRIES:
                mid = between[len(between) // 2]
                w = run(current | {i: mid})
                if holds(w):
                    v = w
                    between = [q for q in between if unit_cost(q, price) < unit_cost(mid, price)]
                else:
                    between = [q for q in between if unit_cost(q, price) > unit_cost(mid, price)]
    return v if holds(v) else None


def optimize(problem: Problem, perf: PerfLookup, objective: str = DEFAULT_OBJECTIVE,
             capacity_scale: float = DEFAULT_CAPACITY_SCALE,
             progress: Progress | None = None, slo_p95_s: float | None = None,
             slo_ttft_s: float | None = None) -> OptimizeResult:
    """Choose the family member, thresholds, GPUs and parallelism; verify by simulation.
    `objective` latency: the lowest simulated p95 on the cluster; cost: the cheapest plan
    (USD/h where pools have prices, else GPUs; the pools are upper bounds) whose simulated
    end-to-end p95 stays within `slo_p95_s` (else the cascade file's slo.e2e_s).

    No quality target means the fastest plan with no quality floor (documented in the README;
    the Pareto front shows what each quality costs)."""
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if objective not in OBJECTIVES:
        raise InputError(f"--objective {objective!r} is not known",
                         "use " + " or ".join(OBJECTIVES))
    slo_p95_s = slo_p95_s if slo_p95_s is not None else problem.cascade.slo.e2e_s
    if slo_p95_s is not None and not (slo_p95_s > 0 and math.isfinite(slo_p95_s)):
        raise InputError(f"--slo-p95 {slo_p95_s:g} is not a positive number of seconds",
                         "use e.g. --slo-p95 10")
    if slo_ttft_s is not None and not (slo_ttft_s > 0 and math.isfinite(slo_ttft_s)):
        raise InputError(f"--slo-ttft {slo_ttft_s:g} is not a positive number of seconds",
                         "use e.g. --slo-ttft 2")
    if slo_ttft_s is not None and objective != "cost":
        raise InputError("--slo-ttft applies to --objective cost (sizing)",
                         "add --objective cost, or drop --slo-ttft")
    if objective == "capacity" and len(problem.trace) < 2:
        raise InputError(f"{problem.files.trace}: --objective capacity scales the trace's "
                         "arrival rate, and a one-request trace has none",
                         "use a trace with at least two requests")
    limit = _slo_limit(objective, slo_p95_s)  # before any work
    q_min = problem.quality_target
    reach, exact = _reachable(problem)
    if q_min is not None and q_min > reach + 1e-9:
        bound = "at most" if exact else "at least"
        if problem.bound is None:
            raise InfeasibleError(
                f"quality target {q_min:g} is above the best any thresholds reach "
                f"({bound} {reach:.1f}; z1* = {problem.z1:.1f} with every request at the "
                "largest model)", f"lower the quality target to at most {reach:.1f}")
        raise InfeasibleError(
            f"quality target {q_min:g} is above the best any thresholds reach at "
            f"{problem.bound.confidence:.0%} confidence ({bound} {reach:.1f} on "
            f"{problem.bound.prompts} judged prompts; the sample mean reaches "
            f"{problem.best.quality:.1f}, z1* = {problem.z1:.1f})",
            f"lower the quality target to at most {reach:.1f}, judge more prompts, or pass a "
            "lower --quality-confidence")
    root = Planner(problem, perf, capacity_scale)
    if objective == "capacity":
        root.capacity_limit_s = limit
    try:
        ref = root.reference_plan()
        root.use_reference(ref, root.deploy(ref))
    except InfeasibleError:
        pass  # the largest model fits nowhere: the search says so, per member
    m = len(problem.models)
    t_search = time.perf_counter()
    members = [_Member(idx, root if len(idx) == m else
                       Planner(problem.restrict(idx), perf, capacity_scale, shared=root))
               for idx in family(m)]
    # the whole cascade first, here: it builds every model's performance tables, which the
    # other members' searches (on every core) then share
    say(f"searching 1/{len(members)}: {chain(members[0].names)}")
    _search_member(members[0], q_min)
    if len(members) > 1:
        say(f"searching the other {len(members) - 1} members of the family")
        for mem, got in zip(members[1:], run_all([partial(_searched, mem, q_min)
                                                  for mem in members[1:]]), strict=True):
            got.into(mem)
    search_s = time.perf_counter() - t_search
    ok = [mem for mem in members if mem.feasible]
    if not ok:
        raise _nothing_serves(members, root)
    window = SCREEN_REQUESTS if len(problem.trace) > SCREEN_REQUESTS else None
    ahead: _Ahead | None = None
    if objective == "cost":
        win, verified = _choose_cheapest(ok, limit, window, say, slo_ttft_s)
        if win is None:
            raise InfeasibleError(
                f"sizing: no allocation within the cluster keeps the simulated end-to-end p95 "
                f"at or below {limit:g} s"
                + ("" if slo_ttft_s is None else f" and the p95 TTFT within {slo_ttft_s:g} s")
                + f" at {problem.rate_per_s:.3g} req/s (tried "
                f"{len(verified)}, the fastest reaching "
                f"{min(v.sim.figures.e2e_p95_or_inf for v in verified):.2f} s)"
                if verified else f"sizing: no allocation within the cluster serves "
                f"{problem.rate_per_s:.3g} req/s at the quality target",
                "add GPUs to the pools (they are upper bounds), relax --slo-p95 or lower "
                "the rate")
    elif objective == "capacity":
        win, verified = _choose_most_capacity(ok, limit, window, say)
        if win is None:
            raise members[0].error or root.explain(problem.best.thresholds)
    else:
        win, verified, ahead = _choose_fastest(
            ok, window, say, lambda v: BaselineRuns(
                root, v.member.planner, v.point.thresholds, v.plan,
                partial(v.member.planner.plan_capacity, v.plan)))
        if win is None:
            raise members[0].error or root.explain(problem.best.thresholds)
    pl = win.member.planner
    if ahead is not None and ahead.candidate is win:
        base, capacity = ahead.runs.finish(ahead.results, win.sim.figures)
    else:
        say("measuring capacity and simulating baselines")
        known = win.capacity
        base, capacity = baselines(root, pl, win.point.thresholds, win.plan, win.sim.figures,
                                   (lambda: known) if known is not None
                                   else partial(pl.plan_capacity, win.plan))
    tables = {}
    for i in range(len(pl.problem.models)):
        for pool in problem.pools:
            tables[f"{pl.problem.names[i]}@{pool.name}"] = [
                TableRow(**e.to_dict()) for e in pl.table(i, pool, win.point.thresholds)]
    sources = {f"{s.model}@{s.gpu} tp{s.tp}": s.perf_source or ""
               for s in win.sim.figures.stages}
    search = win.member.search  # every member with a plan was searched
    per_prompt = pl.problem.per_prompt(win.point.thresholds)
    bound = problem.bound
    interval = None if bound is None else bound.interval(per_prompt)
    cv = None
    if bound is not None and q_min is not None and search is not None:
        cv = cross_validate([(p.latency_s, p.thresholds)
                             for p in search.evaluated.values()
                             if math.isfinite(p.latency_s)],
                            pl.problem.per_prompt, bound, q_min, problem.seed)
    predicted = Predicted(
        quality=float(per_prompt.mean()),
        quality_promise=QualityPromise(
            confidence=None if bound is None else bound.confidence,
            lower_bound=win.point.quality,
            interval=None if interval is None else list(interval),
            prompts=len(problem.sample), stratified=bool(bound and bound.stratified),
            cross_validated=None if cv is None else CrossValidatedShortfall(**asdict(cv))),
        z1=problem.z1, z2=problem.z2, quality_target=q_min,
        objective=objective, rate_per_s=problem.rate_per_s,
        family=_family(members, verified, win,
                       (limit, problem.rate_per_s, slo_ttft_s) if objective == "cost" else None,
                       limit if objective == "capacity" else None),
        sizing=_sizing(win, limit, problem, slo_ttft_s) if objective == "cost" else None,
        milp=_record(win.solution),
        milp_estimate_latency_s=win.point.latency_s, simulated=win.sim.figures,
        capacity=capacity, baselines=base, gains=gains(win.sim.figures, capacity, base),
        pareto_front=[FrontPoint(thresholds=finite(p.thresholds), quality=p.quality,
                                 milp_latency_s=p.latency_s)
                      for p in (search.front() if search is not None else [])],
        simulated_front=_simulated_front([v for v in verified if v.member is win.member]),
        latency_tables=tables,
        judged=JudgedInfo(prompts=len(problem.sample), dropped=problem.dropped,
                          scores_from=problem.mix.source),
        perf_sources=dict(sorted(sources.items())),
        verified_candidates=[VerifiedCandidate(
            models=v.member.names, thresholds=finite(v.point.thresholds),
            gpus={f"{'judge:' if st is v.plan.judge else ''}{st.model}@{st.pool} "
                  f"{st.tp}x{st.pp}x{st.replicas}": st.gpus for st in v.plan.serving},
            quality=v.point.quality, milp_latency_s=v.point.latency_s,
            simulated_e2e_p95_s=v.sim.figures.e2e_latency_s.p95,
            simulated_slo_scale=v.sim.figures.slo_scale, simulated_requests=v.sim.requests)
            for v in verified])
    plan = win.plan.model_copy(update={"name": "cascadia-plan", "predicted": predicted})
    timings = Timings(total_s=time.perf_counter() - t_start, search_s=search_s,
                      milp_solves=sum(mem.planner.milp_solves for mem in members
                                      if mem.planner is not root) + root.milp_solves,
                      last_milp_solve_s=win.solution.solve_s,
                      evaluated_thresholds=sum(len(mem.search.evaluated) for mem in members
                                               if mem.search is not None),
                      simulated_candidates=len(verified))
    return OptimizeResult(plan=plan, timings=timings, milp=pl.build_milp(win.point.thresholds),
                          no_target=q_min is None)


def _simulated_front(cands: list[_Verified]) -> list[FrontPoint]:
    """The non-dominated candidates by (simulated p95, promised quality), fastest first."""
    pts = sorted(cands, key=lambda v: (v.sim.figures.e2e_p95_or_inf, -v.point.quality,
                                       v.point.thresholds))
    out: list[FrontPoint] = []
    best_q = -math.inf
    for v in pts:
        if v.point.quality > best_q + 1e-12:
            out.append(FrontPoint(thresholds=finite(v.point.thresholds), quality=v.point.quality,
                                  milp_latency_s=v.point.latency_s,
                                  simulated_e2e_p95_s=v.sim.figures.e2e_latency_s.p95))
            best_q = v.point.quality
    return out


def _family(members: list[_Member], verified: list[_Verified], win: _Verified,
            sizing: tuple[float, float, float | None] | None = None,
            capacity_s: float | None = None) -> Family:
    """Each member's best simulated plan (or its MILP estimate, or why it has none) and the
    verdict: which member won, and by how much against the best of the others. `sizing`:
    (the SLO, the rate) of the cost objective, whose best is the cheapest plan within it."""
    best: dict[tuple[int, ...], _Verified] = {}
    if capacity_s is not None:
        for v in sorted((v for v in verified if v.capacity is not None),
                        key=lambda v: -v.capacity.rate_multiple):  # type: ignore[union-attr]
            best.setdefault(v.member.idx, v)
    elif sizing is None:
        for v in sorted(verified, key=_score):
            best.setdefault(v.member.idx, v)
    else:
        holds = [v for v in verified if v.full is not None
                 and _within(v.full, sizing[0], sizing[2])]
        for v in sorted(holds, key=lambda v: (plan_cost(v), _score(v, v.full))):
            best.setdefault(v.member.idx, v)
    rows = []
    for mem in members:
        v = best.get(mem.idx)
        row = FamilyMember(models=mem.names, chosen=mem is win.member,
                           best_quality=mem.planner.problem.best.quality)
        if v is not None:
            fig = v.sim.figures
            row = row.model_copy(update={
                "quality": v.point.quality, "thresholds": finite(v.point.thresholds),
                "gpus": {s.model if s is not v.plan.judge else f"judge:{s.model}": s.gpus
                         for s in v.plan.serving},
                "milp_latency_s": v.point.latency_s,
                "simulated_e2e_p95_s": fig.e2e_latency_s.p95,
                "simulated_slo_scale": fig.slo_scale, "simulated_requests": v.sim.requests,
                "capacity_rps": None if v.capacity is None else v.capacity.requests_per_s})
        elif mem.feasible:
            row = row.model_copy(update={
                "quality": mem.feasible[0].quality,
                "thresholds": finite(mem.feasible[0].thresholds),
                "milp_latency_s": mem.feasible[0].latency_s,
                "error": "not simulated: its MILP estimates were not among the best"
                if sizing is None else f"no allocation tried kept the p95 within "
                f"{sizing[0]:g} s (or none was cheaper than the chosen plan)"})
        else:
            row = row.model_copy(update={"error": mem.error.message if mem.error is not None
                                         else "no feasible plan"})
        rows.append(row)
    others = [v for idx, v in best.items() if idx != win.member.idx]
    if capacity_s is not None:
        runner = max(others, key=lambda v: v.capacity.rate_multiple  # type: ignore[union-attr]
                     ) if others else None
        mine = win.capacity.requests_per_s if win.capacity else 0.0
        theirs = runner.capacity.requests_per_s if runner and runner.capacity else 0.0
        margin = mine / theirs if theirs > 0 else None
        names = win.member.names
        who = f"serving {names[0]} alone" if len(names) == 1 else f"the cascade {chain(names)}"
        text = (f"{who} sustains {mine:.3g} req/s with the p95 within {capacity_s:g} s, the "
                f"most of the family")
        if runner is not None:
            text += f"; the next, {chain(runner.member.names)}, sustains {theirs:.3g} req/s"
        return Family(members=rows, winner=win.member.names, margin=margin,
                      runner_up=None if runner is None else runner.member.names, verdict=text)
    if sizing is not None:
        runner = min(others, key=plan_cost) if others else None
        margin = None if runner is None else plan_cost(runner) / max(plan_cost(win), 1e-12)
        return Family(members=rows, winner=win.member.names, margin=margin,
                      runner_up=None if runner is None else runner.member.names,
                      verdict=_sizing_verdict(win, runner, *sizing))
    runner = min(others, key=lambda v: _p95s(v, win)[0] / max(_p95s(v, win)[1], 1e-12)
                 ) if others else None
    margin = None
    if runner is not None:
        mine, theirs = _p95s(win, runner)
        margin = theirs / mine if mine > 0 and math.isfinite(mine) else None
    return Family(members=rows, winner=win.member.names, margin=margin,
                  runner_up=None if runner is None else runner.member.names,
                  verdict=_verdict(win, runner, best))


def _cost_text(v: _Verified) -> str:
    gpus = sum(s.gpus for s in v.plan.serving)
    price = v.member.planner.price
    usd = f" ({plan_cost(v):,.2f} USD/h)" if price and any(price.values()) else ""
    return f"{gpus} GPUs{usd}"


def _sizing_verdict(win: _Verified, runner: _Verified | None, slo_s: float,
                    rate: float, ttft_s: float | None = None) -> str:
    names = win.member.names
    who = f"serving {names[0]} alone" if len(names) == 1 else f"the cascade {chain(names)}"
    text = (f"{who} needs {_cost_text(win)} to keep the simulated end-to-end p95 within "
            f"{slo_s:g} s" + ("" if ttft_s is None else f" (and the p95 TTFT within {ttft_s:g} s)")
            + f" at {rate:.3g} req/s")
    if runner is not None:
        text += f"; the next cheapest, {chain(runner.member.names)}, needs {_cost_text(runner)}"
    return text


def _verdict(win: _Verified, runner: _Verified | None, best: dict[tuple[int, ...], _Verified]
             ) -> str:
    names = win.member.names
    gpus = sum(s.gpus for s in win.plan.serving)
    p95 = win.sim.figures.e2e_p95_or_inf
    window = "" if win.full is not None and all(v.full is not None for v in best.values()) \
        else f" (on the first {win.screen.requests:,} requests)"
    if runner is None:
        return (f"{'serving ' + names[0] + ' alone' if len(names) == 1 else chain(names)} "
                f"is the only choice here that meets the quality target "
                f"(simulated p95 {p95:.2f} s on {gpus} GPUs)")
    mine, theirs = _p95s(win, runner)
    if len(names) == 1:
        cascades = [v for v in best.values() if len(v.member.idx) > 1]
        if not cascades:
            return (f"serving {names[0]} alone on {gpus} GPUs beats every other choice here: "
                    f"simulated p95 {mine:.2f} s against {theirs:.2f} s for "
                    f"{chain(runner.member.names)}{window}")
        c = min(cascades, key=lambda v: _p95s(v, win)[0])
        mine, theirs = _p95s(win, c)
        return (f"serving {names[0]} alone on {gpus} GPUs beats every cascade here: "
                f"simulated p95 {mine:.2f} s against {theirs:.2f} s for the best cascade "
                f"({chain(c.member.names)}){window}")
    text = (f"the cascade {chain(names)} on {gpus} GPUs beats every other choice here: "
            f"simulated p95 {mine:.2f} s against {theirs:.2f} s for "
            f"{chain(runner.member.names)}")
    singles = [v for v in best.values() if len(v.member.idx) == 1]
    if singles:
        single = min(singles, key=lambda v: _p95s(v, win)[0])
        if single is not runner:
            text += (f" and {_p95s(win, single)[1]:.2f} s for the best single model "
                     f"({single.member.names[0]})")
    return text + window


def _sizing(win: _Verified, slo_s: float, problem: Problem, ttft_s: float | None) -> Sizing:
    """The sized plan's GPUs per pool and what it costs per hour and per million output
    tokens at the planned rate (where the pools have prices)."""
    per_pool: dict[str, int] = {}
    for st in win.plan.serving:
        per_pool[st.pool] = per_pool.get(st.pool, 0) + st.gpus
    price = win.member.planner.price
    priced = bool(price) and any(price.values())
    usd = plan_cost(win) if priced else None
    mix = win.member.planner.problem.mix
    answered = win.sim.per_request["answered_by_stage"] - 1
    tokens = np.choose(answered, mix.outputs).astype(float)
    tokens_per_s = problem.rate_per_s * float(tokens.mean())
    return Sizing(slo_p95_s=slo_s, slo_ttft_p95_s=ttft_s, gpus=sum(per_pool.values()),
                  gpus_per_pool=dict(sorted(per_pool.items())), cost_usd_per_hour=usd,
                  output_tokens_per_s=tokens_per_s,
                  cost_usd_per_million_tokens=None if usd is None or tokens_per_s <= 0
                  else usd / (tokens_per_s * 3600.0) * 1e6)


def _record(sol: Solution) -> MilpRecord:
    return MilpRecord(objective_latency_s=sol.latency_s, gpus=sol.gpus, solver=sol.solver,
                      status=sol.status, gap=sol.gap, solve_s=None,
                      assignment={str(i): MilpChoice(pool=o.pool, gpus=o.gpus,
                                                     latency_s=o.latency_s)
                                  for i, o in sorted(sol.assignment.items())})
