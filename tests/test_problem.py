"""Resolve once: pools, context lengths, arrival rates, the best reachable quality, the one
calibration lookup, the did-you-mean helper, and output files (refusals, umask)."""

from __future__ import annotations

import itertools
import os
import stat

import numpy as np
import pytest

from planner_cli import io
from planner_cli.errors import InputError, did_you_mean
from planner_cli.export.writer import write_tree
from planner_cli.perf.profiles import find_calibration
from planner_cli.problem import arrival_rate, context_length, resolve_cluster
from planner_cli.specs.catalog import load_catalog
from planner_cli.specs.cluster import ClusterSpec
from planner_cli.workload.routing import best_quality, candidate_thresholds, route
from planner_cli.workload.trace import Trace

CATALOG = load_catalog()


def cluster(**pool) -> ClusterSpec:
    return ClusterSpec.model_validate({"schema_version": 1, "pools": [
        {"name": "p", "gpu": "a100-sxm-80gb", "nodes": 2} | pool]})


def test_pool_defaults_come_from_the_catalog_once():
    resolved, pools = resolve_cluster(cluster(gpu="A100-SXM-80GB"), CATALOG, "k.yaml")
    assert pools[0].gpus_per_node == 8 and pools[0].gpus == 16
    assert pools[0].gpu.name == "a100-sxm-80gb"
    # the resolved cluster is what plans carry: node size and canonical GPU name filled in
    assert resolved.pools[0].gpus_per_node == 8 and resolved.pools[0].gpu == "a100-sxm-80gb"
    assert resolve_cluster(resolved, CATALOG, "plan.json")[1] == pools


def test_a_node_larger_than_the_gpu_allows_is_refused():
    with pytest.raises(InputError, match=r"k.yaml: pools\[0\].gpus_per_node: 16 is more than "
                                         r"one a100-sxm-80gb node holds \(8\)"):
        resolve_cluster(cluster(gpus_per_node=16), CATALOG, "k.yaml")
    assert resolve_cluster(cluster(gpus_per_node=4), CATALOG, "k.yaml")[1][0].gpus == 8


def test_context_length_defaults_to_the_card_and_is_capped_by_it():
    card = CATALOG.model("llama-3.1-8b")
    assert context_length(card, None, "c") == card.max_position_embeddings == 131072
    assert context_length(card, 8192, "c") == 8192
    with pytest.raises(InputError, match="above llama-3.1-8b's context length 131072"):
        context_length(card, 200_000, "c.yaml: models[0]")


def test_a_checkpoint_named_in_a_cascade_sets_its_precision_and_weights():
    from planner_cli.problem import resolve_models, served_as_named
    from planner_cli.specs.cascade import CascadeSpec

    def spec(*models: dict, judger: dict | None = None) -> CascadeSpec:
        return CascadeSpec.model_validate({
            "schema_version": 1, "models": list(models),
            "judger": judger or {"kind": "external", "latency_s": 0.1}})

    done = served_as_named(spec({"model": "Qwen/Qwen3-8B-FP8"}, {"model": "qwen3-32b"},
                                judger={"kind": "model", "model": "Qwen/Qwen3-32B-FP8"}),
                           CATALOG, "c.yaml")
    assert [(m.precision, m.weights) for m in done.models] == [
        ("fp8-block", "Qwen/Qwen3-8B-FP8"), ("bf16", None)]
    assert done.judger.precision == "fp8-block"
    models, _ = resolve_models(done, CATALOG, "c.yaml")
    assert [(m.name, m.precision, m.weights) for m in models] == [
        ("qwen3-8b", "fp8-block", "Qwen/Qwen3-8B-FP8"), ("qwen3-32b", "bf16", "Qwen/Qwen3-32B")]
    # the file's own weights win; a contradicting precision is refused with its place
    own = served_as_named(spec({"model": "Qwen/Qwen3-8B-FP8", "weights": "/w/q8"}), CATALOG,
                          "c.yaml")
    assert own.models[0].weights == "/w/q8"
    with pytest.raises(InputError, match=r"c.yaml: models\[1\]: Qwen/Qwen3-32B-FP8 is a "
                                         "pre-quantised fp8-block checkpoint, but precision int4"):
        served_as_named(spec({"model": "qwen3-8b"},
                             {"model": "Qwen/Qwen3-32B-FP8", "precision": "int4-awq"}),
                        CATALOG, "c.yaml")


def _trace(ms: list[float]) -> Trace:
    n = len(ms)
    return Trace(np.array(ms, dtype=float), np.ones(n, dtype=np.int64),
                 np.ones(n, dtype=np.int64), source="t.jsonl")


