"""The one writer of exports: every file goes to a temporary folder beside the target, which
is then moved into place, so a failure leaves no partial output."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from planner_cli.errors import InputError
from planner_cli.io import public_mode


def write_tree(files: dict[str, str], out: Path, force: bool = False) -> list[Path]:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError(f"{out}: exists and is not an empty folder",
                         "choose another --out or pass --force to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise InputError(f"{parent}: output's parent folder does not exist", "create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        public_mode(tmp, folder=True)
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            if rel.endswith(".sh"):
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / rel for rel in sorted(files)]
