"""What a client sees of a request on top of the engine's own times (perf.engines.FRONTEND_S,
OUTPUT_LAG): one place for the closed-loop benchmark, stage simulations and the SLO base."""

from __future__ import annotations

import numpy as np


def per_token_s(span_s: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Each request's time per output token after its first: span_s (first token to last) over
    outputs - 1; 0 for a single token, or where the span is not finite (never answered)."""
    more = np.asarray(outputs, dtype=float) - 1.0
    with np.errstate(invalid="ignore"):
        ok = (more > 0) & np.isfinite(span_s)
    return np.divide(span_s, more, out=np.zeros(more.shape), where=ok)


def client_delay(span_s: np.ndarray, outputs: np.ndarray, frontend_s: float,
                 output_lag: float) -> np.ndarray:
    """Seconds each request's first token and completion reach its client after the engine
    has them: the frontend time, plus output_lag times its own time per output token."""
    delay = np.full(np.shape(outputs), frontend_s, dtype=float)
    if output_lag:
        delay += output_lag * per_token_s(span_s, outputs)
    return delay
