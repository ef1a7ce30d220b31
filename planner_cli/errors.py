"""Expected problems, each with a hint; the CLI turns them into one line on stderr.

A bug is anything else and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


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


def did_you_mean(name: str, choices: Iterable[str], n: int = 3,
                 canonical: Mapping[str, str] | None = None) -> str | None:
    """A 'did you mean ...' hint from close matches, or None: the one helper every strict
    loader and catalog lookup uses. `canonical` maps a choice (an alias, an HF id) to the name
    to suggest, so several aliases of one entry suggest it once."""
    pool = sorted(set(choices))
    lowered = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.strip().lower(), list(lowered), n=8, cutoff=0.5)
    names = list(dict.fromkeys(canonical[lowered[c]] if canonical else lowered[c]
                               for c in close))[:n]
    if not names:
        return None
    return "did you mean " + " or ".join(repr(c) for c in names) + "?"
