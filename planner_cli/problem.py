"""Resolve once: the inputs of a planning problem and the deployment of a plan, with every name
looked up, every default applied and every limit checked in one place.

`resolve_problem` turns loaded cascade, cluster, trace and judged sample into a `Problem`;
`resolve_deployment` turns a plan into a `Deployment` (stages with their replica shapes, KV
capacity and cost models). Every command takes these objects; nothing downstream re-derives a
pool default or a context length. Pure: the caller loads the files and passes a lookup for the
performance model of a shape (the profiles folder lives at the edge).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from planner_cli.errors import InputError
from planner_cli.perf.engines import DEFAULT_ENGINE
from planner_cli.perf.memory import memory_figures
from planner_cli.perf.model import CostModel, PerfLookup
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.plan import Plan, StagePlan
from planner_cli.specs.cascade import CascadeModel, CascadeSpec
from planner_cli.specs.catalog import Catalog
from planner_cli.specs.cluster import ClusterSpec
from planner_cli.specs.gpu import GpuSpec
from planner_cli.specs.model import ModelCard
from planner_cli.workload.confidence import (
    DEFAULT_CONFIDENCE,
    BestBound,
    QualityBound,
    best_bound,
    bootstrap,
)
from planner_cli.workload.judged import JudgedSample
from planner_cli.workload.mix import RequestMix, inline_mix, sampled_mix
from planner_cli.workload.routing import (
    BestQuality,
    best_quality,
    candidate_thresholds,
    reference_points,
    route,
)
from planner_cli.workload.trace import Trace, scaled

T = TypeVar("T")


def named(lookup: Callable[[str], T], name: str, where: str) -> T:
    """A catalog lookup whose error names the file and key it came from."""
    try:
        return lookup(name)
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}", exc.hint) from None


# ---------------------------------------------------------------- cluster

@dataclass(frozen=True)
class Pool:
    """A cluster pool with its defaults applied: the GPU card, node size and price."""

    name: str
    gpu: GpuSpec
    nodes: int
    gpus_per_node: int
    price_usd_per_gpu_hour: float | None = None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def to_dict(self) -> dict:
        return {"name": self.name, "gpu": self.gpu.name, "nodes": self.nodes,
                "gpus_per_node": self.gpus_per_node, "gpus": self.gpus,
                "memory_gib_per_gpu": round(self.gpu.memory_gib, 2),
                "price_usd_per_gpu_hour": self.price_usd_per_gpu_hour}


def resolve_cluster(spec: ClusterSpec, catalog: Catalog, source: str
                    ) -> tuple[ClusterSpec, tuple[Pool, ...]]:
    """The cluster with every pool's GPU name canonical, its node size (default: the GPU's
    usual node) checked against what one node of that GPU holds, and its price filled in."""
    pools = []
    for i, p in enumerate(spec.pools):
        gpu = named(catalog.gpu, p.gpu, f"{source}: pools[{i}].gpu")
        per_node = p.gpus_per_node or gpu.gpus_per_node
        if per_node > gpu.gpus_per_node:
            raise InputError(f"{source}: pools[{i}].gpus_per_node: {per_node} is more than one "
                             f"{gpu.name} node holds ({gpu.gpus_per_node})",
                             f"use at most {gpu.gpus_per_node} and count the rest as nodes")
        pools.append(Pool(p.name, gpu, p.nodes, per_node,
                          p.price_usd_per_gpu_hour or gpu.price_usd_per_gpu_hour))
    resolved = spec.model_copy(update={"pools": [
        p.model_copy(update={"gpu": r.gpu.name, "gpus_per_node": r.gpus_per_node,
                             "price_usd_per_gpu_hour": r.price_usd_per_gpu_hour})
        for p, r in zip(spec.pools, pools, strict=True)]})
    return resolved, tuple(pools)


# ---------------------------------------------------------------- models

@dataclass(frozen=True)
class StageModel:
    """A cascade model resolved against the catalog."""

    card: ModelCard
    precision: str
    max_model_len: int  # serving context limit: the cascade file's, else the card's
    weights: str  # what the engines load: the cascade file's `weights`, else the card's HF id
    judged_name: str | None
    engine: str  # the cascade file's, else the run's (--engine), else vllm

    @property
    def name(self) -> str:
        return self.card.name


def context_length(card: ModelCard, configured: int | None, where: str) -> int:
    """The one rule for a served context length: the configured one, else the card's; never
    above the card's (the engines refuse it)."""
    if configured is None:
        return card.max_position_embeddings
    if configured > card.max_position_embeddings:
        raise InputError(f"{where}: max_model_len {configured} is above {card.name}'s context "
                         f"length {card.max_position_embeddings}",
                         f"use at most {card.max_position_embeddings}")
    return configured


