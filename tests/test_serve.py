"""`perf serve`: closed-loop clients against one replica, as `vllm bench serve` reports them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from planner_cli.sim.closed_loop import closed_loop
from planner_cli.sim.engine import Replica, Req
from tests.test_sim_engine import ConstantCost
from tests.util import assert_one_line_error

T = 0.01  # seconds per iteration, whatever it holds


def test_one_client_is_exact():
    # each request: one prefill iteration (its first token) then osl-1 decode iterations
    f = closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=1, num_prompts=7,
                    max_num_batched_tokens=8192, max_num_seqs=256)
    assert f.mean_ttft_ms == pytest.approx(T * 1e3)
    assert f.mean_tpot_ms == pytest.approx(T * 1e3)
    assert f.duration_s == pytest.approx(7 * 5 * T)
    assert f.output_throughput_tok_s == pytest.approx(1 / T)
    assert f.request_throughput_rps == pytest.approx(1 / (5 * T))


def test_clients_share_iterations_and_loop_closed():
    f = closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=4, num_prompts=8,
                    max_num_batched_tokens=8192, max_num_seqs=256)
    # the four prompts prefill together, so each wave of four takes 5 iterations
    assert f.mean_ttft_ms == pytest.approx(T * 1e3)
    assert f.duration_s == pytest.approx(2 * 5 * T)
    assert f.request_throughput_rps == pytest.approx(8 / (10 * T))


def test_a_small_token_budget_delays_first_tokens():
    # 4 prompts of 100 tokens, 100 tokens per iteration, decodes first (they take budget):
    # A 100 (first token at 1); A decodes + B 99; B 1 + C 99 (B at 3); B decodes + C 1 +
    # D 98 (C at 4); C decodes + D 2 (D at 5)
    f = closed_loop(ConstantCost(T), 10_000, isl=100, osl=2, concurrency=4, num_prompts=4,
                    max_num_batched_tokens=100, max_num_seqs=8)
    assert f.mean_ttft_ms == pytest.approx((1 + 3 + 4 + 5) / 4 * T * 1e3)


def test_bad_closed_loops_are_refused():
    with pytest.raises(ValueError):
        closed_loop(ConstantCost(T), 100, isl=100, osl=5, concurrency=1, num_prompts=1,
                    max_num_batched_tokens=8192, max_num_seqs=256)


@pytest.mark.slow  # seconds of work: the end-to-end layer keeps the unit layer under a minute
def test_perf_serve_reports_the_benchmark_keys(cli):
    result = cli("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl",
                 "1024", "--osl", "128", "--concurrency", "8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("mean_ttft_ms", "mean_tpot_ms", "output_throughput_tok_s",
                "request_throughput_rps", "source"):
        assert key in data
    assert data["source"].startswith("measured:h100_sxm/vllm/")
    assert data["num_prompts"] == 100 and data["concurrency"] == 8
    more = json.loads(cli("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm",
                          "--isl", "1024", "--osl", "128", "--concurrency", "64",
                          "--json").stdout)
    # more clients: slower tokens each, more tokens in all
    assert more["mean_tpot_ms"] > data["mean_tpot_ms"]
    assert more["output_throughput_tok_s"] > data["output_throughput_tok_s"]
    human = cli("perf", "serve", "--model", "deepseek-r1", "--gpu", "h200", "--tp", "8",
                "--ep", "8", "--precision", "fp8", "--engine", "sglang", "--isl", "1024",
                "--osl", "64", "--concurrency", "4")
    assert human.exit_code == 0, human.output
    assert "mean TPOT" in human.stderr and "source: measured:h200_sxm/sglang/" in human.stderr
    # attention data parallelism: eight ranks, each holding its own requests' latent cache
    ranks = [json.loads(cli("perf", "serve", "--model", "deepseek-r1", "--gpu", "h200",
                            "--tp", str(tp), "--dp", str(8 // tp), "--ep", "8", "--precision",
                            "fp8", "--engine", "sglang", "--isl", "1024", "--osl", "64",
                            "--concurrency", "16", "--json").stdout) for tp in (8, 1)]
    assert (ranks[1]["dp"], ranks[1]["tp"]) == (8, 1)
    assert ranks[1]["kv_capacity_tokens"] > 4 * ranks[0]["kv_capacity_tokens"]
    assert ranks[1]["mean_tpot_ms"] != ranks[0]["mean_tpot_ms"]


@pytest.mark.parametrize("args,needle", [
    (("--concurrency", "0"), "--concurrency 0 is below 1"),
    (("--concurrency", "1", "--ep", "2", "--tp", "2"), "llama-3.1-8b has no experts"),
    (("--concurrency", "1", "--engine", "trt"), "engine 'trt' is not known"),
])
def test_perf_serve_bad_input(cli, args, needle):
    assert_one_line_error(cli("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm",
                              "--isl", "128", "--osl", "16", *args), needle)


def test_perf_serve_refuses_a_shape_that_does_not_fit(cli):
    assert_one_line_error(cli("perf", "serve", "--model", "llama-3.1-70b", "--gpu", "h100-sxm",
                              "--isl", "128", "--osl", "16", "--concurrency", "1"),
                          "does not fit")


class Recorder:
    """A constant-time cost that records each iteration's (prefill tokens, decodes)."""

    def __init__(self, t: float) -> None:
        self.inner, self.calls = ConstantCost(t), []

    def time(self, p, b, k, pc=0.0, seqs=1):
        self.calls.append((p, b))
        return self.inner.time(p, b, k, pc, seqs)

    def decode_run(self, b, k0, n):
        self.calls.append((0, b))
        return self.inner.decode_run(b, k0, n)

    def decode_time(self, b, k):
        return self.inner.decode_time(b, k)

    def decode_iterations_within(self, b, k0, budget, cap):
        return self.inner.decode_iterations_within(b, k0, budget, cap)


