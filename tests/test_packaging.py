"""Installable package: console script, `python -m`, bundled catalog found from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from planner_cli.specs.catalog import data_root


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("CASCADIA_CATALOG_DIR", None)
    return env


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "planner_cli", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, env=_env(), check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cascadia-plan ")


@pytest.mark.slow
def test_console_script_finds_bundled_data_from_another_folder(tmp_path):
    exe = shutil.which("cascadia-plan", path=os.path.dirname(sys.executable)) or shutil.which(
        "cascadia-plan")
    if exe is None:
        pytest.skip("cascadia-plan is not installed in this environment")
    out = subprocess.run([exe, "check", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, env=_env(), check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trace"]["requests"] == 2867


def test_data_root_has_catalog_and_examples():
    root = data_root()
    assert (root / "hardware" / "h100-sxm.yaml").is_file()
    assert (root / "model_cards" / "llama-3.1-8b.yaml").is_file()
    assert (root / "examples" / "azure-conv-10min.jsonl").is_file()
