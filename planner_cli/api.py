"""Orchestration: load files, call the core, return plain results. No terminal output here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner_cli import io
from planner_cli.errors import InputError
from planner_cli.specs.cascade import CascadeSpec
from planner_cli.specs.catalog import Catalog, data_root, load_catalog
from planner_cli.specs.cluster import ClusterSpec
from planner_cli.specs.model import (
    kv_bytes_per_token,
    param_counts,
    weight_bytes,
)
from planner_cli.workload.judged import JudgedSample
from planner_cli.workload.routing import Routing, reference_points, route
from planner_cli.workload.stats import TraceStats, trace_stats
from planner_cli.workload.synth import Arrival, synth_trace
from planner_cli.workload.trace import Trace, canonical_lines


@dataclass(frozen=True)
class ExampleFiles:
    trace: Path
    quality: Path
    cascade: Path
    cluster: Path


def bundled_example() -> ExampleFiles:
    """The real example shipped with the package (see examples/NOTICE.md)."""
    folder = data_root() / "examples"
    return ExampleFiles(trace=folder / "azure-conv-10min.jsonl",
                        quality=folder / "arena-open-models-judged.csv",
                        cascade=folder / "cascade-arena-open.yaml",
                        cluster=folder / "cluster-4x8-h100.yaml")


# ---------------------------------------------------------------- catalog

def gpu_rows(catalog_dir: Path | None = None) -> list[dict]:
    catalog = load_catalog(catalog_dir)
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


def model_rows(catalog_dir: Path | None = None) -> list[dict]:
    catalog = load_catalog(catalog_dir)
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


def import_hf(config: Path, name: str | None = None, hf_id: str | None = None) -> str:
    """An HF config.json as model-card YAML text."""
    from planner_cli.specs.hf_import import card_from_hf_config, card_to_yaml

    return card_to_yaml(card_from_hf_config(config, name=name, hf_id=hf_id))


# ---------------------------------------------------------------- traces

@dataclass(frozen=True)
class ArrivalOptions:
    """How arrivals are synthesised where a file has none."""

    rate_per_s: float | None = None
    arrival: Arrival = "poisson"
    cv: float = 1.0
    seed: int = 0


def load_trace(path: Path, fmt: str | None = None,
               arrivals: ArrivalOptions = ArrivalOptions()) -> Trace:
    return io.read_trace(path, fmt, rate_per_s=arrivals.rate_per_s, arrival=arrivals.arrival,
                         cv=arrivals.cv, seed=arrivals.seed)


def stats_of(path: Path, fmt: str | None = None,
             arrivals: ArrivalOptions = ArrivalOptions()) -> TraceStats:
    return trace_stats(load_trace(path, fmt, arrivals))


def _refuse_overwrite(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise InputError(f"{out}: already exists", "pass --force to replace it")


def convert(src: Path, out: Path, fmt: str | None = None,
            arrivals: ArrivalOptions = ArrivalOptions(), force: bool = False) -> TraceStats:
    """Any supported trace format to canonical JSONL."""
    _refuse_overwrite(out, force)
    trace = load_trace(src, fmt, arrivals)
    io.write_text_atomic(out, canonical_lines(trace))
    return trace_stats(trace)


def synthesise(out: Path, lengths_from: Path, arrivals: ArrivalOptions,
               num_requests: int | None = None, duration_s: float | None = None,
               force: bool = False) -> TraceStats:
    """A seeded synthetic trace: arrivals from a process, lengths drawn from a file."""
    if arrivals.rate_per_s is None:
        raise InputError("a synthetic trace needs an arrival rate", "pass --rate REQ_PER_S")
    _refuse_overwrite(out, force)
    inputs, outputs = io.read_lengths(lengths_from)
    trace = synth_trace(inputs, outputs, arrivals.rate_per_s, arrival=arrivals.arrival,
                        cv=arrivals.cv, num_requests=num_requests, duration_s=duration_s,
                        seed=arrivals.seed, source=str(out))
    io.write_text_atomic(out, canonical_lines(trace))
    return trace_stats(trace)


# ---------------------------------------------------------------- a planning problem's inputs

def resolve_cascade(cascade: CascadeSpec, catalog: Catalog, source: Path) -> list[str]:
    """Card names of the cascade's models, in order; unknown names fail with the file."""
    names = []
    for i, m in enumerate(cascade.models):
        try:
            names.append(catalog.model(m.model).name)
        except InputError as exc:
            raise InputError(f"{source}: models[{i}].model: {exc.message}", exc.hint) from None
    if cascade.judger.kind == "model":
        try:
            catalog.model(cascade.judger.model)
        except InputError as exc:
            raise InputError(f"{source}: judger.model: {exc.message}", exc.hint) from None
    return names


