"""Model cards: architecture facts of an HF config.json; derived numbers are computed here.

Nothing derived is stored in a card: parameter counts, weight bytes, KV-cache bytes per token and
FLOPs per token are functions of the architecture, tested against published sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from planner_cli.errors import InputError
from planner_cli.specs._yaml import EngineArg, StrictModel

Precision = Literal["bf16", "fp8", "fp8-block", "int4-awq", "fp4", "mxfp4", "mxfp4-mxfp8"]
PRECISIONS: tuple[str, ...] = ("bf16", "fp8", "fp8-block", "int4-awq", "fp4", "mxfp4",
                               "mxfp4-mxfp8")
# fp8 weights and activations: per-tensor scales (what an engine's on-the-fly --quantization
# fp8 and ModelOpt's FP8 checkpoints run), or 128x128 block scales (the FP8 checkpoints of
# DeepSeek, Qwen and GLM-5); the same bytes and tensor cores, other kernels
FP8_PRECISIONS: tuple[str, ...] = ("fp8", "fp8-block")

# Bytes per weight of the quantised linear layers.
# int4-awq: AutoAWQ GEMM layout, group size 128: 4-bit weights (0.5 B) plus per group and output
# channel one fp16 scale (2 B) and one packed 4-bit zero point (0.5 B) -> 2.5 B / 128 weights.
AWQ_GROUP_SIZE = 128
NVFP4_BLOCK = 16
BYTES_PER_LINEAR_WEIGHT: dict[str, float] = {
    "bf16": 2.0,
    "fp8": 1.0,  # per-tensor / per-block fp32 scales are < 0.01 % of the weights
    "fp8-block": 1.0,
    "int4-awq": 0.5 + 2.5 / AWQ_GROUP_SIZE,
    # fp4: NVFP4 (ModelOpt), 4-bit E2M1 values with one E4M3 scale byte per 16 (plus one fp32
    # scale per tensor): 9/16 B per weight, as aiconfigurator-core's GEMMQuantMode.nvfp4 counts
    "fp4": 0.5 + 1.0 / NVFP4_BLOCK,
    # mxfp4 (gpt-oss's own checkpoint): only the MoE experts are 4-bit E2M1 with one E8M0
    # scale byte per 32 weights (17/32 B per weight); attention and everything else stay bf16,
    # and the experts are dequantised for the matmul (weight-only). See EXPERT_BYTES.
    "mxfp4": 2.0,
    # mxfp4-mxfp8: the same checkpoint, its experts run on Blackwell's block-scaled tensor cores
    # with the activations quantised to MXFP8 (vLLM's VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1)
    "mxfp4-mxfp8": 2.0,
}
MXFP4_BLOCK = 32
# Bytes per weight of the MoE experts where a precision quantises them apart from the other
# linear layers (else BYTES_PER_LINEAR_WEIGHT's).
EXPERT_BYTES: dict[str, float] = {"mxfp4": 0.5 + 1.0 / MXFP4_BLOCK,
                                   "mxfp4-mxfp8": 0.5 + 1.0 / MXFP4_BLOCK}
# precisions that quantise the MoE experts alone (MoE models only)
EXPERTS_ONLY = ("mxfp4", "mxfp4-mxfp8")
# what a checkpoint's own precision may also be served as: the same weights, other kernels
# (plain fp8 for a block-scaled fp8 checkpoint is that checkpoint's own; an MXFP4 checkpoint's
# experts with MXFP8 activations are a serving choice)
SERVED_AS: dict[str, tuple[str, ...]] = {"mxfp4": ("mxfp4-mxfp8",)}


def expert_bytes_per_weight(precision: str) -> float:
    """Bytes per weight of the MoE experts at a precision."""
    return EXPERT_BYTES.get(precision, BYTES_PER_LINEAR_WEIGHT[precision])
# Embeddings, LM head and norms stay in bf16 under fp8 and AWQ (vLLM, AutoAWQ and llm-compressor
# leave them unquantised).
BYTES_UNQUANTISED = 2.0
BYTES_PER_KV_ELEMENT: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


class MoeSpec(StrictModel):
    num_experts: PositiveInt
    num_experts_per_tok: PositiveInt
    moe_intermediate_size: PositiveInt  # width of one routed expert's FFN
    num_shared_experts: NonNegativeInt = 0  # always-active experts of the same width
    first_k_dense_replace: NonNegativeInt = 0  # the first k layers use a dense FFN instead
    expert_bias: bool = False  # biases on every expert's projections and the router (gpt-oss)

    @model_validator(mode="after")
    def _topk_le_experts(self) -> MoeSpec:
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError("num_experts_per_tok exceeds num_experts")
        return self


class MlaSpec(StrictModel):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds the latent only."""

    kv_lora_rank: PositiveInt
    q_lora_rank: PositiveInt | None = None  # None: q is a full projection
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


