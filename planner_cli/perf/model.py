"""The performance model a planner uses: one replica shape, one set of constants, and where they
came from (a measured profile, a calibration, or the analytic defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from planner_cli.perf.analytic import (
    DEFAULT_CONSTANTS,
    AnalyticConstants,
    Breakdown,
    analytic_iteration,
)
from planner_cli.perf.memory import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    MemoryFigures,
    memory_figures,
)
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.gpu import GpuSpec

ANALYTIC_SOURCE = "analytic (roofline, default constants)"

# A stand-in for the host CPU when a profile measured on it is fitted: nominal peaks, so the
# fitted efficiencies carry the CPU's real speed. Not a datasheet; used only with CPU profiles.
CPU_SPEC = GpuSpec(
    schema_version=1, name="cpu", display_name="host CPU (nominal reference for fitted profiles)",
    vendor="nvidia", memory_bytes=64 * 2**30, hbm_bandwidth_gbps=100.0, bf16_dense_tflops=1.0,
    int8_dense_tops=1.0, gpus_per_node=8, intra_node_link="pcie", intra_node_bandwidth_gbps=1.0,
    inter_node_bandwidth_gbps=1.0,
    source="nominal: 1 TFLOP/s, 100 GB/s; efficiencies fitted from the CPU profile carry the "
           "real speed")


@dataclass(frozen=True)
class PerfModel:
    shape: ReplicaShape
    constants: AnalyticConstants = DEFAULT_CONSTANTS
    source: str = ANALYTIC_SOURCE

    def iteration(self, prefill_tokens: int, decode_batch: int, context_tokens: float,
                  prefill_context: float = 0.0) -> Breakdown:
        return analytic_iteration(self.shape, prefill_tokens, decode_batch, context_tokens,
                                  prefill_context, self.constants)

    def memory(self, gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
               max_model_len: int | None = None) -> MemoryFigures:
        return memory_figures(self.shape, gpu_memory_utilization, max_model_len)
