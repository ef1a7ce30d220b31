"""The request mix: for every trace request, its judge score, answer quality and output length
at each cascade stage — inline in the trace, or paired with a judged sample by seeded sampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner_cli.workload.judged import JudgedSample
from planner_cli.workload.trace import Trace


@dataclass(frozen=True)
class RequestMix:
    """Per trace request: its score at each stage, output tokens at each stage, and quality."""

    scores: np.ndarray  # (n, m), 0-100
    quality: np.ndarray  # (n, m)
    outputs: list[np.ndarray]  # m arrays of (n,)
    source: str  # where the scores came from

    def column(self, i: int) -> RequestMix:
        """The mix of stage i alone (a single-model deployment of that stage's model)."""
        return self.columns([i])

    def head(self, n: int) -> RequestMix:
        """The first n requests' mix."""
        return RequestMix(self.scores[:n], self.quality[:n], [o[:n] for o in self.outputs],
                          self.source)

    def columns(self, idx: Sequence[int]) -> RequestMix:
        """The mix of the stages `idx` (in that order): a shorter cascade of their models."""
        cols = list(idx)
        return RequestMix(self.scores[:, cols], self.quality[:, cols],
                          [self.outputs[i] for i in cols], self.source)


def inline_mix(trace: Trace, keys: Sequence[str]) -> RequestMix | None:
    """The mix from the trace's own `cascadia.scores` under `keys` (one per stage), when every
    line carries a score for every stage; else None."""
    if not all(k in trace.scores and not np.isnan(trace.scores[k]).any() for k in keys):
        return None
    scores = np.column_stack([trace.scores[k] for k in keys])
    quality = np.column_stack([trace.quality.get(k, trace.scores[k]) for k in keys])
    outputs = []
    for k in keys:
        per = trace.model_output_lengths.get(k)
        outputs.append(np.where(per >= 1, per, trace.output_lengths)
                       if per is not None else trace.output_lengths)
    return RequestMix(scores, quality, outputs, f"inline scores of {trace.source}")


def sampled_mix(trace: Trace, sample: JudgedSample, seed: int) -> RequestMix:
    """Each trace request paired with a judged prompt drawn with replacement (seeded); output
    lengths from the sample where it has them, else the trace's."""
    n = len(trace)
    pick = np.random.default_rng(seed).integers(0, len(sample), size=n)
    outputs = []
    for i in range(len(sample.models)):
        if sample.output_tokens is not None:
            per = sample.output_tokens[pick, i]
            outputs.append(np.where(per >= 1, per, trace.output_lengths))
        else:
            outputs.append(trace.output_lengths)
    label = f"SYNTHETIC judged sample ({sample.synthetic}): " if sample.synthetic else ""
    return RequestMix(sample.scores[pick], sample.quality[pick], outputs,
                      f"{label}{len(sample)} judged prompts of {sample.source} paired with the "
                      f"trace's requests by seeded sampling (seed {seed})")
