"""How the measured serving runs of silicon_dev.csv were launched, so that `perf serve` replays
the same runs: the benchmark client's request lengths and the engine flags of each run.

Two harnesses produced the file's aggregated vLLM and SGLang rows:

- NVIDIA's aiconfigurator gap analysis (sources under `aic-auto-gap-analysis/`: the Qwen3-32B
  runs on H100): fixed lengths, flags not recorded; replayed with the engines' own defaults,
  fixed input lengths, and on vLLM output lengths spread (`eos_outputs`): each engine's own
  client with its defaults, `vllm bench serve` not ignoring end-of-sequence tokens unless
  given --ignore-eos where `sglang.bench_serving` ignores them unless given
  --disable-ignore-eos, the vLLM runs' outputs ended where the model ended them, at most OSL.
  Their TTFTs say so: at ISL 1024 and 8 to 64 clients they are 2 to 4 times below what
  fixed lengths give (all of a wave's prompts arrive together, every wave, when every answer
  is as long): their median |TTFT error| is 32.9 % with fixed lengths and 11.5 % with spread
  outputs (benchmarks/fit_eos_outputs.py); the SGLang runs of the same harness fit fixed
  lengths.
- SemiAnalysis InferenceX (every other row: its database dumps and dated result files, with
  InferenceX config and workflow-run ids and the engine images its recipes pin). Its client,
  utils/bench_serving/benchmark_serving.py, draws every request's input and output length
  uniformly from [r·L, L] with r = RANDOM_RANGE_RATIO = 0.8 (.github/workflows/
  benchmark-tmpl.yml; its r is not `vllm bench serve`'s, which spreads lengths over
  [L(1-r), L(1+r)]), sends 10 requests per client (--num-prompts CONC*10) with --ignore-eos,
  and its launch scripts, benchmarks/single_node/fixed_seq_len/<model>_<precision>_<gpu>.sh,
  set the engine flags that `recipe` returns. Read from github.com/SemiAnalysisAI/InferenceX
  at commits 8eec0d4 (most scripts), 432945d (dsr1_fp8_b200), 25cbe71 (dsr1_fp4_b200),
  36e26b6 (qwen3.5_fp8_b200), 1534ee2 (qwen3.5_fp8_b300), f89cdfe (qwen3.5_bf16_b300),
  1d76594 (glm5_fp8_b300), 380b685 (kimik2.5_fp4_b200), 3274c53 (kimik2.5_fp4_b300),
  45c4f91 (minimaxm2.5_fp4_b200); the H200 scripts (dsr1_fp8, glm5_fp8, qwen3.5_fp8,
  gptoss_fp4, minimaxm2.5_fp8, kimik2.5_int4) at 8eec0d4; a run measured before a script
  changed used the flags of its day, which the rows do not record (save the cap on running
  requests, which follows from the run's concurrency: `recipe`).

[r·L, L] is `vllm bench serve`'s range around the centre 0.9·L with ratio 1/9, which is how
`perf serve` is given it (`lengths`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

INFERENCEX_RANGE_RATIO = 0.8  # lengths uniform in [0.8·L, L]
PROMPTS_PER_CLIENT = 10  # --num-prompts CONC*10 (its warm-up requests finish before)
GAP_ANALYSIS = "aic-auto-gap-analysis"


def inferencex(source: str) -> bool:
    """Whether a row's silicon_data_source is an InferenceX run (see the module docstring)."""
    return GAP_ANALYSIS not in source


# What a gap-analysis vLLM run's outputs are replayed as: uniform in [EOS_OUTPUT_LOW·OSL, OSL]
# (their lengths are not recorded). Chosen by benchmarks/fit_eos_outputs.py on the 23 such runs
# of silicon_dev.csv (see there).
EOS_OUTPUT_LOW = 0.6


def lengths(length: int, low: float = INFERENCEX_RANGE_RATIO) -> tuple[int, float]:
    """(centre, vllm-style range ratio) that spread lengths over [low·L, L] (InferenceX's
    [0.8·L, L] by default)."""
    return round(length * (1 + low) / 2), (1 - low) / (1 + low)