def test_arrival_rate():
    assert arrival_rate(_trace([0.0])) == 0.0  # one request: no load
    assert arrival_rate(_trace([0.0, 500.0, 1000.0])) == pytest.approx(2.0)
    with pytest.raises(InputError, match="t.jsonl: all 3 requests arrive at the same instant"):
        arrival_rate(_trace([5.0, 5.0, 5.0]))


@pytest.mark.parametrize("m", [2, 3])
def test_best_quality_is_the_maximum_over_every_threshold_vector(m):
    rng = np.random.default_rng(m)
    for _ in range(15):
        scores = rng.integers(0, 6, (40, m)).astype(float) * 20
        quality = rng.uniform(0, 100, (40, m))
        best = best_quality(scores, quality)
        cands = [candidate_thresholds(scores, i) for i in range(m - 1)]
        brute = max(route(scores, quality, list(t)).quality for t in itertools.product(*cands))
        assert best.exact and best.quality == pytest.approx(brute)
        assert route(scores, quality, list(best.thresholds)).quality == pytest.approx(
            best.quality)


def test_best_quality_can_exceed_z1():
    # the small model is right where the large one is wrong, and its judge knows it
    scores = np.array([[100.0, 0.0], [0.0, 0.0]])
    quality = np.array([[100.0, 0.0], [0.0, 100.0]])
    best = best_quality(scores, quality)
    assert best.quality == 100.0 > quality[:, -1].mean()


def test_best_quality_falls_back_to_a_bound_on_large_spaces():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 100, (300, 4))
    quality = rng.uniform(0, 100, (300, 4))
    best = best_quality(scores, quality)
    assert not best.exact
    assert route(scores, quality, list(best.thresholds)).quality == pytest.approx(best.quality)
    assert best.quality >= quality[:, -1].mean()


def _calibration(root, name):
    folder = root / "h100-sxm" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("constants: {}\n")
    return folder / name


def test_calibrations_are_found_by_gpu_model_and_engine(tmp_path):
    assert find_calibration(tmp_path, "h100-sxm", "m", None) is None
    vllm = _calibration(tmp_path, "calibration-vllm.yaml")
    # one engine saved: found without naming it (optimize does not silently skip it)
    assert find_calibration(tmp_path, "h100-sxm", "m", None) == vllm
    assert find_calibration(tmp_path, "h100-sxm", "m", "vllm") == vllm
    assert find_calibration(tmp_path, "h100-sxm", "m", "sglang") is None
    _calibration(tmp_path, "calibration-sglang.yaml")
    with pytest.raises(InputError, match=r"several engines \(sglang, vllm\)"):
        find_calibration(tmp_path, "h100-sxm", "m", None)
    neutral = _calibration(tmp_path, "calibration.yaml")
    assert find_calibration(tmp_path, "h100-sxm", "m", None) == neutral
    assert find_calibration(tmp_path, "h100-sxm", "m", "trtllm") == neutral


def test_one_did_you_mean_helper():
    assert did_you_mean("lama-3.1-8b", ["llama-3.1-8b", "llama-3.1-70b"]) == (
        "did you mean 'llama-3.1-8b' or 'llama-3.1-70b'?")
    aliases = {"llama-3.1-8b": "llama-3.1-8b", "meta-llama/llama-3.1-8b": "llama-3.1-8b"}
    assert did_you_mean("llama-3.1-8", aliases, canonical=aliases) == (
        "did you mean 'llama-3.1-8b'?")
    assert did_you_mean("zzz", ["llama-3.1-8b"]) is None
    with pytest.raises(InputError) as err:
        CATALOG.model("lama-3.1-8b")
    assert "did you mean 'llama-3.1-8b'" in err.value.one_line()


def test_outputs_are_refused_before_work(tmp_path):
    with pytest.raises(InputError, match="--out .*: is a folder"):
        io.refuse_existing(tmp_path, force=True)
    existing = tmp_path / "plan.json"
    existing.write_text("{}")
    with pytest.raises(InputError, match="already exists — |already exists"):
        io.refuse_existing(existing, force=False)
    io.refuse_existing(existing, force=True)
    with pytest.raises(InputError, match="does not exist"):
        io.refuse_existing(tmp_path / "missing" / "plan.json", force=False)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_export_folders_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        io.write_text_atomic(tmp_path / "plan.json", ["{}\n"])
        write_tree({"a/b.txt": "x\n", "run.sh": "#!/bin/sh\n"}, tmp_path / "out")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "plan.json").stat().st_mode)
    assert mode == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "out" / "a").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "out" / "a" / "b.txt").stat().st_mode) == 0o666 & ~mask
