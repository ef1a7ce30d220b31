"""Cluster files: pools of identical nodes; several pools make a heterogeneous cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from planner_cli.specs._yaml import StrictModel


class Pool(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    gpu: str  # a GPU name from hardware/ (or an alias)
    nodes: PositiveInt
    gpus_per_node: PositiveInt | None = None  # default: the GPU type's usual node size
    price_usd_per_gpu_hour: PositiveFloat | None = None  # default: the GPU card's, if any


class ClusterSpec(StrictModel):
    schema_version: Literal[1]
    name: str = "cluster"
    pools: list[Pool] = Field(min_length=1)
    budget_usd_per_hour: PositiveFloat | None = None

    @model_validator(mode="after")
    def _unique_pools(self) -> ClusterSpec:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError("two pools share a name")
        return self
