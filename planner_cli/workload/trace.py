"""Traces: arrivals and lengths of requests, in the canonical (Mooncake-compatible) JSONL form.

One request a line: {"timestamp": ms, "input_length": tokens, "output_length": tokens,
"hash_ids": [...] (optional), "cascadia": {"request_id", "scores": {model: 0-100},
"quality": {model: 0-100}, "output_lengths": {model: tokens}} (optional)}.

Parsing works on an iterable of lines; opening files is the caller's business (planner_cli.io).
"""

from __future__ import annotations

import dataclasses
import json
import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from planner_cli.errors import InputError

_CASCADIA_KEYS = ("request_id", "scores", "quality", "output_lengths")


@dataclass(frozen=True)
class Trace:
    """A request trace as columns; row r is the r-th request in arrival order."""

    timestamps_ms: np.ndarray  # float64, non-decreasing
    input_lengths: np.ndarray  # int64 >= 1
    output_lengths: np.ndarray  # int64 >= 1
    source: str = "<memory>"
    hash_offsets: np.ndarray | None = None  # int64, len n+1: hash ids of row r are
    hash_values: np.ndarray | None = None  # hash_values[hash_offsets[r]:hash_offsets[r+1]]
    request_ids: tuple[str | None, ...] | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # model -> 0-100, NaN: none
    quality: dict[str, np.ndarray] = field(default_factory=dict)  # model -> 0-100, NaN: none
    model_output_lengths: dict[str, np.ndarray] = field(default_factory=dict)  # -1: none

    def __len__(self) -> int:
        return int(self.timestamps_ms.shape[0])

    @property
    def duration_s(self) -> float:
        if len(self) < 2:
            return 0.0
        return float(self.timestamps_ms[-1] - self.timestamps_ms[0]) / 1000.0

    def head(self, n: int) -> Trace:
        """The first n requests."""
        if n >= len(self):
            return self
        return dataclasses.replace(
            self, timestamps_ms=self.timestamps_ms[:n], input_lengths=self.input_lengths[:n],
            output_lengths=self.output_lengths[:n],
            hash_offsets=None if self.hash_offsets is None else self.hash_offsets[:n + 1],
            request_ids=None if self.request_ids is None else self.request_ids[:n],
            scores={k: v[:n] for k, v in self.scores.items()},
            quality={k: v[:n] for k, v in self.quality.items()},
            model_output_lengths={k: v[:n] for k, v in self.model_output_lengths.items()})

    def hash_ids(self, row: int) -> list[int] | None:
        if self.hash_offsets is None or self.hash_values is None:
            return None
        lo, hi = self.hash_offsets[row], self.hash_offsets[row + 1]
        return [int(x) for x in self.hash_values[lo:hi]]


def scaled(trace: Trace, rate_scale: float) -> Trace:
    """The trace with its arrivals `rate_scale` times faster (the same pattern, compressed
    towards the first arrival)."""
    t0 = trace.timestamps_ms[0] if len(trace) else 0.0
    return dataclasses.replace(trace, timestamps_ms=t0 + (trace.timestamps_ms - t0) / rate_scale)


def _fail(source: str, line: int, what: str, hint: str) -> InputError:
    return InputError(f"{source}:{line}: {what}", hint)


def _tokens(value: object, key: str, source: str, line: int) -> int:
    if type(value) is not int:
        raise _fail(source, line, f"key '{key}' = {_short(value)} is not an integer token "
                    "count", "token counts are whole numbers >= 1")
    if value < 1:
        raise _fail(source, line, f"key '{key}' = {_short(value)} is not a positive token "
                    "count", "token counts are whole numbers >= 1")
    if value > MAX_TOKENS:
        raise _fail(source, line, f"key '{key}' = {_short(value)} is beyond any model's "
                    f"context ({MAX_TOKENS:,} tokens at most)", "check the token counts")
    return value