def resolve_models(cascade: CascadeSpec, catalog: Catalog, source: str,
                   engine: str | None = None) -> tuple[tuple[StageModel, ...], ModelCard | None]:
    """The cascade's models in order (unknown names fail with the file and key) and the served
    judge's card, if the judger is a model; `engine` is the run's default engine."""
    out = []
    for i, m in enumerate(cascade.models):
        card = named(catalog.model, m.model, f"{source}: models[{i}].model")
        precision, weights = _served(card, m, f"{source}: models[{i}]")
        out.append(StageModel(card, precision,
                              context_length(card, m.max_model_len, f"{source}: models[{i}]"),
                              weights or card.hf_id, m.judged_name,
                              m.engine or engine or DEFAULT_ENGINE))
    judge = None
    if cascade.judger.kind == "model":
        judge = named(catalog.model, cascade.judger.model, f"{source}: judger.model")
    return tuple(out), judge


def judged_columns(sample: JudgedSample, models: tuple[StageModel, ...], catalog: Catalog
                   ) -> tuple[JudgedSample, int]:
    """The judged sample's columns for the cascade's models, in cascade order.

    A judged model name matches a cascade model when both resolve to the same model card
    (names, aliases and HF ids), or when it equals the cascade entry's `judged_name`."""
    by_card: dict[str, str] = {}
    for name in sample.models:
        if name in catalog.models:
            by_card.setdefault(catalog.model(name).name, name)
    wanted = [m.judged_name if m.judged_name is not None else by_card.get(m.name, m.name)
              for m in models]
    return sample.select(wanted)


def _score_key(trace: Trace, m: StageModel, catalog: Catalog) -> str | None:
    """The trace's `cascadia.scores` key for a cascade model (its judged name, or any name of
    its card), if the trace has one."""
    return next((k for k in trace.scores if k == m.judged_name or (
        k in catalog.models and catalog.model(k).name == m.name)), None)


def inline_request_mix(trace: Trace, models: tuple[StageModel, ...], catalog: Catalog
                       ) -> RequestMix | None:
    """The trace's own scores (`cascadia.scores`) for every cascade model, when every line
    carries them; else None (the judged sample then supplies them)."""
    keys = [_score_key(trace, m, catalog) for m in models]
    if any(k is None for k in keys):
        return None
    return inline_mix(trace, [k for k in keys if k is not None])


def request_mix(trace: Trace, models: tuple[StageModel, ...], catalog: Catalog,
                columns: JudgedSample | None, seed: int) -> RequestMix:
    """Scores and output lengths for every trace request: inline in the trace when it has them
    for every cascade model, else paired by seeded sampling with the judged sample's
    `columns` (judged_columns: in cascade order)."""
    mix = inline_request_mix(trace, models, catalog)
    if mix is not None:
        return mix
    if columns is None:
        missing = [m.name for m in models if _score_key(trace, m, catalog) is None]
        what = (f"no scores for {', '.join(missing)}" if missing
                else "scores missing on some lines")
        raise InputError(f"{trace.source}: the trace has {what}, which the thresholds need",
                         "add cascadia.scores {model: 0-100} to every trace line, or give a "
                         "judged sample with --quality (or inputs.quality in the plan)")
    return sampled_mix(trace, columns, seed)


def arrival_rate(trace: Trace) -> float:
    """Mean arrival rate (req/s) of a trace: (n - 1) arrivals over its span; a one-request
    trace has no load (0). Requests all at one instant have no rate to plan for."""
    n = len(trace)
    if n < 2:
        return 0.0
    span = trace.duration_s
    if span <= 0:
        raise InputError(f"{trace.source}: all {n} requests arrive at the same instant, so the "
                         "trace has no arrival rate to plan for",
                         "spread the timestamps (cascadia-plan trace synth or trace convert "
                         "--rate R makes arrivals)")
    return (n - 1) / span


# ---------------------------------------------------------------- the problem

@dataclass(frozen=True)
class ProblemFiles:
    trace: str
    quality: str
    cascade: str
    cluster: str


