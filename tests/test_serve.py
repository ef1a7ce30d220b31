"""`perf serve`: closed-loop clients against one replica, as `vllm bench serve` reports them."""

from __future__ import annotations

import json

import pytest

from planner_cli.sim.closed_loop import closed_loop
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
