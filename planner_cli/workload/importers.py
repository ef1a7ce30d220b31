"""Importers: Azure LLM inference CSV, length-only CSVs; format detection.

Each takes an open text stream and a source name for messages; the caller opens the file.
Mooncake JSONL is the canonical format and needs no importer (trace.parse_canonical).
"""

from __future__ import annotations

from typing import TextIO

import numpy as np
import pandas as pd

from planner_cli.errors import InputError
from planner_cli.workload.trace import MAX_TOKENS, Trace, from_columns

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# (input column, output column) pairs a length-only CSV may use, first match wins.
LENGTH_COLUMN_PAIRS = (
    ("input_length", "output_length"),
    ("num_prefill_tokens", "num_decode_tokens"),  # Sarathi-Serve / Vidur stats files
    ("ContextTokens", "GeneratedTokens"),  # Azure without timestamps
    ("input_tokens", "output_tokens"),
    ("prompt_tokens", "completion_tokens"),
)
FORMATS = ("canonical", "mooncake", "azure", "lengths")


def detect_format(name: str, first_line: str) -> str:
    """Guess a trace file's format from its name and first line."""
    head = first_line.strip()
    if head.startswith("{") or name.endswith((".jsonl", ".json")):
        return "canonical"
    columns = [c.strip() for c in head.split(",")]
    if all(c in columns for c in AZURE_COLUMNS):
        return "azure"
    if any(a in columns and b in columns for a, b in LENGTH_COLUMN_PAIRS):
        return "lengths"
    raise InputError(f"{name}:1: cannot tell the trace format from the header {head[:80]!r}",
                     "use canonical JSONL, an Azure CSV (TIMESTAMP,ContextTokens,"
                     "GeneratedTokens) or a CSV with input_length,output_length; or pass "
                     "--format")


def _token_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    # not a number (NaN) is not finite either
    finite = np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    bad = ~finite | (values < 1) | (values > MAX_TOKENS) | (values != np.floor(values))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise InputError(f"{source}:{row + 2}: column '{column}' = {frame[column].iloc[row]!r} "
                         "is not a whole token count >= 1", "fix or drop the row")
    return values.to_numpy(dtype=np.int64)


def _read_csv(handle: TextIO, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(handle, dtype=str, skipinitialspace=True, comment="#")
    except pd.errors.EmptyDataError:
        raise InputError(f"{source}: the file is empty", "pass a CSV with a header") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{source}: malformed CSV: {exc}", "fix the row it names") from None
    if frame.empty:
        raise InputError(f"{source}: the trace has no requests", "pass a non-empty CSV")
    return frame


def parse_azure_csv(handle: TextIO, source: str = "<azure>") -> Trace:
    """Azure LLM inference trace (2023 / 2024): TIMESTAMP,ContextTokens,GeneratedTokens.

    Timestamps become ms from the first request.
    """
    frame = _read_csv(handle, source)
    missing = [c for c in AZURE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{source}:1: column '{missing[0]}' missing",
                         "an Azure trace has TIMESTAMP,ContextTokens,GeneratedTokens")
    text = frame["TIMESTAMP"].fillna("").astype(str).str.strip()
    # a date first ("now" and the like are not a time of the trace), then one kind of zone:
    # every stamp with an offset (compared in UTC) or none with one
    dated = text.str.match(r"^\d{4}-\d{2}-\d{2}", na=False).astype(bool)
    if not dated.all():
        row = int(np.argmax(~dated.to_numpy()))
        raise InputError(f"{source}:{row + 2}: column 'TIMESTAMP' = {text.iloc[row][:40]!r} "
                         "is not a date-time", "use e.g. 2023-11-16 18:15:46.6805900")
    zoned = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True, na=False).astype(bool)
    if zoned.any() and not zoned.all():
        row = int(np.argmax((zoned != zoned.iloc[0]).to_numpy()))
        raise InputError(f"{source}:{row + 2}: column 'TIMESTAMP' mixes times with and "
                         "without a time zone", "give every time a zone (e.g. +00:00) or none")
    try:
        stamps = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=bool(zoned.all()))
    except (ValueError, OverflowError) as exc:
        raise InputError(f"{source}: column 'TIMESTAMP' cannot be read as date-times "
                         f"({str(exc)[:80]})", "use e.g. 2023-11-16 18:15:46.6805900") from None
    if stamps.isna().any():
        row = int(np.argmax(stamps.isna().to_numpy()))
        raise InputError(f"{source}:{row + 2}: column 'TIMESTAMP' = "
                         f"{frame['TIMESTAMP'].iloc[row]!r} is not a date-time",
                         "use e.g. 2023-11-16 18:15:46.6805900")
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    back = np.flatnonzero(np.diff(ns) < 0)
    if back.size:
        row = int(back[0]) + 1
        raise InputError(f"{source}:{row + 2}: TIMESTAMP goes back in time",
                         "sort the trace by TIMESTAMP")
    ms = (ns - ns[0]) / 1e6
    return from_columns(ms, _token_column(frame, "ContextTokens", source),
                        _token_column(frame, "GeneratedTokens", source), source)


def parse_lengths_csv(handle: TextIO, source: str = "<lengths>") -> tuple[np.ndarray, np.ndarray]:
    """(input lengths, output lengths) of a CSV that has lengths but no arrival times."""
    frame = _read_csv(handle, source)
    for a, b in LENGTH_COLUMN_PAIRS:
        if a in frame.columns and b in frame.columns:
            return _token_column(frame, a, source), _token_column(frame, b, source)
    raise InputError(f"{source}:1: no input/output length columns",
                     "name them " + " or ".join(f"{a},{b}" for a, b in LENGTH_COLUMN_PAIRS[:2]))
