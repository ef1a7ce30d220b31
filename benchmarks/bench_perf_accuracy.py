"""Benchmark: accuracy of the performance model against fresh measurements on this machine's CPU.

Profiles a model (default Qwen3-0.6B, all 28 layers) on grid A, fits the
model to it, then measures a disjoint grid B and reports the median and p90 absolute percentage
error of the fitted model's predictions (issue target: median <= 10 %, stretch 5 %). For
comparison, the analytic roofline with its default constants predicts grid B too, with the
CPU's achievable peaks measured here (a large fp32 matmul and a large copy) standing in for a
datasheet. Run: python benchmarks/bench_perf_accuracy.py [--model qwen3-0.6b] [--layers N]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def cpu_peaks() -> tuple[float, float]:
    """(FLOP/s of a 2048^3 fp32 matmul, bytes/s of a 256 MiB copy), medians of 5."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    src = torch.empty(64 * 2**20)
    dst = torch.empty_like(src)
    flops, bws = [], []
    for _ in range(6):
        t = time.perf_counter()
        torch.mm(a, b)
        flops.append(2 * 2048**3 / (time.perf_counter() - t))
        t = time.perf_counter()
        dst.copy_(src)
        bws.append(2 * src.numel() * 4 / (time.perf_counter() - t))  # read + write
    return float(np.median(flops[1:])), float(np.median(bws[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen3-0.6b")
    parser.add_argument("--layers", type=int, default=None,
                        help="layers to time (default: all; fewer are scaled by layer count)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--save", help="write the measured rows of both grids to this JSON")
    parser.add_argument("--load", help="reuse rows saved by --save instead of measuring")
    args = parser.parse_args()

    from planner_cli.perf.analytic import DEFAULT_CONSTANTS
    from planner_cli.perf.calibrate import Measurement, calibrate, predict_rows
    from planner_cli.perf.model import CPU_SPEC
    from planner_cli.perf.profiler import ProfileGrid, profile_model
    from planner_cli.specs.catalog import load_catalog

    card = load_catalog().model(args.model)
    grid_a = ProfileGrid(prefill_tokens=(16, 64, 256), decode_batch=(1, 4, 16),
                         decode_context=(128, 512))
    grid_b = ProfileGrid(prefill_tokens=(32, 128, 384), decode_batch=(2, 8, 24),
                         decode_context=(256, 768))

    def measure() -> tuple[list[Measurement], list[Measurement]]:
        """Both grids in one round-robin profile, so a drift of the machine's speed over the
        minutes of measuring touches both alike."""
        points_a, points_b = grid_a.points(), grid_b.points()
        both = ProfileGrid(explicit=tuple(points_a + points_b))
        t = time.perf_counter()
        result = profile_model(card, device="cpu", layers=args.layers, grid=both, warmup=2,
                               reps=args.reps)
        print(f"measured grids A and B: {len(result.rows)} points in "
              f"{time.perf_counter() - t:.0f} s")
        rows = [Measurement(r["tp"], 1, r["prefill_tokens"], r["decode_batch"],
                            r["context_tokens"], r["time_ms"] / 1e3) for r in result.rows]
        return rows[:len(points_a)], rows[len(points_a):]

    if args.load:
        saved = json.loads(Path(args.load).read_text())
        rows_a = [Measurement(**r) for r in saved["A"]]
        rows_b = [Measurement(**r) for r in saved["B"]]
    else:
        rows_a, rows_b = measure()
    if args.save:
        Path(args.save).write_text(json.dumps({"A": [asdict(r) for r in rows_a],
                                               "B": [asdict(r) for r in rows_b]}, indent=1))
    report = calibrate(card, CPU_SPEC, "bf16", rows_a)
    pred = predict_rows(card, CPU_SPEC, "bf16", rows_b, report.constants)
    t_b = np.array([r.time_s for r in rows_b])
    ape = np.abs(pred - t_b) / t_b

    flops, bw = cpu_peaks()
    measured_spec = CPU_SPEC.model_copy(update={"bf16_dense_tflops": flops / 1e12,
                                                "hbm_bandwidth_gbps": bw / 1e9})
    analytic = predict_rows(card, measured_spec, "bf16", rows_b, DEFAULT_CONSTANTS)
    ape_an = np.abs(analytic - t_b) / t_b

    print(f"model: {card.name}, {args.layers or card.num_hidden_layers} of "
          f"{card.num_hidden_layers} layers timed, "
          f"float32 on the CPU")
    fit_a = predict_rows(card, CPU_SPEC, "bf16", rows_a, report.constants)
    print("grid A points: prefill, batch, context -> measured / fitted (ms)")
    for r, p in zip(rows_a, fit_a, strict=True):
        print(f"  {r.prefill_tokens:4d} {r.decode_batch:3d} {r.context_tokens:6.0f} -> "
              f"{r.time_s * 1e3:8.1f} / {p * 1e3:8.1f}")
    print(f"fit on grid A: median {report.fit_median_ape:.1%}, p90 {report.fit_p90_ape:.1%} "
          f"({report.cv_scheme} CV: median {report.cv_median_ape:.1%})")
    print(f"fitted model on held-out grid B: median APE {np.median(ape):.1%}, "
          f"p90 {np.percentile(ape, 90):.1%}   (target median <= 10 %)")
    print(f"analytic defaults on grid B (CPU peaks measured: {flops / 1e9:.0f} GFLOP/s, "
          f"{bw / 1e9:.1f} GB/s): median APE {np.median(ape_an):.1%}, "
          f"p90 {np.percentile(ape_an, 90):.1%}")
    print("grid B points: prefill, batch, context -> measured / fitted / analytic (ms)")
    for r, p, a in zip(rows_b, pred, analytic, strict=True):
        print(f"  {r.prefill_tokens:4d} {r.decode_batch:3d} {r.context_tokens:6.0f} -> "
              f"{r.time_s * 1e3:8.1f} / {p * 1e3:8.1f} / {a * 1e3:8.1f}")


if __name__ == "__main__":
    main()