LayerType = Literal["full_attention", "sliding_attention", "linear_attention"]


class LinearAttentionSpec(StrictModel):
    """Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5): q/k heads of key_head_dim,
    v heads of value_head_dim, a short causal convolution over q, k and v, and a recurrent
    state of value_heads x key_head_dim x value_head_dim per sequence instead of a KV cache."""

    num_key_heads: PositiveInt
    num_value_heads: PositiveInt
    key_head_dim: PositiveInt
    value_head_dim: PositiveInt
    conv_kernel_dim: PositiveInt
    state_bytes: Literal[2, 4] = 4  # the recurrent state's element size (mamba_ssm_dtype)

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def state_bytes_per_layer(self) -> int:
        """One sequence's state in one layer: the recurrent state, and the convolution's last
        kernel - 1 inputs of q, k and v kept in the activation dtype (bf16)."""
        recurrent = self.num_value_heads * self.key_head_dim * self.value_head_dim
        conv = (2 * self.key_dim + self.value_dim) * (self.conv_kernel_dim - 1)
        return int(recurrent * self.state_bytes + conv * BYTES_UNQUANTISED)


class IndexerSpec(StrictModel):
    """DeepSeek sparse attention's lightning indexer (DeepSeek-V3.2, GLM-5): per layer a small
    multi-head scorer over the context; it caches one key of head_dim per token and layer."""

    n_heads: PositiveInt
    head_dim: PositiveInt


class ModelCard(StrictModel):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    hf_id: EngineArg
    aliases: tuple[str, ...] = ()
    # pre-quantised checkpoints of this model (HF ids) and the precision each is served in,
    # written as a mapping: naming one selects the card, sets that precision and is what the
    # engines load (kept as pairs: a card is hashable)
    checkpoints: tuple[tuple[EngineArg, Precision], ...] = ()
    architecture: str
    model_type: str
    num_hidden_layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt  # dense FFN width (dense layers of an MoE too)
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    head_dim: PositiveInt
    vocab_size: PositiveInt
    max_position_embeddings: PositiveInt
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on the q/k/v projections (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    attention_output_bias: bool = False  # bias on the output projection too (gpt-oss)
    attention_sinks: bool = False  # one learned sink logit per head and layer (gpt-oss)
    sliding_window: PositiveInt | None = None  # all layers', unless layer_types says which
    # per layer, verbatim from the config (hybrid models); None: every layer full attention
    layer_types: tuple[LayerType, ...] | None = None
    attn_output_gate: bool = False  # q_proj also produces a sigmoid gate on the output (Qwen3.5)
    linear_attention: LinearAttentionSpec | None = None
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    indexer: IndexerSpec | None = None  # DeepSeek sparse attention (with mla)
    source: str = Field(min_length=1)

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _checkpoint_pairs(cls, value: object) -> object:
        return tuple(value.items()) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _heads_consistent(self) -> ModelCard:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.moe and self.moe.first_k_dense_replace > self.num_hidden_layers:
            raise ValueError("moe.first_k_dense_replace exceeds num_hidden_layers")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_hidden_layers:
                raise ValueError(f"layer_types lists {len(self.layer_types)} layers, "
                                 f"num_hidden_layers is {self.num_hidden_layers}")
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise ValueError("sliding_attention layers need sliding_window")
            if self.mla is not None and set(self.layer_types) != {"full_attention"}:
                raise ValueError("layer_types other than full_attention with mla")
        if self.indexer is not None and (self.mla is None or self.mla.q_lora_rank is None):
            raise ValueError("indexer needs mla with a q_lora_rank")
        if ((self.linear_attention is not None)
                != ("linear_attention" in (self.layer_types or ()))):
            raise ValueError("linear_attention layers and the linear_attention section go "
                             "together")
        return self

    def checkpoint_precision(self, name: str) -> str | None:
        """The precision `name` implies: a pre-quantised checkpoint's, else None."""
        low = name.strip().lower()
        return next((p for ckpt, p in self.checkpoints if ckpt.lower() == low), None)

    def served_precision(self, name: str, given: str | None, where: str) -> str:
        """The precision a model named `name` is served in: a pre-quantised checkpoint's
        (asking for another is an error; plain fp8 for a block-scaled fp8 checkpoint is that
        checkpoint's), else `given`, else bf16."""
        implied = self.checkpoint_precision(name)
        if implied is not None and given in SERVED_AS.get(implied, ()):
            return given
        if implied is not None and given not in (None, implied) and (given, implied) != (
                "fp8", "fp8-block"):
            raise InputError(f"{where}: {name} is a pre-quantised {implied} checkpoint, but "
                             f"precision {given} was asked for",
                             f"drop the precision or pass {implied}; or name {self.name} to "
                             "serve its own weights in another precision")
        return implied or given or "bf16"

    def layers_of(self, kind: str) -> int:
        """Layers of one LayerType (without layer_types every layer is full attention)."""
        if self.layer_types is None:
            return self.num_hidden_layers if kind == "full_attention" else 0
        return self.layer_types.count(kind)

    @property
    def num_kv_layers(self) -> int:
        """Layers whose KV cache grows with the context (full attention; a sliding window
        on every layer, as Mistral's, is still counted here)."""
        return self.layers_of("full_attention")

    @property
    def architecture_key(self) -> str:
        """Everything on the card that shapes the model's computation, without its names and
        provenance: cards equal here (DeepSeek-V3 and R1) are served by the same kernels."""
        return self.model_dump_json(exclude={"name", "hf_id", "aliases", "checkpoints",
                                             "source"})

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_moe_layers(self) -> int:
        return 0 if self.moe is None else self.num_hidden_layers - self.moe.first_k_dense_replace

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts split the way memory and FLOPs need them."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    attention: int  # all layers, projections (+ biases, q/k norms)
    dense_ffn: int  # all dense-FFN layers
    routed_experts: int  # all MoE layers, all routed experts
    routed_experts_active: int  # all MoE layers, top-k experts
    shared_experts: int
    routers: int
    norms: int  # layer norms + final norm
    attention_small: int = 0  # biases and q/k norms, counted inside `attention`

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_ffn
                + self.routed_experts + self.shared_experts + self.routers + self.norms)

    @property
    def active(self) -> int:
        return self.total - self.routed_experts + self.routed_experts_active

    @property
    def linear(self) -> int:
        """Weights of the quantisable linear layers (attention and FFN projections)."""
        return self.attention_linear + self.dense_ffn + self.routed_experts + self.shared_experts

    @property
    def attention_linear(self) -> int:
        return self.attention - self.attention_small


