"""The docs cannot drift: README commands exist, CI runs the README's test command, every
command has help text (STYLE.md #12)."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command

from planner_cli.cli import app
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_first_screen_has_exactly_two_commands():
    head = README.split("## ")[0]
    blocks = code_blocks(head)
    assert len(blocks) == 2
    install_run, install_test = (b.strip() for b in blocks)
    assert "pip install ." in install_run and "cascadia-plan " in install_run
    assert "pip install" in install_test and "pytest" in install_test


def test_ci_runs_the_readme_test_command_exactly():
    test_cmd = code_blocks(README.split("## ")[0])[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci


def _command_paths() -> list[tuple[str, ...]]:
    paths = []
    for block in code_blocks(README):
        for line in block.splitlines():
            for m in re.finditer(r"cascadia-plan((?: [a-z][a-z-]*)+)", line):
                words = m.group(1).split()
                paths.append(tuple(words))
    return sorted(set(paths))


def test_readme_names_commands():
    assert len(_command_paths()) >= 7


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_readme_command_exists(cli, path):
    group = get_command(app)
    words = []
    for word in path:
        if not hasattr(group, "commands") or word not in group.commands:
            break
        group = group.commands[word]
        words.append(word)
    assert words, f"README names an unknown command: cascadia-plan {' '.join(path)}"
    result = cli(*words, "--help")
    assert result.exit_code == 0, result.output


def _all_commands(cmd, prefix=()):
    yield prefix, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _all_commands(sub, (*prefix, name))


def test_every_command_has_help_text():
    for path, cmd in _all_commands(get_command(app)):
        assert (cmd.help or "").strip(), f"no help for {' '.join(path) or 'root'}"
        for param in cmd.params:
            if getattr(param, "help", None) is None and param.param_type_name == "option":
                pytest.fail(f"option {param.name} of {' '.join(path)} has no help")


def test_help_paragraphs_wrap_to_the_terminal_and_keep_their_brackets():
    # typer keeps a docstring's line breaks after its first paragraph: at 80 columns the
    # source's ~95-character lines broke in mid-sentence; and rich read [router] as markup
    for path, cmd in _all_commands(get_command(app)):
        for para in (cmd.help or "").split("\n\n"):
            assert "\n" not in para, f"a line break inside a paragraph of {' '.join(path)}"
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["route", "--help"], terminal_width=80,
                             env={"COLUMNS": "80"}).output
    assert "cascadia-plan[router]" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def _root_options() -> set[str]:
    return {o for p in get_command(app).params for o in getattr(p, "opts", [])}


@pytest.mark.slow  # seconds of work: the end-to-end layer keeps the unit layer under a minute
def test_every_readme_option_exists_on_its_command():
    """An option named in a README command line is an option of that command."""
    for block in code_blocks(README):
        for line in block.splitlines():
            m = re.match(r"\s*cascadia-plan((?: [a-z][a-z-]*)+)(.*)", line)
            if not m:
                continue
            group = get_command(app)
            for word in m.group(1).split():
                if word in getattr(group, "commands", {}):
                    group = group.commands[word]
            known = {o for p in group.params for o in getattr(p, "opts", [])} | _root_options()
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2)):
                assert option in known, f"README: {line.strip()[:60]}… names {option}"
