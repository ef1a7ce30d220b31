"""Measured iteration costs: NVIDIA aiconfigurator-core's per-operation GPU database.

aiconfigurator-core ships kernel timings measured on real GPUs (GEMMs per precision, context and
generation attention, MLA, MoE, NCCL and custom all-reduce; CUDA graphs, locked clocks) per
engine and engine version, and a compiled estimator of one engine step built from them. We use
it, not re-derive it: for a replica shape it gives the three parts of one iteration —

    shared(n)      everything but attention for n tokens (GEMMs, MoE, norms, collectives)
    context(c, q)  prefill attention of one sequence's chunk of c tokens after q cached ones
    decode(b, k)   a decode step of b sequences holding k context tokens in all

— and an iteration that prefills p tokens (s prompts, q cached on average) beside b decodes is
shared(p + b) + s·context(p/s, q) + decode_attention(b, k). Each part is tabulated on a grid per
shape once and interpolated, and decode(b, ·) is piecewise linear in k, so a run of decode
iterations keeps the simulator's closed form.

`AIC_MODELS` and `AIC_SYSTEMS` are the one table from our catalog names to its model configs
and systems; a card or GPU not in them, or a (system, engine, precision) its database does not
hold, is not covered and the caller falls back to the analytic model, saying why.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import io
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from planner_cli.perf import serving_fit
from planner_cli.perf.engines import (
    ENGINES,
    PREFILL_SCALE,
    SEQUENCE_OVERHEAD_S,
    STEP_OVERHEAD_S,
)
from planner_cli.perf.fast import decode_until, most_within
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.model import FP8_PRECISIONS, ModelCard

# Our model cards -> the model configs aiconfigurator-core ships (HF ids among its defaults). A
# card maps when its architecture equals the config's (tests/test_measured.py checks every row
# field by field). Other cards of an architecture it models are passed as a local config.json
# written from the card (LOCAL_ARCHITECTURES).
AIC_MODELS: dict[str, str] = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "deepseek-r1-distill-llama-8b": "meta-llama/Meta-Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "llama-3.3-70b": "meta-llama/Meta-Llama-3.1-70B",
    "deepseek-r1-distill-llama-70b": "meta-llama/Meta-Llama-3.1-70B",
    "llama-3.1-405b": "meta-llama/Meta-Llama-3.1-405B",
    "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "minimax-m2.5": "MiniMaxAI/MiniMax-M2.5",
    "kimi-k2.5": "moonshotai/Kimi-K2.5",  # its language model (text_config)
    "qwen3.5-397b-a17b": "Qwen/Qwen3.5-397B-A17B",  # its language model (text_config)
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "glm-5": "zai-org/GLM-5",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
}

# Architectures whose HF config.json a card holds every field of, for aiconfigurator's model
# families (dense Llama-like; Mixtral- and Qwen3-MoE-like).
# Llama-shaped architectures whose only difference is a sliding window on every layer: passed
# as Llama configs, the window applied to the tables here (decode context and prompt attention).
AS_LLAMA = ("MistralForCausalLM",)
LOCAL_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                       "MixtralForCausalLM", "Qwen3MoeForCausalLM")

# Our GPU names -> aiconfigurator-core systems (those with vLLM and SGLang tables).
AIC_SYSTEMS: dict[str, str] = {
    "a100-sxm-80gb": "a100_sxm",
    "h100-sxm": "h100_sxm",
    "h200": "h200_sxm",
    "b200": "b200_sxm",
    "b300": "b300_sxm",
    "gb200": "gb200",
    "gb300": "gb300",
    "l40s": "l40s",
    "rtx-pro-6000-server": "rtx_pro_6000_server",
}

# GPUs whose bf16 and fp8 tensor peaks equal another's (and memory bandwidth within 1 %, the
# same NVLink): where their own tables lack a case at those precisions, the sibling's kernel
# measurements stand in, and the source says so (aiconfigurator-core systems/*.yaml:
# B300 7.75 TB/s vs B200 7.7, GB300 and GB200 8; tests/test_measured.py checks the figures).
SIBLINGS: dict[str, str] = {"b300": "b200", "gb300": "gb200"}
CARRIED_PRECISIONS = ("bf16", "fp8", "fp8-block")

# Our precisions -> aiconfigurator quantisation modes (weights; the KV cache and attention stay
# bf16, as our memory model and the engines' default KV dtype assume). `None` keeps the model's
# own checkpoint format (DeepSeek's block-scaled fp8).
_QUANT: dict[str, dict[str, str | None]] = {
    "bf16": {"gemm_quant_mode": "bfloat16", "moe_quant_mode": "bfloat16"},
    "fp8": {"gemm_quant_mode": "fp8", "moe_quant_mode": "fp8"},
    "fp8-block": {"gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block"},
    "int4-awq": {"gemm_quant_mode": "int4_wo", "moe_quant_mode": "int4_wo"},
    "fp4": {"gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4"},
    "mxfp4": {"gemm_quant_mode": "bfloat16", "moe_quant_mode": "w4a16_mxfp4"},
    "mxfp4-mxfp8": {"gemm_quant_mode": "bfloat16", "moe_quant_mode": "w4a8_mxfp4_mxfp8"},
}
# Precisions whose kernels both engines take from one library, so that where the engine's own
# tables lack a case the other engine's tables of the same GPU stand in (the source says so):
# MXFP4 experts with MXFP8 activations are FlashInfer's TRT-LLM MoE kernels under vLLM and
# SGLang alike, and the database's two engines time gpt-oss-120b's MXFP4 experts with bf16
# activations (that library's kernels too) within 2 % of each other on B200 at 1 to 8,192
# tokens, where its vLLM tables have no MXFP8-activation experts for that model.
SHARED_KERNEL_PRECISIONS = ("mxfp4-mxfp8",)
_KV_QUANT = {"bf16": "bfloat16", "fp8": "fp8"}  # KV-cache dtypes -> its modes
Weights = tuple[str | None, str | None]  # (gemm_quant_mode, moe_quant_mode); None: the model's own
Quant = tuple[str | None, str | None, str]  # and fmha_quant_mode (attention arithmetic)
# Cards whose fp8 checkpoint is block-scaled, with the modes that select it: `None` where the
# model config carries it (DeepSeek, MiniMax), else named (the GLM-5 config is its bf16
# checkpoint; zai-org/GLM-5-FP8 is block-scaled, as the database's own GLM-5-FP8 rows say).
_NATIVE_FP8_BLOCK: dict[str, Weights] = {"deepseek-r1": (None, None), "deepseek-v3": (None, None),
                                       "minimax-m2.5": (None, None),
                                       "glm-5": ("fp8_block", "fp8_block")}
# what the source says where per-tensor fp8 tables stand in for a block-scaled checkpoint's
_PER_TENSOR_NOTE = (" (per-tensor fp8 tables: the block-scaled ones are missing, fall with batch "
                    "or are far slower)")
_TENSOR_GEMM_NOTE = (" (per-tensor fp8 attention GEMMs beside block-scaled experts: the "
                     "block-scaled GEMM tables are missing or far slower)")
# How much slower than the per-tensor fp8 GEMMs of the same layers a decode step's block-scaled
# ones may be. Both read the same fp8 weights (block scales add 1/16,384 of them), and
# the database's SGLang and TensorRT-LLM block-scaled GEMMs (DeepGEMM) take 0.55-1.1x its
# per-tensor ones at decode sizes on every GPU; its vLLM ones take 5-40x (a fixed 60-240 us a
# GEMM, whatever its size: launch overhead that a CUDA-graphed decode step does not pay).
BLOCK_GEMM_SLACK = 2.0

# Grids the parts are tabulated on (tokens). Between points: linear interpolation.
SHARED_GRID = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
               3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768)
DECODE_CONTEXT_GRID = (1, 512, 2048, 8192, 32768, 131072)  # per sequence
# Prompt lengths at which one whole prompt's context attention is tabulated; a chunk after a
# cached prefix pays what it adds to the prompt's attention, A(prefix + chunk) - A(prefix)
# (the database's own prefix figures fall as the prefix grows, which attention cannot do).
# Where the database lumps attention into the layer (MLA), A comes from a prompt against the
# same tokens as SHORT_PROMPT-token prompts, whose own attention is negligible.
ATTENTION_GRID = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
SHORT_PROMPT = 128
# Where attention is split out: one iteration's attention is a fixed part (the per-layer kernel
# launches, paid once however many prompts the batch holds) plus a part per prompt; the fixed
# part is read from PROBE_BATCH prompts of PROBE_PROMPT tokens against one such prompt.
PROBE_PROMPT, PROBE_BATCH = 1024, 8
MONOTONE_SLACK = 0.05  # decode step times may dip this much with batch (table noise)
DECODE_BATCH_GRID = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

_log = logging.getLogger("aiconfigurator_core")


class NotCovered(Exception):
    """aiconfigurator-core has no measured data for this case (the reason is the message)."""


@contextlib.contextmanager
def _quiet() -> Any:
    """aiconfigurator-core logs and prints its data-loading notes; keep them off our stdout
    (where --json goes) and stderr (one line per error)."""
    level = _log.level
    _log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        _log.setLevel(level)


@dataclass(frozen=True)
class Coverage:
    system: str
    engine: str
    version: str
    model: str

    @property
    def label(self) -> str:
        return f"measured:{self.system}/{self.engine}/{self.version}"


@functools.cache
def _perf_database() -> Any:
    """aiconfigurator-core's database module, with its version-slot and database lookups
    remembered.

    Both re-read the system's YAML spec (and list its data folders) on every call, about
    10-25 ms, even when the database itself is already loaded; a compile calls them several
    times, and an optimize compiles dozens of shapes: a third of its time went there. Those
    files do not change while we run, so each answer is kept (the version slots are handed
    out as copies: callers own what they get; a database is the library's own cached, shared
    object either way)."""
    from aiconfigurator_core.sdk import perf_database

    if getattr(perf_database.get_version_slots, "cascadia_remembered", False):
        return perf_database
    slots_of, database_of = perf_database.get_version_slots, perf_database.get_database

    def frozen(paths: Any) -> Any:
        return tuple(paths) if isinstance(paths, list) else paths

    def thawed(paths: Any) -> Any:
        return list(paths) if isinstance(paths, tuple) else paths

    @functools.cache
    def remembered_slots(system: str, backend: str, paths: Any) -> Any:
        return slots_of(system, backend, thawed(paths))

    @functools.cache
    def remembered_database(system: str, backend: str, version: str, paths: Any,
                            options: tuple) -> Any:
        return database_of(system, backend, version, thawed(paths), **dict(options))

    def get_version_slots(system: str, backend: str, systems_paths: Any = None) -> Any:
        slots = remembered_slots(system, backend, frozen(systems_paths))
        return dict(slots) if slots is not None else None

    def get_database(system: str, backend: str, version: str, systems_paths: Any = None,
                     **options: Any) -> Any:
        return remembered_database(system, backend, version, frozen(systems_paths),
                                   tuple(sorted(options.items())))

    get_version_slots.cascadia_remembered = True  # type: ignore[attr-defined]
    perf_database.get_version_slots = get_version_slots
    perf_database.get_database = get_database
    return perf_database


def coverage(shape: ReplicaShape, engine: str) -> Coverage:
    """What measured data would serve `shape` under `engine` (one of ENGINES: the caller
    checks, perf.profiles.check_engine), or NotCovered with why."""
    system = AIC_SYSTEMS.get(shape.gpu.name)
    if system is None:
        raise NotCovered(f"aiconfigurator-core has no tables for {shape.gpu.name}")
    model = model_path(shape.card)
    perf_database = _perf_database()

    with _quiet():
        try:
            version = perf_database.resolve_query_version(system, engine, "current")
        except Exception as exc:  # its own policy errors: no version for this pair
            raise NotCovered(f"aiconfigurator-core has no {engine} tables for {system} "
                             f"({type(exc).__name__})") from None
    if not version:
        raise NotCovered(f"aiconfigurator-core has no {engine} tables for {system}")
    return Coverage(system, engine, str(version), model)


def hf_config(card: ModelCard) -> dict[str, Any]:
    """The HF config.json fields aiconfigurator-core reads, from a card of a LOCAL_ARCHITECTURES
    architecture (the card holds the config's architecture facts verbatim)."""
    llama = card.architecture in AS_LLAMA
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM" if llama else card.architecture],
        "model_type": "llama" if llama else card.model_type,
        "num_hidden_layers": card.num_hidden_layers, "hidden_size": card.hidden_size,
        "intermediate_size": card.intermediate_size,
        "num_attention_heads": card.num_attention_heads,
        "num_key_value_heads": card.num_key_value_heads, "head_dim": card.head_dim,
        "vocab_size": card.vocab_size, "max_position_embeddings": card.max_position_embeddings,
        "tie_word_embeddings": card.tie_word_embeddings, "torch_dtype": "bfloat16"}
    moe = card.moe
    if card.architecture == "MixtralForCausalLM" and moe is not None:
        config |= {"num_local_experts": moe.num_experts,
                   "num_experts_per_tok": moe.num_experts_per_tok}
    elif card.architecture == "Qwen3MoeForCausalLM" and moe is not None:
        config |= {"num_experts": moe.num_experts, "num_experts_per_tok": moe.num_experts_per_tok,
                   "moe_intermediate_size": moe.moe_intermediate_size,
                   "decoder_sparse_step": 1, "mlp_only_layers": []}
    return config


