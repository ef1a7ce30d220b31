"""Readers that survive hostile input: deep nesting, huge integers, byte-order marks, blank
first lines and YAML tags each give one line naming the file (and line), never a traceback;
arbitrary bytes and mutations of valid files give a result or that one line."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner_cli import api
from planner_cli.errors import PlannerError
from planner_cli.specs._yaml import MAX_DEPTH, load_yaml_model
from planner_cli.specs.cascade import CascadeSpec
from planner_cli.specs.cluster import ClusterSpec
from tests.conftest import ROOT
from tests.util import assert_one_line_error

GOOD = ('{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
        '{"timestamp": 1000, "input_length": 12, "output_length": 6}\n')
CLUSTER = (ROOT / "examples" / "cluster-4x8-h100.yaml").read_text()


@pytest.mark.parametrize("text,says", [
    ("[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "x": '
     + "[" * 5000 + "]" * 5000 + "}\n", "nested too deeply"),
    ('{"timestamp": 0, "input_length": ' + "9" * 30 + ', "output_length": 5}\n',
     "beyond any model's context"),
    ('{"timestamp": 0, "input_length": ' + "9" * 5000 + ', "output_length": 5}\n',
     "not valid JSON"),
    ('{"timestamp": 1e308, "input_length": 10, "output_length": 5}\n', "not a time in ms"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": ['
     + "9" * 25 + "]}\n", "64-bit integers"),
])
def test_hostile_trace_lines_are_one_line(cli, tmp_path, text, says):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    assert_one_line_error(cli("trace", "stats", path), says)


@pytest.mark.parametrize("prefix", ["\ufeff", "\n", "  \n\n"])
def test_a_byte_order_mark_or_blank_first_lines_are_tolerated(tmp_path, prefix):
    path = tmp_path / "t.jsonl"
    path.write_text(prefix + GOOD, encoding="utf-8")
    assert len(api.load_trace(path)) == 2
    csv = tmp_path / "azure.csv"
    csv.write_text(prefix + "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
                   encoding="utf-8")
    assert len(api.load_trace(csv)) == 2


@pytest.mark.parametrize("value,says", [
    ("!!python/object:os.system 1", "not allowed"),
    ("!!timestamp 2020-01-01", "not allowed"),
    ("!!timestamp xyz", "not allowed"),
    ("!custom 1", "not allowed"),
    ("!!binary aGk=", "not allowed"),
    ("9" * 5000, "too large"),
    ("[" * 1100 + "]" * 1100, "nested"),
    ("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2), "nested more than"),
], ids=["python-tag", "timestamp", "bad-timestamp", "custom-tag", "binary", "5000-digits",
        "past-recursion", "past-max-depth"])
def test_hostile_yaml_values_are_one_line(cli, tmp_path, value, says):
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER.replace("schema_version: 1", f"schema_version: {value}"))
    assert_one_line_error(cli("check", "--cluster", path), says)


def test_a_date_is_a_string_and_aliases_cannot_explode(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("\ufeff" + CLUSTER.replace("name: h100-4x8", "name: 2020-01-01"))
    assert load_yaml_model(path, ClusterSpec).name == "2020-01-01"
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    path.write_text(laughs)
    with pytest.raises(PlannerError, match="more than"):
        load_yaml_model(path, ClusterSpec)


# ---------------------------------------------------------------- properties

def _outcome(fn, path) -> None:
    """A reader either returns or raises a PlannerError naming the file on one line."""
    try:
        fn(path)
    except PlannerError as exc:
        line = exc.one_line()
        assert "\n" not in line and str(path.name) in line, line


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_as_a_trace_or_a_cluster(tmp_path, data):
    for name, fn in (("t.jsonl", api.load_trace), ("t.csv", api.load_trace),
                     ("c.yaml", lambda p: load_yaml_model(p, ClusterSpec))):
        path = tmp_path / name
        path.write_bytes(data)
        _outcome(fn, path)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10**6), st.sampled_from(["9" * 40, "-1", "1e400", "null", "[[[]]]", '"x"',
                                               "{}", "1.5", "true", "\ufeff"]))
def test_mutated_trace_lines(tmp_path, seed, junk):
    lines = [json.loads(x) for x in GOOD.splitlines()]
    text = GOOD.splitlines()
    key = ["timestamp", "input_length", "output_length"][seed % 3]
    row = seed % 2
    text[row] = json.dumps(lines[row]).replace(f'"{key}": {lines[row][key]}', f'"{key}": {junk}')
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(text) + "\n")
    _outcome(api.load_trace, path)


AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize("rows,says", [
    ("2023-11-16 18:15:46,374,44\n2023-11-16T13:15:50Z,396,109\n", "mixes times with and"),
    ("now,374,44\n", "is not a date-time"),
    ("2023-11-16 18:15:46,inf,44\n", "is not a whole token count"),
    ("2023-11-16 18:15:46," + "9" * 40 + ",44\n", "is not a whole token count"),
    ("\n2023-11-16 18:15:46,374\n", "is not a whole token count"),
])
def test_hostile_azure_rows_are_one_line(cli, tmp_path, rows, says):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE + rows)
    assert_one_line_error(cli("trace", "stats", path), says)


def test_zoned_azure_times_are_compared_in_utc(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE + "2023-11-16T18:15:46+05:00,374,44\n2023-11-16T13:15:50Z,396,109\n")
    trace = api.load_trace(path)
    assert list(trace.timestamps_ms) == [0.0, 4000.0]


JUDGED = "# score_scale: 1-10\nrequest_id,model,score,output_tokens\n"


@pytest.mark.parametrize("text,says", [
    ("# score_scale: 10-1\nrequest_id,model,score\na,m,5\n", "j.csv:1: score_scale"),
    (JUDGED + "a,m,5," + "9" * 5000 + "\n", "not a whole number"),
    (JUDGED + "a,m,5,\"" + "x" * 140_000 + "\"\n", "unreadable CSV row"),
])
def test_hostile_judged_samples_are_one_line(cli, tmp_path, text, says):
    path = tmp_path / "j.csv"
    path.write_text(text)
    assert_one_line_error(cli("check", "--quality", path), says)


# ---------------------------------------------------------------- every reader, through the CLI

FIX = ROOT / "tests" / "fixtures"
# (a valid file of each kind, its name, the command that reads it)
READERS = {
    "canonical": ((ROOT / "examples" / "azure-conv-10min.jsonl"), "t.jsonl", ["trace", "stats"]),
    "mooncake": (FIX / "mooncake_first100.jsonl", "m.jsonl", ["trace", "stats"]),
    "azure": (FIX / "azure_conv_2023.csv", "a.csv", ["trace", "stats"]),
    "lengths": (FIX / "sharegpt_lengths_first200.csv", "l.csv",
                ["trace", "synth", "--rate", "2", "--duration-s", "5", "--out", "{out}",
                 "--lengths"]),
    "judged": (ROOT / "examples" / "arena-open-models-judged.csv", "j.csv",
               ["check", "--quality"]),
    "cluster": (ROOT / "examples" / "cluster-4x8-h100.yaml", "c.yaml", ["check", "--cluster"]),
    "cascade": (ROOT / "examples" / "cascade-arena-open.yaml", "k.yaml", ["check", "--cascade"]),
    "plan": (FIX / "plans" / "single-node.yaml", "p.yaml",
             ["export", "--format", "vllm", "--out", "{out}", "--plan"]),
}
HEAD = {name: path.read_text().splitlines(keepends=True)[:12]
        for name, (path, _, _) in READERS.items()}
JUNK = ["9" * 30, "9" * 5000, "-1", "1e400", "nan", "null", "[[[[", "]]", "{", "\ufeff", "\x00",
        "!!python/object:x", "!!timestamp 2020-01-01", "&a [*a]", "0x" + "f" * 30, "  ", "\t",
        ":", "-", "'", '"', "\\", "2023-13-45 25:61:61", "2023-11-16T18:15:46+05:00", ".inf",
        "~", "*x", "x" * 140_000, "# score_scale: 10-1"]


def _cli_outcome(cli, tmp_path, reader: str, data: bytes) -> None:
    """Exit 0 with a result, or exit 2 with exactly one `error:` line naming the file."""
    _, name, command = READERS[reader]
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / f"out-{reader}"
    if out.is_dir():  # hypothesis reuses the folder: each example writes afresh
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)
    args = [a.replace("{out}", str(out)) for a in command] + [path]
    result = cli(*args)
    if result.exit_code == 0:
        return
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (reader, data[:200], result.stderr[-2000:])
    assert lines[0].startswith("error: ") and name in lines[0], (reader, lines[0])
    assert "Traceback" not in result.stderr
    assert not out.exists(), "a failed command left output behind"


@st.composite
def mutated(draw, reader: str) -> bytes:
    lines = list(HEAD[reader])
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        op = draw(st.sampled_from(["replace", "insert", "delete", "bytes"]))
        if op == "replace" and len(line) > 1:
            j = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:j] + draw(st.sampled_from(JUNK)) + line[j + draw(st.integers(1, 8)):]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(JUNK)) + "\n")
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        else:
            lines[i] = draw(st.binary(max_size=20)).decode("latin-1")
    return "".join(lines).encode("utf-8", "surrogatepass")


def _property(examples: int):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.mark.parametrize("reader", list(READERS))
@_property(4)
@given(data=st.data())
def test_every_reader_through_the_cli(cli, tmp_path, reader, data):
    blob = data.draw(st.one_of(mutated(reader), st.binary(max_size=300)))
    _cli_outcome(cli, tmp_path, reader, blob)


@pytest.mark.fuzz
@pytest.mark.parametrize("reader", list(READERS))
@_property(int(os.environ.get("CASCADIA_FUZZ_EXAMPLES", "1500")))
@given(data=st.data())
def test_every_reader_through_the_cli_at_length(cli, tmp_path, reader, data):
    blob = data.draw(st.one_of(mutated(reader), st.binary(max_size=2000)))
    _cli_outcome(cli, tmp_path, reader, blob)


@pytest.mark.parametrize("judger,says", [
    # a key of the other judger kind: named where it is, with the kind it goes with
    ("kind: model\n  model: llama-3.1-8b\n  latency_s: 0.5",
     "unknown key 'judger.latency_s' (= 0.5) — 'latency_s' goes with kind: external"),
    ("kind: external\n  latency_s: 0.5\n  model: llama-3.1-8b",
     "unknown key 'judger.model' (= 'llama-3.1-8b') — 'model' goes with kind: model"),
    ("kind: model\n  modle: llama-3.1-8b", "unknown key 'judger.modle' (= 'llama-3.1-8b') — "
     "did you mean 'model'?"),
    ("kind: model\n  model: x\n  latency_ms: 1",
     "unknown key 'judger.latency_ms' (= 1) — allowed keys: kind, model, output_tokens, "
     "precision"),
    ("kind: model", "missing key 'judger.model'"),
])
def test_a_misplaced_judger_key_is_named_where_it_is(tmp_path, judger, says):
    path = tmp_path / "cascade.yaml"
    path.write_text("schema_version: 1\nmodels:\n  - model: llama-3.1-8b\njudger:\n  "
                    + judger + "\n")
    with pytest.raises(PlannerError) as err:
        load_yaml_model(path, CascadeSpec)
    assert says in err.value.one_line()
