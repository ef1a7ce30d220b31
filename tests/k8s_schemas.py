"""Kubernetes manifests checked against the official schemas, as the API server would check them
with strict field validation (`kubectl apply --validate=strict`, the default since 1.27).

Built-in kinds (Deployment, Service) go through `kubernetes-validate` (the OpenAPI schemas of
Kubernetes itself, strict variant: unknown fields are errors). A LeaderWorkerSet is checked
against the LWS v1 CRD's `openAPIV3Schema` (kubernetes-sigs/lws, Apache-2.0,
config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml at commit 83ba21e9): its
structure is restated below field by field, and its two pod templates, which the CRD generates
from core/v1 PodSpec, use the same Kubernetes PodSpec definition as the built-in kinds.

The API server also checks names and label syntax, which the schemas leave as plain strings;
`names_are_valid` checks those.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

K8S_VERSION = "1.37.0"
_DEFS = "/api/_definitions.json#/$defs/"
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# the CRD's pod template: a subset of ObjectMeta, and core/v1 PodSpec
_TEMPLATE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "metadata": {"type": "object", "additionalProperties": False, "properties": {
            "annotations": _STRINGS, "finalizers": {"type": "array", "items": {"type": "string"}},
            "labels": _STRINGS, "name": {"type": "string"}, "namespace": {"type": "string"}}},
        "spec": {"$ref": _DEFS + "io.k8s.api.core.v1.PodSpec"},
    },
}
LWS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kubernetes.io/api/leaderworkerset/leaderworkerset/v1",
    "type": "object", "additionalProperties": False, "required": ["spec"],
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"$ref": _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["leaderWorkerTemplate"],
            "properties": {
                "leaderWorkerTemplate": {
                    "type": "object", "additionalProperties": False,
                    "required": ["workerTemplate"],
                    "properties": {
                        "leaderTemplate": _TEMPLATE,
                        "persistentVolumeClaimRetentionPolicy": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"whenDeleted": {"type": "string"},
                                           "whenScaled": {"type": "string"}}},
                        "restartPolicy": {"enum": ["Default", "RecreateGroupOnPodRestart",
                                                   "None"]},
                        "size": _INT32,
                        "subGroupPolicy": {
                            "type": "object", "additionalProperties": False,
                            "properties": {
                                "subGroupPolicyType": {"enum": ["LeaderWorker",
                                                                "LeaderExcluded"]},
                                "subGroupSize": _INT32}},
                        "volumeClaimTemplates": {
                            "type": "array",
                            "items": {"$ref": _DEFS + "io.k8s.api.core.v1.PersistentVolumeClaim"}},
                        "workerTemplate": _TEMPLATE,
                    },
                },
                "networkConfig": {
                    "type": "object", "additionalProperties": False,
                    "required": ["subdomainPolicy"],
                    "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}}},
                "replicas": _INT32,
                "rolloutStrategy": {
                    "type": "object", "additionalProperties": False, "required": ["type"],
                    "properties": {
                        "rollingUpdateConfiguration": {
                            "type": "object", "additionalProperties": False,
                            "properties": {
                                "maxSurge": {"type": ["integer", "string"]},
                                "maxUnavailable": {"type": ["integer", "string"]},
                                "partition": _INT32}},
                        "type": {"enum": ["RollingUpdate"]}}},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
            },
        },
        "status": {"type": "object"},
    },
}


@cache
def _definitions() -> Resource:
    root = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    text = (root / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text()
    return Resource.from_contents(json.loads(text))


@cache
def _validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's strict schema of a kind, as its own validate() builds it (its
    file naming: `<kind>-<group>-<version>.json`), compiled once per kind."""
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                        _definitions())
    if kind == "LeaderWorkerSet":
        return jsonschema.Draft202012Validator(LWS_SCHEMA, registry=registry)
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    root = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    text = (root / f"v{K8S_VERSION}-local-strict" / f"{kind.lower()}-{group}.json").read_text()
    schema = json.loads(text)
    return jsonschema.Draft202012Validator(schema, registry=registry.with_resource(
        schema["$id"], Resource.from_contents(schema)))


def validate(doc: dict) -> None:
    """Raise jsonschema.ValidationError unless `doc` passes the strict schema of its kind."""
    _validator(doc["kind"], doc["apiVersion"]).validate(doc)


_DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _label_maps(node: object) -> list[dict]:
    """Every labels / matchLabels / selector / nodeSelector map in a manifest."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("labels", "matchLabels", "nodeSelector") and isinstance(value, dict):
                found.append(value)
            elif key == "selector" and isinstance(value, dict) and all(
                    isinstance(v, str) for v in value.values()):
                found.append(value)  # a Service's selector is a plain label map
            found += _label_maps(value)
    elif isinstance(node, list):
        for item in node:
            found += _label_maps(item)
    return found


def names_are_valid(doc: dict) -> list[str]:
    """What the API server's name and label checks would refuse (empty when none)."""
    bad = []
    name = doc["metadata"]["name"]
    if not _DNS1035.fullmatch(name):  # Services need DNS-1035; the others accept it
        bad.append(f"metadata.name {name!r}")
    for labels in _label_maps(doc):
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(str(value)):
                bad.append(f"label {key}={value}")
    return bad
