"""GPU types: one YAML per GPU under hardware/, validated strictly."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from planner_cli.specs._yaml import StrictModel
from planner_cli.specs.model import FP8_PRECISIONS

GIB = 2**30


class GpuSpec(StrictModel):
    """Datasheet facts of one GPU type; bandwidths per GPU and per direction."""

    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    display_name: str
    vendor: Literal["nvidia", "amd"]
    aliases: tuple[str, ...] = ()
    memory_bytes: PositiveInt
    hbm_bandwidth_gbps: PositiveFloat  # GB/s (1e9 bytes/s), device memory
    bf16_dense_tflops: PositiveFloat
    fp8_dense_tflops: PositiveFloat | None = None  # None: no FP8 tensor cores
    fp4_dense_tflops: PositiveFloat | None = None  # None: no FP4 tensor cores (pre-Blackwell)
    int8_dense_tops: PositiveFloat
    gpus_per_node: PositiveInt
    intra_node_link: Literal["nvlink", "pcie", "infinity-fabric"]
    intra_node_bandwidth_gbps: PositiveFloat  # GB/s per GPU per direction
    inter_node_bandwidth_gbps: PositiveFloat  # GB/s per GPU per direction
    tdp_watts: PositiveFloat | None = None
    price_usd_per_gpu_hour: PositiveFloat | None = None
    source: str = Field(min_length=1)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def dense_tflops(self, precision: str) -> float:
        """Peak dense tensor throughput for the compute type a precision runs in.

        int4-awq weights are dequantised to bf16 for the matmul (as vLLM's AWQ kernels do),
        so it runs at the bf16 rate.
        """
        if precision == "fp4":
            if self.fp4_dense_tflops is None:
                raise ValueError(f"{self.name} has no FP4 tensor cores")  # checked per shape
            return self.fp4_dense_tflops
        if precision in FP8_PRECISIONS:
            if self.fp8_dense_tflops is None:
                # vLLM runs FP8 weights on Ampere as weight-only (dequantised to bf16)
                return self.bf16_dense_tflops
            return self.fp8_dense_tflops
        return self.bf16_dense_tflops
