"""catalog import-hf: HF config.json -> model card through transformers' AutoConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from planner_cli.specs.catalog import load_catalog
from planner_cli.specs.hf_import import ARCH_FIELDS, card_from_hf_config
from planner_cli.specs.model import ModelCard
from tests.conftest import FIXTURES, ROOT
from tests.util import assert_one_line_error

pytest.importorskip("transformers")

CONFIGS = sorted((FIXTURES / "hf_configs").glob("*.json"))


def _shipped_for(path: Path) -> ModelCard:
    hf_id = path.name.removesuffix("_config.json").replace("--", "/", 1)
    return load_catalog(ROOT).model(hf_id)


def test_fixture_configs_present():
    assert len(CONFIGS) >= 19


@pytest.mark.slow  # imports transformers (seconds on first use)
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_import_gives_back_the_shipped_architecture(path):
    shipped = _shipped_for(path)
    imported = card_from_hf_config(path)
    for field in ARCH_FIELDS:
        assert getattr(imported, field) == getattr(shipped, field), field


@pytest.mark.slow  # imports transformers (seconds on first use)
def test_cli_import_writes_a_loadable_card(cli, tmp_path):
    out = tmp_path / "mixtral-test.yaml"
    src = FIXTURES / "hf_configs" / "mistralai--Mixtral-8x7B-v0.1_config.json"
    result = cli("catalog", "import-hf", src, "--name", "mixtral-test", "--out", out)
    assert result.exit_code == 0, result.output
    card = ModelCard.model_validate(yaml.safe_load(out.read_text()))
    assert card.name == "mixtral-test"
    assert card.hf_id == "mistralai/Mixtral-8x7B-v0.1"
    assert card.moe is not None and card.moe.num_experts == 8
    # refuses to overwrite without --force
    again = cli("catalog", "import-hf", src, "--out", out)
    assert_one_line_error(again, "already exists")


@pytest.mark.slow  # imports transformers (seconds on first use)
def test_cli_import_to_stdout(cli):
    src = FIXTURES / "hf_configs" / "Qwen--Qwen3-8B_config.json"
    result = cli("catalog", "import-hf", src)
    assert result.exit_code == 0
    card = yaml.safe_load(result.stdout)
    assert card["name"] == "qwen3-8b" and card["qk_norm"] is True


@pytest.mark.slow  # imports transformers (seconds on first use)
def test_unsupported_or_broken_config(cli, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    assert_one_line_error(cli("catalog", "import-hf", bad), "model_type", "bert")
    bad.write_text("{not json")
    assert_one_line_error(cli("catalog", "import-hf", bad), "config.json")
    assert_one_line_error(cli("catalog", "import-hf", tmp_path / "nope.json"), "no such file")
