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
    q = float(quality[np.arange(n), answered_by].mean())
    return Routing(thresholds=tuple(float(t) for t in theta), answered_by=answered_by,
                   reach_fraction=reach_fraction, answer_fraction=answer_fraction, quality=q)


def reference_points(quality: np.ndarray) -> tuple[float, float]:
    """(z1*, z2*): quality of all-largest and of all-smallest."""
    return float(quality[:, -1].mean()), float(quality[:, 0].mean())


def candidate_thresholds(scores: np.ndarray, stage: int) -> np.ndarray:
    """The thresholds that matter for a stage: its distinct judged scores, plus one above all
    (nobody kept). Any other value routes exactly like the next one up."""
    values = np.unique(scores[:, stage])
    return np.concatenate((values, [np.inf]))