@dataclass(frozen=True)
class Problem:
    """Everything a planner needs, resolved once from the input files."""

    files: ProblemFiles
    catalog: Catalog
    cascade: CascadeSpec
    cluster: ClusterSpec  # with every pool default applied
    pools: tuple[Pool, ...]
    models: tuple[StageModel, ...]
    judge: ModelCard | None  # a served judger's card
    trace: Trace
    rate_per_s: float  # the trace's mean arrival rate
    sample: JudgedSample  # columns in cascade order, prompts judged for every model
    dropped: int  # judged prompts left out (not judged for every model)
    mix: RequestMix
    quality_target: float | None  # the flag's, else the cascade file's; None: no floor
    z1: float  # Q with every request at the largest model
    z2: float  # Q with every request stopping at the smallest
    best: BestQuality  # the most any thresholds reach
    seed: int
    engine: str | None  # the run's default engine (--engine); per model in `models`
    rate_scale: float = 1.0  # the trace's arrivals replayed this many times faster
    member: tuple[int, ...] | None = None  # the given cascade's models this problem serves
    judged_with: tuple[str, ...] = ()  # the judged columns whose common prompts are used
    bound: QualityBound | None = None  # the bootstrap the quality promise is held to
    promise: BestBound | None = None  # the most any thresholds promise at its confidence

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def indices(self) -> tuple[int, ...]:
        """Which of the given cascade's models this problem serves, in order."""
        return self.member if self.member is not None else tuple(range(len(self.models)))

    def restrict(self, idx: tuple[int, ...]) -> Problem:
        """The shorter cascade of models `idx` (positions in this problem, in order): a member
        of the cascade's family, with its own reference qualities and reachable best."""
        cols = list(idx)
        sample = self.sample.columns(cols)
        z1, z2 = reference_points(sample.quality)
        best = best_quality(sample.scores, sample.quality)
        return replace(
            self, cascade=self.cascade.model_copy(update={
                "models": [self.cascade.models[i] for i in cols]}),
            models=tuple(self.models[i] for i in cols), sample=sample,
            mix=self.mix.columns(cols), z1=z1, z2=z2, best=best,
            member=tuple(self.indices[i] for i in cols),
            promise=None if self.bound is None else promised(sample, self.bound, best))

    def per_prompt(self, theta: tuple[float, ...]) -> np.ndarray:
        """The quality each judged prompt gets under θ."""
        return route(self.sample.scores, self.sample.quality, theta).per_request

    def promised(self, theta: tuple[float, ...]) -> float:
        """What θ promises: the bootstrap lower bound of Q(θ) (the plain mean without one)."""
        per = self.per_prompt(theta)
        return float(per.mean()) if self.bound is None else self.bound.lower(per)

    @property
    def cards(self) -> list[ModelCard]:
        return [m.card for m in self.models]


@dataclass(frozen=True)
class Specs:
    """The cascade and cluster files resolved against the catalog (before any data is read,
    so a misspelt name fails first)."""

    cascade: CascadeSpec
    cluster: ClusterSpec  # with every pool default applied
    pools: tuple[Pool, ...]
    models: tuple[StageModel, ...]
    judge: ModelCard | None


def _served(card: ModelCard, m: CascadeModel, where: str) -> tuple[str, str | None]:
    """A cascade model's precision (a pre-quantised checkpoint's own, else the file's, else
    bf16) and its weights: the file's, else the checkpoint it is named by, else None."""
    return (card.served_precision(m.model, m.precision, where),
            m.weights or (m.model if card.checkpoint_precision(m.model) else None))


def served_as_named(cascade: CascadeSpec, catalog: Catalog, source: str) -> CascadeSpec:
    """The cascade with every served model's precision set (a pre-quantised checkpoint's own,
    else the file's, else bf16) and a checkpoint named as a model being what its engines
    load (its `weights`, unless the file gives them)."""
    models = []
    for i, m in enumerate(cascade.models):
        card = named(catalog.model, m.model, f"{source}: models[{i}].model")
        precision, weights = _served(card, m, f"{source}: models[{i}]")
        models.append(m.model_copy(update={"precision": precision, "weights": weights}))
    judger = cascade.judger
    if judger.kind == "model":
        card = named(catalog.model, judger.model, f"{source}: judger.model")
        judger = judger.model_copy(update={"precision": card.served_precision(
            judger.model, judger.precision, f"{source}: judger")})
    return cascade.model_copy(update={"models": models, "judger": judger})


def resolve_specs(cascade: CascadeSpec, cluster: ClusterSpec, catalog: Catalog,
                  files: ProblemFiles, engine: str | None = None) -> Specs:
    cascade = served_as_named(cascade, catalog, files.cascade)
    models, judge = resolve_models(cascade, catalog, files.cascade, engine)
    resolved, pools = resolve_cluster(cluster, catalog, files.cluster)
    return Specs(cascade, resolved, pools, models, judge)


