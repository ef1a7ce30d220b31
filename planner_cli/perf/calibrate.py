"""Fit the analytic model's constants to measured iteration times, with cross-validation.

Measurements are rows (tp, pp, prefill tokens p, decode batch b, context tokens k, time).
Fitted: the GEMM and attention compute efficiencies η_c, η_a and the bandwidth efficiencies of
GEMMs and of attention's KV reads η_b, η_ab (a log grid searched coarse to fine) and, for each
grid point, the per-iteration overhead o and the collective scale s in closed form (weighted
non-negative least squares on relative error):

    t_i ≈ R_i(η_c, η_b, η_a, η_ab) + o + s · C_i

R is the roofline part (GEMMs, attention, LM head, kernel launches, pipeline hand-off) and C the
all-reduce time of the ring model. The fixed overhead o lets a calibrated model follow an
engine whose decode step barely shrinks with tp; the efficiencies one that scales near the
bandwidth bound.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from planner_cli.errors import InputError
from planner_cli.perf.analytic import (
    DEFAULT_CONSTANTS,
    AnalyticConstants,
    IterationLoad,
    iteration_load,
)
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs.gpu import GpuSpec
from planner_cli.specs.model import ModelCard

REQUIRED_COLUMNS = ("tp", "prefill_tokens", "decode_batch", "context_tokens", "time_ms")
OPTIONAL_COLUMNS = ("pp", "prefill_context")
GRID_POINTS = 12
# Efficiencies are shares of the GPU card's peak FLOP/s and bandwidth: searched in
# [GRID_LOW, 1] (log spaced), never above the hardware; what an engine does faster than the
# roofline allows is left to the fixed per-iteration cost, which does not shrink with tp.
GRID_LOW, GRID_HIGH = 1e-4, 1.0
REFINE_ROUNDS = 3


@dataclass(frozen=True)
class Measurement:
    tp: int
    pp: int
    prefill_tokens: int
    decode_batch: int
    context_tokens: float
    time_s: float
    prefill_context: float = 0.0


def parse_measurements(lines: Iterable[str], source: str = "<measurements>") -> list[Measurement]:
    """CSV with tp, [pp,] prefill_tokens, decode_batch, context_tokens, time_ms
    [, prefill_context]; other columns are ignored (a profile table parses as is)."""
    reader = csv.reader(line for line in lines if not line.startswith("#"))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{source}: the measurements file is empty",
                         "header: " + ",".join(REQUIRED_COLUMNS)) from None
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise InputError(f"{source}:1: column '{col}' missing",
                             "header: tp,pp,prefill_tokens,decode_batch,context_tokens,time_ms")
    pos = {c: i for i, c in enumerate(header)}
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise InputError(f"{source}:{lineno}: {len(row)} fields, the header has "
                             f"{len(header)}", "fix the row")

        def num(col: str, default: float | None = None, integer: bool = False,
                _row: list[str] = row, _line: int = lineno) -> float:
            if col not in pos:
                if default is None:
                    raise InputError(f"{source}: column '{col}' missing", "add it")
                return default
            text = _row[pos[col]].strip()
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"{source}:{_line}: column '{col}' = {text!r} is not a "
                                 "number", "fix the value") from None
            if value < 0 or (integer and value != int(value)):
                raise InputError(f"{source}:{_line}: column '{col}' = {text!r} must be a "
                                 f"{'whole ' if integer else ''}number >= 0", "fix the value")
            return value

        m = Measurement(tp=int(num("tp", integer=True)), pp=int(num("pp", 1, integer=True)),
                        prefill_tokens=int(num("prefill_tokens", integer=True)),
                        decode_batch=int(num("decode_batch", integer=True)),
                        context_tokens=num("context_tokens"), time_s=num("time_ms") / 1e3,
                        prefill_context=num("prefill_context", 0.0))
        if m.tp < 1 or m.pp < 1 or m.time_s <= 0 or m.prefill_tokens + m.decode_batch < 1:
            raise InputError(f"{source}:{lineno}: needs tp, pp >= 1, a positive time and at "
                             "least one prefill token or decode sequence", "fix the row")
        rows.append(m)
    if not rows:
        raise InputError(f"{source}: no measurement rows", "add rows under the header")
    return rows


@dataclass(frozen=True)
class FitReport:
    constants: AnalyticConstants
    rows: int
    fit_median_ape: float
    fit_p90_ape: float
    cv_median_ape: float | None
    cv_p90_ape: float | None
    cv_scheme: str

    def to_dict(self) -> dict:
        return {"rows": self.rows, "fit_median_ape": self.fit_median_ape,
                "fit_p90_ape": self.fit_p90_ape, "cv_median_ape": self.cv_median_ape,
                "cv_p90_ape": self.cv_p90_ape, "cv_scheme": self.cv_scheme}


class _Design:
    """Per-row work arrays for vectorised evaluation of the roofline over a constants grid."""

    def __init__(self, card: ModelCard, gpu: GpuSpec, precision: str,
                 rows: Sequence[Measurement], base: AnalyticConstants,
                 gpus_per_node: int | None) -> None:
        loads: list[IterationLoad] = []
        shapes: dict[tuple[int, int], ReplicaShape] = {}
        for r in rows:
            key = (r.tp, r.pp)
            if key not in shapes:
                shapes[key] = ReplicaShape(card, gpu, r.tp, r.pp, precision,
                                           gpus_per_node=gpus_per_node)
            loads.append(iteration_load(shapes[key], r.prefill_tokens, r.decode_batch,
                                        r.context_tokens, r.prefill_context))
        peak = gpu.dense_tflops(precision) * 1e12
        bw = gpu.hbm_bandwidth_gbps * 1e9
        kinds = max(len(ld.layers) for ld in loads)
        n = len(rows)
        self.count = np.zeros((n, kinds))
        self.gf, self.gb, self.af, self.ab = (np.zeros((n, kinds)) for _ in range(4))
        for i, ld in enumerate(loads):
            for j, layer in enumerate(ld.layers):
                self.count[i, j] = layer.count
                self.gf[i, j] = layer.gemm_flops * layer.gemm_scale / peak
                self.gb[i, j] = layer.gemm_bytes * layer.gemm_scale / bw
                self.af[i, j] = layer.attn_flops / peak
                self.ab[i, j] = layer.attn_bytes / bw
        self.hf = np.array([ld.head_flops / peak for ld in loads])
        self.hb = np.array([ld.head_bytes / bw for ld in loads])
        self.fixed = np.array([
            ld.layer_count * base.kernels_per_layer * base.kernel_latency_s
            + ((ld.handoff_s_nominal / base.link_efficiency + base.collective_latency_s)
               if ld.handoff_s_nominal > 0 else 0.0)
            for ld in loads])
        self.comm = np.array([ld.allreduce_s_nominal / base.link_efficiency
                              + ld.allreduce_steps * base.collective_latency_s for ld in loads])
        self.t = np.array([r.time_s for r in rows])
        self.single = np.array([ld.tokens == 1 for ld in loads])

    def subset(self, idx: np.ndarray) -> _Design:
        new = object.__new__(_Design)
        for name in ("count", "gf", "gb", "af", "ab", "hf", "hb", "fixed", "comm", "t",
                     "single"):
            setattr(new, name, getattr(self, name)[idx])
        return new

    def roofline(self, ec: np.ndarray, eb: np.ndarray, ea: np.ndarray,
                 eab: np.ndarray, eb1: np.ndarray | None = None) -> np.ndarray:
        """R[i, c, b, a, ab, b1] for grids ec (GEMM compute), eb (GEMM bandwidth), ea
        (attention compute), eab (attention bandwidth), eb1 (GEMM bandwidth of single-token
        iterations; None: eb)."""
        r = self._roofline(ec, eb, ea, eab)
        if eb1 is None or not self.single.any():
            return r[..., None]
        r1 = self._roofline(ec, eb1, ea, eab)  # (n, C, B1, A, AB): eb1 in eb's place
        single = self.single[:, None, None, None, None, None]
        # r1 has B1 where r has B: move it last and broadcast over B
        return np.where(single, np.moveaxis(r1, 2, -1)[:, :, None, :, :, :], r[..., None])

    def _roofline(self, ec: np.ndarray, eb: np.ndarray, ea: np.ndarray,
                  eab: np.ndarray) -> np.ndarray:
        c4 = self.count[:, :, None, None]
        gemm = (c4 * np.maximum(self.gf[:, :, None, None] / ec[None, None, :, None],
                                self.gb[:, :, None, None] / eb[None, None, None, :])
                ).sum(axis=1)  # (n, C, B)
        attn = (c4 * np.maximum(self.af[:, :, None, None] / ea[None, None, :, None],
                                self.ab[:, :, None, None] / eab[None, None, None, :])
                ).sum(axis=1)  # (n, A, AB)
        head = np.maximum(self.hf[:, None, None] / ec[None, :, None],
                          self.hb[:, None, None] / eb[None, None, :])  # (n, C, B)
        return ((gemm + head)[:, :, :, None, None] + attn[:, None, None, :, :]
                + self.fixed[:, None, None, None, None])


def _solve_linear(y: np.ndarray, comm: np.ndarray, w: np.ndarray,
                  use_comm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each grid column of y (n, G): o >= 0, s >= 0 minimising Σ (w (y - o - s c))^2.
    Returns (o, s, loss), each (G,)."""
    w2 = (w * w)[:, None]
    c = comm[:, None]

    def only_o() -> np.ndarray:
        return np.maximum(0.0, (w2 * y).sum(0) / w2.sum())

    o = only_o()
    s = np.zeros_like(o)
    if use_comm and np.any(comm > 0):
        a11, a12, a22 = w2.sum(), (w2 * c).sum(), (w2 * c * c).sum()
        b1, b2 = (w2 * y).sum(0), (w2 * c * y).sum(0)
        det = a11 * a22 - a12 * a12
        if det > 0:
            o2 = (a22 * b1 - a12 * b2) / det
            s2 = (a11 * b2 - a12 * b1) / det
            s_only = np.maximum(0.0, b2 / a22)  # o clamped to 0
            ok = (o2 >= 0) & (s2 >= 0)
            o = np.where(ok, o2, np.where(o2 < 0, 0.0, o))
            s = np.where(ok, s2, np.where(o2 < 0, s_only, 0.0))
    resid = (y - o[None, :] - c * s[None, :]) * w[:, None]
    return o, s, (resid * resid).sum(0)


