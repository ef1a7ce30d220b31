"""Routing of a judged sample through a cascade for thresholds θ.

Stage i (0-based) keeps a request when its judge score s[r, i] >= θ_i; the last stage always
answers. Q(θ) is the mean over requests of the quality of the answer returned.
Reference points: z1* = Q when every request goes to the largest (last) model, z2* = Q when
every request stops at the smallest (first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner_cli.errors import InputError


@dataclass(frozen=True)
class Routing:
    thresholds: tuple[float, ...]  # θ_0 .. θ_{m-2}, on the 0-100 score scale
    answered_by: np.ndarray  # (n,) int: the stage whose answer is returned
    reach_fraction: np.ndarray  # (m,) share of requests that stage i serves
    answer_fraction: np.ndarray  # (m,) share of requests answered at stage i
    quality: float  # Q(θ), 0-100
    per_request: np.ndarray  # (n,) the quality of each request's returned answer

    def stage_requests(self, stage: int) -> np.ndarray:
        """Indices of the requests stage `stage` serves (it reaches them)."""
        return np.flatnonzero(self.answered_by >= stage)


def route(scores: np.ndarray, quality: np.ndarray, thresholds: Sequence[float]) -> Routing:
    """Route every request; `scores` and `quality` are (n, m), thresholds has m-1 values."""
    n, m = scores.shape
    if len(thresholds) != m - 1:
        raise InputError(f"{len(thresholds)} thresholds given for a cascade of {m} models",
                         f"give {m - 1} (one per stage but the last)")
    if n == 0:
        raise InputError("routing needs at least one judged request", "add judged rows")
    theta = np.asarray(thresholds, dtype=np.float64)
    keep = np.ones((n, m), dtype=bool)
    if m > 1:
        keep[:, : m - 1] = scores[:, : m - 1] >= theta
    answered_by = np.argmax(keep, axis=1)
    counts = np.bincount(answered_by, minlength=m).astype(np.float64)
    answer_fraction = counts / n
    reach_fraction = answer_fraction[::-1].cumsum()[::-1]
    got = quality[np.arange(n), answered_by]
    return Routing(thresholds=tuple(float(t) for t in theta), answered_by=answered_by,
                   reach_fraction=reach_fraction, answer_fraction=answer_fraction,
                   quality=float(got.mean()), per_request=got)


def reference_points(quality: np.ndarray) -> tuple[float, float]:
    """(z1*, z2*): quality of all-largest and of all-smallest."""
    return float(quality[:, -1].mean()), float(quality[:, 0].mean())


def candidate_thresholds(scores: np.ndarray, stage: int) -> np.ndarray:
    """The thresholds that matter for a stage: its distinct judged scores, plus one above all
    (nobody kept). Any other value routes exactly like the next one up."""
    values = np.unique(scores[:, stage])
    return np.concatenate((values, [np.inf]))


EXACT_ENUMERATION_LIMIT = 5000  # earlier-stage threshold vectors enumerated for best_quality


@dataclass(frozen=True)
class BestQuality:
    quality: float  # the highest Q(θ) found
    thresholds: tuple[float, ...]  # a θ reaching it (inf: keep nothing at that stage)
    exact: bool  # False when the space was too large to enumerate: a lower bound


def best_quality(scores: np.ndarray, quality: np.ndarray) -> BestQuality:
    """The most a cascade can deliver: max over θ of Q(θ) (not z1*: a small model's answer can
    beat the large one's on the requests it keeps). The last threshold is swept exactly by a
    cumulative sum for each vector of the earlier ones, which are enumerated over their
    candidates when there are at most EXACT_ENUMERATION_LIMIT vectors; otherwise coordinate
    ascent gives a lower bound."""
    n, m = scores.shape
    if m == 1:
        return BestQuality(float(quality[:, 0].mean()), (), True)
    cands = [candidate_thresholds(scores, i) for i in range(m - 1)]
    count = int(np.prod([c.size for c in cands[:-1]])) if m > 2 else 1
    if count <= EXACT_ENUMERATION_LIMIT:
        best = BestQuality(-np.inf, (), True)
        for head in _product(cands[:-1]):
            q, last = _best_last(scores, quality, head)
            if q > best.quality + 1e-12:
                best = BestQuality(q, head + (last,), True)
        return best
    theta = tuple(float(c[-1]) for c in cands)  # everything to the largest model
    q = route(scores, quality, theta).quality
    improved = True
    while improved:
        improved = False
        for i in range(m - 2):
            for v in cands[i]:
                trial = theta[:i] + (float(v),) + theta[i + 1:]
                tq, last = _best_last(scores, quality, trial[:-1])
                if tq > q + 1e-12:
                    theta, q, improved = trial[:-1] + (last,), tq, True
    return BestQuality(q, theta, False)


def _product(cands: Sequence[np.ndarray]) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = [()]
    for c in cands:
        out = [t + (float(v),) for t in out for v in c]
    return out


def _best_last(scores: np.ndarray, quality: np.ndarray, head: tuple[float, ...]
               ) -> tuple[float, float]:
    """(best Q, best last threshold) with the earlier thresholds fixed at `head`."""
    n, m = scores.shape
    k = m - 2  # the stage the last threshold decides
    reach = np.ones(n, dtype=bool)
    total = 0.0
    for i, t in enumerate(head):
        kept = reach & (scores[:, i] >= t)
        total += float(quality[kept, i].sum())
        reach &= ~kept
    s, a, b = scores[reach, k], quality[reach, k], quality[reach, m - 1]
    values = np.append(np.unique(s), np.inf)
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate(([0.0], np.cumsum((a - b)[order])))
    kept = s.size - np.searchsorted(np.sort(s), values, side="left")  # how many have s >= v
    sums = total + float(b.sum()) + gain[kept]
    j = int(np.argmax(sums))
    return float(sums[j] / n), float(values[j])
