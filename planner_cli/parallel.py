"""Independent pieces of work (simulations, mostly) on every core the process may use.

`run_all(tasks)` calls each task and returns the results in the tasks' order, the same as
`[t() for t in tasks]`: the simulator is deterministic, so the answer does not depend on how
many cores ran it. On Linux the tasks run in forked worker processes, which share the
parent's loaded tables (copy-on-write) and send back only the results, and what they added to
the caches registered with `shared` (so later work in this process finds it). Tasks given the
same `groups` key run one after another in one worker, where they share those caches.
Elsewhere, inside a worker, with one core, or with CASCADIA_WORKERS=1, the tasks run one after
another in this process.

A task that fails in a worker is run again here, so its error (or a bug's traceback) is
raised exactly as without workers; a worker that dies (killed, out of memory) leaves its
tasks to this process too.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Hashable, MutableMapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from planner_cli.errors import InputError

T = TypeVar("T")
M = TypeVar("M", bound=MutableMapping)

WORKERS_ENV = "CASCADIA_WORKERS"
_tasks: list[Callable[[], Any]] = []  # what the forked workers call, by index
_shared: list[MutableMapping] = []
_in_worker = False


def shared(cache: M) -> M:
    """Register a process-wide cache: what a worker adds to it comes back to this process."""
    _shared.append(cache)
    return cache


def workers() -> int:
    """How many processes run_all uses: CASCADIA_WORKERS, else the cores this process may
    run on."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1 or n > 1024:
            raise InputError(f"{WORKERS_ENV}={text!r} is not a number of worker processes "
                             "between 1 and 1024", f"unset {WORKERS_ENV} or set e.g. 2")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _call(job: list[int]) -> tuple[list[tuple[bool, Any]], list[dict]]:
    """In a worker: the job's tasks in order, and what they added to the shared caches."""
    global _in_worker
    _in_worker = True
    before = [set(c) for c in _shared]
    out: list[tuple[bool, Any]] = []
    for k in job:
        try:
            out.append((True, _tasks[k]()))
        except Exception:  # the parent runs it again and raises it there, traceback and all
            out.append((False, None))
    return out, [{key: c[key] for key in c.keys() - seen} for c, seen in zip(_shared, before,
                                                                              strict=True)]


def run_all(tasks: list[Callable[[], T]], groups: list[Hashable] | None = None) -> list[T]:
    """[t() for t in tasks], the tasks spread over worker processes where that helps; tasks
    with equal `groups` keys run in the same worker, in their order."""
    global _tasks
    keys: list[Hashable] = list(range(len(tasks))) if groups is None else list(groups)
    jobs: dict[Hashable, list[int]] = {}
    for k, key in enumerate(keys):
        jobs.setdefault(key, []).append(k)
    n = min(workers(), len(jobs))
    if n <= 1 or _in_worker or not sys.platform.startswith("linux"):
        return [t() for t in tasks]
    import multiprocessing

    _tasks = list(tasks)
    done: list[tuple[bool, Any]] = [(False, None)] * len(tasks)
    # what exists now is never collected in the workers: frozen, the workers' collections do
    # not walk it (nor write to its pages, which fork shares until they are written)
    gc.freeze()
    try:
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
            # the longest jobs first, so the last to start are short
            order = sorted(jobs.values(), key=lambda j: (-len(j), j[0]))
            futures = [(job, pool.submit(_call, job)) for job in order]
            for job, f in futures:
                try:
                    results, added = f.result()
                except BrokenProcessPool:
                    break  # a worker died: what is left runs here
                except Exception:  # noqa: S112 - e.g. a result that does not pickle
                    continue  # runs here
                for k, r in zip(job, results, strict=True):
                    done[k] = r
                for cache, new in zip(_shared, added, strict=True):
                    for key, value in new.items():
                        cache[key] = value
    finally:
        gc.unfreeze()
        _tasks = []
    return [r if ok else tasks[k]() for k, (ok, r) in enumerate(done)]
