"""Performance model: memory, analytic iteration time, calibration, `perf` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_cli.errors import InputError
from planner_cli.perf.analytic import DEFAULT_CONSTANTS, analytic_iteration, iteration_load
from planner_cli.perf.calibrate import Measurement, calibrate, parse_measurements
from planner_cli.perf.memory import memory_figures
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.catalog import load_catalog
from planner_cli.specs.model import param_counts
from tests.conftest import ROOT
from tests.util import assert_one_line_error

CAT = load_catalog(ROOT)
H100 = CAT.gpu("h100-sxm")


def shape(model: str, tp: int = 1, pp: int = 1, precision: str = "bf16", gpu=H100):
    return ReplicaShape(CAT.model(model), gpu, tp, pp, precision)


# ---------------------------------------------------------------- memory

def test_llama_70b_bf16_needs_more_than_one_gpu():
    assert not memory_figures(shape("llama-3.1-70b")).fits
    four = memory_figures(shape("llama-3.1-70b", tp=4))
    assert four.fits and four.kv_capacity_tokens >= 131_072
    assert four.weights_bytes_per_gpu == pytest.approx(141.1e9 / 4, rel=0.01)


def test_deepseek_r1_int4_fits_8_h100_bf16_does_not():
    assert memory_figures(shape("deepseek-r1", tp=8, precision="int4-awq")).fits
    bf16 = memory_figures(shape("deepseek-r1", tp=8))
    assert not bf16.fits and "exceed" in bf16.reason


def test_kv_sharding_and_replication():
    # 8 KV heads over tp 4: 2 per GPU; over tp 8: 1 per GPU (no further split)
    assert shape("llama-3.1-70b", tp=4).kv_bytes_per_token_gpu() == 327_680 / 4
    qwen = shape("qwen3-30b-a3b", tp=8)  # 4 KV heads, tp 8: replicated, one head per GPU
    assert qwen.kv_heads_per_gpu == 1
    # MLA's latent is replicated on every tensor-parallel rank
    assert shape("deepseek-r1", tp=8, precision="int4-awq").kv_bytes_per_token_gpu() == 70_272


def test_pipeline_splits_layers_and_weights():
    one = shape("llama-3.1-70b", tp=4)
    two = shape("llama-3.1-70b", tp=4, pp=2)
    assert two.layers_per_stage == 40
    assert two.weight_bytes_gpu() < 0.6 * one.weight_bytes_gpu()
    assert two.kv_bytes_per_token_gpu() == one.kv_bytes_per_token_gpu() / 2


def test_max_model_len_decides_feasibility():
    s = shape("llama-3.1-70b", tp=2)
    assert not memory_figures(s).fits  # a 131k-token request does not fit
    assert memory_figures(s, max_model_len=8192).fits


@pytest.mark.parametrize("kwargs,needle", [
    ({"tp": 3}, "does not divide"),
    ({"tp": 16}, "exceeds the 8 GPUs of a node"),
    ({"tp": 5}, "does not divide"),
    ({"precision": "int3"}, "precision"),
])
def test_bad_shapes(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        shape("llama-3.1-8b", **kwargs)


def test_tp_larger_than_node_is_refused():
    with pytest.raises(InputError) as info:
        ReplicaShape(CAT.model("llama-3.1-405b"), H100, tp=16)
    assert "inside a node" in info.value.one_line()


# ---------------------------------------------------------------- analytic time

@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-72b", "mixtral-8x7b",
                                   "deepseek-v3", "qwen3-30b-a3b"])
def test_prefill_flops_are_twice_active_params_times_tokens(model):
    s = shape(model)
    p = 1024
    load = iteration_load(s, p, 0, 0)
    gemm = sum(layer.count * layer.gemm_flops for layer in load.layers)
    counts = param_counts(s.card)
    body = counts.active - counts.embedding - counts.lm_head - counts.norms - counts.attention_small
    assert gemm == pytest.approx(2 * body * p, rel=0.05)
    attn = sum(layer.count * layer.attn_flops for layer in load.layers)
    assert 0 < attn < gemm  # the quadratic term is there, and smaller at 1k tokens


def test_attention_prefill_is_quadratic():
    s = shape("llama-3.1-8b")
    a1 = sum(x.count * x.attn_flops for x in iteration_load(s, 1000, 0, 0).layers)
    a2 = sum(x.count * x.attn_flops for x in iteration_load(s, 2000, 0, 0).layers)
    assert a2 == pytest.approx(4 * a1)
    # exactly 2 (QK and AV) x 2 FLOPs x heads x head_dim x p^2/2 per layer
    assert a1 == pytest.approx(32 * 2 * 32 * 2 * 128 * 1000 * 1000 / 2)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "deepseek-r1", "qwen3-30b-a3b"]),
       st.sampled_from([1, 2, 4, 8]), st.integers(0, 8192), st.integers(0, 256),
       st.integers(0, 200_000), st.integers(1, 2048))
def test_time_is_monotone_in_p_b_k(model, tp, p, b, k, step):
    card = CAT.model(model)
    if card.num_attention_heads % tp:
        return
    s = ReplicaShape(card, H100, tp, 1, "int4-awq" if model == "deepseek-r1" else "bf16")
    if p + b == 0:
        p = 1
    base = analytic_iteration(s, p, b, k).total_s
    assert analytic_iteration(s, p + step, b, k).total_s >= base
    assert analytic_iteration(s, p, b + 1, k).total_s >= base
    assert analytic_iteration(s, p, b, k + step).total_s >= base


def test_tp2_decode_is_faster_than_tp1_for_70b():
    t1 = analytic_iteration(shape("llama-3.1-70b", tp=1), 0, 8, 8000).total_s
    t2 = analytic_iteration(shape("llama-3.1-70b", tp=2), 0, 8, 8000).total_s
    assert t2 < t1
    assert analytic_iteration(shape("llama-3.1-70b", tp=2), 0, 8, 8000).allreduce_s > 0


def test_moe_bytes_follow_the_experts_touched():
    s = shape("mixtral-8x7b", tp=2)
    one = iteration_load(s, 0, 1, 100).layers[0]
    many = iteration_load(s, 0, 64, 6400).layers[0]
    expert_bytes = s.expert_params_gpu() * 2
    # one token touches 2 of 8 experts; 64 tokens touch nearly all
    assert many.gemm_bytes - one.gemm_bytes == pytest.approx(6 * expert_bytes, rel=0.02)


def test_nvlink_beats_pcie_for_tp_allreduce():
    nv = analytic_iteration(shape("llama-3.1-70b", tp=4), 2048, 0, 0).allreduce_s
    pcie = analytic_iteration(shape("llama-3.1-70b", tp=4, gpu=CAT.gpu("h100-pcie")),
                              2048, 0, 0).allreduce_s
    assert pcie > 3 * nv


def test_pipeline_across_nodes_uses_the_inter_node_link():
    inside = analytic_iteration(shape("llama-3.1-405b", tp=4, pp=2, precision="fp8"),
                                1024, 0, 0).pipeline_s
    across = analytic_iteration(shape("llama-3.1-405b", tp=8, pp=2, precision="fp8"),
                                1024, 0, 0).pipeline_s
    assert across > inside > 0


# ---------------------------------------------------------------- calibration

def _engine_rows(truth, noise=0.02, tps=(2, 4, 8), seed=0):
    rng = np.random.default_rng(seed)
    card = CAT.model("llama-3.1-70b")
    rows = []
    for tp in tps:
        s = ReplicaShape(card, H100, tp)
        for p, b, k in [(0, 1, 1000), (0, 8, 8000), (0, 32, 64000), (0, 128, 100000),
                        (512, 0, 0), (2048, 0, 0), (8192, 0, 0), (1024, 16, 16000)]:
            t = analytic_iteration(s, p, b, k, constants=truth).total_s
            rows.append(Measurement(tp, 1, p, b, k, t * (1 + rng.normal(0, noise))))
    return rows


@pytest.mark.parametrize("name,truth", [
    # a stack whose decode step barely shrinks with tp: a large fixed per-step cost
    ("overhead-bound", DEFAULT_CONSTANTS.with_(iteration_overhead_s=8e-3,
                                               bandwidth_efficiency=0.5,
                                               compute_efficiency=0.45)),
    # a stack that scales near the bandwidth bound
    ("bandwidth-bound", DEFAULT_CONSTANTS.with_(iteration_overhead_s=2e-4,
                                                bandwidth_efficiency=0.9,
                                                compute_efficiency=0.75, comm_scale=1.5)),
])
def test_calibration_follows_both_kinds_of_engine(name, truth):
    rows = _engine_rows(truth)
    report = calibrate(CAT.model("llama-3.1-70b"), H100, "bf16", rows)
    assert report.fit_median_ape < 0.05, report
    assert report.cv_scheme == "leave-one-tp-out"
    assert report.cv_median_ape < 0.10, report
    # the decode step of tp 8 vs tp 2: the fitted model reproduces the engine's shrink ratio
    s2, s8 = (ReplicaShape(CAT.model("llama-3.1-70b"), H100, tp) for tp in (2, 8))
    want = (analytic_iteration(s8, 0, 1, 1000, constants=truth).total_s
            / analytic_iteration(s2, 0, 1, 1000, constants=truth).total_s)
    got = (analytic_iteration(s8, 0, 1, 1000, constants=report.constants).total_s
           / analytic_iteration(s2, 0, 1, 1000, constants=report.constants).total_s)
    assert got == pytest.approx(want, rel=0.1)


def test_uncalibrated_defaults_miss_an_overhead_bound_engine():
    truth = DEFAULT_CONSTANTS.with_(iteration_overhead_s=8e-3, bandwidth_efficiency=0.5)
    rows = _engine_rows(truth, noise=0.0)
    errors = [abs(analytic_iteration(ReplicaShape(CAT.model("llama-3.1-70b"), H100, r.tp),
                                     r.prefill_tokens, r.decode_batch,
                                     r.context_tokens).total_s - r.time_s) / r.time_s
              for r in rows]
    assert np.median(errors) > 0.2


@pytest.mark.parametrize("text,needle", [
    ("tp,prefill_tokens,decode_batch,context_tokens\n1,0,1,10\n", "column 'time_ms' missing"),
    ("tp,prefill_tokens,decode_batch,context_tokens,time_ms\n1,0,1,10,abc\n", "m.csv:2"),
    ("tp,prefill_tokens,decode_batch,context_tokens,time_ms\n1.5,0,1,10,3\n", "whole"),
    ("tp,prefill_tokens,decode_batch,context_tokens,time_ms\n1,0,0,0,3\n", "at least one"),
    ("", "empty"),
])
def test_bad_measurements(text, needle):
    with pytest.raises(InputError) as info:
        parse_measurements(text.splitlines(keepends=True), "m.csv")
    assert needle in info.value.one_line()


# ---------------------------------------------------------------- commands

def test_perf_command_json(cli):
    result = cli("perf", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "4",
                 "--batch", "16", "--context", "16000", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["memory"]["fits"] is True
    # aiconfigurator-core holds vLLM kernels for H100: the measured source, by default
    assert data["source"].startswith("measured:h100_sxm/vllm/")
    assert data["time_ms"] == pytest.approx(sum(data["breakdown_ms"].values()))
    human = cli("perf", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--prefill-tokens",
                "512", "--engine", "sglang")
    assert human.exit_code == 0 and "source: measured:h100_sxm/sglang/" in human.stderr
    # a GPU it has no tables for: the analytic model, and why
    l4 = json.loads(cli("perf", "--model", "llama-3.1-8b", "--gpu", "l4", "--batch", "1",
                        "--json").stdout)
    assert l4["source"].startswith("analytic (not measured: ")
    assert l4["time_ms"] == pytest.approx(sum(l4["breakdown_ms"].values()))
    # --ep spreads an MoE model's experts, as perf serve's does; a dense model has none
    moe = ["perf", "--model", "minimax-m2.5", "--gpu", "h100-sxm", "--tp", "4", "--precision",
           "fp8", "--batch", "4", "--context", "16384"]
    spread = json.loads(cli(*moe, "--ep", "4", "--json").stdout)
    assert spread["shape"]["ep"] == 4 and spread["source"].startswith("measured:")
    assert spread["time_ms"] != json.loads(cli(*moe, "--json").stdout)["time_ms"]
    assert "tp 4 × pp 1 ep 4, fp8" in cli(*moe, "--ep", "4").stderr
    assert_one_line_error(cli("perf", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp",
                              "2", "--ep", "2", "--batch", "1"), "llama-3.1-8b has no experts")
    # --dp: attention data-parallel ranks, from the measured tables only
    ranks = json.loads(cli(*moe[:6], "1", *moe[7:], "--dp", "4", "--ep", "4", "--json").stdout)
    assert (ranks["shape"]["dp"], ranks["shape"]["gpus"]) == (4, 4)
    assert ranks["source"].startswith("measured:")
    assert "tp 1 × pp 1 × dp 4 ep 4, fp8" in cli(*moe[:6], "1", *moe[7:], "--dp", "4", "--ep",
                                                  "4").stderr
    assert_one_line_error(cli("perf", "--model", "minimax-m2.5", "--gpu", "l4", "--dp", "2",
                              "--ep", "2", "--precision", "fp8", "--batch", "2"),
                          "timed from aiconfigurator-core's tables only")


def test_attention_data_parallel_ranks_hold_their_own_cache_and_share_the_experts():
    card, gpu = CAT.model("deepseek-r1"), CAT.gpu("h200")
    tp8 = ReplicaShape(card, gpu, 8, 1, "fp8", ep=8)
    dp8 = ReplicaShape(card, gpu, 1, 1, "fp8", ep=8, dp=8)
    assert dp8.gpus == 8 and dp8.expert_group == 8 and "dp8" in dp8.label
    # the experts split over all eight GPUs either way; attention and dense layers per rank
    assert dp8.expert_params_gpu() == tp8.expert_params_gpu()
    assert dp8.attention_linear_params_gpu() == 8 * tp8.attention_linear_params_gpu()
    # MLA's latent cache: on every rank of a tp group, once per attention-DP rank
    assert dp8.kv_bytes_per_token_gpu() == tp8.kv_bytes_per_token_gpu()
    mem8, mem_dp = memory_figures(tp8, max_model_len=8192), memory_figures(dp8,
                                                                            max_model_len=8192)
    assert mem_dp.weights_bytes_per_gpu > mem8.weights_bytes_per_gpu  # attention replicated
    per_gpu = (mem_dp.usable_bytes_per_gpu - mem_dp.weights_bytes_per_gpu
               - mem_dp.activation_bytes_per_gpu - mem_dp.reserve_bytes_per_gpu)
    assert mem_dp.kv_capacity_tokens == 8 * int(per_gpu // mem_dp.kv_bytes_per_token_per_gpu)
    assert mem_dp.kv_capacity_tokens > 5 * mem8.kv_capacity_tokens
    for kwargs, needle in ((dict(model="llama-3.1-8b", tp=1, dp=2), "has none"),
                           (dict(model="deepseek-r1", tp=2, dp=8), "exceeds the 8 GPUs"),
                           (dict(model="deepseek-r1", tp=1, dp=4, ep=8), "ep=8 does not divide"),
                           (dict(model="deepseek-r1", tp=1, dp=4, pp=2), "not modelled"),
                           (dict(model="deepseek-r1", tp=1, dp=0), "dp=0")):
        model = CAT.model(kwargs.pop("model"))
        with pytest.raises(InputError, match=needle):
            ReplicaShape(model, gpu, kwargs.pop("tp"), kwargs.pop("pp", 1), "fp8", **kwargs)


@pytest.mark.parametrize("args,needle", [
    (("--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "3", "--batch", "1"),
     "does not divide"),
    (("--model", "llama-3.1-8b", "--gpu", "h100-sxn", "--batch", "1"), "h100-sxm"),
    (("--model", "llama-3.1-8b", "--gpu", "h100-sxm"), "prefill tokens or a decode batch"),
    (("--gpu", "h100-sxm", "--batch", "1"), "--model"),
    (("--model", "llama-3.1-8b", "--gpu", "cpu", "--batch", "1"), "no CPU profile"),
])
def test_perf_command_errors(cli, args, needle, tmp_path):
    assert_one_line_error(cli("perf", *args, "--profiles", tmp_path), needle)


def test_calibrate_command_saves_and_perf_uses_it(cli, tmp_path):
    truth = DEFAULT_CONSTANTS.with_(iteration_overhead_s=8e-3, bandwidth_efficiency=0.5)
    rows = _engine_rows(truth, noise=0.01)
    csv_path = tmp_path / "measured.csv"
    csv_path.write_text("tp,pp,prefill_tokens,decode_batch,context_tokens,time_ms\n" + "".join(
        f"{r.tp},1,{r.prefill_tokens},{r.decode_batch},{r.context_tokens},{r.time_s * 1e3}\n"
        for r in rows))
    profiles = tmp_path / "profiles"
    result = cli("perf", "calibrate", "--measurements", csv_path, "--profiles", profiles,
                 "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--engine", "sglang",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fit"]["fit_median_ape"] < 0.05
    assert data["fit"]["cv_median_ape"] < 0.10
    saved = profiles / "h100-sxm" / "llama-3.1-70b" / "calibration-sglang.yaml"
    assert saved.is_file()
    pred = json.loads(cli("perf", "--profiles", profiles, "--model", "llama-3.1-70b",
                          "--gpu", "h100-sxm", "--tp", "4", "--batch", "1", "--context",
                          "1000", "--engine", "sglang", "--json").stdout)
    assert pred["source"] == f"calibrated:{saved}"
    truth_ms = analytic_iteration(shape("llama-3.1-70b", tp=4), 0, 1, 1000,
                                  constants=truth).total_s * 1e3
    assert pred["time_ms"] == pytest.approx(truth_ms, rel=0.1)
    # the calibration belongs to its engine: vllm (the default) keeps its measured tables
    other = json.loads(cli("perf", "--profiles", profiles, "--model", "llama-3.1-70b",
                           "--gpu", "h100-sxm", "--tp", "4", "--batch", "1", "--json").stdout)
    assert other["source"].startswith("measured:h100_sxm/vllm/")
    assert_one_line_error(cli("perf", "--profiles", profiles, "--model", "llama-3.1-70b",
                              "--gpu", "h100-sxm", "--batch", "1", "--engine", "stackB"),
                          "engine 'stackB' is not known")


def test_fitted_efficiencies_never_exceed_the_hardware():
    # an engine faster than the roofline allows (efficiencies above 1 would fit it best):
    # the fit stays within the hardware and puts the rest into the fixed per-step cost
    fast = DEFAULT_CONSTANTS.with_(bandwidth_efficiency=1.6, compute_efficiency=1.3,
                                   attention_bandwidth_efficiency=2.0,
                                   iteration_overhead_s=4e-3)
    report = calibrate(CAT.model("llama-3.1-70b"), H100, "bf16", _engine_rows(fast))
    c = report.constants
    for value in (c.compute_efficiency, c.bandwidth_efficiency, c.attention_efficiency,
                  c.attention_bandwidth_efficiency, c.single_token_bandwidth_efficiency):
        assert value is not None and 0 < value <= 1.0


def test_one_tp_is_not_cross_validated_and_nothing_is_written_null(cli, tmp_path):
    rows = _engine_rows(DEFAULT_CONSTANTS.with_(iteration_overhead_s=3e-3), tps=(4,))
    report = calibrate(CAT.model("llama-3.1-70b"), H100, "bf16", rows)
    assert report.cv_median_ape is None and report.cv_scheme == "not cross-validated (one tp)"
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("tp,pp,prefill_tokens,decode_batch,context_tokens,time_ms\n" + "".join(
        f"{r.tp},1,{r.prefill_tokens},{r.decode_batch},{r.context_tokens},{r.time_s * 1e3}\n"
        for r in rows))
    profiles = tmp_path / "profiles"
    saved = cli("perf", "calibrate", "--measurements", csv_path, "--model", "llama-3.1-70b",
                "--gpu", "h100-sxm", "--profiles", profiles)
    assert saved.exit_code == 0, saved.output
    assert "not cross-validated (one tp)" in saved.stderr
    text = (profiles / "h100-sxm" / "llama-3.1-70b" / "calibration-vllm.yaml").read_text()
    assert "null" not in text.split("fit:")[0]
    # a GPU the measured source does not cover takes the calibration carried from the H100
    # (efficiencies are shares of each GPU's peaks), and says so
    carried = json.loads(cli("perf", "--model", "llama-3.1-70b", "--gpu", "a100-40gb", "--tp",
                             "8", "--batch", "1", "--profiles", profiles, "--json").stdout)
    assert carried["source"].startswith("calibrated:")
    assert "carried from h100-sxm to a100-40gb" in carried["source"]


def test_int4_ratio_table_is_aiconfigurators_a100_measurements():
    from importlib import resources

    import pandas as pd

    from planner_cli.perf.analytic import INT4_WO_RATIO

    path = (resources.files("aiconfigurator_core") / "systems" / "data" / "a100_sxm" / "gemm"
            / "trtllm" / "1.0.0" / "gemm_perf.parquet")
    data = pd.read_parquet(str(path))
    table = data.pivot_table(index=["n", "k", "m"], columns="gemm_dtype",
                             values="latency").dropna()
    big = table[(table.index.get_level_values(0) >= 4096)
                & (table.index.get_level_values(1) >= 4096)]
    medians = (big["int4_wo"] / big["bfloat16"]).groupby(level=2).median()
    pooled: list[list[float]] = []  # pool adjacent violators: the non-decreasing fit
    for value in medians.tolist():
        pooled.append([value, 1])
        while len(pooled) > 1 and pooled[-2][0] > pooled[-1][0]:
            (v1, n1), (v0, n0) = pooled.pop(), pooled.pop()
            pooled.append([(v0 * n0 + v1 * n1) / (n0 + n1), n0 + n1])
    fit = [v for v, n in pooled for _ in range(int(n))]
    assert [m for m, _ in INT4_WO_RATIO] == medians.index.tolist()
    assert [r for _, r in INT4_WO_RATIO] == pytest.approx(fit, abs=5e-4)


def test_int4_speedup_over_bf16_shrinks_with_batch():
    """Reading a quarter of the bytes wins while decode is memory bound; the dequantisation
    takes the win away as the batch grows (AWQ loses its advantage past small batches)."""
    from planner_cli.perf.fast import IterationCost

    bf16, int4 = shape("llama-3.1-70b", tp=4), shape("llama-3.1-70b", tp=4,
                                                      precision="int4-awq")
    speedup = {}
    for b in (1, 16, 64, 256):
        t_bf16 = analytic_iteration(bf16, 0, b, b * 1000).total_s
        t_int4 = analytic_iteration(int4, 0, b, b * 1000).total_s
        assert IterationCost(int4, DEFAULT_CONSTANTS).time(0, b, b * 1000) == pytest.approx(
            t_int4, rel=1e-9)
        speedup[b] = t_bf16 / t_int4
    assert speedup[1] > 1.8 and speedup[1] >= speedup[16] > speedup[64] > speedup[256]
    assert speedup[256] < 1.05
    # a prefill of 4096 tokens: int4 no faster than bf16
    assert analytic_iteration(int4, 4096, 0, 0).gemm_s >= analytic_iteration(
        bf16, 4096, 0, 0).gemm_s
