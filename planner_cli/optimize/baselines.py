"""The baselines a plan is compared with, simulated on the same trace and cluster:

- single-model: the cheapest cascade model that meets the quality target alone, on all GPUs
  with its best parallelism;
- even-split: the cascade at the plan's thresholds with each pool's GPUs split evenly;
- uniform-parallelism: the cascade at the plan's thresholds with one tensor-parallel size for
  every model (the best of those every model fits with).

A gain above 1 means the plan beats the baseline; a gain below 1 is reported as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from functools import partial
from typing import cast

from planner_cli.optimize.allocator import Planner, Thresholds
from planner_cli.optimize.estimate import Workload
from planner_cli.optimize.milp import Option, Solution
from planner_cli.optimize.tables import TableEntry, latency_table
from planner_cli.parallel import run_all
from planner_cli.plan import (
    Baseline,
    BaselinePlan,
    BaselineSimulated,
    Gain,
    Plan,
    StageShape,
)
from planner_cli.sim.figures import Capacity, CascadeFigures
from planner_cli.sim.run import PlanSimulation
from planner_cli.workload.mix import RequestMix

# a baseline to simulate: (its planner, its plan, its request mix (None: the planner's), what
# it reports besides its figures), or a Baseline that says why there is none
Built = tuple[Planner, Plan, RequestMix | None, dict] | Baseline


def baselines(root: Planner, pl: Planner, theta: Thresholds, plan: Plan,
              figures: CascadeFigures, capacity: Callable[[], Capacity | None]
              ) -> tuple[dict[str, Baseline], Capacity | None]:
    """Every baseline (see BaselineRuns), simulated on every core beside the chosen plan's
    `capacity` search, which is returned too."""
    runs = BaselineRuns(root, pl, theta, plan, capacity)
    return runs.finish(run_all(runs.tasks, runs.groups), figures)


class BaselineRuns:
    """The baselines of a chosen plan, ready to simulate: the single model among the given
    cascade's (`root`), and the chosen family member (`pl`) at its thresholds θ split evenly
    or with one tensor-parallel size; SLO scales share the planners' reference. `tasks` are
    the chosen plan's `capacity` search and each baseline's simulation and capacity search
    (a baseline that deploys exactly the plan reuses the plan's); `finish` makes the
    baselines of their results."""

    def __init__(self, root: Planner, pl: Planner, theta: Thresholds, plan: Plan,
                 capacity: Callable[[], Capacity | None]) -> None:
        p = root.problem
        full = p.sample.quality.mean(axis=0)
        order = sorted(range(len(p.models)), key=lambda i: p.cards[i].num_hidden_layers
                       * p.cards[i].hidden_size)
        meets = [i for i in order if p.quality_target is None
                 or full[i] >= p.quality_target - 1e-9]
        pick = meets[0] if meets else len(p.models) - 1
        built: dict[str, Built] = {"single-model": _single(root, pick)}
        if pl.judge_index is not None:
            why = "not computed with a served judge (its GPUs would be split too)"
            built |= {"even-split": Baseline(error=why),
                      "uniform-parallelism": Baseline(error=why)}
        elif len(pl.problem.models) == 1:
            why = "the plan serves one model: there is no split to compare"
            built |= {"even-split": Baseline(error=why),
                      "uniform-parallelism": Baseline(error=why)}
        else:
            built |= {"even-split": even_split(pl, theta),
                      "uniform-parallelism": uniform_parallelism(pl, theta)}
        self.built = built
        # what is simulated: each baseline's plan, unless it deploys exactly the chosen plan
        self.runs = [name for name, b in built.items()
                     if not isinstance(b, Baseline) and not _same(b[1], plan, theta)]
        # the whole-trace simulations first (the longest), then the capacity searches
        sims, caps = [], []
        for name in self.runs:
            b_pl, b_plan, mix, _ = cast(tuple, built[name])
            sims.append(partial(b_pl.simulate, b_plan, mix=mix))
            caps.append(partial(b_pl.plan_capacity, b_plan, mix=mix))
        self.tasks: list[Callable[[], object]] = [*sims, capacity, *caps]
        # run_all's groups: a simulation beside the plans that share its first stage (whose
        # result it then reuses), each capacity search on its own
        self.groups: list[Hashable] = ([first_stage(cast(tuple, built[name])[1])
                                        for name in self.runs]
                                       + [("capacity", k) for k in range(len(caps) + 1)])

    def finish(self, results: list, figures: CascadeFigures
               ) -> tuple[dict[str, Baseline], Capacity | None]:
        """The baselines and the chosen plan's capacity from the tasks' results (`figures`:
        the chosen plan's, for a baseline that deploys it)."""
        k = len(self.runs)
        cap = results[k]
        got = dict(zip(self.runs, zip(results[:k], results[k + 1:], strict=True), strict=True))
        out: dict[str, Baseline] = {}
        for name, b in self.built.items():
            if isinstance(b, Baseline):
                out[name] = b
                continue
            _, b_plan, _, extra = b
            if name in got:
                sim, b_cap = got[name]
                simulated = _simulated(cast(PlanSimulation, sim))
            else:
                simulated, b_cap = _figures(figures), cap
            out[name] = Baseline(plan=BaselinePlan(thresholds=list(b_plan.thresholds) or None,
                                                   stages=_shapes_of(b_plan)),
                                 simulated=simulated, capacity=cast("Capacity | None", b_cap),
                                 **extra)
        return out, cast("Capacity | None", cap)


def first_stage(plan: Plan) -> tuple:
    """What a plan's first stage deploys: plans alike here share its simulation (every
    request visits it), so they are simulated in one worker."""
    s = plan.stages[0]
    return s.model, s.precision, s.pool, s.tp, s.pp, s.replicas, s.max_model_len


def _same(a: Plan, b: Plan, theta: Thresholds) -> bool:
    """Whether a baseline deploys exactly the chosen plan (at its thresholds θ)."""
    return _shapes_of(a) == _shapes_of(b) and (not a.thresholds
                                               or list(a.thresholds) == list(b.thresholds))


def _shapes_of(plan: Plan) -> list[StageShape]:
    return [StageShape(model=s.model, pool=s.pool, tp=s.tp, pp=s.pp, replicas=s.replicas)
            for s in plan.stages]


def _simulated(sim: PlanSimulation) -> BaselineSimulated:
    return _figures(sim.figures)


def _figures(f: CascadeFigures) -> BaselineSimulated:
    return BaselineSimulated(e2e_latency_s=f.e2e_latency_s, slo_scale=f.slo_scale,
                             throughput_rps=f.throughput_rps,
                             attainment_curve=f.attainment_curve)


def _single(pl: Planner, i: int) -> Built:
    """The single-model baseline's plan, with its mix (model i's output lengths) and the
    figures it reports besides the simulated ones."""
    got = single_model_plan(pl, i)
    if isinstance(got, Baseline):
        return got
    p = pl.problem
    return pl, got, p.mix.column(i), {"model": p.names[i],
                                      "quality": float(p.sample.quality[:, i].mean())}


def single_model_plan(pl: Planner, i: int) -> Plan | Baseline:
    """Model i alone on all GPUs: the best latency-table entry over the pools (a Baseline
    with the reason when there is none)."""
    p = pl.problem
    name = p.names[i]
    best: tuple[str, TableEntry] | None = None
    for pool in p.pools:
        work = Workload(rate_per_s=p.rate_per_s, prompts=p.trace.input_lengths.astype(float),
                        outputs=p.mix.outputs[i].astype(float), key=("single", i))
        table = latency_table(p.cards[i], pool, p.models[i].precision, work, pl.costs_of(i),
                              shapes=pl.shapes(i, pool))
        if table and (best is None or table[-1].latency_s < best[1].latency_s):
            best = (pool.name, table[-1])
    if best is None:
        fits = any(pl.shapes(i, pool) for pool in p.pools)
        return Baseline(model=name, error=(
            f"{name} alone cannot keep up with {p.rate_per_s:.3g} req/s on any pool" if fits
            else f"{name} fits no GPU of the cluster"))
    option = Option(best[0], best[1].gpus, best[1].latency_s, best[1])
    return pl.plan_for((), {0: option}, f"baseline-single-{name}", stage_indices=[i])


def even_split(pl: Planner, theta: Thresholds) -> Built:
    """Each pool's GPUs split evenly across the models; per model the best pool's share."""
    p = pl.problem
    m = len(p.models)
    chosen: dict[int, Option] = {}
    for i in range(m):
        best: tuple[str, TableEntry] | None = None
        for pool in p.pools:
            share = pool.gpus // m
            table = pl.table(i, pool, theta) if pl.reached(i, theta) else []
            entry = None
            for e in table:
                if e.gpus <= share:
                    entry = e
            if entry is None:
                shapes = [s for s in pl.shapes(i, pool) if s[0].gpus <= share]
                if shapes:
                    s, kv = shapes[0]
                    entry = TableEntry(s.gpus * (share // s.gpus), math.inf, s.tp, s.pp,
                                       share // s.gpus, kv)
            if entry is not None and (best is None or entry.latency_s < best[1].latency_s):
                best = (pool.name, entry)
        if best is None:
            return Baseline(error=f"{p.names[i]} fits no even share of a pool")
        chosen[i] = Option(best[0], best[1].gpus, best[1].latency_s, best[1])
    return pl, pl.plan_for(theta, chosen, "baseline-even-split"), None, {}


def uniform_parallelism(pl: Planner, theta: Thresholds) -> Built:
    """One tensor-parallel size for every model: the best (by the MILP) of those every model
    fits with."""
    p = pl.problem
    m = len(p.models)
    tps = sorted({s.tp for i in range(m) for pool in p.pools for s, _ in pl.shapes(i, pool)})
    common = [tp for tp in tps if all(any(s.tp == tp for pool in p.pools
                                          for s, _ in pl.shapes(i, pool)) for i in range(m))]
    ok: list[tuple[float, int, Solution]] = []
    for tp in common:
        latency, sol = pl.allocate(theta, tp_only=tp, full=True)
        if isinstance(sol, Solution):
            ok.append((latency, tp, sol))
    if not ok:
        return Baseline(error="no tensor-parallel size serves every model within the cluster")
    _, tp, sol = min(ok, key=lambda x: (x[0], x[1]))
    return pl, pl.plan_for(theta, sol.assignment, f"baseline-uniform-tp{tp}"), None, {"tp": tp}


def gains(figures: CascadeFigures, capacity: Capacity | None, base: dict[str, Baseline]
          ) -> dict[str, Gain]:
    """The plan's gain over each simulated baseline: SLO scale (baseline / plan) and
    throughput capacity (plan / baseline), with whether a capacity bound makes it a bound."""
    out: dict[str, Gain] = {}
    for name, b in base.items():
        if b.simulated is None:
            continue
        mine, theirs = figures.slo_scale, b.simulated.slo_scale
        both = capacity is not None and b.capacity is not None
        out[name] = Gain(
            slo_scale_gain=(theirs / mine if mine and theirs is not None and mine > 0
                            else None),
            throughput_gain=(capacity.rate_multiple / b.capacity.rate_multiple
                             if both and b.capacity.rate_multiple > 0 else None),
            # a capacity found at the search's request limit is a lower bound
            throughput_gain_bound=("at most" if both and b.capacity.at_least else
                                   "at least" if both and capacity.at_least else "exact"))
    return out