def promised(sample: JudgedSample, bound: QualityBound, best: BestQuality) -> BestBound:
    """The most any thresholds promise on `sample` at the bound's confidence."""
    m = len(sample.models)
    cands = [candidate_thresholds(sample.scores, i) for i in range(m - 1)]
    return best_bound(cands, lambda t: route(sample.scores, sample.quality, t).per_request,
                      bound, tuple(best.thresholds))


def rate_scale_for(trace: Trace, rate_per_s: float | None, rate_scale: float | None) -> float:
    """How much faster than recorded the trace is replayed: `--rate R` (requests per second)
    or `--rate-scale X`; neither: as recorded (1)."""
    if rate_per_s is not None and rate_scale is not None:
        raise InputError("--rate and --rate-scale both given", "pass one of them")
    if rate_scale is not None:
        if not (rate_scale > 0 and math.isfinite(rate_scale)):
            raise InputError(f"--rate-scale {rate_scale:g} is not a positive number",
                             "use e.g. 2 for twice the trace's rate")
        return rate_scale
    if rate_per_s is None:
        return 1.0
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise InputError(f"--rate {rate_per_s:g} is not a positive number",
                         "give requests per second, e.g. --rate 20")
    own = arrival_rate(trace)
    if own <= 0:
        raise InputError(f"{trace.source}: a one-request trace has no arrival pattern to "
                         "replay at --rate", "use a trace with at least two requests")
    return rate_per_s / own


def resolve_problem(specs: Specs, catalog: Catalog, trace: Trace, sample: JudgedSample,
                    files: ProblemFiles, quality_target: float | None = None, seed: int = 0,
                    engine: str | None = None, rate_scale: float = 1.0,
                    quality_confidence: float | None = DEFAULT_CONFIDENCE) -> Problem:
    """The problem the planner solves; `rate_scale` replays the trace's arrivals that many
    times faster (the load the user plans for)."""
    cascade, models = specs.cascade, specs.models
    if rate_scale != 1.0:
        trace = scaled(trace, rate_scale)
    columns, dropped = judged_columns(sample, models, catalog)
    mix = request_mix(trace, models, catalog, columns, seed)
    z1, z2 = reference_points(columns.quality)
    if quality_target is not None and not 0 <= quality_target <= 100:
        raise InputError(f"--quality-target {quality_target:g} is not on the 0-100 scale",
                         "use e.g. 85")
    best = best_quality(columns.scores, columns.quality)
    bound = (None if quality_confidence is None else
             bootstrap(len(columns), columns.categories, seed, quality_confidence))
    return Problem(
        files=files, catalog=catalog, cascade=cascade, cluster=specs.cluster, pools=specs.pools,
        models=models, judge=specs.judge, trace=trace, rate_per_s=arrival_rate(trace),
        sample=columns, dropped=dropped, mix=mix,
        quality_target=quality_target if quality_target is not None
        else cascade.quality_target,
        z1=z1, z2=z2, best=best, seed=seed,
        engine=engine, rate_scale=rate_scale, judged_with=columns.models, bound=bound,
        promise=None if bound is None else promised(columns, bound, best))


# ---------------------------------------------------------------- a plan's deployment

@dataclass(frozen=True)
class DeployedStage:
    """A plan stage resolved: its replica shape, memory, and cost model."""

    stage: StagePlan  # with the canonical model name and max_model_len filled in
    card: ModelCard
    pool: Pool
    shape: ReplicaShape
    kv_capacity_tokens: int
    state_tokens_per_sequence: int  # sliding windows, linear-attention states (memory.py)
    engine: str
    perf_source: str
    cost: CostModel

    @property
    def model(self) -> str:
        return self.card.name

    @property
    def gpu(self) -> str:
        return self.pool.gpu.name


@dataclass(frozen=True)
class Deployment:
    """A plan resolved against the catalog and its own cluster."""

    plan: Plan  # canonical model names, resolved cluster, every max_model_len set
    stages: tuple[DeployedStage, ...]
    judge: DeployedStage | None
    pools: tuple[Pool, ...]
    models: tuple[StageModel, ...]
    reference_cost: CostModel  # the SLO reference replica
    reference_label: str

    @property
    def reference_engine(self) -> str:
        """The engine the SLO reference runs on: the last stage's."""
        return self.stages[-1].engine


