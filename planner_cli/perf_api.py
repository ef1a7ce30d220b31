"""Orchestration of the performance-model commands (perf, perf serve, perf calibrate,
profile): load the catalog, resolve the shape, find its source, call the core. Part of the api
layer (api.py re-exports these), kept apart so each file reads in one sitting."""

from __future__ import annotations

from pathlib import Path

from planner_cli.errors import InputError
from planner_cli.perf.calibrate import calibrate
from planner_cli.perf.engines import (
    FRONTEND_S,
    OUTPUT_LAG,
    UNCAPPED_SEQS,
    engine_defaults,
    prefill_first,
)
from planner_cli.perf.memory import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    memory_figures,
)
from planner_cli.perf.model import CPU_SPEC
from planner_cli.perf.profiles import (
    check_engine,
    perf_model,
    profile_folder,
    profiles_root,
    read_measurements,
    write_calibration,
    write_profile,
)
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.sim.closed_loop import closed_loop
from planner_cli.specs.catalog import load_catalog
from planner_cli.specs.gpu import GpuSpec

SERVE_PROMPTS_PER_CLIENT = 10  # perf serve's default --num-prompts: 10 per client,
SERVE_MIN_PROMPTS = 100  # and at least this many (steady state dominates the means)


def resolve_gpu(name: str, catalog_dir: Path | None = None) -> GpuSpec:
    """A GPU card, or the nominal CPU reference for `cpu` (usable with CPU profiles)."""
    if name.strip().lower() == "cpu":
        return CPU_SPEC
    return load_catalog(catalog_dir).gpu(name)


def perf_predict(model: str, gpu: str, tp: int = 1, pp: int = 1, precision: str | None = None,
                 prefill_tokens: int = 0, batch: int = 0, context: float = 0.0,
                 prefill_context: float = 0.0, prefill_seqs: int = 1, *,
                 catalog_dir: Path | None = None, profiles_dir: Path | None = None,
                 engine: str | None = None,
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
                 max_model_len: int | None = None, kv_cache_dtype: str = "bf16",
                 ep: int = 1, dp: int = 1) -> dict:
    """Memory figures and the predicted iteration time of one replica shape, with its source
    (`ep`: experts spread over that many GPUs of the tp group, MoE models; `dp`: attention
    data-parallel ranks of tp GPUs each, the experts over all of them: the iteration's
    prompts and decodes are the replica's, spread evenly over the ranks)."""
    if prefill_tokens < 0 or batch < 0 or context < 0 or prefill_context < 0:
        raise InputError("token counts must be >= 0", "fix --prefill-tokens/--batch/--context")
    if prefill_seqs < 1 or (prefill_tokens and prefill_seqs > prefill_tokens):
        raise InputError(f"--prefill-seqs {prefill_seqs} is not between 1 and the prefill tokens",
                         "the prefill tokens are shared by that many prompts")
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
    precision = card.served_precision(model, precision, "--model")
    shape = ReplicaShape(card, resolve_gpu(gpu, catalog_dir), tp, pp, precision,
                         kv_dtype=kv_cache_dtype, ep=ep, dp=dp)
    pm = perf_model(shape, profiles_dir, engine)
    mem = pm.memory(gpu_memory_utilization, max_model_len)
    breakdown = pm.iteration(prefill_tokens, batch, context, prefill_context, prefill_seqs)
    return {"shape": {"model": card.name, "gpu": shape.gpu.name, "tp": tp, "pp": pp, "ep": ep,
                      "dp": dp, "precision": precision, "gpus": shape.gpus},
            "iteration": {"prefill_tokens": prefill_tokens, "decode_batch": batch,
                          "context_tokens": context, "prefill_context": prefill_context},
            "memory": mem.to_dict(), "time_ms": breakdown["total_s"] * 1e3,
            "breakdown_ms": {k.removesuffix("_s"): v * 1e3
                             for k, v in breakdown.items() if k != "total_s"},
            "source": pm.source}


