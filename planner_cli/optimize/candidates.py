"""Candidate replica shapes: per model and GPU pool, the (tp, pp) that fit in memory."""

from __future__ import annotations

from planner_cli.errors import InputError
from planner_cli.perf.memory import DEFAULT_GPU_MEMORY_UTILIZATION, memory_figures
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.problem import Pool
from planner_cli.specs.model import ModelCard

PIPELINE_SIZES = (1, 2, 4, 8)


def replica_shapes(card: ModelCard, pool: Pool, precision: str,
                   max_model_len: int | None = None,
                   gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
                   ) -> list[tuple[ReplicaShape, int]]:
    """[(shape, KV capacity tokens)] for tp dividing the node size and the heads, pp across
    nodes (tp·pp ≤ the pool), that hold the weights and one max-length request."""
    out = []
    tps = [tp for tp in range(1, pool.gpus_per_node + 1) if pool.gpus_per_node % tp == 0]
    for pp in PIPELINE_SIZES:
        for tp in tps:
            if tp * pp > pool.gpus:
                continue
            try:
                shape = ReplicaShape(card, pool.gpu, tp, pp, precision,
                                     gpus_per_node=pool.gpus_per_node)
            except InputError:
                continue
            mem = memory_figures(shape, gpu_memory_utilization, max_model_len)
            if mem.fits:
                out.append((shape, mem.kv_capacity_tokens))
    return out
