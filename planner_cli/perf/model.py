"""The performance model a planner uses: one replica shape, its iteration cost, and where it came
from — `measured:<system>/<engine>/<version>` (aiconfigurator-core's kernel database),
`profile:<file>` or `calibrated:<file>` (the user's measurements), or `analytic` (the roofline
with default constants, with the reason the measured source did not cover the shape)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner_cli.perf.analytic import (
    DEFAULT_CONSTANTS,
    AnalyticConstants,
    analytic_iteration,
)
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.measured import MeasuredCost
from planner_cli.perf.memory import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    MemoryFigures,
    memory_figures,
)
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.gpu import GpuSpec

ANALYTIC_SOURCE = "analytic"

# A stand-in for the host CPU when a profile measured on it is fitted: nominal peaks, so the
# fitted efficiencies carry the CPU's real speed. Not a datasheet; used only with CPU profiles.
CPU_SPEC = GpuSpec(
    schema_version=1, name="cpu", display_name="host CPU (nominal reference for fitted profiles)",
    vendor="nvidia", memory_bytes=64 * 2**30, hbm_bandwidth_gbps=100.0, bf16_dense_tflops=1.0,
    int8_dense_tops=1.0, gpus_per_node=8, intra_node_link="pcie", intra_node_bandwidth_gbps=1.0,
    inter_node_bandwidth_gbps=1.0,
    source="nominal: 1 TFLOP/s, 100 GB/s; efficiencies fitted from the CPU profile carry the "
           "real speed")


CostModel = IterationCost | MeasuredCost


@dataclass(frozen=True)
class PerfModel:
    shape: ReplicaShape
    constants: AnalyticConstants = DEFAULT_CONSTANTS
    source: str = ANALYTIC_SOURCE
    measured: MeasuredCost | None = None  # the measured source, when it covers the shape

    def cost(self) -> CostModel:
        """The iteration cost the simulator and the planner use."""
        return self.measured if self.measured is not None else IterationCost(self.shape,
                                                                             self.constants)

    def iteration(self, prefill_tokens: int, decode_batch: int, context_tokens: float,
                  prefill_context: float = 0.0, prefill_seqs: int = 1) -> dict[str, float]:
        """Seconds of one iteration by component, with `total_s`."""
        if self.measured is not None:
            return self.measured.breakdown(prefill_tokens, decode_batch, context_tokens,
                                           prefill_context, prefill_seqs)
        return analytic_iteration(self.shape, prefill_tokens, decode_batch, context_tokens,
                                  prefill_context, self.constants, prefill_seqs).to_dict()

    def memory(self, gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
               max_model_len: int | None = None) -> MemoryFigures:
        return memory_figures(self.shape, gpu_memory_utilization, max_model_len)


# How callers find a shape's model under an engine (perf.profiles.perf_lookup at the edge).
PerfLookup = Callable[[ReplicaShape, str], PerfModel]


def analytic_lookup(shape: ReplicaShape, engine: str) -> PerfModel:
    """The analytic model for any shape and engine (for callers that need shapes, not
    costs: exports)."""
    return PerfModel(shape)
