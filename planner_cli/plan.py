"""The plan: what to deploy (per cascade stage: GPU pool, replica shape, replica count) and the
routing thresholds, with the inputs it was made for. Versioned; loaded strictly.

`optimize` writes plans; a plan can also be written by hand (see examples/) and checked with
`simulate`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from planner_cli.perf.memory import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
)
from planner_cli.sim.figures import (
    Capacity,
    CascadeFigures,
    Figures,
    Percentiles,
)
from planner_cli.specs._yaml import PlainText, StrictModel
from planner_cli.specs.cascade import CascadeModel, CascadeSpec
from planner_cli.specs.cluster import ClusterSpec
from planner_cli.specs.model import Precision

PLAN_SCHEMA_VERSION = 1


class StagePlan(StrictModel):
    model: str  # the cascade model this stage serves
    precision: Precision = "bf16"
    pool: str  # a pool of the cluster
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    replicas: PositiveInt = 1
    max_num_batched_tokens: PositiveInt = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: PositiveInt = DEFAULT_MAX_NUM_SEQS
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = DEFAULT_GPU_MEMORY_UTILIZATION
    max_model_len: PositiveInt | None = None  # default: the cascade model's (else the card's)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas


class PlanInputs(StrictModel):
    trace: str | None = None  # relative to the plan file
    quality: str | None = None  # judged sample, relative to the plan file
    score_scale: str | None = None  # e.g. "1-10", when the sample does not declare it
    # the judged sample's models whose common prompts the plan was made on (optimize plans
    # of a shorter cascade pair trace requests with the same prompts as the whole cascade)
    judged_with: list[str] | None = None


class SloReference(StrictModel):
    """The replica whose unloaded latency per request is every SLO scale's base: the whole
    given cascade's largest model, so that plans for a shorter cascade (or one model) compare
    with it. Absent: the plan's own last model."""

    model: CascadeModel
    stage: StagePlan


class SimulationSettings(StrictModel):
    balancer: Literal["round-robin", "least-outstanding"] = "round-robin"
    seed: Annotated[int, Field(ge=0)] = 0  # pairs trace requests with judged prompts
    engine: str | None = None  # use calibrations saved under this engine name
    # the trace's arrivals replayed this many times faster (optimize --rate / --rate-scale)
    rate_scale: Annotated[float, Field(gt=0)] = 1.0
    slo_reference: SloReference | None = None


# ---------------------------------------------------------------- what optimize predicted

class TableRow(Figures):
    """One improving entry of a latency table l_i(g, f)."""

    gpus: int
    latency_s: float | None
    tp: int
    pp: int
    replicas: int


class MilpChoice(Figures):
    pool: str
    gpus: int
    latency_s: float | None


class MilpRecord(Figures):
    objective_latency_s: float | None
    gpus: int
    solver: str
    status: str
    gap: float | None
    solve_s: float | None  # not stored (plans are byte-identical on re-run)
    assignment: dict[str, MilpChoice]


class FrontPoint(Figures):
    thresholds: list[float]
    quality: float  # what the thresholds promise (the bound the target is held to)
    milp_latency_s: float | None
    simulated_e2e_p95_s: float | None = None  # on the simulated front


class StageShape(Figures):
    model: str
    pool: str
    tp: int
    pp: int
    replicas: int


class BaselinePlan(Figures):
    thresholds: list[float] | None = None
    stages: list[StageShape]


class BaselineSimulated(Figures):
    e2e_latency_s: Percentiles
    slo_scale: float | None
    throughput_rps: float
    attainment_curve: list[tuple[float, float]]


class Baseline(Figures):
    """A baseline deployment simulated on the same trace, or why there is none."""

    model: str | None = None  # the single-model baseline's model
    quality: float | None = None  # the single-model baseline's quality
    tp: int | None = None  # the uniform-parallelism baseline's tensor-parallel size
    error: str | None = None
    plan: BaselinePlan | None = None
    simulated: BaselineSimulated | None = None
    capacity: Capacity | None = None


class Gain(Figures):
    """The plan against a baseline: > 1 means the plan is better."""

    slo_scale_gain: float | None
    throughput_gain: float | None
    throughput_gain_bound: Literal["exact", "at least", "at most"]


class JudgedInfo(Figures):
    prompts: int
    dropped: int
    scores_from: str


class VerifiedCandidate(Figures):
    models: list[str] = []  # the family member (empty in older plans)
    thresholds: list[float]
    gpus: dict[str, int] = {}  # per stage ("model@pool tp x pp x replicas"): its GPUs
    quality: float
    milp_latency_s: float | None
    simulated_e2e_p95_s: float | None
    simulated_slo_scale: float | None
    simulated_requests: int | None = None  # the trace's first so many (all: the finalists)


class FamilyMember(Figures):
    """One ordered sub-cascade of the given models (a model alone, a shorter chain, the whole
    chain): its best simulated plan, or why it has none."""

    models: list[str]
    chosen: bool = False
    error: str | None = None  # why it has no plan (the quality target, the cluster)
    best_quality: float  # the most any thresholds reach with these models (sample mean)
    quality: float | None = None  # what its best plan's thresholds promise (the lower bound)
    thresholds: list[float] | None = None
    gpus: dict[str, int] | None = None  # per model
    milp_latency_s: float | None = None
    simulated_e2e_p95_s: float | None = None
    simulated_slo_scale: float | None = None
    simulated_requests: int | None = None  # the trace's first so many (all: the finalists)
    capacity_rps: float | None = None  # the capacity objective's sustained rate


