"""Deployment files checked by the tools that run them (issue 12, point 4): Kubernetes manifests
against the official strict schemas (and the LWS CRD's), `$` kept literal under Kubernetes
variable expansion, a node selector and the vendor's image and GPU resource per pool, engine
arguments and names validated, the LiteLLM config loaded by LiteLLM's own Router."""

from __future__ import annotations

import copy
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from planner_cli.export.router import RouterConfig
from planner_cli.specs.cascade import CascadeModel, CascadeSpec
from planner_cli.specs.cluster import Pool
from planner_cli.specs.model import ModelCard
from tests.conftest import FIXTURES, ROOT
from tests.k8s_schemas import K8S_VERSION, names_are_valid, validate
from tests.util import assert_one_line_error, plan_with_served_judge

PLANS = FIXTURES / "plans"


def export(cli, plan: Path, out: Path, fmt: str):
    result = cli("export", "--plan", plan, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    return result


def manifests(out: Path) -> list[dict]:
    return [doc for path in sorted((out / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())]


def pods(doc: dict) -> list[dict]:
    """The engine pods a manifest makes (not the router's)."""
    if doc["metadata"]["labels"].get("cascadia/tier") == "router":
        return []
    spec = doc.get("spec", {})
    if doc["kind"] == "Deployment":
        return [spec["template"]]
    if doc["kind"] == "LeaderWorkerSet":
        lws = spec["leaderWorkerTemplate"]
        return [lws["leaderTemplate"], lws["workerTemplate"]]
    return []


def refused(cli, tmp_path: Path, plan: dict, fmt: str, needle: str):
    """Export `plan`: it must fail with one error line holding `needle` and write nothing."""
    result = cli("export", "--plan", write_plan(tmp_path, plan), "--format", fmt,
                 "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_one_line_error(result, needle)
    assert not (tmp_path / "out").exists()
    return result


def write_plan(tmp_path: Path, plan: dict) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    shutil.copy(PLANS / "trace-20.jsonl", tmp_path / "trace-20.jsonl")
    return path


def two_vendor_plan() -> dict:
    """The hand-written plan with its second tier on an AMD MI300X pool that names its nodes."""
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cluster"]["pools"] = [
        {"name": "h100", "gpu": "h100-sxm", "nodes": 1, "gpus_per_node": 8},
        {"name": "mi300x", "gpu": "mi300x", "nodes": 3, "gpus_per_node": 8,
         "node_selector": {"amd.com/gpu.product-name": "AMD_Instinct_MI300X",
                           "topology.kubernetes.io/zone": "zone-b"}},
    ]
    plan["stages"][1]["pool"] = "mi300x"
    return plan


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize("case", ["single-node", "multi-node"])
def test_k8s_manifests_pass_the_official_strict_schemas(cli, tmp_path, case):
    out = tmp_path / "out"
    export(cli, PLANS / f"{case}.yaml", out, "k8s")
    docs = manifests(out)
    kinds = {d["kind"] for d in docs}
    assert kinds == ({"Deployment", "Service", "ConfigMap"} if case == "single-node"
                     else {"Deployment", "Service", "ConfigMap", "LeaderWorkerSet"})
    for doc in docs:
        validate(doc)
        assert names_are_valid(doc) == [], doc["metadata"]["name"]


@pytest.mark.slow
def test_the_schema_check_is_kubernetes_validates_own(cli, tmp_path):
    """The compiled check (tests/k8s_schemas.py) passes and fails where the package's own
    validate() does."""
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out, "k8s")
    for doc in manifests(out):
        if doc["kind"] == "LeaderWorkerSet":
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        broken = copy.deepcopy(doc)
        broken["metadata"]["labelz"] = {}
        with pytest.raises(jsonschema.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_two_vendor_manifests_pass_the_schemas(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, write_plan(tmp_path, two_vendor_plan()), out, "k8s")
    for doc in manifests(out):
        validate(doc)
        assert names_are_valid(doc) == []


def test_the_schema_check_refuses_what_the_server_refuses(cli, tmp_path):
    """The check is strict: a misspelt field anywhere, a wrong type, a bad LWS field fail."""
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out, "k8s")
    docs = manifests(out)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    breakages = [
        (deployment, lambda d: d["spec"]["template"]["spec"]["containers"][0]
         .__setitem__("imagee", "x")),
        (deployment, lambda d: d["spec"].__setitem__("replicas", "three")),
        (deployment, lambda d: d["spec"]["template"]["spec"].__setitem__("nodeSelector",
                                                                         {"a": 1})),
        (lws, lambda d: d["spec"]["leaderWorkerTemplate"].__setitem__("sizee", 2)),
        (lws, lambda d: d["spec"].__setitem__("startupPolicy", "Whenever")),
        (lws, lambda d: d["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
         ["containers"][0]["resources"].__setitem__("limitz", {})),
        (lws, lambda d: d["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]
         .__setitem__("uid", "x")),
    ]
    for doc, breakage in breakages:
        broken = copy.deepcopy(doc)
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_the_router_runs_in_the_cluster_in_front_of_the_services(cli, tmp_path):
    """k8s/router.yaml: the router's config reaches every tier (and a served judge) through
    its Service, and its Deployment runs `cascadia-plan route` on that config."""
    out = tmp_path / "out"
    export(cli, write_plan(tmp_path, plan_with_served_judge()), out, "k8s")
    docs = manifests(out)
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    cfg = RouterConfig.model_validate(yaml.safe_load(config_map["data"]["cascade.yaml"]))
    urls = [t.endpoints for t in cfg.tiers] + [cfg.judger.endpoints]
    assert [len(u) for u in urls] == [1, 1, 1]
    for (url,) in urls:
        host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
        assert host in services and port == "8000"
    router = next(d for d in docs if d["kind"] == "Deployment"
                  and d["metadata"]["name"] == "cascadia-router")
    (c,) = router["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["cascadia-plan"] and c["args"][:3] == ["route", "--config",
                                                                   "/etc/cascadia/cascade.yaml"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "cascadia-router" in services
    dockerfile = (out / "k8s" / "router.Dockerfile").read_text()
    assert "[router]" in dockerfile and "cascadia_plan-0.1.0-py3-none-any.whl" in dockerfile
    for doc in docs:
        validate(doc)


# ------------------------------------------------------------------ pools and vendors


def test_each_tier_lands_on_its_pool_with_its_vendor(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, write_plan(tmp_path, two_vendor_plan()), out, "k8s")
    by_tier = {d["metadata"]["labels"]["cascadia/tier"]: d for d in manifests(out)
               if d["kind"] == "Deployment"}
    nvidia = by_tier["tier1"]["spec"]["template"]["spec"]
    amd = by_tier["tier2"]["spec"]["template"]["spec"]
    assert nvidia["nodeSelector"] == {"cascadia-plan/pool": "h100"}
    assert amd["nodeSelector"] == {"amd.com/gpu.product-name": "AMD_Instinct_MI300X",
                                   "topology.kubernetes.io/zone": "zone-b"}
    (c1,), (c2,) = nvidia["containers"], amd["containers"]
    assert c1["image"] == "vllm/vllm-openai:v0.33.0"
    assert c1["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert c2["image"] == "vllm/vllm-openai-rocm:v0.33.0"
    assert c2["resources"]["limits"] == {"amd.com/gpu": 2}
    assert amd["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    header = (out / "k8s" / "tier1-mistral-7b-instruct-v0-1.yaml").read_text()
    assert "kubectl label node NODE cascadia-plan/pool=h100" in header


def test_multi_node_pods_select_their_pool(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out, "k8s")
    lws = next(d for d in manifests(out) if d["kind"] == "LeaderWorkerSet")
    for pod in pods(lws):
        assert pod["spec"]["nodeSelector"] == {"cascadia-plan/pool": "h100"}


def test_a_pool_name_that_is_no_label_value_asks_for_a_selector(cli, tmp_path):
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cluster"]["pools"][0]["name"] = "h100_"
    for stage in plan["stages"]:
        stage["pool"] = "h100_"
    refused(cli, tmp_path, plan, "k8s", "node_selector")


@pytest.mark.parametrize("selector,needle", [
    ({"Bad_Prefix/gpu": "h100"}, "label key"),
    ({"gpu": "-h100"}, "label value"),
    ({"gpu": "x" * 64}, "label value"),
    ({}, "node_selector"),
])
def test_bad_node_selectors_are_refused(cli, tmp_path, selector, needle):
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cluster"]["pools"][0]["node_selector"] = selector
    refused(cli, tmp_path, plan, "k8s", needle)


# ------------------------------------------------------------------ $ and names


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of container args and env values: `$$` is a literal `$`,
    `$(NAME)` the variable's value when it is defined (else left as written)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2:end]
                    out.append(env.get(name, value[i:end + 1]))
                    i = end + 1
                    continue
        out.append(value[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize("case", ["single-node", "multi-node"])
def test_dollars_in_user_strings_survive_kubernetes_expansion(cli, tmp_path, case):
    weights = "org/$(HOME)-$$x-$(LWS_LEADER_ADDRESS)-$"
    plan = yaml.safe_load((PLANS / f"{case}.yaml").read_text())
    for model in plan["cascade"]["models"]:
        model["weights"] = weights
    out = tmp_path / "out"
    export(cli, write_plan(tmp_path, plan), out, "k8s")
    env = {"HOME": "/root", "LWS_LEADER_ADDRESS": "leader.svc", "LWS_GROUP_SIZE": "2",
           "LWS_WORKER_INDEX": "1"}
    seen = 0
    for doc in manifests(out):
        for pod in pods(doc):
            args = pod["spec"]["containers"][0]["args"]
            assert expand(args[1], env) == weights
            seen += 1
            if doc["kind"] == "LeaderWorkerSet":  # the manifest's own references expand
                expanded = [expand(a, env) for a in args]
                assert expanded[expanded.index("--master-addr") + 1] == "leader.svc"
                assert expanded[expanded.index("--nnodes") + 1] == "2"
    assert seen >= 2


@pytest.mark.parametrize("weights,needle", [
    ("--trust-remote-code", "starts with '-'"),
    ("-rf", "starts with '-'"),
    ("org/model\n--evil", "U+000A"),
    ("org/mo\x1b[31mdel", "U+001B"),
    ("org/\u202eledom", "U+202E"),
    ("   ", "empty"),
])
def test_engine_arguments_are_validated(cli, tmp_path, weights, needle):
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cascade"]["models"][0]["weights"] = weights
    result = refused(cli, tmp_path, plan, "vllm", needle)
    assert "cascade.models[0].weights" in result.stderr


def test_names_and_ids_refuse_control_characters_and_leading_dashes():
    with pytest.raises(ValidationError, match="starts with '-'"):
        CascadeModel(model="x", weights="-x")
    assert CascadeModel(model="x", weights="./-x").weights == "./-x"
    assert CascadeModel(model="x", weights="/models/my model").weights == "/models/my model"
    with pytest.raises(ValidationError, match=r"U\+0007"):
        CascadeSpec(schema_version=1, name="bell\x07", models=[{"model": "x"}],
                    judger={"kind": "external", "latency_s": 0})
    card = yaml.safe_load((ROOT / "model_cards" / "llama-3.1-8b.yaml").read_text())
    ModelCard.model_validate(card)
    with pytest.raises(ValidationError, match="starts with '-'"):
        ModelCard.model_validate(card | {"hf_id": "--help"})
    for served in ("-x", "x\ny", "x y", "X"):  # the card name is the served model name
        with pytest.raises(ValidationError, match="name"):
            ModelCard.model_validate(card | {"name": served})
    assert Pool(name="a", gpu="h100", nodes=1, node_selector={"a.b/c": ""}).node_selector


# ------------------------------------------------------------------ LiteLLM


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A chat-completions endpoint that records what it was sent."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "model": body.get("model")})
        reply = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "fine"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_litellm_config_loads_in_litellms_router(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    monkeypatch.setenv("CASCADIA_API_KEY", "sekret")
    litellm = pytest.importorskip("litellm")
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out, "router")
    config = yaml.safe_load((out / "router" / "litellm-config.yaml").read_text())
    cascade = yaml.safe_load((out / "router" / "cascade.yaml").read_text())
    router = litellm.Router(model_list=config["model_list"], **config["router_settings"])
    for tier in cascade["tiers"]:
        deployments = router.registry().deployments(tier["name"])
        assert sorted(d["litellm_params"]["api_base"] for d in deployments) == sorted(
            tier["endpoints"])
        for d in deployments:
            params = d["litellm_params"]
            assert params["api_key"] == "sekret"  # os.environ/ resolved by LiteLLM
            assert litellm.get_llm_provider(params["model"])[1] == "hosted_vllm"
    # and a request through it reaches the tier's engine, asking for the served name
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = [dict(m, litellm_params=dict(
            m["litellm_params"], api_base=f"http://127.0.0.1:{server.server_port}/v1"))
            for m in config["model_list"]]
        router = litellm.Router(model_list=local, **config["router_settings"])
        reply = router.completion(model="tier2", messages=[{"role": "user", "content": "hi"}])
    finally:
        server.shutdown()
    assert reply.choices[0].message.content == "fine"
    assert _FakeOpenAI.seen[-1] == {"path": "/v1/chat/completions", "auth": "Bearer sekret",
                                    "model": cascade["tiers"][1]["model"]}
    with pytest.raises(ValueError, match="routing_strategy"):
        litellm.Router(model_list=config["model_list"], routing_strategy="leastbusy")
