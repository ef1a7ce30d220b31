"""The plan: what to deploy (per cascade stage: GPU pool, replica shape, replica count) and the
routing thresholds, with the inputs it was made for. Versioned; loaded strictly.

`optimize` writes plans; a plan can also be written by hand (see examples/) and checked with
`simulate`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from planner_cli.specs._yaml import StrictModel
from planner_cli.specs.cascade import CascadeSpec
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
    max_num_batched_tokens: PositiveInt = 8192
    max_num_seqs: PositiveInt = 256
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_model_len: PositiveInt | None = None

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas


class PlanInputs(StrictModel):
    trace: str | None = None  # relative to the plan file
    quality: str | None = None  # judged sample, relative to the plan file
    score_scale: str | None = None  # e.g. "1-10", when the sample does not declare it


class SimulationSettings(StrictModel):
    balancer: Literal["round-robin", "least-outstanding"] = "round-robin"
    seed: Annotated[int, Field(ge=0)] = 0  # pairs trace requests with judged prompts
    engine: str | None = None  # use calibrations saved under this engine name


class Plan(StrictModel):
    schema_version: Literal[1]
    name: str = "plan"
    inputs: PlanInputs = PlanInputs()
    cascade: CascadeSpec
    cluster: ClusterSpec
    thresholds: list[Annotated[float, Field(ge=0, le=101)]]  # 0-100 judge-score scale
    stages: list[StagePlan] = Field(min_length=1)
    judge: StagePlan | None = None  # the judger's own replicas, when it is a served model
    simulation: SimulationSettings = SimulationSettings()
    predicted: dict | None = None  # figures written by optimize, kept for re-checking

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
