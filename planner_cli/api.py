"""Orchestration: load files, resolve them once, call the core, return typed results. No
terminal output here."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from planner_cli import io, summaries
from planner_cli.errors import InputError
from planner_cli.export.placement import Replica, place
from planner_cli.export.render import FORMATS
from planner_cli.export.render import render as render_exports
from planner_cli.export.router import RouterConfig
from planner_cli.export.router import router_config as build_router_config
from planner_cli.export.writer import write_tree
from planner_cli.optimize import bilevel
from planner_cli.optimize.allocator import DEFAULT_OBJECTIVE
from planner_cli.optimize.bilevel import OptimizeResult, Progress
from planner_cli.perf.model import analytic_lookup
from planner_cli.perf.profiles import (
    check_engine,
    perf_lookup,
)
from planner_cli.perf_api import (  # noqa: F401 - the performance commands' orchestration
    calibrate_from,
    perf_predict,
    perf_serve,
    resolve_gpu,
    run_profile,
)
from planner_cli.plan import Plan
from planner_cli.problem import (
    Deployment,
    Problem,
    ProblemFiles,
    StageModel,
    inline_request_mix,
    judged_columns,
    rate_scale_for,
    request_mix,
    resolve_deployment,
    resolve_problem,
    resolve_specs,
)
from planner_cli.sim.figures import clean
from planner_cli.sim.metrics import percentiles
from planner_cli.sim.run import PlanSimulation, simulate_deployment
from planner_cli.specs._yaml import load_yaml_model
from planner_cli.specs.catalog import Catalog, data_root, load_catalog
from planner_cli.summaries import CheckReport
from planner_cli.workload.confidence import DEFAULT_CONFIDENCE, check_confidence
from planner_cli.workload.judged import parse_scale
from planner_cli.workload.mix import RequestMix
from planner_cli.workload.routing import route
from planner_cli.workload.stats import TraceStats, trace_stats
from planner_cli.workload.synth import Arrival, synth_trace
from planner_cli.workload.trace import Trace, canonical_lines, scaled

if TYPE_CHECKING:  # the router extra (aiohttp) is imported only when replay runs
    from planner_cli.router.replay import Measured


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
    return summaries.gpu_rows(load_catalog(catalog_dir))


def model_rows(catalog_dir: Path | None = None) -> list[dict]:
    return summaries.model_rows(load_catalog(catalog_dir))


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


def convert(src: Path, out: Path, fmt: str | None = None,
            arrivals: ArrivalOptions = ArrivalOptions(), force: bool = False) -> TraceStats:
    """Any supported trace format to canonical JSONL."""
    io.refuse_existing(out, force)
    trace = load_trace(src, fmt, arrivals)
    io.write_text_atomic(out, canonical_lines(trace))
    return trace_stats(trace)


def synthesise(out: Path, lengths_from: Path, arrivals: ArrivalOptions,
               num_requests: int | None = None, duration_s: float | None = None,
               force: bool = False) -> TraceStats:
    """A seeded synthetic trace: arrivals from a process, lengths drawn from a file."""
    if arrivals.rate_per_s is None:
        raise InputError("a synthetic trace needs an arrival rate", "pass --rate REQ_PER_S")
    io.refuse_existing(out, force)
    inputs, outputs = io.read_lengths(lengths_from)
    trace = synth_trace(inputs, outputs, arrivals.rate_per_s, arrival=arrivals.arrival,
                        cv=arrivals.cv, num_requests=num_requests, duration_s=duration_s,
                        seed=arrivals.seed, source=str(out))
    io.write_text_atomic(out, canonical_lines(trace))
    return trace_stats(trace)


# ---------------------------------------------------------------- a planning problem

def load_problem(trace: Path | None = None, quality: Path | None = None,
                 cascade: Path | None = None, cluster: Path | None = None, *,
                 catalog_dir: Path | None = None, quality_target: float | None = None,
                 seed: int = 0, engine: str | None = None,
                 score_scale: tuple[float, float] | None = None,
                 quality_scale: tuple[float, float] | None = None,
                 rate_per_s: float | None = None, rate_scale: float | None = None,
                 quality_confidence: float | None = DEFAULT_CONFIDENCE) -> Problem:
    """Read the four input files (missing ones: the bundled example's) and resolve them once;
    `rate_per_s` or `rate_scale` replays the trace's arrival pattern at another rate."""
    example = bundled_example()
    paths = ProblemFiles(*(str((given or default).resolve()) for given, default in (
        (trace, example.trace), (quality, example.quality), (cascade, example.cascade),
        (cluster, example.cluster))))
    catalog = load_catalog(catalog_dir)
    specs = resolve_specs(io.load_cascade(Path(paths.cascade)),
                          io.load_cluster(Path(paths.cluster)), catalog, paths, engine)
    sample = io.read_judged(Path(paths.quality), score_scale, quality_scale)
    trace = load_trace(Path(paths.trace))
    return resolve_problem(specs, catalog, trace, sample, paths, quality_target, seed, engine,
                           rate_scale_for(trace, rate_per_s, rate_scale),
                           None if quality_confidence is None
                           else check_confidence(quality_confidence))


def check(trace: Path | None = None, quality: Path | None = None, cascade: Path | None = None,
          cluster: Path | None = None, catalog_dir: Path | None = None,
          thresholds: list[float] | None = None,
          score_scale: tuple[float, float] | None = None,
          quality_scale: tuple[float, float] | None = None,
          quality_confidence: float = DEFAULT_CONFIDENCE) -> CheckReport:
    """Validate a planning problem's four inputs against each other and summarise them."""
    p = load_problem(trace, quality, cascade, cluster, catalog_dir=catalog_dir,
                     score_scale=score_scale, quality_scale=quality_scale,
                     quality_confidence=quality_confidence)
    m = len(p.models)
    s = p.sample
    if thresholds is not None:
        rows = [route(s.scores, s.quality, thresholds)]
    else:  # one threshold for every stage but the last, at each judged score value
        rows = [route(s.scores, s.quality, [float(v)] * (m - 1))
                for v in (np.unique(s.scores[:, : m - 1]) if m > 1 else [])]
    return CheckReport(p, rows, trace_stats(p.trace))


# ---------------------------------------------------------------- simulation

def load_plan(path: Path) -> Plan:
    return load_yaml_model(path, Plan)


def _relative_to(value: str | None, plan_file: Path) -> str | None:
    """An input file's path as a plan at `plan_file` records it: relative to the plan's
    folder (with forward slashes)."""
    if value is None:
        return None
    target = Path(value).resolve()
    try:
        return Path(os.path.relpath(target, plan_file.resolve().parent)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(target)


def _relative(plan_path: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else plan_path.parent / p


def deployment(plan_path: Path, catalog_dir: Path | None = None,
               profiles_dir: Path | None = None, engine: str | None = None
               ) -> tuple[Deployment, Catalog]:
    """A plan file resolved once (engine: the flag's, else the plan's)."""
    plan = load_plan(plan_path)
    catalog = load_catalog(catalog_dir)
    if engine is not None:
        plan = plan.model_copy(update={"simulation": plan.simulation.model_copy(
            update={"engine": check_engine(engine)})})
    lookup = perf_lookup(profiles_dir)
    return resolve_deployment(plan, catalog, str(plan_path), lookup), catalog


def simulate_plan(plan_path: Path, trace_path: Path | None = None,
                  quality_path: Path | None = None, rate_scale: float | None = None,
                  balancer: str | None = None, capacity_at_scale: float | None = None, *,
                  catalog_dir: Path | None = None, profiles_dir: Path | None = None,
                  engine: str | None = None) -> tuple[PlanSimulation, Path]:
    """Replay a trace through a plan; figures per stage and end to end (and the trace used)."""
    dep, catalog = deployment(plan_path, catalog_dir, profiles_dir, engine)
    plan = dep.plan
    trace_file = trace_path or _relative(plan_path, plan.inputs.trace)
    if trace_file is None:
        raise InputError(f"{plan_path}: no trace", "pass --trace or set inputs.trace")
    trace = load_trace(trace_file)
    sample_file = quality_path or _relative(plan_path, plan.inputs.quality)
    mix = _mix_for(plan, dep.models, trace, sample_file, catalog)
    reference = None
    ref = plan.simulation.slo_reference
    if ref is not None:
        # the plan keeps the whole cascade's SLO base: that replica and its output lengths
        ref_plan = plan.model_copy(update={
            "cascade": plan.cascade.model_copy(update={"models": [ref.model]}),
            "stages": [ref.stage], "thresholds": [], "judge": None,
            "simulation": plan.simulation.model_copy(update={"slo_reference": None})})
        ref_dep = resolve_deployment(ref_plan, catalog, f"{plan_path}: simulation.slo_reference",
                                     perf_lookup(profiles_dir))
        reference = (ref_dep, _mix_for(plan, ref_dep.models, trace, sample_file, catalog))
    scale = plan.simulation.rate_scale if rate_scale is None else rate_scale
    return simulate_deployment(dep, trace, mix, scale, balancer, capacity_at_scale,
                               slo_reference=reference), trace_file


@dataclass(frozen=True)
class ReplayReport:
    """A trace replayed through a running cascade, beside the plan's simulation of the same
    requests at the same rate."""

    url: str
    trace: Path
    rate_scale: float
    tiers: list[str]
    predicted: PlanSimulation
    measured: Measured

    def to_dict(self) -> dict:
        pred, meas = self.predicted.figures, self.measured
        n = len(meas.sent)
        tiers_seen = Counter(s.tier for s in meas.ok)
        slo = pred.slo
        good = np.array([s.status == 200
                         and (slo.e2e_s is None or s.e2e_s <= slo.e2e_s)
                         and (slo.ttft_s is None or s.ttft_s <= slo.ttft_s)
                         for s in meas.sent], dtype=bool)
        predicted_good = (pred.goodput_rps / pred.throughput_rps * pred.completed / n
                          if pred.throughput_rps > 0 and n else 0.0)
        return clean({
            "url": self.url, "trace": str(self.trace), "rate_scale": self.rate_scale,
            "requests": n, "completed": len(meas.ok), "failed": dict(meas.failures),
            "duration_s": meas.duration_s,
            "answer_share": {"predicted": [c / n for c in pred.answered_by_stage],
                             "measured": [tiers_seen.get(t, 0) / n for t in self.tiers]},
            "e2e_latency_s": {"predicted": pred.e2e_latency_s.model_dump(),
                              "measured": percentiles(meas.e2e()).model_dump()},
            "ttft_s": {"predicted": pred.ttft_s.model_dump(),
                       "measured": percentiles(meas.ttft()).model_dump()},
            "slo": {"targets": slo.model_dump(),
                    "share_meeting": {"predicted": predicted_good,
                                      "measured": float(good.mean()) if n else 0.0}},
        })


def replay_plan(plan_path: Path, url: str, trace_path: Path | None = None,
                quality_path: Path | None = None,
                rate_scale: float | None = None, api_key: str | None = None,
                timeout_s: float = 600.0, progress: Any = None,
                catalog_dir: Path | None = None, profiles_dir: Path | None = None
                ) -> ReplayReport:
    """Send the plan's trace (or `trace_path`) through the cascade at `url` at its timestamps
    (`rate_scale` times faster), and simulate the same requests through the plan."""
    from planner_cli.router.replay import replay

    predicted, trace_file = simulate_plan(plan_path, trace_path, quality_path, rate_scale,
                                          catalog_dir=catalog_dir, profiles_dir=profiles_dir)
    plan = load_plan(plan_path)
    trace = scaled(load_trace(trace_file), predicted.rate_scale)
    measured = replay(url, trace, plan.cascade.name, api_key, timeout_s, progress)
    return ReplayReport(url, trace_file, predicted.rate_scale,
                        [f"tier{i + 1}" for i in range(len(plan.stages))], predicted, measured)


def _mix_for(plan: Plan, models: tuple[StageModel, ...], trace: Trace,
             sample_file: Path | None, catalog: Catalog) -> RequestMix:
    """Scores and output lengths of `models` for the trace's requests, paired with the judged
    prompts the plan was made on (the trace's inline scores when it has them)."""
    mix = inline_request_mix(trace, models, catalog)
    if mix is not None:  # the judged sample is read only when the trace's own scores do not do
        return mix
    columns = None
    if sample_file is not None:
        scale = parse_scale(plan.inputs.score_scale) if plan.inputs.score_scale else None
        sample = io.read_judged(sample_file, scale)
        if plan.inputs.judged_with:
            # the prompts the plan was made on: those judged for the whole cascade
            sample = sample.select(plan.inputs.judged_with)[0]
        columns = judged_columns(sample, models, catalog)[0]
    return request_mix(trace, models, catalog, columns, plan.simulation.seed)


# ---------------------------------------------------------------- optimisation

def optimize(trace: Path | None = None, quality: Path | None = None,
             cascade: Path | None = None, cluster: Path | None = None,
             quality_target: float | None = None, objective: str = DEFAULT_OBJECTIVE, *,
             catalog_dir: Path | None = None, profiles_dir: Path | None = None,
             engine: str | None = None, capacity_scale: float = 5.0,
             rate_per_s: float | None = None, rate_scale: float | None = None,
             quality_confidence: float = DEFAULT_CONFIDENCE, slo_p95_s: float | None = None,
             slo_ttft_s: float | None = None,
             progress: Progress | None = None) -> OptimizeResult:
    """Run the planner; missing inputs come from the bundled example."""
    say = progress or (lambda _msg: None)
    say("loading inputs")
    problem = load_problem(trace, quality, cascade, cluster, catalog_dir=catalog_dir,
                           quality_target=quality_target,
                           engine=None if engine is None else check_engine(engine),
                           rate_per_s=rate_per_s, rate_scale=rate_scale,
                           quality_confidence=quality_confidence)
    return bilevel.optimize(problem, perf_lookup(profiles_dir), objective,
                            capacity_scale, progress, slo_p95_s, slo_ttft_s)


def plan_json(plan: Plan, out: Path | None = None) -> str:
    """The plan as deterministic JSON text (NaN and inf written as null; the predicted figures
    keep their null fields, so the file has the same keys whatever was measured). `out`: the
    file it goes to, whose folder its input files are recorded relative to (so a folder holding
    the plan and its inputs can move, to another machine too)."""
    if out is not None:
        plan = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={
            "trace": _relative_to(plan.inputs.trace, out),
            "quality": _relative_to(plan.inputs.quality, out)})})
    doc = plan.model_dump(mode="python", exclude_none=True, exclude={"predicted"})
    if plan.predicted is not None:
        doc["predicted"] = plan.predicted.model_dump(mode="python")
    return json.dumps(clean(doc), indent=2) + "\n"


