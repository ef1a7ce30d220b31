"""Analytic (roofline) iteration time of a continuous-batching engine step.

One iteration prefills `p` tokens (chunks of new prompts, which already have `prefill_context`
cached tokens before the chunk) and decodes one token for each of `b` running sequences that
together hold `k` context tokens. Per layer on one GPU of a stage:

  GEMMs      t = max(F_gemm / (P · η_c), B_gemm / (BW · η_b))
             F_gemm = 2 · n · (active linear weights per GPU), n = p + b
             B_gemm = weight bytes touched (MoE: the experts the batch touches) + activations
  attention  t = max(F_attn / (P · η_a), B_attn / (BW · η_ab))
             prefill: causal, 2·2·h·d·(p·prefill_context + p²/2); decode: 2·2·h·d·k
             bytes: the KV read (decode: k tokens; prefill: its prefix) and written (n tokens)
  kernels    t = kernels_per_layer · kernel_latency
  TP         2 all-reduces of n · hidden · 2 bytes: t = latency + 2(tp-1)/tp · size / (link · η_l)

A stage runs its layers in sequence; the last stage adds the LM head; stages hand the
activations on over the link between them; a fixed per-iteration overhead (scheduling,
sampling, input preparation) is added once. P, BW and the links are the GPU card's figures.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field, replace

from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.model import (
    BYTES_PER_KV_ELEMENT,
    BYTES_PER_LINEAR_WEIGHT,
    BYTES_UNQUANTISED,
    expert_bytes_per_weight,
)

ACT_BYTES = 2  # bf16 activations


@dataclass(frozen=True)
class AnalyticConstants:
    """Efficiencies and latencies of the roofline; `perf calibrate` fits them to measurements."""

    # Achieved share of dense tensor peak for the layer GEMMs. cuBLAS bf16 GEMMs of 4096-8192
    # reach 68-73 % of peak on B200 (pyptx.dev performance page), CUTLASS 3.5 70-75 % on H100
    # for 4096-8192 squares (NVIDIA CUTLASS benchmark page).
    compute_efficiency: float = 0.70
    # Achieved share of peak in attention: FlashAttention-2 reaches 50-73 % of A100 peak in the
    # forward pass (Dao, 2023); the low end, since serving attention is short and ragged.
    attention_efficiency: float = 0.50
    # Achieved share of HBM bandwidth: aiconfigurator systems/*.yaml
    # mem_bw_empirical_scaling_factor 0.8.
    bandwidth_efficiency: float = 0.80
    # Achieved share of HBM bandwidth when attention reads the KV cache (paged, scattered
    # blocks); the same empirical factor by default, fitted apart by calibration.
    attention_bandwidth_efficiency: float = 0.80
    # Achieved share of bandwidth when an iteration has a single token (matrix-vector
    # kernels, which BLAS libraries and engines run on a separate, often faster path). None:
    # the same as bandwidth_efficiency. Fitted by calibration when single-token rows exist.
    single_token_bandwidth_efficiency: float | None = None
    # Achieved share of link bandwidth in all-reduce and hand-offs (same empirical factor).
    link_efficiency: float = 0.80
    # Fixed cost per kernel launch: aiconfigurator mem_empirical_constant_latency, 3 us.
    kernel_latency_s: float = 3e-6
    # Kernels per decoder layer in vLLM's Llama-style layer: 2 RMSNorms, QKV, rotary,
    # attention, O projection, gate-up, SiLU-and-mul, down.
    kernels_per_layer: int = 9
    # Fixed latency of one collective / point-to-point step: aiconfigurator p2p_latency, 10 us.
    collective_latency_s: float = 10e-6
    # CPU-side cost per engine step (scheduling, input preparation, sampling, output update).
    # Order of magnitude of vLLM V1's measured scheduler and output-update costs (0.13-0.29 ms
    # each at 128-256 sequences, vllm PR #46112); the older V0 engine left 4 ms GPU bubbles per
    # decode step (vllm issue #6854). Engines differ a lot here: calibrate it.
    iteration_overhead_s: float = 1e-3
    # Scale on the all-reduce time (1 = the ring model); calibration can raise it.
    comm_scale: float = 1.0

    def with_(self, **changes: float) -> AnalyticConstants:
        return replace(self, **changes)


DEFAULT_CONSTANTS = AnalyticConstants()


@dataclass(frozen=True)
class Breakdown:
    """Seconds per iteration by component (the whole replica, one micro-batch)."""

    gemm_s: float = 0.0
    attention_s: float = 0.0
    kernel_s: float = 0.0
    allreduce_s: float = 0.0
    lm_head_s: float = 0.0
    pipeline_s: float = 0.0
    overhead_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return (self.gemm_s + self.attention_s + self.kernel_s + self.allreduce_s
                + self.lm_head_s + self.pipeline_s + self.overhead_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["total_s"] = self.total_s
        return d


@dataclass(frozen=True)
class LayerLoad:
    """Work of one layer on one GPU, and how many such layers the iteration runs."""

    count: int
    gemm_flops: float
    gemm_bytes: float
    attn_flops: float
    attn_bytes: float
    gemm_scale: float = 1.0  # weight-only int4: its GEMMs' time against the bf16 twin's


@dataclass(frozen=True)
class IterationLoad:
    """Raw work of one iteration along its path through the stages, before efficiencies."""

    layers: tuple[LayerLoad, ...]
    tokens: int  # tokens in the iteration (prefill + decode)
    allreduce_s_nominal: float  # ring model at full link speed, no latency
    allreduce_steps: int  # collectives in the iteration (2 per layer when tp > 1)
    head_flops: float
    head_bytes: float
    handoff_s_nominal: float

    @property
    def layer_count(self) -> int:
        return sum(layer.count for layer in self.layers)


def _experts_touched(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts `tokens` tokens route to, under uniform routing."""
    if tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def _link_bandwidth(shape: ReplicaShape, across_nodes: bool) -> float:
    gbps = shape.gpu.inter_node_bandwidth_gbps if across_nodes else (
        shape.gpu.intra_node_bandwidth_gbps)
    return gbps * 1e9