_LOCAL_CONFIGS: dict[str, tempfile.TemporaryDirectory] = {}  # held for the process's lifetime


def model_path(card: ModelCard) -> str:
    """What aiconfigurator-core loads for a card: its own config when it ships one, else a
    local folder holding a config.json written from the card."""
    from aiconfigurator_core.sdk.common import DefaultHFModels

    shipped = AIC_MODELS.get(card.name)
    if shipped is not None and shipped in DefaultHFModels:
        return shipped
    if card.architecture not in LOCAL_ARCHITECTURES + AS_LLAMA:
        raise NotCovered(f"aiconfigurator-core ships no config for {card.name} and does not "
                         f"model {card.architecture} from a local one")
    if card.name not in _LOCAL_CONFIGS:
        folder = tempfile.TemporaryDirectory(prefix=f"cascadia-aic-{card.name}-")
        (Path(folder.name) / "config.json").write_text(json.dumps(hf_config(card), indent=2),
                                                        encoding="utf-8")
        _LOCAL_CONFIGS[card.name] = folder
    return _LOCAL_CONFIGS[card.name].name


_HANDLES: dict[tuple, Any] = {}
_COSTS: dict[tuple, MeasuredCost | NotCovered] = {}
_unscaled = False  # see unscaled()


@functools.cache
def _serving_table() -> dict[tuple[str, str], tuple[float, int, str]]:
    return serving_fit.parse(yaml.safe_load(serving_fit.FIT_FILE.read_text(encoding="utf-8")))