def _deploy(stage: StagePlan, card: ModelCard, max_model_len: int, pool: Pool,
            engine: str, where: str, perf: PerfLookup) -> DeployedStage:
    try:
        shape = ReplicaShape(card, pool.gpu, stage.tp, stage.pp, stage.precision,
                             gpus_per_node=pool.gpus_per_node)
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}", exc.hint) from None
    if stage.max_num_batched_tokens < stage.max_num_seqs:
        raise InputError(f"{where}: max_num_batched_tokens {stage.max_num_batched_tokens} "
                         f"is below max_num_seqs {stage.max_num_seqs}",
                         "raise the token budget or lower the sequence cap")
    mem = memory_figures(shape, stage.gpu_memory_utilization, max_model_len,
                         stage.max_num_batched_tokens, stage.max_num_seqs)
    if not mem.fits:
        raise InputError(f"{where}: {card.name} tp={stage.tp} pp={stage.pp} "
                         f"{stage.precision} does not fit {pool.gpu.name}: {mem.reason}",
                         "raise tp or pp, use a lower precision, or set max_model_len")
    pm = perf(shape, engine)
    return DeployedStage(
        stage=stage.model_copy(update={"model": card.name,
                                                    "max_model_len": max_model_len}),
        card=card, pool=pool, shape=shape, kv_capacity_tokens=mem.kv_capacity_tokens,
        state_tokens_per_sequence=mem.state_tokens_per_sequence, engine=engine,
        perf_source=pm.source, cost=pm.cost())


def resolve_deployment(plan: Plan, catalog: Catalog, where: str, perf: PerfLookup
                       ) -> Deployment:
    """Check a plan against the catalog and its cluster and build each stage's cost model (and
    the served judge's); `where` names the plan in errors."""
    models, judge_card = resolve_models(plan.cascade, catalog, where, plan.simulation.engine)
    cluster, pools = resolve_cluster(plan.cluster, catalog, where)
    by_name = {p.name: p for p in pools}
    used: dict[str, int] = {}
    stages = []
    for i, (stage, model) in enumerate(zip(plan.stages, models, strict=True)):
        here = f"{where}: stages[{i}]"
        card = named(catalog.model, stage.model, f"{here}.model")
        if card.name != model.name:
            raise InputError(f"{here}.model {stage.model!r} is not the cascade's model "
                             f"{i + 1} ({model.name})", "list the stages in cascade order")
        used[stage.pool] = used.get(stage.pool, 0) + stage.gpus
        length = context_length(card, stage.max_model_len or model.max_model_len, here)
        stages.append(_deploy(stage, card, length, by_name[stage.pool], model.engine, here,
                              perf))
    judge = None
    if plan.judge is not None and judge_card is not None:
        if named(catalog.model, plan.judge.model, f"{where}: judge.model").name != judge_card.name:
            raise InputError(f"{where}: judge.model {plan.judge.model!r} is not the "
                             f"cascade's judger ({judge_card.name})", "make them the same model")
        used[plan.judge.pool] = used.get(plan.judge.pool, 0) + plan.judge.gpus
        length = context_length(judge_card, plan.judge.max_model_len, f"{where}: judge")
        judge = _deploy(plan.judge, judge_card, length, by_name[plan.judge.pool],
                        plan.simulation.engine or DEFAULT_ENGINE, f"{where}: judge", perf)
    for name, gpus in sorted(used.items()):
        if gpus > by_name[name].gpus:
            raise InputError(f"{where}: the stages use {gpus} GPUs of pool {name!r}, which "
                             f"has {by_name[name].gpus}",
                             "use fewer replicas or smaller shapes, or add nodes to the pool")
    ref_cost, ref_label = reference_cost(stages[-1], perf)
    resolved = plan.model_copy(update={
        "cluster": cluster, "stages": [s.stage for s in stages],
        "judge": None if judge is None else judge.stage})
    return Deployment(plan=resolved, stages=tuple(stages), judge=judge, pools=pools,
                      models=models, reference_cost=ref_cost, reference_label=ref_label)


REFERENCE_TP = (1, 2, 4, 8, 16)
REFERENCE_PP = (1, 2, 4, 8)


def reference_cost(last: DeployedStage, perf: PerfLookup) -> tuple[CostModel, str]:
    """The SLO reference: the cascade's largest model at the smallest tp that fits one node of
    its stage's GPU (pipeline across nodes only when no single node holds it)."""
    card, pool = last.card, last.pool
    for pp in REFERENCE_PP:
        for tp in REFERENCE_TP:
            if tp > pool.gpus_per_node or card.num_attention_heads % tp:
                continue
            try:
                shape = ReplicaShape(card, pool.gpu, tp, pp, last.stage.precision,
                                     gpus_per_node=pool.gpus_per_node)
            except InputError:
                continue
            if memory_figures(shape, last.stage.gpu_memory_utilization,
                              last.stage.max_model_len).fits:
                return perf(shape, last.engine).cost(), f"{card.name} tp{tp} pp{pp}"
    raise InputError(f"{card.name} fits no single replica of {pool.gpu.name}",
                     "the SLO reference needs one replica of the largest model")