# ---------------------------------------------------------------- exports

EXPORT_FORMATS = ("vllm", "sglang", "k8s", "router", "bench", "all")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: list[Path]
    warnings: list[str]
    replicas: int

    def to_dict(self) -> dict:
        return {"out": str(self.out), "files": [str(p) for p in self.files],
                "warnings": self.warnings, "replicas": self.replicas}


def _placed(plan_path: Path, catalog_dir: Path | None
            ) -> tuple[Plan, Deployment, list[Replica]]:
    """The plan, resolved and its replicas placed on the nodes, as every export and the router
    see it (placement needs no costs: the analytic model resolves it, no profiles read)."""
    plan = load_plan(plan_path)
    dep = resolve_deployment(plan, load_catalog(catalog_dir), str(plan_path), analytic_lookup)
    return plan, dep, place(dep)


def _score_scale(plan_path: Path, plan: Plan) -> str | None:
    """The scale the plan's judge answers on: the plan's own, else its judged sample's
    declared one (None when the sample is not at hand)."""
    if plan.inputs.score_scale:
        return plan.inputs.score_scale
    sample = _relative(plan_path, plan.inputs.quality)
    if sample is None or not sample.is_file():
        return None
    lo, hi = io.read_judged(sample).score_scale
    return f"{lo:g}-{hi:g}"


