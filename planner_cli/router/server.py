"""The cascade router: an OpenAI-compatible HTTP server that runs a plan's cascade.

Per request: tier 1's endpoint answers, the judger scores the answer, the answer is returned
when the score reaches the tier's threshold, else the next tier is asked; the last tier's answer
is always returned. Built on starlette + uvicorn, with aiohttp for the upstream calls (the
`router` extra; httpx's connection pool slows quadratically with the connections open, 13 s for
500 concurrent requests on loopback against aiohttp's 0.9 s).

- Replicas of a tier are balanced by least outstanding requests (then fewest served).
- Faults (`escalation` in the config): a tier call that times out, cannot connect or answers
  5xx/408/429 is retried on another replica (`retries` times), then the request escalates; the
  last tier's failure is the client's error (502, OpenAI-style). A judge failure, or a reply
  that is not one number on its scale, escalates. A client error (other 4xx) is the client's
  own and is passed back as is. A client that disconnects cancels the upstream calls.
- Streaming: a non-final tier's answer is buffered (it must be judged) and then sent as
  server-sent events; the last tier streams straight through.
- Every response carries `x-cascadia-tier` (the tier that answered) and, when judged,
  `x-cascadia-score` (0-100).
- With CASCADIA_API_KEY set, /v1/* needs `Authorization: Bearer <key>` (/health and /metrics
  stay open for probes). Upstream URLs come only from the config; bodies over
  `max_request_bytes` are refused (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from planner_cli.export.router import CLIENT_KEY_ENV, RouterConfig, RouterTier
from planner_cli.router.judge import (
    JudgeError,
    answer_of,
    judge_messages,
    logprob_confidence,
    parse_score,
    question_of,
)

HEALTH_TIMEOUT_S = 2.0
_RETRYABLE = {408, 429}
PATHS = {"chat": "/chat/completions", "completions": "/completions"}


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """An OpenAI-style error body."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": status}}, status_code=status)


class UpstreamError(Exception):
    """Every replica of a tier (or of the judge) failed; the message says how."""


class ClientError(Exception):
    """The upstream refused the request itself (a 4xx the client must fix)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


@dataclass
class Replicas:
    """One tier's (or the judge's) endpoints, balanced by least outstanding requests."""

    urls: list[str]
    outstanding: list[int] = field(init=False)  # calls open, per replica
    served: list[int] = field(init=False)  # calls answered, per replica

    def __post_init__(self) -> None:
        self.outstanding = [0] * len(self.urls)
        self.served = [0] * len(self.urls)

    def pick(self, exclude: set[int]) -> int | None:
        free = [i for i in range(len(self.urls)) if i not in exclude]
        if not free:
            return None
        return min(free, key=lambda i: (self.outstanding[i], self.served[i], i))


class Metrics:
    """Counters in the Prometheus text format."""

    def __init__(self) -> None:
        self.answered: Counter[str] = Counter()  # by tier
        self.escalations: Counter[tuple[str, str]] = Counter()  # (tier, reason)
        self.upstream_errors: Counter[str] = Counter()  # by tier or "judge"
        self.failed: Counter[str] = Counter()  # by reason
        self.in_flight = 0
        self.seconds_sum = 0.0
        self.seconds_count = 0

    def render(self, pools: dict[str, Replicas]) -> str:
        lines = []

        def family(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {value:g}" for labels, value in rows)

        family("cascadia_router_requests_total", "counter",
               "Requests answered, by the tier whose answer was returned.",
               [(f'{{tier="{t}"}}', n) for t, n in sorted(self.answered.items())])
        family("cascadia_router_escalations_total", "counter",
               "Requests a tier passed on, by tier and reason (score, error, judge).",
               [(f'{{tier="{t}",reason="{r}"}}', n)
                for (t, r), n in sorted(self.escalations.items())])
        family("cascadia_router_upstream_errors_total", "counter",
               "Failed upstream calls (timeouts, refused connections, 5xx), by tier.",
               [(f'{{tier="{t}"}}', n) for t, n in sorted(self.upstream_errors.items())])
        family("cascadia_router_failed_requests_total", "counter",
               "Requests answered with an error, by reason.",
               [(f'{{reason="{r}"}}', n) for r, n in sorted(self.failed.items())])
        family("cascadia_router_in_flight", "gauge", "Requests being served.",
               [("", self.in_flight)])
        family("cascadia_router_outstanding", "gauge",
               "Upstream calls open, by tier (or judge) and replica.",
               [(f'{{tier="{name}",replica="{url}"}}', n)
                for name, pool in pools.items()
                for url, n in zip(pool.urls, pool.outstanding, strict=True)])
        family("cascadia_router_request_seconds", "summary",
               "Time from a request's arrival to its answer.",
               [("_sum", self.seconds_sum), ("_count", self.seconds_count)])
        return "\n".join(lines) + "\n"


@dataclass
class Outcome:
    """A request's answer: the tier that gave it, its score, and the body or a stream."""

    tier: str
    score: float | None
    body: dict | None = None
    stream: aiohttp.ClientResponse | None = None  # holds a replica of `pool` until released
    pool: Replicas | None = None
    slot: int = 0

    def release(self) -> None:
        """Close a streamed answer and free its replica slot (once; later calls do nothing)."""
        if self.stream is not None and self.pool is not None:
            self.stream.release()
            self.pool.outstanding[self.slot] -= 1
            self.pool = None