def eos_outputs(engine: str, source: str) -> bool:
    """Whether a run's outputs ended at the model's end-of-sequence token, not at OSL: a
    gap-analysis run on vLLM (the module docstring)."""
    return engine == "vllm" and not inferencex(source)


def eos_lengths(osl: int) -> tuple[int, float]:
    """(centre, range ratio) of such a run's outputs: uniform in [EOS_OUTPUT_LOW·OSL, OSL]."""
    return lengths(osl, EOS_OUTPUT_LOW)


def parallelism(r: Mapping[str, Any]) -> tuple[int, int, int]:
    """(tp, expert-parallel size, attention-DP ranks) of a row. Some rows record a launch's
    --tp N and --ep M as tp_size N·M, moe_tp_size N and moe_ep_size M: those runs used N GPUs,
    the experts spread over M of them. Rows whose ids name N and M say so, and so does every
    row of InferenceX's database dumps ("db-dump" sources): its tp_size is always
    moe_tp_size·moe_ep_size, and its runs at tp_size 64 (moe 8 x 8) are measured, to the
    digit, as the dated file's runs at tp 8, ep 8 (moe_tp_size 1, the other convention) on an
    8-GPU node. A row that records attention DP d ran on tp_size GPUs as d ranks of
    tp_size / d, its experts over ep = moe_ep_size / d of them: the rows record tp_size·d =
    moe_tp_size·moe_ep_size, and those whose ids name the launch say --tp 4 --ep 4 for
    tp_size 4, attention DP 4 and moe_ep_size 16, --tp 2 --ep 2 for 2, 2 and 4. None where a
    row's sizes do not divide so."""
    tp = int(r["tp_size"])
    ep = int(r["moe_ep_size"]) if not math.isnan(r["moe_ep_size"]) else 1
    dp = int(r["attention_dp_size"]) if not math.isnan(r["attention_dp_size"]) else 1
    if dp > 1:
        if tp % dp or ep % dp:
            raise ValueError(f"attention DP {dp} does not divide tp_size {tp} and moe_ep_size "
                             f"{ep}")
        return tp // dp, ep // dp, dp
    named = re.search(r"_tp(\d+)(?:_0)?_ep(\d+)(?:_0)?_", r["id"])
    if named:
        n, m = int(named.group(1)), int(named.group(2))
        if n != tp and n * m == tp:
            return n, m, 1
    if str(r["silicon_data_source"]).startswith("db-dump") and ep > 1 and \
            int(r["moe_tp_size"]) * ep == tp:
        return int(r["moe_tp_size"]), ep, 1
    return tp, ep, 1