def linear_attention_params(spec: LinearAttentionSpec, hidden: int) -> tuple[int, int]:
    """(linear weights, small params) of one Gated DeltaNet block: q, k, v and the output gate
    z projected from the hidden state, the per-head decay (a) and update (b) projections, the
    output projection; the depthwise convolution over q, k and v, the decay's dt bias and A_log
    and the gated RMSNorm are small."""
    linear = hidden * (2 * spec.key_dim + 2 * spec.value_dim) + hidden * 2 * spec.num_value_heads
    linear += spec.value_dim * hidden
    small = (2 * spec.key_dim + spec.value_dim) * spec.conv_kernel_dim
    small += 2 * spec.num_value_heads + spec.value_head_dim
    return linear, small


def attention_params(card: ModelCard) -> tuple[int, int]:
    """(linear weights, small params) of all layers' attention blocks, by layer type."""
    full, full_small = attention_params_per_layer(card)
    attention_layers = card.num_hidden_layers - card.layers_of("linear_attention")
    linear, small = attention_layers * full, attention_layers * full_small
    if card.linear_attention is not None:
        n = card.layers_of("linear_attention")
        lin, lin_small = linear_attention_params(card.linear_attention, card.hidden_size)
        linear, small = linear + n * lin, small + n * lin_small
    return linear, small


def attention_params_per_layer(card: ModelCard) -> tuple[int, int]:
    """(linear weights, small params: biases and norms) of one softmax-attention block (full
    or sliding)."""
    h = card.hidden_size
    if card.mla is not None:
        m = card.mla
        nh = card.num_attention_heads
        q_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank is None:
            q = h * nh * q_head
            small = 0
        else:
            q = h * m.q_lora_rank + m.q_lora_rank * nh * q_head
            small = m.q_lora_rank  # q_a_layernorm
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * nh * (
            m.qk_nope_head_dim + m.v_head_dim)
        small += m.kv_lora_rank  # kv_a_layernorm
        o = nh * m.v_head_dim * h
        linear = q + kv + o
        if card.indexer is not None:  # its query from q's latent, key and head weights from h
            ix = card.indexer
            linear += m.q_lora_rank * ix.n_heads * ix.head_dim + h * ix.head_dim + h * ix.n_heads
            small += 2 * ix.head_dim  # the key's LayerNorm
        return linear, small
    q_out = card.num_attention_heads * card.head_dim
    kv_out = card.num_key_value_heads * card.head_dim
    gate = q_out if card.attn_output_gate else 0  # q_proj's second half: the output gate
    linear = h * (q_out + gate) + 2 * h * kv_out + q_out * h
    small = (q_out + 2 * kv_out) if card.attention_bias else 0
    if card.attention_output_bias:
        small += h
    if card.attention_sinks:
        small += card.num_attention_heads
    if card.qk_norm:
        small += 2 * card.head_dim
    return linear, small


