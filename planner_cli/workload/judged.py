"""Judged samples: each model's judge score (and optionally measured quality) per prompt.

Long-format CSV: `request_id,model,score[,quality][,output_tokens]`, with the score scale
declared (a leading `# score_scale: 1-10` line, or by the caller), normalised to 0-100.
`score` is what routing thresholds act on; `quality`, when present, is what Q(θ) measures.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from planner_cli.errors import InputError, did_you_mean

REQUIRED = ("request_id", "model", "score")
OPTIONAL = ("quality", "output_tokens", "category")
_SCALE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:-|\.\.|:|to)\s*(-?\d+(?:\.\d+)?)\s*$")
_DECL = re.compile(r"^#\s*(score_scale|quality_scale)\s*[:=]\s*(.+?)\s*$")
_SYNTHETIC = re.compile(r"^#\s*synthetic\s*:\s*(.+?)\s*$", re.IGNORECASE)


def parse_scale(text: str, what: str = "score_scale") -> tuple[float, float]:
    """'1-10', '0..100', '0:1' -> (low, high)."""
    m = _SCALE.match(text)
    if not m or float(m.group(1)) >= float(m.group(2)):
        raise InputError(f"{what} {text!r} is not a range low-high",
                         "write e.g. 1-10 or 0-100")
    return float(m.group(1)), float(m.group(2))


@dataclass(frozen=True)
class JudgedSample:
    """Row r is a prompt, column j a model; scores and quality are normalised to 0-100."""

    request_ids: tuple[str, ...]
    models: tuple[str, ...]
    scores: np.ndarray  # (n, m) float64, NaN: not judged
    quality: np.ndarray  # (n, m) float64; equals `scores` when the file has no quality column
    output_tokens: np.ndarray | None  # (n, m) int64, -1: unknown
    has_quality: bool
    score_scale: tuple[float, float]
    quality_scale: tuple[float, float]
    source: str = "<judged>"
    synthetic: str | None = None  # the file's `# synthetic: ...` note, if it declares one
    categories: tuple[str, ...] | None = None  # per prompt: the `category` column's

    def __len__(self) -> int:
        return len(self.request_ids)

    def columns(self, idx: Sequence[int]) -> JudgedSample:
        """The sample's columns `idx` (in that order), every prompt kept."""
        cols = list(idx)
        return dataclasses.replace(
            self, models=tuple(self.models[j] for j in cols), scores=self.scores[:, cols],
            quality=self.quality[:, cols],
            output_tokens=None if self.output_tokens is None else self.output_tokens[:, cols])

    def select(self, models: Sequence[str]) -> tuple[JudgedSample, int]:
        """The sample restricted to `models` (in that order), keeping only prompts that every
        one of them answered; returns it and the number of prompts dropped."""
        lookup = {m.lower(): j for j, m in enumerate(self.models)}
        cols = []
        for name in models:
            j = lookup.get(name.lower())
            if j is None:
                hint = did_you_mean(name, self.models) or (
                    "it has: " + ", ".join(self.models))
                raise InputError(f"{self.source}: the judged sample has no model {name!r} "
                                 "that the cascade names", hint + "; or set judged_name in the "
                                 "cascade file")
            cols.append(j)
        scores = self.scores[:, cols]
        keep = ~np.isnan(scores).any(axis=1)
        if not keep.any():
            raise InputError(f"{self.source}: no prompt was judged for every cascade model",
                             "judge the same prompts with every model")
        sub = JudgedSample(
            request_ids=tuple(r for r, k in zip(self.request_ids, keep, strict=True) if k),
            models=tuple(self.models[j] for j in cols),
            scores=scores[keep],
            quality=self.quality[:, cols][keep],
            output_tokens=None if self.output_tokens is None
            else self.output_tokens[:, cols][keep],
            has_quality=self.has_quality,
            score_scale=self.score_scale,
            quality_scale=self.quality_scale,
            source=self.source,
            synthetic=self.synthetic,
            categories=None if self.categories is None
            else tuple(c for c, k in zip(self.categories, keep, strict=True) if k),
        )
        return sub, int((~keep).sum())


def _normalise(value: float, scale: tuple[float, float]) -> float:
    lo, hi = scale
    return (value - lo) / (hi - lo) * 100.0