def decode_scale(engine: str, model: str) -> tuple[float, int, str] | None:
    """(scale, serving runs it was fitted to, whose runs) of a model's decode steps under an
    engine (perf.serving_fit), or None where there is none or inside unscaled()."""
    return None if _unscaled else _serving_table().get((engine, model))


@contextlib.contextmanager
def unscaled() -> Iterator[None]:
    """The tables as measured, without perf.serving_fit's decode-step scale (what the fit is
    made against); measured costs are dropped on the way in and out, so none outlives its
    setting."""
    global _unscaled
    before = _unscaled
    forget_costs()
    _unscaled = True
    try:
        yield
    finally:
        _unscaled = before
        forget_costs()


def forget_costs() -> None:
    """Drop every measured cost and compiled estimator built so far (aiconfigurator-core keeps
    the databases it loaded): a benchmark measures a cold run this way."""
    _COSTS.clear()
    _HANDLES.clear()


def measured_cost(shape: ReplicaShape, engine: str) -> MeasuredCost:
    """The measured cost of a shape under an engine, built once per process; NotCovered when
    the database does not hold it (remembered too: a failed compile is not retried)."""
    key = (shape, engine)
    if key not in _COSTS:
        try:
            _COSTS[key] = MeasuredCost(shape, engine)
        except NotCovered as why:
            _COSTS[key] = _carried(shape, engine, why)
            if isinstance(_COSTS[key], NotCovered):
                _COSTS[key] = _borrowed(shape, engine, why)
    got = _COSTS[key]
    if isinstance(got, NotCovered):
        raise NotCovered(str(got))
    return got


