"""`cascadia-plan replay`: send a trace's requests to a running cascade (the router) at their
timestamps and measure what it does, to set beside what the plan predicts for the same trace.

Each request is a streamed completion of the trace's prompt length (a text of that many words)
asking for exactly its output length (`max_tokens`, with vLLM's `min_tokens` and `ignore_eos`);
the router's `x-cascadia-tier` header says which tier answered. Time to first token is the first
streamed event after the request left; latency is the last. Requests that fail are counted by
status, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from planner_cli.workload.trace import Trace

WORD = " hi"  # one token in the common tokenizers; the prompt is input_length of them


@dataclass
class Sent:
    tier: str | None = None  # the router's x-cascadia-tier
    status: int | None = None  # None: no HTTP answer (`error` says why)
    error: str | None = None
    ttft_s: float = float("nan")
    e2e_s: float = float("nan")


@dataclass
class Measured:
    """What a replay measured, per request in trace order."""

    sent: list[Sent]
    duration_s: float
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> list[Sent]:
        return [s for s in self.sent if s.status == 200]

    def e2e(self) -> np.ndarray:
        return np.array([s.e2e_s for s in self.ok], dtype=float)

    def ttft(self) -> np.ndarray:
        return np.array([s.ttft_s for s in self.ok], dtype=float)


def request_body(model: str, input_length: int, output_length: int) -> dict:
    return {"model": model, "prompt": WORD.strip() + WORD * (input_length - 1),
            "max_tokens": output_length, "min_tokens": output_length, "ignore_eos": True,
            "stream": True}


async def _one(session: aiohttp.ClientSession, url: str, body: dict, headers: dict,
               timeout_s: float, out: Sent) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url + "/v1/completions", json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            out.status = r.status
            out.tier = r.headers.get("x-cascadia-tier")
            first = True
            async for line in r.content:
                if first and line.startswith(b"data:"):
                    out.ttft_s, first = time.perf_counter() - started, False
            out.e2e_s = time.perf_counter() - started
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        out.status, out.error = None, type(exc).__name__


async def _replay(url: str, trace: Trace, model: str, headers: dict, timeout_s: float,
                  progress: Callable[[int], None] | None) -> Measured:
    ts = (trace.timestamps_ms - trace.timestamps_ms[0]) / 1e3
    sent = [Sent() for _ in range(len(trace))]
    done = 0

    async def at(i: int, session: aiohttp.ClientSession, t0: float) -> None:
        nonlocal done
        delay = t0 + float(ts[i]) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = request_body(model, int(trace.input_lengths[i]), int(trace.output_lengths[i]))
        await _one(session, url, body, headers, timeout_s, sent[i])
        done += 1
        if progress is not None:
            progress(done)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(at(i, session, t0) for i in range(len(trace))))
        duration = time.perf_counter() - t0
    failures: Counter[str] = Counter()
    for s in sent:
        if s.status != 200:
            failures[f"HTTP {s.status}" if s.status is not None else str(s.error)] += 1
    return Measured(sent, duration, failures)


def replay(url: str, trace: Trace, model: str, api_key: str | None = None,
           timeout_s: float = 600.0, progress: Callable[[int], None] | None = None
           ) -> Measured:
    """Send every request of `trace` (already scaled) to the router at `url` at its time."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return asyncio.run(_replay(url.rstrip("/").removesuffix("/v1"), trace, model, headers,
                               timeout_s, progress))