def perf_serve(model: str, gpu: str, isl: int, osl: int, concurrency: int, tp: int = 1,
               pp: int = 1, ep: int = 1, precision: str | None = None, *, dp: int = 1,
               num_prompts: int | None = None, engine: str | None = None,
               max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
               gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
               range_ratio: float = 0.0, seed: int = 0, kv_cache_dtype: str = "bf16",
               scheduler_recv_interval: int = 1, output_range_ratio: float | None = None,
               catalog_dir: Path | None = None, profiles_dir: Path | None = None) -> dict:
    """What `vllm bench serve --max-concurrency C` with random lengths would report for one
    replica: the simulator driven by C closed-loop clients, scheduled as the engine does, with
    the engine's own batching defaults for the GPU where none are given. With `dp`
    attention data-parallel ranks the token budget and sequence cap are each rank's, as the
    engines' flags are; the replica is simulated as one engine holding all the ranks' requests,
    spread evenly over them, every iteration taking its busiest rank's time.
    `output_range_ratio` spreads the output lengths alone where it differs from
    `range_ratio` (a benchmark whose outputs end at the model's end-of-sequence token)."""
    for name, value in (("--isl", isl), ("--osl", osl), ("--concurrency", concurrency)):
        if value < 1:
            raise InputError(f"{name} {value} is below 1", f"pass {name} >= 1")
    prompts = num_prompts if num_prompts is not None else max(SERVE_PROMPTS_PER_CLIENT
                                                              * concurrency, SERVE_MIN_PROMPTS)
    if prompts < 1:
        raise InputError(f"--num-prompts {prompts} is below 1", "pass --num-prompts >= 1")
    if output_range_ratio is None:
        output_range_ratio = range_ratio
    for name, ratio in (("--random-range-ratio", range_ratio),
                        ("output range ratio", output_range_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise InputError(f"{name} {ratio} is outside [0, 1)",
                             "pass a ratio from 0 (fixed lengths) up to below 1")
    engine = check_engine(engine)
    if scheduler_recv_interval < 1:
        raise InputError(f"--scheduler-recv-interval {scheduler_recv_interval} is below 1",
                         "pass 1 (every iteration) or more")
    if scheduler_recv_interval > 1 and not prefill_first(engine):
        raise InputError(f"--scheduler-recv-interval is an SGLang flag; {engine} takes new "
                         "requests in every iteration", "drop it, or pass --engine sglang")
    card = load_catalog(catalog_dir).model(model)
    precision = card.served_precision(model, precision, "--model")
    shape = ReplicaShape(card, resolve_gpu(gpu, catalog_dir), tp, pp, precision,
                         kv_dtype=kv_cache_dtype, ep=ep, dp=dp)
    defaults = engine_defaults(engine, shape.gpu)
    max_num_seqs = max_num_seqs or defaults.max_num_seqs
    max_num_batched_tokens = max_num_batched_tokens or defaults.max_num_batched_tokens
    if max_num_batched_tokens < max_num_seqs and not defaults.prefill_first:
        raise InputError(f"--max-num-batched-tokens {max_num_batched_tokens} is below "
                         f"--max-num-seqs {max_num_seqs}", "raise the token budget")
    longest = int(isl * (1 + range_ratio)) + int(osl * (1 + output_range_ratio))
    mem = memory_figures(shape, gpu_memory_utilization, longest, max_num_batched_tokens,
                         max_num_seqs)
    if not mem.fits:
        raise InputError(f"{shape.label} does not fit: {mem.reason}",
                         "raise tp or pp, or use a lower precision")
    pm = perf_model(shape, profiles_dir, engine)
    ranks_seqs = max_num_seqs if max_num_seqs >= UNCAPPED_SEQS else max_num_seqs * dp
    figures = closed_loop(pm.cost(), mem.kv_capacity_tokens, isl, osl, concurrency, prompts,
                          max_num_batched_tokens * dp, ranks_seqs, defaults.prefill_first,
                          range_ratio, seed, mem.state_tokens_per_sequence,
                          FRONTEND_S[engine], scheduler_recv_interval, OUTPUT_LAG[engine],
                          output_range_ratio)
    return {"model": card.name, "gpu": shape.gpu.name, "tp": tp, "pp": pp, "ep": ep, "dp": dp,
            "precision": precision, "kv_cache_dtype": kv_cache_dtype, "engine": engine,
            "max_num_batched_tokens": max_num_batched_tokens,
            "max_num_seqs": None if max_num_seqs >= UNCAPPED_SEQS else max_num_seqs,
            "prefill_first": defaults.prefill_first, "random_range_ratio": range_ratio,
            "scheduler_recv_interval": scheduler_recv_interval,
            "kv_capacity_tokens": mem.kv_capacity_tokens,
            "state_tokens_per_sequence": mem.state_tokens_per_sequence} | figures.to_dict() | {
            "source": pm.source}


def run_profile(model: str, device: str | None, tp_values: tuple[int, ...], layers: int | None,
                quick: bool, dtype: str | None, reps: int | None, force: bool, *,
                catalog_dir: Path | None = None, profiles_dir: Path | None = None,
                progress=None) -> dict:
    """Measure `model` on the local device and store the table under profiles/."""
    from planner_cli.perf import profiler  # torch, lazily

    card = load_catalog(catalog_dir).model(model)
    if device is None:
        torch, _ = profiler._torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if quick and device == "cpu":
        grid = profiler.CPU_QUICK_GRID
        layers = layers or min(profiler.QUICK_CPU_LAYERS, card.num_hidden_layers)
    else:
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
    """Fit the analytic constants to a user's measurements and save them for the planner,
    keyed by (GPU, model, engine: default vllm)."""
    engine = check_engine(engine)
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