def _fit(design: _Design, base: AnalyticConstants, fit_comm: bool) -> AnalyticConstants:
    w = 1.0 / design.t
    single = bool(design.single.any())
    dims = 5 if single else 4  # η_c, η_b, η_a, η_ab[, η_b1]
    points = GRID_POINTS if not single else GRID_POINTS - 2
    lo = np.full(dims, np.log(GRID_LOW))
    hi = np.full(dims, np.log(GRID_HIGH))
    best = None
    for _ in range(REFINE_ROUNDS + 1):
        axes = [np.exp(np.linspace(lo[d], hi[d], points)) for d in range(dims)]
        r = design.roofline(*axes[:4], axes[4] if single else None)  # (n, C, B, A, AB, B1)
        n = r.shape[0]
        y = (design.t[:, None, None, None, None, None] - r).reshape(n, -1)
        o, s, loss = _solve_linear(y, design.comm, w, fit_comm)
        g = int(np.argmin(loss))
        idx = np.unravel_index(g, r.shape[1:])
        best = (*(axes[d][idx[d]] for d in range(dims)), float(o[g]), float(s[g]))
        if not single:
            best = (*best[:4], None, *best[4:])
        # zoom in around the best point: a quarter of the current span each side, inside
        # the hardware's bound
        span = (hi - lo) / 4
        centre = np.log(np.array([b for b in best[:5] if b is not None]))
        lo, hi = centre - span, np.minimum(centre + span, np.log(GRID_HIGH))
    if best is None:
        raise ValueError("the calibration grid search ran no round")
    ec, eb, ea, eab, eb1, o, s = best
    return base.with_(compute_efficiency=float(ec), attention_efficiency=float(ea),
                      bandwidth_efficiency=float(eb),
                      attention_bandwidth_efficiency=float(eab),
                      # without single-token rows, single-token iterations use the GEMM
                      # bandwidth efficiency (written as a number, never null)
                      single_token_bandwidth_efficiency=float(eb if eb1 is None else eb1),
                      iteration_overhead_s=o,
                      comm_scale=s if fit_comm and np.any(design.comm > 0) else base.comm_scale)