def test_sglang_pauses_decodes_for_waiting_prefills_vllm_mixes_them():
    # staggered lengths make arrivals land while others decode
    mixed, first = Recorder(T), Recorder(T)
    closed_loop(mixed, 100_000, isl=300, osl=20, concurrency=4, num_prompts=40,
                max_num_batched_tokens=512, max_num_seqs=256, range_ratio=0.5)
    closed_loop(first, 100_000, isl=300, osl=20, concurrency=4, num_prompts=40,
                max_num_batched_tokens=512, max_num_seqs=256, prefill_first=True,
                range_ratio=0.5)
    assert any(p > 0 and b > 0 for p, b in mixed.calls)
    assert not any(p > 0 and b > 0 for p, b in first.calls)
    assert any(p > 0 for p, _ in first.calls) and any(b > 0 for _, b in first.calls)


def test_prefill_first_keeps_waves_together():
    # 8 clients, 2 prompts per prefill batch: SGLang prefills the whole wave (4 batches)
    # before any decode, so every wave's first tokens come at 1, 2, 3, 4 iterations
    f = closed_loop(ConstantCost(T), 100_000, isl=100, osl=10, concurrency=8, num_prompts=16,
                    max_num_batched_tokens=200, max_num_seqs=10**9, prefill_first=True)
    assert f.mean_ttft_ms == pytest.approx(2.5 * T * 1e3)
    # each request then decodes 9 more tokens with the whole wave: 4 + 9 iterations a wave
    assert f.duration_s == pytest.approx(2 * 13 * T)


