"""Synthetic traces: seeded Poisson or Gamma arrivals with lengths drawn from real data."""

from __future__ import annotations

from typing import Literal

import numpy as np

from planner_cli.errors import InputError
from planner_cli.workload.trace import Trace, from_columns

Arrival = Literal["poisson", "gamma"]


def interarrival_gaps_s(count: int, rate_per_s: float, arrival: Arrival, cv: float,
                        rng: np.random.Generator) -> np.ndarray:
    """`count` gaps (s) with mean 1/rate. Gamma with shape 1/cv^2 has that CV (cv=1: Poisson)."""
    if rate_per_s <= 0:
        raise InputError(f"arrival rate {rate_per_s} is not positive", "pass --rate > 0")
    if arrival == "poisson":
        return rng.exponential(1.0 / rate_per_s, size=count)
    if cv <= 0:
        raise InputError(f"gamma CV {cv} is not positive", "pass --cv > 0 (1 = Poisson)")
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / (rate_per_s * shape), size=count)


def synth_arrivals_ms(rate_per_s: float, *, arrival: Arrival = "poisson", cv: float = 1.0,
                      num_requests: int | None = None, duration_s: float | None = None,
                      seed: int = 0) -> np.ndarray:
    """Arrival times in ms, the first at 0: `num_requests` of them, or all within `duration_s`."""
    if (num_requests is None) == (duration_s is None):
        raise InputError("give exactly one of a request count and a duration",
                         "pass --num-requests N or --duration-s S")
    rng = np.random.default_rng(seed)
    if num_requests is not None:
        if num_requests < 1:
            raise InputError(f"--num-requests {num_requests} is below 1", "ask for >= 1")
        gaps = interarrival_gaps_s(num_requests - 1, rate_per_s, arrival, cv, rng)
        return np.concatenate(([0.0], np.cumsum(gaps))) * 1000.0
    if duration_s is None:
        raise InputError("a synthetic trace needs a length",
                         "pass --num-requests N or --duration-s S")
    if duration_s <= 0:
        raise InputError(f"--duration-s {duration_s} is not positive", "ask for > 0 s")
    times = [np.zeros(1)]
    last, chunk = 0.0, max(16, int(rate_per_s * duration_s * 1.1))
    while last <= duration_s:
        t = last + np.cumsum(interarrival_gaps_s(chunk, rate_per_s, arrival, cv, rng))
        times.append(t)
        last = float(t[-1])
    arr = np.concatenate(times)
    return arr[arr <= duration_s] * 1000.0


def sample_lengths(inputs: np.ndarray, outputs: np.ndarray, count: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw (input, output) pairs with replacement, keeping each pair together."""
    idx = rng.integers(0, inputs.shape[0], size=count)
    return inputs[idx], outputs[idx]


def synth_trace(inputs: np.ndarray, outputs: np.ndarray, rate_per_s: float, *,
                arrival: Arrival = "poisson", cv: float = 1.0, num_requests: int | None = None,
                duration_s: float | None = None, seed: int = 0,
                source: str = "<synth>") -> Trace:
    """A trace of synthetic arrivals whose lengths are drawn from (inputs, outputs)."""
    arrivals = synth_arrivals_ms(rate_per_s, arrival=arrival, cv=cv, num_requests=num_requests,
                                 duration_s=duration_s, seed=seed)
    # a separate stream for lengths, so the arrivals do not depend on the length source
    rng = np.random.default_rng([seed, 1])
    inp, out = sample_lengths(np.asarray(inputs), np.asarray(outputs), arrivals.shape[0], rng)
    return from_columns(arrivals, inp, out, source)