def _short(value: object) -> str:
    """A value as an error line shows it (a long one cut)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _model_map(value: object, key: str, source: str, line: int, integer: bool) -> dict:
    if not isinstance(value, dict):
        raise _fail(source, line, f"key 'cascadia.{key}' is not an object of model -> value",
                    'write e.g. {"llama-3.1-8b": 72.5}')
    for model, v in value.items():
        if integer:
            _tokens(v, f"cascadia.{key}.{model}", source, line)
        elif (type(v) not in (int, float) or not math.isfinite(v) or not 0 <= v <= 100):
            raise _fail(source, line, f"key 'cascadia.{key}.{model}' = {v!r} is not a number "
                        "in 0-100", "inline scores are normalised to 0-100")
    return value


MAX_TOKENS = 100_000_000  # a token count beyond any model's context
MAX_TIMESTAMP_MS = 1e15  # about 31,700 years
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_canonical(lines: Iterable[str], source: str = "<trace>") -> Trace:
    """Parse canonical / Mooncake JSONL lines; every problem names the line and key."""
    ts_list: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    hash_offsets = array("q", [0])
    hash_values = array("q")
    any_hash = False
    extras: dict[int, dict] = {}
    loads = json.loads
    last_ts = -math.inf
    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = loads(raw)
        except ValueError as exc:
            raise _fail(source, lineno, f"not valid JSON ({exc.args[0].split(':')[0]})",
                        "each line must be one JSON object") from None
        except RecursionError:
            raise _fail(source, lineno, "JSON nested too deeply",
                        "each line must be one flat JSON object") from None
        if type(rec) is not dict:
            raise _fail(source, lineno, "not a JSON object", "each line must be one JSON object")
        try:
            ts = rec["timestamp"]
            i_len = rec["input_length"]
            o_len = rec["output_length"]
        except KeyError as exc:
            raise _fail(source, lineno, f"key '{exc.args[0]}' missing",
                        "each line needs timestamp (ms), input_length and output_length") from None
        if type(ts) not in (int, float) or not 0 <= ts <= MAX_TIMESTAMP_MS:
            raise _fail(source, lineno, f"key 'timestamp' = {_short(ts)} is not a time in ms "
                        f"from 0 to {MAX_TIMESTAMP_MS:.0e}",
                        "timestamps are milliseconds from the trace start")
        if ts < last_ts:
            raise _fail(source, lineno, f"key 'timestamp' = {ts} is earlier than the line "
                        f"before ({last_ts})", "sort the trace by timestamp")
        last_ts = ts
        if type(i_len) is not int or not 1 <= i_len <= MAX_TOKENS:
            _tokens(i_len, "input_length", source, lineno)
        if type(o_len) is not int or not 1 <= o_len <= MAX_TOKENS:
            _tokens(o_len, "output_length", source, lineno)
        hashes = rec.get("hash_ids")
        if hashes is not None:
            if type(hashes) is not list or any(type(h) is not int or not INT64_MIN <= h <= INT64_MAX
                                               for h in hashes):
                raise _fail(source, lineno, "key 'hash_ids' is not a list of 64-bit integers",
                            "hash_ids are prefix-block ids (integers)")
            hash_values.extend(hashes)
            any_hash = True
        hash_offsets.append(len(hash_values))
        extra = rec.get("cascadia")
        if extra is not None:
            extras[len(ts_list)] = _check_extra(extra, source, lineno)
        ts_list.append(ts)
        inp.append(i_len)
        out.append(o_len)
    if not ts_list:
        raise InputError(f"{source}: the trace has no requests",
                         "pass a file with one JSON request per line")
    return _assemble(ts_list, inp, out, source,
                     (hash_offsets, hash_values) if any_hash else None, extras)


def _check_extra(extra: object, source: str, line: int) -> dict:
    if type(extra) is not dict:
        raise _fail(source, line, "key 'cascadia' is not an object",
                    "cascadia holds request_id, scores, quality, output_lengths")
    for key in extra:
        if key not in _CASCADIA_KEYS:
            raise _fail(source, line, f"unknown key 'cascadia.{key}'",
                        "allowed: " + ", ".join(_CASCADIA_KEYS))
    rid = extra.get("request_id")
    if rid is not None and type(rid) not in (str, int):
        raise _fail(source, line, "key 'cascadia.request_id' is not a string",
                    "use a string id")
    for key in ("scores", "quality"):
        if key in extra:
            _model_map(extra[key], key, source, line, integer=False)
    if "output_lengths" in extra:
        _model_map(extra["output_lengths"], "output_lengths", source, line, integer=True)
    return extra


def _assemble(ts_list: list, inp: list, out: list, source: str,
              hashes: tuple[array, array] | None, extras: dict[int, dict]) -> Trace:
    n = len(ts_list)
    request_ids = None
    scores: dict[str, np.ndarray] = {}
    quality: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    if extras:
        request_ids = tuple(
            (str(extras[r]["request_id"]) if r in extras and "request_id" in extras[r] else None)
            for r in range(n))
        if all(r is None for r in request_ids):
            request_ids = None
        for key, target, fill, dtype in (("scores", scores, np.nan, np.float64),
                                         ("quality", quality, np.nan, np.float64),
                                         ("output_lengths", lengths, -1, np.int64)):
            for row, extra in extras.items():
                for model, value in extra.get(key, {}).items():
                    if model not in target:
                        target[model] = np.full(n, fill, dtype=dtype)
                    target[model][row] = value
    offsets = values = None
    if hashes is not None:
        offsets = np.frombuffer(hashes[0], dtype=np.int64).copy()
        values = np.frombuffer(hashes[1], dtype=np.int64).copy()
    return Trace(
        timestamps_ms=np.asarray(ts_list, dtype=np.float64),
        input_lengths=np.asarray(inp, dtype=np.int64),
        output_lengths=np.asarray(out, dtype=np.int64),
        source=source,
        hash_offsets=offsets,
        hash_values=values,
        request_ids=request_ids,
        scores={k: scores[k] for k in sorted(scores)},
        quality={k: quality[k] for k in sorted(quality)},
        model_output_lengths={k: lengths[k] for k in sorted(lengths)},
    )


def _ms(value: float) -> int | float:
    rounded = round(float(value), 3)  # microsecond resolution
    return int(rounded) if rounded.is_integer() else rounded


def canonical_lines(trace: Trace) -> Iterator[str]:
    """The trace as canonical JSONL lines (with trailing newline), deterministic."""
    dumps = json.dumps
    has_extra = bool(trace.request_ids or trace.scores or trace.quality
                     or trace.model_output_lengths)
    ts = trace.timestamps_ms.tolist()
    inp = trace.input_lengths.tolist()
    out = trace.output_lengths.tolist()
    for r in range(len(trace)):
        rec: dict = {"timestamp": _ms(ts[r]), "input_length": inp[r], "output_length": out[r]}
        hashes = trace.hash_ids(r)
        if hashes is not None:
            rec["hash_ids"] = hashes
        if has_extra:
            extra: dict = {}
            if trace.request_ids and trace.request_ids[r] is not None:
                extra["request_id"] = trace.request_ids[r]
            for key, table in (("scores", trace.scores), ("quality", trace.quality)):
                vals = {m: float(a[r]) for m, a in table.items() if not np.isnan(a[r])}
                if vals:
                    extra[key] = vals
            lens = {m: int(a[r]) for m, a in trace.model_output_lengths.items() if a[r] >= 0}
            if lens:
                extra["output_lengths"] = lens
            if extra:
                rec["cascadia"] = extra
        yield dumps(rec) + "\n"


def from_columns(timestamps_ms: np.ndarray, input_lengths: np.ndarray,
                 output_lengths: np.ndarray, source: str = "<memory>") -> Trace:
    """A trace from arrays, validated like a parsed file (used by importers and synth)."""
    ts = np.asarray(timestamps_ms, dtype=np.float64)
    inp = np.asarray(input_lengths, dtype=np.int64)
    out = np.asarray(output_lengths, dtype=np.int64)
    if ts.size == 0:
        raise InputError(f"{source}: the trace has no requests", "pass a non-empty trace")
    if not (ts.shape == inp.shape == out.shape):
        raise InputError(f"{source}: columns differ in length", "pass equal-length columns")
    if np.any(~np.isfinite(ts)) or np.any(ts < 0):
        raise InputError(f"{source}: a timestamp is negative or not finite",
                         "timestamps are ms >= 0")
    if np.any(np.diff(ts) < 0):
        raise InputError(f"{source}: timestamps are not sorted", "sort the trace by time")
    if np.any(inp < 1) or np.any(out < 1):
        raise InputError(f"{source}: a token count is below 1", "token counts are >= 1")
    return Trace(timestamps_ms=ts, input_lengths=inp, output_lengths=out, source=source)
