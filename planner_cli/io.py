"""The file edge: every read and write of user files goes through here.

Writes are atomic (a temporary file in the same folder, then a rename), so a failure leaves no
partial output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from planner_cli.errors import InputError
from planner_cli.specs._yaml import load_yaml_model, read_text
from planner_cli.specs.cascade import CascadeSpec
from planner_cli.specs.cluster import ClusterSpec
from planner_cli.workload import importers
from planner_cli.workload.judged import JudgedSample, parse_judged_csv
from planner_cli.workload.synth import Arrival, synth_trace
from planner_cli.workload.trace import Trace, parse_canonical


def _open_text(path: Path):
    try:
        # utf-8-sig: a byte-order mark some editors put first is not part of the text
        return path.open("r", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file", "pass a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}", "check the file") from None


def sniff_format(path: Path) -> str:
    with _open_text(path) as handle:
        try:
            first = ""
            for line in handle:  # the first line with text (blank ones before it are skipped)
                if line.strip():
                    first = line
                    break
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text", "pass a JSONL or CSV trace") from None
    if not first.strip():
        raise InputError(f"{path}: the file is empty", "pass a trace with one request a line")
    return importers.detect_format(path.name, first)


def read_lengths(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) lengths of any trace or length-only CSV, for drawing synthetic ones."""
    fmt = sniff_format(path)
    if fmt == "lengths":
        with _open_text(path) as handle:
            return importers.parse_lengths_csv(handle, str(path))
    trace = read_trace(path, fmt)
    return trace.input_lengths, trace.output_lengths


def read_trace(path: Path, fmt: str | None = None, *, rate_per_s: float | None = None,
               arrival: Arrival = "poisson", cv: float = 1.0, seed: int = 0) -> Trace:
    """Read a trace in any supported format. A length-only CSV needs `rate_per_s` to get
    synthetic (seeded) arrivals."""
    fmt = fmt or sniff_format(path)
    if fmt not in importers.FORMATS:
        raise InputError(f"unknown trace format {fmt!r}",
                         "use one of " + ", ".join(importers.FORMATS))
    source = str(path)
    with _open_text(path) as handle:
        try:
            if fmt in ("canonical", "mooncake"):
                return parse_canonical(handle, source)
            if fmt == "azure":
                return importers.parse_azure_csv(handle, source)
            inputs, outputs = importers.parse_lengths_csv(handle, source)
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text", "pass a JSONL or CSV trace") from None
    if rate_per_s is None:
        raise InputError(f"{path}: a length-only CSV has no arrival times",
                         "pass --rate REQ_PER_S (and --arrival, --seed) to synthesise them")
    return synth_trace(inputs, outputs, rate_per_s, arrival=arrival, cv=cv,
                       num_requests=inputs.shape[0], seed=seed, source=source)


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than a call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: Path, folder: bool = False) -> None:
    """Give a file (0666) or folder (0777) made through a private temporary the permissions the
    user's umask grants, as a plain open() or mkdir() would have."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def refuse_existing(path: Path, force: bool, option: str = "--out") -> None:
    """Before any work: an output that names a folder is refused, an existing file needs
    --force, and its folder must exist."""
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder", f"name a file, e.g. {path / 'plan.json'}")
    if path.exists() and not force:
        raise InputError(f"{option} {path}: already exists", "pass --force to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist", "create it first")


def write_text_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write `chunks` to `path` through a temporary file; nothing is left on failure."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{folder}: output folder does not exist", "create it first")
    if path.is_dir():
        raise InputError(f"{path}: is a folder", "name a file")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
        public_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_judged(path: Path, score_scale: tuple[float, float] | None = None,
                quality_scale: tuple[float, float] | None = None) -> JudgedSample:
    lines = read_text(path, "pass a CSV judged sample").splitlines(keepends=True)
    return parse_judged_csv(lines, str(path), score_scale, quality_scale)


def load_cascade(path: Path) -> CascadeSpec:
    return load_yaml_model(path, CascadeSpec)


def load_cluster(path: Path) -> ClusterSpec:
    return load_yaml_model(path, ClusterSpec)