def _variants(shape: ReplicaShape) -> list[tuple[Quant, str]]:
    """The database's quantisation modes for a shape, in the order tried, with what the
    source label says when one stands in for the first: each weight variant with bf16
    attention, then, with an fp8 KV cache, with fp8 attention (FlashAttention-3, SGLang's
    attention on Hopper, casts the queries to the cache's fp8 and runs its fp8 kernel: where the
    database has no bf16-attention tables beside an fp8 cache, its fp8 ones are that case)."""
    weights = _weight_variants(shape)
    out = [((gemm, moe, "bfloat16"), note) for (gemm, moe), note in weights]
    if shape.kv_dtype == "fp8":
        out += [((gemm, moe, "fp8"), note + " (fp8 attention, as FlashAttention-3 runs it "
                 "beside an fp8 KV cache)") for (gemm, moe), note in weights]
    return out


def _weight_variants(shape: ReplicaShape) -> list[tuple[Weights, str]]:
    """The database's weight quantisation modes for a shape, in the order tried, with what
    the source label says when one stands in for the first."""
    gemm, moe = _QUANT[shape.precision]["gemm_quant_mode"], _QUANT[shape.precision][
        "moe_quant_mode"]
    if shape.precision == "fp4" and shape.card.moe is not None:
        return [((gemm, moe), ""),
                # NVFP4 experts beside bf16 attention projections, as NVIDIA's NVFP4
                # checkpoints keep them (nvidia/GLM-5-NVFP4's hf_quant_config excludes them;
                # the database times GLM-5's sparse attention with bf16 GEMMs only)
                (("bfloat16", moe), " (NVFP4 experts, bf16 attention GEMMs)"),
                # 4-bit experts as MXFP4 (gpt-oss's own format) where NVFP4 ones are missing
                ((gemm, "w4a16_mxfp4"), " (MXFP4 experts, weight-only)")]
    if shape.precision == "int4-awq" and shape.card.moe is not None:
        # 4-bit experts beside bf16 attention (Kimi's own int4 checkpoint) where the database
        # has no int4 GEMM tables for the attention projections
        return [((gemm, moe), ""), (("bfloat16", moe), " (int4 experts, bf16 attention GEMMs)")]
    if shape.precision == "fp8-block" and shape.card.name not in _NATIVE_FP8_BLOCK:
        # a block-scaled checkpoint (Qwen's FP8 releases): its own kernels, then per-tensor
        # attention GEMMs beside block-scaled experts, then per-tensor tables throughout
        return [((gemm, moe), ""),
                *([(("fp8", moe), _TENSOR_GEMM_NOTE)] if shape.card.moe is not None else []),
                (("fp8", "fp8"), _PER_TENSOR_NOTE)]
    if shape.precision not in FP8_PRECISIONS:
        return [((gemm, moe), "")]
    if shape.card.name in _NATIVE_FP8_BLOCK:  # the checkpoint's own block-scaled fp8
        own = _NATIVE_FP8_BLOCK[shape.card.name]
        return [(own, ""),
                *([(("fp8", own[1] or "fp8_block"), _TENSOR_GEMM_NOTE)]
                  if shape.card.moe is not None else []),
                (("fp8", "fp8"), _PER_TENSOR_NOTE)]
    if shape.card.moe is not None:  # block-scaled fp8 experts where per-tensor ones are missing
        return [(("fp8", "fp8"), ""), (("fp8", "fp8_block"), " (block-scaled fp8 experts)")]
    return [(("fp8", "fp8"), "")]


def _carried(shape: ReplicaShape, engine: str, why: NotCovered) -> MeasuredCost | NotCovered:
    """The sibling GPU's measured cost for a shape its own tables do not cover, else why."""
    sibling = SIBLINGS.get(shape.gpu.name)
    if sibling is None or shape.precision not in CARRIED_PRECISIONS:
        return why
    twin = replace(shape, gpu=shape.gpu.model_copy(update={"name": sibling}))
    try:
        cost = MeasuredCost(twin, engine)
    except NotCovered:
        return why
    cost.source += (f" (carried to {shape.gpu.name}, whose {shape.precision} peak it shares; "
                    f"its own tables: {why})")
    return cost


def _borrowed(shape: ReplicaShape, engine: str, why: NotCovered) -> MeasuredCost | NotCovered:
    """The other engine's measured tables on the same GPU for a shape of a precision whose
    kernels both engines share (SHARED_KERNEL_PRECISIONS) that the engine's own lack, run as
    `engine` runs (its host times, scheduling and decode-step scale), else why."""
    if shape.precision not in SHARED_KERNEL_PRECISIONS:
        return why
    for tables in ENGINES:
        if tables == engine:
            continue
        try:
            cost = MeasuredCost(shape, engine, tables=tables)
        except NotCovered:
            continue
        cost.source += (f" ({tables}'s tables: {engine}'s own lack the case and both run "
                        f"the same kernels; its own: {why})")
        return cost
    return why