def test_range_ratio_samples_lengths_as_the_benchmark_does():
    from planner_cli.sim.closed_loop import lengths

    ins, outs = lengths(1000, 100, 2000, 0.2, seed=3)
    assert min(ins) >= 800 and max(ins) <= 1200 and min(outs) >= 80 and max(outs) <= 120
    assert abs(sum(ins) / len(ins) - 1000) < 10 and len(set(ins)) > 100
    assert lengths(1000, 100, 2000, 0.2, seed=3) == (ins, outs)  # seeded
    assert lengths(1000, 100, 5, 0.0) == ([1000] * 5, [100] * 5)
    # the outputs alone spread (answers that end at the model's end-of-sequence token)
    ins, outs = lengths(1000, 100, 2000, 0.0, seed=3, output_range_ratio=0.5)
    assert ins == [1000] * 2000 and min(outs) == 50 and max(outs) == 150
    with pytest.raises(ValueError):
        closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=1, num_prompts=1,
                    max_num_batched_tokens=8192, max_num_seqs=256, output_range_ratio=1.0)
    with pytest.raises(ValueError):
        closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=1, num_prompts=1,
                    max_num_batched_tokens=8192, max_num_seqs=256, range_ratio=1.0)
    spread = closed_loop(ConstantCost(T), 100_000, isl=100, osl=50, concurrency=1,
                         num_prompts=200, max_num_batched_tokens=8192, max_num_seqs=256,
                         range_ratio=0.5, seed=1)
    assert spread.output_throughput_tok_s == pytest.approx(1 / T)  # one token per iteration