@dataclass(frozen=True)
class AttentionCoeffs:
    """Attention work per layer on one GPU, per unit of its drivers."""

    flops_prefill: float  # per causal token pair: 2 · heads · (QK + AV dims)
    flops_decode: float  # per cached token attended by a decoding sequence
    kv_token_bytes: float  # KV bytes of one token in one layer on one GPU
    window: int | None  # sliding window, if any
    # hybrid models (layer_types), per average layer: the work above is the full-attention
    # layers' share; sliding-window and linear-attention layers cost a fixed amount per token
    # (flops) and per sequence (their window or state read and written, bytes)
    token_flops: float = 0.0
    seq_bytes: float = 0.0


def attention_coeffs(shape: ReplicaShape) -> AttentionCoeffs:
    card = shape.card
    heads = shape.heads_per_gpu
    if card.layer_types is not None and set(card.layer_types) != {"full_attention"}:
        return _hybrid_coeffs(shape)
    if card.mla is not None:
        m = card.mla
        prefill_dim = m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim
        decode_dim = 2 * m.kv_lora_rank + m.qk_rope_head_dim  # absorbed: attend in the latent
    else:
        prefill_dim = decode_dim = 2 * card.head_dim
    kv = shape.kv_elements_per_token_layer_gpu() * BYTES_PER_KV_ELEMENT[shape.kv_dtype]
    return AttentionCoeffs(2.0 * heads * prefill_dim, 2.0 * heads * decode_dim, kv,
                           card.sliding_window)


def _hybrid_coeffs(shape: ReplicaShape) -> AttentionCoeffs:
    """A hybrid model's attention per average layer: the full-attention layers' share of the
    work over the growing context; the sliding layers attend over at most their window (taken
    as full: a per-token cost) and hold it per sequence; the linear layers update and read a
    head-wise state per token."""
    card = shape.card
    layers = card.num_hidden_layers
    full, sliding = card.layers_of("full_attention") / layers, card.layers_of(
        "sliding_attention") / layers
    pair = 2.0 * shape.heads_per_gpu * 2 * card.head_dim
    kv = shape.kv_elements_per_token_layer_gpu() * BYTES_PER_KV_ELEMENT[shape.kv_dtype]
    token_flops = sliding * pair * (card.sliding_window or 0)
    seq_bytes = 2.0 * shape.state_bytes_per_sequence_gpu() / max(1, shape.layers_per_stage)
    spec = card.linear_attention
    if spec is not None:
        token_flops += (card.layers_of("linear_attention") / layers * 4.0
                        * spec.num_value_heads / shape.tp * spec.key_head_dim
                        * spec.value_head_dim)
    return AttentionCoeffs(full * pair, full * pair, full * kv, None, token_flops, seq_bytes)


def attention_work(a: AttentionCoeffs, p: int, b: int, k: float,
                   prefill_context: float, prefill_seqs: int = 1) -> tuple[float, float]:
    """(flops, bytes) of one layer's attention: prefill causal within each of the
    `prefill_seqs` prompts sharing the p tokens (p/s tokens each, after `prefill_context`
    cached ones on average: s·(c·q + c²/2) = p·q + p²/(2s)), decode over the cached context
    (capped by a sliding window)."""
    s = max(1, min(prefill_seqs, p)) if p > 0 else 1
    span_decode = k if a.window is None else min(k, b * a.window)
    causal = p * prefill_context + p * p / (2.0 * s)
    if a.window is not None:
        causal = min(causal, p * float(a.window))
    flops = a.flops_prefill * causal + a.flops_decode * span_decode + a.token_flops * (p + b)
    by = a.kv_token_bytes * (span_decode + s * prefill_context + p + b)
    return flops, by + a.seq_bytes * ((s if p > 0 else 0) + b)


