"""One table of neutral engine parameters → engine flags, pinned to the engine versions whose
own argument parsers listed them (tests/fixtures/engine_flags/)."""

from __future__ import annotations

ENGINES: dict[str, dict[str, str]] = {
    "vllm": {
        "version": "0.33.0",
        "tp": "--tensor-parallel-size",
        "pp": "--pipeline-parallel-size",
        "host": "--host",
        "port": "--port",
        "served_model_name": "--served-model-name",
        "max_model_len": "--max-model-len",
        "max_num_seqs": "--max-num-seqs",
        "max_num_batched_tokens": "--max-num-batched-tokens",
        "gpu_memory_utilization": "--gpu-memory-utilization",
        "quantization": "--quantization",
        "dtype": "--dtype",
        "nnodes": "--nnodes",
        "node_rank": "--node-rank",
        "master_addr": "--master-addr",
        "master_port": "--master-port",
        "headless": "--headless",
        "config": "--config",
    },
    "sglang": {
        "version": "0.5.23",
        "model": "--model-path",
        "tp": "--tp-size",  # SGLang's --pp is ambiguous; the full names are used
        "pp": "--pp-size",
        "host": "--host",
        "port": "--port",
        "served_model_name": "--served-model-name",
        "max_model_len": "--context-length",
        "max_num_seqs": "--max-running-requests",
        "max_num_batched_tokens": "--chunked-prefill-size",
        "gpu_memory_utilization": "--mem-fraction-static",
        "quantization": "--quantization",
        "dtype": "--dtype",
        "nnodes": "--nnodes",
        "node_rank": "--node-rank",
        "dist_init_addr": "--dist-init-addr",
        "config": "--config",
    },
}
# Precision → (dtype, quantization) per engine.
PRECISION = {
    "bf16": ("bfloat16", None),
    "fp8": ("bfloat16", "fp8"),
    "fp8-block": ("bfloat16", "fp8"),  # the checkpoint's block scales say which kernels
    "int4-awq": ("float16", "awq"),
    "fp4": ("bfloat16", "modelopt_fp4"),  # NVFP4 checkpoints (vLLM and SGLang alike)
    # MXFP4 experts (gpt-oss): the checkpoint's quantization_config says so, and both engines
    # read it from there
    "mxfp4": ("bfloat16", None),
    "mxfp4-mxfp8": ("bfloat16", None),  # the same checkpoint; ENVIRONMENT picks the kernels
}
# Environment a precision needs per engine (vLLM envs.py: VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8
# runs MXFP4 experts on FlashInfer's kernels with MXFP8 activations); a precision listed
# without an engine cannot be exported for it.
ENVIRONMENT: dict[str, dict[str, dict[str, str]]] = {
    "mxfp4-mxfp8": {"vllm": {"VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1"}},
}
DIST_PORT = 29500  # rendezvous port of multi-node replicas
BASE_PORT = 8000  # the first replica on a node listens here, the next on 8001, ...


def config_key(engine: str, flag: str) -> str:
    """The key a flag takes in the engine's --config YAML: vLLM keeps the flag's dashes,
    SGLang uses the dest (underscores)."""
    name = flag.removeprefix("--")
    return name if engine == "vllm" else name.replace("-", "_")