def attention_dp_copies(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of the rows that record no attention DP but carry, to the rounding, the ISL, OSL
    and measured TTFT and TPOT of a row that records it: the same run, its attention-DP flag
    lost. The Kimi-K2.5 gap-analysis rows at tp 4, ep 4 are such copies of InferenceX runs
    at --tp 4 --ep 4 with attention DP 4 (179.80 ms and 10.50 ms against 179.803 and 10.499)."""
    rows = list(rows)

    def key(r: Mapping[str, Any]) -> tuple:
        return (int(r["isl"]), int(r["osl"]), round(float(r["silicon_ttft_ms"]), 1),
                round(float(r["silicon_tpot_ms"]), 1))

    dp = {key(r) for r in rows if r["attention_dp_size"] > 1}
    return {str(r["id"]) for r in rows if r["attention_dp_size"] <= 1 and key(r) in dp}


@dataclass(frozen=True)
class Recipe:
    """The engine flags a launch script set (None: the engine's default)."""
    kv_cache_dtype: str = "bf16"  # --kv-cache-dtype (fp8 / fp8_e4m3; none given: the model's)
    max_num_batched_tokens: int | None = None  # vLLM --max-num-batched-tokens, SGLang
    #                                            --chunked-prefill-size
    max_num_seqs: int | None = None  # vLLM --max-num-seqs, SGLang --max-running-requests
    gpu_memory_utilization: float = 0.9  # vLLM --gpu-memory-utilization, SGLang
    #                                      --mem-fraction-static
    scheduler_recv_interval: int = 1  # SGLang --scheduler-recv-interval
    precision: str | None = None  # what the script's environment serves the checkpoint as
    #                               (None: the row's precision)


def recipe(engine: str, model: str, precision: str, gpu: str, tp: int, isl: int, osl: int,
           conc: int) -> Recipe:
    """The flags InferenceX's launch script for this model, precision, engine and GPU passes
    at a run's tp, ISL, OSL and concurrency (its B300 scripts reuse the B200 recipe unless
    noted; its Hopper scripts are their own). A script's fixed cap on running requests is set
    "as the maximum concurrency" of its sweep (dsr1_fp8_b200.sh says so): a run at a higher
    concurrency was launched by a version whose sweep, and so its cap, reached that
    concurrency, and is replayed with the cap at its concurrency."""
    flags = _script(engine, model, precision, gpu, tp, isl, osl, conc)
    if flags.max_num_seqs is not None and flags.max_num_seqs < conc:
        return replace(flags, max_num_seqs=conc)
    return flags


def _script(engine: str, model: str, precision: str, gpu: str, tp: int, isl: int, osl: int,
            conc: int) -> Recipe:
    """recipe's flags as the script version read sets them."""
    hopper = gpu.startswith(("h100", "h200"))
    if engine == "sglang":
        if hopper:  # {dsr1,glm5,qwen3.5}_fp8_h200.sh: no recv interval, KV cache as the model's
            if model in ("deepseek-r1", "deepseek-v3"):
                return Recipe("bf16", 32768, 512 if (isl, osl) == (1024, 1024) else 256, 0.82)
            if model == "glm-5":
                return Recipe("bf16", None, None, 0.85)
            if model == "qwen3.5-397b-a17b":
                return Recipe("fp8", 16384, 128, 0.8)
            return Recipe()
        if model in ("deepseek-r1", "deepseek-v3"):  # dsr1_{fp8,fp4}_{b200,b300}.sh
            if precision == "fp4":
                return Recipe("fp8", 16384, 256, 0.85, 30 if conc >= 16 else 10)
            if tp == 4:
                return Recipe("fp8", 8192, 32, 0.95, 10)
            return Recipe("fp8", 32768, 128, 0.82, 30 if conc >= 16 else 10)
        if model == "glm-5":  # glm5_fp8_{b200,b300}.sh, glm5_fp4_b200.sh
            if precision == "fp4":
                return Recipe("fp8", 32768, None, 0.9, 10)
            return Recipe("fp8", 32768, conc, 0.85, 1)
        if model == "qwen3.5-397b-a17b":  # qwen3.5_{bf16,fp8,fp4}_{b200,b300}.sh
            if precision == "bf16":
                return Recipe("bf16", 32768, 128, 0.82, 30 if conc >= 16 else 10)
            if gpu == "b300" and precision == "fp8":
                return Recipe("fp8", 16384, conc, 0.8, 10)
            if gpu == "b300":
                return Recipe("fp8", 32768, 128, 0.8, 30 if conc >= 16 else 10)
            return Recipe("fp8", 8192 if precision == "fp8" else 16384, None, 0.8,
                          30 if conc > 4 else 10)
    elif engine == "vllm":
        if model == "gpt-oss-120b":  # gptoss_fp4_{b200,h100,h200}.sh
            if hopper:
                return Recipe("bf16", 8192, conc, 0.9)
            # VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1: the experts take MXFP8 activations
            return Recipe("fp8", 8192, 512, 0.9, precision="mxfp4-mxfp8")
        if model == "minimax-m2.5":  # minimaxm2.5_{fp8,fp4}_{b200,b300}.sh, _fp8_{h100,h200}.sh
            if gpu.startswith("h100"):
                return Recipe("bf16", None, 256, 0.9)
            if gpu.startswith("h200"):
                return Recipe("bf16", None, None, 0.95)
            return Recipe("fp8", 2 * isl, None, 0.9)
        if model == "kimi-k2.5":  # kimik2.5_fp4_{b200,b300}.sh, kimik2.5_int4_{b200,h200}.sh
            if precision == "int4-awq":
                return Recipe("bf16", None, conc, 0.95)
            return Recipe("fp8", 2 * isl, conc, 0.9)
    return Recipe()
