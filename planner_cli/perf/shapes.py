"""A replica shape (model, GPU, tensor parallel tp, pipeline parallel pp, precision, and for MoE
models expert parallelism ep and attention data parallelism dp) and how its weights and KV
cache split across GPUs.

Sharding follows vLLM: attention heads, FFN width and every expert's FFN are split tp ways
(KV heads are replicated when tp exceeds them; MLA's latent cache is replicated on every rank
of the tp group); embedding and LM head are vocab-parallel; pipeline stages hold contiguous
layers, the embedding on the first stage and the LM head on the last. With attention data
parallelism each of the dp ranks is such a tp group for everything but the experts, which are
split over all tp·dp GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner_cli.errors import InputError
from planner_cli.specs.gpu import GpuSpec
from planner_cli.specs.model import (
    BYTES_PER_KV_ELEMENT,
    BYTES_PER_LINEAR_WEIGHT,
    BYTES_UNQUANTISED,
    EXPERTS_ONLY,
    FP8_PRECISIONS,
    PRECISIONS,
    ModelCard,
    attention_params_per_layer,
    expert_bytes_per_weight,
    kv_elements_per_token_per_layer,
    linear_attention_params,
)

GATED_FFN_MATRICES = 3  # gate, up, down (SwiGLU) in every supported family


@dataclass(frozen=True)
class ReplicaShape:
    card: ModelCard
    gpu: GpuSpec
    tp: int = 1
    pp: int = 1
    precision: str = "bf16"
    kv_dtype: str = "bf16"
    gpus_per_node: int | None = None  # the pool's node size; default: the GPU's
    # expert parallelism of an MoE model inside its expert group, the tp·dp GPUs (experts
    # spread over ep GPUs, each expert split tp·dp/ep ways); the same weight bytes per GPU, so
    # the memory model and the analytic model treat it as tp; the measured source times its
    # kernels and all-to-alls
    ep: int = 1
    # attention data parallelism of an MoE model (vLLM --data-parallel-size with
    # --enable-expert-parallel, SGLang --dp with --enable-dp-attention): dp ranks of tp GPUs
    # each, every rank running attention and the dense layers for its own requests (weights
    # and KV cache per rank as at tp), the experts spread over all tp·dp GPUs; timed from the
    # measured tables only
    dp: int = 1

    def __post_init__(self) -> None:
        check_shape(self)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def expert_group(self) -> int:
        """GPUs an MoE layer's experts are spread over: every rank of the tp·dp group."""
        return self.tp * self.dp

    @property
    def node_size(self) -> int:
        return self.gpus_per_node or self.gpu.gpus_per_node

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.node_size)

    @property
    def label(self) -> str:
        ep = f" ep{self.ep}" if self.ep > 1 else ""
        dp = f" dp{self.dp}" if self.dp > 1 else ""
        return (f"{self.card.name} on {self.gpu.name} tp{self.tp} pp{self.pp}{ep}{dp} "
                f"{self.precision}")

    # ------------------------------------------------------------ split across GPUs

    @property
    def layers_per_stage(self) -> int:
        return math.ceil(self.card.num_hidden_layers / self.pp)

    @property
    def heads_per_gpu(self) -> float:
        return self.card.num_attention_heads / self.tp

    @property
    def kv_heads_per_gpu(self) -> float:
        return max(1.0, self.card.num_key_value_heads / self.tp)

    def kv_elements_per_token_layer_gpu(self) -> float:
        if self.card.mla is not None:  # the latent and rope key (and an indexer's key),
            return float(kv_elements_per_token_per_layer(self.card))  # on every rank
        return 2.0 * self.kv_heads_per_gpu * self.card.head_dim

    def _per_stage(self, layers: int) -> int:
        """Layers of one kind on the fullest stage (each kind spread evenly over the stages)."""
        return math.ceil(layers / self.pp)

    def kv_bytes_per_token_gpu(self) -> float:
        """KV-cache bytes one token takes on one GPU of the fullest stage (the layers whose
        cache grows with the context)."""
        per_element = BYTES_PER_KV_ELEMENT[self.kv_dtype]
        return (self._per_stage(self.card.num_kv_layers) * self.kv_elements_per_token_layer_gpu()
                * per_element)

    def state_bytes_per_sequence_gpu(self) -> float:
        """Cache bytes one sequence holds on one GPU whatever its length: the sliding-window
        layers' window and the linear-attention layers' states (split over tp by head)."""
        card = self.card
        total = 0.0
        sliding = self._per_stage(card.layers_of("sliding_attention"))
        if sliding:
            total += (sliding * card.sliding_window * self.kv_elements_per_token_layer_gpu()
                      * BYTES_PER_KV_ELEMENT[self.kv_dtype])
        if card.linear_attention is not None:
            total += (self._per_stage(card.layers_of("linear_attention"))
                      * card.linear_attention.state_bytes_per_layer / self.tp)
        return total

    def attention_linear_params_gpu(self) -> float:
        """Attention projection weights per layer on one GPU (replicated KV heads counted;
        a hybrid model's linear-attention layers averaged in)."""
        card = self.card
        linear, _ = attention_params_per_layer(card)
        if card.mla is not None:
            return linear / self.tp
        h, d = card.hidden_size, card.head_dim
        q = card.num_attention_heads * d * (2 if card.attn_output_gate else 1)
        q_o = h * (q + card.num_attention_heads * d) / self.tp
        kv = 2 * h * self.kv_heads_per_gpu * d
        if card.linear_attention is None:
            return q_o + kv
        n_linear = card.layers_of("linear_attention")
        lin, _ = linear_attention_params(card.linear_attention, h)
        return ((card.num_hidden_layers - n_linear) * (q_o + kv) + n_linear * lin / self.tp
                ) / card.num_hidden_layers

    def dense_ffn_params_gpu(self) -> float:
        card = self.card
        return GATED_FFN_MATRICES * card.hidden_size * card.intermediate_size / self.tp

    def expert_params_gpu(self) -> float:
        """One routed (or shared) expert's FFN weights on one GPU."""
        if self.card.moe is None:
            return 0.0  # a dense model has no experts
        return (GATED_FFN_MATRICES * self.card.hidden_size
                * self.card.moe.moe_intermediate_size / self.expert_group)

    def layer_weight_bytes_gpu(self, moe_layer: bool) -> float:
        """All weight bytes of one layer on one GPU."""
        card = self.card
        per_linear = BYTES_PER_LINEAR_WEIGHT[self.precision]
        linear = self.attention_linear_params_gpu()
        small = 2 * card.hidden_size * BYTES_UNQUANTISED  # the two layer norms
        if moe_layer and card.moe is not None:
            moe = card.moe
            experts = (moe.num_experts + moe.num_shared_experts) * self.expert_params_gpu()
            small += card.hidden_size * moe.num_experts * BYTES_UNQUANTISED  # router
            return linear * per_linear + experts * expert_bytes_per_weight(self.precision) + small
        return (linear + self.dense_ffn_params_gpu()) * per_linear + small

    def stage_layer_kinds(self, stage: int) -> tuple[int, int]:
        """(dense layers, MoE layers) held by pipeline stage `stage`."""
        card = self.card
        per = self.layers_per_stage
        first = stage * per
        last = min(card.num_hidden_layers, first + per)
        dense_end = card.num_dense_layers
        dense = max(0, min(last, dense_end) - first)
        return dense, (last - first) - dense

    def embedding_bytes_gpu(self) -> float:
        return self.card.vocab_size * self.card.hidden_size * BYTES_UNQUANTISED / self.tp

    def stage_weight_bytes_gpu(self, stage: int) -> float:
        dense, moe = self.stage_layer_kinds(stage)
        total = dense * self.layer_weight_bytes_gpu(False) + moe * self.layer_weight_bytes_gpu(True)
        if stage == 0:
            total += self.embedding_bytes_gpu()
        if stage == self.pp - 1:
            total += self.embedding_bytes_gpu()  # LM head (a tied head is still resident)
            total += self.card.hidden_size * BYTES_UNQUANTISED  # final norm
        return total

    def weight_bytes_gpu(self) -> float:
        """Weight bytes on the fullest GPU."""
        return max(self.stage_weight_bytes_gpu(s) for s in range(self.pp))


