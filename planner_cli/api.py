"""Orchestration: load files, call the core, return plain results. No terminal output here."""

from __future__ import annotations

import math
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


# ---------------------------------------------------------------- simulation

@dataclass(frozen=True)
class StageDeployment:
    """A resolved plan stage: shape, its performance model and memory figures."""

    index: int
    model: str
    pool: str
    gpu: str
    tp: int
    pp: int
    replicas: int
    precision: str
    kv_capacity_tokens: int
    perf_source: str
    cost: object  # IterationCost
    max_num_batched_tokens: int
    max_num_seqs: int


def load_plan(path: Path):
    from planner_cli.plan import Plan
    from planner_cli.specs._yaml import load_yaml_model

    return load_yaml_model(path, Plan)


def _deploy(index: int, stage, card, pool: dict, catalog: Catalog, where: str,
            profiles_dir: Path | None, engine: str | None) -> StageDeployment:
    from planner_cli.perf.fast import IterationCost
    from planner_cli.perf.memory import memory_figures
    from planner_cli.perf.shapes import ReplicaShape
    from planner_cli.profiles import perf_model

    try:
        shape = ReplicaShape(card, catalog.gpu(pool["gpu"]), stage.tp, stage.pp,
                             stage.precision, gpus_per_node=pool["gpus_per_node"])
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}", exc.hint) from None
    if stage.max_num_batched_tokens < stage.max_num_seqs:
        raise InputError(f"{where}: max_num_batched_tokens {stage.max_num_batched_tokens} "
                         f"is below max_num_seqs {stage.max_num_seqs}",
                         "raise the token budget or lower the sequence cap")
    mem = memory_figures(shape, stage.gpu_memory_utilization, stage.max_model_len,
                         stage.max_num_batched_tokens, stage.max_num_seqs)
    if not mem.fits:
        raise InputError(f"{where}: {card.name} tp={stage.tp} pp={stage.pp} "
                         f"{stage.precision} does not fit {pool['gpu']}: {mem.reason}",
                         "raise tp or pp, use a lower precision, or set max_model_len")
    pm = perf_model(shape, profiles_dir, engine)
    return StageDeployment(
        index=index, model=card.name, pool=stage.pool, gpu=pool["gpu"], tp=stage.tp,
        pp=stage.pp, replicas=stage.replicas, precision=stage.precision,
        kv_capacity_tokens=mem.kv_capacity_tokens, perf_source=pm.source,
        cost=IterationCost(shape, pm.constants),
        max_num_batched_tokens=stage.max_num_batched_tokens, max_num_seqs=stage.max_num_seqs)


def resolve_stages(plan, plan_path: Path, catalog: Catalog, profiles_dir: Path | None
                   ) -> tuple[list[StageDeployment], StageDeployment | None]:
    """Check a plan against the catalog and its cluster; build each stage's cost model (and
    the served judge's, if any)."""
    names = resolve_cascade(plan.cascade, catalog, plan_path)
    pools = {p["name"]: p for p in resolve_cluster(plan.cluster, catalog, plan_path)}
    engine = plan.simulation.engine
    used: dict[str, int] = {}
    stages = []
    for i, (stage, name) in enumerate(zip(plan.stages, names, strict=True)):
        where = f"{plan_path}: stages[{i}]"
        try:
            card = catalog.model(stage.model)
        except InputError as exc:
            raise InputError(f"{where}.model: {exc.message}", exc.hint) from None
        if card.name != name:
            raise InputError(f"{where}.model {stage.model!r} is not the cascade's model "
                             f"{i + 1} ({name})", "list the stages in cascade order")
        used[stage.pool] = used.get(stage.pool, 0) + stage.gpus
        stages.append(_deploy(i, stage, card, pools[stage.pool], catalog, where, profiles_dir,
                              engine))
    judge = None
    if plan.judge is not None:
        card = catalog.model(plan.cascade.judger.model)
        if catalog.model(plan.judge.model).name != card.name:
            raise InputError(f"{plan_path}: judge.model {plan.judge.model!r} is not the "
                             f"cascade's judger ({card.name})", "make them the same model")
        used[plan.judge.pool] = used.get(plan.judge.pool, 0) + plan.judge.gpus
        judge = _deploy(len(stages), plan.judge, card, pools[plan.judge.pool], catalog,
                        f"{plan_path}: judge", profiles_dir, engine)
    for name, gpus in sorted(used.items()):
        if gpus > pools[name]["gpus"]:
            raise InputError(f"{plan_path}: the stages use {gpus} GPUs of pool {name!r}, which "
                             f"has {pools[name]['gpus']}",
                             "use fewer replicas or smaller shapes, or add nodes to the pool")
    return stages, judge