def resolve_cluster(cluster: ClusterSpec, catalog: Catalog, source: Path) -> list[dict]:
    pools = []
    for i, pool in enumerate(cluster.pools):
        try:
            gpu = catalog.gpu(pool.gpu)
        except InputError as exc:
            raise InputError(f"{source}: pools[{i}].gpu: {exc.message}", exc.hint) from None
        per_node = pool.gpus_per_node or gpu.gpus_per_node
        pools.append({"name": pool.name, "gpu": gpu.name, "nodes": pool.nodes,
                      "gpus_per_node": per_node, "gpus": pool.nodes * per_node,
                      "memory_gib_per_gpu": round(gpu.memory_gib, 2),
                      "price_usd_per_gpu_hour": pool.price_usd_per_gpu_hour
                      or gpu.price_usd_per_gpu_hour})
    return pools


def judged_for_cascade(sample: JudgedSample, cascade: CascadeSpec, card_names: list[str],
                       catalog: Catalog) -> tuple[JudgedSample, int]:
    """The judged sample's columns for the cascade's models, in cascade order.

    A judged model name matches a cascade model when both resolve to the same model card
    (names, aliases and HF ids), or when it equals the cascade entry's `judged_name`."""
    by_card: dict[str, str] = {}
    for name in sample.models:
        if name in catalog.models:
            by_card.setdefault(catalog.model(name).name, name)
    wanted = []
    for m, card in zip(cascade.models, card_names, strict=True):
        if m.judged_name is not None:
            wanted.append(m.judged_name)
        else:
            wanted.append(by_card.get(card, m.model))
    return sample.select(wanted)


@dataclass(frozen=True)
class CheckReport:
    cluster: list[dict]
    models: list[dict]
    trace: TraceStats
    judged_prompts: int
    judged_dropped: int
    judged_models: list[dict]
    has_quality: bool
    z1: float
    z2: float
    quality_target: float | None
    routing: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "models": self.models, "trace": self.trace.to_dict(),
                "judged": {"prompts": self.judged_prompts, "dropped": self.judged_dropped,
                           "models": self.judged_models, "has_quality": self.has_quality},
                "z1_all_largest": self.z1, "z2_all_smallest": self.z2,
                "quality_target": self.quality_target, "routing": self.routing}


def _routing_row(r: Routing, target: float | None) -> dict:
    return {"thresholds": list(r.thresholds),
            "answer_share": [round(float(x), 6) for x in r.answer_fraction],
            "reach_share": [round(float(x), 6) for x in r.reach_fraction],
            "quality": round(r.quality, 6),
            "meets_target": None if target is None else bool(r.quality >= target)}


def check(trace: Path, quality: Path, cascade: Path, cluster: Path,
          catalog_dir: Path | None = None, thresholds: list[float] | None = None,
          score_scale: tuple[float, float] | None = None,
          quality_scale: tuple[float, float] | None = None) -> CheckReport:
    """Validate a planning problem's four inputs against each other and summarise them."""
    catalog = load_catalog(catalog_dir)
    cascade_spec = io.load_cascade(cascade)
    cluster_spec = io.load_cluster(cluster)
    card_names = resolve_cascade(cascade_spec, catalog, cascade)
    pools = resolve_cluster(cluster_spec, catalog, cluster)
    stats = trace_stats(load_trace(trace))
    sample, dropped = judged_for_cascade(io.read_judged(quality, score_scale, quality_scale),
                                         cascade_spec, card_names, catalog)
    models = []
    for entry, name in zip(cascade_spec.models, card_names, strict=True):
        card = catalog.model(name)
        counts = param_counts(card)
        models.append({"model": name, "precision": entry.precision,
                       "total_params_b": round(counts.total / 1e9, 3),
                       "active_params_b": round(counts.active / 1e9, 3),
                       "weight_gb": round(weight_bytes(card, entry.precision) / 1e9, 2),
                       "kv_bytes_per_token": kv_bytes_per_token(card)})
    judged_models = [{"model": card, "judged_as": col,
                      "mean_score": round(float(sample.scores[:, j].mean()), 4),
                      "mean_quality": round(float(sample.quality[:, j].mean()), 4)}
                     for j, (card, col) in enumerate(zip(card_names, sample.models,
                                                         strict=True))]
    z1, z2 = reference_points(sample.quality)
    target = cascade_spec.quality_target
    m = len(card_names)
    rows: list[dict] = []
    if thresholds is not None:
        rows.append(_routing_row(route(sample.scores, sample.quality, thresholds), target))
    elif m > 1:
        # one threshold for every stage but the last, at each judged score value
        for value in np.unique(sample.scores[:, : m - 1]):
            rows.append(_routing_row(
                route(sample.scores, sample.quality, [float(value)] * (m - 1)), target))
    return CheckReport(cluster=pools, models=models, trace=stats, judged_prompts=len(sample),
                       judged_dropped=dropped, judged_models=judged_models,
                       has_quality=sample.has_quality, z1=z1, z2=z2, quality_target=target,
                       routing=rows)


# ---------------------------------------------------------------- performance model

