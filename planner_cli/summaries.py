"""Plain-data summaries of the catalog and of a resolved problem (for tables and --json)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner_cli.problem import Problem
from planner_cli.specs.catalog import Catalog
from planner_cli.specs.model import ModelCard, kv_bytes_per_token, param_counts, weight_bytes
from planner_cli.workload.confidence import QualityBound
from planner_cli.workload.routing import Routing
from planner_cli.workload.stats import TraceStats


def gpu_rows(catalog: Catalog) -> list[dict]:
    rows = []
    for name in catalog.gpus.names():
        g = catalog.gpus.items[name]
        rows.append({
            "name": g.name, "display_name": g.display_name, "vendor": g.vendor,
            "memory_gib": round(g.memory_gib, 2), "memory_bytes": g.memory_bytes,
            "hbm_bandwidth_gbps": g.hbm_bandwidth_gbps, "bf16_dense_tflops": g.bf16_dense_tflops,
            "fp8_dense_tflops": g.fp8_dense_tflops, "int8_dense_tops": g.int8_dense_tops,
            "gpus_per_node": g.gpus_per_node, "intra_node_link": g.intra_node_link,
            "intra_node_bandwidth_gbps": g.intra_node_bandwidth_gbps,
            "inter_node_bandwidth_gbps": g.inter_node_bandwidth_gbps,
            "price_usd_per_gpu_hour": g.price_usd_per_gpu_hour, "source": g.source,
        })
    return rows


def model_rows(catalog: Catalog) -> list[dict]:
    rows = []
    for name in catalog.models.names():
        card = catalog.models.items[name]
        counts = param_counts(card)
        rows.append({
            "name": card.name, "hf_id": card.hf_id, "architecture": card.architecture,
            "layers": card.num_hidden_layers, "hidden_size": card.hidden_size,
            "moe": (f"{card.moe.num_experts}x top-{card.moe.num_experts_per_tok}"
                    if card.moe else None),
            "attention": "MLA" if card.mla else (
                "MHA" if card.num_key_value_heads == card.num_attention_heads
                else f"GQA {card.num_attention_heads}/{card.num_key_value_heads}"),
            "total_params_b": round(counts.total / 1e9, 3),
            "active_params_b": round(counts.active / 1e9, 3),
            "weight_gb": {p: round(weight_bytes(card, p) / 1e9, 2)
                          for p in ("bf16", "fp8", "int4-awq")},
            "kv_bytes_per_token_bf16": kv_bytes_per_token(card),
            "max_position_embeddings": card.max_position_embeddings,
            "source": card.source,
        })
    return rows


@dataclass(frozen=True)
class CheckReport:
    problem: Problem
    routing: list[Routing]
    trace: TraceStats  # of problem.trace, computed once

    def to_dict(self) -> dict:
        p = self.problem
        return {"cluster": [pool.to_dict() for pool in p.pools],
                "models": [model_row(m.card, m.precision) for m in p.models],
                "trace": self.trace.to_dict(),
                "judged": {"prompts": len(p.sample), "dropped": p.dropped,
                           "models": judged_rows(p), "has_quality": p.sample.has_quality},
                "z1_all_largest": p.z1, "z2_all_smallest": p.z2,
                "best_quality": p.best.quality,
                "quality_confidence": None if p.bound is None else p.bound.confidence,
                "best_promised_quality": None if p.promise is None else p.promise.quality,
                "best_quality_thresholds": [None if math.isinf(t) else t
                                            for t in p.best.thresholds],
                "quality_target": p.quality_target,
                "routing": [routing_row(r, p.quality_target, p.bound) for r in self.routing]}


def model_row(card: ModelCard, precision: str) -> dict:
    counts = param_counts(card)
    return {"model": card.name, "precision": precision,
            "total_params_b": round(counts.total / 1e9, 3),
            "active_params_b": round(counts.active / 1e9, 3),
            "weight_gb": round(weight_bytes(card, precision) / 1e9, 2),
            "kv_bytes_per_token": kv_bytes_per_token(card)}


def judged_rows(p: Problem) -> list[dict]:
    return [{"model": m.name, "judged_as": col,
             "mean_score": round(float(p.sample.scores[:, j].mean()), 4),
             "mean_quality": round(float(p.sample.quality[:, j].mean()), 4)}
            for j, (m, col) in enumerate(zip(p.models, p.sample.models, strict=True))]


def routing_row(r: Routing, target: float | None, bound: QualityBound | None = None) -> dict:
    """One threshold vector's routing; with a bound, Q's bootstrap interval and the lower
    bound the target is held to ("meets_target" then compares the bound)."""
    promised = r.quality if bound is None else bound.lower(r.per_request)
    row = {"thresholds": list(r.thresholds),
           "answer_share": [round(float(x), 6) for x in r.answer_fraction],
           "reach_share": [round(float(x), 6) for x in r.reach_fraction],
           "quality": round(r.quality, 6)}
    if bound is not None:
        lo, hi = bound.interval(r.per_request)
        row |= {"quality_interval": [round(lo, 6), round(hi, 6)],
                "quality_lower_bound": round(promised, 6)}
    return row | {"meets_target": None if target is None else bool(promised >= target - 1e-9)}


