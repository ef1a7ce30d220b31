"""Kubernetes manifests (vLLM): a Deployment and a Service per tier whose replicas fit one node,
a LeaderWorkerSet (and Service) per tier whose replicas span nodes. Commands are argument lists
(no shell), and every `$` of a value is doubled so Kubernetes does not expand `$(VAR)` in it;
only the LWS variables the manifests themselves reference are expanded. Each pod selects its
pool's nodes (the cluster file's `node_selector`, else the label `cascadia-plan/pool=<pool>`)
and asks for its vendor's GPUs (`nvidia.com/gpu` with vLLM's CUDA image, `amd.com/gpu` with its
ROCm image)."""

from __future__ import annotations

import re

import yaml

from planner_cli.errors import InputError
from planner_cli.export.engines import environment, replica_config
from planner_cli.export.flags import DIST_PORT, ENGINES
from planner_cli.export.placement import Replica
from planner_cli.export.router import CLIENT_KEY_ENV, ROUTER_PORT, RouterConfig
from planner_cli.specs.cluster import is_label_value

VERSION = ENGINES["vllm"]["version"]
IMAGES = {"nvidia": f"vllm/vllm-openai:v{VERSION}", "amd": f"vllm/vllm-openai-rocm:v{VERSION}"}
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
POOL_LABEL = "cascadia-plan/pool"
PORT = 8000
SHM = "16Gi"


def dns(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].rstrip("-")


def service_name(tier: str, model: str) -> str:
    """A tier's objects (and its manifest file) are named after it and its model."""
    return dns(f"{tier}-{model}")


def inert(value: str) -> str:
    """A value Kubernetes passes through unchanged: `$$` is its escape for a literal `$`, so
    `$(VAR)` in a user's string is not expanded."""
    return value.replace("$", "$$")


def _args(r: Replica) -> list[str]:
    args = ["serve", inert(r.hf_id)]
    for key, value in replica_config("vllm", r).items():
        if key == "port":
            value = PORT  # one pod per replica: every pod listens on the same port
        args += [f"--{key}", inert(str(value))]
    return args


def node_selector(r: Replica) -> dict[str, str]:
    if r.node_selector is not None:
        return dict(r.node_selector)
    if not is_label_value(r.pool):
        raise InputError(f"pool {r.pool!r} is not a Kubernetes label value, so it cannot be "
                         f"the default node selector {POOL_LABEL}=<pool>",
                         "set node_selector on the pool in the cluster file")
    return {POOL_LABEL: r.pool}


def _container(r: Replica, args: list[str], gpus: int, leader: bool) -> dict:
    c = {"name": "vllm", "image": IMAGES[r.vendor], "command": ["vllm"], "args": args,
         "resources": {"limits": {GPU_RESOURCE[r.vendor]: gpus}},
         "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
    env = environment("vllm", r)
    if env:
        c["env"] = [{"name": name, "value": value} for name, value in env.items()]
    if leader:
        c["ports"] = [{"containerPort": PORT, "name": "http"}]
        probe = {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 10}
        c["readinessProbe"] = probe | {"initialDelaySeconds": 60}
        c["livenessProbe"] = probe | {"initialDelaySeconds": 600, "failureThreshold": 6}
    return c


def _pod(r: Replica, labels: dict, containers: list[dict]) -> dict:
    return {"metadata": {"labels": labels},
            "spec": {"nodeSelector": node_selector(r),
                     # GPU nodes are often tainted with their resource name
                     "tolerations": [{"key": GPU_RESOURCE[r.vendor], "operator": "Exists",
                                      "effect": "NoSchedule"}],
                     "containers": containers,
                     "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory",
                                                                "sizeLimit": SHM}}]}}