def _rows(reader: Iterator[list[str]], source: str, start: int) -> Iterator[list[str]]:
    """The CSV reader's rows; a row it cannot read (a field past its size limit, a stray
    quote) is one InputError naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = start + getattr(reader, "line_num", 0)
            raise InputError(f"{source}:{line}: unreadable CSV row ({exc})",
                             "fix the row") from None
        yield row


def parse_judged_csv(lines: Iterable[str], source: str = "<judged>",
                     score_scale: tuple[float, float] | None = None,
                     quality_scale: tuple[float, float] | None = None) -> JudgedSample:
    """Parse a long-format judged sample; every problem names the line and column."""
    lines = list(lines)
    declared: dict[str, tuple[float, float]] = {}
    synthetic = None
    body_start = 0
    for i, raw in enumerate(lines):
        m = _DECL.match(raw.strip())
        syn = _SYNTHETIC.match(raw.strip())
        if syn:
            synthetic = syn.group(1)
        if m:
            try:
                declared[m.group(1)] = parse_scale(m.group(2), m.group(1))
            except InputError as exc:  # the file and line it was declared on
                raise InputError(f"{source}:{i + 1}: {exc.message}", exc.hint) from None
        elif raw.strip().startswith("#") or not raw.strip():
            pass
        else:
            body_start = i
            break
    else:
        raise InputError(f"{source}: the judged sample is empty",
                         "header request_id,model,score then one row per (prompt, model)")
    score_scale = score_scale or declared.get("score_scale")
    if score_scale is None:
        raise InputError(f"{source}: the score scale is not declared",
                         "add a first line '# score_scale: 1-10' (or 0-100, ...) or pass "
                         "--score-scale")
    quality_scale = quality_scale or declared.get("quality_scale") or score_scale
    reader = _rows(csv.reader(lines[body_start:]), source, body_start)
    header = [h.strip() for h in next(reader)]
    for col in REQUIRED:
        if col not in header:
            hint = did_you_mean(col, header) or "header: request_id,model,score[,quality]" \
                "[,output_tokens]"
            raise InputError(f"{source}:{body_start + 1}: column '{col}' missing", hint)
    for col in header:
        if col not in REQUIRED + OPTIONAL:
            raise InputError(f"{source}:{body_start + 1}: unknown column '{col}'",
                             did_you_mean(col, REQUIRED + OPTIONAL) or "remove it")
    pos = {c: header.index(c) for c in header}
    has_quality = "quality" in pos
    has_tokens = "output_tokens" in pos
    category: dict[str, str] = {}
    req_index: dict[str, int] = {}
    model_index: dict[str, int] = {}
    cells: dict[tuple[int, int], tuple[float, float, int]] = {}
    for offset, row in enumerate(reader):
        lineno = body_start + 2 + offset
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].startswith("#"):
            continue
        if len(row) != len(header):
            raise InputError(f"{source}:{lineno}: {len(row)} fields, the header has "
                             f"{len(header)}", "fix the row")
        rid, model = row[pos["request_id"]].strip(), row[pos["model"]].strip()
        if not rid or not model:
            raise InputError(f"{source}:{lineno}: empty request_id or model", "fill it in")
        score = _number(row[pos["score"]], "score", score_scale, source, lineno)
        qual = (_number(row[pos["quality"]], "quality", quality_scale, source, lineno)
                if has_quality else score)
        tokens = -1
        if has_tokens and row[pos["output_tokens"]].strip():
            text = row[pos["output_tokens"]].strip()
            if not text.isdigit() or len(text) > 9 or int(text) < 1:
                raise InputError(f"{source}:{lineno}: column 'output_tokens' = {text!r} is "
                                 "not a whole number >= 1", "fix or leave it empty")
            tokens = int(text)
        if "category" in pos:
            cat = row[pos["category"]].strip()
            if category.setdefault(rid, cat) != cat:
                raise InputError(f"{source}:{lineno}: request {rid!r} has category {cat!r} "
                                 f"here and {category[rid]!r} before",
                                 "give each prompt one category")
        r = req_index.setdefault(rid, len(req_index))
        j = model_index.setdefault(model, len(model_index))
        if (r, j) in cells:
            raise InputError(f"{source}:{lineno}: request {rid!r} and model {model!r} appear "
                             "twice", "keep one judgement per (request, model)")
        cells[(r, j)] = (score, qual, tokens)
    if not cells:
        raise InputError(f"{source}: the judged sample has no rows", "add judged rows")
    n, m = len(req_index), len(model_index)
    scores = np.full((n, m), np.nan)
    quality = np.full((n, m), np.nan)
    tokens_arr = np.full((n, m), -1, dtype=np.int64)
    for (r, j), (s, q, t) in cells.items():
        scores[r, j] = s
        quality[r, j] = q
        tokens_arr[r, j] = t
    return JudgedSample(
        request_ids=tuple(req_index), models=tuple(model_index), scores=scores,
        quality=quality, output_tokens=tokens_arr if has_tokens else None,
        has_quality=has_quality, score_scale=score_scale, quality_scale=quality_scale,
        source=source, synthetic=synthetic,
        categories=tuple(category[r] for r in req_index) if "category" in pos else None)


def _number(text: str, column: str, scale: tuple[float, float], source: str,
            lineno: int) -> float:
    text = text.strip()
    if not text:
        return math.nan  # not judged
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{source}:{lineno}: column '{column}' = {text!r} is not a number",
                         "fix the value or leave it empty") from None
    lo, hi = scale
    if not (lo <= value <= hi):
        raise InputError(f"{source}:{lineno}: column '{column}' = {value:g} is outside the "
                         f"declared scale {lo:g}-{hi:g}",
                         "drop judge failures (e.g. -1) or fix the declared scale")
    return _normalise(value, scale)
