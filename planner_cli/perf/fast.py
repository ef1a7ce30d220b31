"""The analytic iteration time made fast for the simulator: the same formulas as
`analytic.time_from_load`, with everything that depends only on the token count memoised and
the attention term in closed form; plus exact sums over runs of decode iterations.

A run of decode iterations with a fixed batch b grows the context by b per iteration. The time
of one iteration is piecewise linear in the context k (a maximum of two lines, capped by a
sliding window), so the run's total is a sum of arithmetic series over at most three pieces.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner_cli.perf.analytic import (
    AnalyticConstants,
    attention_coeffs,
    attention_work,
    communication_time,
    communication_work,
    gemm_scale,
    gemm_twin,
    gemm_work,
)
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.model import BYTES_UNQUANTISED


class IterationCost:
    """Iteration time of one replica shape under one set of constants."""

    def __init__(self, shape: ReplicaShape, constants: AnalyticConstants) -> None:
        c = constants
        card = shape.card
        self.shape, self.constants = shape, constants
        self.memo_key = ("analytic", shape, constants)  # what determines every figure
        self.peak = shape.gpu.dense_tflops(shape.precision) * 1e12
        self.bw = shape.gpu.hbm_bandwidth_gbps * 1e9
        self.kinds: list[tuple[int, bool]] = []
        dense = moe = 0
        for stage in range(shape.pp):
            d, m = shape.stage_layer_kinds(stage)
            dense, moe = dense + d, moe + m
        for count, is_moe in ((dense, False), (moe, True)):
            if count:
                self.kinds.append((count, is_moe))
        self.layers = dense + moe
        self.attn = attention_coeffs(shape)
        self.head_params = card.vocab_size * card.hidden_size / shape.tp
        self.twin = gemm_twin(shape)  # what the GEMMs are timed against (built once)
        self.fixed = self.layers * c.kernels_per_layer * c.kernel_latency_s + c.iteration_overhead_s
        self._by_tokens: dict[int, float] = {}
        self._decode_cache: dict[int, tuple[float, float, float, float | None, float,
                                            float]] = {}
        self._bends: dict[int, list[float]] = {}  # per batch size: where t(k) bends

    def _bandwidth_eff(self, n: int) -> float:
        c = self.constants
        if n == 1 and c.single_token_bandwidth_efficiency is not None:
            return c.single_token_bandwidth_efficiency
        return c.bandwidth_efficiency

    def _token_part(self, n: int) -> float:
        """GEMMs, collectives and pipeline hand-off of an iteration of n tokens."""
        cached = self._by_tokens.get(n)
        if cached is not None:
            return cached
        c, shape = self.constants, self.shape
        eb = self._bandwidth_eff(n)
        total = 0.0
        twin = self.twin
        for count, is_moe in self.kinds:
            flops, by = gemm_work(twin, is_moe, n)
            total += count * gemm_scale(shape, is_moe, n) * max(
                flops / (self.peak * c.compute_efficiency), by / (self.bw * eb))
        total += sum(communication_time(c, *communication_work(shape, n)))
        self._by_tokens[n] = total
        return total

    def _head(self, seqs: int, n: int) -> float:
        c = self.constants
        return max(2.0 * seqs * self.head_params / (self.peak * c.compute_efficiency),
                   self.head_params * BYTES_UNQUANTISED / (self.bw * self._bandwidth_eff(n)))

    def _attention(self, p: int, b: int, k: float, pc: float, seqs: int = 1) -> float:
        c = self.constants
        flops, by = attention_work(self.attn, p, b, k, pc, seqs)
        return self.layers * max(flops / (self.peak * c.attention_efficiency),
                                 by / (self.bw * c.attention_bandwidth_efficiency))

    def time(self, p: int, b: int, k: float, prefill_context: float = 0.0,
             prefill_seqs: int = 1) -> float:
        """Seconds of one iteration: prefill p tokens of `prefill_seqs` prompts, decode b
        sequences holding k tokens."""
        n = p + b
        s = max(1, min(prefill_seqs, p)) if p > 0 else 0
        return (self._token_part(n) + self._head(b + s, n)
                + self._attention(p, b, k, prefill_context, max(s, 1)) + self.fixed)

    # ------------------------------------------------------------ runs of decode iterations

    def _decode_parts(self, b: int) -> tuple[float, float, float, float | None, float, float]:
        """(C_b, L·α, L·β, window span, A, B) with t(k) = C_b + max(Lα·s + A, Lβ·(s + b) + B),
        s = span(k); A and B: a hybrid model's fixed attention work per token and sequence."""
        parts = self._decode_cache.get(b)
        if parts is None:
            a, c = self.attn, self.constants
            const = self._token_part(b) + self._head(b, b) + self.fixed
            la = self.layers * a.flops_decode / (self.peak * c.attention_efficiency)
            lb = self.layers * a.kv_token_bytes / (self.bw * c.attention_bandwidth_efficiency)
            cap = None if a.window is None else float(b * a.window)
            a0 = self.layers * a.token_flops * b / (self.peak * c.attention_efficiency)
            b0 = self.layers * a.seq_bytes * b / (self.bw * c.attention_bandwidth_efficiency)
            parts = (const, la, lb, cap, a0, b0)
            self._decode_cache[b] = parts
            # the contexts where t(k) bends: where the two lines cross, if they do at a
            # positive span, and the window's cap
            bends = []
            if la != lb:
                cross = (lb * b + b0 - a0) / (la - lb)
                if cross > 0:
                    bends.append(cross)
            if cap is not None:
                bends.append(cap)
            self._bends[b] = sorted(bends)
        return parts

    def _bends_of(self, b: int) -> list[float]:
        bends = self._bends.get(b)
        if bends is None:
            self._decode_parts(b)  # fills both
            bends = self._bends[b]
        return bends

    def _one_piece(self, b: int, k0: float, n: int) -> bool:
        """Whether n decode iterations from context k0 lie on one linear piece of t (what
        _pieces would return as [(0, n - 1)])."""
        for kp in self._bends_of(b):
            x = (kp - k0) / b
            if 0 <= x < n - 1:
                return False
        return True

    def _decode_time(self, b: int, k: float) -> float:
        const, la, lb, cap, a0, b0 = self._decode_parts(b)
        s = k if cap is None else min(k, cap)
        return const + max(la * s + a0, lb * (s + b) + b0)

    def _pieces(self, b: int, k0: float, n: int) -> list[tuple[int, int]]:
        """[(first, last)] iteration index ranges over which t is linear in the index."""
        out = []
        start = 0
        for kp in [*self._bends_of(b), math.inf]:
            if start >= n:
                break
            last = n - 1 if kp == math.inf else min(n - 1, math.floor((kp - k0) / b))
            if last >= start:
                out.append((start, last))
                start = last + 1
        return out

    def decode_run(self, b: int, k0: float, n: int) -> float:
        """Total seconds of n decode iterations of batch b starting at context k0 (exact)."""
        if n <= 0:
            return 0.0
        if self._one_piece(b, k0, n):
            # the common case, with _pieces' arithmetic for its one piece
            return n * (self._decode_time(b, k0) + self._decode_time(b, k0 + (n - 1) * b)) / 2.0
        total = 0.0
        for first, last in self._pieces(b, k0, n):
            total += (last - first + 1) * (self._decode_time(b, k0 + first * b)
                                           + self._decode_time(b, k0 + last * b)) / 2.0
        return total

    def decode_time(self, b: int, k: float) -> float:
        """Seconds of one decode iteration of batch b holding k tokens."""
        return self._decode_time(b, k)

    def decode_iterations_within(self, b: int, k0: float, budget_s: float, cap: int
                                 ) -> tuple[int, float]:
        """How many whole decode iterations (at most cap) fit in budget_s, in closed form,
        and the seconds they take."""
        done = 0
        left = budget_s
        one = cap > 0 and self._one_piece(b, k0, cap)
        for first, last in [(0, cap - 1)] if one else self._pieces(b, k0, cap):
            count = last - first + 1
            t0 = self._decode_time(b, k0 + first * b)
            slope = (self._decode_time(b, k0 + last * b) - t0) / (count - 1) if count > 1 else 0.0
            whole = count * t0 + slope * count * (count - 1) / 2.0
            if whole <= left:
                done += count
                left -= whole
                continue
            m = most_within(t0, slope, left, count)
            return done + m, budget_s - left + m * t0 + slope * m * (m - 1) / 2.0
        return done, budget_s - left

    def decode_runs(self, b: int, k0: np.ndarray, n: np.ndarray) -> np.ndarray:
        """decode_run(b, k0[i], n[i]) for every i: the runs on one linear piece at once (the
        same arithmetic, element by element), the others one by one."""
        k0, n = np.asarray(k0, dtype=np.float64), np.asarray(n, dtype=np.int64)
        const, la, lb, cap, a0, b0 = self._decode_parts(b)
        one = n > 0
        for kp in self._bends_of(b):
            x = (kp - k0) / b
            one &= ~((0 <= x) & (x < n - 1))

        def step(k: np.ndarray) -> np.ndarray:  # _decode_time
            s = k if cap is None else np.minimum(k, cap)
            return const + np.maximum(la * s + a0, lb * (s + b) + b0)

        nf = n.astype(np.float64)
        out = np.where(one, nf * (step(k0) + step(k0 + (n - 1) * b)) / 2.0, 0.0)
        for i in np.flatnonzero(~one & (n > 0)).tolist():
            out[i] = self.decode_run(b, float(k0[i]), int(n[i]))
        return out

    def decode_until(self, b: int, k0: float, n: int, budget_s: float) -> tuple[int, float]:
        """decode_until (below) with each decode step computed once where the run lies on one
        linear piece (the simulator's commonest call: a run cut by an arrival), the same
        arithmetic as decode_run, decode_time and decode_iterations_within."""
        if n <= 0 or not self._one_piece(b, k0, n):
            return decode_until(self, b, k0, n, budget_s)
        t_first = self._decode_time(b, k0)
        t_last = self._decode_time(b, k0 + (n - 1) * b)
        dt = n * (t_first + t_last) / 2.0
        if not (n > 1 and dt >= budget_s and dt - t_last >= budget_s):
            return n, dt
        # decode_iterations_within(b, k0, budget_s, n - 1): one piece too
        count = n - 1
        slope = ((self._decode_time(b, k0 + (count - 1) * b) - t_first) / (count - 1)
                 if count > 1 else 0.0)
        whole = count * t_first + slope * count * (count - 1) / 2.0
        # the seconds as decode_iterations_within writes them (budget_s - left), to the bit
        if whole <= budget_s:
            m, dt = count, budget_s - (budget_s - whole)
        else:
            m = most_within(t_first, slope, budget_s, count)
            dt = budget_s - budget_s + m * t_first + slope * m * (m - 1) / 2.0
        if dt < budget_s:  # one more starts in it
            dt += self._decode_time(b, k0 + m * b)
            m += 1
        return m, dt