def check_shape(shape: ReplicaShape) -> None:
    card = shape.card
    if shape.precision not in PRECISIONS:
        raise InputError(f"precision {shape.precision!r} is not known",
                         "use " + ", ".join(PRECISIONS))
    if shape.kv_dtype not in BYTES_PER_KV_ELEMENT:
        raise InputError(f"KV-cache dtype {shape.kv_dtype!r} is not known", "use bf16 or fp8")
    if shape.tp < 1 or shape.pp < 1:
        raise InputError(f"tp={shape.tp} pp={shape.pp}: both must be >= 1", "use 1, 2, 4, ...")
    if card.num_attention_heads % shape.tp:
        raise InputError(f"tp={shape.tp} does not divide {card.name}'s "
                         f"{card.num_attention_heads} attention heads",
                         "pick a tp that divides the heads")
    kv = card.num_key_value_heads
    if card.mla is None and kv % shape.tp and shape.tp % kv:
        raise InputError(f"tp={shape.tp} and {card.name}'s {kv} KV heads neither divide the other",
                         "pick a tp that divides the KV heads or a multiple of them")
    if shape.tp > shape.node_size:
        raise InputError(f"tp={shape.tp} exceeds the {shape.node_size} GPUs of a node",
                         "keep tensor parallelism inside a node; use pp across nodes")
    if shape.dp < 1:
        raise InputError(f"dp={shape.dp} is below 1", "use 1 (no attention data parallelism) "
                         "or more")
    if shape.dp > 1 and card.moe is None:
        raise InputError(f"dp={shape.dp}: attention data parallelism spreads an MoE model's "
                         f"experts over its ranks, and {card.name} has none",
                         "serve a dense model's copies as replicas; use dp 1")
    if shape.dp > 1 and shape.pp > 1:
        raise InputError(f"dp={shape.dp} with pp={shape.pp} is not modelled",
                         "use attention data parallelism with pp 1")
    if shape.tp * shape.dp > shape.node_size:
        raise InputError(f"tp={shape.tp} x dp={shape.dp} exceeds the {shape.node_size} GPUs of "
                         "a node", "keep the attention-DP group inside a node")
    if shape.ep < 1 or shape.expert_group % shape.ep:
        group = f"tp={shape.tp}" if shape.dp == 1 else f"tp x dp={shape.expert_group}"
        raise InputError(f"ep={shape.ep} does not divide {group}",
                         "expert parallelism spreads the experts inside the tp group"
                         + (" times dp" if shape.dp > 1 else ""))
    if shape.ep > 1 and card.moe is None:
        raise InputError(f"ep={shape.ep}: {card.name} has no experts", "use ep 1")
    if shape.pp > card.num_hidden_layers:
        raise InputError(f"pp={shape.pp} exceeds {card.name}'s {card.num_hidden_layers} layers",
                         "use fewer pipeline stages")
    if shape.precision in EXPERTS_ONLY and card.moe is None:
        raise InputError(f"{shape.precision} quantises MoE experts, and {card.name} has none",
                         "use bf16, fp8 or int4-awq for a dense model")
    if shape.precision == "fp4" and shape.gpu.fp4_dense_tflops is None:
        raise InputError(f"fp4 (NVFP4) needs FP4 tensor cores, which {shape.gpu.name} lacks",
                         "use a Blackwell GPU (b200, b300, gb200, gb300, rtx-pro-6000-server) "
                         "or fp8 / int4-awq (mxfp4 for gpt-oss's own 4-bit experts)")
    if shape.precision == "mxfp4-mxfp8" and shape.gpu.fp4_dense_tflops is None:
        raise InputError(f"mxfp4-mxfp8 needs Blackwell's block-scaled tensor cores, which "
                         f"{shape.gpu.name} lacks", "use mxfp4 (bf16 activations)")
    if shape.precision in FP8_PRECISIONS and shape.gpu.fp8_dense_tflops is None:
        pass  # allowed: weight-only fp8 (see GpuSpec.dense_tflops)
