"""Benchmark: load a 1,000,000-request canonical trace (issue target: <= 10 s, <= 1 GiB peak).

Writes the trace to a temporary folder (Poisson arrivals at the Azure conv trace's mean rate,
lengths drawn from the bundled Azure example), then loads it in a fresh process and reports the
wall time and that process's peak resident memory. Run: python benchmarks/bench_trace_load.py
[--requests N] [--hash-ids]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADER = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from planner_cli.io import read_trace
t1 = time.perf_counter()
trace = read_trace(Path(sys.argv[1]))
t2 = time.perf_counter()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"requests": len(trace), "import_s": t1 - t0, "load_s": t2 - t1,
                  "peak_rss_mib": peak_kib / 1024}))
"""


def make_trace(path: Path, requests: int, hash_ids: bool) -> None:

    from planner_cli import api, io
    from planner_cli.workload.synth import synth_trace

    example = io.read_trace(api.bundled_example().trace)
    trace = synth_trace(example.input_lengths, example.output_lengths, rate_per_s=5.5,
                        num_requests=requests, seed=0)
    ts = trace.timestamps_ms
    with path.open("w") as handle:
        for r in range(requests):
            rec = {"timestamp": round(float(ts[r]), 3),
                   "input_length": int(trace.input_lengths[r]),
                   "output_length": int(trace.output_lengths[r])}
            if hash_ids:
                n = math.ceil(rec["input_length"] / 512)
                rec["hash_ids"] = list(range(r * 16, r * 16 + n))
            handle.write(json.dumps(rec) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--hash-ids", action="store_true",
                        help="give every request ceil(input/512) prefix-block ids (Mooncake)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        t = time.perf_counter()
        make_trace(path, args.requests, args.hash_ids)
        made = time.perf_counter() - t
        size_mib = path.stat().st_size / 2**20
        out = subprocess.run([sys.executable, "-c", LOADER, str(path)], capture_output=True,
                             text=True, check=True)
        figures = json.loads(out.stdout)
    print(f"trace: {figures['requests']:,} requests, {size_mib:,.0f} MiB on disk "
          f"(hash_ids: {'yes' if args.hash_ids else 'no'}; written in {made:.1f} s)")
    print(f"load time: {figures['load_s']:.2f} s   (target <= 10 s; package import "
          f"{figures['import_s']:.2f} s not counted)")
    print(f"peak RSS of the loading process: {figures['peak_rss_mib']:,.0f} MiB "
          f"(target <= 1024 MiB)")


if __name__ == "__main__":
    main()
