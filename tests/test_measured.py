"""The measured source: aiconfigurator-core's kernel database behind our cost interface."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import pytest

from planner_cli.perf import measured
from planner_cli.perf.analytic import DEFAULT_CONSTANTS, analytic_iteration
from planner_cli.perf.fast import IterationCost
from planner_cli.perf.profiles import perf_model
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.catalog import load_catalog

CATALOG = load_catalog()


def shape(model: str, gpu: str = "h100-sxm", tp: int = 1, precision: str = "bf16"):
    return ReplicaShape(CATALOG.model(model), CATALOG.gpu(gpu), tp, 1, precision)


def shipped_config(hf_id: str) -> dict:
    folder = resources.files("aiconfigurator_core") / "model_configs"
    return json.loads((folder / (hf_id.replace("/", "--") + "_config.json")).read_text())


@pytest.mark.parametrize("name", sorted(measured.AIC_MODELS))
def test_every_mapped_card_has_the_shipped_architecture(name):
    card = CATALOG.model(name)
    outer = shipped_config(measured.AIC_MODELS[name])
    config = outer.get("text_config", outer)  # a multimodal model's language model
    assert config.get("architectures", outer["architectures"])[0] == card.architecture
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                "num_key_value_heads", "head_dim", "max_position_embeddings"):
        if key in config and not (key == "head_dim" and card.mla is not None):
            assert config[key] == getattr(card, key), key
    # an all-MoE model without a dense FFN width: the card holds the expert width (unused)
    assert config.get("intermediate_size", config.get("moe_intermediate_size")) == (
        card.intermediate_size)
    if "layer_types" in config and card.linear_attention is not None:
        assert tuple(config["layer_types"]) == card.layer_types
        spec = card.linear_attention
        assert (config["linear_num_key_heads"], config["linear_num_value_heads"],
                config["linear_key_head_dim"], config["linear_value_head_dim"],
                config["linear_conv_kernel_dim"]) == (
            spec.num_key_heads, spec.num_value_heads, spec.key_head_dim, spec.value_head_dim,
            spec.conv_kernel_dim)
        assert config["attn_output_gate"] == card.attn_output_gate
        assert config["mamba_ssm_dtype"] == "float32" and spec.state_bytes == 4
        assert config["shared_expert_intermediate_size"] == card.moe.moe_intermediate_size
    if card.moe is not None:
        assert config.get("moe_intermediate_size", config.get("intermediate_size")) == (
            card.moe.moe_intermediate_size)
        experts = config.get("n_routed_experts", config.get("num_experts",
                                                           config.get("num_local_experts")))
        assert experts == card.moe.num_experts
        assert config["num_experts_per_tok"] == card.moe.num_experts_per_tok


@pytest.mark.slow  # compiles the estimator twice
def test_a_local_config_from_a_card_gives_the_shipped_figures(monkeypatch):
    card_shape = shape("llama-3.1-8b")
    shipped = measured.MeasuredCost(card_shape, "vllm")
    monkeypatch.delitem(measured.AIC_MODELS, "llama-3.1-8b")
    monkeypatch.setattr(measured, "_HANDLES", {})
    local = measured.MeasuredCost(card_shape, "vllm")
    for args in ((0, 8, 8000), (2048, 0, 0), (512, 32, 30000)):
        assert local.time(*args) == pytest.approx(shipped.time(*args), rel=1e-9)


@pytest.mark.slow  # loads another system's or engine's measured database
def test_the_measured_source_is_the_default_where_it_covers():
    pm = perf_model(shape("llama-3.1-70b", tp=4))
    assert pm.source.startswith("measured:h100_sxm/vllm/")
    assert pm.measured is not None and pm.cost() is pm.measured
    sgl = perf_model(shape("llama-3.1-70b", tp=4), engine="sglang")
    assert sgl.source.startswith("measured:h100_sxm/sglang/")
    assert sgl.cost().time(0, 16, 16000) != pm.cost().time(0, 16, 16000)


@pytest.mark.parametrize("model,gpu,why", [
    ("falcon-like", "h100-sxm", "does not model FalconForCausalLM"),
    ("llama-3.1-8b", "l4", "no tables for l4"),
    ("llama-3.1-8b", "h100-sxm", None),
])
def test_uncovered_cases_fall_back_to_analytic_and_say_why(model, gpu, why):
    if model == "falcon-like":  # an architecture neither shipped nor modelled from a config
        card = CATALOG.model("llama-3.1-8b").model_copy(
            update={"name": "falcon-like", "architecture": "FalconForCausalLM"})
        pm = perf_model(ReplicaShape(card, CATALOG.gpu(gpu), 1, 1, "bf16"))
    else:
        pm = perf_model(shape(model, gpu))
    if why is None:
        assert pm.source.startswith("measured:")
    else:
        assert pm.source.startswith("analytic (not measured: ") and why in pm.source
        assert isinstance(pm.cost(), IterationCost)


def test_int4_without_measured_kernels_falls_back():
    pm = perf_model(shape("llama-3.1-70b", tp=4, precision="int4-awq"))
    assert pm.source.startswith("analytic (not measured: ")
    assert "int4_wo" in pm.source


@pytest.mark.slow  # loads another system's or engine's measured database
def test_a_671b_moe_decodes_slower_than_a_dense_70b_once_batches_grow():
    """DeepSeek-R1 (fp8, TP8, H200, SGLang) against Llama-3.1-70B (bf16, TP8, H100, vLLM): the
    analytic defaults had the MoE faster at every batch. The measured kernels put R1's step
    above Llama's from batch 8 on, and its step grows far faster with the batch (more experts
    touched). At batch 1 they put R1 on H200 at about 9.0 ms and Llama on H100 at about
    11.7 ms: the H200's 4.8 TB/s reading 37 B active fp8 parameters beats the H100's 3.35 TB/s
    reading 70 B bf16 ones, so that is not asserted the other way. R1's steps match the public
    InferenceX figures for it (12.8 ms per token with 8 users, 34.6 ms with 64) within 15 %.
    These are the kernel tables' steps, without perf.serving_fit's decode-step scale."""
    with measured.unscaled():
        r1 = perf_model(shape("deepseek-r1", "h200", tp=8, precision="fp8"), engine="sglang")
        llama = perf_model(shape("llama-3.1-70b", tp=8))
        assert r1.source.startswith("measured:h200_sxm/sglang/")
        r1_t = {b: r1.cost().time(0, b, b * 2000) for b in (1, 8, 64)}
        llama_t = {b: llama.cost().time(0, b, b * 2000) for b in (1, 8, 64)}
    for b in (8, 64):
        assert r1_t[b] > llama_t[b]
    assert r1_t[64] / r1_t[1] > 2 * llama_t[64] / llama_t[1]
    assert r1_t[8] == pytest.approx(12.8e-3, rel=0.15)
    assert r1_t[64] == pytest.approx(34.6e-3, rel=0.15)


def test_many_short_prompts_prefill_faster_than_one_long_one():
    s = shape("llama-3.1-8b")
    costs = [measured.MeasuredCost(s, "vllm"), IterationCost(s, DEFAULT_CONSTANTS)]
    for cost in costs:
        assert cost.time(16384, 0, 0, 0.0, 32) < cost.time(16384, 0, 0, 0.0, 1)
    many = analytic_iteration(s, 16384, 0, 0, prefill_seqs=32).total_s
    assert many < analytic_iteration(s, 16384, 0, 0).total_s
    assert many == pytest.approx(costs[1].time(16384, 0, 0, 0.0, 32), rel=1e-9)


@pytest.mark.parametrize("model,gpu,tp,precision,engine", [
    ("deepseek-r1", "b200", 8, "fp8", "sglang"),  # MLA: attention lumped into the layer
    ("minimax-m2.5", "b200", 4, "fp4", "vllm"),  # attention split out, with a fixed part
])
@pytest.mark.slow  # builds two measured cost models (seconds each)
def test_batched_prompts_pay_their_own_attention(model, gpu, tp, precision, engine):
    cost = measured.MeasuredCost(shape(model, gpu, tp=tp, precision=precision), engine)
    with measured._quiet():
        static = {(b, n): cost._h.run_static(batch_size=b, isl=n, osl=2)[0] / 1e3
                  for b, n in ((16, 1024), (1, 16384), (2, 8192))}
    sixteen, one, two = (cost.time(16384, 0, 0, 0.0, k) for k in (16, 1, 2))
    assert sixteen < two < one
    # the database's own estimate of a batch of whole prompts, within 10 % (times the
    # engine's prompt-iteration scale, perf.engines.PREFILL_SCALE)
    k = cost.prefill_scale
    assert sixteen == pytest.approx(k * static[16, 1024] + cost.host(16), rel=0.1)
    assert one == pytest.approx(k * static[1, 16384] + cost.host(1), rel=0.1)
    # a chunk after a cached prefix pays attention to it: more than the same chunk alone
    assert cost.time(4096, 0, 0, 12288.0, 1) > cost.time(4096, 0, 0, 0.0, 1)


def test_each_iteration_pays_the_engines_host_time():
    from planner_cli.perf.engines import STEP_OVERHEAD_S

    cost = measured.MeasuredCost(shape("llama-3.1-8b"), "vllm")
    with measured._quiet():
        kernels = cost._h.decode_step_latency(8, 2048, 2) / 1e3
    assert cost.time(0, 8, 8 * 2048) == pytest.approx(kernels + STEP_OVERHEAD_S["vllm"])
    parts = cost.breakdown(512, 8, 8 * 2048)
    assert parts["host_s"] == STEP_OVERHEAD_S["vllm"]
    assert sum(v for k, v in parts.items() if k != "total_s") == pytest.approx(
        parts["total_s"])


def test_sglang_iterations_pay_a_host_time_per_sequence_vllm_ones_do_not(monkeypatch):
    from planner_cli.perf import engines

    per_seq = engines.SEQUENCE_OVERHEAD_S
    assert per_seq["sglang"] > 0 and per_seq["vllm"] == 0  # what the runs showed
    monkeypatch.setitem(per_seq, "sglang", 50e-6)
    s = shape("llama-3.1-8b")
    sg = measured.MeasuredCost(s, "sglang")
    monkeypatch.setitem(per_seq, "sglang", 0.0)
    flat = measured.MeasuredCost(s, "sglang")
    assert sg.memo_key != flat.memo_key  # simulations of the two are not mixed up
    for b in (1, 8, 64, 256):
        k = b * 2048
        assert sg.decode_time(b, k) - flat.decode_time(b, k) == pytest.approx(50e-6 * b)
        assert sg.breakdown(0, b, k)["host_s"] == pytest.approx(engines.STEP_OVERHEAD_S[
            "sglang"] + 50e-6 * b)
    # a prompt iteration pays for its prompts and the decodes it carries
    assert sg.time(4096, 0, 0, 0.0, 4) - flat.time(4096, 0, 0, 0.0, 4) == pytest.approx(4 * 50e-6)
    assert sg.time(1024, 16, 16 * 2048) - flat.time(1024, 16, 16 * 2048) == pytest.approx(
        17 * 50e-6)
    # the decode runs the simulator sums stay exact
    assert sg.decode_run(32, 32 * 1000, 300) == pytest.approx(
        sum(sg.time(0, 32, 32 * (1000 + i)) for i in range(300)), rel=1e-9)


@pytest.mark.slow  # compiles an attention-DP estimator (seconds)
def test_attention_data_parallel_iterations_are_one_ranks_share():
    from dataclasses import replace

    s = replace(shape("minimax-m2.5", "b200", tp=1, precision="fp8"), ep=4, dp=4)
    cost = measured.MeasuredCost(s, "vllm")
    assert cost.memo_key != measured.MeasuredCost(replace(s, tp=4, dp=1), "vllm").memo_key
    with measured._quiet():  # the database's batch is one rank's: 32 sequences are 8 a rank
        step = cost._h.decode_step_latency(8, 2048, 2) / 1e3
    assert cost.decode_time(32, 32 * 2048) == pytest.approx(
        step * cost.decode_scale + cost.host(8), rel=1e-9)
    # one sequence: its rank steps with one, the idle ranks with it
    assert cost.decode_time(1, 2048) == pytest.approx(cost.decode_time(4, 4 * 2048), rel=1e-9)
    # prompts spread over the ranks: four take one rank's one
    assert cost.time(4096, 0, 0, 0.0, 4) == pytest.approx(
        cost.host(1) + cost.prefill_scale * (cost.shared(1024) + cost._attn_fixed
                                             + cost._attention(1024)), rel=1e-9)
    parts = cost.breakdown(2048, 64, 64 * 1500, 0.0, 2)
    assert sum(v for k, v in parts.items() if k != "total_s") == pytest.approx(parts["total_s"])
    assert cost.decode_run(64, 64 * 1000, 300) == pytest.approx(
        sum(cost.time(0, 64, 64 * (1000 + i)) for i in range(300)), rel=1e-9)


def test_decode_runs_are_the_exact_sum_of_their_iterations():
    cost = measured.MeasuredCost(shape("llama-3.1-8b"), "vllm")
    for b, k0, n in ((1, 100, 3000), (8, 4000, 500), (64, 64 * 30000, 200), (5, 0, 1)):
        steps = sum(cost.time(0, b, k0 + i * b) for i in range(n))
        assert cost.decode_run(b, k0, n) == pytest.approx(steps, rel=1e-9)
        budget = steps * 0.6
        m, spent = cost.decode_iterations_within(b, k0, budget, n)
        assert cost.decode_run(b, k0, m) <= budget < cost.decode_run(b, k0, m + 1)
        assert spent == pytest.approx(cost.decode_run(b, k0, m), rel=1e-9)


@pytest.mark.slow  # seconds of work: the end-to-end layer keeps the unit layer under a minute
def test_building_a_measured_cost_prints_nothing(capfd):
    measured._COSTS.clear()
    measured.measured_cost(shape("qwen3-8b", tp=2), "sglang")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_every_mapped_gpu_is_in_the_catalog_with_the_systems_figures():
    import yaml

    folder = resources.files("aiconfigurator_core") / "systems"
    for name, system in measured.AIC_SYSTEMS.items():
        gpu = CATALOG.gpu(name)
        spec = yaml.safe_load((folder / f"{system}.yaml").read_text())["gpu"]
        assert gpu.memory_bytes == spec["mem_capacity"], name
        assert gpu.hbm_bandwidth_gbps * 1e9 == pytest.approx(spec["mem_bw"], rel=0.05), name
        assert gpu.bf16_dense_tflops * 1e12 == pytest.approx(spec["bfloat16_tc_flops"],
                                                             rel=0.05), name


@pytest.mark.slow  # loads another system's or engine's measured database
def test_a_decode_table_that_falls_with_batch_is_not_used():
    """aiconfigurator-core 0.12.0's block-scaled fp8 tables for MiniMax-M2.5 on B200 under vLLM
    put a batch-1 step above a batch-8 one; per-tensor fp8 kernels stand in, and say so."""
    b200 = shape("minimax-m2.5", "b200", tp=4, precision="fp8")
    own = measured._handle(measured.coverage(b200, "vllm"), b200, (None, None, "bfloat16"))
    assert own.predict_decode_latency(1, 2048, 2) > own.predict_decode_latency(8, 2048, 2)
    pm = perf_model(b200)
    assert "per-tensor fp8 attention GEMMs beside block-scaled experts" in pm.source
    steps = [pm.cost().time(0, b, b * 2000) for b in (1, 8, 64)]
    assert steps == sorted(steps)


@pytest.mark.slow  # loads another system's or engine's measured database
def test_block_scaled_gemm_tables_far_slower_than_per_tensor_ones_are_not_used():
    """aiconfigurator-core 0.12.0's vLLM block-scaled fp8 GEMMs take a fixed 60-240 us at
    decode sizes, 5-40x its per-tensor ones on every GPU, where its SGLang ones (DeepGEMM) take
    about 1x: for vLLM the per-tensor GEMMs stand in beside the block-scaled experts."""
    h100 = replace(shape("minimax-m2.5", "h100-sxm", tp=4, precision="fp8"), ep=4)
    cost = measured.measured_cost(h100, "vllm")
    assert "per-tensor fp8 attention GEMMs beside block-scaled experts" in cost.source
    cov = measured.coverage(h100, "vllm")
    block = measured._handle(cov, h100, (None, None, "bfloat16"))
    tensor = measured._handle(cov, h100, ("fp8", "fp8_block", "bfloat16"))
    assert block.predict_decode_latency(4, 2048, 2) > 1.5 * tensor.predict_decode_latency(
        4, 2048, 2)
    assert cost._h is not block
    # a block-scaled checkpoint that is not its model's own fp8 (Qwen's FP8 releases) too
    qwen = measured.measured_cost(shape("qwen3-235b-a22b", "h200", tp=4,
                                        precision="fp8-block"), "vllm")
    assert "per-tensor fp8 attention GEMMs beside block-scaled experts" in qwen.source
    # SGLang's block-scaled GEMMs run as its per-tensor ones: kept
    r1 = measured.measured_cost(shape("deepseek-r1", "h200", tp=8, precision="fp8"), "sglang")
    assert "per-tensor" not in r1.source
    assert r1._block_gemm_ratio((None, None, "bfloat16")) < measured.BLOCK_GEMM_SLACK


@pytest.mark.slow  # loads another system's or engine's measured database
def test_fp4_runs_on_blackwell_only():
    from planner_cli.errors import InputError
    from planner_cli.specs.model import BYTES_PER_LINEAR_WEIGHT, weight_bytes

    assert BYTES_PER_LINEAR_WEIGHT["fp4"] == 0.5625  # 4-bit values + one E4M3 scale per 16
    card = CATALOG.model("deepseek-r1")
    assert weight_bytes(card, "fp4") < 0.6 * weight_bytes(card, "fp8")
    with pytest.raises(InputError, match="fp4 .NVFP4. needs FP4 tensor cores, which h200"):
        shape("deepseek-r1", "h200", tp=8, precision="fp4")
    fp4 = perf_model(shape("deepseek-r1", "b200", tp=8, precision="fp4"), engine="sglang")
    fp8 = perf_model(shape("deepseek-r1", "b200", tp=8, precision="fp8"), engine="sglang")
    assert fp4.source.startswith("measured:b200_sxm/sglang/")
    # fewer weight bytes per decode step
    assert fp4.cost().time(0, 8, 16000) < fp8.cost().time(0, 8, 16000)


@pytest.mark.slow  # builds three measured cost models
def test_mxfp4_quantises_gpt_oss_experts_alone_and_runs_on_hopper():
    """gpt-oss ships MXFP4 experts (4-bit E2M1, one E8M0 scale per 32) beside bf16 layers:
    weight bytes follow that split, Hopper serves it (weight-only), dense models refuse it,
    and the measured source covers it on H100 under vLLM."""
    from planner_cli.errors import InputError
    from planner_cli.export.flags import PRECISION
    from planner_cli.specs.model import param_counts, weight_bytes

    card = CATALOG.model("gpt-oss-120b")
    c = param_counts(card)
    experts = c.routed_experts + c.shared_experts
    assert weight_bytes(card, "mxfp4") == pytest.approx(
        experts * 17 / 32 + (c.total - experts) * 2.0)
    assert weight_bytes(card, "mxfp4") < 0.3 * weight_bytes(card, "bf16")
    with pytest.raises(InputError, match="fp4 .NVFP4. needs FP4 tensor cores") as refused:
        shape("gpt-oss-120b", "h100-sxm", tp=2, precision="fp4")
    assert "mxfp4 for gpt-oss" in refused.value.hint
    with pytest.raises(InputError, match="mxfp4 quantises MoE experts, and llama-3.1-8b"):
        shape("llama-3.1-8b", "h100-sxm", tp=1, precision="mxfp4")
    s = shape("gpt-oss-120b", "h100-sxm", tp=2, precision="mxfp4")
    # one layer on a GPU: its experts at 17/32 B per weight, its attention at bf16's 2 B
    moe = card.moe
    experts_gpu = (moe.num_experts + moe.num_shared_experts) * s.expert_params_gpu()
    assert s.layer_weight_bytes_gpu(True) == pytest.approx(
        experts_gpu * 17 / 32 + s.attention_linear_params_gpu() * 2.0
        + 2 * card.hidden_size * 2.0 + card.hidden_size * moe.num_experts * 2.0)
    assert PRECISION["mxfp4"] == ("bfloat16", None)  # the checkpoint's config says MXFP4
    pm = perf_model(s, engine="vllm")
    assert pm.source.startswith("measured:h100_sxm/vllm/")
    # 4-bit experts decode faster than bf16 ones at a small batch
    bf16 = perf_model(shape("gpt-oss-120b", "h100-sxm", tp=4, precision="bf16"), engine="vllm")
    mx4 = perf_model(shape("gpt-oss-120b", "h100-sxm", tp=4, precision="mxfp4"), engine="vllm")
    assert mx4.cost().time(0, 4, 8000) < bf16.cost().time(0, 4, 8000)


@pytest.mark.slow  # builds measured cost models on two GPUs
def test_a_sibling_gpus_tables_stand_in_where_its_own_lack_the_case():
    import yaml

    folder = resources.files("aiconfigurator_core") / "systems"
    for gpu, sibling in measured.SIBLINGS.items():
        mine, theirs = (yaml.safe_load((folder / f"{measured.AIC_SYSTEMS[g]}.yaml").read_text())
                        ["gpu"] for g in (gpu, sibling))
        for key in ("bfloat16_tc_flops", "fp8_tc_flops"):
            assert mine[key] == theirs[key], (gpu, key)
        assert mine["mem_bw"] == pytest.approx(theirs["mem_bw"], rel=0.01)
    # MiniMax-M2.5 in bf16 on B300: no bf16 expert tables of its own, B200's stand in
    b300 = measured.measured_cost(shape("minimax-m2.5", "b300", tp=4), "vllm")
    b200 = measured.measured_cost(shape("minimax-m2.5", "b200", tp=4), "vllm")
    assert b300.source.startswith("measured:b200_sxm/vllm/")
    assert "carried to b300" in b300.source and "MoE data missing" in b300.source
    assert b300.time(512, 8, 8 * 2000) == pytest.approx(b200.time(512, 8, 8 * 2000))
    # fp4: B300's peak is not B200's, nothing is carried
    why = measured.NotCovered("its own tables lack it")
    fp4 = shape("minimax-m2.5", "b300", tp=4, precision="fp4")
    assert measured._carried(fp4, "vllm", why) is why


@pytest.mark.slow  # loads another system's or engine's measured database
def test_moe_quantisation_variants_stand_in_and_say_so():
    # Kimi-K2.5 in int4: the database has int4 expert tables but no int4 GEMMs on B200
    kimi = measured.measured_cost(shape("kimi-k2.5", "b200", tp=8, precision="int4-awq"), "vllm")
    assert "(int4 experts, bf16 attention GEMMs)" in kimi.source
    # gpt-oss in fp4: MXFP4 experts where NVFP4 expert tables are missing
    oss = measured.measured_cost(shape("gpt-oss-120b", "b200", tp=2, precision="fp4"), "vllm")
    assert "(MXFP4 experts, weight-only)" in oss.source
    # a dense model has one variant per precision
    assert len(measured._variants(shape("llama-3.1-8b", precision="int4-awq"))) == 1


@pytest.mark.slow  # loads another system's or engine's measured database
def test_glm_5_is_measured_as_its_checkpoints_are_quantised():
    # zai-org/GLM-5-FP8 is block-scaled: per-tensor fp8 has no DSA or expert tables for it
    fp8 = measured.measured_cost(shape("glm-5", "b200", tp=8, precision="fp8"), "sglang")
    assert fp8.source.startswith("measured:b200_sxm/sglang/")
    assert "per-tensor" not in fp8.source
    assert measured._variants(shape("glm-5", "b200", tp=8, precision="fp8"))[0][0] == (
        "fp8_block", "fp8_block", "bfloat16")
    # nvidia/GLM-5-NVFP4 keeps its attention projections in bf16
    fp4 = measured.measured_cost(shape("glm-5", "b200", tp=8, precision="fp4"), "sglang")
    assert "(NVFP4 experts, bf16 attention GEMMs)" in fp4.source
    # the sparse-attention module is measured: a decode step grows with the batch
    assert fp8.decode_time(64, 64 * 2048) > fp8.decode_time(4, 4 * 2048) > 0


@pytest.mark.slow  # loads another system's or engine's measured database
def test_an_fp8_kv_cache_is_timed_with_fp8_attention_where_bf16_tables_lack_it():
    # H200 SGLang tables hold FlashAttention-3 prompt attention at head size 256 in bf16 beside
    # a bf16 cache and in fp8 beside an fp8 one, which is what FA3 runs for an fp8 cache
    fp8_kv = replace(shape("qwen3.5-397b-a17b", "h200", tp=8, precision="fp8"), kv_dtype="fp8")
    cost = measured.measured_cost(fp8_kv, "sglang")
    assert "(fp8 attention, as FlashAttention-3 runs it beside an fp8 KV cache)" in cost.source
    bf16_kv = measured.measured_cost(replace(fp8_kv, kv_dtype="bf16"), "sglang")
    assert "fp8 attention" not in bf16_kv.source
    # a bf16 cache is never timed with fp8 attention
    assert all(q[2] == "bfloat16" for q, _ in measured._variants(replace(fp8_kv, kv_dtype="bf16")))


def test_mistrals_sliding_window_is_applied_to_llama_shaped_tables():
    cost = measured.measured_cost(shape("mistral-7b-instruct-v0.1"), "vllm")
    assert cost.source.endswith("(its 4096-token sliding window applied to Llama-shaped tables)")
    # decoding attends to at most the window: 10,000 tokens a sequence cost what 4,096 do
    assert cost.time(0, 8, 8 * 10_000) == pytest.approx(cost.time(0, 8, 8 * 4096))
    assert cost.time(0, 8, 8 * 2000) < cost.time(0, 8, 8 * 4096)
    # past the window a prompt's attention grows linearly, not quadratically
    a = [cost.context(c, 0.0) for c in (8192, 12288, 16384)]
    assert a[2] - a[1] == pytest.approx(a[1] - a[0], rel=1e-9)
    # each token past the window pays what the window's last token does: 2·A(w)/w
    assert a[0] == pytest.approx(3 * cost.context(4096, 0.0), rel=1e-9)


def test_version_slots_are_remembered_and_handed_out_as_copies():
    db = measured._perf_database()
    assert db is measured._perf_database() and db.get_version_slots.cascadia_remembered
    first = db.get_version_slots("h100_sxm", "vllm")
    assert first and "current" in first
    first["current"] = "mutated"
    assert db.get_version_slots("h100_sxm", "vllm")["current"] != "mutated"
    assert db.get_version_slots("h100_sxm", "vllm", systems_paths=None) == db.get_version_slots(
        "h100_sxm", "vllm")


def test_a_loaded_database_is_looked_up_without_rereading_its_spec(monkeypatch):
    db = measured._perf_database()
    version = db.get_version_slots("h100_sxm", "vllm")["current"]
    loaded = db.get_database("h100_sxm", "vllm", version)
    assert loaded is not None

    def reread(*_a, **_k):
        raise AssertionError("the system spec was read again")

    monkeypatch.setattr(db.yaml, "load", reread)
    assert db.get_database("h100_sxm", "vllm", version) is loaded


@pytest.mark.slow  # loads another system's or engine's measured database
def test_a_block_scaled_fp8_checkpoint_is_timed_with_block_scaled_kernels():
    # Qwen/Qwen3-235B-A22B-FP8 is block-scaled: fp8-block looks its GEMMs and experts up as
    # such; plain fp8 (an engine's on-the-fly per-tensor quantisation) stays per-tensor
    block = shape("qwen3-235b-a22b", "h200", tp=4, precision="fp8-block")
    assert measured._variants(block)[0][0] == ("fp8_block", "fp8_block", "bfloat16")
    assert measured._variants(replace(block, precision="fp8"))[0][0] == (
        "fp8", "fp8", "bfloat16")
    cost = measured.measured_cost(block, "sglang")
    assert cost.source.startswith("measured:h200_sxm/sglang/")
    assert "per-tensor" not in cost.source  # no stand-in
    per_tensor = measured.measured_cost(replace(block, precision="fp8"), "sglang")
    assert cost.decode_time(64, 64 * 2048) != per_tensor.decode_time(64, 64 * 2048)
    # a model whose own fp8 checkpoint is block-scaled: fp8 and fp8-block are the same tables
    r1 = shape("deepseek-r1", "h200", tp=8, precision="fp8")
    assert measured._variants(r1) == measured._variants(replace(r1, precision="fp8-block"))
    # a dense card's block variant falls back to per-tensor tables where block ones are missing
    dense = measured._variants(shape("qwen3-32b", "h100-sxm", precision="fp8-block"))
    assert [v[0][:2] for v in dense] == [("fp8_block", "fp8_block"), ("fp8", "fp8")]


@pytest.mark.slow  # loads another system's or engine's measured database
def test_mxfp8_activation_experts_are_timed_from_the_kernels_both_engines_share():
    """gpt-oss's MXFP4 experts with MXFP8 activations (FlashInfer's kernels under vLLM and
    SGLang alike): aiconfigurator-core's vLLM tables lack them, its SGLang tables of the same
    GPU stand in, run as vLLM runs, and the source says so."""
    from planner_cli.errors import InputError
    from planner_cli.perf.engines import PREFILL_SCALE, STEP_OVERHEAD_S
    from planner_cli.specs.model import weight_bytes

    b200 = replace(shape("gpt-oss-120b", "b200", tp=2, precision="mxfp4-mxfp8"), kv_dtype="fp8")
    vllm = measured.measured_cost(b200, "vllm")
    assert vllm.source.startswith("measured:b200_sxm/sglang/")
    assert "(sglang's tables: vllm's own lack the case" in vllm.source
    assert (vllm.host_s, vllm.prefill_scale) == (STEP_OVERHEAD_S["vllm"], PREFILL_SCALE["vllm"])
    bf16_acts = measured.measured_cost(replace(b200, precision="mxfp4"), "vllm")
    assert vllm.time(8192, 0, 0) < 0.6 * bf16_acts.time(8192, 0, 0)  # fp8 tensor cores
    assert vllm.decode_time(64, 64 * 2048) < bf16_acts.decode_time(64, 64 * 2048)
    assert "tables:" not in measured.measured_cost(b200, "sglang").source  # its own
    # another precision's missing tables are not borrowed
    why = measured.NotCovered("its own tables lack it")
    assert measured._borrowed(replace(b200, precision="mxfp4"), "vllm", why) is why
    # the same checkpoint and bytes; Blackwell only
    card = CATALOG.model("gpt-oss-120b")
    assert weight_bytes(card, "mxfp4-mxfp8") == weight_bytes(card, "mxfp4")
    assert card.served_precision("openai/gpt-oss-120b", "mxfp4-mxfp8", "--model") == \
        "mxfp4-mxfp8"
    with pytest.raises(InputError, match="Blackwell"):
        shape("gpt-oss-120b", "h100-sxm", tp=2, precision="mxfp4-mxfp8")
