"""The serving engines we plan for and the defaults each one picks for a GPU.

Two things differ between engines that the simulator must follow:
- the iteration token budget and sequence cap they choose when the user passes none (what a
  plain `vllm serve` / `sglang.launch_server` runs with, so what `perf serve` predicts);
- how they schedule: vLLM's V1 scheduler mixes prefill chunks into the decode iterations within
  one token budget; SGLang runs prefill first: while requests wait to be prefilled it runs
  prefill-only batches (up to its chunked-prefill size) and the running decodes pause.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner_cli.specs.gpu import GIB, GpuSpec

ENGINES = ("vllm", "sglang")
DEFAULT_ENGINE = "vllm"

# vLLM engine/arg_utils.py get_batch_defaults, OpenAI API server: GPUs with >= 70 GiB that are
# not A100s get 8192 tokens and 1024 sequences, the others 2048 and 256.
_VLLM_LARGE = (8192, 1024)
_VLLM_SMALL = (2048, 256)
_VLLM_LARGE_GIB = 70
# SGLang srt/server_args.py: --chunked-prefill-size by device memory (< 35 GiB: 2048,
# < 160 GiB: 8192, else 16384) and --max-prefill-tokens 16384. Its request cap follows from
# the KV pool, so the KV cache is the only bound it has here.
_SGLANG_CHUNKS = ((35, 2048), (160, 8192))
_SGLANG_LARGE_CHUNK = 16384
_SGLANG_MAX_PREFILL_TOKENS = 16384
UNCAPPED_SEQS = 1 << 30
# Host time of one engine iteration that kernel timings (CUDA graphs, locked clocks) leave out:
# scheduling, sampling, output processing. Fitted to the measured serving runs of
# ../shared/data/raw/aiconfigurator/silicon_dev.csv (the one file constants may be fitted to):
# the value on a 0.5 ms grid that minimises the median |TPOT error| of perf serve on its 298
# usable vLLM and SGLang rows (0: 17.9 %, 0.5 ms: 15.4 %, 1.0 ms: 13.7 %, 1.5 ms: 14.6 %); with
# any one model's rows left out the same value is chosen (held-out error 13.7 %). Rechecked on
# the 328 rows usable since: 0.5, 1.0, 1.5 ms give 13.5, 13.0, 13.7 %.
STEP_OVERHEAD_S = {"vllm": 1.0e-3, "sglang": 1.0e-3}
# And host time per sequence an iteration holds (the scheduler's work per running request:
# its output appended and checked, its slot and inputs prepared), which SGLang's steps show and
# vLLM's do not: its measured TPOT at 128 and 256 concurrent requests was 11 % and 34 % above
# perf serve's, at 4-64 within 4 %. Fitted by benchmarks/fit_host_time.py to the same file: per
# engine the value on a 10 us grid (0-60) that minimises the median |TPOT error| of its rows,
# the decode-step scales (perf.serving_fit) refitted for each value. SGLang (194 rows): 0 us
# 9.4 %, 20 us 8.7 %, 30 us 8.9 %, 40 us 8.7 %, 50 us 8.6 %, 60 us 9.7 %; each model's rows
# with the value chosen on the other models (30-50 us): 8.7 %. vLLM (189 rows): 0 us 7.1 %, 10 us
# 7.5 %, 20 us 8.2 %; held out the same way 7.1 %. Before InferenceX's B200 gpt-oss runs were
# replayed with the MXFP8-activation experts their script selects (mxfp4-mxfp8): 7.4, 7.6, 8.2 %,
# 8.3 % held out; before the gap-analysis runs' outputs were replayed as ending at the model's
# end-of-sequence token (benchmarks/serving_recipes.py): 7.4, 7.5, 8.1 %, 7.4 % held out; and
# before per-tensor GEMMs stood in for vLLM's block-scaled ones (perf.measured.BLOCK_GEMM_SLACK):
# 8.1, 8.5, 9.4 %, 8.1 % held out. The runs reach 256 sequences per iteration: beyond that the
# per-sequence time is extrapolated.
SEQUENCE_OVERHEAD_S = {"vllm": 0.0, "sglang": 50e-6}
# What a client's TTFT and latency add to the engine's own (the HTTP server, tokenisation, the
# hand-off between the engine's processes, the first chunk streamed back): a frontend time, and
# an output lag of that many decode iterations (each request's own time per output token, that
# many times: what reaches the client trails the engine's iterations); the engine's schedule is
# not delayed by either. And how much slower an iteration holding prompt tokens runs in serving
# than the database's kernel timings say (its shared and context-attention parts: clocks under
# sustained compute load, prefill outside CUDA graphs; decode steps have their own per-model
# scale, perf.serving_fit). Fitted together per engine to the same file by
# benchmarks/fit_engine_constants.py: every usable row replayed as it was launched
# (benchmarks/serving_recipes.py) with the prompt-iteration scale on 1, 1.25, ... 2, the
# frontend time on a 10 ms grid and the lag on 0, 2, ... 30, the triple that minimises the
# median |TTFT error| of the engine's rows. vLLM (189 rows, its 24 runs with attention data
# parallelism among them): x1.5, 20 ms, no lag: 14.5 % (x1: 16.9 % at 0 ms and lag 6; x1.25:
# 14.9 %); each model's rows predicted with the triple chosen on the other models: 20.2 % (before
# InferenceX's B200 gpt-oss runs were replayed with MXFP8-activation experts: x1.5, 10 ms, no lag,
# 15.3 %, 22.7 % held out; before the gap-analysis runs' outputs were replayed as ending at the
# model's end-of-sequence token: 16.9 %, 26.2 % held out; before per-tensor GEMMs stood in for
# vLLM's block-scaled ones: 17.0 %, 26.6 %; before the attention-DP runs were replayed: 16.8 % on
# 165 rows, 26.2 %; and before four Kimi-K2.5 copies of them were recognised,
# serving_recipes.attention_dp_copies: 16.8 % on 169 rows, 26.5 %).
# SGLang (194 rows): x1, 70 ms, lag 8: 21.3 % (x1.25: 23.4 %); held out the same way, 28.4 %
# (the script's --no-lag: 240 ms, 23.3 %, 29.6 % held out).
# Refitted when SGLang's steps took a time per sequence (SEQUENCE_OVERHEAD_S; before: x1,
# 90 ms, lag 6: 21.9 %, 30.0 % held out; --no-lag 250 ms, 22.3 %, 31.4 % held out), and before
# that when InferenceX's database-dump runs at --tp N --ep M, which record tp_size N·M,
# were read as the N-GPU runs they are (18 more rows; serving_recipes.parallelism) and
# DeepSeek-V3 and R1 came to share one decode-step scale (before: x1, 30 ms, lag 12: 20.6 % on
# 176 rows, 25.7 % held out; before GLM-5's rows moved to the measured tables: x1, 0 ms, lag
# 16). What lags SGLang's clients is not known, and these constants are poorly identified: the
# lag chosen without any one model is 0-10 (0 without Qwen3-32B, whose rows then choose x2 and
# 60 ms). What the runs imply (measured TTFT - engine TTFT, in ms or in predicted TPOTs) differs
# by engine version more than by model: about 90 ms whatever the batch on the B300 runs of
# 0.5.10.post1, about 20 TPOTs on the B200 runs of 0.5.9, and it grows with a launch script's
# --stream-interval S on B200 (S 10: 13 TPOTs; S 30: 17-23; S 50: 17-26; measured before the
# refit) but is not S - 1: SGLang 0.5 sends a request's first token at once and then every S
# tokens, which moves neither TTFT nor TPOT, so S is not modelled.
FRONTEND_S = {"vllm": 0.020, "sglang": 0.070}
PREFILL_SCALE = {"vllm": 1.5, "sglang": 1.0}
OUTPUT_LAG = {"vllm": 0.0, "sglang": 8.0}


@dataclass(frozen=True)
class EngineDefaults:
    max_num_batched_tokens: int  # vLLM: tokens per iteration; SGLang: per prefill batch
    max_num_seqs: int
    prefill_first: bool


def prefill_first(engine: str) -> bool:
    """Whether the engine pauses decoding to run waiting prefills (SGLang) rather than mixing
    prefill chunks into decode iterations (vLLM)."""
    return engine == "sglang"


def engine_defaults(engine: str, gpu: GpuSpec) -> EngineDefaults:
    """What `engine` runs with on `gpu` when the user passes no batching flags."""
    gib = gpu.memory_bytes / GIB
    if engine == "sglang":
        chunk = next((c for limit, c in _SGLANG_CHUNKS if gib < limit), _SGLANG_LARGE_CHUNK)
        return EngineDefaults(min(chunk, _SGLANG_MAX_PREFILL_TOKENS), UNCAPPED_SEQS, True)
    large = gib >= _VLLM_LARGE_GIB and not gpu.name.startswith("a100")
    tokens, seqs = _VLLM_LARGE if large else _VLLM_SMALL
    return EngineDefaults(tokens, seqs, False)
