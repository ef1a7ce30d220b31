"""Cluster files: pools of identical nodes; several pools make a heterogeneous cluster."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveFloat, PositiveInt, model_validator

from planner_cli.specs._yaml import PlainText, StrictModel

# Kubernetes label syntax: a name of at most 63 characters (alphanumeric at both ends; -, _
# and . inside), optionally after a DNS-subdomain prefix (at most 253 characters) and a slash.
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def is_label_value(value: str) -> bool:
    return value == "" or _LABEL_NAME.fullmatch(value) is not None


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if (_LABEL_NAME.fullmatch(name) is None
            or (prefix and (len(prefix) > 253 or _DNS_SUBDOMAIN.fullmatch(prefix) is None))):
        raise ValueError(f"{key!r} is not a Kubernetes label key (an optional DNS prefix and /, "
                         "then at most 63 letters, digits, -, _ or ., alphanumeric at both ends)")
    return key


def _label_value(value: str) -> str:
    if not is_label_value(value):
        raise ValueError(f"{value!r} is not a Kubernetes label value (at most 63 letters, "
                         "digits, -, _ or ., alphanumeric at both ends)")
    return value


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


class Pool(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    gpu: str  # a GPU name from hardware/ (or an alias)
    nodes: PositiveInt
    gpus_per_node: PositiveInt | None = None  # default: the GPU type's usual node size
    price_usd_per_gpu_hour: PositiveFloat | None = None  # default: the GPU card's, if any
    # Kubernetes node labels that pick this pool's nodes (k8s export); default:
    # {cascadia-plan/pool: <pool name>}, a label the cluster's admin puts on those nodes
    node_selector: dict[LabelKey, LabelValue] | None = Field(default=None, min_length=1)


class ClusterSpec(StrictModel):
    schema_version: Literal[1]
    name: PlainText = "cluster"
    pools: list[Pool] = Field(min_length=1)
    budget_usd_per_hour: PositiveFloat | None = None

    @model_validator(mode="after")
    def _unique_pools(self) -> ClusterSpec:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError("two pools share a name")
        return self