def most_within(t0: float, slope: float, left: float, m: int) -> int:
    """The largest x in [0, m] with x·t0 + slope·x(x-1)/2 <= left (t0 > 0, the sum rising
    in x): the root of the quadratic, then corrected to the exact comparison."""
    a, bq = slope / 2.0, t0 - slope / 2.0
    if abs(a) <= 1e-18 * max(t0, 1e-300):
        x = int(left // t0) if t0 > 0 else m
    else:
        disc = bq * bq + 4.0 * a * left
        x = int((-bq + math.sqrt(disc)) / (2.0 * a)) if disc >= 0 else 0
    x = max(0, min(x, m))
    while x > 0 and x * t0 + slope * x * (x - 1) / 2.0 > left:
        x -= 1
    while x < m and (x + 1) * t0 + slope * (x + 1) * x / 2.0 <= left:
        x += 1
    return x


def decode_until(cost: Any, b: int, k0: float, n: int, budget_s: float
                 ) -> tuple[int, float]:
    """The iterations of a run of n decode iterations of batch b from context k0 that start
    within budget_s seconds, and the seconds they take (the last may end past budget_s)."""
    dt = cost.decode_run(b, k0, n)
    # only iterations that start in the budget run: the last starts after n-1 iterations
    if n > 1 and dt >= budget_s and dt - cost.decode_time(b, k0 + (n - 1) * b) >= budget_s:
        n, dt = cost.decode_iterations_within(b, k0, budget_s, n - 1)
        if dt < budget_s:  # one more starts in it
            dt += cost.decode_time(b, k0 + n * b)
            n += 1
    return n, dt
