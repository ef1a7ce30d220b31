"""The bundled example loads, and `check` validates a problem's inputs against each other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from planner_cli import api, io
from planner_cli.perf.model import analytic_lookup
from planner_cli.problem import resolve_cluster, resolve_deployment, resolve_models
from planner_cli.specs.catalog import load_catalog
from tests.conftest import ROOT
from tests.util import assert_one_line_error

EXAMPLES = ROOT / "examples"


def test_every_example_file_loads():
    files = sorted(p for p in EXAMPLES.rglob("*") if p.is_file() and p.name != "NOTICE.md")
    assert files, "examples/ is empty"
    catalog = load_catalog(ROOT)
    for path in files:
        if path.suffix == ".jsonl":
            assert len(io.read_trace(path)) > 0
        elif path.suffix == ".csv":
            assert len(io.read_judged(path)) > 0
        elif path.name.startswith("cascade"):
            models, judge = resolve_models(io.load_cascade(path), catalog, str(path))
            assert models and judge is None
        elif path.name.startswith("cluster"):
            assert resolve_cluster(io.load_cluster(path), catalog, str(path))[1]
        elif path.name.startswith("plan"):
            dep = resolve_deployment(api.load_plan(path), catalog, str(path), analytic_lookup)
            assert dep.stages and dep.judge is None
        else:
            pytest.fail(f"no loader test for {path.name}")


def test_bundled_example_is_the_first_10_minutes_of_azure_conv():
    trace = io.read_trace(api.bundled_example().trace)
    assert trace.timestamps_ms[0] == 0 and trace.timestamps_ms[-1] < 600_000
    assert len(trace) == 2867


def test_check_bundled_example_json(cli):
    result = cli("check", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cluster"][0]["gpus"] == 32
    assert [m["model"] for m in data["models"]] == ["mistral-7b-instruct-v0.1", "mixtral-8x7b"]
    assert data["judged"]["models"][0]["judged_as"] == "mistralai/Mistral-7B-Instruct-v0.1"
    assert data["z1_all_largest"] > data["z2_all_smallest"]
    rows = data["routing"]
    # θ at the lowest score keeps everything at stage 1 -> z2*; quality rises with θ
    assert rows[0]["answer_share"][0] == 1.0
    assert rows[0]["quality"] == pytest.approx(data["z2_all_smallest"])
    assert data["trace"]["requests"] == 2867


def test_check_with_explicit_thresholds(cli):
    result = cli("check", "--thresholds", "60", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["routing"]
    assert row["thresholds"] == [60.0]
    assert sum(row["answer_share"]) == pytest.approx(1.0)
    human = cli("check")
    assert human.exit_code == 0 and "Routing" in human.stderr and "z1*" in human.stderr


def _example_copy(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "ex")  # subfolders come along, unused
    return tmp_path / "ex"


def _check(cli, ex: Path, **override: Path):
    files = {"trace": ex / "azure-conv-10min.jsonl",
             "quality": ex / "arena-open-models-judged.csv",
             "cascade": ex / "cascade-arena-open.yaml",
             "cluster": ex / "cluster-4x8-h100.yaml", **override}
    args = []
    for key, value in files.items():
        args += [f"--{key}", value]
    return cli("check", *args)


def test_unknown_gpu_in_cluster(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "cluster-4x8-h100.yaml"
    path.write_text(path.read_text().replace("gpu: h100-sxm", "gpu: h100-sxn"))
    assert_one_line_error(_check(cli, ex), "cluster-4x8-h100.yaml", "pools[0].gpu",
                          "h100-sxm")


def test_unknown_model_in_cascade(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "cascade-arena-open.yaml"
    path.write_text(path.read_text().replace("model: mixtral-8x7b", "model: mixtral-8x8b"))
    assert_one_line_error(_check(cli, ex), "models[1].model", "mixtral-8x7b")


def test_typo_in_cascade_yaml(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "cascade-arena-open.yaml"
    text = path.read_text().replace("quality_target:", "quality_traget:")
    path.write_text(text)
    lineno = next(i for i, t in enumerate(text.splitlines(), 1) if "quality_traget" in t)
    assert_one_line_error(_check(cli, ex), f"cascade-arena-open.yaml:{lineno}",
                          "quality_traget", "quality_target")


def test_bad_yaml_syntax_and_values(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "cluster-4x8-h100.yaml"
    path.write_text(path.read_text().replace("nodes: 4", "nodes: [4"))
    assert_one_line_error(_check(cli, ex), "cluster-4x8-h100.yaml:", "invalid YAML")
    path.write_text((EXAMPLES / "cluster-4x8-h100.yaml").read_text()
                    .replace("nodes: 4", "nodes: 0"))
    assert_one_line_error(_check(cli, ex), "pools[0].nodes", "0")
    judger = ex / "cascade-arena-open.yaml"
    judger.write_text(judger.read_text().replace("kind: external", "kind: oracle"))
    assert_one_line_error(_check(cli, ex), "cascade-arena-open.yaml:", "judger")


def test_judged_sample_models_must_match_cascade(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "cascade-arena-open.yaml"
    path.write_text(path.read_text().replace("model: mixtral-8x7b", "model: qwen3-8b"))
    assert_one_line_error(_check(cli, ex), "arena-open-models-judged.csv",
                          "no model 'qwen3-8b'")
    # judged_name maps a cascade model to another name in the sample
    path.write_text(path.read_text().replace(
        "model: qwen3-8b", "model: qwen3-8b\n    judged_name: Llama-2-70b-chat"))
    result = _check(cli, ex)
    assert result.exit_code == 0, result.output


def test_bad_trace_in_check(cli, tmp_path):
    ex = _example_copy(tmp_path)
    path = ex / "azure-conv-10min.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[9] = lines[9].replace('"output_length": ', '"output_length": -')
    path.write_text("".join(lines))
    assert_one_line_error(_check(cli, ex), "azure-conv-10min.jsonl:10", "output_length")


def test_debug_shows_traceback(cli, tmp_path):
    result = cli("--debug", "trace", "stats", tmp_path / "none.jsonl")
    assert result.exit_code != 0
    assert result.exception is not None and "no such file" in str(result.exception)


def test_each_stage_is_scheduled_as_its_engine_does():
    from planner_cli.sim.run import _config

    catalog = load_catalog(ROOT)
    plan = api.load_plan(EXAMPLES / "plan-arena-open.yaml")
    for engine, first in (("vllm", False), ("sglang", True)):
        sim = plan.simulation.model_copy(update={"engine": engine})
        dep = resolve_deployment(plan.model_copy(update={"simulation": sim}), catalog, "plan",
                                 analytic_lookup)
        assert [_config(s, s.model).prefill_first for s in dep.stages] == [first] * len(
            dep.stages)


def test_the_slo_reference_is_what_a_client_of_its_engine_sees(short_trace):
    from planner_cli.perf.engines import FRONTEND_S, OUTPUT_LAG
    from planner_cli.problem import judged_columns, request_mix
    from planner_cli.sim.run import _replay

    catalog = load_catalog(ROOT)
    plan = api.load_plan(EXAMPLES / "plan-arena-open.yaml")
    trace = io.read_trace(short_trace)
    bases = {}
    for engine in ("vllm", "sglang"):
        sim = plan.simulation.model_copy(update={"engine": engine})
        dep = resolve_deployment(plan.model_copy(update={"simulation": sim}), catalog, "plan",
                                 analytic_lookup)
        assert dep.reference_engine == engine
        columns, _ = judged_columns(io.read_judged(EXAMPLES / "arena-open-models-judged.csv"),
                                    dep.models, catalog)
        mix = request_mix(trace, dep.models, catalog, columns, dep.plan.simulation.seed)
        bases[engine] = _replay(dep, trace, mix, None, None)[0].base
    # the same replica alone (analytic costs): the engines differ by what their clients see,
    # the frontend time and the output lag (that many times each request's time per token)
    more = np.maximum(mix.outputs[-1] - 1, 0)
    per_token = dep.reference_cost.decode_runs(1, trace.input_lengths, more) / np.maximum(more, 1)
    assert bases["sglang"] - bases["vllm"] == pytest.approx(
        FRONTEND_S["sglang"] - FRONTEND_S["vllm"]
        + (OUTPUT_LAG["sglang"] - OUTPUT_LAG["vllm"]) * per_token)
