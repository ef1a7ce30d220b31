"""Candidate replica shapes: per model and GPU pool, the (tp, pp) that fit in memory."""

from __future__ import annotations

from dataclasses import dataclass

from planner_cli.errors import InputError
from planner_cli.perf.memory import memory_figures
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.gpu import GpuSpec
from planner_cli.specs.model import ModelCard

PIPELINE_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class PoolInfo:
    name: str
    gpu: GpuSpec
    nodes: int
    gpus_per_node: int
    price_usd_per_gpu_hour: float | None = None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def replica_shapes(card: ModelCard, pool: PoolInfo, precision: str,
                   max_model_len: int | None = None,
                   gpu_memory_utilization: float = 0.9) -> list[tuple[ReplicaShape, int]]:
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
