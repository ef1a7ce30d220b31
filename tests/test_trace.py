"""Traces: canonical JSONL, importers, stats, convert, synth, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_cli import io
from planner_cli.errors import InputError
from planner_cli.workload.stats import trace_stats
from planner_cli.workload.synth import synth_arrivals_ms
from planner_cli.workload.trace import Trace, canonical_lines, parse_canonical
from tests.conftest import FIXTURES
from tests.util import assert_one_line_error

AZURE = FIXTURES / "azure_conv_2023.csv"


def lines(*records) -> list[str]:
    return [json.dumps(r) + "\n" for r in records]


def test_parse_canonical_with_cascadia_fields():
    trace = parse_canonical(lines(
        {"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 12.5, "input_length": 20, "output_length": 7,
         "cascadia": {"request_id": "b", "scores": {"m1": 80.0},
                      "output_lengths": {"m1": 9}}},
    ), "t.jsonl")
    assert len(trace) == 2
    assert trace.timestamps_ms.tolist() == [0, 12.5]
    assert trace.input_lengths.tolist() == [10, 20]
    assert trace.hash_ids(0) == [1, 2] and trace.hash_ids(1) == []
    assert trace.request_ids == (None, "b")
    assert np.isnan(trace.scores["m1"][0]) and trace.scores["m1"][1] == 80.0
    assert trace.model_output_lengths["m1"].tolist() == [-1, 9]


def test_canonical_round_trip_is_byte_identical():
    src = (FIXTURES / "mooncake_first100.jsonl").read_text().splitlines(keepends=True)
    trace = parse_canonical(src, "mooncake")
    out = "".join(canonical_lines(trace))
    again = "".join(canonical_lines(parse_canonical(out.splitlines(keepends=True))))
    assert out == again
    assert [json.loads(a) for a in src] == [json.loads(b) for b in out.splitlines()]


@pytest.mark.parametrize("bad,needle", [
    ('{"timestamp": 0, "input_length": 3, "output_length": 2', ":2:"),
    ('{"timestamp": 0, "input_length": -3, "output_length": 2}', "input_length"),
    ('{"timestamp": 0, "input_length": 3.5, "output_length": 2}', "input_length"),
    ('{"timestamp": 0, "input_length": 3, "output_length": "2"}', "output_length"),
    ('{"timestamp": 0, "input_length": 3, "output_length": true}', "output_length"),
    ('{"timestamp": 0, "input_length": 3}', "'output_length' missing"),
    ('[1, 2]', "not a JSON object"),
    ('{"timestamp": -1, "input_length": 3, "output_length": 2}', "timestamp"),
    ('{"timestamp": 0, "input_length": 3, "output_length": 2, "cascadia": {"scroes": {}}}',
     "cascadia.scroes"),
    ('{"timestamp": 0, "input_length": 3, "output_length": 2, "cascadia": '
     '{"scores": {"m": 140}}}', "0-100"),
])
def test_bad_line_names_line_and_key(bad, needle):
    good = '{"timestamp": 0, "input_length": 3, "output_length": 2}\n'
    with pytest.raises(InputError) as info:
        parse_canonical([good, bad + "\n"], "t.jsonl")
    assert "t.jsonl:2:" in info.value.one_line()
    assert needle in info.value.one_line()


def test_non_monotone_and_empty():
    with pytest.raises(InputError, match="t.jsonl:2: .*earlier"):
        parse_canonical(lines({"timestamp": 5, "input_length": 1, "output_length": 1},
                              {"timestamp": 4, "input_length": 1, "output_length": 1}),
                        "t.jsonl")
    with pytest.raises(InputError, match="no requests"):
        parse_canonical(["\n", "  \n"], "t.jsonl")


def test_azure_conv_trace_stats():
    stats = trace_stats(io.read_trace(AZURE))
    assert stats.requests == 19_366
    assert 57.5 < stats.duration_s / 60 < 59  # "about 58 minutes"
    assert stats.mean_rate_per_s == pytest.approx(19_366 / stats.duration_s)
    assert stats.input_tokens.p50 <= stats.input_tokens.p90 <= stats.input_tokens.p99


def test_stats_hand_computed():
    trace = Trace(timestamps_ms=np.array([0.0, 1000.0, 3000.0, 6000.0]),
                  input_lengths=np.array([10, 20, 30, 40]),
                  output_lengths=np.array([1, 1, 1, 5]))
    s = trace_stats(trace)
    assert s.duration_s == 6.0 and s.mean_rate_per_s == pytest.approx(4 / 6)
    gaps = np.array([1.0, 2.0, 3.0])
    assert s.interarrival_cv == pytest.approx(gaps.std() / gaps.mean())
    assert s.input_tokens.mean == 25 and s.input_tokens.p50 == 25
    assert s.output_tokens.max == 5


def test_format_detection_and_importers(tmp_path):
    assert io.sniff_format(AZURE) == "azure"
    assert io.sniff_format(FIXTURES / "mooncake_first100.jsonl") == "canonical"
    assert io.sniff_format(FIXTURES / "sharegpt_lengths_first200.csv") == "lengths"
    inp, out = io.read_lengths(FIXTURES / "sharegpt_lengths_first200.csv")
    assert inp.shape == out.shape == (200,)
    with pytest.raises(InputError, match="no arrival times"):
        io.read_trace(FIXTURES / "sharegpt_lengths_first200.csv")
    trace = io.read_trace(FIXTURES / "sharegpt_lengths_first200.csv", rate_per_s=2.0, seed=3)
    assert len(trace) == 200 and trace.input_lengths.tolist() != []
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="cannot tell the trace format"):
        io.read_trace(odd)


def test_azure_bad_rows(tmp_path):
    bad = tmp_path / "az.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,-3,10\n")
    with pytest.raises(InputError, match=r"az.csv:3: column 'ContextTokens'"):
        io.read_trace(bad)
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:45.00,3,10\n")
    with pytest.raises(InputError, match=r"az.csv:3: TIMESTAMP goes back"):
        io.read_trace(bad)


def test_synth_is_seeded_and_has_the_asked_rate_and_cv():
    a = synth_arrivals_ms(10.0, num_requests=20_000, seed=7)
    b = synth_arrivals_ms(10.0, num_requests=20_000, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synth_arrivals_ms(10.0, num_requests=20_000, seed=8))
    gaps = np.diff(a) / 1000
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    g = np.diff(synth_arrivals_ms(10.0, arrival="gamma", cv=3.0, num_requests=40_000,
                                  seed=1)) / 1000
    assert g.mean() == pytest.approx(0.1, rel=0.08)
    assert g.std() / g.mean() == pytest.approx(3.0, rel=0.1)
    d = synth_arrivals_ms(5.0, duration_s=60.0, seed=2)
    assert d[0] == 0 and d[-1] <= 60_000 and 200 < d.size < 400


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e4, allow_nan=False), st.integers(1, 10**6),
                          st.integers(1, 10**5)), min_size=1, max_size=30))
def test_round_trip_property(rows):
    rows = sorted(rows)
    trace = Trace(timestamps_ms=np.array([round(r[0], 3) for r in rows]),
                  input_lengths=np.array([r[1] for r in rows]),
                  output_lengths=np.array([r[2] for r in rows]))
    text = list(canonical_lines(trace))
    back = parse_canonical(text)
    assert np.array_equal(back.input_lengths, trace.input_lengths)
    assert np.allclose(back.timestamps_ms, trace.timestamps_ms, atol=1e-3)


# ---------------------------------------------------------------- through the CLI

def test_cli_stats_json(cli):
    result = cli("trace", "stats", AZURE, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 19_366
    assert 57.5 < data["duration_s"] / 60 < 59
    assert set(data["input_tokens"]) == {"mean", "p50", "p90", "p99", "max"}


def test_cli_convert_then_stats_match(cli, tmp_path):
    out = tmp_path / "azure.jsonl"
    result = cli("trace", "convert", AZURE, "--out", out)
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"timestamp": 0, "input_length": 374, "output_length": 44}
    a = json.loads(cli("trace", "stats", AZURE, "--json").stdout)
    b = json.loads(cli("trace", "stats", out, "--json").stdout)
    assert a["requests"] == b["requests"]
    assert a["duration_s"] == pytest.approx(b["duration_s"], abs=1e-3)
    assert_one_line_error(cli("trace", "convert", AZURE, "--out", out), "already exists")
    assert cli("trace", "convert", AZURE, "--out", out, "--force").exit_code == 0


def test_cli_synth_reproducible(cli, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ("trace", "synth", "--rate", "4", "--num-requests", "500", "--arrival", "gamma",
            "--cv", "2", "--lengths", AZURE, "--seed", "11")
    assert cli(*args, "--out", a).exit_code == 0
    assert cli(*args, "--out", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_text().splitlines()) == 500


@pytest.mark.parametrize("content,needle", [
    ('{"timestamp": 0, "input_length": 3, "output_length": 2}\n{"timestamp": 1,', "bad.jsonl:2"),
    ('{"timestamp": 0, "input_length": -3, "output_length": 2}\n', "input_length"),
    ('{"timestamp": 0, "input_length": 3, "output_length": 2.5}\n', "output_length"),
    ('{"timestamp": 9, "input_length": 3, "output_length": 2}\n'
     '{"timestamp": 1, "input_length": 3, "output_length": 2}\n', "earlier"),
    ("", "empty"),
])
def test_cli_bad_trace_is_one_line_and_writes_nothing(cli, tmp_path, content, needle):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    assert_one_line_error(cli("trace", "stats", src), needle)
    assert_one_line_error(cli("trace", "convert", src, "--out", out), needle)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_cli_missing_file_and_bad_options(cli, tmp_path):
    assert_one_line_error(cli("trace", "stats", tmp_path / "none.jsonl"), "no such file")
    assert_one_line_error(cli("trace", "stats", AZURE, "--format", "parquet"), "parquet")
    assert_one_line_error(cli("trace", "synth", "--out", tmp_path / "x.jsonl", "--rate", "0",
                              "--num-requests", "5", "--lengths", AZURE), "rate")
    assert not (tmp_path / "x.jsonl").exists()
