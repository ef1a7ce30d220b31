"""Router configs: the plan's own cascade.yaml (schema: `cascadia-plan schema cascade`; what
`cascadia-plan route` runs), its translation to the vLLM Semantic Router (v0.3 config, a
`confidence` decision), and a LiteLLM proxy config with one load-balancing group per tier. API
keys are referenced by environment variable, never written."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, PositiveFloat, PositiveInt

from planner_cli.export.placement import Replica
from planner_cli.specs._yaml import StrictModel

ROUTER_SCHEMA_VERSION = 2
CLIENT_KEY_ENV = "CASCADIA_API_KEY"  # the key the router asks its clients for, when set
ROUTER_PORT = 8080  # where `cascadia-plan route` listens unless told otherwise


def _endpoint(url: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ValueError(f"{url!r} is not an http(s) base URL such as http://host:8000/v1")
    return url


Endpoint = Annotated[str, AfterValidator(_endpoint)]
SEMANTIC_ROUTER_VERSION = "v0.3"
SEMANTIC_ROUTER_WARNING = (
    "the vLLM Semantic Router's confidence decision escalates on one threshold for every "
    "tier; the plan's per-tier thresholds collapse into one (the first tier's)")


class RouterTier(StrictModel):
    name: str
    model: str  # served model name
    hf_id: str
    endpoints: list[Endpoint] = Field(min_length=1)  # OpenAI-compatible base URLs
    threshold: Annotated[float, Field(ge=0, le=101)] | None  # None: the last tier answers


class RouterJudger(StrictModel):
    """How the router scores a tier's answer (on 0-100, the plan's threshold scale).

    `llm`: a judge model behind an OpenAI-compatible endpoint is asked to grade the answer with
    the scoring prompt (`planner_cli.router.judge.DEFAULT_PROMPT` unless `prompt` is given) and
    must reply with one number on `score_scale`, which is mapped to 0-100 as the judged sample
    was. `served: true` when the judge is the plan's own served model (its replicas are
    `endpoints`); an external judge's `endpoints` and `model` are the user's to fill in.
    `logprob`: the answer's own confidence, 100 x exp(mean token log-probability), the signal
    the vLLM Semantic Router uses; it costs no call, but it is not the judge the plan's
    thresholds were chosen with."""

    kind: Literal["llm", "logprob"]
    served: bool = False
    model: str | None = None  # llm: the judge's model name at its endpoints
    endpoints: list[Endpoint] = []  # llm: OpenAI-compatible base URLs
    score_scale: str = "0-100"  # llm: the scale of its replies (the judged sample's)
    prompt: str | None = None  # llm: the scoring prompt with {question}, {answer}, {low}, {high}
    max_tokens: PositiveInt = 8  # llm: tokens the judge may generate
    latency_s: Annotated[float, Field(ge=0)] | None = None  # the latency the plan assumed
    api_key_env: str | None = None  # the judge endpoint's key variable; default: the config's

    @property
    def unfilled(self) -> bool:
        """An LLM judge without the endpoint or model to call (an external judge as exported:
        the user fills them in)."""
        return self.kind == "llm" and not (self.endpoints and self.model)


class Escalation(StrictModel):
    """The router's fault policy: a tier call that times out or errors is retried `retries`
    times on another replica of the tier, then the request goes on to the next tier (the last
    tier's failure is the client's error, 502); a judge that fails or replies off-scale counts
    as a low score (the request escalates)."""

    policy: Literal["score-below-threshold"] = "score-below-threshold"
    timeout_s: PositiveFloat = 600.0  # one upstream call (tier or judge)
    retries: Annotated[int, Field(ge=0, le=8)] = 1


class RouterConfig(StrictModel):
    """The cascade a router runs: tiers in order, their endpoints and thresholds, the judger."""

    schema_version: Literal[ROUTER_SCHEMA_VERSION]  # type: ignore[valid-type]
    name: str
    tiers: list[RouterTier] = Field(min_length=1)
    judger: RouterJudger
    escalation: Escalation = Escalation()
    api_key_env: str = CLIENT_KEY_ENV  # the variable that holds the endpoints' API key
    max_request_bytes: Annotated[int, Field(ge=1024)] = 1 << 20  # larger bodies: 413


def endpoints(replicas: list[Replica], stage: int) -> list[str]:
    return [f"http://{r.nodes[0].host}:{r.port}/v1" for r in replicas if r.stage == stage]


def router_config(plan, replicas: list[Replica], score_scale: str | None = None
                  ) -> RouterConfig:
    """The router config of a plan placed as `replicas` (the export's placement);
    `score_scale`: the judged sample's, which the live judge answers on."""
    tiers = []
    for i, stage in enumerate(plan.stages):
        head = next(r for r in replicas if r.stage == i)
        tiers.append(RouterTier(
            name=f"tier{i + 1}", model=stage.model, hf_id=head.hf_id,
            endpoints=endpoints(replicas, i),
            threshold=plan.thresholds[i] if i < len(plan.thresholds) else None))
    j = plan.cascade.judger
    scale = score_scale or "0-100"
    if j.kind == "external":
        judger = RouterJudger(kind="llm", latency_s=j.latency_s, score_scale=scale)
    else:
        judger = RouterJudger(kind="llm", served=True, model=plan.judge.model,
                              endpoints=endpoints(replicas, -1), score_scale=scale,
                              max_tokens=j.output_tokens)
    return RouterConfig(schema_version=ROUTER_SCHEMA_VERSION, name=plan.cascade.name,
                        tiers=tiers, judger=judger)


def litellm_config(cfg: RouterConfig) -> str:
    model_list = []
    for tier in cfg.tiers:
        for url in tier.endpoints:
            model_list.append({
                "model_name": tier.name,  # one load-balancing group per tier
                "litellm_params": {"model": f"hosted_vllm/{tier.model}", "api_base": url,
                                   "api_key": f"os.environ/{cfg.api_key_env}"},
            })
    doc = {"model_list": model_list,
           "router_settings": {"routing_strategy": "least-busy"},
           "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"}}
    return ("# LiteLLM proxy config (cascadia-plan export): one load-balancing group per "
            "cascade tier;\n# the escalation between tiers (judge, thresholds) is the cascade "
            "router's: cascadia-plan route.\n"
            + yaml.safe_dump(doc, sort_keys=False))


