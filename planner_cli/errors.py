"""Expected problems, each with a hint; the CLI turns them into one line on stderr.

A bug is anything else and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PlannerError(Exception):
    """An expected problem: bad input, infeasible plan, unusable solver result."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return " ".join(text.split())


class InputError(PlannerError):
    """A file or an option is malformed or inconsistent."""


class UnknownNameError(InputError):
    """A GPU or model name that is not in the catalog."""


class MissingDependencyError(PlannerError):
    """An optional extra (torch, transformers) is needed but not installed."""

    exit_code = 3


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str | None:
    """A 'did you mean ...' hint from close matches, or None."""
    pool = sorted(set(choices))
    lowered = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
