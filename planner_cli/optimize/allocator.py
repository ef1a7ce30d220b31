"""The allocation side of the bi-level problem: for thresholds θ, the stage workloads, their
latency tables and the inner MILP, all memoised; and, when nothing fits, the real cause.

`Planner` holds one resolved `Problem`; bilevel.py drives the outer search over it and
baselines.py reuses its tables and MILP for the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from planner_cli.errors import InputError
from planner_cli.optimize import milp
from planner_cli.optimize.candidates import PIPELINE_SIZES, replica_shapes
from planner_cli.optimize.estimate import Workload, p95_latency
from planner_cli.optimize.milp import InfeasibleError, Option, Solution
from planner_cli.optimize.tables import TableEntry, latency_table
from planner_cli.perf.engines import DEFAULT_ENGINE
from planner_cli.perf.memory import (
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    memory_figures,
)
from planner_cli.perf.model import CostModel, PerfModel
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.plan import Plan, PlanInputs, SimulationSettings, SloReference, StagePlan
from planner_cli.problem import Deployment, PerfLookup, Pool, Problem, resolve_deployment
from planner_cli.sim.figures import Capacity
from planner_cli.sim.run import (
    PlanSimulation,
    SloBase,
    deployment_capacity,
    simulate_deployment,
    slo_base,
)
from planner_cli.specs.cascade import ExternalJudger, ModelJudger
from planner_cli.specs.model import ModelCard, weight_bytes
from planner_cli.workload.mix import RequestMix
from planner_cli.workload.routing import route

WORKLOAD_SAMPLE = 2000  # requests per stage workload used for the p95 estimate
KEEP_NOTHING = 101.0  # a threshold above every 0-100 score: nobody stays at that stage
DEFAULT_CAPACITY_SCALE = 5.0
CAPACITY_WINDOW = 1500  # requests of the trace used for the capacity bisection
LOAD_SEARCH_MAX_GPUS = 4096  # how far the "needs at least N GPUs" diagnosis looks
# what the final choice minimises, on simulated figures (the MILP prunes with its estimates)
OBJECTIVES = ("latency", "capacity", "cost")
DEFAULT_OBJECTIVE = "latency"
# the inner MILP's objective: the slowest stage's estimated p95 (the paper's)
MILP_OBJECTIVE = "p95-max-stage"

Thresholds = tuple[float, ...]


def finite(theta: Thresholds) -> list[float]:
    """Thresholds as a plan stores them: +inf (keep nothing) becomes KEEP_NOTHING."""
    return [KEEP_NOTHING if math.isinf(t) else float(t) for t in theta]


class NoOption(InfeasibleError):
    """A stage has no usable (pool, GPU count) for θ. Cheap to raise while searching;
    Planner.explain says why (memory or load, with the numbers) when it is the answer."""


def entry_of(option: Option) -> TableEntry:
    """The latency-table entry (replica shape and count) an allocator option carries."""
    if not isinstance(option.payload, TableEntry):
        raise TypeError(f"option {option} carries no latency-table entry")
    return option.payload


class Planner:
    """One optimisation problem: tables, cost models and MILP solutions memoised."""

    def __init__(self, problem: Problem, perf: PerfLookup,
                 capacity_scale: float = DEFAULT_CAPACITY_SCALE,
                 shared: Planner | None = None) -> None:
        """`shared`: the planner of the whole cascade (a family member's planner reuses its
        cost models, SLO reference and capacity limit)."""
        if capacity_scale <= 0:
            raise InputError(f"--capacity-slo-scale {capacity_scale:g} is not positive",
                             "use e.g. 5")
        self.problem = problem
        self.objective = MILP_OBJECTIVE
        self.capacity_scale = capacity_scale
        # every request's SLO base on the whole cascade's largest model (so that the family's
        # members compare), and that replica as the plans record it (use_reference)
        self.reference: SloBase | None = None if shared is None else shared.reference
        self.reference_stage: SloReference | None = (None if shared is None
                                                     else shared.reference_stage)
        # capacities within this end-to-end latency (at the SLO's percentile) instead of the
        # SLO scale (the capacity objective)
        self.capacity_limit_s: float | None = (None if shared is None
                                               else shared.capacity_limit_s)
        judger = problem.cascade.judger
        # a served judge to size: a model judger, and more than one model (one alone is never
        # judged)
        self.served_judge: tuple[ModelCard, ModelJudger] | None = (
            (problem.judge, judger) if problem.judge is not None
            and isinstance(judger, ModelJudger) and len(problem.models) > 1 else None)
        self._perf = perf
        self.capacity = {p.name: p.gpus for p in problem.pools}
        self.price = {p.name: p.price_usd_per_gpu_hour or 0.0 for p in problem.pools}
        self._models: dict[tuple, PerfModel] = {} if shared is None else shared._models
        self._costs: dict[tuple, CostModel] = {} if shared is None else shared._costs
        self._shapes: dict[tuple[int, str], list[tuple[ReplicaShape, int]]] = {}
        self._tables: dict[tuple, list[TableEntry]] = {}
        self._solutions: dict[tuple, tuple[float, Solution | InfeasibleError]] = {}
        self._answered: dict[Thresholds, np.ndarray] = {}
        self.milp_solves = 0

    def caches(self) -> tuple[dict, dict]:
        """What this planner computed that another process can use: its latency tables and
        MILP solutions (see remember)."""
        return self._tables, self._solutions

    def remember(self, tables: dict, solutions: dict) -> None:
        """Take in the latency tables and MILP solutions a copy of this planner computed in
        another process (the same inputs give the same figures)."""
        self._tables.update(tables)
        self._solutions.update(solutions)

    # ------------------------------------------------------------ pieces

    def perf(self, shape: ReplicaShape, engine: str) -> PerfModel:
        """The shape's performance model under an engine, looked up once."""
        key = (shape, engine)
        if key not in self._models:
            self._models[key] = self._perf(shape, engine)
        return self._models[key]

    def cost(self, shape: ReplicaShape, engine: str) -> CostModel:
        key = (shape, engine)
        if key not in self._costs:
            self._costs[key] = self.perf(shape, engine).cost()
        return self._costs[key]

    def costs_of(self, i: int) -> Callable[[ReplicaShape], CostModel]:
        """Model i's cost factory (under its engine) for the latency tables."""
        engine = self.problem.models[i].engine
        return lambda shape: self.cost(shape, engine)

    @property
    def stage_names(self) -> list[str]:
        """The MILP's stages: the models, then a served judge's "judge:<model>"."""
        names = list(self.problem.names)
        if self.judge_index is not None and self.problem.judge is not None:
            names.append(f"judge:{self.problem.judge.name}")
        return names

    def shapes(self, i: int, pool: Pool) -> list[tuple[ReplicaShape, int]]:
        key = (i, pool.name)
        if key not in self._shapes:
            m = self.problem.models[i]
            self._shapes[key] = replica_shapes(m.card, pool, m.precision, m.max_model_len)
        return self._shapes[key]

    def answered_by(self, theta: Thresholds) -> np.ndarray:
        """The stage answering each trace request under θ (memoised: the search asks for the
        same θ once per stage, per pool and per table)."""
        if theta not in self._answered:
            mix = self.problem.mix
            self._answered[theta] = route(mix.scores, mix.quality, finite(theta)).answered_by
        return self._answered[theta]

    def workload(self, i: int, theta: Thresholds) -> Workload:
        p = self.problem
        reach = np.flatnonzero(self.answered_by(theta) >= i)
        rng = np.random.default_rng([p.seed, i])
        pick = reach if reach.size <= WORKLOAD_SAMPLE else np.sort(
            rng.choice(reach, WORKLOAD_SAMPLE, replace=False))
        return Workload(rate_per_s=p.rate_per_s * reach.size / len(p.trace),
                        prompts=p.trace.input_lengths[pick].astype(float),
                        outputs=p.mix.outputs[i][pick].astype(float),
                        key=(i, tuple(finite(theta[:i]))))

    def table(self, i: int, pool: Pool, theta: Thresholds,
              tp_only: int | None = None) -> list[TableEntry]:
        work = self.workload(i, theta)
        key = (i, pool.name, work.key, tp_only)
        if key not in self._tables:
            shapes = [s for s in self.shapes(i, pool) if tp_only is None or s[0].tp == tp_only]
            m = self.problem.models[i]
            self._tables[key] = latency_table(m.card, pool, m.precision, work, self.costs_of(i),
                                              shapes=shapes)
        return self._tables[key]

    def reached(self, i: int, theta: Thresholds) -> bool:
        return bool((self.answered_by(theta) >= i).any())

    # ------------------------------------------------------------ a served judge

    @property
    def judge_index(self) -> int | None:
        """The MILP index of a served judge (after the models), when it sizes one."""
        return None if self.served_judge is None else len(self.problem.models)

    def _judge(self) -> tuple[ModelCard, ModelJudger]:
        if self.served_judge is None:
            raise RuntimeError("this planner sizes no served judge")  # a bug: check first
        return self.served_judge

    def judge_max_model_len(self) -> int:
        """What the judge reads: a prompt and one answer, at most the longest stage context."""
        card, _ = self._judge()
        return min(card.max_position_embeddings,
                   max(m.max_model_len for m in self.problem.models))

    def judge_workload(self, theta: Thresholds) -> Workload:
        """Every answer of a stage but the last is judged: the prompt and the answer in, the
        verdict's tokens out."""
        _, judger = self._judge()
        p = self.problem
        by = self.answered_by(theta)
        judged = np.concatenate([
            p.trace.input_lengths[reach] + p.mix.outputs[i][reach]
            for i, reach in ((i, np.flatnonzero(by >= i)) for i in range(len(p.models) - 1))
        ]).astype(float)
        rng = np.random.default_rng([p.seed, len(p.models)])
        pick = (np.arange(judged.size) if judged.size <= WORKLOAD_SAMPLE else
                np.sort(rng.choice(judged.size, WORKLOAD_SAMPLE, replace=False)))
        return Workload(rate_per_s=p.rate_per_s * judged.size / len(p.trace),
                        prompts=judged[pick],
                        outputs=np.full(pick.size, float(judger.output_tokens)),
                        key=("judge", tuple(finite(theta))))

    def judge_shapes(self, pool: Pool) -> list[tuple[ReplicaShape, int]]:
        key = (-1, pool.name)
        if key not in self._shapes:
            card, judger = self._judge()
            self._shapes[key] = replica_shapes(card, pool, judger.precision,
                                               self.judge_max_model_len())
        return self._shapes[key]

    def judge_table(self, pool: Pool, theta: Thresholds,
                    tp_only: int | None = None) -> list[TableEntry]:
        key = (-1, pool.name, tuple(finite(theta)), tp_only)
        if key not in self._tables:
            work = self.judge_workload(theta)  # built once per θ and pool, not per lookup
            card, judger = self._judge()
            engine = self.problem.engine or DEFAULT_ENGINE
            shapes = [s for s in self.judge_shapes(pool) if tp_only is None or s[0].tp == tp_only]
            self._tables[key] = latency_table(card, pool, judger.precision, work,
                                              lambda shape: self.cost(shape, engine),
                                              shapes=shapes)
        return self._tables[key]

    def options(self, theta: Thresholds, tp_only: int | None = None
                ) -> dict[int, list[Option]]:
        out: dict[int, list[Option]] = {}
        for i in range(len(self.problem.models)):
            opts: list[Option] = []
            if not self.reached(i, theta):
                # nobody reaches this stage: the shorter cascade without it is the family
                # member that serves these thresholds (a model nobody reaches gets no GPUs)
                out[i] = opts
                continue
            for pool in self.problem.pools:
                for e in self.table(i, pool, theta, tp_only):
                    if math.isfinite(e.latency_s):
                        opts.append(Option(pool.name, e.gpus, e.latency_s, e))
            out[i] = opts
        j = self.judge_index
        if j is not None:
            out[j] = [Option(pool.name, e.gpus, e.latency_s, e) for pool in self.problem.pools
                      for e in self.judge_table(pool, theta, tp_only)
                      if math.isfinite(e.latency_s)]
        return out

    def build_milp(self, theta: Thresholds, tp_only: int | None = None) -> milp.Problem:
        return milp.build_problem(self.options(theta, tp_only), self.capacity, self.objective,
                                  self.price, self.problem.cluster.budget_usd_per_hour)

    def allocate(self, theta: Thresholds, tp_only: int | None = None,
                 full: bool = False) -> tuple[float, Solution | InfeasibleError]:
        """The MILP for θ: latency only while searching; every phase for a plan."""
        options = self.options(theta, tp_only)
        key = (tuple((i, tuple((o.pool, o.gpus, o.latency_s) for o in opts))
                     for i, opts in sorted(options.items())), full)
        if key in self._solutions:
            return self._solutions[key]
        try:
            unreached = [self.problem.names[i] for i in options
                         if i < len(self.problem.models) and not self.reached(i, theta)]
            if unreached:
                raise NoOption(f"no request reaches {', '.join(unreached)} at these "
                               "thresholds", "a shorter cascade serves them")
            empty = [self.stage_names[i] for i, opts in options.items() if not opts]
            if empty:
                raise NoOption(f"{', '.join(empty)}: no GPU count of any pool serves it",
                               "see Planner.explain")
            milp.diagnose(options, self.capacity, self.stage_names, self.price,
                          self.problem.cluster.budget_usd_per_hour,
                          rate_per_s=self.problem.rate_per_s)
            self.milp_solves += 1
            sol = milp.solve(milp.build_problem(options, self.capacity, self.objective,
                                                self.price,
                                                self.problem.cluster.budget_usd_per_hour),
                             phases=3 if full else 1)
            out: tuple[float, Solution | InfeasibleError] = (sol.latency_s, sol)
        except InfeasibleError as exc:
            out = (math.inf, exc)
        self._solutions[key] = out
        return out

    def alternatives(self, theta: Thresholds, first: Solution, n: int) -> list[Solution]:
        """Up to n next-best allocations for θ after `first` (by the MILP's estimate), each
        found by excluding the ones before: the simulator may rank them differently."""
        options = self.options(theta)
        found = [first]
        while len(found) <= n:
            try:
                self.milp_solves += 1
                found.append(milp.solve(milp.build_problem(
                    options, self.capacity, self.objective, self.price,
                    self.problem.cluster.budget_usd_per_hour,
                    exclude=[s.assignment for s in found])))
            except InfeasibleError:
                break
        return found[1:]

    def cheapest(self, theta: Thresholds, within_s: float, exclude: list[dict[int, Option]],
                 below: float | None) -> Solution | None:
        """The cheapest allocation for θ (USD/h where pools have prices, else GPUs) among
        options whose estimated p95 is within `within_s`, excluding those tried and only
        below `below`; None when there is none."""
        options = {i: [o for o in opts if o.latency_s <= within_s]
                   for i, opts in self.options(theta).items()}
        if any(not opts for opts in options.values()):
            return None
        try:
            self.milp_solves += 1
            return milp.solve(milp.build_cost_problem(
                options, self.capacity, self.price, self.problem.cluster.budget_usd_per_hour,
                exclude, below), phases=1)
        except InfeasibleError:
            return None

    def search_latency(self, theta: Thresholds) -> tuple[float, object]:
        return self.allocate(theta)

    def quality(self, theta: Thresholds) -> float:
        s = self.problem.sample
        return route(s.scores, s.quality, finite(theta)).quality

    # ------------------------------------------------------------ why nothing fits

    def explain(self, theta: Thresholds, tp_only: int | None = None) -> InfeasibleError:
        """The real cause when a stage has no usable option: memory (no replica shape holds
        the model) or load (no GPU count of any pool keeps up with the stage's rate)."""
        p = self.problem
        for i, m in enumerate(p.models):
            shapes = {pool.name: [s for s in self.shapes(i, pool)
                                  if tp_only is None or s[0].tp == tp_only]
                      for pool in p.pools}
            if not any(shapes.values()):
                return self._memory_error(i, tp_only)
            if not self.reached(i, theta):
                continue
            if any(math.isfinite(e.latency_s) for pool in p.pools
                   for e in self.table(i, pool, theta, tp_only)):
                continue
            work = self.workload(i, theta)
            need, pool_name = self._gpus_for_load(work, shapes, m.engine)
            have = next(pool.gpus for pool in p.pools if pool.name == pool_name)
            need_text = (f"at least {need}" if need is not None
                         else f"more than {LOAD_SEARCH_MAX_GPUS}")
            return InfeasibleError(
                f"load: at {p.rate_per_s:.3g} req/s stage {i + 1} ({m.name}) receives "
                f"{work.rate_per_s:.3g} req/s and needs {need_text} GPUs of pool "
                f"{pool_name!r} to keep up; the pool has {have}",
                "add GPUs, lower the rate (a shorter or thinned trace) or route fewer requests "
                "to this stage (a lower quality target)")
        return InfeasibleError("no allocation of the cluster serves the cascade", "add GPUs")

    def _memory_error(self, i: int, tp_only: int | None) -> InfeasibleError:
        m = self.problem.models[i]
        need_gb = weight_bytes(m.card, m.precision) / 1e9
        parts = []
        for pool in self.problem.pools:
            gpus = max((pool.gpus_per_node * pp for pp in PIPELINE_SIZES
                        if pool.gpus_per_node * pp <= pool.gpus), default=pool.gpus)
            parts.append(f"the largest replica in pool {pool.name!r} ({gpus} × {pool.gpu.name}) "
                         f"holds {gpus * pool.gpu.memory_bytes / 1e9:.0f} GB")
        detail = ""
        if tp_only is None and self.problem.pools:
            pool = max(self.problem.pools, key=lambda q: q.gpu.memory_bytes)
            try:
                shape = ReplicaShape(m.card, pool.gpu, pool.gpus_per_node, 1, m.precision,
                                     gpus_per_node=pool.gpus_per_node)
                mem = memory_figures(shape, max_model_len=m.max_model_len)
                detail = f" (on one {pool.gpu.name} node: {mem.reason})" if mem.reason else ""
            except InputError:
                detail = ""
        return InfeasibleError(
            f"memory: {m.name} in {m.precision} needs {need_gb:.0f} GB of weights plus the KV "
            f"cache of one {m.max_model_len:,}-token request; " + "; ".join(parts) + detail,
            "use GPUs with more memory, more GPUs per node, a lower precision, or a shorter "
            "max_model_len in the cascade file")

    def _gpus_for_load(self, work: Workload, shapes: dict[str, list[tuple[ReplicaShape, int]]],
                       engine: str) -> tuple[int | None, str]:
        """The fewest GPUs (and the pool) whose replicas keep up with the workload, looking
        up to LOAD_SEARCH_MAX_GPUS."""
        best: tuple[int, str] | None = None
        for pool_name, found in sorted(shapes.items()):
            for shape, kv in found:
                cost = self.cost(shape, engine)

                def ok(dp: int, shape: ReplicaShape = shape, kv: int = kv,
                       cost: CostModel = cost) -> bool:
                    return math.isfinite(p95_latency(cost, work, dp, DEFAULT_MAX_NUM_SEQS,
                                                     DEFAULT_MAX_NUM_BATCHED_TOKENS, kv))

                limit = LOAD_SEARCH_MAX_GPUS // shape.gpus
                hi = 1
                while hi <= limit and not ok(hi):
                    hi *= 2
                if hi > limit and not ok(limit):
                    continue
                hi = min(hi, limit)
                lo = hi // 2  # fails (or 0)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if ok(mid):
                        hi = mid
                    else:
                        lo = mid
                gpus = hi * shape.gpus
                if best is None or gpus < best[0]:
                    best = (gpus, pool_name)
        if best is None:
            return None, sorted(shapes)[0]
        return best

    # ------------------------------------------------------------ plans

    def plan_for(self, theta: Thresholds, assignment: dict[int, Option], name: str,
                 stage_indices: list[int] | None = None) -> Plan:
        """A plan serving the cascade's models (or the listed subset, in order) with the
        assigned (pool, shape) per stage."""
        p = self.problem
        indices = stage_indices if stage_indices is not None else list(range(len(p.models)))
        stages = []
        for k, i in enumerate(indices):
            m = p.models[i]
            e = entry_of(assignment[k])
            stages.append(StagePlan(model=m.name, precision=m.precision,
                                    pool=assignment[k].pool, tp=e.tp, pp=e.pp,
                                    replicas=e.replicas, max_model_len=m.max_model_len))
        judge = None
        j = self.judge_index
        if stage_indices is None and j is not None and j in assignment:
            e = entry_of(assignment[j])
            card, judger = self._judge()
            judge = StagePlan(model=card.name, precision=judger.precision,
                              pool=assignment[j].pool, tp=e.tp, pp=e.pp, replicas=e.replicas,
                              max_model_len=self.judge_max_model_len())
        cascade = p.cascade
        if len(indices) == 1 and cascade.judger.kind == "model":
            # one model answers everything: nothing is judged, nothing to serve
            cascade = cascade.model_copy(update={"judger": ExternalJudger(kind="external",
                                                                          latency_s=0.0)})
        if stage_indices is not None:
            cascade = cascade.model_copy(update={
                "name": f"single-{p.models[indices[0]].name}" if len(indices) == 1
                else cascade.name,
                "models": [p.cascade.models[i] for i in indices]})
        return Plan(schema_version=1, name=name,
                    inputs=PlanInputs(trace=p.files.trace, quality=p.files.quality,
                                      judged_with=list(p.judged_with) or None),
                    cascade=cascade, cluster=p.cluster, thresholds=finite(theta),
                    stages=stages, judge=judge,
                    simulation=SimulationSettings(seed=p.seed, engine=p.engine,
                                                  rate_scale=p.rate_scale,
                                                  slo_reference=self.reference_stage))

    def reference_plan(self) -> Plan:
        """The last (largest) model alone on its smallest replica: the deployment whose
        reference replica defines every SLO scale of this problem's plans."""
        last = len(self.problem.models) - 1
        for pool in self.problem.pools:
            for shape, kv in self.shapes(last, pool):
                entry = TableEntry(shape.gpus, 0.0, shape.tp, shape.pp, 1, kv)
                return self.plan_for((), {0: Option(pool.name, shape.gpus, 0.0, entry)},
                                     "slo-reference", stage_indices=[last])
        raise self._memory_error(last, None)

    def use_reference(self, plan: Plan, deployed: Deployment) -> None:
        """Make `plan` (a reference_plan) the SLO base of every plan simulated or written."""
        self.reference = slo_base(deployed, self.problem.trace, self.problem.mix)
        self.reference_stage = SloReference(model=plan.cascade.models[0], stage=plan.stages[0])

    def deploy(self, plan: Plan) -> Deployment:
        return resolve_deployment(plan, self.problem.catalog, plan.name, self.perf)

    def plan_capacity(self, plan: Plan, mix: RequestMix | None = None) -> Capacity | None:
        """The plan's throughput capacity alone (no replay of the whole trace): at the
        planner's SLO scale, or within its capacity_limit_s (`mix`: as for simulate)."""
        return deployment_capacity(self.deploy(plan), self.problem.trace,
                                   mix or self.problem.mix,
                                   self.capacity_scale, CAPACITY_WINDOW, self.reference,
                                   self.capacity_limit_s)

    def simulate(self, plan: Plan, mix: RequestMix | None = None, capacity: bool = False,
                 requests: int | None = None) -> PlanSimulation:
        """Simulate a plan on the problem's trace (`requests`: its first so many only; `mix`:
        another model column's, for a single-model baseline); SLO scales against the planner's
        reference."""
        trace, mix, ref = self.problem.trace, mix or self.problem.mix, self.reference
        if requests is not None and requests < len(trace):
            trace, mix = trace.head(requests), mix.head(requests)
            ref = None if ref is None else ref.head(requests)
        return simulate_deployment(self.deploy(plan), trace, mix,
                                   capacity_at_scale=self.capacity_scale if capacity else None,
                                   capacity_window=CAPACITY_WINDOW, slo_reference=ref,
                                   capacity_latency_s=self.capacity_limit_s)