def cascade_yaml(cfg: RouterConfig) -> str:
    note = ("# The judge is external: fill in judger.endpoints (its OpenAI-compatible base "
            "URL) and judger.model\n# before `cascadia-plan route --config` this file.\n"
            if cfg.judger.unfilled else "")
    return ("# The cascade this plan deploys (cascadia-plan export); schema: "
            "cascadia-plan schema cascade\n# Run it: cascadia-plan route --config "
            "cascade.yaml\n" + note
            + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def semantic_router_config(cfg: RouterConfig) -> str:
    """vLLM Semantic Router (config v0.3): the tiers as provider models, their replicas as
    backend_refs, one decision with the `confidence` algorithm trying them in order."""
    first = next((t.threshold for t in cfg.tiers if t.threshold is not None), None)
    models = []
    for tier in cfg.tiers:
        refs = []
        for k, url in enumerate(tier.endpoints):
            hostport = url.removeprefix("http://").removesuffix("/v1")
            refs.append({"name": f"{tier.name}-r{k}", "provider": "vllm", "endpoint": hostport,
                         "protocol": "http", "weight": 100})
        models.append({"name": tier.model, "backend_refs": refs})
    confidence = {"confidence_method": "hybrid", "on_error": "skip"}
    if first is not None:
        confidence["threshold"] = round(min(first, 100.0) / 100.0, 6)
    doc = {
        "version": SEMANTIC_ROUTER_VERSION,
        "listeners": [{"name": "http-8899", "address": "0.0.0.0", "port": 8899,
                       "timeout": "300s"}],
        "providers": {"defaults": {"model": cfg.tiers[0].model}, "models": models},
        "routing": {
            "modelCards": [{"name": t.model} for t in cfg.tiers],
            "decisions": [{
                "name": "cascade",
                "description": f"cascade {cfg.name}: smallest model first, escalate when not "
                               "confident (cascadia-plan export)",
                "priority": 100,
                "rules": {"operator": "AND", "conditions": []},
                "modelRefs": [{"model": t.model, "use_reasoning": False} for t in cfg.tiers],
                "algorithm": {"type": "confidence", "confidence": confidence},
            }],
        },
    }
    notes = ["# vLLM Semantic Router config (v0.3), exported by cascadia-plan.",
             "# WARNING: the router escalates on the model's own token confidence (hybrid of",
             "# logprob and margin, 0-1), not on the plan's judge; the threshold is the first",
             "# tier's judge threshold / 100."]
    notes.append(f"# WARNING: {SEMANTIC_ROUTER_WARNING}.")
    return "\n".join(notes) + "\n" + yaml.safe_dump(doc, sort_keys=False)
