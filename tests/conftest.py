from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner_cli.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def cli():
    """Run the CLI in-process; returns the click Result (stdout, stderr, exit_code)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


@pytest.fixture(scope="session")
def short_trace(tmp_path_factory) -> Path:
    """The first 800 requests of the bundled trace (keeps the end-to-end tests fast)."""
    path = tmp_path_factory.mktemp("trace") / "short.jsonl"
    lines = (ROOT / "examples" / "azure-conv-10min.jsonl").read_text().splitlines(
        keepends=True)[:800]
    path.write_text("".join(lines))
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz", action="store_true",
                     help="run the `fuzz` tests (long property runs of every reader)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fuzz"):
        return
    skip = pytest.mark.skip(reason="a long fuzz run: pass --fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
