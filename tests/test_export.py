"""`cascadia-plan export`: goldens, engine flag lists, shell safety, router configs, bench."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from planner_cli.export.router import RouterConfig
from tests.conftest import FIXTURES, ROOT
from tests.util import assert_one_line_error

PLANS = FIXTURES / "plans"
GOLDEN = Path(__file__).parent / "golden"
FLAGS = {name: {line.strip() for line in (FIXTURES / "engine_flags" / f"{name}.txt")
                .read_text().splitlines() if line.startswith("--")}
         for name in ("vllm-0.33.0", "sglang-0.5.23", "vllm-bench-serve-0.33.0",
                      "aiperf-0.13.0")}
UPDATE = os.environ.get("CASCADIA_UPDATE_GOLDENS") == "1"


def export(cli, plan: Path, out: Path, fmt: str = "all", *extra):
    result = cli("export", "--plan", plan, "--format", fmt, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return result


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["single-node", "multi-node"])
def test_goldens(cli, tmp_path, case):
    out = tmp_path / "out"
    export(cli, PLANS / f"{case}.yaml", out)
    got = tree(out)
    golden = GOLDEN / case
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
    assert got == tree(golden), "exports differ from tests/golden (CASCADIA_UPDATE_GOLDENS=1)"


def test_export_twice_is_byte_identical(cli, tmp_path):
    export(cli, PLANS / "multi-node.yaml", tmp_path / "a")
    export(cli, PLANS / "multi-node.yaml", tmp_path / "b")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def _script_flags(text: str) -> set[str]:
    flags = set()
    for line in text.splitlines():
        if line.startswith("exec "):
            flags |= {w for w in line.split() if w.startswith("--")}
    return flags


@pytest.mark.parametrize("case", ["single-node", "multi-node"])
def test_every_engine_flag_is_in_the_engine_flag_list(cli, tmp_path, case):
    out = tmp_path / "out"
    export(cli, PLANS / f"{case}.yaml", out)
    for engine, flags in (("vllm", FLAGS["vllm-0.33.0"]), ("sglang", FLAGS["sglang-0.5.23"])):
        seen = set()
        for path in (out / engine).iterdir():
            if path.suffix == ".sh":
                seen |= _script_flags(path.read_text())
            elif path.suffix == ".yaml":
                for key in yaml.safe_load(path.read_text()):
                    seen.add("--" + (key if engine == "vllm" else key.replace("_", "-")))
        assert seen, engine
        assert seen <= flags, (engine, sorted(seen - flags))
    k8s_flags = set()
    for path in (out / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc):
                k8s_flags |= {a for a in container["args"] if a.startswith("--")}
    assert k8s_flags and k8s_flags <= FLAGS["vllm-0.33.0"], sorted(k8s_flags - FLAGS[
        "vllm-0.33.0"])


def _containers(doc: dict) -> list[dict]:
    """The engine containers of a manifest (the router's runs cascadia-plan)."""
    if doc["metadata"].get("labels", {}).get("cascadia/tier") == "router":
        return []
    spec = doc.get("spec", {})
    pods = []
    if "template" in spec:
        pods.append(spec["template"])
    lws = spec.get("leaderWorkerTemplate", {})
    pods += [lws[k] for k in ("leaderTemplate", "workerTemplate") if k in lws]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def test_scripts_parse_and_start_strict(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out)
    scripts = sorted(out.rglob("*.sh"))
    assert len(scripts) >= 7
    for path in scripts:
        assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0, path
        assert "set -euo pipefail" in path.read_text().splitlines()[:5]
        assert os.access(path, os.X_OK)


def test_multi_node_commands(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out)
    head = (out / "vllm" / "tier2-llama-3.1-405b-0-node0.sh").read_text()
    worker = (out / "vllm" / "tier2-llama-3.1-405b-0-node1.sh").read_text()
    assert "--nnodes 2 --node-rank 0 --master-addr" in head and "--headless" not in head
    assert "--node-rank 1" in worker and worker.rstrip().endswith("--headless")
    sg = (out / "sglang" / "tier2-llama-3.1-405b-0-node1.sh").read_text()
    assert "--nnodes 2 --node-rank 1 --dist-init-addr" in sg
    single = (out / "vllm" / "tier1-llama-3.1-70b-1.sh").read_text()
    assert "CUDA_VISIBLE_DEVICES=4,5,6,7" in single and "--nnodes" not in single
    docs = list(yaml.safe_load_all((out / "k8s" / "tier2-llama-3-1-405b.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["LeaderWorkerSet", "Service"]
    lws = docs[0]["spec"]["leaderWorkerTemplate"]
    assert lws["size"] == 2
    worker_args = lws["workerTemplate"]["spec"]["containers"][0]["args"]
    assert "$(LWS_LEADER_ADDRESS)" in worker_args and "--headless" in worker_args
    docs = list(yaml.safe_load_all((out / "k8s" / "tier1-llama-3-1-70b.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    pod = docs[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"


def test_hostile_names_stay_inert(cli, tmp_path):
    evil = "evil'; touch PWNED; echo \"$(touch PWNED2)\" `touch PWNED3` x y"
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cascade"]["models"][0]["weights"] = evil
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(plan))
    shutil.copy(PLANS / "trace-20.jsonl", tmp_path / "trace-20.jsonl")
    out = tmp_path / "out"
    export(cli, path, out, "vllm")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "vllm"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    fake.chmod(0o755)
    script = out / "vllm" / "tier1-mistral-7b-instruct-v0.1-0.sh"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}",
               ARGV_OUT=str(tmp_path / "argv.txt"))
    run = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=False,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[0] == "serve" and argv[1] == evil
    assert argv[2] == "--config" and argv[3].endswith("tier1-mistral-7b-instruct-v0.1-0.yaml")
    assert not any(tmp_path.glob("PWNED*")) and not any(Path.cwd().glob("PWNED*"))


def test_router_configs(cli, tmp_path):
    out = tmp_path / "out"
    result = export(cli, PLANS / "multi-node.yaml", out, "router")
    cfg = RouterConfig.model_validate(yaml.safe_load((out / "router" / "cascade.yaml")
                                                     .read_text()))
    assert [t.name for t in cfg.tiers] == ["tier1", "tier2"]
    assert cfg.tiers[0].threshold == 70.0 and cfg.tiers[1].threshold is None
    assert cfg.tiers[0].endpoints == ["http://h100-0:8000/v1", "http://h100-0:8001/v1"]
    lite = yaml.safe_load((out / "router" / "litellm-config.yaml").read_text())
    groups = {m["model_name"] for m in lite["model_list"]}
    assert groups == {"tier1", "tier2"}
    assert all(m["litellm_params"]["api_key"].startswith("os.environ/")
               for m in lite["model_list"])
    sr = (out / "router" / "semantic-router.yaml").read_text()
    assert "WARNING" in sr
    doc = yaml.safe_load(sr)
    decision = doc["routing"]["decisions"][0]
    assert decision["algorithm"]["type"] == "confidence"
    assert [m["name"] for m in doc["providers"]["models"]] == ["llama-3.1-70b", "llama-3.1-405b"]
    assert len(doc["providers"]["models"][0]["backend_refs"]) == 2
    assert "warning:" in result.stderr and "collapse" in result.stderr


@pytest.mark.slow
def test_semantic_router_validates_with_vllm_sr(cli, tmp_path):
    local = Path(sys.executable).parent / "vllm-sr"
    exe = str(local) if local.exists() else shutil.which("vllm-sr")
    if exe is None:
        pytest.skip("vllm-sr is not installed")
    out = tmp_path / "out"
    export(cli, PLANS / "single-node.yaml", out, "router")
    good = out / "router" / "semantic-router.yaml"
    ok = subprocess.run([exe, "config", "validate", "--config", str(good)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("type: confidence", "type: not-an-algorithm"))
    broken = subprocess.run([exe, "config", "validate", "--config", str(bad)],
                            capture_output=True, text=True, check=False)
    assert broken.returncode != 0


def test_three_tiers_warn_that_thresholds_collapse(cli, tmp_path):
    plan = yaml.safe_load((PLANS / "multi-node.yaml").read_text())
    plan["cascade"]["models"].insert(0, {"model": "llama-3.1-8b", "precision": "bf16"})
    plan["stages"].insert(0, {"model": "llama-3.1-8b", "pool": "h100", "tp": 1,
                              "replicas": 0 + 1, "max_model_len": 16384})
    plan["stages"][1]["replicas"] = 1
    plan["thresholds"] = [60.0, 70.0]
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(plan))
    shutil.copy(PLANS / "trace-20.jsonl", tmp_path / "trace-20.jsonl")
    result = export(cli, path, tmp_path / "out", "router")
    assert "warning:" in result.stderr and "collapse" in result.stderr
    assert "collapse" in (tmp_path / "out" / "router" / "semantic-router.yaml").read_text()


def test_schema_command(cli):
    result = cli("schema", "cascade")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "RouterConfig" and "tiers" in schema["properties"]


def test_bench_export(cli, tmp_path):
    out = tmp_path / "out"
    export(cli, PLANS / "multi-node.yaml", out, "bench")
    lines = [json.loads(x) for x in (out / "bench" / "trace.mooncake.jsonl").read_text()
             .splitlines()]
    assert len(lines) == 20
    for rec in lines:
        assert len(rec["hash_ids"]) == math.ceil(rec["input_length"] / 512)
    ids = [h for rec in lines for h in rec["hash_ids"]]
    assert len(ids) == len(set(ids))
    replay = (out / "bench" / "replay.sh").read_text()
    for flag in ("--dataset-name timed_trace", "--timed-trace-chunk-hash-size 512",
                 "--timed-trace-sec-multiplier 0.001", "--goodput ttft:2000 e2el:60000",
                 "--custom-dataset-type mooncake_trace", "--fixed-schedule"):
        assert flag in replay
    # each benchmark replays exactly the trace (vLLM's stops at 1,000 prompts by default),
    # and every flag is one its own parser lists
    commands = {}
    for line in replay.splitlines():
        line = line.removeprefix("# ")
        if not line.startswith(("vllm ", "aiperf ")):
            continue
        words = shlex.split(line)
        if words[:3] == ["vllm", "bench", "serve"]:
            commands["vllm-bench-serve-0.33.0"] = words[3:]
        elif words[:2] == ["aiperf", "profile"]:
            commands["aiperf-0.13.0"] = words[2:]
    assert set(commands) == {"vllm-bench-serve-0.33.0", "aiperf-0.13.0"}
    for name, words in commands.items():
        flags = {w for w in words if w.startswith("--")}
        assert flags <= FLAGS[name], (name, sorted(flags - FLAGS[name]))
    assert commands["vllm-bench-serve-0.33.0"][
        commands["vllm-bench-serve-0.33.0"].index("--num-prompts") + 1] == str(len(lines))
    assert commands["aiperf-0.13.0"][
        commands["aiperf-0.13.0"].index("--request-count") + 1] == str(len(lines))
    # through the cascade router, asking for the cascade by name
    vllm = commands["vllm-bench-serve-0.33.0"]
    assert vllm[vllm.index("--base-url") + 1] == "$ROUTER_URL"
    assert vllm[vllm.index("--served-model-name") + 1] == "llama-405b-cascade"
    assert 'ROUTER_URL="${ROUTER_URL:-http://127.0.0.1:8080}"' in replay
    assert subprocess.run(["bash", "-n", str(out / "bench" / "replay.sh")]).returncode == 0
    assert "note" in json.loads((out / "bench" / "predicted.json").read_text())


@pytest.mark.slow
def test_bench_of_an_optimized_plan_carries_predictions(cli, tmp_path):
    plan = tmp_path / "plan.json"
    short = tmp_path / "short.jsonl"
    short.write_text("".join((ROOT / "examples" / "azure-conv-10min.jsonl").read_text()
                             .splitlines(keepends=True)[:300]))
    assert cli("optimize", "--trace", short, "--out", plan).exit_code == 0
    export(cli, plan, tmp_path / "out", "bench")
    pred = json.loads((tmp_path / "out" / "bench" / "predicted.json").read_text())
    stages = json.loads(plan.read_text())["stages"]
    assert pred["e2e_latency_s"]["p95"] > 0 and len(pred["stages"]) == len(stages)


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.update(schema_version=9), "schema_version"),
    (lambda d: d.pop("stages"), "missing key 'stages'"),
])
def test_bad_plan_writes_nothing(cli, tmp_path, edit, needle):
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    edit(plan)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(plan))
    out = tmp_path / "out"
    assert_one_line_error(cli("export", "--plan", path, "--format", "vllm", "--out", out),
                          needle)
    assert not out.exists()


