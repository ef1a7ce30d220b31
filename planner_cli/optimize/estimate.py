"""Fast p95 latency of a stage workload on dp replicas of one shape (for the latency tables).

Continuous batching in steady state: with arrival rate λ per replica, mean prompt P̄ and mean
output Ō, an iteration of time t holds b = λ·Ō·t decoding sequences (Little's law) and prefills
λ·P̄·t tokens, so t solves t = T(p = λP̄t, b = λŌt, k = b·(P̄ + Ō/2)). A request's latency is
then its prefill iteration T(P_r, b, k) plus (O_r - 1)·t. The replica is overloaded (latency
inf) when no fixed point exists within the sequence cap, the token budget or the KV cache.
The simulator checks the plans this estimate ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from planner_cli.perf.model import CostModel

MAX_FIXED_POINT_STEPS = 60
PREFILL_GRID_POINTS = 12


@dataclass(frozen=True)
class Workload:
    """A stage's requests: arrival rate and (prompt, output) lengths of a sample of them."""

    rate_per_s: float
    prompts: np.ndarray
    outputs: np.ndarray
    key: tuple = ()  # memo key (what it was made from)

    @cached_property
    def mean_prompt(self) -> float:
        return float(self.prompts.mean()) if self.prompts.size else 0.0

    @cached_property
    def mean_output(self) -> float:
        return float(self.outputs.mean()) if self.outputs.size else 0.0

    @cached_property
    def decode_steps(self) -> np.ndarray:
        """Decode iterations after each request's first token."""
        return np.maximum(self.outputs - 1, 0)

    @cached_property
    def prefill_grid(self) -> np.ndarray:
        """Prompt lengths at which the prefill time is computed (interpolated between)."""
        return np.unique(np.geomspace(max(1, self.prompts.min()), max(1, self.prompts.max()),
                                      PREFILL_GRID_POINTS).astype(int))


def steady_iteration_s(cost: CostModel, rate: float, mean_prompt: float, mean_output: float,
                       max_num_seqs: int, max_num_batched_tokens: int,
                       kv_capacity_tokens: int, times: dict[tuple[int, int], float] | None = None
                       ) -> tuple[float, float] | None:
    """(iteration time t, decode batch b) of the steady state, or None when overloaded.
    `times`: iteration times by (prefill tokens, decodes), kept by a caller that asks for one
    cost and workload at several rates."""
    if rate <= 0:
        # no load: a request decodes alone (batch 1) over its own context
        return cost.time(0, 1, mean_prompt + mean_output / 2.0), 0.0
    if times is None:
        times = {}
    first = (max(1, int(mean_prompt)), 0)
    t = times.get(first)
    if t is None:
        t = times[first] = cost.time(first[0], 0, 0)
    for _ in range(MAX_FIXED_POINT_STEPS):
        b = rate * mean_output * t
        p = rate * mean_prompt * t
        if b > max_num_seqs or p + b > max_num_batched_tokens:
            return None
        if b * (mean_prompt + mean_output) > kv_capacity_tokens:
            return None
        bi = max(1, int(round(b)))
        key = (int(round(p)), bi)
        new = times.get(key)
        if new is None:
            new = times[key] = cost.time(key[0], bi, bi * (mean_prompt + mean_output / 2.0))
        if abs(new - t) <= 1e-6 * t:
            return new, b
        if new > 1e3:
            return None
        t = new
    b = rate * mean_output * t
    # a slowly converging fixed point is at the edge of stability: treat it as overloaded
    return (t, b) if b <= max_num_seqs else None


def p95_latency(cost: CostModel, workload: Workload, replicas: int, max_num_seqs: int,
                max_num_batched_tokens: int, kv_capacity_tokens: int,
                percentile: float = 95.0, memo: dict | None = None) -> float:
    """Estimated percentile latency (s) of the workload spread over `replicas` replicas.
    `memo`: kept by a caller that asks for one cost, workload and limits at several replica
    counts (the requests' first-token times by decode batch, iteration times under "times").
    """
    if workload.prompts.size == 0:
        return 0.0
    rate = workload.rate_per_s / replicas
    steady = steady_iteration_s(cost, rate, workload.mean_prompt, workload.mean_output,
                                max_num_seqs, max_num_batched_tokens, kv_capacity_tokens,
                                None if memo is None else memo.setdefault("times", {}))
    if steady is None:
        return float("inf")
    t, b = steady
    bi = max(0, int(round(b)))
    first = None if memo is None else memo.get(bi)
    if first is None:
        k = bi * (workload.mean_prompt + workload.mean_output / 2.0)
        grid = workload.prefill_grid
        prefill = np.array([_chunked_prefill(cost, int(pt), bi, k, max_num_batched_tokens)
                            for pt in grid])
        first = np.interp(workload.prompts, grid, prefill)
        if memo is not None:
            memo[bi] = first
    return _percentile(first + workload.decode_steps * t, percentile)


def _percentile(a: np.ndarray, q: float) -> float:
    """np.percentile(a, q) (linear interpolation, the same figure to the bit), by partition."""
    n = a.shape[0]
    h = q / 100.0 * (n - 1)
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    part = np.partition(a, [lo, hi] if hi != lo else lo)
    x0, x1 = float(part[lo]), float(part[hi])
    w, d = h - lo, x1 - x0
    return x1 - d * (1 - w) if w >= 0.5 else x0 + d * w


def _chunked_prefill(cost: CostModel, prompt: int, b: int, k: float, budget: int) -> float:
    chunk = max(1, budget - b)
    total, done = 0.0, 0
    while done < prompt:
        step = min(chunk, prompt - done)
        total += cost.time(step, b, k, done)
        done += step
    return total