class _Dumper(yaml.SafeDumper):
    """No &anchors: every manifest spells out its labels; text of several lines (a ConfigMap's
    file) as a literal block."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


def _documents(docs: list[dict]) -> str:
    """Manifests as one YAML stream, in order."""
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False) for d in docs)


def tier_manifests(replicas: list[Replica]) -> str:
    """All replicas of one tier (same shape) as YAML documents."""
    r = replicas[0]
    name = service_name(r.tier, r.model)
    labels = {"app.kubernetes.io/name": name, "cascadia/tier": r.tier}
    docs = []
    per_node = len(r.nodes[0].gpus)
    if not r.multi_node:
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": name, "labels": labels},
                     "spec": {"replicas": len(replicas), "selector": {"matchLabels": labels},
                              "template": _pod(r, labels, [_container(r, _args(r),
                                                                      r.tp * r.pp, True)])}})
        selector = labels
    else:
        base = _args(r) + ["--nnodes", "$(LWS_GROUP_SIZE)", "--node-rank",
                           "$(LWS_WORKER_INDEX)", "--master-addr", "$(LWS_LEADER_ADDRESS)",
                           "--master-port", str(DIST_PORT)]
        docs.append({
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": len(replicas),
                     "leaderWorkerTemplate": {
                         "size": len(r.nodes),
                         "leaderTemplate": _pod(r, labels, [_container(r, base, per_node,
                                                                       True)]),
                         "workerTemplate": _pod(r, labels, [_container(
                             r, base + ["--headless"], per_node, False)])}}})
        selector = labels | {"leaderworkerset.sigs.k8s.io/worker-index": "0"}
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": name, "labels": labels},
                 "spec": {"selector": selector,
                          "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}})
    return _documents(docs)


ROUTER_NAME = "cascadia-router"
ROUTER_CONFIG = "/etc/cascadia/cascade.yaml"


def service_url(tier: str, model: str) -> str:
    """A tier's Service inside the cluster (it balances the tier's replicas)."""
    return f"http://{service_name(tier, model)}:{PORT}/v1"


def in_cluster(cfg: RouterConfig, replicas: list[Replica]) -> RouterConfig:
    """The router config with each tier (and a served judge) reached through its Service."""
    tiers = [t.model_copy(update={"endpoints": [service_url(t.name, t.model)]})
             for t in cfg.tiers]
    judger = cfg.judger
    judge = next((r for r in replicas if r.stage < 0), None)
    if judger.served and judge is not None:
        judger = judger.model_copy(update={"endpoints": [service_url(judge.tier,
                                                                      judge.model)]})
    return cfg.model_copy(update={"tiers": tiers, "judger": judger})


def router_manifests(cfg: RouterConfig, image: str) -> str:
    """A ConfigMap with the router's cascade.yaml, a Deployment running `cascadia-plan route`
    on it and a Service in front. Ready when /health says every tier is reachable."""
    labels = {"app.kubernetes.io/name": ROUTER_NAME, "cascadia/tier": "router"}
    config_text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    probe = {"httpGet": {"path": "/health", "port": ROUTER_PORT}, "periodSeconds": 10}
    container = {
        "name": "router", "image": image, "command": ["cascadia-plan"],
        "args": ["route", "--config", ROUTER_CONFIG, "--host", "0.0.0.0", "--port",
                 str(ROUTER_PORT)],
        "ports": [{"containerPort": ROUTER_PORT, "name": "http"}],
        # the clients' key and the engines' (one variable unless the config names another)
        "env": [{"name": name, "valueFrom": {"secretKeyRef": {
            "name": "cascadia-api-key", "key": "key", "optional": True}}}
            for name in dict.fromkeys((cfg.api_key_env, CLIENT_KEY_ENV))],
        "readinessProbe": probe,
        "livenessProbe": {"tcpSocket": {"port": ROUTER_PORT}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/cascadia", "readOnly": True}],
    }
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"{ROUTER_NAME}-config", "labels": labels},
         "data": {"cascade.yaml": config_text}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": ROUTER_NAME, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [container],
                                        "volumes": [{"name": "config", "configMap": {
                                            "name": f"{ROUTER_NAME}-config"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": ROUTER_NAME, "labels": labels},
         "spec": {"selector": labels,
                  "ports": [{"name": "http", "port": ROUTER_PORT,
                             "targetPort": ROUTER_PORT}]}},
    ]
    return _documents(docs)


def router_dockerfile(version: str) -> str:
    return (f"# The router's image: build it beside the project's wheel, e.g.\n"
            f"#   pip wheel --no-deps -w k8s/ /path/to/cascadia-plan && docker build -t "
            f"cascadia-plan-router:{version} -f k8s/router.Dockerfile k8s/\n"
            "FROM python:3.11-slim\n"
            f"COPY cascadia_plan-{version}-py3-none-any.whl /tmp/\n"
            f"RUN pip install --no-cache-dir '/tmp/cascadia_plan-{version}-py3-none-any.whl"
            "[router]' && rm /tmp/*.whl\n"
            "USER 65534\n"
            f"EXPOSE {ROUTER_PORT}\n")


def render_k8s(replicas: list[Replica], cfg: RouterConfig, version: str) -> dict[str, str]:
    """Every tier's manifests, and the router's in front of them (`version`: this package's,
    the router image's tag)."""
    files = {}
    tiers: dict[str, list[Replica]] = {}
    for r in replicas:
        tiers.setdefault(r.tier, []).append(r)
    for tier, reps in tiers.items():
        r = reps[0]
        selector = ", ".join(f"{k}={v}" for k, v in node_selector(r).items())
        files[f"k8s/{service_name(tier, r.model)}.yaml"] = (
            f"# {tier}: {len(reps)} replica(s) of {r.model} (cascadia-plan export; "
            f"{IMAGES[r.vendor]})\n"
            f"# pool {r.pool}: its nodes must carry the label(s) {selector}"
            + (f" (kubectl label node NODE {selector})" if r.node_selector is None else "")
            + "\n" + tier_manifests(reps))
    routed = in_cluster(cfg, replicas)
    image = f"cascadia-plan-router:{version}"
    note = ("# the judge is external: fill in judger.endpoints and judger.model in the "
            "ConfigMap below\n" if routed.judger.unfilled else "")
    files["k8s/router.yaml"] = (
        f"# The cascade router (cascadia-plan route) in front of the tiers' Services; "
        f"image {image} from router.Dockerfile.\n# Clients: http://{ROUTER_NAME}:"
        f"{ROUTER_PORT}/v1 with model {cfg.name!r}; an API key from the Secret "
        "cascadia-api-key (key: key), if it exists.\n" + note
        + router_manifests(routed, image))
    files["k8s/router.Dockerfile"] = router_dockerfile(version)
    return files
