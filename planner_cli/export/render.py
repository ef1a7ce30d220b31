"""All exports of a plan: a pure function from the plan (and its trace) to {path: text}."""

from __future__ import annotations

import json

from planner_cli import __version__
from planner_cli.export import bench, engines, k8s, router
from planner_cli.export.placement import Replica
from planner_cli.workload.trace import Trace

FORMATS = ("vllm", "sglang", "k8s", "router", "bench")


def render(plan, replicas: list[Replica], formats: list[str], trace: Trace | None = None,
           warnings: list[str] | None = None, score_scale: str | None = None
           ) -> dict[str, str]:
    files: dict[str, str] = {}
    cfg = router.router_config(plan, replicas, score_scale)
    for fmt in formats:
        if fmt in ("vllm", "sglang"):
            files |= engines.render_engine(fmt, replicas)
        elif fmt == "k8s":
            files |= k8s.render_k8s(replicas, cfg, __version__)
        elif fmt == "router":
            files["router/cascade.yaml"] = router.cascade_yaml(cfg)
            files["router/litellm-config.yaml"] = router.litellm_config(cfg)
            files["router/semantic-router.yaml"] = router.semantic_router_config(cfg)
            if warnings is not None:
                warnings.append("router/semantic-router.yaml: " + router.SEMANTIC_ROUTER_WARNING
                                + ", and it escalates on the model's token confidence, not "
                                  "the plan's judge")
        elif fmt == "bench":
            if trace is None:
                raise ValueError("bench needs the trace")
            files["bench/trace.mooncake.jsonl"] = "".join(bench.mooncake_lines(trace))
            files["bench/replay.sh"] = bench.commands(cfg, plan.cascade.slo, len(trace))
            files["bench/predicted.json"] = bench.predictions(plan.predicted)
    files["plan-summary.json"] = json.dumps(
        {"plan": plan.name, "formats": formats,
         "replicas": [{"name": r.name, "hosts": [n.host for n in r.nodes],
                       "gpus": [list(n.gpus) for n in r.nodes], "port": r.port}
                      for r in replicas]}, indent=2) + "\n"
    return dict(sorted(files.items()))
