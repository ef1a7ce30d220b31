"""The `cascadia-plan` command line: parse → api → render. Nothing else lives here."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer

from planner_cli import __version__, api, render
from planner_cli.errors import MissingDependencyError, PlannerError
from planner_cli.export.router import ROUTER_PORT
from planner_cli.io import refuse_existing, write_text_atomic
from planner_cli.perf.memory import DEFAULT_GPU_MEMORY_UTILIZATION
from planner_cli.perf.profiles import PROFILES_ENV
from planner_cli.specs.catalog import CATALOG_ENV
from planner_cli.workload.importers import FORMATS
from planner_cli.workload.judged import parse_scale
from planner_cli.workload.synth import Arrival

app = typer.Typer(
    name="cascadia-plan", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Plan GPU allocation, parallelism and routing thresholds for serving an LLM cascade.")
catalog_app = typer.Typer(no_args_is_help=True, help="The shipped GPU and model catalog.")
trace_app = typer.Typer(no_args_is_help=True, help="Look at, convert and synthesise traces.")
perf_app = typer.Typer(invoke_without_command=True,
                       help="Predict one replica shape's memory and iteration time; "
                            "`perf calibrate` fits the model to measurements.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(trace_app, name="trace")
app.add_typer(perf_app, name="perf")

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(func: F) -> F:
    """Expected problems become one line on stderr and a non-zero exit; bugs keep their
    traceback. With --debug, expected problems keep theirs too."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PlannerError as exc:
            if _ROOT_OPTIONS.get("debug"):
                raise
            typer.echo(f"error: {exc.one_line()}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return cast(F, wrapper)


# The root options of the invocation in progress, set by `root` before any command runs.
_ROOT_OPTIONS: dict[str, Any] = {}


def _catalog_dir() -> Path | None:
    return _ROOT_OPTIONS.get("catalog_dir")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cascadia-plan {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    catalog_dir: Annotated[Path | None, typer.Option(
        envvar=CATALOG_ENV, help="Folder with hardware/ and model_cards/ to use instead of "
        "the shipped catalog.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks for input errors too.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _ROOT_OPTIONS.clear()
    _ROOT_OPTIONS.update(catalog_dir=catalog_dir, debug=debug)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
PrecisionOpt = Annotated[str | None, typer.Option(
    help="bf16, fp8 (per-tensor scales), fp8-block (128x128 block scales, as DeepSeek's and "
    "Qwen's FP8 checkpoints), int4-awq, fp4 (NVFP4, Blackwell), mxfp4 (gpt-oss's 4-bit "
    "experts) or mxfp4-mxfp8 (those experts with MXFP8 activations, Blackwell: vLLM's "
    "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1) (default: a pre-quantised checkpoint's own, else "
    "bf16).")]
QualityConfidenceOpt = Annotated[float, typer.Option(
    help="Hold the quality target to a bootstrap lower bound of Q at this confidence "
    "(resampling the judged prompts, within each `category` when the sample has one); 0.5: "
    "the plain sample mean.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]
ProfilesOpt = Annotated[Path | None, typer.Option(
    "--profiles", envvar=PROFILES_ENV, help="Folder of measured profiles and calibrations "
    "(default: ./profiles).")]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="Serving engine: vllm or sglang (default: the cascade file's per model, "
    "else vllm). Selects aiconfigurator-core's measured tables and the saved calibrations.")]
KvDtypeOpt = Annotated[str, typer.Option(
    "--kv-cache-dtype", help="KV-cache element type: bf16, or fp8 (half the bytes per token, "
    "as the engines' --kv-cache-dtype fp8).")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help=f"Input format ({', '.join(FORMATS)}); default: detected.")]
RateOpt = Annotated[float | None, typer.Option(
    "--rate", help="Arrival rate (req/s) for files without arrival times.")]
ArrivalOpt = Annotated[str, typer.Option(
    "--arrival", help="Arrival process for synthesised arrivals: poisson or gamma.")]
CvOpt = Annotated[float, typer.Option(
    "--cv", help="Inter-arrival coefficient of variation for gamma arrivals (1 = Poisson).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]
# The four inputs of a planning problem; each defaults to the bundled example's.
TraceOpt = Annotated[Path | None, typer.Option(help="Trace file (default: bundled).")]
QualityOpt = Annotated[Path | None, typer.Option(help="Judged sample CSV (default: bundled).")]
CascadeOpt = Annotated[Path | None, typer.Option(help="Cascade YAML (default: bundled).")]
ClusterOpt = Annotated[Path | None, typer.Option(help="Cluster YAML (default: bundled).")]
DpOpt = Annotated[int, typer.Option(
    help="Attention data-parallel ranks (MoE models; vLLM --data-parallel-size with "
    "--enable-expert-parallel, SGLang --dp with --enable-dp-attention): dp ranks of tp GPUs "
    "each, every rank serving attention for its own requests, the experts spread over all "
    "tp x dp GPUs (ep of them). Timed from the measured tables only.")]


def _arrivals(rate: float | None, arrival: str, cv: float, seed: int) -> api.ArrivalOptions:
    if arrival not in ("poisson", "gamma"):
        raise PlannerError(f"--arrival {arrival!r} is not known", "use poisson or gamma")
    return api.ArrivalOptions(rate_per_s=rate, arrival=cast(Arrival, arrival), cv=cv, seed=seed)


# ---------------------------------------------------------------- catalog

@catalog_app.command("gpus")
@handles_errors
def catalog_gpus(as_json: JsonOpt = False) -> None:
    """List the GPU types: memory, bandwidth, FLOP/s, links."""
    rows = api.gpu_rows(_catalog_dir())
    render.emit_json(rows) if as_json else render.gpus_table(rows)


@catalog_app.command("models")
@handles_errors
def catalog_models(as_json: JsonOpt = False) -> None:
    """List the model cards with their derived sizes (parameters, weights, KV cache)."""
    rows = api.model_rows(_catalog_dir())
    render.emit_json(rows) if as_json else render.models_table(rows)


@catalog_app.command("import-hf")
@handles_errors
def catalog_import_hf(
    config: Annotated[Path, typer.Argument(help="A Hugging Face config.json.")],
    name: Annotated[str | None, typer.Option(help="Card name (default: from the HF id).")] = None,
    hf_id: Annotated[str | None, typer.Option(help="The HF repo id, e.g. org/Model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the card here (default: stdout).")] = None,
    force: ForceOpt = False,
) -> None:
    """Turn an HF config.json into a model card (needs the `profile` extra: transformers)."""
    if out is not None and out.exists() and not force:
        raise PlannerError(f"{out}: already exists", "pass --force to replace it")
    text = api.import_hf(config, name=name, hf_id=hf_id)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, [text])
        render.console().print(f"wrote {out}")


# ---------------------------------------------------------------- traces

@trace_app.command("stats")
@handles_errors
def trace_stats(
    file: Annotated[Path, typer.Argument(help="A trace: canonical/Mooncake JSONL, Azure CSV, "
                                         "or a length-only CSV (with --rate).")],
    fmt: FormatOpt = None, rate: RateOpt = None, arrival: ArrivalOpt = "poisson",
    cv: CvOpt = 1.0, seed: SeedOpt = 0, as_json: JsonOpt = False,
) -> None:
    """Requests, duration, rate, burstiness and length percentiles of a trace."""
    stats = api.stats_of(file, fmt, _arrivals(rate, arrival, cv, seed))
    render.emit_json(stats.to_dict()) if as_json else render.trace_table(stats, str(file))


@trace_app.command("convert")
@handles_errors
def trace_convert(
    src: Annotated[Path, typer.Argument(help="The trace to convert.")],
    out: Annotated[Path, typer.Option("--out", help="Canonical JSONL to write.")],
    fmt: FormatOpt = None, rate: RateOpt = None, arrival: ArrivalOpt = "poisson",
    cv: CvOpt = 1.0, seed: SeedOpt = 0, force: ForceOpt = False, as_json: JsonOpt = False,
) -> None:
    """Convert any supported trace format to canonical (Mooncake-compatible) JSONL."""
    stats = api.convert(src, out, fmt, _arrivals(rate, arrival, cv, seed), force)
    render.emit_json(stats.to_dict()) if as_json else render.trace_table(stats, f"wrote {out}")


@trace_app.command("synth")
@handles_errors
def trace_synth(
    out: Annotated[Path, typer.Option("--out", help="Canonical JSONL to write.")],
    rate: Annotated[float, typer.Option("--rate", help="Mean arrival rate, req/s.")],
    lengths: Annotated[Path, typer.Option(
        "--lengths", help="Where (input, output) length pairs are drawn from: any trace or a "
        "length-only CSV.")],
    num_requests: Annotated[int | None, typer.Option(help="How many requests.")] = None,
    duration_s: Annotated[float | None, typer.Option(help="Or: how many seconds.")] = None,
    arrival: ArrivalOpt = "poisson", cv: CvOpt = 1.0, seed: SeedOpt = 0,
    force: ForceOpt = False, as_json: JsonOpt = False,
) -> None:
    """Make a seeded synthetic trace: Poisson or Gamma arrivals, lengths from real data."""
    stats = api.synthesise(out, lengths, _arrivals(rate, arrival, cv, seed), num_requests,
                           duration_s, force)
    render.emit_json(stats.to_dict()) if as_json else render.trace_table(stats, f"wrote {out}")


# ---------------------------------------------------------------- check

def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PlannerError(f"{what} {text!r} is not a comma-separated list of numbers",
                           "write e.g. 60,75") from None


@app.command("check")
@handles_errors
def check(
    trace: TraceOpt = None, quality: QualityOpt = None, cascade: CascadeOpt = None,
    cluster: ClusterOpt = None,
    thresholds: Annotated[str | None, typer.Option(
        help="Route with these thresholds (0-100, one per stage but the last), e.g. 60,75.")
    ] = None,
    score_scale: Annotated[str | None, typer.Option(
        help="The judged sample's score scale, e.g. 1-10 (else its '# score_scale' line).")
    ] = None,
    quality_confidence: QualityConfidenceOpt = 0.9,
    as_json: JsonOpt = False,
) -> None:
    """Validate a planning problem's inputs and summarise them (no flags: bundled example).

    Checks the cluster, cascade, trace and judged sample against each other and the catalog,
    then shows the cascade's models, the trace, the judged quality and how thresholds route
    requests.
    """
    example = api.bundled_example()
    report = api.check(
        trace or example.trace, quality or example.quality, cascade or example.cascade,
        cluster or example.cluster, _catalog_dir(), _floats(thresholds, "--thresholds"),
        parse_scale(score_scale) if score_scale else None,
        quality_confidence=quality_confidence)
    if as_json:
        render.emit_json(report.to_dict())
    else:
        uses_example = not any((trace, quality, cascade, cluster))
        render.check_report(report, "Bundled example (examples/NOTICE.md)" if uses_example
                            else "Inputs")


# ---------------------------------------------------------------- performance model

def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PlannerError(f"{what} {text!r} is not a comma-separated list of integers",
                           "write e.g. 1,2,4") from None
    if not values:
        raise PlannerError(f"{what} is empty", "write e.g. 1,2,4")
    return values


@app.command("profile")
@handles_errors
def profile(
    model: Annotated[str, typer.Option(help="Model card name, alias or HF id.")],
    device: Annotated[str | None, typer.Option(
        help="cuda or cpu (default: cuda when a GPU is visible).")] = None,
    tp: Annotated[str, typer.Option(help="Tensor-parallel sizes to profile, e.g. 1,2,4.")] = "1",
    layers: Annotated[int | None, typer.Option(
        help="Profile this many layers and scale by layer count (default: all).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller grid, fewer repeats.")
                     ] = False,
    dtype: Annotated[str | None, typer.Option(
        help="bfloat16, float16 or float32 (default: bfloat16 on CUDA, float32 on CPU).")
    ] = None,
    reps: Annotated[int | None, typer.Option(help="Timed repeats per point (median).")] = None,
    profiles: ProfilesOpt = None, force: ForceOpt = False, as_json: JsonOpt = False,
) -> None:
    """Measure a model's prefill and decode iteration times on this machine.

    Builds the model from its card with random weights (nothing is downloaded), times a grid of
    (prefill tokens, decode batch, context) and writes profiles/<device>/<model>/profile.csv and
    profile.yaml; `perf` and the planner then use it for that device, model and tp.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=render.console(),
            transient=True) as bar:
        task = bar.add_task("loading model", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = api.run_profile(model, device, _ints(tp, "--tp"), layers, quick, dtype, reps,
                                 force, catalog_dir=_catalog_dir(), profiles_dir=profiles,
                                 progress=progress)
    if as_json:
        render.emit_json(result)
    else:
        render.profile_table(result)


@perf_app.callback()
@handles_errors
def perf(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model card name, alias or HF id.")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU name (or cpu, with a CPU profile).")
                   ] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel size.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel size.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel size inside tp (MoE models).")] = 1,
    dp: DpOpt = 1,
    precision: PrecisionOpt = None,
    prefill_tokens: Annotated[int, typer.Option(help="Tokens prefilled this iteration.")] = 0,
    batch: Annotated[int, typer.Option(help="Sequences decoded this iteration.")] = 0,
    context: Annotated[float, typer.Option(
        help="Context tokens the decoding sequences hold in total.")] = 0.0,
    prefill_context: Annotated[float, typer.Option(
        help="Tokens already cached before the prefill chunk (chunked prefill).")] = 0.0,
    prefill_seqs: Annotated[int, typer.Option(
        help="Prompts the prefill tokens belong to (attention is per prompt).")] = 1,
    engine: EngineOpt = None,
    profiles: ProfilesOpt = None,
    gpu_memory_utilization: Annotated[float, typer.Option(
        help="Share of GPU memory the engine may use.")] = DEFAULT_GPU_MEMORY_UTILIZATION,
    max_model_len: Annotated[int | None, typer.Option(
        help="Longest request to fit (default: the model's context length).")] = None,
    kv_cache_dtype: KvDtypeOpt = "bf16",
    as_json: JsonOpt = False,
) -> None:
    """Predict one replica shape: memory, KV capacity and one iteration's time, with its source.

    The source is a measured profile of the same device, model and tp when one exists under
    profiles/, else a saved calibration, else aiconfigurator-core's measured kernel tables for
    the engine where they cover the shape, else the analytic roofline with default constants.
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None or gpu is None:
        raise PlannerError("perf needs --model and --gpu",
                           "e.g. cascadia-plan perf --model llama-3.1-8b --gpu h100-sxm --batch 8 "
                           "--context 8000")
    result = api.perf_predict(model, gpu, tp, pp, precision, prefill_tokens, batch, context,
                              prefill_context, prefill_seqs, catalog_dir=_catalog_dir(),
                              profiles_dir=profiles, engine=engine,
                              gpu_memory_utilization=gpu_memory_utilization,
                              max_model_len=max_model_len, kv_cache_dtype=kv_cache_dtype, ep=ep,
                              dp=dp)
    render.emit_json(result) if as_json else render.perf_table(result)


@perf_app.command("serve")
@handles_errors
def perf_serve(
    model: Annotated[str, typer.Option(help="Model card name, alias or HF id.")],
    gpu: Annotated[str, typer.Option(help="GPU name.")],
    isl: Annotated[int, typer.Option(help="Input (prompt) tokens of every request.")],
    osl: Annotated[int, typer.Option(help="Output tokens of every request.")],
    concurrency: Annotated[int, typer.Option(help="Closed-loop clients (--max-concurrency).")],
    tp: Annotated[int, typer.Option(help="Tensor-parallel size.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel size.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel size inside tp (MoE models).")] = 1,
    dp: DpOpt = 1,
    precision: PrecisionOpt = None,
    engine: EngineOpt = None,
    num_prompts: Annotated[int | None, typer.Option(
        help="Requests in the run (default: 10 per client, at least 100).")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(
        help="The engine's sequence cap (vLLM --max-num-seqs, SGLang --max-running-requests; "
        "default: the engine's own for the GPU; with --dp, each rank's).")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(
        help="The engine's token budget per iteration (vLLM --max-num-batched-tokens, SGLang "
        "--chunked-prefill-size; default: the engine's own for the GPU; with --dp, each "
        "rank's).")] = None,
    random_range_ratio: Annotated[float, typer.Option(
        help="Spread of the request lengths, as the benchmark's --random-range-ratio: each "
        "length uniform in [L·(1-R), L·(1+R)] (0: fixed).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampled lengths.")] = 0,
    kv_cache_dtype: KvDtypeOpt = "bf16",
    gpu_memory_utilization: Annotated[float, typer.Option(
        help="Share of GPU memory for weights and KV cache (vLLM --gpu-memory-utilization, "
        "SGLang --mem-fraction-static).")] = DEFAULT_GPU_MEMORY_UTILIZATION,
    scheduler_recv_interval: Annotated[int, typer.Option(
        help="SGLang --scheduler-recv-interval: new requests are taken in every N decode "
        "iterations (1: every iteration, SGLang's default).")] = 1,
    profiles: ProfilesOpt = None, as_json: JsonOpt = False,
) -> None:
    """Predict what `vllm bench serve --max-concurrency C` reports for one replica.

    Fixed input and output lengths, C clients that each send the next request when the last
    one is answered: mean TTFT and TPOT (ms), output tokens/s and requests/s, from the
    simulator on the shape's performance source (printed), scheduled as the engine does
    (vLLM mixes prefill chunks into decode iterations; SGLang runs waiting prefills first).
    """
    result = api.perf_serve(model, gpu, isl, osl, concurrency, tp, pp, ep, precision, dp=dp,
                            num_prompts=num_prompts, engine=engine, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens,
                            range_ratio=random_range_ratio, seed=seed,
                            kv_cache_dtype=kv_cache_dtype,
                            gpu_memory_utilization=gpu_memory_utilization,
                            scheduler_recv_interval=scheduler_recv_interval,
                            catalog_dir=_catalog_dir(), profiles_dir=profiles)
    render.emit_json(result) if as_json else render.serve_table(result)


@perf_app.command("calibrate")
@handles_errors
def perf_calibrate(
    measurements: Annotated[Path, typer.Option(
        help="CSV: tp,pp,prefill_tokens,decode_batch,context_tokens,time_ms (a profile table "
        "works too).")],
    model: Annotated[str, typer.Option(help="Model card name, alias or HF id.")],
    gpu: Annotated[str, typer.Option(help="GPU name the measurements come from.")],
    engine: Annotated[str | None, typer.Option(
        help="Engine the measurements ran on: vllm (default) or sglang; the calibration is "
        "used for that engine.")] = None,
    precision: Annotated[str, typer.Option(help="Precision the measurements ran at.")] = "bf16",
    profiles: ProfilesOpt = None, as_json: JsonOpt = False,
) -> None:
    """Fit the analytic model's efficiencies and overheads to measured iteration times.

    Reports the fit error and a cross-validated error (leave one tp out when several were
    measured), and saves it as profiles/<gpu>/<model>/calibration-<engine>.yaml for the planner.
    """
    result = api.calibrate_from(measurements, model, gpu, engine, precision,
                                catalog_dir=_catalog_dir(), profiles_dir=profiles)
    render.emit_json(result) if as_json else render.calibration_table(result)


# ---------------------------------------------------------------- simulation

@app.command("simulate")
@handles_errors
def simulate(
    plan: Annotated[Path, typer.Option(help="The plan (plan.json or YAML).")],
    trace: Annotated[Path | None, typer.Option(
        help="Replay this trace instead of the plan's.")] = None,
    quality: Annotated[Path | None, typer.Option(
        help="Judged sample for the scores, if the trace has none inline.")] = None,
    rate_scale: Annotated[float | None, typer.Option(
        help="Multiply the trace's arrival rate by this (default: the plan's, which optimize "
        "--rate / --rate-scale set; else 1).")] = None,
    balancer: Annotated[str | None, typer.Option(
        help="round-robin or least-outstanding (default: the plan's).")] = None,
    capacity_at_scale: Annotated[float | None, typer.Option(
        help="Also find the largest rate multiple that keeps this SLO scale.")] = None,
    requests_out: Annotated[Path | None, typer.Option(
        help="Write per-request TTFT, TPOT, end-to-end latency and answering stage (CSV).")
    ] = None,
    engine: EngineOpt = None, profiles: ProfilesOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replay a trace through a plan: latency per stage and end to end, throughput, SLO scale.

    Every replica is a continuous-batching engine (token budget, sequence cap, KV cache with
    preemption); requests escalate through the stages by their judge scores and the plan's
    thresholds, paying the judger's latency between stages.
    """
    if requests_out is not None:
        refuse_existing(requests_out, force, "--requests-out")
    result, trace_file = api.simulate_plan(
        plan, trace, quality, rate_scale, balancer, capacity_at_scale,
        catalog_dir=_catalog_dir(), profiles_dir=profiles, engine=engine)
    if requests_out is not None:
        write_text_atomic(requests_out, render.csv_lines(result.per_request))
    if as_json:
        render.emit_json({"plan": str(plan), "trace": str(trace_file)} | result.summary())
    else:
        render.simulation_tables(result, str(trace_file))


# ---------------------------------------------------------------- optimisation

@app.command("optimize")
@handles_errors
def optimize(
    trace: TraceOpt = None, quality: QualityOpt = None, cascade: CascadeOpt = None,
    cluster: ClusterOpt = None,
    quality_target: Annotated[float | None, typer.Option(
        help="Quality target on the 0-100 scale (default: the cascade file's).")] = None,
    objective: Annotated[str, typer.Option(
        help="latency: the lowest simulated end-to-end p95 at the planned rate (every stage a "
        "request visits and its judge calls); capacity: the highest sustainable rate at which "
        "the p95 stays within --slo-p95; cost: sizing, the fewest GPUs (the lowest USD/h "
        "where pools have prices; the pools are upper bounds) whose simulated p95 stays "
        "within --slo-p95.")] = "latency",
    slo_p95: Annotated[float | None, typer.Option(
        help="End-to-end p95 latency SLO in seconds for --objective capacity and cost "
        "(default: the cascade file's slo.e2e_s).")] = None,
    slo_ttft: Annotated[float | None, typer.Option(
        help="Sizing (--objective cost) also keeps the p95 time to first token within this "
        "many seconds.")] = None,
    rate: Annotated[float | None, typer.Option(
        help="Plan for this arrival rate (requests/s): the trace's arrival pattern replayed "
        "at it (default: the trace's mean rate).")] = None,
    rate_scale: Annotated[float | None, typer.Option(
        help="Plan for the trace's arrivals this many times faster (instead of --rate).")
    ] = None,
    quality_confidence: QualityConfidenceOpt = 0.9,
    out: Annotated[Path, typer.Option(help="Where to write the plan.")] = Path("plan.json"),
    capacity_slo_scale: Annotated[float, typer.Option(
        help="SLO scale at which throughput capacity is measured.")] = 5.0,
    dump_lp: Annotated[Path | None, typer.Option(
        help="Also write the chosen thresholds' MILP as an .lp file.")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write pareto.png and attainment.png into this folder (needs matplotlib).")
    ] = None,
    engine: EngineOpt = None, profiles: ProfilesOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace existing --out / --dump-lp files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan the cascade: which models, thresholds, GPUs and parallelism (no flags: bundled
    example).

    Every ordered sub-cascade of the given models is a candidate (each model alone, each
    shorter chain, the whole chain). For each, the outer search over thresholds (the paper's
    objective for the quality target, and weighted Tchebycheff for the Pareto front) solves the
    inner MILP for each candidate; the best plans of every member are replayed through the
    simulator at the planned rate and the best simulated one is written, whichever member it
    is, with the baselines (single model, even split, uniform parallelism) and the gains over
    them. With no quality target (flag or cascade file) it plans the fastest, with no quality
    floor.
    """
    refuse_existing(out, force)
    if dump_lp is not None:
        refuse_existing(dump_lp, force, "--dump-lp")
    if plot is not None and not plot.is_dir():
        raise PlannerError(f"--plot {plot}: not a folder", "create it first")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--plot needs matplotlib",
                                         "pip install 'cascadia-plan[plot]'") from None
    with render.console().status("planning") as status:
        result = api.optimize(trace, quality, cascade, cluster, quality_target, objective,
                              catalog_dir=_catalog_dir(), profiles_dir=profiles, engine=engine,
                              capacity_scale=capacity_slo_scale, rate_per_s=rate,
                              rate_scale=rate_scale, quality_confidence=quality_confidence,
                              slo_p95_s=slo_p95, slo_ttft_s=slo_ttft,
                              progress=lambda msg: status.update(msg))
    write_text_atomic(out, [api.plan_json(result.plan, out)])
    if dump_lp is not None:
        result.milp.write_lp(dump_lp)
    if plot is not None:
        render.plot_pngs(result, str(plot))
    if as_json:
        render.emit_json({"plan": json.loads(api.plan_json(result.plan, out)),
                          "timings": result.timings.to_dict(), "out": str(out)})
    else:
        render.optimize_tables(result, str(out))


# ---------------------------------------------------------------- exports

@app.command("export")
@handles_errors
def export(
    plan: Annotated[Path, typer.Option(help="The plan (plan.json or YAML).")],
    fmt: Annotated[str, typer.Option(
        "--format", help="vllm, sglang, k8s, router, bench or all.")],
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist or be empty).")],
    trace: Annotated[Path | None, typer.Option(
        help="Trace for the bench export (default: the plan's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the files that launch the plan: engine scripts, manifests, router, benchmark.

    vLLM and SGLang: one YAML config and one script per replica (per node for a replica that
    spans nodes); k8s: Deployments, Services and LeaderWorkerSets; router: the cascade's own
    cascade.yaml, a vLLM Semantic Router config and a LiteLLM config; bench: the trace in
    Mooncake JSONL and the vllm bench / aiperf commands. Written in one move: a failure leaves
    nothing behind, and the same plan gives byte-identical files.
    """
    result = api.export(plan, fmt, out, force, trace, _catalog_dir())
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    if as_json:
        render.emit_json(result.to_dict())
    else:
        render.console().print(f"wrote {len(result.files)} files for {result.replicas} "
                               f"replicas under {result.out}")


@app.command("route")
@handles_errors
def route(
    plan: Annotated[Path | None, typer.Option(help="The plan to run (placed as its exports).")]
    = None,
    config: Annotated[Path | None, typer.Option(
        help="A router config: the cascade.yaml of export --format router.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = ROUTER_PORT,
) -> None:
    """Run the cascade: an OpenAI-compatible router in front of the tiers.

    /v1/chat/completions and /v1/completions ask tier 1, score its answer with the judger,
    return it when the score reaches the tier's threshold and ask the next tier otherwise;
    /v1/models, /health and /metrics (Prometheus) beside them.

    Needs the router extra (pip install 'cascadia-plan\\[router]'). It starts while the
    engines are still loading; /health says which tier has no reachable replica. With
    CASCADIA_API_KEY set, clients must send it as a Bearer token (and the engines receive it).
    """
    cfg = api.router_config(plan, config, _catalog_dir())
    try:
        from planner_cli.router import server
    except ImportError as exc:
        raise MissingDependencyError(f"the router needs {exc.name}",
                                     "pip install 'cascadia-plan[router]'") from None
    typer.echo(f"routing {cfg.name} ({' -> '.join(t.model for t in cfg.tiers)}) on "
               f"http://{host}:{port}/v1; Ctrl-C stops", err=True)
    server.serve(cfg, host, port)


@app.command("replay")
@handles_errors
def replay(
    plan: Annotated[Path, typer.Option(help="The plan whose predictions to compare with.")],
    url: Annotated[str, typer.Option(help="The running cascade: the router's base URL.")],
    trace: Annotated[Path | None, typer.Option(help="Trace to send (default: the plan's).")]
    = None,
    quality: Annotated[Path | None, typer.Option(
        help="Judged sample for the plan's prediction (default: the plan's).")] = None,
    rate_scale: Annotated[float | None, typer.Option(
        help="Send the arrivals this many times faster (default: the plan's).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Measure a running cascade against its plan's predictions for the same trace.

    Sends the trace's requests to the router at their timestamps (completions of the trace's
    lengths, streamed), then prints the share each tier answered, end-to-end and first-token
    latency percentiles and the share meeting the SLO, beside what the plan's simulation
    predicts for the same requests.

    Needs the router extra. The API key, when the router wants one, comes from
    CASCADIA_API_KEY.
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise MissingDependencyError("replay needs aiohttp",
                                     "pip install 'cascadia-plan[router]'") from None
    out = render.console()
    with out.status("replaying ...") as status:
        def progress(done: int) -> None:
            status.update(f"replaying: {done:,} answered")

        report = api.replay_plan(plan, url, trace, quality, rate_scale,
                                 os.environ.get("CASCADIA_API_KEY"), timeout, progress,
                                 _catalog_dir())
    if as_json:
        render.emit_json(report.to_dict())
    else:
        render.replay_table(report.to_dict())


schema_app = typer.Typer(no_args_is_help=True, help="JSON Schemas of the files the tool writes.")
app.add_typer(schema_app, name="schema")


@schema_app.command("cascade")
@handles_errors
def schema_cascade() -> None:
    """The JSON Schema of the router's cascade.yaml (export --format router)."""
    render.emit_json(api.cascade_schema())


def _reflowed_help(*apps: typer.Typer) -> None:
    """Each command's help from its docstring with each paragraph on one line: typer keeps the
    docstring's line breaks after its first paragraph, which then break in mid-sentence
    wherever the terminal is narrower than the source's lines."""
    for group in apps:
        for info in group.registered_commands:
            doc = inspect.getdoc(info.callback) if info.callback else None
            if info.help is None and doc:
                info.help = "\n\n".join(" ".join(line.strip() for line in para.splitlines())
                                         for para in doc.split("\n\n"))


_reflowed_help(app, catalog_app, trace_app, perf_app, schema_app)


def main() -> None:
    app()
