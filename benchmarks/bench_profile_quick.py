"""Benchmark: `cascadia-plan profile --model qwen3-0.6b --device cpu --quick` as a new user runs
it (target: within 60 s and 2 GB on 2 cores). Prints the wall time and the peak resident memory
of the command, measured from outside (a child process).
Run: python benchmarks/bench_profile_quick.py [--model qwen3-0.6b]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen3-0.6b")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as profiles:
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "planner_cli", "profile", "--model",
                               args.model, "--device", "cpu", "--quick", "--profiles", profiles],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1])
        raise SystemExit(done.returncode)
    print(f"profile --quick of {args.model} on the CPU: {wall:.1f} s wall, "
          f"{peak_gb:.2f} GB peak resident (targets: 60 s, 2 GB)")


if __name__ == "__main__":
    main()
