"""Memory of a replica shape: weights, activation and runtime reserve, KV-cache capacity."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from planner_cli.perf.shapes import ReplicaShape

# vLLM's default --gpu-memory-utilization: the share of device memory the engine may use.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# vLLM's default --max-num-batched-tokens for chunked prefill on a GPU server (V1 engine).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
# vLLM's default --max-num-seqs.
DEFAULT_MAX_NUM_SEQS = 256
# Runtime reserve besides weights, activations and KV: CUDA context, CUDA graphs, allocator
# slack. ai-dynamo/aiconfigurator systems/*.yaml `other_mem` (3.5 GiB "for safer deployment").
RUNTIME_RESERVE_BYTES = 3_758_096_384
# NCCL buffers by tensor-parallel size: aiconfigurator systems/h100_sxm.yaml `nccl_mem`.
NCCL_BYTES_BY_TP = {1: 0, 2: 358_612_992, 4: 411_041_792, 8: 411_041_792}
ACTIVATION_BYTES = 2  # bf16 activations
LOGIT_BYTES = 4  # fp32 logits for sampling


@dataclass(frozen=True)
class MemoryFigures:
    weights_bytes_per_gpu: float
    activation_bytes_per_gpu: float
    reserve_bytes_per_gpu: float
    usable_bytes_per_gpu: float  # memory x utilisation
    kv_bytes_per_token_per_gpu: float
    kv_capacity_tokens: int  # tokens the KV cache holds (per replica: every attention-DP rank)
    # what one sequence holds whatever its length (sliding windows, linear-attention states),
    # in KV tokens: each running sequence takes this many more from the cache
    state_tokens_per_sequence: int
    max_model_len: int
    fits: bool
    reason: str  # why it does not fit, or ""

    def to_dict(self) -> dict:
        return asdict(self)


def activation_bytes_gpu(shape: ReplicaShape, max_num_batched_tokens: int,
                         max_num_seqs: int) -> float:
    """Peak activation of one forward pass over `max_num_batched_tokens` tokens, as vLLM's
    profiling run measures it: the residual stream and its normed copy, the q/k/v and the
    FFN's gate/up outputs of one layer live at once, plus the fp32 logits of the sampled rows."""
    card = shape.card
    per_token = 2 * card.hidden_size
    per_token += (shape.heads_per_gpu + 2 * shape.kv_heads_per_gpu) * card.head_dim
    ffn = card.intermediate_size
    if card.moe is not None:
        ffn = max(ffn if card.num_dense_layers else 0,
                  card.moe.moe_intermediate_size * (card.moe.num_experts_per_tok
                                                    + card.moe.num_shared_experts))
    per_token += 2 * ffn / shape.tp
    # the rows sampled in one pass: every sequence, at most one per token of the pass
    logits = min(max_num_seqs, max_num_batched_tokens) * card.vocab_size / shape.tp * LOGIT_BYTES
    return max_num_batched_tokens * per_token * ACTIVATION_BYTES + logits


def memory_figures(shape: ReplicaShape,
                   gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
                   max_model_len: int | None = None,
                   max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
                   max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> MemoryFigures:
    """Weights, reserve and KV capacity of the fullest GPU; feasible when the weights and one
    request of `max_model_len` tokens (default: the model's context length) fit (in one
    attention-DP rank: a request's cache is its rank's). `max_num_batched_tokens` and
    `max_num_seqs` are one rank's."""
    max_len = max_model_len or shape.card.max_position_embeddings
    weights = shape.weight_bytes_gpu()
    activation = activation_bytes_gpu(shape, max_num_batched_tokens, max_num_seqs)
    # NCCL buffers of the group the GPU communicates in (the tp group; with attention data
    # parallelism, the experts' tp·dp group)
    reserve = RUNTIME_RESERVE_BYTES + NCCL_BYTES_BY_TP.get(shape.expert_group,
                                                           NCCL_BYTES_BY_TP[8])
    usable = shape.gpu.memory_bytes * gpu_memory_utilization
    kv_per_token = shape.kv_bytes_per_token_gpu()
    free = usable - weights - activation - reserve
    capacity = max(0, int(free // kv_per_token)) if free > 0 else 0
    state_tokens = math.ceil(shape.state_bytes_per_sequence_gpu() / kv_per_token)
    reason = ""
    if free <= 0:
        reason = (f"weights {weights / 1e9:.1f} GB + activations {activation / 1e9:.1f} GB + "
                  f"reserve {reserve / 1e9:.1f} GB per GPU exceed the usable "
                  f"{usable / 1e9:.1f} GB")
    elif capacity < max_len + state_tokens:
        reason = (f"KV cache holds {capacity:,} tokens, less than one {max_len:,}-token "
                  "request")
    # each attention-DP rank holds its own requests' cache: the replica holds dp times as much
    capacity *= shape.dp
    return MemoryFigures(weights_bytes_per_gpu=weights, activation_bytes_per_gpu=activation,
                         reserve_bytes_per_gpu=reserve, usable_bytes_per_gpu=usable,
                         kv_bytes_per_token_per_gpu=kv_per_token, kv_capacity_tokens=capacity,
                         state_tokens_per_sequence=state_tokens,
                         max_model_len=max_len, fits=not reason, reason=reason)