def _relative(plan_path: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else plan_path.parent / p


@dataclass(frozen=True)
class RequestMix:
    """Per trace request: its score at each stage, output tokens at each stage, and quality."""

    scores: np.ndarray  # (n, m), 0-100
    quality: np.ndarray  # (n, m)
    outputs: list[np.ndarray]  # m arrays of (n,)
    source: str  # where the scores came from


def request_mix(trace: Trace, cascade: CascadeSpec, card_names: list[str], catalog: Catalog,
                quality_path: Path | None, score_scale: tuple[float, float] | None,
                seed: int) -> RequestMix:
    """Scores and output lengths for every trace request: inline in the trace when it has them
    for every cascade model, else paired with judged prompts by seeded sampling."""
    n, m = len(trace), len(card_names)
    inline = []
    for entry, card in zip(cascade.models, card_names, strict=True):
        keys = [k for k in trace.scores if k == entry.judged_name or (
            k in catalog.models and catalog.model(k).name == card)]
        inline.append(keys[0] if keys else None)
    if all(k is not None for k in inline) and all(
            not np.isnan(trace.scores[k]).any() for k in inline):
        scores = np.column_stack([trace.scores[k] for k in inline])
        quality = np.column_stack([trace.quality.get(k, trace.scores[k]) for k in inline])
        outputs = []
        for k in inline:
            per = trace.model_output_lengths.get(k)
            outputs.append(np.where(per >= 1, per, trace.output_lengths)
                           if per is not None else trace.output_lengths)
        return RequestMix(scores, quality, outputs, f"inline scores of {trace.source}")
    if quality_path is None:
        missing = [cascade.models[i].model for i, k in enumerate(inline) if k is None]
        what = (f"no scores for {', '.join(missing)}" if missing
                else "scores missing on some lines")
        raise InputError(f"{trace.source}: the trace has {what}, which the thresholds need",
                         "add cascadia.scores {model: 0-100} to every trace line, or give a "
                         "judged sample with --quality (or inputs.quality in the plan)")
    sample, _ = judged_for_cascade(io.read_judged(quality_path, score_scale), cascade,
                                   card_names, catalog)
    pick = np.random.default_rng(seed).integers(0, len(sample), size=n)
    outputs = []
    for i in range(m):
        if sample.output_tokens is not None:
            per = sample.output_tokens[pick, i]
            outputs.append(np.where(per >= 1, per, trace.output_lengths))
        else:
            outputs.append(trace.output_lengths)
    label = (f"SYNTHETIC judged sample ({sample.synthetic}): " if sample.synthetic else "")
    return RequestMix(sample.scores[pick], sample.quality[pick], outputs,
                      f"{label}{len(sample)} judged prompts of {quality_path} paired with the "
                      f"trace's requests by seeded sampling (seed {seed})")


def reference_cost(plan, catalog: Catalog, profiles_dir: Path | None):
    """The SLO reference: the cascade's largest model at the smallest tp that fits one node of
    its stage's GPU (pipeline across nodes only when no single node holds it)."""
    from planner_cli.perf.fast import IterationCost
    from planner_cli.perf.memory import memory_figures
    from planner_cli.perf.shapes import ReplicaShape
    from planner_cli.profiles import perf_model

    last = plan.stages[-1]
    pool = next(p for p in plan.cluster.pools if p.name == last.pool)
    gpu = catalog.gpu(pool.gpu)
    per_node = pool.gpus_per_node or gpu.gpus_per_node
    card = catalog.model(last.model)
    for pp in (1, 2, 4, 8):
        for tp in (1, 2, 4, 8, 16):
            if tp > per_node or card.num_attention_heads % tp:
                continue
            try:
                shape = ReplicaShape(card, gpu, tp, pp, last.precision, gpus_per_node=per_node)
            except InputError:
                continue
            if memory_figures(shape, last.gpu_memory_utilization, last.max_model_len).fits:
                pm = perf_model(shape, profiles_dir, plan.simulation.engine)
                return IterationCost(shape, pm.constants), f"{card.name} tp{tp} pp{pp}"
    raise InputError(f"{card.name} fits no single replica of {gpu.name}",
                     "the SLO reference needs one replica of the largest model")


def simulate_plan(plan_path: Path, trace_path: Path | None = None,
                  quality_path: Path | None = None, rate_scale: float = 1.0,
                  balancer: str | None = None, capacity_at_scale: float | None = None, *,
                  catalog_dir: Path | None = None, profiles_dir: Path | None = None) -> dict:
    """Replay a trace through a plan; figures per stage and end to end."""
    from planner_cli.workload.judged import parse_scale

    plan = load_plan(plan_path)
    catalog = load_catalog(catalog_dir)
    resolved = resolve_stages(plan, plan_path, catalog, profiles_dir)  # fail before reading
    trace_file = trace_path or _relative(plan_path, plan.inputs.trace)
    if trace_file is None:
        raise InputError(f"{plan_path}: no trace", "pass --trace or set inputs.trace")
    trace = load_trace(trace_file)
    scale = parse_scale(plan.inputs.score_scale) if plan.inputs.score_scale else None
    names = [s.model for s in resolved[0]]
    mix = request_mix(trace, plan.cascade, names, catalog,
                      quality_path or _relative(plan_path, plan.inputs.quality), scale,
                      plan.simulation.seed)
    result = simulate_loaded(plan, plan_path, trace, mix, catalog, profiles_dir, rate_scale,
                             balancer, capacity_at_scale, resolved=resolved)
    result.update(plan=str(plan_path), trace=str(trace_file))
    return result


def simulate_loaded(plan, label: Path, trace: Trace, mix: RequestMix, catalog: Catalog,
                    profiles_dir: Path | None, rate_scale: float = 1.0,
                    balancer: str | None = None, capacity_at_scale: float | None = None,
                    capacity_window: int | None = None,
                    resolved: tuple[list[StageDeployment], StageDeployment | None] | None = None
                    ) -> dict:
    """Simulate a plan on a loaded trace and request mix (see simulate_plan)."""
    import time

    from planner_cli.sim.cascade import BALANCERS, StageConfig, simulate_cascade
    from planner_cli.sim.metrics import Slo, cascade_figures, slo_scale, unloaded_latency

    if rate_scale <= 0:
        raise InputError(f"--rate-scale {rate_scale} is not positive", "use e.g. 1 or 2.5")
    balancer = balancer or plan.simulation.balancer
    if balancer not in BALANCERS:
        raise InputError(f"--balancer {balancer!r} is not known", "use " + " or ".join(BALANCERS))
    stages, judge_stage = resolved or resolve_stages(plan, label, catalog, profiles_dir)
    routing = route(mix.scores, mix.quality, plan.thresholds)
    configs = [StageConfig(s.model, s.cost, s.replicas, s.kv_capacity_tokens,  # type: ignore[arg-type]
                           s.max_num_batched_tokens, s.max_num_seqs) for s in stages]
    ref_cost, ref_label = reference_cost(plan, catalog, profiles_dir)
    base = unloaded_latency(ref_cost, trace.input_lengths, mix.outputs[-1])
    judger = plan.cascade.judger
    judge_model = None
    delays: list[np.ndarray] | float = 0.0
    if judger.kind == "external":
        rng = np.random.default_rng([plan.simulation.seed, 7])
        delays = [judger.latency_s * (np.exp(rng.normal(0.0, judger.latency_sigma, len(trace)))
                                      if judger.latency_sigma > 0 else np.ones(len(trace)))
                  for _ in range(len(stages) - 1)]
    else:
        from planner_cli.sim.cascade import JudgeModel

        assert judge_stage is not None
        judge_model = JudgeModel(StageConfig(
            "judge:" + judge_stage.model, judge_stage.cost, judge_stage.replicas,  # type: ignore[arg-type]
            judge_stage.kv_capacity_tokens, judge_stage.max_num_batched_tokens,
            judge_stage.max_num_seqs), judger.output_tokens)
    t0 = time.perf_counter()
    arrivals = (trace.timestamps_ms - trace.timestamps_ms[0]) / 1000.0

    def run(multiple: float):
        return simulate_cascade(configs, arrivals / multiple, trace.input_lengths, mix.outputs,
                                routing.answered_by, delays, balancer,  # type: ignore[arg-type]
                                judge_model)

    result = run(rate_scale)
    wall = time.perf_counter() - t0
    slo = Slo(plan.cascade.slo.ttft_s, plan.cascade.slo.tpot_s, plan.cascade.slo.e2e_s)
    figures = cascade_figures(result, base, slo, plan.cascade.slo.attainment_pct)
    for fig, s in zip(figures["stages"], stages, strict=True):
        fig.update(model=s.model, gpu=s.gpu, pool=s.pool, tp=s.tp, pp=s.pp,
                   replicas=s.replicas, precision=s.precision,
                   kv_capacity_tokens=s.kv_capacity_tokens, perf_source=s.perf_source)
    if judge_model is not None and result.extras.get("judge") is not None:
        from planner_cli.sim.metrics import stage_figures

        jf = stage_figures(result.extras["judge"])
        jf.update(model=judge_stage.model, gpu=judge_stage.gpu, pool=judge_stage.pool,
                  tp=judge_stage.tp, pp=judge_stage.pp, replicas=judge_stage.replicas,
                  precision=judge_stage.precision,
                  kv_capacity_tokens=judge_stage.kv_capacity_tokens,
                  perf_source=judge_stage.perf_source)
        figures["judge"] = jf
    capacity = None
    if capacity_at_scale is not None:
        window = slice(0, capacity_window or len(trace))
        arr_w = arrivals[window]
        span = max(float(arr_w[-1] - arr_w[0]), 1e-9) * (arr_w.shape[0] + 1) / max(
            arr_w.shape[0], 1)
        parts = {"prompts": trace.input_lengths[window],
                 "answered": routing.answered_by[window], "base": base[window]}
        out_w = [o[window] for o in mix.outputs]
        dl_w = [d[window] for d in delays] if isinstance(delays, list) else delays

        def run_window(multiple: float):
            """Sustained load: the window tiled in time until the scaled arrivals span
            CAPACITY_SUSTAIN_S seconds (None past CAPACITY_MAX_REQUESTS)."""
            tiles = max(1, math.ceil(CAPACITY_SUSTAIN_S * multiple / span))
            if tiles * arr_w.shape[0] > CAPACITY_MAX_REQUESTS:
                return None
            arr = np.concatenate([arr_w + k * span for k in range(tiles)]) / multiple
            dl = ([np.tile(d, tiles) for d in dl_w] if isinstance(dl_w, list) else dl_w)
            res = simulate_cascade(configs, arr, np.tile(parts["prompts"], tiles),
                                   [np.tile(o, tiles) for o in out_w],
                                   np.tile(parts["answered"], tiles), dl, balancer,
                                   judge_model)  # type: ignore[arg-type]
            return res, np.tile(parts["base"], tiles)

        capacity = _capacity_search(run_window, capacity_at_scale,
                                    plan.cascade.slo.attainment_pct, rate_scale,
                                    float(arr_w.shape[0]) / span, slo_scale)
    return {
        "plan": str(label), "trace": trace.source, "requests": len(trace),
        "rate_scale": rate_scale, "balancer": balancer, "thresholds": plan.thresholds,
        "quality": routing.quality, "scores_from": mix.source,
        "reach_share": [float(x) for x in routing.reach_fraction],
        "judge_latency_s": result.judge_latency_s, "slo_reference": ref_label,
        "figures": figures, "capacity": capacity, "simulation_wall_s": wall,
        "per_request": _per_request(result, base),
    }


def _per_request(result, base: np.ndarray) -> dict:
    """Columns of per-request figures (for --requests-out)."""
    n = result.arrival.shape[0]
    ttft = np.full(n, np.inf)
    tpot = np.full(n, np.nan)
    for i, stage in enumerate(result.stages):
        mine = result.answered_by == i
        ttft[mine] = stage.first_token[mine] - result.arrival[mine]
        out = stage.output_tokens[mine]
        tpot[mine] = np.where(out > 1, (stage.finish[mine] - stage.first_token[mine])
                              / np.maximum(out - 1, 1), np.nan)
    return {"request": np.arange(n), "arrival_s": result.arrival,
            "answered_by_stage": result.answered_by + 1, "ttft_s": ttft, "tpot_s": tpot,
            "e2e_s": result.e2e, "base_latency_s": base}


CAPACITY_SUSTAIN_S = 60.0  # the load of a rate multiple is held this long
CAPACITY_MAX_REQUESTS = 8_000  # beyond this the search stops: capacity is "at least"


def _capacity_search(run, target_scale: float, attainment: float, start: float,
                     trace_rps: float, slo_scale_fn, steps: int = 8,
                     tolerance: float = 0.03) -> dict:
    """The largest arrival-rate multiple at which the SLO scale stays within target, under
    sustained load (see run_window); `at_least` when the search hit its request limit."""
    limited = False

    def meets(x: float) -> bool:
        nonlocal limited
        got = run(x)
        if got is None:
            limited = True
            return False
        res, base = got
        return slo_scale_fn(res.e2e, base, attainment) <= target_scale

    lo, hi = 0.0, start
    if meets(hi):
        lo = hi
        while hi < 1e4:
            hi *= 2
            if not meets(hi):
                break
            lo = hi
    for _ in range(steps):
        if hi - lo <= tolerance * max(lo, 1e-9):
            break
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
        if lo == 0 and hi < start / 1024:
            break
    return {"slo_scale_target": target_scale, "rate_multiple": lo,
            "requests_per_s": lo * trace_rps, "at_least": limited and lo > 0,
            "sustained_s": CAPACITY_SUSTAIN_S}


# ---------------------------------------------------------------- optimisation

def optimize(trace: Path | None = None, quality: Path | None = None,
             cascade: Path | None = None, cluster: Path | None = None,
             quality_target: float | None = None, objective: str = "p95-max-stage", *,
             catalog_dir: Path | None = None, profiles_dir: Path | None = None,
             capacity_scale: float = 5.0, dump_lp: Path | None = None,
             progress=None) -> dict:
    """Run the planner; missing inputs come from the bundled example."""
    from planner_cli import planner

    example = bundled_example()
    files = planner.OptimizeInputs(trace or example.trace, quality or example.quality,
                                   cascade or example.cascade, cluster or example.cluster)
    if capacity_scale <= 0:
        raise InputError(f"--capacity-slo-scale {capacity_scale} is not positive", "use e.g. 5")
    return planner.optimize(files, quality_target, objective, catalog_dir=catalog_dir,
                            profiles_dir=profiles_dir, capacity_scale=capacity_scale,
                            dump_lp=dump_lp, progress=progress)


def plan_json(plan) -> str:
    """The plan as deterministic JSON text (NaN and inf written as null)."""
    import json

    from planner_cli.render import clean

    return json.dumps(clean(plan.model_dump(mode="python", exclude_none=True)), indent=2) + "\n"


# ---------------------------------------------------------------- exports

EXPORT_FORMATS = ("vllm", "sglang", "k8s", "router", "bench", "all")


def export(plan_path: Path, fmt: str, out: Path, force: bool = False,
           trace_path: Path | None = None, catalog_dir: Path | None = None) -> dict:
    """Render the plan's launch files and write them to `out` in one move."""
    from planner_cli.export.placement import place
    from planner_cli.export.render import FORMATS, render
    from planner_cli.export.writer import write_tree

    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format {fmt!r} is not known", "use " + ", ".join(EXPORT_FORMATS))
    plan = load_plan(plan_path)
    catalog = load_catalog(catalog_dir)
    names = resolve_cascade(plan.cascade, catalog, plan_path)
    resolve_cluster(plan.cluster, catalog, plan_path)
    weights = {}
    for entry, name in zip(plan.cascade.models, names, strict=True):
        weights[name] = entry.weights or catalog.model(name).hf_id
    for stage in plan.stages:
        weights.setdefault(catalog.model(stage.model).name, catalog.model(stage.model).hf_id)
    if plan.judge is not None:
        judge = catalog.model(plan.judge.model).name
        weights.setdefault(judge, catalog.model(judge).hf_id)
    stages_named = plan.model_copy(update={
        "stages": [s.model_copy(update={"model": catalog.model(s.model).name})
                   for s in plan.stages],
        "judge": None if plan.judge is None else plan.judge.model_copy(
            update={"model": catalog.model(plan.judge.model).name})})
    replicas = place(stages_named, weights)
    formats = list(FORMATS) if fmt == "all" else [fmt]
    trace = None
    if "bench" in formats:
        trace_file = trace_path or _relative(plan_path, plan.inputs.trace)
        if trace_file is None:
            raise InputError(f"{plan_path}: no trace for the bench export",
                             "pass --trace or set inputs.trace")
        trace = load_trace(trace_file)
    warnings: list[str] = []
    files = render(stages_named, replicas, formats, trace, warnings)
    written = write_tree(files, out, force)
    return {"out": str(out), "files": [str(p) for p in written], "warnings": warnings,
            "replicas": len(replicas)}


def cascade_schema() -> dict:
    from planner_cli.export.router import RouterConfig

    return RouterConfig.model_json_schema()