class Router:
    def __init__(self, cfg: RouterConfig, client: aiohttp.ClientSession,
                 env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.client = client
        self.metrics = Metrics()
        self.tiers = [Replicas(list(t.endpoints)) for t in cfg.tiers]
        self.judge = Replicas(list(cfg.judger.endpoints))
        # every pool by the name the metrics give it
        self.pools = {t.name: p for t, p in zip(cfg.tiers, self.tiers, strict=True)} | {
            "judge": self.judge}
        key = env.get(cfg.api_key_env)
        self.tier_headers = {"Authorization": f"Bearer {key}"} if key else {}
        judge_key = env.get(cfg.judger.api_key_env or cfg.api_key_env)
        self.judge_headers = {"Authorization": f"Bearer {judge_key}"} if judge_key else {}
        self.timeout = cfg.escalation.timeout_s

    # ------------------------------------------------------------ upstream calls

    async def _post(self, pool: Replicas, label: str, path: str, body: dict,
                    headers: dict, stream: bool = False
                    ) -> tuple[aiohttp.ClientResponse, int]:
        """POST to one replica after another (retries + 1 tries) until one answers 200;
        returns the response and the replica it holds (outstanding until released). A stream's
        timeout bounds each wait for data, any other call's the whole answer."""
        timeout = (aiohttp.ClientTimeout(sock_connect=self.timeout, sock_read=self.timeout)
                   if stream else aiohttp.ClientTimeout(total=self.timeout))
        tried: set[int] = set()
        why = "no replica"
        for _ in range(self.cfg.escalation.retries + 1):
            i = pool.pick(tried)
            if i is None:
                break
            tried.add(i)
            pool.outstanding[i] += 1
            try:
                response = await self.client.post(pool.urls[i].rstrip("/") + path, json=body,
                                                  headers=headers, timeout=timeout)
                if response.status != 200:
                    status, text = response.status, await response.read()
                    response.release()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                pool.outstanding[i] -= 1
                self.metrics.upstream_errors[label] += 1
                why = f"{pool.urls[i]}: {type(exc).__name__}"
                continue
            except BaseException:  # cancelled (the client left): the slot is free again
                pool.outstanding[i] -= 1
                raise
            if response.status == 200:
                pool.served[i] += 1
                return response, i
            pool.outstanding[i] -= 1
            if status < 500 and status not in _RETRYABLE:
                raise ClientError(status, text)
            self.metrics.upstream_errors[label] += 1
            why = f"{pool.urls[i]}: HTTP {status}"
        raise UpstreamError(f"{label}: every replica failed ({why})")

    async def _json(self, pool: Replicas, label: str, path: str, body: dict,
                    headers: dict) -> dict:
        response, i = await self._post(pool, label, path, body, headers)
        try:
            data = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.upstream_errors[label] += 1
            raise UpstreamError(f"{label}: {pool.urls[i]} broke off ({type(exc).__name__})"
                                ) from None
        except ValueError:
            self.metrics.upstream_errors[label] += 1
            raise UpstreamError(f"{label}: {pool.urls[i]} answered no JSON") from None
        finally:
            response.release()
            pool.outstanding[i] -= 1
        if not isinstance(data, dict):
            raise UpstreamError(f"{label}: {pool.urls[i]} answered no JSON object")
        return data

    async def score(self, request_body: dict, answer: dict) -> float:
        j = self.cfg.judger
        if j.kind == "logprob":
            choices = answer.get("choices") or [{}]
            return logprob_confidence(choices[0] if isinstance(choices[0], dict) else {})
        body = {"model": j.model, "max_tokens": j.max_tokens, "temperature": 0.0,
                "messages": judge_messages(j.prompt, question_of(request_body),
                                           answer_of(answer), j.score_scale)}
        try:
            reply = await self._json(self.judge, "judge", PATHS["chat"], body,
                                     self.judge_headers)
        except (UpstreamError, ClientError) as exc:
            raise JudgeError(f"the judge failed: {exc}") from None
        return parse_score(answer_of(reply), j.score_scale)

    # ------------------------------------------------------------ the cascade

    def _tier_body(self, kind: str, body: dict, tier: RouterTier, last: bool,
                   stream: bool) -> dict:
        out = dict(body, model=tier.model, stream=stream and last)
        if not (stream and last):
            out.pop("stream_options", None)
        if self.cfg.judger.kind == "logprob" and not last:
            out["logprobs"] = True if kind == "chat" else max(int(body.get("logprobs") or 1), 1)
        return out

    async def run(self, kind: str, body: dict) -> Outcome:
        stream = bool(body.get("stream"))
        path = PATHS[kind]
        n = len(self.cfg.tiers)
        for i, tier in enumerate(self.cfg.tiers):
            last = i == n - 1
            upstream = self._tier_body(kind, body, tier, last, stream)
            if last and stream:
                response, slot = await self._post(self.tiers[i], tier.name, path, upstream,
                                                  self.tier_headers, stream=True)
                return Outcome(tier.name, None, stream=response, pool=self.tiers[i], slot=slot)
            try:
                answer = await self._json(self.tiers[i], tier.name, path, upstream,
                                          self.tier_headers)
            except UpstreamError:
                if last:
                    raise
                self.metrics.escalations[(tier.name, "error")] += 1
                continue
            if last:
                return Outcome(tier.name, None, body=answer)
            try:
                score = await self.score(body, answer)
            except JudgeError:
                self.metrics.upstream_errors["judge"] += 1
                self.metrics.escalations[(tier.name, "judge")] += 1
                continue
            if tier.threshold is not None and score >= tier.threshold:
                if self.cfg.judger.kind == "logprob" and not body.get("logprobs"):
                    for choice in answer.get("choices") or []:
                        if isinstance(choice, dict):
                            choice.pop("logprobs", None)
                return Outcome(tier.name, score, body=answer)
            self.metrics.escalations[(tier.name, "score")] += 1
        raise AssertionError("the last tier always answers")  # pragma: no cover

    # ------------------------------------------------------------ health

    async def _reachable(self, url: str, headers: dict) -> bool:
        try:
            async with self.client.get(
                    url.rstrip("/") + "/models", headers=headers,
                    timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def down(self) -> list[str]:
        """The tiers (and the judge) with no reachable replica."""
        groups = [(t.name, t.endpoints, self.tier_headers) for t in self.cfg.tiers]
        if self.cfg.judger.kind == "llm":
            groups.append(("judge", self.cfg.judger.endpoints, self.judge_headers))
        checks = [[self._reachable(u, h) for u in urls] for _, urls, h in groups]
        results = await asyncio.gather(*(asyncio.gather(*c) for c in checks))
        return [name for (name, _, _), ok in zip(groups, results, strict=True) if not any(ok)]


# ---------------------------------------------------------------- the HTTP app

def _sse(kind: str, answer: dict, model: str) -> AsyncIterator[bytes]:
    """A buffered answer as the server-sent events a streaming client expects."""

    async def events() -> AsyncIterator[bytes]:
        base = {"id": answer.get("id", "cascadia"), "created": answer.get("created", 0),
                "model": model}
        for index, choice in enumerate(answer.get("choices") or []):
            if not isinstance(choice, dict):
                continue
            text = answer_of({"choices": [choice]})
            finish = choice.get("finish_reason")
            if kind == "chat":
                chunks = [{"index": choice.get("index", index),
                           "delta": {"role": "assistant", "content": text},
                           "finish_reason": None},
                          {"index": choice.get("index", index), "delta": {},
                           "finish_reason": finish}]
                obj = "chat.completion.chunk"
            else:
                chunks = [{"index": choice.get("index", index), "text": text,
                           "finish_reason": None},
                          {"index": choice.get("index", index), "text": "",
                           "finish_reason": finish}]
                obj = "text_completion"
            for chunk in chunks:
                event = dict(base, object=obj, choices=[chunk])
                yield f"data: {json.dumps(event)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return events()


class _Relay(StreamingResponse):
    """A streamed upstream answer whose replica slot is released however the response ends,
    a client that leaves before the first chunk included."""

    def __init__(self, outcome: Outcome, stream: aiohttp.ClientResponse, **kwargs: Any) -> None:
        super().__init__(stream.content.iter_any(), **kwargs)
        self._outcome = outcome

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._outcome.release()


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(cfg: RouterConfig, env: Mapping[str, str] | None = None) -> Starlette:
    """The router's ASGI app (`env`: where the API keys are read; default os.environ)."""
    env = os.environ if env is None else env
    client_key = env.get(CLIENT_KEY_ENV)
    state: dict[str, Router] = {}

    def router() -> Router:
        if "router" not in state:  # made in the server's event loop, on first use
            client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            state["router"] = Router(cfg, client, env)
        return state["router"]

    def authorised(request: Request) -> bool:
        if not client_key:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {client_key}".encode())

    async def completions(request: Request, kind: str) -> Response:
        if not authorised(request):
            return error(401, "the API key is missing or wrong", "authentication_error")
        raw = await _read_body(request, cfg.max_request_bytes)
        if raw is None:
            return error(413, f"the request body is over {cfg.max_request_bytes} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "the request body is not JSON")
        field_name = "messages" if kind == "chat" else "prompt"
        if not isinstance(body, dict) or field_name not in body:
            return error(400, f"the request needs '{field_name}'")
        model = body.get("model")
        if model is not None and model != cfg.name:
            return error(404, f"model {model!r} is not served here; this router serves "
                              f"{cfg.name!r}", "model_not_found")
        r = router()
        r.metrics.in_flight += 1
        started = time.perf_counter()
        work = asyncio.ensure_future(r.run(kind, body))
        watch = asyncio.ensure_future(_until_disconnect(request))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client left: its upstream calls go too
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                r.metrics.failed["client disconnected"] += 1
                return Response(status_code=499)
            try:
                outcome = work.result()
            except ClientError as exc:
                r.metrics.failed["rejected upstream"] += 1
                return Response(exc.body, status_code=exc.status,
                                media_type="application/json")
            except UpstreamError as exc:
                r.metrics.failed["upstream failed"] += 1
                return error(502, str(exc), "upstream_error")
        finally:
            watch.cancel()
            r.metrics.in_flight -= 1
            r.metrics.seconds_sum += time.perf_counter() - started
            r.metrics.seconds_count += 1
        r.metrics.answered[outcome.tier] += 1
        headers = {"x-cascadia-tier": outcome.tier}
        if outcome.score is not None:
            headers["x-cascadia-score"] = f"{outcome.score:.2f}"
        if outcome.stream is not None:
            return _Relay(outcome, outcome.stream, media_type="text/event-stream",
                          headers=headers)
        if body.get("stream"):
            tier = next(t for t in cfg.tiers if t.name == outcome.tier)
            return StreamingResponse(_sse(kind, outcome.body or {}, tier.model),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(outcome.body, headers=headers)

    async def chat(request: Request) -> Response:
        return await completions(request, "chat")

    async def text(request: Request) -> Response:
        return await completions(request, "completions")

    async def models(request: Request) -> Response:
        if not authorised(request):
            return error(401, "the API key is missing or wrong", "authentication_error")
        return JSONResponse({"object": "list", "data": [
            {"id": cfg.name, "object": "model", "created": 0, "owned_by": "cascadia-plan"}]})

    async def health(request: Request) -> Response:
        down = await router().down()
        if down:
            return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        r = router()
        return PlainTextResponse(r.metrics.render(r.pools),
                                 media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if "router" in state:
            await state["router"].client.close()

    return Starlette(lifespan=lifespan, routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", text, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])


def serve(cfg: RouterConfig, host: str, port: int) -> None:
    """Run the router until interrupted."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