def _predict(design: _Design, c: AnalyticConstants) -> np.ndarray:
    eb1 = c.single_token_bandwidth_efficiency
    r = design.roofline(np.array([c.compute_efficiency]), np.array([c.bandwidth_efficiency]),
                        np.array([c.attention_efficiency]),
                        np.array([c.attention_bandwidth_efficiency]),
                        None if eb1 is None else np.array([eb1])).reshape(len(design.t))
    return r + c.iteration_overhead_s + c.comm_scale * design.comm


def _ape(pred: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.abs(pred - t) / t


def calibrate(card: ModelCard, gpu: GpuSpec, precision: str, rows: Sequence[Measurement],
              base: AnalyticConstants = DEFAULT_CONSTANTS,
              gpus_per_node: int | None = None) -> FitReport:
    """Fit the constants to `rows`; report the fit error and a cross-validated error that
    leaves one tensor-parallel size out (what a planner asks of a calibration: other tp). With
    a single tp there is nothing to leave out: the report says "not cross-validated", since a
    k-fold error over rows of one tp says nothing of the others."""
    if len(rows) < 4:
        raise InputError(f"{len(rows)} measurement rows are too few to fit 5 constants",
                         "give at least 4 rows, better 20 or more over several shapes")
    design = _Design(card, gpu, precision, rows, base, gpus_per_node)
    fit_comm = len({r.tp for r in rows}) > 1 or any(r.tp > 1 for r in rows)
    constants = _fit(design, base, fit_comm)
    ape = _ape(_predict(design, constants), design.t)
    tps = sorted({r.tp for r in rows})
    tp_arr = np.array([r.tp for r in rows])
    cv_errors: list[np.ndarray] = []
    scheme = "leave-one-tp-out"
    folds = [np.flatnonzero(tp_arr == tp) for tp in tps] if len(tps) > 1 else []
    for test in folds:
        train = np.setdiff1d(np.arange(len(rows)), test)
        if train.size < 4:
            continue
        train_design = design.subset(train)
        c = _fit(train_design, base, fit_comm and np.any(train_design.comm > 0))
        if not np.any(train_design.comm > 0):
            c = c.with_(comm_scale=constants.comm_scale)
        cv_errors.append(_ape(_predict(design.subset(test), c), design.t[test]))
    cv = np.concatenate(cv_errors) if cv_errors else None
    return FitReport(
        constants=constants, rows=len(rows),
        fit_median_ape=float(np.median(ape)), fit_p90_ape=float(np.percentile(ape, 90)),
        cv_median_ape=None if cv is None else float(np.median(cv)),
        cv_p90_ape=None if cv is None else float(np.percentile(cv, 90)),
        cv_scheme=(scheme if cv is not None else "not cross-validated (one tp)"
                   if len(tps) == 1 else "not cross-validated (too few rows)"))


def predict_rows(card: ModelCard, gpu: GpuSpec, precision: str, rows: Sequence[Measurement],
                 constants: AnalyticConstants, gpus_per_node: int | None = None) -> np.ndarray:
    """Predicted seconds for each row under `constants`."""
    design = _Design(card, gpu, precision, rows, constants, gpus_per_node)
    return _predict(design, constants)