def _handle(cov: Coverage, shape: ReplicaShape, quant: Quant) -> Any:
    """The compiled estimator of a shape under one quantisation mode."""
    key = (cov, shape.tp, shape.pp, shape.ep, shape.dp, shape.precision, shape.kv_dtype, quant)
    if key not in _HANDLES:
        from aiconfigurator_core.sdk.engine import EngineHandle

        _perf_database()

        # the experts over the tp·dp GPUs (ep of them); with attention data parallelism the
        # database's batch is one rank's (its MoE layers take every rank's tokens)
        moe = ({"moe_tp_size": shape.expert_group // shape.ep, "moe_ep_size": shape.ep,
                "attention_dp_size": shape.dp} if shape.card.moe else {})
        with _quiet():
            try:
                _HANDLES[key] = EngineHandle.compile(
                    cov.model, cov.system, cov.engine, backend_version=cov.version,
                    tp_size=shape.tp, pp_size=shape.pp,
                    kvcache_quant_mode=_KV_QUANT[shape.kv_dtype],
                    fmha_quant_mode=quant[2], gemm_quant_mode=quant[0],
                    moe_quant_mode=quant[1], **moe)
            except Exception as exc:  # its database says what it lacks
                dp = f" dp{shape.dp}" if shape.dp > 1 else ""
                raise NotCovered(f"aiconfigurator-core cannot compile {shape.card.name} "
                                 f"{shape.precision} tp{shape.tp} pp{shape.pp}{dp} on "
                                 f"{cov.system}/{cov.engine}: {_first_line(exc)}") from None
    return _HANDLES[key]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


PREFILL_MEMO = 250_000  # prefill iterations whose time a MeasuredCost remembers (~30 MB)


