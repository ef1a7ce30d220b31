"""Exports that cannot destroy: dangerous targets refused, one export per folder at a time,
--force replacing the old tree in one atomic step, and a kill at any moment leaving one whole
tree (old or new) with the leftovers cleaned by the next export."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner_cli.errors import InputError
from planner_cli.export import writer
from planner_cli.export.writer import write_tree
from tests.conftest import ROOT
from tests.util import assert_one_line_error

FILES = 120


def tree(tag: str) -> dict[str, str]:
    return {f"d{i // 20}/f{i}.txt": f"{tag} {i}\n" * 50 for i in range(FILES)}


def tag_of(out: Path) -> str:
    """The one version a folder holds whole (an assertion error if it is mixed or partial)."""
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt"))
    assert found == sorted(tree("x")), f"{out} is not a whole tree"
    tags = {(out / rel).read_text().split(" ", 1)[0] for rel in found}
    assert len(tags) == 1, f"{out} mixes {tags}"
    tag = tags.pop()
    assert all((out / rel).read_text() == text for rel, text in tree(tag).items())
    return tag


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------- targets refused

def test_the_current_home_and_root_folders_are_refused(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (Path("."), Path(str(tmp_path))):
        with pytest.raises(InputError, match="current folder"):
            write_tree(tree("new"), out, force=True)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(InputError, match="home folder"):
        write_tree(tree("new"), home, force=True)
    with pytest.raises(InputError, match="root of the file system"):
        write_tree(tree("new"), Path("/"), force=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_symlink_and_a_folder_holding_an_input_are_refused(tmp_path):
    real = tmp_path / "real"
    write_tree(tree("old"), real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InputError, match="symbolic link"):
        write_tree(tree("new"), link, force=True)
    plan = tmp_path / "plans" / "plan.json"
    plan.parent.mkdir()
    plan.write_text("{}")
    for out in (tmp_path / "plans", tmp_path):
        with pytest.raises(InputError, match="which this export reads"):
            write_tree(tree("new"), out, force=True, inputs=[plan])
    assert tag_of(real) == "old" and plan.read_text() == "{}"


def test_export_into_the_current_folder_is_one_line_and_deletes_nothing(cli, tmp_path,
                                                                          monkeypatch):
    plan = tmp_path / "plan.yaml"
    plan.write_text((ROOT / "examples" / "plan-arena-open.yaml").read_text())
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("export", "--plan", plan, "--format", "vllm", "--out", ".",
                              "--force"), "current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plan.yaml"]


# ---------------------------------------------------------------- one export at a time

def test_a_live_export_holds_the_folder(tmp_path):
    out = tmp_path / "deploy"
    (tmp_path / ".deploy.lock").write_text(f"{os.getpid()}\n")
    with pytest.raises(InputError, match="another export to this folder is running"):
        write_tree(tree("new"), out)
    assert not out.exists()


def test_a_killed_exports_lock_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ".deploy.lock").write_text(f"{gone}\n")
    write_tree(tree("new"), tmp_path / "deploy")
    assert tag_of(tmp_path / "deploy") == "new" and leftovers(tmp_path / "deploy") == []


# ---------------------------------------------------------------- replacing

@pytest.mark.parametrize("exchange", [True, False])
def test_force_replaces_the_whole_tree_and_leaves_nothing_beside(tmp_path, monkeypatch,
                                                                  exchange):
    if not exchange:  # a file system that cannot swap: the old tree goes aside first
        monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    out = tmp_path / "deploy"
    write_tree(tree("old"), out)
    (out / "extra.txt").write_text("from before")
    with pytest.raises(InputError, match="not an empty folder"):
        write_tree(tree("new"), out)
    write_tree(tree("new"), out, force=True)
    assert tag_of(out) == "new" and not (out / "extra.txt").exists()
    assert leftovers(out) == []


def test_the_next_export_puts_back_an_old_tree_left_aside_and_cleans_up(tmp_path):
    out = tmp_path / "deploy"
    write_tree(tree("old"), out)
    os.rename(out, tmp_path / ".deploy.old-k1ll3d")  # killed between its two renames
    (tmp_path / ".deploy.new-k1ll3d").mkdir()  # and its unfinished new tree
    notes: list[str] = []
    with pytest.raises(InputError, match="not an empty folder"):  # put back: not replaced
        write_tree(tree("new"), out, notes=notes)
    assert tag_of(out) == "old" and leftovers(out) == []
    assert any("put back" in n for n in notes) and any("removed" in n for n in notes)
    write_tree(tree("new"), out, force=True)
    assert tag_of(out) == "new"


KILLED_EXPORT = """
import sys
from pathlib import Path
from planner_cli.export.writer import write_tree
files = {f"d{i // 20}/f{i}.txt": f"{sys.argv[2]} {i}\\n" * 50 for i in range(FILES)}
write_tree(files, Path(sys.argv[1]), force=True)
""".replace("FILES", str(FILES))


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_a_kill_at_any_moment_leaves_one_whole_tree(tmp_path, exchange):
    """SIGKILL at seeded random moments of `export --force`: the folder is always the old tree
    or the new one, whole (after the next export puts back one set aside), and the next export
    leaves nothing beside it."""
    script = tmp_path / "export.py"
    body = KILLED_EXPORT
    if not exchange:
        body = body.replace("from planner_cli.export.writer import write_tree",
                            "from planner_cli.export import writer\n"
                            "writer._exchange = lambda a, b: False\n"
                            "write_tree = writer.write_tree")
    script.write_text(body)
    out = tmp_path / "deploy"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(tag: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(out), tag], env=env)

    t = time.perf_counter()
    assert start("v0").wait() == 0
    whole = time.perf_counter() - t
    rng = random.Random(11)
    current, kills, old_kept, new_landed = "v0", 20, 0, 0
    for k in range(1, kills + 1):
        proc = start(f"v{k}")
        time.sleep(rng.uniform(0.0, whole * 1.1))
        proc.kill()
        proc.wait()
        if not out.exists():  # set aside by the fallback: the next export puts it back
            write_tree({}, tmp_path / "unrelated")  # (another folder: nothing to recover)
            notes: list[str] = []
            with pytest.raises(InputError):
                write_tree(tree("probe"), out, notes=notes)
            assert any("put back" in n for n in notes)
        got = tag_of(out)
        assert got in (current, f"v{k}")
        new_landed += got != current
        old_kept += got == current
        current = got
    assert start("final").wait() == 0
    assert tag_of(out) == "final" and leftovers(out) == []
    assert new_landed and old_kept  # kills landed both before and after the swap