def resolve_gpu(name: str, catalog_dir: Path | None = None):
    """A GPU card, or the nominal CPU reference for `cpu` (usable with CPU profiles)."""
    from planner_cli.perf.model import CPU_SPEC

    if name.strip().lower() == "cpu":
        return CPU_SPEC
    return load_catalog(catalog_dir).gpu(name)


def perf_predict(model: str, gpu: str, tp: int = 1, pp: int = 1, precision: str = "bf16",
                 prefill_tokens: int = 0, batch: int = 0, context: float = 0.0,
                 prefill_context: float = 0.0, *, catalog_dir: Path | None = None,
                 profiles_dir: Path | None = None, engine: str | None = None,
                 gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None) -> dict:
    """Memory figures and the predicted iteration time of one replica shape, with its source."""
    from planner_cli.perf.shapes import ReplicaShape
    from planner_cli.profiles import perf_model

    if prefill_tokens < 0 or batch < 0 or context < 0 or prefill_context < 0:
        raise InputError("token counts must be >= 0", "fix --prefill-tokens/--batch/--context")
    if prefill_tokens + batch == 0:
        raise InputError("an iteration needs prefill tokens or a decode batch",
                         "pass --prefill-tokens P and/or --batch B")
    if batch == 0 and context > 0:
        raise InputError("--context counts the decode batch's cached tokens, but --batch is 0",
                         "pass --batch B with --context, or --prefill-context for a chunk")
    if not 0 < gpu_memory_utilization <= 1:
        raise InputError(f"--gpu-memory-utilization {gpu_memory_utilization} is not in (0, 1]",
                         "use e.g. 0.9")
    card = load_catalog(catalog_dir).model(model)
    shape = ReplicaShape(card, resolve_gpu(gpu, catalog_dir), tp, pp, precision)
    pm = perf_model(shape, profiles_dir, engine)
    mem = pm.memory(gpu_memory_utilization, max_model_len)
    breakdown = pm.iteration(prefill_tokens, batch, context, prefill_context)
    return {"shape": {"model": card.name, "gpu": shape.gpu.name, "tp": tp, "pp": pp,
                      "precision": precision, "gpus": shape.gpus},
            "iteration": {"prefill_tokens": prefill_tokens, "decode_batch": batch,
                          "context_tokens": context, "prefill_context": prefill_context},
            "memory": mem.to_dict(), "time_ms": breakdown.total_s * 1e3,
            "breakdown_ms": {k.removesuffix("_s"): v * 1e3
                             for k, v in breakdown.to_dict().items() if k != "total_s"},
            "source": pm.source}


def run_profile(model: str, device: str | None, tp_values: tuple[int, ...], layers: int | None,
                quick: bool, dtype: str | None, reps: int | None, force: bool, *,
                catalog_dir: Path | None = None, profiles_dir: Path | None = None,
                progress=None) -> dict:
    """Measure `model` on the local device and store the table under profiles/."""
    from planner_cli.perf import profiler
    from planner_cli.profiles import profile_folder, profiles_root, write_profile

    card = load_catalog(catalog_dir).model(model)
    if device is None:
        torch, _ = profiler._torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
    grid = (profiler.QUICK_GRID if quick else
            (profiler.CPU_GRID if device == "cpu" else profiler.FULL_GRID))
    reps = reps or (3 if quick else 5)
    root = profiles_root(profiles_dir)
    if device == "cpu":
        target = profile_folder(root, "cpu", card.name) / "profile.csv"
        if target.exists() and not force:  # refuse before spending minutes measuring
            raise InputError(f"{target}: a profile exists already", "pass --force to replace it")
    result = profiler.profile_model(card, device=device, tp_values=tp_values, layers=layers,
                                    grid=grid, dtype=dtype, warmup=1 if quick else 2, reps=reps,
                                    progress=progress)
    path = write_profile(root, result.metadata["device"], card.name, result.rows,
                         result.metadata, force)
    return {"table": str(path), "metadata": result.metadata, "rows": result.rows}


def calibrate_from(measurements: Path, model: str, gpu: str, engine: str | None = None,
                   precision: str = "bf16", *, catalog_dir: Path | None = None,
                   profiles_dir: Path | None = None) -> dict:
    """Fit the analytic constants to a user's measurements and save them for the planner."""
    from planner_cli.perf.calibrate import calibrate
    from planner_cli.profiles import profiles_root, read_measurements, write_calibration

    card = load_catalog(catalog_dir).model(model)
    spec = resolve_gpu(gpu, catalog_dir)
    rows = read_measurements(measurements)
    report = calibrate(card, spec, precision, rows)
    path = write_calibration(profiles_root(profiles_dir), spec.name, card.name, engine,
                             precision, report, measurements)
    return {"saved": str(path), "model": card.name, "gpu": spec.name, "engine": engine,
            "fit": report.to_dict(),
            "constants": {k: getattr(report.constants, k) for k in (
                "compute_efficiency", "bandwidth_efficiency", "attention_efficiency",
                "attention_bandwidth_efficiency", "iteration_overhead_s", "comm_scale")}}
