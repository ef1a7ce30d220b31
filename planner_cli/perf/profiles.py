"""The profiles folder (edge): measured tables from `cascadia-plan profile` and saved
calibrations from `cascadia-plan perf calibrate`, and choosing the source of a performance model.

Layout: profiles/<device>/<model>/profile.csv + profile.yaml (measured),
        profiles/<gpu>/<model>/calibration[-<engine>].yaml (fitted constants).

Calibrations are keyed by (GPU, model, engine) and found by `find_calibration`, the one lookup
that `perf`, `simulate` and `optimize` share. The folder is `--profiles DIR`, else
$CASCADIA_PROFILES_DIR, else ./profiles.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from planner_cli.errors import InputError
from planner_cli.io import write_text_atomic
from planner_cli.perf.analytic import DEFAULT_CONSTANTS, AnalyticConstants
from planner_cli.perf.calibrate import FitReport, Measurement, calibrate, parse_measurements
from planner_cli.perf.engines import DEFAULT_ENGINE, ENGINES
from planner_cli.perf.measured import NotCovered, measured_cost
from planner_cli.perf.model import ANALYTIC_SOURCE, CPU_SPEC, PerfLookup, PerfModel
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.specs._yaml import load_yaml_data, read_text

PROFILES_ENV = "CASCADIA_PROFILES_DIR"
PROFILE_COLUMNS = ("tp", "pp", "prefill_tokens", "decode_batch", "context_tokens",
                   "prefill_context", "time_ms", "p10_ms", "p90_ms", "layers_profiled",
                   "head_ms", "per_layer_ms", "allreduce_ms")
MIN_ROWS_TO_FIT = 4


def profiles_root(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(PROFILES_ENV)
    return Path(env) if env else Path("profiles")


def profile_folder(root: Path, device: str, model: str) -> Path:
    return root / device / model


def write_profile(root: Path, device: str, model: str, rows: list[dict[str, Any]],
                  metadata: dict[str, Any], force: bool = False) -> Path:
    folder = profile_folder(root, device, model)
    table = folder / "profile.csv"
    if table.exists() and not force:
        raise InputError(f"{table}: a profile exists already", "pass --force to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(PROFILE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in PROFILE_COLUMNS})
    meta_text = yaml.safe_dump(metadata, sort_keys=False)  # fails before anything is written
    write_text_atomic(folder / "profile.yaml", [meta_text])
    write_text_atomic(table, [buf.getvalue()])
    return table


def read_measurements(path: Path) -> list[Measurement]:
    text = read_text(path, "pass a CSV file")
    return parse_measurements(text.splitlines(keepends=True), str(path))


def calibration_path(root: Path, gpu: str, model: str, engine: str | None) -> Path:
    name = "calibration.yaml" if not engine else f"calibration-{engine}.yaml"
    return profile_folder(root, gpu, model) / name


def find_calibration(root: Path, gpu: str, model: str, engine: str | None) -> Path | None:
    """The calibration of (gpu, model, engine): with an engine, that engine's file, else the
    engine-neutral one; without, the engine-neutral file, else the only engine's file (several
    engines and no choice is an error, never a silent pick)."""
    folder = profile_folder(root, gpu, model)
    if engine:
        for path in (calibration_path(root, gpu, model, engine),
                     calibration_path(root, gpu, model, None)):
            if path.is_file():
                return path
        return None
    neutral = calibration_path(root, gpu, model, None)
    if neutral.is_file():
        return neutral
    named = sorted(folder.glob("calibration-*.yaml")) if folder.is_dir() else []
    if len(named) > 1:
        engines = ", ".join(p.stem.removeprefix("calibration-") for p in named)
        raise InputError(f"{folder}: calibrations for several engines ({engines}) and no "
                         "engine chosen", "pass --engine NAME (or set engine in the plan's "
                         "simulation settings)")
    return named[0] if named else None


def write_calibration(root: Path, gpu: str, model: str, engine: str | None, precision: str,
                      report: FitReport, measurements: Path) -> Path:
    path = calibration_path(root, gpu, model, engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(measurements.read_bytes()).hexdigest()
    doc = {
        "schema_version": 1, "gpu": gpu, "model": model, "engine": engine,
        "precision": precision,
        "constants": {f.name: getattr(report.constants, f.name)
                      for f in fields(AnalyticConstants)},
        "fit": report.to_dict(),
        "measurements": {"file": measurements.name, "sha256": digest},
    }
    write_text_atomic(path, [yaml.safe_dump(doc, sort_keys=False)])
    return path


def read_calibration(path: Path) -> AnalyticConstants:
    try:
        doc = load_yaml_data(path)
        constants = doc["constants"]
        known = {f.name for f in fields(AnalyticConstants)}
        unknown = set(constants) - known
        if unknown:
            raise InputError(f"{path}: unknown constant '{sorted(unknown)[0]}'",
                             "re-run cascadia-plan perf calibrate")
        # a null (older files: an unfitted single-token efficiency) means "not set"
        return DEFAULT_CONSTANTS.with_(**{k: float(v) if k != "kernels_per_layer" else int(v)
                                          for k, v in constants.items() if v is not None})
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"{path}: not a calibration file ({exc})",
                         "re-run cascadia-plan perf calibrate") from None


_FIT_CACHE: dict[tuple, tuple[AnalyticConstants, FitReport]] = {}


def fitted_profile(shape: ReplicaShape, table: Path) -> tuple[AnalyticConstants, FitReport] | None:
    """Constants fitted to the rows of a profile table for this shape's tp (pp 1), if enough."""
    stat = table.stat()
    key = (str(table.resolve()), stat.st_mtime_ns, shape.card.name, shape.gpu.name, shape.tp,
           shape.precision)
    if key not in _FIT_CACHE:
        rows = [r for r in read_measurements(table) if r.tp == shape.tp and r.pp == 1]
        if len(rows) < MIN_ROWS_TO_FIT:
            return None
        report = calibrate(shape.card, shape.gpu, shape.precision, rows,
                           gpus_per_node=shape.gpus_per_node)
        _FIT_CACHE[key] = (report.constants, report)
    return _FIT_CACHE[key]


