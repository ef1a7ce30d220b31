"""Cascade files: the ordered models, the judger, the quality target and the SLO."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from planner_cli.specs._yaml import EngineArg, PlainText, StrictModel
from planner_cli.specs.model import Precision


class CascadeModel(StrictModel):
    model: str  # a model-card name, alias or HF id (or one of its pre-quantised checkpoints)
    # default: a pre-quantised checkpoint's own, else bf16 (problem.resolve_specs sets it)
    precision: Precision | None = None
    judged_name: str | None = None  # the model's name in the judged sample, if it differs
    max_model_len: PositiveInt | None = None  # serving context limit; default: the card's
    weights: EngineArg | None = None  # HF repo id or path to serve; default: the card's hf_id
    engine: Literal["vllm", "sglang"] | None = None  # serving engine; default: --engine, vllm


class ExternalJudger(StrictModel):
    kind: Literal["external"]
    latency_s: Annotated[float, Field(ge=0)]  # seconds per judgement call (the median)
    # spread of the call latency: log-normal with this sigma around latency_s (0: fixed)
    latency_sigma: Annotated[float, Field(ge=0)] = 0.0


class ModelJudger(StrictModel):
    kind: Literal["model"]
    model: str  # a model card: the judge is served on the cluster and takes GPUs
    precision: Precision | None = None  # as a cascade model's
    output_tokens: PositiveInt = 8  # tokens the judge generates per verdict


Judger = Annotated[ExternalJudger | ModelJudger, Field(discriminator="kind")]


class SloSpec(StrictModel):
    attainment_pct: Annotated[float, Field(gt=0, le=100)] = 95.0
    ttft_s: PositiveFloat | None = None
    tpot_s: PositiveFloat | None = None
    e2e_s: PositiveFloat | None = None


class CascadeSpec(StrictModel):
    schema_version: Literal[1]
    name: PlainText = "cascade"
    models: list[CascadeModel] = Field(min_length=1)
    judger: Judger
    quality_target: Annotated[float, Field(ge=0, le=100)] | None = None  # 0-100 scale
    slo: SloSpec = SloSpec()

    @model_validator(mode="after")
    def _unique_models(self) -> CascadeSpec:
        names = [m.model.lower() for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("a model appears twice in the cascade")
        return self