def test_unknown_format_and_non_empty_out(cli, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(cli("export", "--plan", PLANS / "single-node.yaml", "--format",
                              "tgi", "--out", out), "tgi")
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(cli("export", "--plan", PLANS / "single-node.yaml", "--format",
                              "vllm", "--out", out), "--force")
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    export(cli, PLANS / "single-node.yaml", out, "vllm", "--force")
    assert not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def _export_edited(cli, tmp_path: Path, plan: dict) -> tuple[Path, Path]:
    """Write an edited copy of the single-node plan beside its trace and export it for vLLM
    (it must succeed): the plan's path and the export folder."""
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    (tmp_path / "trace-20.jsonl").write_text((PLANS / "trace-20.jsonl").read_text())
    out = tmp_path / "out"
    result = cli("export", "--plan", path, "--format", "vllm", "--out", out)
    assert result.exit_code == 0, result.output
    return path, out


def test_fp4_plans_export_the_nvfp4_quantization(cli, tmp_path):
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cluster"]["pools"][0]["gpu"] = "b200"
    for entry in plan["cascade"]["models"]:
        entry["precision"] = "fp4"
    for stage in plan["stages"]:
        stage["precision"] = "fp4"
    path, out = _export_edited(cli, tmp_path, plan)
    configs = [yaml.safe_load(p.read_text()) for p in sorted((out / "vllm").glob("*.yaml"))]
    assert configs and {c["quantization"] for c in configs} == {"modelopt_fp4"}
    # on a GPU without FP4 tensor cores the plan is refused, naming the stage
    plan["cluster"]["pools"][0]["gpu"] = "h100-sxm"
    path.write_text(yaml.safe_dump(plan))
    assert_one_line_error(cli("export", "--plan", path, "--format", "vllm", "--out",
                              tmp_path / "out2"), "stages[0]", "needs FP4 tensor cores")


def test_engine_scripts_do_not_read_the_judged_sample(cli, tmp_path):
    # only the router's config carries the judge's score scale: a vLLM export does not need
    # (or trip over) the plan's judged sample
    plan = tmp_path / "plan.yaml"
    text = (PLANS / "single-node.yaml").read_text()
    plan.write_text(text.replace("  trace: trace-20.jsonl",
                                 "  trace: trace-20.jsonl\n  quality: judged.csv"))
    (tmp_path / "judged.csv").write_text("not,a,judged,sample\n")
    export(cli, plan, tmp_path / "vllm", "vllm")
    result = cli("export", "--plan", plan, "--format", "router", "--out", tmp_path / "router")
    assert result.exit_code == 2 and "judged.csv" in result.output


def test_a_judge_scale_not_at_hand_is_named_in_every_file_that_carries_it(cli, tmp_path):
    # the hand-written plan names no judged sample: the router's config falls back to 0-100,
    # and each export that writes it (router, k8s) says so; engine scripts do not carry it
    plan = PLANS / "single-node.yaml"
    k8s = export(cli, plan, tmp_path / "k8s", "k8s")
    assert "warning:" in k8s.stderr and "k8s/router.yaml" in k8s.stderr
    assert "score_scale is 0-100" in k8s.stderr and "router/cascade.yaml" not in k8s.stderr
    both = export(cli, plan, tmp_path / "all", "all")
    assert "router/cascade.yaml and k8s/router.yaml" in both.stderr
    assert "score_scale" not in export(cli, plan, tmp_path / "vllm", "vllm").stderr


def test_a_pre_quantised_checkpoint_is_launched_as_itself(cli, tmp_path):
    """A cascade model named by a pre-quantised checkpoint is served from it, in its
    precision, and the engines read its quantisation from its own config: no --quantization
    flag to contradict it (vLLM refuses fp8 for a ModelOpt FP8 checkpoint)."""
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cascade"]["models"][0] = {"model": "Qwen/Qwen3-8B-FP8"}
    plan["stages"][0]["model"] = "qwen3-8b"
    plan["stages"][0]["precision"] = "fp8-block"
    _, out = _export_edited(cli, tmp_path, plan)
    first = [yaml.safe_load(p.read_text()) for p in sorted((out / "vllm").glob("*.yaml"))
             if "qwen3-8b" in p.name]
    assert first and all("quantization" not in c for c in first)
    scripts = " ".join(p.read_text() for p in (out / "vllm").glob("*qwen3-8b*.sh"))
    assert "vllm serve Qwen/Qwen3-8B-FP8" in scripts


def test_mxfp8_activation_experts_export_the_engine_switch_that_selects_them():
    from planner_cli.errors import InputError
    from planner_cli.export import engines, k8s
    from planner_cli.export.placement import NodeSlot, Replica

    r = Replica(stage=0, tier="tier1", model="gpt-oss-120b", hf_id="openai/gpt-oss-120b",
                index=0, tp=2, pp=1, precision="mxfp4-mxfp8", pool="b200", vendor="nvidia",
                node_selector=None, nodes=(NodeSlot("node0", (0, 1)),), port=8000,
                max_model_len=4096, max_num_seqs=256, max_num_batched_tokens=8192,
                gpu_memory_utilization=0.9, prequantised=True)
    script = engines.script("vllm", r, 0, "x.yaml")
    assert "export VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1" in script.splitlines()
    assert "quantization" not in engines.replica_config("vllm", r)  # the checkpoint's own
    container = k8s._container(r, k8s._args(r), 2, True)
    assert container["env"] == [{"name": "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8", "value": "1"}]
    # SGLang's switch is not exported: refused in one line, not written without it
    with pytest.raises(InputError, match="cannot select"):
        engines.script("sglang", r, 0, "x.yaml")
    # plain mxfp4 needs no environment
    assert "VLLM_USE" not in engines.script("vllm", replace(r, precision="mxfp4"), 0, "x.yaml")
