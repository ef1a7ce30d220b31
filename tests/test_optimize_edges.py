"""`optimize` on the inputs that used to crash or mislead: every documented path gives a plan or
one clear error line (issue 9's list), and what optimize writes simulate and export accept."""

from __future__ import annotations

import json

import pytest
import yaml

from planner_cli.perf.analytic import DEFAULT_CONSTANTS, analytic_iteration
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.plan import Plan
from planner_cli.specs.catalog import load_catalog
from tests.conftest import FIXTURES, ROOT
from tests.util import assert_one_line_error

EX = ROOT / "examples"
GSM8K = FIXTURES / "gsm8k_llama31_judged.csv"
LLAMA = FIXTURES / "cascade-llama31-8b-70b.yaml"  # no quality target
NO_NODE_SIZE = FIXTURES / "cluster-2x8-a100-no-node-size.yaml"


def _yaml(path, doc):
    path.write_text(yaml.safe_dump(doc))
    return path


def single(tmp_path, model: str, column: str):
    return _yaml(tmp_path / f"{model}.yaml", {
        "schema_version": 1, "models": [{"model": model, "judged_name": column}],
        "judger": {"kind": "external", "latency_s": 0.0}})


def pool(tmp_path, **p):
    return _yaml(tmp_path / "cluster.yaml", {"schema_version": 1,
                                             "pools": [{"name": "p"} | p]})


def synth(cli, tmp_path, rate: float, n: int):
    out = tmp_path / f"rate{rate}.jsonl"
    assert cli("trace", "synth", "--out", out, "--rate", rate, "--lengths",
               EX / "azure-conv-10min.jsonl", "--num-requests", n).exit_code == 0
    return out


# ---------------------------------------------------------------- fast: refused before work

def test_out_naming_a_folder_or_an_existing_file_is_refused_first(cli, tmp_path):
    assert_one_line_error(cli("optimize", "--out", tmp_path), "is a folder")
    existing = tmp_path / "plan.json"
    existing.write_text("keep me")
    assert_one_line_error(cli("optimize", "--out", existing), "already exists",
                          "--force")
    assert existing.read_text() == "keep me"


def test_a_node_larger_than_the_catalog_allows_is_refused(cli, tmp_path, short_trace):
    cluster = pool(tmp_path, gpu="a100-sxm-80gb", nodes=1, gpus_per_node=16)
    assert_one_line_error(cli("optimize", "--trace", short_trace, "--cluster", cluster,
                              "--out", tmp_path / "p.json"),
                          "pools[0].gpus_per_node: 16 is more than one a100-sxm-80gb node "
                          "holds (8)")


def test_infeasibility_names_memory_with_the_numbers(cli, tmp_path, short_trace):
    cascade = single(tmp_path, "llama-3.1-405b", "Meta-Llama-3.1-70B-Instruct")
    cluster = pool(tmp_path, gpu="a100-40gb", nodes=1)
    assert_one_line_error(cli("optimize", "--trace", short_trace, "--quality", GSM8K,
                              "--cascade", cascade, "--cluster", cluster,
                              "--out", tmp_path / "p.json"),
                          "memory: llama-3.1-405b in bf16 needs 812 GB",
                          "the largest replica in pool 'p' (8 × a100-40gb) holds 320 GB")


def test_infeasibility_names_load_with_the_numbers(cli, tmp_path):
    trace = synth(cli, tmp_path, 3.0, 400)
    cascade = single(tmp_path, "llama-3.1-405b", "Meta-Llama-3.1-70B-Instruct")
    cluster = pool(tmp_path, gpu="a100-sxm-80gb", nodes=3)
    result = cli("optimize", "--trace", trace, "--quality", GSM8K, "--cascade", cascade,
                 "--cluster", cluster, "--out", tmp_path / "p.json")
    assert_one_line_error(result, "load: at ", "stage 1 (llama-3.1-405b)",
                          "GPUs of pool 'p' to keep up; the pool has 24")
    need = int(result.stderr.split("needs at least ")[1].split()[0])
    assert need > 24
    assert "memory" not in result.stderr
    assert not (tmp_path / "p.json").exists()


# ---------------------------------------------------------------- end to end

def optimize_llama(cli, trace, out, *args):
    """optimize the Llama-3.1 8B -> 70B cascade on the 2 x 8 A100 cluster without a node size
    (and the GSM8K judged sample): (the CLI result, the plan it wrote, or None)."""
    result = cli("optimize", "--trace", trace, "--quality", GSM8K, "--cascade", LLAMA,
                 "--cluster", NO_NODE_SIZE, "--out", out, *args)
    plan = Plan.model_validate(json.loads(out.read_text())) if out.exists() else None
    return result, plan