def carried_calibration(root: Path, gpu: str, model: str, engine: str) -> Path | None:
    """A calibration of the same model and engine saved for another GPU (the first by GPU
    name): its efficiencies are shares of that GPU's peaks, so they carry to this one's."""
    if not root.is_dir():
        return None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != gpu):
        found = find_calibration(root, folder.name, model, engine)
        if found is not None:
            return found
    return None


def check_engine(engine: str | None) -> str:
    """The engine named (default vllm), refused when it is not one we plan for."""
    name = engine or DEFAULT_ENGINE
    if name not in ENGINES:
        raise InputError(f"engine {name!r} is not known", "use " + " or ".join(ENGINES))
    return name


def perf_model(shape: ReplicaShape, root: Path | None = None,
               engine: str | None = None) -> PerfModel:
    """The best-sourced model for `shape` under `engine` (default vllm): the user's own
    measurements first — a profile of the same device, model and tp, else a calibration saved
    for (GPU, model, engine) — then aiconfigurator-core's measured kernels where they cover the
    shape, then a calibration of the model and engine carried from another GPU, else the
    analytic roofline; the source says which, and why nothing measured applied. A shape with
    attention data parallelism has the measured tables only (_data_parallel_model)."""
    engine = check_engine(engine)
    if shape.dp > 1:
        return _data_parallel_model(shape, engine)
    folder = profile_folder(profiles_root(root), shape.gpu.name, shape.card.name)
    table = folder / "profile.csv"
    if table.is_file() and shape.pp == 1:
        fitted = fitted_profile(shape, table)
        if fitted is not None:
            constants, report = fitted
            return PerfModel(shape, constants,
                             f"profile:{table} (tp={shape.tp}, {report.rows} rows, fit median "
                             f"error {report.fit_median_ape:.1%})")
    cal = find_calibration(profiles_root(root), shape.gpu.name, shape.card.name, engine)
    if cal is not None:
        return PerfModel(shape, read_calibration(cal), f"calibrated:{cal}")
    if shape.gpu.name == CPU_SPEC.name:
        raise InputError(f"no CPU profile of {shape.card.name} under {folder}",
                         f"run: cascadia-plan profile --model {shape.card.name} --device cpu")
    try:
        measured = measured_cost(shape, engine)
    except NotCovered as why:
        carried = carried_calibration(profiles_root(root), shape.gpu.name, shape.card.name,
                                      engine)
        if carried is not None:
            return PerfModel(shape, read_calibration(carried),
                             f"calibrated:{carried} (carried from {carried.parent.parent.name} "
                             f"to {shape.gpu.name} as shares of each GPU's peaks; not "
                             f"measured: {why})")
        return PerfModel(shape, DEFAULT_CONSTANTS, f"{ANALYTIC_SOURCE} (not measured: {why})")
    return PerfModel(shape, DEFAULT_CONSTANTS, measured.source, measured)


def _data_parallel_model(shape: ReplicaShape, engine: str) -> PerfModel:
    """An attention-data-parallel shape's model: the measured tables only (profiles,
    calibrations and the analytic model time one tp group's attention and experts alike)."""
    try:
        measured = measured_cost(shape, engine)
    except NotCovered as why:
        raise InputError(f"{shape.label} under {engine}: attention data parallelism is timed "
                         f"from aiconfigurator-core's tables only, and they do not cover it "
                         f"({why})", "use dp 1, or a GPU, precision or engine they cover"
                         ) from None
    return PerfModel(shape, DEFAULT_CONSTANTS, measured.source, measured)


def perf_lookup(root: Path | None = None) -> PerfLookup:
    """The one way every command finds a shape's performance model under an engine: profiles
    folder `root` (default: $CASCADIA_PROFILES_DIR, else ./profiles), then the measured
    tables, then the analytic model."""
    folder = profiles_root(root)

    def lookup(shape: ReplicaShape, engine: str) -> PerfModel:
        return perf_model(shape, folder, engine)

    return lookup