def param_counts(card: ModelCard) -> ParamCounts:
    h = card.hidden_size
    attn_linear, attn_small = attention_params(card)
    layers = card.num_hidden_layers
    gated = 3  # gate, up and down projections (SwiGLU) in every supported family
    dense_ffn = card.num_dense_layers * gated * h * card.intermediate_size
    routed = routed_active = shared = routers = 0
    if card.moe is not None:
        moe = card.moe
        expert = gated * h * moe.moe_intermediate_size
        if moe.expert_bias:  # gate and up (2 x width) and down (h) biases
            expert += 2 * moe.moe_intermediate_size + h
        n = card.num_moe_layers
        routed = n * moe.num_experts * expert
        routed_active = n * moe.num_experts_per_tok * expert
        shared = n * moe.num_shared_experts * expert
        routers = n * (h + (1 if moe.expert_bias else 0)) * moe.num_experts
    embedding = card.vocab_size * h
    counts = ParamCounts(
        embedding=embedding,
        lm_head=0 if card.tie_word_embeddings else embedding,
        attention=attn_linear + attn_small,
        dense_ffn=dense_ffn,
        routed_experts=routed,
        routed_experts_active=routed_active,
        shared_experts=shared,
        routers=routers,
        norms=layers * 2 * h + h,
        attention_small=attn_small,
    )
    return counts


def weight_bytes(card: ModelCard, precision: str) -> float:
    """Bytes of all weights at a precision (linear layers quantised, the rest bf16)."""
    counts = param_counts(card)
    per_linear = BYTES_PER_LINEAR_WEIGHT[precision]
    experts = counts.routed_experts + counts.shared_experts
    return ((counts.linear - experts) * per_linear
            + experts * expert_bytes_per_weight(precision)
            + (counts.total - counts.linear) * BYTES_UNQUANTISED)


def kv_elements_per_token_per_layer(card: ModelCard) -> int:
    """Cached elements per token and layer: K and V heads, or MLA's latent plus rope key (and
    the sparse-attention indexer's key, counted at the KV dtype)."""
    if card.mla is not None:
        index = card.indexer.head_dim if card.indexer is not None else 0
        return card.mla.kv_lora_rank + card.mla.qk_rope_head_dim + index
    return 2 * card.num_key_value_heads * card.head_dim


def kv_bytes_per_token(card: ModelCard, kv_dtype: str = "bf16") -> int:
    """KV-cache bytes one token occupies across the layers whose cache grows (exact)."""
    per_element = BYTES_PER_KV_ELEMENT[kv_dtype]
    return int(card.num_kv_layers * kv_elements_per_token_per_layer(card) * per_element)


def state_bytes_per_sequence(card: ModelCard, kv_dtype: str = "bf16") -> int:
    """Cache bytes one sequence holds whatever its length: the sliding-window layers' last
    `sliding_window` tokens and the linear-attention layers' recurrent and convolution states."""
    total = 0
    sliding = card.layers_of("sliding_attention")
    if sliding:
        per_element = BYTES_PER_KV_ELEMENT[kv_dtype]
        total += int(sliding * card.sliding_window * kv_elements_per_token_per_layer(card)
                     * per_element)
    if card.linear_attention is not None:
        total += card.layers_of("linear_attention") * card.linear_attention.state_bytes_per_layer
    return int(total)


def attention_flops_per_token(card: ModelCard, context_tokens: float) -> float:
    """FLOPs of QK^T and AV for one new token attending to `context_tokens` tokens."""
    if card.mla is not None:
        m = card.mla
        per_head = (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim
    else:
        per_head = 2 * card.head_dim
    window = card.sliding_window
    full_span = context_tokens
    if window is not None and card.layer_types is None:
        full_span = min(full_span, window)  # one window on every layer (Mistral)
    spans = card.layers_of("full_attention") * full_span
    if window is not None:
        spans += card.layers_of("sliding_attention") * min(context_tokens, window)
    flops = 2.0 * card.num_attention_heads * per_head * spans
    spec = card.linear_attention
    if spec is not None:  # read and update the recurrent state: two head-wise matrix products
        flops += (card.layers_of("linear_attention") * 4.0 * spec.num_value_heads
                  * spec.key_head_dim * spec.value_head_dim)
    return flops


def flops_per_token(card: ModelCard, context_tokens: float = 0.0) -> float:
    """Forward FLOPs for one token: 2 x active matmul weights (LM head included) + attention."""
    counts = param_counts(card)
    matmul = counts.active - counts.embedding - counts.norms - counts.attention_small
    if card.tie_word_embeddings:
        matmul += counts.embedding  # the tied embedding is still the LM-head matmul
    return 2.0 * matmul + attention_flops_per_token(card, context_tokens)