def gemm_work(shape: ReplicaShape, moe_layer: bool, n: int) -> tuple[float, float]:
    """(flops, bytes) of one layer's projections and FFN for `n` tokens on one GPU."""
    card = shape.card
    per_linear = BYTES_PER_LINEAR_WEIGHT[shape.precision]
    attn_params = shape.attention_linear_params_gpu()
    flops = 2.0 * n * attn_params
    weight_bytes = attn_params * per_linear
    if moe_layer and card.moe is not None:
        moe = card.moe
        expert = shape.expert_params_gpu()
        flops += 2.0 * n * (moe.num_experts_per_tok + moe.num_shared_experts) * expert
        flops += 2.0 * n * card.hidden_size * moe.num_experts  # router
        touched = _experts_touched(moe.num_experts, moe.num_experts_per_tok, n)
        weight_bytes += ((touched + moe.num_shared_experts) * expert
                         * expert_bytes_per_weight(shape.precision))
        weight_bytes += card.hidden_size * moe.num_experts * BYTES_UNQUANTISED
    else:
        ffn = shape.dense_ffn_params_gpu()
        flops += 2.0 * n * ffn
        weight_bytes += ffn * per_linear
    act_bytes = n * ACT_BYTES * (6 * card.hidden_size)  # layer in/out, norms, residual adds
    return flops, weight_bytes + act_bytes


def communication_work(shape: ReplicaShape, n: int) -> tuple[float, int, float]:
    """(all-reduce seconds at full link speed, collective steps, pipeline hand-off seconds at
    full link speed) of an iteration of n tokens: two all-reduces per layer (after attention
    and after the FFN) when tp > 1, one hand-off between consecutive stages when pp > 1."""
    if n <= 0:
        return 0.0, 0, 0.0
    hidden_bytes = n * shape.card.hidden_size * ACT_BYTES
    allreduce, steps = 0.0, 0
    if shape.tp > 1:
        steps = 2 * shape.card.num_hidden_layers
        allreduce = steps * 2.0 * (shape.tp - 1) / shape.tp * hidden_bytes / _link_bandwidth(
            shape, False)
    handoff = 0.0
    if shape.pp > 1:
        across = shape.gpus > shape.node_size
        handoff = (shape.pp - 1) * hidden_bytes / _link_bandwidth(shape, across)
    return allreduce, steps, handoff


def communication_time(c: AnalyticConstants, allreduce_nominal_s: float, steps: int,
                       handoff_nominal_s: float) -> tuple[float, float]:
    """(all-reduce seconds, hand-off seconds) under the constants' link efficiency,
    latencies and collective scale."""
    collectives = c.comm_scale * (allreduce_nominal_s / c.link_efficiency
                                  + steps * c.collective_latency_s)
    handoff = 0.0
    if handoff_nominal_s > 0:
        handoff = handoff_nominal_s / c.link_efficiency + c.collective_latency_s
    return collectives, handoff


# Weight-only int4 GEMMs (AWQ-style: 4-bit weights dequantised in the kernel) against bf16 ones
# by tokens m: the median int4_wo / bfloat16 latency over the 63 shapes with n, k >= 4096 of
# aiconfigurator-core's A100 TensorRT-LLM GEMM table (systems/data/a100_sxm/gemm/trtllm/1.0.0,
# the only int4 weight-only GEMMs it measured), made non-decreasing in m by pooling adjacent
# violators (so an iteration never gets faster with more tokens); tests/test_perf.py recomputes
# it. Reading a quarter of the bytes wins below ~48 tokens; from ~256 tokens the
# dequantisation makes them slower than bf16.
WEIGHT_ONLY = ("int4-awq",)
INT4_WO_RATIO = ((1, 0.367), (2, 0.367), (4, 0.395), (8, 0.395), (16, 0.407), (32, 0.454),
                 (48, 0.688), (64, 0.688), (80, 0.897), (96, 0.900), (128, 0.900),
                 (160, 0.929), (192, 0.929), (256, 1.045), (384, 1.055), (512, 1.055),
                 (768, 1.055), (1024, 1.055), (2048, 1.055), (4096, 1.055), (8192, 1.055))


_WO_TOKENS = tuple(m for m, _ in INT4_WO_RATIO)


