"""`optimize`: the bi-level search of Cascadia, checked by simulation, against baselines.

Orchestration (like api.py): loads the inputs, builds the latency tables, runs the outer
threshold search with the inner MILP, replays the best few plans through the simulator,
simulates the baselines and returns the chosen plan with its figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner_cli import api, io
from planner_cli.errors import InputError
from planner_cli.optimize.candidates import PoolInfo, replica_shapes
from planner_cli.optimize.estimate import Workload
from planner_cli.optimize.milp import (
    InfeasibleError,
    Option,
    Solution,
    build_problem,
    diagnose,
    solve,
)
from planner_cli.optimize.search import ThresholdSearch
from planner_cli.optimize.tables import TableEntry, latency_table
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.plan import Plan, PlanInputs, SimulationSettings, StagePlan
from planner_cli.profiles import perf_model
from planner_cli.specs.catalog import Catalog, load_catalog
from planner_cli.workload.routing import reference_points, route

WORKLOAD_SAMPLE = 2000  # requests per stage workload used for the p95 estimate
VERIFY_TOP = 2  # plans replayed through the simulator
KEEP_NOTHING = 101.0  # a threshold above every 0-100 score: nobody stays at that stage
DEFAULT_CAPACITY_SCALE = 5.0
CAPACITY_WINDOW = 1500  # requests of the trace used for the capacity bisection

Progress = Callable[[str], None]


@dataclass(frozen=True)
class OptimizeInputs:
    trace: Path
    quality: Path
    cascade: Path
    cluster: Path


def _pools(cluster, catalog: Catalog) -> list[PoolInfo]:
    out = []
    for p in cluster.pools:
        gpu = catalog.gpu(p.gpu)
        out.append(PoolInfo(p.name, gpu, p.nodes, p.gpus_per_node or gpu.gpus_per_node,
                            p.price_usd_per_gpu_hour or gpu.price_usd_per_gpu_hour))
    return out


def _finite(theta: tuple[float, ...]) -> list[float]:
    return [KEEP_NOTHING if math.isinf(t) else float(t) for t in theta]


class Planner:
    """One optimisation problem: inputs loaded, tables and MILP solutions memoised."""

    def __init__(self, files: OptimizeInputs, quality_target: float | None, objective: str,
                 catalog_dir: Path | None, profiles_dir: Path | None, seed: int = 0,
                 capacity_scale: float = DEFAULT_CAPACITY_SCALE) -> None:
        self.files = files
        self.objective = objective
        self.profiles_dir = profiles_dir
        self.capacity_scale = capacity_scale
        self.catalog = load_catalog(catalog_dir)
        self.cascade = io.load_cascade(files.cascade)
        self.cluster = io.load_cluster(files.cluster)
        self.names = api.resolve_cascade(self.cascade, self.catalog, files.cascade)
        api.resolve_cluster(self.cluster, self.catalog, files.cluster)
        self.cards = [self.catalog.model(n) for n in self.names]
        self.pools = _pools(self.cluster, self.catalog)
        self.capacity = {p.name: p.gpus for p in self.pools}
        self.price = {p.name: p.price_usd_per_gpu_hour or 0.0 for p in self.pools}
        self.trace = api.load_trace(files.trace)
        self.sample, self.dropped = api.judged_for_cascade(io.read_judged(files.quality),
                                                          self.cascade, self.names,
                                                          self.catalog)
        self.seed = seed
        self.mix = api.request_mix(self.trace, self.cascade, self.names, self.catalog,
                                   files.quality, None, seed)
        self.z1, self.z2 = reference_points(self.sample.quality)
        self.q_min = quality_target if quality_target is not None else (
            self.cascade.quality_target)
        if self.q_min is not None and self.q_min > self.z1 + 1e-9:
            raise InfeasibleError(
                f"quality target {self.q_min:g} is above z1* = {self.z1:.1f}, the quality of "
                "sending every request to the largest model",
                f"lower the quality target to at most {self.z1:.1f}")
        arrivals = (self.trace.timestamps_ms - self.trace.timestamps_ms[0]) / 1000.0
        self.duration_s = max(float(arrivals[-1]), 1e-9)
        self._shapes: dict[tuple[int, str], list] = {}
        self._tables: dict[tuple, list[TableEntry]] = {}
        self._costs: dict[tuple, IterationCost] = {}
        self.sources: dict[str, str] = {}
        self.milp_solves = 0
        self._solutions: dict[tuple, tuple[float, Solution | InfeasibleError]] = {}
        self._answered: dict[tuple[float, ...], np.ndarray] = {}

    # ------------------------------------------------------------ pieces

    def cost(self, shape: ReplicaShape) -> IterationCost:
        key = (shape.card.name, shape.gpu.name, shape.tp, shape.pp, shape.precision,
               shape.gpus_per_node)
        if key not in self._costs:
            pm = perf_model(shape, self.profiles_dir)
            self.sources[f"{shape.card.name}@{shape.gpu.name} tp{shape.tp}"] = pm.source
            self._costs[key] = IterationCost(shape, pm.constants)
        return self._costs[key]

    def shapes(self, i: int, pool: PoolInfo) -> list:
        key = (i, pool.name)
        if key not in self._shapes:
            entry = self.cascade.models[i]
            self._shapes[key] = replica_shapes(self.cards[i], pool, entry.precision,
                                               entry.max_model_len or 32768)
        return self._shapes[key]

    def answered_by(self, theta: tuple[float, ...]) -> np.ndarray:
        """The stage answering each trace request under θ (memoised: the search asks for the
        same θ once per stage, per pool and per table)."""
        if theta not in self._answered:
            self._answered[theta] = route(self.mix.scores, self.mix.quality,
                                          _finite(theta)).answered_by
        return self._answered[theta]

    def workload(self, i: int, theta: tuple[float, ...]) -> Workload:
        reach = np.flatnonzero(self.answered_by(theta) >= i)
        rng = np.random.default_rng([self.seed, i])
        pick = reach if reach.size <= WORKLOAD_SAMPLE else np.sort(
            rng.choice(reach, WORKLOAD_SAMPLE, replace=False))
        return Workload(rate_per_s=reach.size / self.duration_s,
                        prompts=self.trace.input_lengths[pick].astype(float),
                        outputs=self.mix.outputs[i][pick].astype(float),
                        key=(i, tuple(_finite(theta[:i]))))

    def table(self, i: int, pool: PoolInfo, theta: tuple[float, ...],
              tp_only: int | None = None) -> list[TableEntry]:
        work = self.workload(i, theta)
        key = (i, pool.name, work.key, tp_only)
        if key not in self._tables:
            shapes = [s for s in self.shapes(i, pool) if tp_only is None or s[0].tp == tp_only]
            self._tables[key] = latency_table(
                self.cards[i], pool, self.cascade.models[i].precision, work, self.cost,
                shapes=shapes)
        return self._tables[key]

    def options(self, theta: tuple[float, ...], tp_only: int | None = None
                ) -> dict[int, list[Option]]:
        answered = self.answered_by(theta)
        out: dict[int, list[Option]] = {}
        for i in range(len(self.cards)):
            opts: list[Option] = []
            if not (answered >= i).any():
                # nobody reaches this stage; it still gets its smallest replica
                for pool in self.pools:
                    for shape, kv in self.shapes(i, pool):
                        if tp_only is None or shape.tp == tp_only:
                            opts.append(Option(pool.name, shape.gpus, 0.0,
                                               TableEntry(shape.gpus, 0.0, shape.tp, shape.pp,
                                                          1, kv)))
                            break
                out[i] = opts
                continue
            for pool in self.pools:
                for e in self.table(i, pool, theta, tp_only):
                    if math.isfinite(e.latency_s):
                        opts.append(Option(pool.name, e.gpus, e.latency_s, e))
            out[i] = opts
        return out

    def allocate(self, theta: tuple[float, ...], tp_only: int | None = None,
                 full: bool = False) -> tuple[float, Solution | InfeasibleError]:
        """The MILP for θ: latency only while searching; every phase for a plan."""
        options = self.options(theta, tp_only)
        key = (tuple((i, tuple((o.pool, o.gpus, o.latency_s) for o in opts))
                     for i, opts in sorted(options.items())), full)
        if key in self._solutions:
            return self._solutions[key]
        try:
            diagnose(options, self.capacity, self.names, self.price,
                     self.cluster.budget_usd_per_hour)
            self.milp_solves += 1
            sol = solve(build_problem(options, self.capacity, self.objective, self.price,
                                      self.cluster.budget_usd_per_hour),
                        phases=3 if full else 1)
            out: tuple[float, Solution | InfeasibleError] = (sol.latency_s, sol)
        except InfeasibleError as exc:
            out = (math.inf, exc)
        self._solutions[key] = out
        return out

    def search_latency(self, theta: tuple[float, ...]) -> tuple[float, object]:
        return self.allocate(theta)

    def plan_for(self, theta: tuple[float, ...], sol: Solution, name: str,
                 cascade=None, stages_from: dict[int, Option] | None = None) -> Plan:
        assignment = stages_from or sol.assignment
        cascade = cascade or self.cascade
        stages = []
        for i, entry in enumerate(cascade.models):
            o = assignment[i]
            e: TableEntry = o.payload  # type: ignore[assignment]
            stages.append(StagePlan(model=self.catalog.model(entry.model).name,
                                    precision=entry.precision, pool=o.pool, tp=e.tp, pp=e.pp,
                                    replicas=e.replicas,
                                    max_model_len=entry.max_model_len or 32768))
        return Plan(schema_version=1, name=name,
                    inputs=PlanInputs(trace=str(self.files.trace.resolve()),
                                      quality=str(self.files.quality.resolve())),
                    cascade=cascade, cluster=self.cluster, thresholds=_finite(theta),
                    stages=stages, simulation=SimulationSettings(seed=self.seed))

    def simulate(self, plan: Plan, mix=None, capacity_scale: float | None = None) -> dict:
        return api.simulate_loaded(plan, Path(plan.name), self.trace, mix or self.mix,
                                   self.catalog, self.profiles_dir,
                                   capacity_at_scale=capacity_scale,
                                   capacity_window=CAPACITY_WINDOW)

    def quality(self, theta: tuple[float, ...]) -> float:
        return route(self.sample.scores, self.sample.quality, _finite(theta)).quality


def optimize(files: OptimizeInputs, quality_target: float | None = None,
             objective: str = "p95-max-stage", *, catalog_dir: Path | None = None,
             profiles_dir: Path | None = None, capacity_scale: float = DEFAULT_CAPACITY_SCALE,
             dump_lp: Path | None = None, progress: Progress | None = None) -> dict:
    """Choose thresholds, GPUs and parallelism for the cascade; verify by simulation."""
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if objective not in ("p95-max-stage", "e2e"):
        raise InputError(f"--objective {objective!r} is not known", "use p95-max-stage or e2e")
    say("loading inputs")
    pl = Planner(files, quality_target, objective, catalog_dir, profiles_dir,
                 capacity_scale=capacity_scale)
    m = len(pl.cards)
    candidates = [np.unique(pl.sample.scores[:, i]) for i in range(m - 1)]
    candidates = [np.append(c, math.inf) for c in candidates]
    search = ThresholdSearch(candidates, pl.quality, pl.search_latency, pl.z1, pl.z2)
    say("searching thresholds (MILP per candidate)")
    t_search = time.perf_counter()
    best = search.optimise(pl.q_min) if m > 1 else ()
    if m == 1:
        search.point(())
        best = ()
    search_s = time.perf_counter() - t_search
    assert best is not None
    chosen = search.point(best)
    if not math.isfinite(chosen.latency_s):
        err = chosen.detail
        raise err if isinstance(err, InfeasibleError) else InfeasibleError(
            "no allocation of the cluster serves the cascade", "add GPUs")
    if pl.q_min is not None and chosen.quality < pl.q_min - 1e-9:
        raise InfeasibleError(f"no thresholds reach quality {pl.q_min:g} "
                              f"(best {chosen.quality:.1f})",
                              f"lower the quality target to at most {pl.z1:.1f}")
    if dump_lp is not None:
        build_problem(pl.options(best), pl.capacity, objective, pl.price,
                      pl.cluster.budget_usd_per_hour).write_lp(dump_lp)
    # verification: the best few feasible points, replayed through the simulator
    feasible = [p for p in search.evaluated.values() if math.isfinite(p.latency_s)
                and (pl.q_min is None or p.quality >= pl.q_min - 1e-9)]
    feasible.sort(key=lambda p: (p.latency_s, -p.quality, p.thresholds))
    top = feasible[:VERIFY_TOP] or [chosen]
    say(f"simulating the best {len(top)} plans")
    verified = []
    for k, point in enumerate(top):
        _, full_sol = pl.allocate(point.thresholds, full=True)
        assert isinstance(full_sol, Solution)
        point.detail = full_sol
        plan = pl.plan_for(point.thresholds, full_sol, f"candidate-{k + 1}")
        sim = pl.simulate(plan)
        verified.append((point, plan, sim))
    rank_key = "e2e" if objective == "e2e" else "slo"

    def score(v) -> tuple:
        fig = v[2]["figures"]
        p95 = fig["e2e_latency_s"]["p95"] or math.inf
        return (p95, fig["slo_scale"]) if rank_key == "e2e" else (fig["slo_scale"], p95)

    point, plan, sim = min(verified, key=score)
    say("simulating baselines")
    baselines = _baselines(pl, point)
    main_capacity = pl.simulate(plan, capacity_scale=capacity_scale)["capacity"]
    figures = sim["figures"]
    gains = {}
    for name, b in baselines.items():
        if "figures" not in b:
            continue
        gains[name] = {
            "slo_scale_gain": (b["figures"]["slo_scale"] / figures["slo_scale"]
                               if figures["slo_scale"] > 0 else None),
            "throughput_gain": (main_capacity["rate_multiple"] / b["capacity"]["rate_multiple"]
                                if b["capacity"]["rate_multiple"] > 0 else None),
            # a capacity found at the search's request limit is a lower bound
            "throughput_gain_bound": ("at most" if b["capacity"].get("at_least") else
                                      "at least" if main_capacity.get("at_least") else
                                      "exact"),
        }
    front = [{"thresholds": _finite(p.thresholds), "quality": p.quality,
              "milp_latency_s": p.latency_s} for p in search.front()]
    sol: Solution = point.detail  # type: ignore[assignment]
    tables = {}
    for i in range(m):
        for pool in pl.pools:
            if (pl.answered_by(point.thresholds) >= i).any():
                tables[f"{pl.names[i]}@{pool.name}"] = [
                    e.to_dict() for e in pl.table(i, pool, point.thresholds)]
    predicted = {
        "quality": point.quality, "z1": pl.z1, "z2": pl.z2, "quality_target": pl.q_min,
        "objective": objective, "milp": sol.to_dict() | {"solve_s": None},
        "milp_estimate_latency_s": point.latency_s,
        "simulated": figures, "capacity": main_capacity,
        "baselines": {k: _strip_baseline(v) for k, v in baselines.items()},
        "gains": gains, "pareto_front": front, "latency_tables": tables,
        "judged": {"prompts": len(pl.sample), "dropped": pl.dropped,
                   "scores_from": pl.mix.source},
        "perf_sources": dict(sorted(pl.sources.items())),
        "verified_candidates": [{"thresholds": _finite(v[0].thresholds),
                                 "quality": v[0].quality, "milp_latency_s": v[0].latency_s,
                                 "simulated_e2e_p95_s": v[2]["figures"]["e2e_latency_s"]["p95"],
                                 "simulated_slo_scale": v[2]["figures"]["slo_scale"]}
                                for v in verified],
    }
    plan = plan.model_copy(update={"name": "cascadia-plan", "predicted": predicted})
    timings = {"total_s": time.perf_counter() - t_start, "search_s": search_s,
               "milp_solves": pl.milp_solves, "last_milp_solve_s": sol.solve_s,
               "evaluated_thresholds": len(search.evaluated)}
    return {"plan": plan, "timings": timings}


def _strip_baseline(b: dict) -> dict:
    out = {k: v for k, v in b.items() if k != "figures"}
    if "figures" in b:
        f = b["figures"]
        out["simulated"] = {"e2e_latency_s": f["e2e_latency_s"], "slo_scale": f["slo_scale"],
                            "throughput_rps": f["throughput_rps"],
                            "attainment_curve": f["attainment_curve"]}
    return out


def _baselines(pl: Planner, point) -> dict:
    """(a) the cheapest single model meeting the target on all GPUs, (b) the cascade with GPUs
    split evenly, (c) the cascade with one parallel strategy for every model."""
    out: dict[str, dict] = {}
    theta = point.thresholds
    # (a) single model
    full = pl.sample.quality.mean(axis=0)
    order = sorted(range(len(pl.cards)), key=lambda i: pl.cards[i].num_hidden_layers
                   * pl.cards[i].hidden_size)
    meets = [i for i in order if pl.q_min is None or full[i] >= pl.q_min - 1e-9]
    pick = meets[0] if meets else len(pl.cards) - 1
    out["single-model"] = _single_model(pl, pick)
    # (b) even split across the cascade's models, pool by pool
    even: dict[int, Option] = {}
    m = len(pl.cards)
    for i in range(m):
        best = None
        for pool in pl.pools:
            share = pool.gpus // m
            table = pl.table(i, pool, theta) if (pl.answered_by(theta) >= i).any() else []
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
            out["even-split"] = {"error": f"{pl.names[i]} fits no even share of a pool"}
            break
        even[i] = Option(best[0], best[1].gpus, best[1].latency_s, best[1])
    else:
        plan = pl.plan_for(theta, None, "baseline-even-split", stages_from=even)  # type: ignore[arg-type]
        out["even-split"] = _run_baseline(pl, plan)
    # (c) one tensor-parallel size for every model: the smallest every model fits with
    # (c) one tensor-parallel size for every model: the best of those every model fits with
    tps = sorted({s.tp for i in range(m) for pool in pl.pools for s, _ in pl.shapes(i, pool)})
    common = [tp for tp in tps if all(any(s.tp == tp for pool in pl.pools
                                          for s, _ in pl.shapes(i, pool)) for i in range(m))]
    tried = [(pl.allocate(theta, tp_only=tp, full=True), tp) for tp in common]
    ok = [(lat, tp, sol) for (lat, sol), tp in tried if isinstance(sol, Solution)]
    if not ok:
        out["uniform-parallelism"] = {"error": "no tensor-parallel size serves every model "
                                               "within the cluster"}
    else:
        _, tp, sol = min(ok, key=lambda x: (x[0], x[1]))
        plan = pl.plan_for(theta, sol, f"baseline-uniform-tp{tp}")
        out["uniform-parallelism"] = _run_baseline(pl, plan) | {"tp": tp}
    return out


def _run_baseline(pl: Planner, plan: Plan) -> dict:
    sim = pl.simulate(plan, capacity_scale=pl.capacity_scale)
    return {"plan": {"thresholds": plan.thresholds,
                     "stages": [s.model_dump(include={"model", "pool", "tp", "pp", "replicas"})
                                for s in plan.stages]},
            "figures": sim["figures"], "capacity": sim["capacity"]}


def _single_model(pl: Planner, i: int) -> dict:
    from planner_cli.specs.cascade import CascadeSpec

    entry = pl.cascade.models[i]
    cascade = CascadeSpec(schema_version=1, name=f"single-{pl.names[i]}", models=[entry],
                          judger=pl.cascade.judger, quality_target=pl.cascade.quality_target,
                          slo=pl.cascade.slo)
    best = None
    for pool in pl.pools:
        work = Workload(rate_per_s=len(pl.trace) / pl.duration_s,
                        prompts=pl.trace.input_lengths.astype(float),
                        outputs=pl.mix.outputs[i].astype(float), key=("single", i))
        table = latency_table(pl.cards[i], pool, entry.precision, work, pl.cost,
                              shapes=pl.shapes(i, pool))
        if table and (best is None or table[-1].latency_s < best[1].latency_s):
            best = (pool.name, table[-1])
    if best is None:
        return {"model": pl.names[i], "error": f"{pl.names[i]} fits no GPU of the cluster"}
    option = Option(best[0], best[1].gpus, best[1].latency_s, best[1])
    plan = pl.plan_for((), None, f"baseline-single-{pl.names[i]}", cascade=cascade,  # type: ignore[arg-type]
                       stages_from={0: option})
    mix = api.RequestMix(pl.mix.scores[:, i:i + 1], pl.mix.quality[:, i:i + 1],
                         [pl.mix.outputs[i]], pl.mix.source)
    sim = pl.simulate(plan, mix=mix, capacity_scale=pl.capacity_scale)
    return {"model": pl.names[i], "quality": float(pl.sample.quality[:, i].mean()),
            "plan": {"stages": [s.model_dump(include={"model", "pool", "tp", "pp", "replicas"})
                                for s in plan.stages]},
            "figures": sim["figures"], "capacity": sim["capacity"]}