def _interp(xs: tuple[float, ...] | list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear through (xs, ys), extended linearly past both ends."""
    j = bisect.bisect_right(xs, x) - 1
    j = min(max(j, 0), len(xs) - 2)
    x0, x1 = xs[j], xs[j + 1]
    return ys[j] + (ys[j + 1] - ys[j]) * (x - x0) / (x1 - x0)


class MeasuredCost:
    """Iteration time of one replica shape from aiconfigurator-core's measured kernels, with the
    interface of perf.fast.IterationCost (time, decode_time, decode_run,
    decode_iterations_within)."""

    def __init__(self, shape: ReplicaShape, engine: str, tables: str | None = None) -> None:
        self.shape = shape
        self.host_s = STEP_OVERHEAD_S[engine]  # per iteration, outside the kernels
        self.seq_s = SEQUENCE_OVERHEAD_S[engine]  # and per sequence in it
        self.dp = shape.dp  # attention-DP ranks: an iteration is timed as one rank's share
        # the engine's decode steps for this model against the tables (perf.serving_fit)
        fitted = decode_scale(engine, shape.card.name)
        self.decode_scale = fitted[0] if fitted else 1.0
        # an iteration holding prompt tokens, against the tables (perf.engines.PREFILL_SCALE)
        self.prefill_scale = PREFILL_SCALE[engine]
        self.memo_key = ("measured", shape, engine, tables, self.decode_scale,
                         self.prefill_scale, self.host_s, self.seq_s)  # what sets every figure
        # the tables of `tables`' kernels where another engine's stand in (_borrowed)
        self.coverage = coverage(shape, tables or engine)
        # a window on every layer that the database's (Llama) tables do not apply themselves
        self.window = (shape.card.sliding_window
                       if shape.card.architecture in AS_LLAMA else None)
        self._decode: dict[int, _DecodeTable] = {}
        self._grid: dict[int, tuple[list[float], list[float]]] = {}
        self._prefill: dict[tuple[int, int, int], float] = {}  # see time()
        reasons: list[str] = []
        for quant, note in _variants(shape):
            try:
                self._h = _handle(self.coverage, shape, quant)
                if ((quant[:2] == _NATIVE_FP8_BLOCK.get(shape.card.name)
                     or (shape.precision == "fp8-block" and quant[:2] == ("fp8_block",
                                                                           "fp8_block")))
                        and self._step(1) > self._step(8) * (1 + MONOTONE_SLACK)):
                    # a decode step cannot get faster with more sequences: these tables are
                    # wrong for this system and engine
                    raise NotCovered("its block-scaled fp8 decode step falls with batch")
                # None: the model's own checkpoint format, block-scaled (_NATIVE_FP8_BLOCK)
                slower = (self._block_gemm_ratio(quant) if quant[0] in (None, "fp8_block")
                          else None)
                if slower is not None and slower > BLOCK_GEMM_SLACK:
                    raise NotCovered(f"its block-scaled fp8 GEMMs take {slower:.1f}x the "
                                     f"per-tensor ones in a decode step")
                self._build(engine)
            except NotCovered as why:
                reasons.append(str(why))
                self._decode.clear()
                self._grid.clear()
                self._prefill.clear()
                self.__dict__.pop("_attn_curve", None)  # built from this variant's tables
                continue
            self.source = self.coverage.label + note + (
                f" (its {self.window}-token sliding window applied to Llama-shaped tables)"
                if self.window else "") + (
                f" (decode steps x{self.decode_scale:g}: fitted to {fitted[1]} {engine} serving "
                f"runs of {fitted[2]})" if fitted else "")
            return
        raise NotCovered("; ".join(dict.fromkeys(reasons)))

    def _build(self, engine: str) -> None:
        """Tabulate the shared part and each prompt's attention, and check that decode steps
        are answered (a query the database cannot answer raises here, not mid-simulation)."""
        with _quiet():
            try:
                self._shared = [self._part(n, 0, n, 0)[1] for n in SHARED_GRID]
                lumped = self._part(4096, 0, 4096, 0)[2] == 0.0
                self._attn_fixed = 0.0 if lumped else self._fixed_attention()
                self._attn = self._prompt_attention(lumped)
                if lumped:
                    # the shared grid ran one n-token prompt: take its attention out
                    self._shared = [max(t - self._attention(n), 0.0)
                                    for n, t in zip(SHARED_GRID, self._shared, strict=True)]
                self._decode_table(1)
            except NotCovered:
                raise
            except Exception as exc:
                raise NotCovered(f"aiconfigurator-core has no data for {self.shape.label} on "
                                 f"{self.coverage.system}/{engine}: {_first_line(exc)}") from None

    # ------------------------------------------------------------ the database, in seconds

    def _step(self, b: int) -> float:
        with _quiet():
            try:
                return self._part(0, b, 2048, 0)[0]
            except Exception as exc:
                raise NotCovered(f"aiconfigurator-core has no decode data for "
                                 f"{self.shape.label}: {_first_line(exc)}") from None

    def _block_gemm_ratio(self, quant: Quant) -> float | None:
        """A decode step's GEMM time (PROBE_BATCH sequences) under this variant's
        block-scaled tables against per-tensor fp8 ones for the same layers; None where the
        database has no per-tensor tables to set beside them."""
        def gemms(handle: Any) -> float:
            ops = handle.decode_step_per_op(PROBE_BATCH, PROBE_PROMPT, 2)
            return sum(op[1] for op in ops if op[0].endswith("_gemm"))

        with _quiet():
            try:
                block = gemms(self._h)
                tensor = gemms(_handle(self.coverage, self.shape, ("fp8", quant[1], quant[2])))
            except Exception:
                return None
        return block / tensor if tensor > 0 else None

    def _part(self, ctx: int, gen: int, isl: int, prefix: int) -> tuple[float, ...]:
        total, shared, ctx_attn, gen_attn = self._h.mixed_step_breakdown(
            int(ctx), int(gen), int(max(isl, 1)), 2, int(prefix))
        return total / 1e3, shared / 1e3, ctx_attn / 1e3, gen_attn / 1e3

    def _prompt_attention(self, lumped: bool) -> list[float]:
        """One whole prompt's context attention (seconds, beyond the iteration's fixed part)
        at each ATTENTION_GRID length the database answers."""
        attn: list[float] = []
        for n in ATTENTION_GRID:
            try:
                if lumped:
                    one = self._h.run_static(batch_size=1, isl=n, osl=2)[0]
                    short = self._h.run_static(batch_size=n // SHORT_PROMPT, isl=SHORT_PROMPT,
                                               osl=2)[0]
                    value = (one - short) / 1e3
                else:
                    value = self._part(n, 0, n, 0)[2] - self._attn_fixed
            except Exception:  # past what its tables hold: extrapolated from the last
                break
            attn.append(max(value, attn[-1] if attn else 0.0))
        if not attn:
            raise NotCovered(f"aiconfigurator-core has no context attention data for "
                             f"{self.shape.label}")
        return attn

    def _fixed_attention(self) -> float:
        """The part of an iteration's context attention that does not grow with the prompts
        in it: k prompts cost fixed + k·per-prompt, one costs fixed + per-prompt."""
        one = self._part(PROBE_PROMPT, 0, PROBE_PROMPT, 0)[2]
        many = self._part(PROBE_PROMPT * PROBE_BATCH, 0, PROBE_PROMPT, 0)[2]
        return min(max((PROBE_BATCH * one - many) / (PROBE_BATCH - 1), 0.0), one)

    def _attention(self, length: float) -> float:
        """One prompt's context attention (seconds) at `length` tokens, from _attn: linear
        between grid points, quadratic past the last, zero below SHORT_PROMPT."""
        if self.window and length > self.window:
            # past the window each token attends to `window` keys: the slope of A there
            w = self.window
            return self._attention(w) + (length - w) * 2.0 * self._attention(w) / w
        if length <= SHORT_PROMPT:
            return 0.0
        xs, ys = self._attn_curve
        if length >= xs[-1]:
            return ys[-1] * (length / xs[-1]) ** 2
        return _interp(xs, ys, length)

    @functools.cached_property
    def _attn_curve(self) -> tuple[tuple[int, ...], list[float]]:
        """(lengths, seconds) of one prompt's attention: zero at SHORT_PROMPT, then _attn."""
        return (SHORT_PROMPT, *ATTENTION_GRID[:len(self._attn)]), [0.0, *self._attn]

    def shared(self, n: float) -> float:
        return max(_interp(SHARED_GRID, self._shared, n), 0.0)

    def context(self, chunk: float, prefix: float) -> float:
        """Prefill attention of one prompt's chunk after `prefix` cached tokens, beyond the
        iteration's fixed part: what the chunk adds to the prompt's attention."""
        return max(self._attention(prefix + chunk) - self._attention(prefix), 0.0)

    def _decode_grid(self, b: int) -> tuple[list[float], list[float]]:
        """(step seconds, attention seconds) at each of _contexts(), for a batch size on
        DECODE_BATCH_GRID (measured once)."""
        row = self._grid.get(b)
        if row is None:
            total, attn = [], []
            with _quiet():
                for ctx in self._contexts():
                    ctx = min(ctx, self.window or ctx)  # a window caps what is attended
                    a = self._part(0, b, ctx, 0)[3] * self.decode_scale
                    # a decode-only step: the database's decode path (CUDA-graph timings,
                    # what its static estimate uses), not its mixed-step one
                    t = self._h.decode_step_latency(b, ctx, 2) / 1e3 * self.decode_scale
                    total.append(t + self.host(b))
                    attn.append(a)
            row = self._grid[b] = (total, attn)
        return row

    def _contexts(self) -> tuple[int, ...]:
        """Context per sequence the decode tables hold: DECODE_CONTEXT_GRID, and the window's
        edge where one caps it (so the step stays exactly piecewise linear)."""
        if not self.window:
            return DECODE_CONTEXT_GRID
        return tuple(sorted(set(DECODE_CONTEXT_GRID) | {self.window}))

    def _decode_table(self, b: int) -> _DecodeTable:
        """The decode step of batch b, piecewise linear in its total context k: the measured
        grid rows of the batch sizes around b, blended linearly in b (at a fixed context per
        sequence)."""
        table = self._decode.get(b)
        if table is None:
            r = self._rank(b)  # one attention-DP rank's sequences
            grid = DECODE_BATCH_GRID
            j = min(max(bisect.bisect_right(grid, r) - 1, 0), len(grid) - 2)
            b0, b1 = grid[j], grid[j + 1]
            w = (r - b0) / (b1 - b0)
            (t0, a0), (t1, a1) = self._decode_grid(b0), self._decode_grid(b1)
            if w == 0.0:
                total, attn = list(t0), list(a0)
            else:
                total = [(1 - w) * x + w * y for x, y in zip(t0, t1, strict=True)]
                attn = [(1 - w) * x + w * y for x, y in zip(a0, a1, strict=True)]
            table = _DecodeTable([float(b * ctx) for ctx in self._contexts()], total, attn)
            self._decode[b] = table
        return table

    # ------------------------------------------------------------ the cost interface

    def host(self, seqs: float) -> float:
        """Seconds of an iteration outside the kernels: the engine's time per iteration and
        per sequence in it (perf.engines)."""
        return self.host_s + self.seq_s * seqs

    def decode_time(self, b: int, k: float) -> float:
        return (self._decode.get(b) or self._decode_table(b)).step(k)

    def time(self, p: int, b: int, k: float, prefill_context: float = 0.0,
             prefill_seqs: int = 1) -> float:
        """Seconds of one iteration: prefill p tokens of `prefill_seqs` prompts (after
        `prefill_context` cached tokens on average), decode b sequences holding k tokens."""
        if p <= 0:
            return self.decode_time(b, k) if b > 0 else 0.0
        seqs = max(1, min(prefill_seqs, p))
        if prefill_context == 0.0:
            # no cached prefix: A(chunk) - A(0) is A(chunk), A(0) being 0; what depends on
            # the token counts alone is remembered (the simulator asks again and again)
            key = (p, b, seqs)
            t = self._prefill.get(key)
            if t is None:
                if len(self._prefill) >= PREFILL_MEMO:
                    self._prefill.clear()  # bounded: a long trace has many (p, b) pairs
                t = self._prefill[key] = self._prompts(p, b, seqs, self._attention(p / seqs))
        else:
            t = self._prompts(p, b, seqs, self.context(p / seqs, prefill_context))
        if b > 0:
            table = self._decode.get(b) or self._decode_table(b)
            t += max(_interp(table.ks, table.attn, k), 0.0)
        return t

    def _prompts(self, p: int, b: int, seqs: int, attention: float) -> float:
        """An iteration's time but its decodes' attention: p prompt tokens of `seqs` prompts,
        each paying `attention` seconds, beside b decodes (one rank's share of them)."""
        rank_p, rank_b, rank_seqs = self._ranks(p, b, seqs)
        return self.host(rank_b + rank_seqs) + self.prefill_scale * (
            self.shared(rank_p + rank_b) + self._attn_fixed + rank_seqs * attention)

    def _rank(self, n: float) -> float:
        """One attention-DP rank's share of n sequences or tokens: the replica's work spread
        evenly over its ranks, as the database times them (every rank alike, its MoE layers
        taking all ranks' tokens), and at least one of any (an idle rank steps with the
        others); n itself without DP."""
        return n if self.dp == 1 or n <= 0 else max(n / self.dp, 1.0)

    def _ranks(self, p: int, b: int, seqs: int) -> tuple[float, float, float]:
        """(prompt tokens, decodes, prompts) of an iteration that one attention-DP rank
        takes (_rank; the prompts as their even share, which may be a fraction); the
        iteration's own without DP."""
        if self.dp == 1:
            return p, b, seqs
        return self._rank(p), self._rank(b), seqs / self.dp

    def breakdown(self, p: int, b: int, k: float, prefill_context: float = 0.0,
                  prefill_seqs: int = 1) -> dict[str, float]:
        """Seconds of one iteration by part (the database's own split; with attention data
        parallelism, one rank's share), with `total_s`."""
        seqs = max(1, min(prefill_seqs, p)) if p > 0 else 0
        rank_p, rank_b, rank_seqs = self._ranks(p, b, seqs)
        shared = self.prefill_scale * self.shared(rank_p + rank_b) if p > 0 else 0.0
        ctx = (self.prefill_scale * (self._attn_fixed
                                     + rank_seqs * self.context(p / seqs, prefill_context))
               if p > 0 else 0.0)
        dec = 0.0
        if b > 0:
            table = self._decode_table(b)
            dec = max(_interp(table.ks, table.attn, k), 0.0)
            if p == 0:
                shared = table.step(k) - dec - self.host(rank_b)
        return {"shared_s": shared, "context_attention_s": ctx, "decode_attention_s": dec,
                "host_s": self.host(rank_b + rank_seqs) if p > 0 or b > 0 else 0.0,
                "total_s": self.time(p, b, k, prefill_context, prefill_seqs)}

    def decode_run(self, b: int, k0: float, n: int) -> float:
        """Total seconds of n decode iterations of batch b starting at context k0 (exact over
        the piecewise-linear table)."""
        if n <= 0 or b <= 0:
            return 0.0
        table = self._decode.get(b) or self._decode_table(b)
        ks = table.ks
        j = bisect.bisect_right(ks, k0) - 1
        if 0 <= j < table.last and k0 + (n - 1) * b < ks[j + 1]:
            # the common case: the whole run inside one linear piece
            slope = table.slope[j]
            t0 = table.total[j] + slope * (k0 - ks[j])
            return n * t0 + slope * b * n * (n - 1) / 2.0
        return sum(m * t0 + slope * m * (m - 1) / 2.0 for m, t0, slope in table.runs(b, k0, n))

    def decode_runs(self, b: int, k0: np.ndarray, n: np.ndarray) -> np.ndarray:
        """decode_run(b, k0[i], n[i]) for every i: the runs on one linear piece at once (the
        same arithmetic, element by element), the others one by one."""
        table = self._decode.get(b) or self._decode_table(b)
        ks = np.asarray(table.ks)
        k0, n = np.asarray(k0, dtype=np.float64), np.asarray(n, dtype=np.int64)
        j = np.searchsorted(ks, k0, side="right") - 1
        jj = np.clip(j, 0, table.last - 1)
        one = (j >= 0) & (j < table.last) & (k0 + (n - 1) * b < ks[jj + 1]) & (n > 0)
        slope = np.asarray(table.slope)[jj]
        t0 = np.asarray(table.total)[jj] + slope * (k0 - ks[jj])
        nf = n.astype(np.float64)
        out = np.where(one, nf * t0 + slope * b * nf * (nf - 1) / 2.0, 0.0)
        for i in np.flatnonzero(~one & (n > 0)).tolist():
            out[i] = self.decode_run(b, float(k0[i]), int(n[i]))
        return out

    def decode_until(self, b: int, k0: float, n: int, budget_s: float) -> tuple[int, float]:
        """perf.fast.decode_until with one table lookup where the run lies on one linear
        piece (the simulator's commonest call: a run cut by an arrival), the same arithmetic
        as decode_run, decode_time and decode_iterations_within."""
        table = self._decode.get(b) or self._decode_table(b)
        ks = table.ks
        j = bisect.bisect_right(ks, k0) - 1
        if not (n > 0 and 0 <= j < table.last and k0 + (n - 1) * b < ks[j + 1]):
            return decode_until(self, b, k0, n, budget_s)
        slope = table.slope[j]
        total = table.total
        t0 = total[j] + slope * (k0 - ks[j])
        dt = n * t0 + slope * b * n * (n - 1) / 2.0
        if n > 1 and dt >= budget_s:
            # each decode_time below is _interp on piece j, where every k of the run lies
            x0, y0 = ks[j], total[j]
            rise, width = total[j + 1] - y0, ks[j + 1] - x0
            if dt - (y0 + rise * (k0 + (n - 1) * b - x0) / width) >= budget_s:
                slope_b = slope * b
                m = most_within(t0, slope_b, budget_s, n - 1)
                dt = m * t0 + slope_b * m * (m - 1) / 2.0
                if dt < budget_s:
                    dt += y0 + rise * (k0 + m * b - x0) / width
                    m += 1
                return m, dt
        return n, dt

    def decode_iterations_within(self, b: int, k0: float, budget_s: float, cap: int
                                 ) -> tuple[int, float]:
        """How many whole decode iterations (at most cap) fit in budget_s, and the seconds
        they take."""
        table = self._decode.get(b) or self._decode_table(b)
        ks = table.ks
        j = bisect.bisect_right(ks, k0) - 1
        if cap > 0 and 0 <= j < table.last and k0 + (cap - 1) * b < ks[j + 1]:
            # the common case: one linear piece, solved in closed form
            slope_k = table.slope[j]
            t0, slope = table.total[j] + slope_k * (k0 - ks[j]), slope_k * b
            x = most_within(t0, slope, budget_s, cap)
            return x, x * t0 + slope * x * (x - 1) / 2.0
        done, left = 0, budget_s
        for m, t0, slope in table.runs(b, k0, cap):
            whole = m * t0 + slope * m * (m - 1) / 2.0
            if whole <= left:
                done, left = done + m, left - whole
                continue
            x = most_within(t0, slope, left, m)
            return done + x, budget_s - left + x * t0 + slope * x * (x - 1) / 2.0
        return done, budget_s - left


