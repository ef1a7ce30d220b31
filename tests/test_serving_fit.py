"""The decode-step scale per (engine, model) fitted to real serving runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner_cli.perf import measured, serving_fit
from planner_cli.perf.engines import ENGINES, STEP_OVERHEAD_S
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.catalog import load_catalog

CATALOG = load_catalog()
ROOT = Path(__file__).resolve().parent.parent
SILICON_DEV = ROOT.parent / "shared" / "data" / "raw" / "aiconfigurator" / "silicon_dev.csv"


def test_the_fit_is_the_median_ratio_of_models_with_enough_runs():
    rows = [("vllm", "a", 12.0, 10.0), ("vllm", "a", 9.0, 10.0), ("vllm", "a", 11.0, 10.0),
            ("vllm", "b", 10.0, 10.0), ("vllm", "b", 10.0, 10.0),  # too few runs
            ("sglang", "a", 8.0, 10.0), ("sglang", "a", 8.0, 10.0), ("sglang", "a", 6.0, 10.0),
            ("sglang", "a", 0.0, 10.0)]  # no measurement: ignored
    assert serving_fit.fit(rows) == {"sglang": {"a": {"scale": 0.8, "rows": 3}},
                                     "vllm": {"a": {"scale": 1.1, "rows": 3}}}
    assert serving_fit.fit(rows, min_rows=2)["vllm"]["b"] == {"scale": 1.0, "rows": 2}


def test_the_shipped_table_names_catalog_models_and_engines_with_sane_scales():
    data = yaml.safe_load(serving_fit.FIT_FILE.read_text(encoding="utf-8"))
    assert data["decode_scale"], "the shipped fit is empty"
    for engine, models in data["decode_scale"].items():
        assert engine in ENGINES
        for model, entry in models.items():
            assert model in CATALOG.models and model in measured.AIC_MODELS
            assert entry["rows"] >= serving_fit.MIN_ROWS
            assert 0.5 < entry["scale"] < 2.0  # a correction, not a different machine
            # an entry pools cards of one architecture, itself first
            members = entry.get("models", [model])
            assert members[0] == model
            assert {CATALOG.model(m).architecture_key for m in members} == {
                CATALOG.model(model).architecture_key}


def test_cards_of_one_architecture_share_one_scale_and_say_whose_runs_it_is():
    groups = serving_fit.same_architecture(CATALOG.models.items.values())
    assert groups["deepseek-v3"] == groups["deepseek-r1"] == ("deepseek-r1", "deepseek-v3")
    assert groups["llama-3.1-8b"] == ("deepseek-r1-distill-llama-8b", "llama-3.1-8b")
    assert groups["qwen3-32b"] == ("qwen3-32b",)  # Qwen2.5-32B has other heads and norms
    table = serving_fit.parse({"decode_scale": {"sglang": {
        "deepseek-r1": {"models": ["deepseek-r1", "deepseek-v3"], "rows": 60, "scale": 1.1},
        "glm-5": {"rows": 9, "scale": 1.2}}}})
    assert table[("sglang", "deepseek-v3")] == table[("sglang", "deepseek-r1")] == (
        1.1, 60, "deepseek-r1 and deepseek-v3")
    assert table[("sglang", "glm-5")] == (1.2, 9, "glm-5")
    assert ("vllm", "deepseek-v3") not in table


def test_a_fitted_model_decodes_at_its_scale_and_says_so(monkeypatch):
    shape = ReplicaShape(CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100-sxm"), 1, 1, "bf16")
    monkeypatch.setattr(measured, "_serving_table",
                        lambda: {("vllm", "llama-3.1-8b"): (0.8, 12, "llama-3.1-8b")})
    scaled = measured.MeasuredCost(shape, "vllm")
    with measured.unscaled():
        plain = measured.MeasuredCost(shape, "vllm")
    host = STEP_OVERHEAD_S["vllm"]
    for b, k in ((1, 2048), (8, 8 * 2048), (64, 64 * 600)):
        assert scaled.decode_time(b, k) - host == pytest.approx(
            0.8 * (plain.decode_time(b, k) - host), rel=1e-12)
    # prefill is the tables' own
    assert scaled.time(4096, 0, 0) == plain.time(4096, 0, 0)
    assert "decode steps x0.8: fitted to 12 vllm serving runs of llama-3.1-8b" in scaled.source
    assert "decode steps" not in plain.source
    assert scaled.memo_key != plain.memo_key  # simulations of the two are not mixed up
    # another engine or model keeps the tables as measured
    assert measured.MeasuredCost(shape, "sglang").decode_scale == 1.0


def test_prompt_iterations_run_at_the_engines_scale_decode_steps_do_not(monkeypatch):
    from planner_cli.perf import engines

    shape = ReplicaShape(CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100-sxm"), 1, 1, "bf16")
    monkeypatch.setitem(engines.PREFILL_SCALE, "vllm", 1.0)
    plain = measured.MeasuredCost(shape, "vllm")
    monkeypatch.setitem(engines.PREFILL_SCALE, "vllm", 1.5)
    slow = measured.MeasuredCost(shape, "vllm")
    host = STEP_OVERHEAD_S["vllm"]
    for p, b, k, pc, seqs in ((4096, 0, 0, 0.0, 1), (8192, 0, 0, 0.0, 8), (2048, 0, 0, 6144.0, 1)):
        assert slow.time(p, b, k, pc, seqs) - host == pytest.approx(
            1.5 * (plain.time(p, b, k, pc, seqs) - host), rel=1e-12)
    # a mixed iteration: its prompt part is scaled, its decodes' attention is not
    k = 16 * 2048
    decodes = plain.breakdown(1024, 16, k)["decode_attention_s"]
    assert decodes > 0
    assert slow.time(1024, 16, k) - plain.time(1024, 16, k) == pytest.approx(
        0.5 * (plain.time(1024, 16, k) - host - decodes), rel=1e-12)
    assert slow.decode_time(8, 8 * 2048) == plain.decode_time(8, 8 * 2048)
    assert slow.memo_key != plain.memo_key


def test_unscaled_restores_the_setting_and_drops_costs_built_under_it():
    shape = ReplicaShape(CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100-sxm"), 1, 1, "bf16")
    with measured.unscaled():
        assert measured.decode_scale("vllm", "gpt-oss-120b") is None
        inside = measured.measured_cost(shape, "vllm")
    assert measured.decode_scale("vllm", "gpt-oss-120b") is not None
    assert measured.measured_cost(shape, "vllm") is not inside


@pytest.mark.slow  # perf serve on every usable run of the file (about 30 s)
@pytest.mark.skipif(not SILICON_DEV.exists(), reason="needs ../shared/data (silicon_dev.csv)")
def test_the_shipped_table_is_what_the_fit_script_writes():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fit_serving.py"),
                           "--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
