"""The one writer of exports, which cannot destroy what it was not asked to replace.

Every file goes to a hidden sibling of the target, `.NAME.new-XXXX`, which is moved into place
only once complete, so a failure leaves no partial output. Replacing a folder (`--force`)
swaps the new tree with the old one in one atomic step (renameat2's RENAME_EXCHANGE on Linux),
so the target always holds one whole tree, old or new; the old tree (then under the hidden
name) is removed only after. Where the file system cannot exchange, the old folder is renamed
aside to `.NAME.old-XXXX` first and the new one renamed in: a kill between the two leaves the
old tree whole aside, and the next export to that folder puts it back before anything else.

A lock file `.NAME.lock` holding the writer's pid makes a second export to the same folder at
once fail with a clear error; a lock whose process is gone (a killed export) is taken over. The
next export to a folder removes a killed one's leftovers (`.NAME.new-*`, `.NAME.old-*`) and
says so. The current folder, the home folder, a file system's root, a symbolic link and any
folder holding the export's own inputs are refused as the target.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from planner_cli.errors import InputError
from planner_cli.io import public_mode

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_tree(files: dict[str, str], out: Path, force: bool = False,
               inputs: Iterable[Path] = (), notes: list[str] | None = None) -> list[Path]:
    """Write `files` (relative path → text) as the folder `out`, in one move. `inputs`: files
    the export reads, whose folders are refused as `out`; `notes` gets a line for each
    leftover of a killed export that was cleaned up."""
    _refuse_target(out, inputs)
    _check_free(out, force)
    parent = out.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{parent}: output's parent folder does not exist", "create it first")
    out = parent / out.name
    with _locked(out):
        _recover(out, notes if notes is not None else [])
        _check_free(out, force)  # again: a tree put back is replaced only with --force
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
        try:
            public_mode(tmp, folder=True)
            for rel, text in sorted(files.items()):
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8", newline="\n")
                if rel.endswith(".sh"):
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            _move_into_place(tmp, out)
        finally:
            if tmp.exists():  # a failure before the move, or the old tree after a swap
                _remove(tmp)
    return [out / rel for rel in sorted(files)]


def _check_free(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError(f"{out}: exists and is not an empty folder",
                         "choose another --out or pass --force to replace it")


def _refuse_target(out: Path, inputs: Iterable[Path]) -> None:
    """Folders an export must never replace."""
    if out.is_symlink():
        raise InputError(f"{out}: is a symbolic link, which an export does not replace",
                         "pass the folder it points to, or another --out")
    target = out.resolve()
    named = {Path.cwd().resolve(): "the current folder", Path.home().resolve(): "your home folder",
             Path(target.anchor): "the root of the file system"}
    if target in named:
        raise InputError(f"{out}: is {named[target]}, which an export does not replace",
                         "pass a new folder as --out, e.g. --out deploy")
    for path in inputs:
        held = Path(path).resolve()
        if target == held or target in held.parents:
            raise InputError(f"{out}: holds {path}, which this export reads",
                             "pass a new folder as --out, e.g. --out deploy")


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """`.NAME.lock` beside `out` for the export's duration: another live export to the same
    folder is refused; a lock left by a process that is gone is taken over."""
    lock = out.parent / f".{out.name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None and _alive(holder):
                raise InputError(f"{out}: another export to this folder is running (pid "
                                 f"{holder})", f"wait for it, or remove {lock} if it is not "
                                 "running") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # a killed export's lock
    else:
        raise InputError(f"{out}: another export to this folder started at the same time",
                         "run one export to a folder at a time")
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _lock_holder(lock: Path) -> int | None:
    try:
        text = lock.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 12 else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _recover(out: Path, notes: list[str]) -> None:
    """Undo what a killed export to `out` left: an old tree renamed aside goes back when
    `out` is missing; unfinished new trees and old trees already replaced are removed."""
    parent, name = out.parent, out.name
    aside = sorted(parent.glob(f".{name}.old-*"))
    if aside and not out.exists() and not out.is_symlink():
        os.rename(aside[0], out)
        notes.append(f"put back {out}, which an export stopped while replacing it had set "
                     f"aside as {aside[0].name}")
        aside = aside[1:]
    for left in [*aside, *sorted(parent.glob(f".{name}.new-*"))]:
        _remove(left)
        notes.append(f"removed {left.name}, left beside {out} by an export that was stopped")


def _move_into_place(tmp: Path, out: Path) -> None:
    """`tmp` becomes `out`: renamed when `out` does not exist, else swapped with it in one step
    (then `tmp` holds the old tree), or, where the system cannot swap, the old tree renamed
    aside first and removed after."""
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(aside)  # a unique name, free for the rename
    os.rename(out, aside)
    os.rename(tmp, out)
    _remove(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the file system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