class Family(Figures):
    """What the planner compared: every member of the cascade's family, and the verdict."""

    members: list[FamilyMember]
    winner: list[str]  # the chosen member's models
    # the best other member's simulated e2e p95 over the winner's (> 1: the winner is faster)
    margin: float | None
    runner_up: list[str] | None
    verdict: str  # one plain sentence


class CrossValidatedShortfall(Figures):
    """Thresholds chosen on k−1 folds of the judged prompts, Q measured on the fold left out:
    target − held-out Q (> 0: the promise fell short on prompts it was not chosen on)."""

    folds: int
    target: float
    mean_shortfall: float
    worst_shortfall: float
    folds_without_choice: int


class QualityPromise(Figures):
    """What the chosen thresholds promise on new requests."""

    confidence: float | None  # None: the plain sample mean (no bound asked for)
    lower_bound: float  # the bootstrap lower bound of Q the target is held to
    interval: list[float] | None  # the two-sided bootstrap interval at the confidence
    prompts: int  # judged prompts it rests on
    stratified: bool  # resampled within the sample's categories
    cross_validated: CrossValidatedShortfall | None


class Sizing(Figures):
    """The cost objective's answer: what the plan needs to keep the SLO at the planned rate."""

    slo_p95_s: float
    slo_ttft_p95_s: float | None = None  # --slo-ttft
    gpus: int
    gpus_per_pool: dict[str, int]
    cost_usd_per_hour: float | None  # None: the pools have no prices
    output_tokens_per_s: float  # at the planned rate
    cost_usd_per_million_tokens: float | None


class Predicted(Figures):
    """What `optimize` predicts for the plan, and the evidence: tables, MILP, front,
    simulated figures, baselines and gains."""

    quality: float  # Q at the chosen thresholds on the judged sample (its mean)
    # the fields below marked "None: an older plan" are absent from plans written before them
    quality_promise: QualityPromise | None = None  # None: an older plan
    z1: float
    z2: float
    quality_target: float | None
    objective: str
    rate_per_s: float | None = None  # the rate planned for; None: an older plan
    family: Family | None = None  # None: an older plan
    sizing: Sizing | None = None  # --objective cost
    milp: MilpRecord
    milp_estimate_latency_s: float | None
    simulated: CascadeFigures
    capacity: Capacity | None  # None: the trace has fewer than 2 requests (no rate to scale)
    baselines: dict[str, Baseline]
    gains: dict[str, Gain]
    pareto_front: list[FrontPoint]  # the chosen member's, by the MILP's estimates
    # the chosen member's simulated candidates that no other beats on both promised quality and
    # simulated p95 (whole-trace figures where simulated on it); the chosen plan is on it
    simulated_front: list[FrontPoint] = []
    latency_tables: dict[str, list[TableRow]]
    judged: JudgedInfo
    perf_sources: dict[str, str]
    verified_candidates: list[VerifiedCandidate]


class Plan(StrictModel):
    schema_version: Literal[1]
    name: PlainText = "plan"
    inputs: PlanInputs = PlanInputs()
    cascade: CascadeSpec
    cluster: ClusterSpec
    thresholds: list[Annotated[float, Field(ge=0, le=101)]]  # 0-100 judge-score scale
    stages: list[StagePlan] = Field(min_length=1)
    judge: StagePlan | None = None  # the judger's own replicas, when it is a served model
    simulation: SimulationSettings = SimulationSettings()
    predicted: Predicted | None = None  # figures written by optimize, kept for re-checking

    @property
    def serving(self) -> list[StagePlan]:
        """Everything that takes GPUs: the stages, then a served judge's replicas."""
        return list(self.stages) + ([self.judge] if self.judge is not None else [])

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        m = len(self.cascade.models)
        if len(self.stages) != m:
            raise ValueError(f"{len(self.stages)} stages for a cascade of {m} models")
        if len(self.thresholds) != m - 1:
            raise ValueError(f"{len(self.thresholds)} thresholds for a cascade of {m} models "
                             f"(give {m - 1}: one per stage but the last)")
        pools = {p.name for p in self.cluster.pools}
        if self.cascade.judger.kind == "model" and self.judge is None:
            raise ValueError("the cascade's judger is a served model: give its replicas under "
                             "'judge:' (model, pool, tp, replicas)")
        if self.cascade.judger.kind == "external" and self.judge is not None:
            raise ValueError("'judge:' replicas given, but the cascade's judger is external")
        if self.judge is not None and self.judge.pool not in pools:
            raise ValueError(f"judge.pool {self.judge.pool!r} is not a cluster pool")
        for i, stage in enumerate(self.stages):
            if stage.pool not in pools:
                raise ValueError(f"stages[{i}].pool {stage.pool!r} is not a cluster pool "
                                 f"({', '.join(sorted(pools))})")
        return self
