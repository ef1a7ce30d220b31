"""The shipped GPU and model catalog: coverage, derived numbers, lookup, strict loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from planner_cli.errors import InputError, UnknownNameError
from planner_cli.specs.catalog import load_catalog
from planner_cli.specs.model import (
    flops_per_token,
    kv_bytes_per_token,
    param_counts,
    state_bytes_per_sequence,
    weight_bytes,
)
from tests.conftest import ROOT
from tests.util import assert_one_line_error

REQUIRED_GPUS = ["h100-sxm", "h100-pcie", "h200", "a100-sxm-80gb", "a100-pcie-80gb",
                 "a100-40gb", "l40s", "l4", "a10g", "b200", "mi300x",
                 # the GPUs aiconfigurator-core's measured serving data covers
                 "b300", "gb300", "rtx-pro-6000-server"]
REQUIRED_MODELS = [
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b", "llama-2-70b",
    "mistral-7b-instruct-v0.1", "mixtral-8x7b", "mixtral-8x22b", "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-qwen-14b", "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-llama-70b", "deepseek-v3",
    "deepseek-r1", "qwen2.5-7b", "qwen2.5-32b", "qwen2.5-72b", "qwen3-0.6b", "qwen3-8b",
    "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b"]

# Published sizes (billions): model cards / technical reports / HF model pages.
PUBLISHED_TOTAL_B = {
    "llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 405.9,
    "llama-3.3-70b": 70.6, "llama-2-70b": 69.0,  # HF: 68.98 B
    "mistral-7b-instruct-v0.1": 7.24, "mixtral-8x7b": 46.7, "mixtral-8x22b": 141.0,
    "deepseek-v3": 671.0, "deepseek-r1": 671.0, "qwen2.5-7b": 7.61, "qwen2.5-14b": 14.7,
    "qwen2.5-32b": 32.5, "qwen2.5-72b": 72.7, "qwen3-0.6b": 0.6, "qwen3-8b": 8.2,
    "qwen3-32b": 32.8, "qwen3-30b-a3b": 30.5, "qwen3-235b-a22b": 235.0,
    "deepseek-r1-distill-llama-8b": 8.03, "deepseek-r1-distill-llama-70b": 70.6,
    "deepseek-r1-distill-qwen-7b": 7.62, "deepseek-r1-distill-qwen-14b": 14.8,
    "deepseek-r1-distill-qwen-32b": 32.8,
    "minimax-m2.5": 230.0,  # "230B total parameters" (MiniMax's M2 release), rounded
}
PUBLISHED_ACTIVE_B = {"mixtral-8x7b": 12.9, "mixtral-8x22b": 39.1, "deepseek-v3": 37.6,
                      "qwen3-235b-a22b": 22.0}
# Qwen's published totals count tied/untied embeddings as the report does; the 0.6 B figure is
# rounded to one digit, so it gets the tolerance of its rounding.
ROUNDING_TOLERANCE = {"qwen3-0.6b": 0.01, "qwen3-30b-a3b": 0.01, "qwen3-235b-a22b": 0.01,
                      "qwen2.5-32b": 0.01}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT)


def test_every_required_gpu_and_model_ships(catalog):
    for name in REQUIRED_GPUS:
        assert catalog.gpu(name).name == name
        assert catalog.gpu(name).source
    for name in REQUIRED_MODELS:
        assert catalog.model(name).name == name
        assert catalog.model(name).source


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL_B))
def test_total_params_within_1pct_of_published(catalog, name):
    total = param_counts(catalog.model(name)).total / 1e9
    tol = max(0.01, ROUNDING_TOLERANCE.get(name, 0.0))
    assert abs(total - PUBLISHED_TOTAL_B[name]) / PUBLISHED_TOTAL_B[name] <= tol, total


def test_kimi_k2_5_is_deepseek_v3_shaped_with_its_own_experts(catalog):
    kimi, v3 = catalog.model("kimi-k2.5"), catalog.model("deepseek-v3")
    assert kv_bytes_per_token(kimi) == kv_bytes_per_token(v3) == 70_272  # the same MLA cache
    # Kimi K2 (arXiv 2507.20534, abstract): "32 billion activated parameters and 1 trillion
    # total parameters", figures rounded to one or two digits; the text model counted here (no
    # vision tower) is within their rounding (3 %)
    counts = param_counts(kimi)
    assert abs(counts.total / 1e9 - 1000) / 1000 <= 0.03
    assert abs(counts.active / 1e9 - 32) / 32 <= 0.03


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE_B))
def test_active_params_within_1pct_of_published(catalog, name):
    active = param_counts(catalog.model(name)).active / 1e9
    published = PUBLISHED_ACTIVE_B[name]
    assert abs(active - published) / published <= 0.01, active


def test_qwen3_30b_a3b_active_matches_its_rounded_figure(catalog):
    # Qwen reports "3.3B activated", rounded; attention + router + 8 of 128 experts + embedding
    # and LM head come to 3.353 B, within 2 % of the rounded figure
    active = param_counts(catalog.model("qwen3-30b-a3b")).active / 1e9
    assert active == pytest.approx(3.353, abs=0.001)
    assert abs(active - 3.3) / 3.3 < 0.02


def test_dense_model_active_equals_total(catalog):
    counts = param_counts(catalog.model("llama-3.1-70b"))
    assert counts.active == counts.total


def test_exact_params_against_architecture_arithmetic(catalog):
    # Llama-3.1-8B by hand: embed + head 2*128256*4096; per layer q,o 4096^2 each, k,v
    # 4096*1024 each, MLP 3*4096*14336, two norms; final norm
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    expected = 2 * 128256 * 4096 + 32 * layer + 4096
    assert param_counts(catalog.model("llama-3.1-8b")).total == expected == 8_030_261_248


@pytest.mark.parametrize("name,expected", [
    ("llama-3.1-8b", 131_072),  # 2 * 32 layers * 8 kv heads * 128 * 2 B
    ("llama-3.1-70b", 327_680),
    ("mixtral-8x7b", 131_072),
    ("qwen2.5-7b", 57_344),
    ("deepseek-v3", 70_272),  # MLA: 61 layers * (512 latent + 64 rope) * 2 B
    ("deepseek-r1", 70_272),
])
def test_kv_bytes_per_token_exact(catalog, name, expected):
    assert kv_bytes_per_token(catalog.model(name)) == expected


def test_kv_fp8_halves(catalog):
    card = catalog.model("llama-3.1-8b")
    assert kv_bytes_per_token(card, "fp8") * 2 == kv_bytes_per_token(card)


def test_weight_bytes_by_precision(catalog):
    card = catalog.model("llama-3.1-70b")
    counts = param_counts(card)
    assert weight_bytes(card, "bf16") == pytest.approx(2 * counts.total)
    # fp8 halves the linear layers only; embeddings and head stay bf16
    fp8 = weight_bytes(card, "fp8")
    assert fp8 == pytest.approx(counts.linear + 2 * (counts.total - counts.linear))
    int4 = weight_bytes(card, "int4-awq")
    assert int4 < fp8 < weight_bytes(card, "bf16")
    # DeepSeek-R1 int4 is ~0.52 B per linear weight: about 350 GB
    r1 = weight_bytes(catalog.model("deepseek-r1"), "int4-awq") / 1e9
    assert 330 < r1 < 370


def test_flops_per_token_is_twice_matmul_weights_plus_attention(catalog):
    card = catalog.model("llama-3.1-8b")
    counts = param_counts(card)
    base = flops_per_token(card, 0)
    # 2 x (all weights but the embedding lookup and norms)
    assert base == pytest.approx(2 * (counts.total - counts.embedding - counts.norms))
    # attention adds 2 * layers * heads * (2 * head_dim) per context token
    assert flops_per_token(card, 1000) - base == pytest.approx(2 * 32 * 32 * 256 * 1000)
    moe = catalog.model("mixtral-8x7b")
    assert flops_per_token(moe, 0) < 2 * param_counts(moe).total / 3


def test_lookup_ignores_case_and_accepts_aliases_and_hf_id(catalog):
    assert catalog.model("META-LLAMA/Meta-Llama-3.1-8B-Instruct").name == "llama-3.1-8b"
    assert catalog.model("deepseek-ai/DeepSeek-R1").name == "deepseek-r1"
    assert catalog.model("Llama-2-70b-chat").name == "llama-2-70b"
    assert catalog.gpu("H100-SXM-80GB").name == "h100-sxm"
    assert catalog.gpu(" A10G ").name == "a10g"


def test_a_pre_quantised_checkpoint_names_its_card_and_precision(catalog):
    card = catalog.model("qwen/qwen3-235b-a22b-FP8")
    assert card.name == "qwen3-235b-a22b"
    # Qwen's FP8 releases are block-scaled; NVIDIA's ModelOpt FP8 checkpoints per-tensor
    assert card.checkpoint_precision("Qwen/Qwen3-235B-A22B-FP8") == "fp8-block"
    assert card.checkpoint_precision("Qwen/Qwen3-235B-A22B") is None
    llama = catalog.model("nvidia/Llama-3.1-8B-Instruct-FP8")
    assert llama.name == "llama-3.1-8b"
    assert llama.checkpoint_precision("nvidia/Llama-3.1-8B-Instruct-FP8") == "fp8"
    assert catalog.model("nvidia/GLM-5-NVFP4").checkpoint_precision("nvidia/GLM-5-NVFP4") == "fp4"
    # the checkpoint's precision, whatever else is said, unless it is contradicted
    ckpt = "Qwen/Qwen3-235B-A22B-FP8"
    assert card.served_precision(ckpt, None, "x") == "fp8-block"
    assert card.served_precision(ckpt, "fp8-block", "x") == "fp8-block"
    assert card.served_precision(ckpt, "fp8", "x") == "fp8-block"  # fp8, as it is scaled
    assert card.served_precision("qwen3-235b-a22b", None, "x") == "bf16"
    assert card.served_precision("qwen3-235b-a22b", "fp8", "x") == "fp8"
    with pytest.raises(InputError) as info:
        card.served_precision(ckpt, "bf16", "--model")
    assert "pre-quantised fp8-block checkpoint" in info.value.one_line()
    with pytest.raises(InputError, match="pre-quantised fp8 checkpoint, but precision fp8-bl"):
        llama.served_precision("nvidia/Llama-3.1-8B-Instruct-FP8", "fp8-block", "--model")
    # not part of the architecture: the card pools its serving runs with its twins as before
    assert "checkpoints" not in card.architecture_key


def test_a_checkpoint_needs_a_known_precision_and_one_card(tmp_path):
    root = _copy_catalog(tmp_path)
    path = root / "model_cards" / "qwen3-8b.yaml"
    text = path.read_text()
    path.write_text(text.replace("Qwen/Qwen3-8B-FP8: fp8-block", "Qwen/Qwen3-8B-FP8: fp16"))
    with pytest.raises(InputError) as info:
        load_catalog(root)
    assert "qwen3-8b.yaml:" in info.value.one_line() and "fp16" in info.value.one_line()
    path.write_text(text.replace("Qwen/Qwen3-8B-FP8: fp8-block", "Qwen/Qwen3-32B-FP8: fp8"))
    with pytest.raises(InputError, match="also used by"):
        load_catalog(root)  # qwen3-32b.yaml lists it


def test_unknown_name_suggests_close_matches(catalog):
    with pytest.raises(UnknownNameError) as info:
        catalog.gpu("h100-sxn")
    assert "h100-sxm" in info.value.one_line()
    with pytest.raises(UnknownNameError) as info:
        catalog.model("llama-3.1-7b")
    assert "llama-3.1-8b" in info.value.one_line()


def _copy_catalog(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "hardware", tmp_path / "hardware")
    shutil.copytree(ROOT / "model_cards", tmp_path / "model_cards")
    return tmp_path


def test_typo_key_names_file_line_key_and_suggestion(tmp_path):
    root = _copy_catalog(tmp_path)
    path = root / "hardware" / "h100-sxm.yaml"
    path.write_text(path.read_text().replace("hbm_bandwidth_gbps:", "hbm_bandwith_gbps:"))
    with pytest.raises(InputError) as info:
        load_catalog(root)
    line = info.value.one_line()
    lineno = next(i for i, t in enumerate(path.read_text().splitlines(), 1)
                  if t.startswith("hbm_bandwith_gbps"))
    assert f"h100-sxm.yaml:{lineno}" in line
    assert "hbm_bandwith_gbps" in line and "hbm_bandwidth_gbps" in line


def test_non_positive_number_names_value(tmp_path):
    root = _copy_catalog(tmp_path)
    path = root / "model_cards" / "llama-3.1-8b.yaml"
    path.write_text(path.read_text().replace("hidden_size: 4096", "hidden_size: -4096"))
    with pytest.raises(InputError) as info:
        load_catalog(root)
    line = info.value.one_line()
    assert "llama-3.1-8b.yaml:" in line and "hidden_size" in line and "-4096" in line


def test_missing_key_and_name_mismatch(tmp_path):
    root = _copy_catalog(tmp_path)
    path = root / "hardware" / "l4.yaml"
    path.write_text("\n".join(t for t in path.read_text().splitlines()
                              if not t.startswith("bf16_dense_tflops")))
    with pytest.raises(InputError, match="missing key 'bf16_dense_tflops'"):
        load_catalog(root)
    root2 = _copy_catalog(tmp_path / "b")
    (root2 / "hardware" / "l4.yaml").rename(root2 / "hardware" / "l4-24.yaml")
    with pytest.raises(InputError, match="differs from the file name"):
        load_catalog(root2)


def test_bad_catalog_through_cli_is_one_line(cli, tmp_path):
    root = _copy_catalog(tmp_path)
    path = root / "model_cards" / "qwen3-8b.yaml"
    path.write_text(path.read_text() + "num_experts: 4\n")
    result = cli("--catalog-dir", root, "catalog", "models")
    assert_one_line_error(result, "qwen3-8b.yaml:", "num_experts")


def test_catalog_commands_json(cli):
    result = cli("catalog", "gpus", "--json")
    assert result.exit_code == 0, result.output
    gpus = {g["name"]: g for g in json.loads(result.stdout)}
    assert set(REQUIRED_GPUS) <= set(gpus)
    assert gpus["h100-sxm"]["hbm_bandwidth_gbps"] == 3350
    assert gpus["a100-sxm-80gb"]["fp8_dense_tflops"] is None
    result = cli("catalog", "models", "--json")
    assert result.exit_code == 0, result.output
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models["deepseek-v3"]["attention"] == "MLA"
    assert models["llama-3.1-8b"]["kv_bytes_per_token_bf16"] == 131072
    assert models["mixtral-8x7b"]["active_params_b"] == pytest.approx(12.88, abs=0.01)


def test_catalog_tables_render(cli):
    for what in ("gpus", "models"):
        result = cli("catalog", what)
        assert result.exit_code == 0
        assert "h100-sxm" in result.stderr or "llama-3.1-8b" in result.stderr


def test_qwen3_5_hybrid_layers_counted_by_type(catalog):
    card = catalog.model("qwen3.5-397b-a17b")
    assert (card.layers_of("full_attention"), card.layers_of("linear_attention")) == (15, 45)
    # by hand, h = 4096: a gated DeltaNet layer projects q, k (16 x 128 each), v and the gate z
    # (64 x 128 each) and the per-head a and b from h, then 8192 -> h; its convolution over
    # q, k, v (12288 channels x 4 taps), dt bias, A_log and norm are small
    linear = 4096 * (2 * 2048 + 2 * 8192) + 4096 * 128 + 8192 * 4096
    small = 12288 * 4 + 64 + 64 + 128
    # a full-attention layer: q with its output gate 2 x 32 x 256, k and v 2 x 256, o, q/k norms
    full = 4096 * 2 * 8192 + 2 * 4096 * 512 + 8192 * 4096
    counts = param_counts(card)
    assert counts.attention == 45 * (linear + small) + 15 * (full + 2 * 256)
    # Qwen: "397B total parameters, 17B activated" (rounded; the language model counted here,
    # without the vision encoder and the multi-token-prediction layer)
    assert abs(counts.total / 1e9 - 397) / 397 <= 0.01
    assert abs(counts.active / 1e9 - 17) / 17 <= 0.03
    # only the 15 full-attention layers cache K and V (2 heads x 256, bf16) per token; every
    # sequence holds 45 recurrent states of 64 x 128 x 128 fp32 and convolution states of
    # 3 x 12288 bf16, whatever its length
    assert kv_bytes_per_token(card) == 15 * 2 * 2 * 256 * 2 == 30_720
    assert state_bytes_per_sequence(card) == 45 * (64 * 128 * 128 * 4 + 3 * 12288 * 2)


def test_layer_types_must_match_the_layers(tmp_path):
    import yaml

    from planner_cli.specs.model import ModelCard

    data = yaml.safe_load((ROOT / "model_cards" / "qwen3.5-397b-a17b.yaml").read_text())
    for change, needle in ((lambda d: d["layer_types"].pop(), "layer_types lists 59"),
                           (lambda d: d.pop("linear_attention"), "go together")):
        bad = dict(data, layer_types=list(data["layer_types"]))
        change(bad)
        with pytest.raises(ValueError, match=needle):
            ModelCard.model_validate(bad)


def test_gpt_oss_120b_against_openais_published_sizes(catalog):
    card = catalog.model("gpt-oss-120b")
    counts = param_counts(card)
    # the gpt-oss model card (arXiv 2508.10925, table 1): 116.83 B total, 5.13 B active per
    # token, its active count leaving out the embedding (the unembedding is in)
    assert counts.total / 1e9 == pytest.approx(116.83, abs=0.005)
    assert (counts.active - counts.embedding) / 1e9 == pytest.approx(5.13, abs=0.01)
    # half the layers attend over a 128-token window: only the 18 full layers cache per
    # token (8 KV heads x 64, bf16); each sequence holds the 18 windows
    assert (card.layers_of("full_attention"), card.layers_of("sliding_attention")) == (18, 18)
    assert kv_bytes_per_token(card) == 18 * 2 * 8 * 64 * 2
    assert state_bytes_per_sequence(card) == 18 * 128 * 2 * 8 * 64 * 2


def test_glm_5_is_an_mla_moe_with_a_sparse_attention_indexer(catalog):
    card = catalog.model("glm-5")
    counts = param_counts(card)
    # Z.ai's GLM-5 release: "744B parameters (40B active)", rounded; the MTP layer not counted
    assert abs(counts.total / 1e9 - 744) / 744 <= 0.01
    assert abs((counts.active - counts.embedding) / 1e9 - 40) / 40 <= 0.03
    # 78 layers cache MLA's 512 latent + 64 rope key and the indexer's 128-dim key per token
    assert kv_bytes_per_token(card) == 78 * (512 + 64 + 128) * 2
    assert catalog.model("zhipuai/GLM-5") is card