@pytest.mark.slow  # loads another system's or engine's measured database
def test_perf_serve_uses_the_engines_own_batching(cli):
    def serve(*args):
        result = cli("perf", "serve", "--isl", "1024", "--osl", "16", "--concurrency", "4",
                     "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    vllm_h100 = serve("--model", "llama-3.1-8b", "--gpu", "h100-sxm")
    assert (vllm_h100["max_num_batched_tokens"], vllm_h100["max_num_seqs"]) == (8192, 1024)
    assert vllm_h100["prefill_first"] is False
    vllm_a100 = serve("--model", "llama-3.1-8b", "--gpu", "a100-sxm-80gb")
    assert (vllm_a100["max_num_batched_tokens"], vllm_a100["max_num_seqs"]) == (2048, 256)
    sglang_b200 = serve("--model", "llama-3.1-8b", "--gpu", "b200", "--engine", "sglang")
    assert sglang_b200["max_num_batched_tokens"] == 16384 and sglang_b200["prefill_first"]
    assert sglang_b200["max_num_seqs"] is None
    given = serve("--model", "llama-3.1-8b", "--gpu", "b200", "--engine", "sglang",
                  "--max-num-batched-tokens", "4096", "--max-num-seqs", "64")
    assert (given["max_num_batched_tokens"], given["max_num_seqs"]) == (4096, 64)
    spread = serve("--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--random-range-ratio", "0.5")
    assert spread["random_range_ratio"] == 0.5
    assert spread["mean_ttft_ms"] != vllm_h100["mean_ttft_ms"]
    # the outputs alone spread: the requests no longer arrive wave by wave
    from planner_cli import perf_api
    from planner_cli.errors import InputError

    fixed = perf_api.perf_serve("llama-3.1-8b", "h100-sxm", 1024, 128, 16)
    eos = perf_api.perf_serve("llama-3.1-8b", "h100-sxm", 1024, 96, 16,
                              output_range_ratio=1 / 3)
    assert eos["random_range_ratio"] == 0.0 and eos["mean_ttft_ms"] < fixed["mean_ttft_ms"]
    with pytest.raises(InputError, match="output range ratio 1.0 is outside"):
        perf_api.perf_serve("llama-3.1-8b", "h100-sxm", 1024, 96, 16, output_range_ratio=1.0)


def test_engine_defaults_follow_the_engines_tables():
    from planner_cli.perf.engines import engine_defaults
    from planner_cli.specs.catalog import load_catalog

    gpu = load_catalog().gpu
    assert engine_defaults("sglang", gpu("h200")).max_num_batched_tokens == 8192
    assert engine_defaults("sglang", gpu("l4")).max_num_batched_tokens == 2048
    assert engine_defaults("sglang", gpu("b300")).max_num_batched_tokens == 16384
    assert engine_defaults("vllm", gpu("l40s")).max_num_batched_tokens == 2048
    assert engine_defaults("vllm", gpu("h200")).max_num_seqs == 1024


def test_a_sequences_fixed_state_takes_kv_room():
    # 4 clients, 100 + 10 tokens each: a 1000-token cache holds them all, but with 300 tokens
    # of state per running sequence (a hybrid model's) only two at once
    free = closed_loop(ConstantCost(T), 1000, isl=100, osl=10, concurrency=4, num_prompts=8,
                       max_num_batched_tokens=8192, max_num_seqs=256)
    held = closed_loop(ConstantCost(T), 1000, isl=100, osl=10, concurrency=4, num_prompts=8,
                       max_num_batched_tokens=8192, max_num_seqs=256, state_tokens=300)
    assert free.duration_s == pytest.approx(2 * 10 * T)
    assert held.duration_s == pytest.approx(4 * 10 * T)
    assert held.mean_ttft_ms > free.mean_ttft_ms and held.preemptions == 0
    with pytest.raises(ValueError):  # one request and its state exceed the cache
        closed_loop(ConstantCost(T), 1000, isl=100, osl=10, concurrency=1, num_prompts=1,
                    max_num_batched_tokens=8192, max_num_seqs=256, state_tokens=900)


def test_hybrid_model_memory_counts_its_states():
    from planner_cli.perf.memory import memory_figures
    from planner_cli.perf.shapes import ReplicaShape
    from planner_cli.specs.catalog import load_catalog

    catalog = load_catalog()
    shape = ReplicaShape(catalog.model("qwen3.5-397b-a17b"), catalog.gpu("b200"), 4, 1, "fp8")
    mem = memory_figures(shape, max_model_len=9216)
    # per GPU: 15 layers x 1 KV head (2 replicated over 4) x 256 x 2 (K, V) x 2 B per token;
    # 45 layers x (16 of 64 value heads' 128 x 128 fp32 states + a quarter of the
    # convolution states) per sequence
    assert mem.kv_bytes_per_token_per_gpu == 15 * 256 * 2 * 2
    state = 45 * (64 * 128 * 128 * 4 + 3 * 12288 * 2) / 4
    assert mem.state_tokens_per_sequence == -(-state // (15 * 256 * 2 * 2))
    assert mem.fits


def test_the_frontend_adds_to_what_clients_see_not_to_the_engines_schedule():
    from planner_cli.perf.engines import FRONTEND_S
    from planner_cli.sim.cascade import StageConfig, simulate_stage

    base = closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=2, num_prompts=6,
                       max_num_batched_tokens=8192, max_num_seqs=256)
    seen = closed_loop(ConstantCost(T), 10_000, isl=100, osl=5, concurrency=2, num_prompts=6,
                       max_num_batched_tokens=8192, max_num_seqs=256, frontend_s=0.05)
    assert seen.mean_ttft_ms == pytest.approx(base.mean_ttft_ms + 50)
    assert seen.mean_e2el_ms == pytest.approx(base.mean_e2el_ms + 50)
    assert (seen.mean_tpot_ms, seen.duration_s) == (base.mean_tpot_ms, base.duration_s)
    one = np.zeros(1, dtype=np.int64)
    res = simulate_stage(StageConfig("s", ConstantCost(T), 1, 10_000, frontend_s=0.05), one,
                         np.zeros(1), np.full(1, 100), np.full(1, 5), 1)
    assert res.first_token[0] == pytest.approx(T + 0.05)
    assert res.finish[0] == pytest.approx(5 * T + 0.05)
    assert FRONTEND_S["vllm"] >= 0 and FRONTEND_S["sglang"] >= 0


def test_an_output_lag_shifts_what_clients_see_by_their_own_time_per_token():
    from planner_cli.perf.engines import OUTPUT_LAG
    from planner_cli.sim.cascade import StageConfig, simulate_stage

    args = dict(isl=100, osl=5, concurrency=2, num_prompts=6, max_num_batched_tokens=8192,
                max_num_seqs=256)
    base = closed_loop(ConstantCost(T), 10_000, **args)
    seen = closed_loop(ConstantCost(T), 10_000, output_lag=16, **args)
    # every request's time per output token here is T: its first token and its end are seen
    # 16 T later, its TPOT and the engine's schedule are the same
    assert seen.mean_ttft_ms == pytest.approx(base.mean_ttft_ms + 16 * T * 1e3)
    assert seen.mean_e2el_ms == pytest.approx(base.mean_e2el_ms + 16 * T * 1e3)
    assert (seen.mean_tpot_ms, seen.duration_s) == (base.mean_tpot_ms, base.duration_s)
    one = np.zeros(1, dtype=np.int64)
    res = simulate_stage(StageConfig("s", ConstantCost(T), 1, 10_000, frontend_s=0.05,
                                     output_lag=16), one, np.zeros(1), np.full(1, 100),
                         np.full(1, 5), 1)
    assert res.first_token[0] == pytest.approx(T + 0.05 + 16 * T)
    assert res.finish[0] == pytest.approx(5 * T + 0.05 + 16 * T)
    single = simulate_stage(StageConfig("s", ConstantCost(T), 1, 10_000, output_lag=16), one,
                            np.zeros(1), np.full(1, 100), np.full(1, 1), 1)
    assert single.first_token[0] == pytest.approx(T)  # one token: no time per token to lag
    # a request the cache can never hold is not given a lag (it stays never answered)
    rejected = simulate_stage(StageConfig("s", ConstantCost(T), 1, 50, output_lag=16), one,
                              np.zeros(1), np.full(1, 100), np.full(1, 5), 1)
    assert np.isinf(rejected.first_token[0]) and np.isinf(rejected.finish[0])
    assert OUTPUT_LAG["vllm"] == 0 < OUTPUT_LAG["sglang"]


def test_an_fp8_kv_cache_holds_twice_the_tokens(cli):
    def serve(*args):
        result = cli("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl",
                     "1024", "--osl", "64", "--concurrency", "8", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    bf16, fp8 = serve(), serve("--kv-cache-dtype", "fp8")
    assert fp8["kv_cache_dtype"] == "fp8" and bf16["kv_cache_dtype"] == "bf16"
    assert 1.99 < fp8["kv_capacity_tokens"] / bf16["kv_capacity_tokens"] < 2.01
    assert fp8["source"].startswith("measured:h100_sxm/vllm/")
    per_token = json.loads(cli("perf", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--batch",
                               "1", "--kv-cache-dtype", "fp8", "--json").stdout)
    assert per_token["memory"]["kv_bytes_per_token_per_gpu"] == 65_536
    assert_one_line_error(cli("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm",
                              "--isl", "8", "--osl", "8", "--concurrency", "1",
                              "--kv-cache-dtype", "int8"), "KV-cache dtype 'int8' is not known")


def _sglang_replica(recv_interval: int) -> Replica:
    return Replica(ConstantCost(T), 100_000, max_num_batched_tokens=100, max_num_seqs=10**9,
                   prefill_first=True, recv_interval=recv_interval)


@pytest.mark.parametrize("interval,first_token", [(1, 5 * T), (10, 12 * T)])
def test_sglang_takes_requests_in_every_recv_interval_decodes(interval, first_token):
    # A is prefilled in iteration 1 and decodes from then on; B is sent during A's third
    # decode. Every iteration takes T. With --scheduler-recv-interval 10 the scheduler looks
    # for B only after A's tenth decode (iteration 11), then prefills it (iteration 12).
    rep = _sglang_replica(interval)
    a, b = Req(0, 0.0, 100, 50), Req(1, 3.5 * T, 100, 5)
    rep.submit(a)
    rep.advance_until(b.arrival)
    rep.submit(b)
    assert (len(rep.inbox), rep.outstanding) == ((1, 2) if interval > 1 else (0, 2))
    while rep.step():
        pass
    assert b.first_token == pytest.approx(first_token)
    assert a.finish < math.inf and b.finish < math.inf and not rep.inbox


def test_sglang_takes_requests_in_at_once_after_a_prefill_batch_or_when_idle():
    rep = _sglang_replica(30)
    first = Req(0, 0.0, 300, 5)  # three prefill batches of 100 tokens
    rep.submit(first)  # idle: taken in at once
    assert list(rep.waiting) == [first]
    rep.advance_until(0.5 * T)  # the first prefill batch
    late = Req(1, 0.5 * T, 100, 5)
    rep.submit(late)
    assert list(rep.inbox) == [late]
    rep.advance_until(1.5 * T)  # the second prefill batch ends: the scheduler looks again
    assert not rep.inbox and late in rep.waiting


def test_a_recv_interval_loses_no_request_and_slows_first_tokens():
    runs = [closed_loop(ConstantCost(T), 100_000, isl=300, osl=40, concurrency=16,
                        num_prompts=160, max_num_batched_tokens=1024, max_num_seqs=10**9,
                        prefill_first=True, range_ratio=0.5, recv_interval=k)
            for k in (1, 30)]
    assert all(f.num_prompts == 160 for f in runs)
    assert runs[1].mean_ttft_ms > runs[0].mean_ttft_ms
    with pytest.raises(ValueError, match="recv_interval"):
        Replica(ConstantCost(T), 1000, recv_interval=0)


def test_perf_serve_takes_sglangs_recv_interval_and_refuses_it_for_vllm(cli):
    args = ("perf", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl", "2048",
            "--osl", "32", "--concurrency", "16", "--num-prompts", "48",
            "--random-range-ratio", "0.5", "--json")
    plain, slow = (json.loads(cli(*args, "--engine", "sglang", "--scheduler-recv-interval",
                                  str(k)).stdout) for k in (1, 30))
    assert (plain["scheduler_recv_interval"], slow["scheduler_recv_interval"]) == (1, 30)
    assert slow["mean_ttft_ms"] > plain["mean_ttft_ms"]
    assert_one_line_error(cli(*args, "--scheduler-recv-interval", "30"), "an SGLang flag")
    assert_one_line_error(cli(*args, "--engine", "sglang", "--scheduler-recv-interval", "0"),
                          "is below 1")


def test_the_benchmarks_inferencex_lengths_and_launch_flags(monkeypatch):
    """benchmarks/serving_recipes.py replays InferenceX runs, whose client draws lengths from
    [0.8·L, L]: perf serve's sampler, given the centre and ratio it returns, covers the same
    integers (its top one at most one short); and each run gets the flags of its GPU's own
    launch script, its cap on running requests at least the run's concurrency."""
    import importlib.util
    import sys

    from planner_cli.sim.closed_loop import lengths
    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "serving_recipes", ROOT / "benchmarks" / "serving_recipes.py")
    recipes = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "serving_recipes", recipes)
    spec.loader.exec_module(recipes)
    for length in (128, 1024, 2048, 8192):
        centre, ratio = recipes.lengths(length)
        drawn, _ = lengths(centre, 1, 20_000, ratio, seed=1)
        assert min(drawn) == int(0.8 * length) and max(drawn) in (length - 1, length)
    assert recipes.inferencex("db-dump/2026-04-27; config_id=733; silicon_concurrency=256")
    gap = ("source_file=/x/aic-auto-gap-analysis/data/h100_sxm/vllm/0.12.0/Qwen_Qwen3-32B.csv; "
           "silicon_concurrency=64")
    assert not recipes.inferencex(gap)
    # vllm bench serve keeps end-of-sequence tokens unless told not to, sglang.bench_serving
    # ignores them: only the gap analysis's vLLM runs had outputs shorter than OSL
    assert recipes.eos_outputs("vllm", gap) and not recipes.eos_outputs("sglang", gap)
    assert not recipes.eos_outputs("vllm", "db-dump/2026-04-27; silicon_concurrency=256")
    centre, ratio = recipes.eos_lengths(1024)
    _, drawn = lengths(1, centre, 20_000, 0.0, seed=1, output_range_ratio=ratio)
    assert min(drawn) == int(recipes.EOS_OUTPUT_LOW * 1024) and max(drawn) in (1023, 1024)
    sglang = recipes.recipe("sglang", "qwen3.5-397b-a17b", "fp8", "b200", 4, 8192, 1024, 64)
    assert (sglang.scheduler_recv_interval, sglang.kv_cache_dtype) == (30, "fp8")
    # InferenceX's H200 scripts are their own: no recv interval, the model's KV cache
    h200 = recipes.recipe("sglang", "deepseek-r1", "fp8", "h200", 8, 1024, 1024, 64)
    assert (h200.scheduler_recv_interval, h200.kv_cache_dtype, h200.max_num_seqs) == (
        1, "bf16", 512)
    assert recipes.recipe("vllm", "gpt-oss-120b", "fp4", "h200", 1, 1024, 1024, 8) == \
        recipes.recipe("vllm", "gpt-oss-120b", "fp4", "h100-sxm", 1, 1024, 1024, 8)
    # a script's cap on running requests is its sweep's maximum concurrency: a run above the
    # cap of the version read was launched with a cap that reached its concurrency
    dsr1 = [recipes.recipe("sglang", "deepseek-r1", "fp8", "b200", 8, 1024, 8192, c).max_num_seqs
            for c in (64, 128, 256)]
    assert dsr1 == [128, 128, 256]
    assert recipes.recipe("sglang", "glm-5", "fp4", "b200", 8, 1024, 1024, 64).max_num_seqs is None
    # how many GPUs a row's run used: InferenceX's database dumps record --tp N --ep M as
    # tp_size N·M (moe N x M), its dated files as tp_size N (moe 1 x M); ids may name N and M
    nan = float("nan")

    def row(ident: str, source: str, tp: int, dp: float, moe_tp: int, moe_ep: float) -> dict:
        return {"id": ident, "silicon_data_source": source, "tp_size": tp,
                "attention_dp_size": dp, "moe_tp_size": moe_tp, "moe_ep_size": moe_ep}

    dump = "db-dump/2026-04-27; config_id=199; silicon_concurrency=8"
    assert recipes.parallelism(row("dsr1_b200_sglang_fp8_cfg199", dump, 64, 1, 8, 8)) == (8, 8, 1)
    assert recipes.parallelism(row("qwen3_5_b300_cfg736", dump, 4, 1, 2, 2)) == (2, 2, 1)
    assert recipes.parallelism(row("dsr1_b200_sglang_fp4_cfg88", dump, 4, 1, 4, 1)) == (4, 1, 1)
    dated = "source_file=2026-03-25.csv; silicon_concurrency=64"
    assert recipes.parallelism(row("x_tp8_0_ep8_0_271", dated, 8, 1, 1, 8)) == (8, 8, 1)
    assert recipes.parallelism(row("x_c4_tp4_ep4_1037", dated, 16, 1, 4, 4)) == (4, 4, 1)
    gap = "source_file=/x/aic-auto-gap-analysis/data/h100_sxm/vllm/0.12.0/Q.csv"
    assert recipes.parallelism(row("q_c8_tp2_epnone_1", gap, 2, nan, 1, 1)) == (2, 1, 1)
    # attention DP d: tp_size GPUs as d ranks, every size recorded d times over (ids that name
    # the launch: --tp 4 --ep 4 is tp_size 4, DP 4, moe_ep 16; --tp 2 --ep 2 is 2, 2, 4)
    assert recipes.parallelism(row("k_c8_tp4_ep4_1296", dated, 4, 4, 1, 16)) == (1, 4, 4)
    assert recipes.parallelism(row("m_c32_tp2_ep2_1384", dated, 2, 2, 1, 4)) == (1, 2, 2)
    assert recipes.parallelism(row("mm_b200_vllm_cfg703", dump, 4, 4, 1, 16)) == (1, 4, 4)
    with pytest.raises(ValueError, match="attention DP 4 does not divide"):
        recipes.parallelism(row("odd", dump, 2, 4, 1, 8))
    # a row that records no attention DP but carries an attention-DP run's lengths and figures
    # (to the rounding) is that run
    def run(ident: str, dp: int, ttft: float, tpot: float, isl: int = 1024) -> dict:
        return {"id": ident, "attention_dp_size": dp, "isl": isl, "osl": 1024,
                "silicon_ttft_ms": ttft, "silicon_tpot_ms": tpot}

    assert recipes.attention_dp_copies([
        run("ix_dp4", 4, 179.803089, 10.499341), run("gap_copy", 1, 179.80, 10.50),
        run("other_lengths", 1, 179.80, 10.50, isl=8192), run("other_run", 1, 176.80, 8.42),
        run("dp_twin", 4, 179.80, 10.50)]) == {"gap_copy"}
