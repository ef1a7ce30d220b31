"""`cascadia-plan profile` on the CPU with tiny model cards; the CUDA path when a GPU exists."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from planner_cli.perf.profiler import (
    ProfileGrid,
    cuda_gpu_name,
    hf_config_for,
    profile_model,
)
from planner_cli.specs.catalog import load_catalog
from tests.conftest import FIXTURES
from tests.util import assert_one_line_error

# profiling imports torch and transformers (seconds): the whole module is end-to-end, and it
# imports them only when its tests run, so the unit layer's collection stays fast
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def torch():
    pytest.importorskip("transformers")
    return pytest.importorskip("torch")

TINY = FIXTURES / "tiny_catalog"
GRID = ProfileGrid(prefill_tokens=(8, 32), decode_batch=(1, 4), decode_context=(16, 64))


@pytest.fixture(scope="module")
def tiny():
    return load_catalog(TINY)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen3-moe"])
def test_profile_on_cpu_gives_the_grid(tiny, name):
    seen = []
    result = profile_model(tiny.model(name), device="cpu", grid=GRID, warmup=1, reps=2,
                           progress=lambda what, done, total: seen.append((done, total)))
    assert len(result.rows) == len(GRID.points()) == 6
    for row in result.rows:
        assert row["time_ms"] > 0 and row["head_ms"] >= 0 and row["per_layer_ms"] >= 0
        assert row["p10_ms"] <= row["p90_ms"]
    decode = [r for r in result.rows if r["decode_batch"]]
    assert {r["context_tokens"] for r in decode} == {16, 64, 256}
    assert seen[-1] == (18, 18)  # 1 warm-up + 2 timed rounds over 6 points
    meta = result.metadata
    assert meta["device"] == "cpu" and meta["model"] == name
    assert meta["torch_version"] and meta["dtype"] == "float32"


def test_few_layers_scale_by_layer_count(tiny):
    card = tiny.model("tiny-llama")
    result = profile_model(card, device="cpu", layers=2, grid=GRID, warmup=1, reps=2)
    for row in result.rows:
        assert row["layers_profiled"] == 2
        want = row["head_ms"] + card.num_hidden_layers * row["per_layer_ms"]
        assert row["time_ms"] == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_tp_shard_config(tiny):
    card = tiny.model("tiny-llama")
    cfg = hf_config_for(card, 2, 2)
    assert cfg["num_attention_heads"] == 2 and cfg["num_key_value_heads"] == 1
    assert cfg["intermediate_size"] == 88 and cfg["num_hidden_layers"] == 2


def test_cli_profile_writes_table_and_perf_uses_it(cli, tmp_path):
    profiles = tmp_path / "profiles"
    result = cli("--catalog-dir", TINY, "profile", "--model", "tiny-llama", "--device", "cpu",
                 "--quick", "--reps", "2", "--json", "--profiles", profiles)
    assert result.exit_code == 0, result.output
    folder = profiles / "cpu" / "tiny-llama"
    rows = list(csv.DictReader((folder / "profile.csv").open()))
    # --quick on the CPU: 2 prefill points and 2 × 2 decode points, enough to fit
    assert len(rows) == len(json.loads(result.stdout)["rows"]) == 6
    assert {"tp", "prefill_tokens", "decode_batch", "context_tokens", "time_ms"} <= set(rows[0])
    meta = yaml.safe_load((folder / "profile.yaml").read_text())
    assert meta["device"] == "cpu" and meta["grid"]["decode_batch"]
    pred = json.loads(cli("--catalog-dir", TINY, "perf", "--model", "tiny-llama", "--gpu", "cpu",
                          "--batch", "8", "--context", "1024", "--json", "--profiles",
                          profiles).stdout)
    assert pred["source"].startswith("profile:")
    assert pred["time_ms"] > 0
    # a second run refuses to overwrite without --force, before measuring anything
    assert_one_line_error(cli("--catalog-dir", TINY, "profile", "--model", "tiny-llama",
                              "--device", "cpu", "--quick", "--profiles", profiles),
                          "exists already")


def test_cli_profile_bad_input(cli, tmp_path, torch):
    def profile(*args):
        return cli("--catalog-dir", TINY, "profile", *args, "--profiles", tmp_path)

    assert_one_line_error(profile("--model", "tiny-lama", "--device", "cpu"), "tiny-llama")
    assert_one_line_error(profile("--model", "tiny-llama", "--device", "cpu", "--tp", "3"),
                          "--tp 3")
    assert_one_line_error(profile("--model", "tiny-llama", "--device", "tpu"), "--device")
    if not torch.cuda.is_available():
        assert_one_line_error(profile("--model", "tiny-llama", "--device", "cuda"),
                              "no CUDA GPU")
    assert not any(tmp_path.iterdir())


def test_model_too_big_for_the_device(cli, tmp_path):
    # all 126 layers of Llama-3.1-405B in float32 do not fit this machine's memory
    assert_one_line_error(cli("profile", "--model", "llama-3.1-405b", "--device", "cpu",
                              "--profiles", tmp_path), "--layers")


def test_cuda_device_names_map_to_the_catalog():
    assert cuda_gpu_name("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert cuda_gpu_name("NVIDIA H100 PCIe") == "h100-pcie"
    assert cuda_gpu_name("NVIDIA H200") == "h200"
    assert cuda_gpu_name("NVIDIA A100-SXM4-80GB") == "a100-sxm-80gb"
    assert cuda_gpu_name("NVIDIA A100-PCIE-40GB") == "a100-pcie-40gb"
    assert cuda_gpu_name("NVIDIA L4") == "l4"
    assert cuda_gpu_name("NVIDIA L40S") == "l40s"
    assert cuda_gpu_name("Some New GPU") == "some-new-gpu"


def test_profile_on_cuda(tiny, torch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    result = profile_model(tiny.model("tiny-llama"), device="cuda", grid=GRID, warmup=1,
                           reps=3)
    assert result.metadata["device_kind"] == "cuda"
    assert all(r["time_ms"] > 0 for r in result.rows)