class _DecodeTable:
    """A decode step's seconds against the batch's total context k: grid points ks with the
    step (total) and attention seconds at each; each piece's slope kept (the simulator asks
    millions of times)."""

    __slots__ = ("ks", "total", "attn", "slope", "last")

    def __init__(self, ks: list[float], total: list[float], attn: list[float]) -> None:
        self.ks, self.total, self.attn = ks, total, attn
        self.slope = [(total[j + 1] - total[j]) / (ks[j + 1] - ks[j])
                      for j in range(len(ks) - 1)]
        self.last = len(ks) - 1  # pieces: 0 .. last - 1

    def step(self, k: float) -> float:
        """The step at context k."""
        return _interp(self.ks, self.total, k)

    def runs(self, b: int, k0: float, n: int) -> list[tuple[int, float, float]]:
        """[(iterations m, time of the first, slope per iteration)] covering n decode
        iterations of batch b from context k0, each piece linear in the iteration index."""
        ks, total, slopes, last = self.ks, self.total, self.slope, self.last
        out = []
        i = 0
        while i < n:
            k = k0 + i * b
            j = min(max(bisect.bisect_right(ks, k) - 1, 0), last - 1)
            slope_k = slopes[j]
            if j == last - 1:
                m = n - i
            else:
                m = min(n - i, max(1, math.ceil((ks[j + 1] - k) / b)))
            out.append((m, total[j] + slope_k * (k - ks[j]), slope_k * b))
            i += m
        return out
