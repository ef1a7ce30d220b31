"""`cascadia-plan simulate` on plans: figures, routing shares, bad plans."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.conftest import ROOT
from tests.util import assert_one_line_error

PLAN = ROOT / "examples" / "plan-arena-open.yaml"


def run_json(cli, *args):
    result = cli("simulate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_simulate_example_plan(cli):
    data = run_json(cli, "--plan", PLAN)
    fig = data["figures"]
    assert data["requests"] == 2867 == fig["requests"] == fig["completed"]
    # the stages see the shares the routing function gives
    visits = [s["requests"] for s in fig["stages"]]
    assert visits[0] == 2867
    assert visits[1] == round(data["reach_share"][1] * 2867)
    assert sum(fig["answered_by_stage"]) == 2867
    assert fig["slo_scale"] >= 1.0
    for q in ("p50", "p90", "p95", "p99"):
        assert fig["e2e_latency_s"][q] > 0
    assert fig["stages"][0]["perf_source"].startswith("measured:h100_sxm/vllm/")
    assert "sliding window" in fig["stages"][0]["perf_source"]
    assert data["quality"] == pytest.approx(55.9, abs=0.5)


@pytest.mark.slow
def test_simulate_is_deterministic_and_load_raises_latency(cli):
    a = run_json(cli, "--plan", PLAN)
    b = run_json(cli, "--plan", PLAN)
    a.pop("simulation_wall_s"), b.pop("simulation_wall_s")
    assert a == b
    busy = run_json(cli, "--plan", PLAN, "--rate-scale", "6")
    assert busy["figures"]["e2e_latency_s"]["p95"] > a["figures"]["e2e_latency_s"]["p95"]


@pytest.mark.slow
def test_capacity_search(cli):
    data = run_json(cli, "--plan", PLAN, "--capacity-at-scale", "5")
    cap = data["capacity"]
    assert cap["rate_multiple"] > 1
    assert cap["requests_per_s"] == pytest.approx(cap["rate_multiple"] * 2867 / 600, rel=0.01)


def test_human_output(cli):
    result = cli("simulate", "--plan", PLAN)
    assert result.exit_code == 0
    assert "End to end" in result.stderr and "SLO scale" in result.stderr


def _plan_copy(tmp_path):
    for f in (ROOT / "examples").iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / PLAN.name


def _edit(path, fn):
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["stages"][1].update(model="mixtral-8x8b"), "mixtral-8x7b"),
    (lambda d: d["cluster"]["pools"][0].update(gpu="h100-sxn"), "h100-sxm"),
    (lambda d: d["stages"][1].update(replicas=13), "has 32"),
    (lambda d: d.update(schema_version=2), "schema_version"),
    (lambda d: d.update(thresholds=[50, 60]), "2 thresholds"),
    (lambda d: d["stages"][0].update(pool="a100"), "not a cluster pool"),
    (lambda d: d["stages"][1].update(tp=1, max_model_len=None), "does not fit"),
    (lambda d: d["stages"][1].update(tp=3), "does not divide"),
    (lambda d: d["stages"].reverse(), "cascade order"),
])
def test_bad_plans(cli, tmp_path, edit, needle):
    plan = _plan_copy(tmp_path)
    _edit(plan, edit)
    assert_one_line_error(cli("simulate", "--plan", plan), needle)


def test_trace_without_scores_and_no_judged_sample(cli, tmp_path):
    plan = _plan_copy(tmp_path)
    _edit(plan, lambda d: d["inputs"].pop("quality"))
    assert_one_line_error(cli("simulate", "--plan", plan), "no scores for",
                          "cascadia.scores", "--quality")


def test_inline_scores_in_the_trace(cli, tmp_path):
    plan = _plan_copy(tmp_path)
    trace = tmp_path / "scored.jsonl"
    lines = []
    for i, line in enumerate((tmp_path / "azure-conv-10min.jsonl").read_text().splitlines()):
        rec = json.loads(line)
        rec["cascadia"] = {"scores": {"mistral-7b-instruct-v0.1": float(i % 100),
                                      "mixtral-8x7b": 90.0}}
        lines.append(json.dumps(rec))
    trace.write_text("\n".join(lines) + "\n")
    _edit(plan, lambda d: d["inputs"].pop("quality"))
    data = run_json(cli, "--plan", plan, "--trace", trace)
    assert data["scores_from"].startswith("inline")
    # scores 0..99 cycling, threshold 44.4: 45 of every 100 requests stay at stage 1
    assert data["figures"]["answered_by_stage"][0] == pytest.approx(0.55 * 2867, abs=30)


@pytest.mark.slow
def test_external_judge_latency_is_paid_between_stages(cli, tmp_path):
    plan = _plan_copy(tmp_path)
    base = run_json(cli, "--plan", plan)["figures"]["e2e_latency_s"]["p50"]
    _edit(plan, lambda d: d["cascade"]["judger"].update(latency_s=2.0))
    slow = run_json(cli, "--plan", plan)
    # every request waits for a verdict on stage 1's answer: the median grows by ~2 s
    assert slow["figures"]["e2e_latency_s"]["p50"] == pytest.approx(base + 2.0, abs=0.6)
    _edit(plan, lambda d: d["cascade"]["judger"].update(latency_sigma=0.5))
    spread = run_json(cli, "--plan", plan)
    assert spread["judge_latency_s"] != pytest.approx(2.0, abs=1e-6)
    assert spread["judge_latency_s"] == pytest.approx(2.0 * 1.13, rel=0.1)  # lognormal mean


@pytest.mark.slow
def test_served_judge_takes_gpus_and_time(cli, tmp_path):
    plan = _plan_copy(tmp_path)

    def served(d):
        d["cascade"]["judger"] = {"kind": "model", "model": "qwen3-8b", "output_tokens": 8}
        d["stages"][1]["replicas"] = 11
        d["judge"] = {"model": "qwen3-8b", "pool": "h100", "tp": 1, "replicas": 2,
                      "max_model_len": 32768}

    _edit(plan, served)
    data = run_json(cli, "--plan", plan)
    judge = data["figures"]["judge"]
    assert judge["requests"] == 2867  # every stage-1 answer is judged
    assert data["judge_latency_s"] > 0
    # too many GPUs once the judge is counted
    _edit(plan, lambda d: d["stages"][1].update(replicas=12))
    assert_one_line_error(cli("simulate", "--plan", plan), "has 32")
    _edit(plan, lambda d: d.pop("judge"))
    assert_one_line_error(cli("simulate", "--plan", plan), "judge")


def test_requests_out_csv(cli, tmp_path):
    out = tmp_path / "requests.csv"
    result = cli("simulate", "--plan", PLAN, "--requests-out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "request,arrival_s,answered_by_stage,ttft_s,tpot_s,e2e_s,base_latency_s"
    assert len(lines) == 2868
    assert_one_line_error(cli("simulate", "--plan", PLAN, "--requests-out", out),
                          "already exists")