def weight_only_ratio(m: float) -> float:
    """INT4_WO_RATIO at m tokens (linear between its points, its end values beyond)."""
    points = INT4_WO_RATIO
    if m <= points[0][0]:
        return points[0][1]
    j = bisect.bisect_left(_WO_TOKENS, m)  # the first point at or past m
    if j == len(points):
        return points[-1][1]
    (m0, r0), (m1, r1) = points[j - 1], points[j]
    return r0 + (r1 - r0) * (m - m0) / (m1 - m0)


def gemm_twin(shape: ReplicaShape) -> ReplicaShape:
    """The shape whose GEMM work a weight-only precision is timed against (bf16), else itself."""
    return replace(shape, precision="bf16") if shape.precision in WEIGHT_ONLY else shape


def gemm_scale(shape: ReplicaShape, moe_layer: bool, n: int) -> float:
    """A layer's GEMM time against its bf16 twin's: 1 unless weight-only; an MoE layer's
    experts each see n · top-k / experts of the tokens."""
    if shape.precision not in WEIGHT_ONLY or n <= 0:
        return 1.0
    moe = shape.card.moe
    m = max(1.0, n * moe.num_experts_per_tok / moe.num_experts) if (
        moe_layer and moe is not None) else float(n)
    return weight_only_ratio(m)


def iteration_load(shape: ReplicaShape, p: int, b: int, k: float,
                   prefill_context: float = 0.0, prefill_seqs: int = 1) -> IterationLoad:
    """The work of one iteration along its path (all pipeline stages in turn)."""
    card = shape.card
    n = p + b
    counts = {False: 0, True: 0}
    for stage in range(shape.pp):
        dense, moe = shape.stage_layer_kinds(stage)
        counts[False] += dense
        counts[True] += moe
    layers = []
    for is_moe in (False, True):
        if counts[is_moe]:
            f, by = gemm_work(gemm_twin(shape), is_moe, n)
            af, ab = attention_work(attention_coeffs(shape), p, b, k, prefill_context,
                                    prefill_seqs)
            layers.append(LayerLoad(counts[is_moe], f, by, af, ab, gemm_scale(shape, is_moe, n)))
    allreduce, steps, handoff = communication_work(shape, n)
    # logits only for the last token of each sequence
    seqs = b + (max(1, min(prefill_seqs, p)) if p > 0 else 0)
    head_params = card.vocab_size * card.hidden_size / shape.tp
    return IterationLoad(layers=tuple(layers), tokens=n, allreduce_s_nominal=allreduce,
                         allreduce_steps=steps, head_flops=2.0 * seqs * head_params,
                         head_bytes=head_params * BYTES_UNQUANTISED, handoff_s_nominal=handoff)


def time_from_load(load: IterationLoad, shape: ReplicaShape,
                   c: AnalyticConstants) -> Breakdown:
    """Seconds of an iteration from its work and the constants (the roofline)."""
    peak = shape.gpu.dense_tflops(shape.precision) * 1e12
    bw = shape.gpu.hbm_bandwidth_gbps * 1e9
    gemm = attn = 0.0
    gemm_bw = c.bandwidth_efficiency
    if load.tokens == 1 and c.single_token_bandwidth_efficiency is not None:
        gemm_bw = c.single_token_bandwidth_efficiency
    for layer in load.layers:
        gemm += layer.count * layer.gemm_scale * max(
            layer.gemm_flops / (peak * c.compute_efficiency), layer.gemm_bytes / (bw * gemm_bw))
        attn += layer.count * max(layer.attn_flops / (peak * c.attention_efficiency),
                                  layer.attn_bytes / (bw * c.attention_bandwidth_efficiency))
    head = max(load.head_flops / (peak * c.compute_efficiency),
               load.head_bytes / (bw * gemm_bw))
    collectives, handoff = communication_time(c, load.allreduce_s_nominal,
                                              load.allreduce_steps, load.handoff_s_nominal)
    return Breakdown(gemm_s=gemm, attention_s=attn,
                     kernel_s=load.layer_count * c.kernels_per_layer * c.kernel_latency_s,
                     allreduce_s=collectives, lm_head_s=head, pipeline_s=handoff,
                     overhead_s=c.iteration_overhead_s)


def analytic_iteration(shape: ReplicaShape, p: int, b: int, k: float,
                       prefill_context: float = 0.0,
                       constants: AnalyticConstants = DEFAULT_CONSTANTS,
                       prefill_seqs: int = 1) -> Breakdown:
    """Roofline time of one engine iteration (see the module docstring); the p prefill tokens
    belong to `prefill_seqs` prompts."""
    if p < 0 or b < 0 or k < 0 or prefill_context < 0:
        raise ValueError("token counts must be >= 0")
    return time_from_load(iteration_load(shape, p, b, k, prefill_context, prefill_seqs), shape,
                          constants)
