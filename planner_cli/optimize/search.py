"""The outer search over routing thresholds θ (one per stage but the last).

Thresholds only matter at the judge scores that occur, so each θ_i ranges over the distinct
scores of stage i (plus +inf: keep nothing). Two scalarisations, both searched by coordinate
descent over that finite space with every evaluation memoised:

  the paper's objective for a quality target q_min
      J(θ) = L(θ) + μ · max(0, (q_min - Q(θ)) / (z1* - z2*))
  the weighted Tchebycheff scalarisation for a weight λ in (0, 1)
      T_λ(θ) = max(λ · (L(θ) - L_lo) / (L_hi - L_lo), (1 - λ) · (z1* - Q(θ)) / (z1* - z2*))

Across a set of weights the Tchebycheff minima trace the latency-quality Pareto front; the front
reported is the non-dominated set of every θ evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Thresholds = tuple[float, ...]
DEFAULT_WEIGHTS = (0.2, 0.5, 0.8)
MAX_SWEEPS = 4
COARSE_POINTS = 11  # coarse pass: this many values per stage (score quantiles), then refine


@dataclass
class Point:
    thresholds: Thresholds
    quality: float
    latency_s: float  # inf when no allocation exists
    detail: object = None  # what latency_fn returned besides the latency (the MILP solution)


@dataclass
class ThresholdSearch:
    candidates: Sequence[np.ndarray]  # per stage but the last: the values worth trying
    quality_fn: Callable[[Thresholds], float]
    latency_fn: Callable[[Thresholds], tuple[float, object]]
    z1: float  # quality when everything goes to the largest model
    z2: float  # quality when everything stops at the smallest
    evaluated: dict[Thresholds, Point] = field(default_factory=dict)
    _quality: dict[Thresholds, float] = field(default_factory=dict)

    def quality(self, theta: Thresholds) -> float:
        if theta not in self._quality:
            self._quality[theta] = self.quality_fn(theta)
        return self._quality[theta]

    def point(self, theta: Thresholds) -> Point:
        if theta not in self.evaluated:
            latency, detail = self.latency_fn(theta)
            self.evaluated[theta] = Point(theta, self.quality(theta), latency, detail)
        return self.evaluated[theta]

    @property
    def spread(self) -> float:
        return max(self.z1 - self.z2, 1e-9)

    def paper_objective(self, q_min: float, mu: float) -> Callable[[Thresholds], float]:
        def j(theta: Thresholds) -> float:
            gap = max(0.0, (q_min - self.quality(theta)) / self.spread)
            if gap > 0:
                # the penalty dominates; skip the MILP for θ that miss the target
                return mu * gap
            return self.point(theta).latency_s
        return j

    def tchebycheff(self, weight: float, l_lo: float, l_hi: float
                    ) -> Callable[[Thresholds], float]:
        span = max(l_hi - l_lo, 1e-9)

        def t(theta: Thresholds) -> float:
            p = self.point(theta)
            if not math.isfinite(p.latency_s):
                return math.inf
            return max(weight * (p.latency_s - l_lo) / span,
                       (1 - weight) * (self.z1 - p.quality) / self.spread)
        return t

    def _coarse(self, values: np.ndarray) -> np.ndarray:
        """About COARSE_POINTS values spread over the candidates (ends included)."""
        if values.size <= COARSE_POINTS:
            return values
        idx = np.unique(np.round(np.linspace(0, values.size - 1, COARSE_POINTS)).astype(int))
        return values[idx]

    def _around(self, values: np.ndarray, current: float) -> np.ndarray:
        """The candidates between the coarse neighbours of `current`."""
        coarse = self._coarse(values)
        if coarse.size == values.size:
            return values
        pos = int(np.searchsorted(coarse, current))
        lo = coarse[max(0, pos - 1)]
        hi = coarse[min(coarse.size - 1, pos + 1)]
        return values[(values >= lo) & (values <= hi)]

    def descend(self, objective: Callable[[Thresholds], float], start: Thresholds
                ) -> Thresholds:
        """Coordinate descent, coarse to fine: over spread-out candidate values first, then
        over every value between the coarse neighbours of the coarse optimum."""
        best = self._sweep(objective, start, [self._coarse(v) for v in self.candidates])
        fine = [self._around(v, best[i]) for i, v in enumerate(self.candidates)]
        return self._sweep(objective, best, fine)

    def _sweep(self, objective: Callable[[Thresholds], float], start: Thresholds,
               candidates: Sequence[np.ndarray]) -> Thresholds:
        best, best_value = start, objective(start)
        for _ in range(MAX_SWEEPS):
            improved = False
            for i, values in enumerate(candidates):
                for v in values:
                    theta = best[:i] + (float(v),) + best[i + 1:]
                    if theta == best:
                        continue
                    value = objective(theta)
                    if value < best_value - 1e-12:
                        best, best_value, improved = theta, value, True
            if not improved:
                break
        return best

    def optimise(self, q_min: float | None, mu: float = 1e6,
                 weights: Sequence[float] = DEFAULT_WEIGHTS) -> Thresholds:
        """The θ minimising J for q_min, after tracing the front; with no target (None) the θ
        of the lowest latency."""
        everything_up: Thresholds = tuple(math.inf for _ in self.candidates)
        nothing_up: Thresholds = tuple(float(v[0]) for v in self.candidates)  # lowest: keep all
        # anchors of the front: all to the largest model, all kept at the smallest
        for anchor in (everything_up, nothing_up):
            self.point(anchor)
        finite = [p.latency_s for p in self.evaluated.values() if math.isfinite(p.latency_s)]
        if finite:
            l_lo, l_hi = min(finite), max(finite)
            for w in weights:
                self.descend(self.tchebycheff(w, l_lo, l_hi), nothing_up)
        if q_min is None:
            # no quality floor: the fastest thresholds
            def j(theta: Thresholds) -> float:
                return self.point(theta).latency_s
        else:
            j = self.paper_objective(q_min, mu)
        start = min(self.evaluated, key=j) if self.evaluated else everything_up
        return self.descend(j, start)

    def front(self) -> list[Point]:
        """The non-dominated evaluated points (higher quality, lower latency)."""
        pts = sorted((p for p in self.evaluated.values() if math.isfinite(p.latency_s)),
                     key=lambda p: (p.latency_s, -p.quality))
        out: list[Point] = []
        best_q = -math.inf
        for p in pts:
            if p.quality > best_q + 1e-12:
                out.append(p)
                best_q = p.quality
        return out
