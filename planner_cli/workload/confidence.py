"""What a judged sample lets the planner promise about quality on new requests.

Q(θ) measured on n judged prompts is an estimate; thresholds chosen to meet a target on that
same sample deliver less on new questions (the choice favours the sample's lucky draws). So the
target is held to a bootstrap lower bound: the prompts are resampled with replacement (within
each `category` when the sample has one, so every category keeps its share), Q(θ) is recomputed
on each resample, and the bound at confidence P is the (1 − P) quantile of those means. The
same resamples serve every θ (one seeded draw), so bounds of different θ compare.

A cross-validated estimate of what is still lost: the prompts are split into k folds; on k − 1
of them the thresholds are chosen as the planner would (the fastest evaluated point whose bound
on those folds meets the target), and Q is measured on the fold left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from planner_cli.errors import InputError

DEFAULT_CONFIDENCE = 0.9
RESAMPLES = 400
CV_FOLDS = 5
SEED_STREAM = 41  # the bootstrap's own random stream under the run's seed


def check_confidence(confidence: float) -> float:
    if not 0.5 <= confidence < 1.0:
        raise InputError(f"--quality-confidence {confidence:g} is not in [0.5, 1)",
                         "use e.g. 0.9 (0.5 is the plain sample mean)")
    return confidence


@dataclass(frozen=True)
class QualityBound:
    """Bootstrap resamples of n judged prompts at a confidence level."""

    confidence: float
    weights: np.ndarray  # (RESAMPLES, n): each row a resample's share of each prompt
    stratified: bool  # resampled within categories

    @property
    def prompts(self) -> int:
        return int(self.weights.shape[1])

    def lower(self, per_prompt: np.ndarray) -> float:
        """The one-sided lower bound of the mean at the confidence (0.5: the plain mean)."""
        if self.confidence <= 0.5:
            return float(per_prompt.mean())
        return float(np.quantile(self.weights @ per_prompt, 1.0 - self.confidence))

    def interval(self, per_prompt: np.ndarray) -> tuple[float, float]:
        """The two-sided interval at the confidence (percentile bootstrap)."""
        means = self.weights @ per_prompt
        tail = (1.0 - self.confidence) / 2.0
        return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))

    def rows(self, keep: np.ndarray) -> QualityBound:
        """The bound on the prompts `keep` (a boolean mask): the same resamples restricted to
        them and renormalised (used for the cross-validation folds)."""
        sub = self.weights[:, keep]
        sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
        return QualityBound(self.confidence, sub, self.stratified)


def bootstrap(n: int, categories: Sequence[str] | None, seed: int,
              confidence: float = DEFAULT_CONFIDENCE, resamples: int = RESAMPLES
              ) -> QualityBound:
    """Seeded bootstrap weights for n prompts, stratified by category when given."""
    check_confidence(confidence)
    rng = np.random.default_rng([seed, SEED_STREAM])
    counts = np.zeros((resamples, n))
    groups = [np.arange(n)] if categories is None else [
        np.flatnonzero(np.asarray(categories) == c) for c in sorted(set(categories))]
    for idx in groups:
        draws = rng.integers(0, idx.size, size=(resamples, idx.size))
        for r in range(resamples):
            np.add.at(counts[r], idx[draws[r]], 1.0)
    return QualityBound(confidence, counts / n, categories is not None)


@dataclass(frozen=True)
class BestBound:
    quality: float  # the highest bound found
    thresholds: tuple[float, ...]
    exact: bool  # every threshold vector tried (else a coordinate ascent: at least this)


def best_bound(candidates: Sequence[np.ndarray], per_prompt: Callable[[tuple[float, ...]],
               np.ndarray], bound: QualityBound, start: tuple[float, ...],
               exhaustive_limit: int = 400) -> BestBound:
    """The most any thresholds promise at the bound's confidence: every threshold vector when
    there are at most `exhaustive_limit`, else coordinate ascent from `start` (the best point
    estimate's thresholds), which gives a lower bound of the maximum."""
    if not candidates:
        return BestBound(bound.lower(per_prompt(())), (), True)
    total = int(np.prod([c.size for c in candidates]))
    if total <= exhaustive_limit:
        best = BestBound(-np.inf, (), True)
        grids = np.meshgrid(*candidates, indexing="ij")
        for theta in zip(*(g.ravel() for g in grids), strict=True):
            t = tuple(float(v) for v in theta)
            q = bound.lower(per_prompt(t))
            if q > best.quality + 1e-12:
                best = BestBound(q, t, True)
        return best
    theta, q = start, bound.lower(per_prompt(start))
    improved = True
    while improved:
        improved = False
        for i, values in enumerate(candidates):
            for v in values:
                trial = theta[:i] + (float(v),) + theta[i + 1:]
                tq = bound.lower(per_prompt(trial))
                if tq > q + 1e-12:
                    theta, q, improved = trial, tq, True
    return BestBound(q, theta, False)


def folds(n: int, seed: int, k: int = CV_FOLDS) -> list[np.ndarray]:
    """k seeded folds of n prompts (boolean masks of the held-out prompts)."""
    order = np.random.default_rng([seed, SEED_STREAM, 1]).permutation(n)
    out = []
    for f in range(k):
        mask = np.zeros(n, dtype=bool)
        mask[order[f::k]] = True
        out.append(mask)
    return out


@dataclass(frozen=True)
class CrossValidated:
    folds: int
    target: float
    mean_shortfall: float  # target − held-out Q, averaged over folds (> 0: delivered less)
    worst_shortfall: float
    folds_without_choice: int  # folds where no evaluated θ met the target on the rest


def cross_validate(points: Sequence[tuple[float, Sequence[float]]],
                   per_prompt: Callable[[Sequence[float]], np.ndarray], bound: QualityBound,
                   target: float, seed: int, k: int = CV_FOLDS) -> CrossValidated | None:
    """Choose on k − 1 folds, measure on the last. `points`: (MILP latency, θ) evaluated by the
    search; the choice on the training folds is the fastest whose bound there meets the
    target. None when no fold could choose."""
    n = bound.prompts
    if n < 2 * k or not points:
        return None
    ranked = sorted(points, key=lambda p: (p[0], tuple(p[1])))
    cache = {tuple(t): per_prompt(t) for _, t in ranked}
    gaps, skipped = [], 0
    for test in folds(n, seed, k):
        train = bound.rows(~test)
        chosen = next((t for _, t in ranked if train.lower(cache[tuple(t)][~test]) >= target),
                      None)
        if chosen is None:
            skipped += 1
            continue
        gaps.append(target - float(cache[tuple(chosen)][test].mean()))
    if not gaps:
        return None
    return CrossValidated(folds=k, target=target, mean_shortfall=float(np.mean(gaps)),
                          worst_shortfall=float(np.max(gaps)), folds_without_choice=skipped)