def router_config(plan_path: Path | None = None, config_path: Path | None = None,
                  catalog_dir: Path | None = None) -> RouterConfig:
    """What `route` runs: a cascade.yaml as exported (edited or not), or the router config of
    a plan, placed as its exports are."""
    if (plan_path is None) == (config_path is None):
        raise InputError("route takes --plan or --config (one of them)",
                         "pass the plan, or the cascade.yaml that export wrote")
    if config_path is not None:
        cfg, where = load_yaml_model(config_path, RouterConfig), str(config_path)
    else:
        plan, dep, replicas = _placed(plan_path, catalog_dir)
        cfg = build_router_config(dep.plan, replicas, _score_scale(plan_path, plan))
        where = str(plan_path)
    j = cfg.judger
    if j.unfilled:
        raise InputError(f"{where}: the judger has no endpoints or model to call",
                         "export --format router and fill in judger.endpoints and "
                         "judger.model of cascade.yaml (or set judger.kind: logprob)")
    for tier in cfg.tiers[:-1]:
        if tier.threshold is None:
            raise InputError(f"{where}: tier {tier.name} has no threshold",
                             "give every tier but the last a threshold (0-100)")
    parse_scale(j.score_scale, "judger.score_scale")
    return cfg


def export(plan_path: Path, fmt: str, out: Path, force: bool = False,
           trace_path: Path | None = None, catalog_dir: Path | None = None) -> ExportResult:
    """Render the plan's launch files and write them to `out` in one move."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format {fmt!r} is not known", "use " + ", ".join(EXPORT_FORMATS))
    plan, dep, replicas = _placed(plan_path, catalog_dir)
    formats = list(FORMATS) if fmt == "all" else [fmt]
    trace = None
    if "bench" in formats:
        trace_file = trace_path or _relative(plan_path, plan.inputs.trace)
        if trace_file is None:
            raise InputError(f"{plan_path}: no trace for the bench export",
                             "pass --trace or set inputs.trace")
        trace = load_trace(trace_file)
    warnings: list[str] = []
    # the judge's score scale is written into the router's config (router and k8s exports)
    # only: the other formats need not read the judged sample
    scale = (_score_scale(plan_path, plan) if {"router", "k8s"} & set(formats) else None)
    carriers = [name for f, name in (("router", "router/cascade.yaml"),
                                     ("k8s", "k8s/router.yaml (its ConfigMap's cascade.yaml)"))
                if f in formats]
    if scale is None and carriers:
        warnings.append(" and ".join(carriers) + ": the plan's judged sample is not at hand, "
                        "so judger.score_scale is 0-100; set it to the scale your judge "
                        "answers on")
    files = render_exports(dep.plan, replicas, formats, trace, warnings, scale)
    # what the export reads: no folder holding one of them is replaced
    inputs = [p for p in (plan_path, trace_path, _relative(plan_path, plan.inputs.trace),
                          _relative(plan_path, plan.inputs.quality)) if p is not None]
    written = write_tree(files, out, force, inputs, warnings)
    return ExportResult(out, written, warnings, len(replicas))


def cascade_schema() -> dict:
    return RouterConfig.model_json_schema()
