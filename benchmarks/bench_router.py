"""Benchmark: the cascade router's own overhead (issue 13).

Instant fake OpenAI-compatible engines and an instant fake judge run in one process (pinned to
one core where the machine allows); the router (`cascadia-plan route`, its own process) runs
pinned to another core; C closed-loop clients (aiohttp, in this process) send chat requests for
a fixed time. The same load is first sent straight to a fake engine: the router's added latency
is its percentile minus the direct percentile, and its throughput is what one core of router
sustains. Two cascades: one tier (the router as a proxy) and two tiers with an LLM judge (every
request judged at tier 1; half escalate, so a request costs 1.5 engine calls and one judge call).

Run: python benchmarks/bench_router.py [--concurrency 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import yaml

FAKES = r'''
import itertools, json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

turn = itertools.count()

async def engine(request):
    body = await request.json()
    text = body["messages"][-1]["content"]
    return Response(json.dumps({"id": "x", "object": "chat.completion", "created": 0,
        "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": text}}]}), media_type="application/json")

async def judge(request):
    await request.body()
    score = "9" if next(turn) % 2 else "2"  # half accepted at tier 1, half escalated
    return Response(json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
        "content": score}}]}), media_type="application/json")

async def models(request):
    return Response('{"object": "list", "data": []}', media_type="application/json")

def app(handler):
    return Starlette(routes=[Route("/v1/chat/completions", handler, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])

import asyncio
async def main(ports):
    servers = [uvicorn.Server(uvicorn.Config(app(h), port=p, log_level="error", backlog=4096))
               for h, p in zip((engine, engine, judge), ports)]
    await asyncio.gather(*(s.serve() for s in servers))

asyncio.run(main([int(p) for p in sys.argv[1:4]]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int) -> list[str]:
    """taskset prefix pinning a process to one core, when there are two and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and subprocess.run(["which", "taskset"],
                                                      capture_output=True).returncode == 0:
        return ["taskset", "-c", str(core)]
    return []


async def wait_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status in (200, 503):
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up")
            await asyncio.sleep(0.1)


async def load(url: str, model: str | None, concurrency: int, seconds: float
               ) -> tuple[np.ndarray, float, int]:
    """(latencies s, requests per second, errors) of `concurrency` closed-loop clients."""
    latencies: list[float] = []
    errors = 0
    body = {"messages": [{"role": "user", "content": "hello"}]}
    if model:
        body["model"] = model
    end = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        took = time.perf_counter() - start
    return np.array(latencies), len(latencies) / took, errors


def router_config(path: Path, ports: list[int], tiers: int) -> None:
    cfg = {"schema_version": 2, "name": "bench",
           "tiers": [{"name": f"tier{i + 1}", "model": f"m{i + 1}", "hf_id": f"m{i + 1}",
                      "endpoints": [f"http://127.0.0.1:{ports[i]}/v1"],
                      "threshold": 50.0 if i < tiers - 1 else None} for i in range(tiers)],
           "judger": {"kind": "llm", "model": "judge", "score_scale": "1-10",
                      "endpoints": [f"http://127.0.0.1:{ports[2]}/v1"]}}
    path.write_text(yaml.safe_dump(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    fakes = subprocess.Popen([*pinned(1), sys.executable, "-c", FAKES, *map(str, ports)])
    exe = Path(sys.executable).parent / "cascadia-plan"
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{ports[0]}/v1/models"))
        direct, direct_rps, _ = asyncio.run(load(f"http://127.0.0.1:{ports[0]}", "m1",
                                                 args.concurrency, args.seconds))
        print(f"{args.concurrency} closed-loop clients, {args.seconds:g} s each; direct to an "
              f"instant fake engine: p50 {1e3 * np.percentile(direct, 50):.1f} ms, p99 "
              f"{1e3 * np.percentile(direct, 99):.1f} ms, {direct_rps:,.0f} req/s")
        for tiers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = Path(tmp) / "cascade.yaml"
                router_config(cfg, ports, tiers)
                port = free_port()
                router = subprocess.Popen(
                    [*pinned(0), str(exe), "route", "--config", str(cfg), "--port", str(port)],
                    stderr=subprocess.DEVNULL)
                try:
                    url = f"http://127.0.0.1:{port}"
                    asyncio.run(wait_up(url + "/health"))
                    lat, rps, errors = asyncio.run(load(url, "bench", args.concurrency,
                                                        args.seconds))
                finally:
                    router.terminate()
                    router.wait(10)
            p50, p99 = (np.percentile(lat, q) for q in (50, 99))
            what = ("1 tier (proxy)" if tiers == 1
                    else "2 tiers + judge (half escalate)")
            print(json.dumps({
                "cascade": what, "requests": int(lat.size), "errors": errors,
                "router_req_per_s_one_core": round(rps, 1),
                "p50_ms": round(1e3 * p50, 2), "p99_ms": round(1e3 * p99, 2),
                "added_p50_ms": round(1e3 * (p50 - np.percentile(direct, 50)), 2),
                "added_p99_ms": round(1e3 * (p99 - np.percentile(direct, 99)), 2)}))
    finally:
        fakes.terminate()
        fakes.wait(10)


if __name__ == "__main__":
    main()
