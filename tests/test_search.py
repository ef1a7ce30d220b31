"""The outer threshold search on a toy problem with a known Pareto front."""

from __future__ import annotations

import math

import numpy as np

from planner_cli.optimize.search import ThresholdSearch


def toy():
    # one threshold θ in 0..10: quality rises with θ (more requests escalate), latency too,
    # except θ=3 and θ=7, which are dominated (slower than θ=4 and θ=8 for less quality)
    values = np.arange(11.0)
    quality = {t: 10.0 * t for t in values}
    latency = {t: 1.0 + t for t in values}
    latency[3.0], latency[7.0] = 6.5, 9.5
    latency[math.inf] = 12.0
    quality[math.inf] = 100.0

    def q(theta):
        return quality[theta[0]]

    def lat(theta):
        return latency[theta[0]], None

    search = ThresholdSearch([np.append(values, math.inf)], q, lat, z1=100.0, z2=0.0)
    return search, quality, latency


def test_finds_the_known_front():
    search, quality, latency = toy()
    search.optimise(q_min=None, weights=np.linspace(0.05, 0.95, 19))
    front = {p.thresholds[0] for p in search.front()}
    expected = {t for t in quality if t not in (3.0, 7.0)}
    assert front <= expected
    assert len(front) >= 6
    assert 3.0 not in front and 7.0 not in front


def test_paper_objective_meets_the_target_at_least_latency():
    search, quality, latency = toy()
    best = search.optimise(q_min=55.0)
    assert quality[best[0]] >= 55.0
    assert best == (6.0,)  # the fastest θ with quality >= 55


def test_unreachable_target_stays_at_the_best_quality():
    search, _, _ = toy()
    best = search.optimise(q_min=150.0)
    assert best == (math.inf,)