@pytest.mark.slow
def test_optimize_simulate_export_on_a_cluster_without_node_size(cli, tmp_path, short_trace):
    """No gpus_per_node in the cluster file and no quality target in the cascade file: the
    plan carries the resolved cluster, and simulate and export accept what optimize wrote."""
    out = tmp_path / "plan.json"
    result, plan = optimize_llama(cli, short_trace, out)
    assert result.exit_code == 0, result.output
    assert "no quality floor" in result.stderr
    assert plan.cluster.pools[0].gpus_per_node == 8
    assert plan.predicted.quality_target is None
    # the card's context length, not a hidden 32768
    assert [s.max_model_len for s in plan.stages] == [131072] * len(plan.stages)
    sim = cli("simulate", "--plan", out, "--json")
    assert sim.exit_code == 0, sim.output
    assert json.loads(sim.stdout)["figures"]["slo_scale"] == pytest.approx(
        plan.predicted.simulated.slo_scale)
    deploy = tmp_path / "deploy"
    exported = cli("export", "--plan", out, "--format", "all", "--out", deploy)
    assert exported.exit_code == 0, exported.output
    configs = [yaml.safe_load(p.read_text()) for p in sorted((deploy / "vllm").glob("*.yaml"))]
    assert configs and {c["max-model-len"] for c in configs} == {131072}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["40", "60", "61.5"])
def test_quality_targets_that_crashed_the_tie_break_phase(cli, tmp_path, target):
    result, plan = optimize_llama(cli, EX / "azure-conv-10min.jsonl", tmp_path / "p.json",
                                  "--quality-target", target)
    assert result.exit_code == 0, result.output
    assert plan.predicted.quality >= float(target)
    assert plan.predicted.milp.status == "optimal"


def test_an_unknown_objective_is_refused_before_work(cli, tmp_path):
    assert_one_line_error(cli("optimize", "--objective", "e2e", "--out", tmp_path / "p.json"),
                          "--objective 'e2e' is not known", "latency")
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_a_target_above_z1_that_thresholds_reach(cli, tmp_path, short_trace):
    """z1* (all to 70B) is 95.7 here; keeping the 8B's correct answers reaches 98.3."""
    check = json.loads(cli("check", "--trace", short_trace, "--quality", GSM8K, "--cascade",
                           LLAMA, "--cluster", NO_NODE_SIZE, "--json").stdout)
    assert check["best_quality"] > 97.0 > check["z1_all_largest"]
    result, plan = optimize_llama(cli, short_trace, tmp_path / "p.json", "--quality-target", "97")
    assert result.exit_code == 0, result.output
    assert plan.predicted.quality >= 97.0
    refused, _ = optimize_llama(cli, short_trace, tmp_path / "q.json", "--quality-target", "99")
    assert_one_line_error(refused, "above the best any thresholds reach", "98.3")


@pytest.mark.slow
def test_a_one_request_trace_plans_without_a_rate(cli, tmp_path):
    trace = tmp_path / "one.jsonl"
    trace.write_text((EX / "azure-conv-10min.jsonl").read_text().splitlines()[0] + "\n")
    result, plan = optimize_llama(cli, trace, tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert "capacity not measured" in result.stderr
    assert plan.predicted.capacity is None and plan.predicted.simulated.requests == 1


@pytest.mark.slow
def test_an_engine_calibration_is_used_by_optimize_and_printed(cli, tmp_path, short_trace):
    card = load_catalog().model("llama-3.1-8b")
    truth = DEFAULT_CONSTANTS.with_(iteration_overhead_s=6e-3, bandwidth_efficiency=0.5)
    rows = ["tp,pp,prefill_tokens,decode_batch,context_tokens,time_ms"]
    for tp in (1, 2):
        shape = ReplicaShape(card, load_catalog().gpu("a100-sxm-80gb"), tp)
        for p, b, k in ((512, 0, 0), (2048, 0, 0), (0, 1, 1000), (0, 16, 16000),
                        (0, 64, 64000), (256, 32, 32000)):
            ms = analytic_iteration(shape, p, b, k, 0, truth).total_s * 1e3
            rows.append(f"{tp},1,{p},{b},{k},{ms:.4f}")
    measured = tmp_path / "m.csv"
    measured.write_text("\n".join(rows) + "\n")
    profiles = tmp_path / "profiles"
    saved = cli("perf", "calibrate", "--measurements", measured, "--model", "llama-3.1-8b",
                "--gpu", "a100-sxm-80gb", "--engine", "vllm", "--profiles", profiles)
    assert saved.exit_code == 0, saved.output
    cascade = single(tmp_path, "llama-3.1-8b", "Meta-Llama-3.1-8B-Instruct")
    out = tmp_path / "p.json"
    result = cli("optimize", "--trace", short_trace, "--quality", GSM8K, "--cascade", cascade,
                 "--cluster", NO_NODE_SIZE, "--profiles", profiles, "--out", out)
    assert result.exit_code == 0, result.output
    assert "stage 1 perf source: calibrated" in result.stderr
    assert "calibration-vllm.yaml" in result.stderr
    plan = Plan.model_validate(json.loads(out.read_text()))
    assert plan.predicted.simulated.stages[0].perf_source.startswith("calibrated")
