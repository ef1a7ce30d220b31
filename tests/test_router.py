"""`cascadia-plan route`: the cascade router over real HTTP on loopback, against fake
OpenAI-compatible engines and a fake judge whose scores come from the bundled judged sample."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from planner_cli import api
from planner_cli.export.router import RouterConfig
from planner_cli.router.judge import JudgeError, logprob_confidence, parse_score
from planner_cli.router.server import Replicas, create_app
from tests.conftest import FIXTURES, ROOT
from tests.util import assert_one_line_error, plan_with_served_judge

SAMPLE = ROOT / "examples" / "arena-open-models-judged.csv"
TIERS = ("mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1")


class Served:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", backlog=2048,
                                                    timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(app) -> Served:
        s = Served(app)
        started.append(s)
        return s

    yield start
    for s in started:  # all at once: each takes a tick of its loop to notice
        s.server.should_exit = True
    for s in started:
        s.thread.join(10)


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def engine(tag: str, *, status: int = 200, delay: float = 0.0, logprob: float | None = None,
           seen: list | None = None):
    """A fake OpenAI-compatible engine: it answers '<tag>|<question>'."""

    async def complete(request: Request) -> Response:
        body = await request.json()
        chat = request.url.path.endswith("/chat/completions")
        if seen is not None:
            seen.append(body)
        if delay:
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if await request.is_disconnected():
                    if seen is not None:
                        seen.append("disconnected")
                    return Response(status_code=499)
                await asyncio.sleep(0.01)
        if status != 200:
            return JSONResponse({"error": {"message": f"status {status}"}}, status_code=status)
        question = body["messages"][-1]["content"] if chat else body["prompt"]
        text = f"{tag}|{question}"
        if body.get("stream"):
            async def events():
                for part in (text[: len(text) // 2], text[len(text) // 2:]):
                    delta = {"content": part} if chat else None
                    choice = ({"index": 0, "delta": delta, "finish_reason": None} if chat
                              else {"index": 0, "text": part, "finish_reason": None})
                    yield f"data: {json.dumps({'choices': [choice]})}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "stop"} if chat
                  else {"index": 0, "text": text, "finish_reason": "stop"})
        if body.get("logprobs") and logprob is not None:
            choice["logprobs"] = ({"content": [{"token": "x", "logprob": logprob}]} if chat
                                  else {"token_logprobs": [logprob]})
        return JSONResponse({"id": "cmpl", "object": "chat.completion" if chat
                             else "text_completion", "created": 0, "model": body["model"],
                             "choices": [choice]})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": tag, "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"]),
                             Route("/v1/completions", complete, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


def raw_scores() -> dict[tuple[str, str], str]:
    """(model, request id) -> the judge's score as the sample records it (1-10)."""
    lines = [line for line in SAMPLE.read_text().splitlines() if not line.startswith("#")]
    return {(row["model"], row["request_id"]): row["score"] for row in csv.DictReader(lines)}


def judge(scores: dict[tuple[str, str], str], *, status: int = 200, reply: str | None = None):
    """A fake judge: it reads '<tag>|<request id>' from the scoring prompt's answer and replies
    with the sample's score for that model and prompt."""

    async def complete(request: Request) -> Response:
        if status != 200:
            return JSONResponse({"error": {"message": "judge down"}}, status_code=status)
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        answer = prompt.split("[Answer]\n", 1)[1].split("\n\n", 1)[0]
        tag, rid = answer.split("|", 1)
        content = reply if reply is not None else scores[(tag, rid)]
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                  "content": content}}]})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


def config(tier_urls: list[list[str]], judge_urls: list[str], threshold: float = 44.4,
           **extra) -> RouterConfig:
    tiers = [{"name": f"tier{i + 1}", "model": f"model-{i + 1}", "hf_id": TIERS[i],
              "endpoints": urls, "threshold": threshold if i < len(tier_urls) - 1 else None}
             for i, urls in enumerate(tier_urls)]
    judger = extra.pop("judger", {"kind": "llm", "model": "judge", "endpoints": judge_urls,
                                  "score_scale": "1-10"})
    return RouterConfig.model_validate({"schema_version": 2, "name": "arena-open",
                                        "tiers": tiers, "judger": judger, **extra})


def cascade(serve, tier_apps: list[list], judge_app, env=None, **extra) -> str:
    tiers = [[serve(a).url + "/v1" if not isinstance(a, str) else a for a in apps]
             for apps in tier_apps]
    j = [serve(judge_app).url + "/v1"] if judge_app is not None else []
    router = serve(create_app(config(tiers, j, **extra), env=env or {}))
    return router.url


@dataclass
class Answer:
    status: int
    headers: dict
    body: dict


def burst(url: str, bodies: list[dict]) -> list[Answer]:
    """POST every body to the router's chat endpoint at once (aiohttp: httpx's pool slows
    quadratically with the connections it holds)."""

    async def run() -> list[Answer]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(body: dict) -> Answer:
                async with session.post(url + "/v1/chat/completions", json=body,
                                        timeout=aiohttp.ClientTimeout(total=120)) as r:
                    return Answer(r.status, dict(r.headers), await r.json())
            return await asyncio.gather(*(one(b) for b in bodies))

    return asyncio.run(run())


def ask(url: str, question: str, **body) -> httpx.Response:
    payload = {"model": "arena-open", "messages": [{"role": "user", "content": question}]}
    return httpx.post(url + "/v1/chat/completions", json=payload | body, timeout=30)


# ------------------------------------------------------------------ the judged sample


@pytest.mark.slow
def test_replaying_the_judged_sample_gives_the_shares_check_predicts(serve):
    report = api.check(thresholds=[44.4])  # what `check --thresholds 44.4` reports
    sample = report.problem.sample
    predicted = report.routing[0].answered_by
    expected = [int((predicted == 0).sum()), int((predicted == 1).sum())]
    scores = raw_scores()
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(scores))

    answers = burst(url, [{"model": "arena-open",
                           "messages": [{"role": "user", "content": rid}]}
                          for rid in sample.request_ids])
    assert all(r.status == 200 for r in answers)
    tiers = [r.headers["x-cascadia-tier"] for r in answers]
    assert [tiers.count("tier1"), tiers.count("tier2")] == expected
    assert tiers == [f"tier{k + 1}" for k in predicted]  # request by request
    for rid, r in zip(sample.request_ids, answers, strict=True):
        first = float(scores[(TIERS[0], rid)])
        assert (r.headers["x-cascadia-tier"] == "tier1") == ((first - 1) / 9 * 100 >= 44.4)
        if r.headers["x-cascadia-tier"] == "tier1":
            assert float(r.headers["x-cascadia-score"]) == pytest.approx((first - 1) / 9 * 100,
                                                                         abs=0.005)
        tag = TIERS[0] if r.headers["x-cascadia-tier"] == "tier1" else TIERS[1]
        assert r.body["choices"][0]["message"]["content"] == f"{tag}|{rid}"


def one_accepted_and_one_escalated() -> tuple[str, str]:
    scores = raw_scores()
    rids = sorted({rid for _, rid in scores})
    high = next(r for r in rids if int(scores[(TIERS[0], r)]) >= 9)
    low = next(r for r in rids if int(scores[(TIERS[0], r)]) <= 2 and (TIERS[1], r) in scores)
    return high, low


def test_accepted_answers_stay_at_tier_1_and_low_scores_escalate(serve):
    high, low = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(raw_scores()))
    a, b = ask(url, high), ask(url, low)
    assert a.headers["x-cascadia-tier"] == "tier1" and float(a.headers["x-cascadia-score"]) > 88
    assert a.json()["choices"][0]["message"]["content"] == f"{TIERS[0]}|{high}"
    assert b.headers["x-cascadia-tier"] == "tier2" and "x-cascadia-score" not in b.headers
    assert b.json()["model"] == "model-2"
    completions = httpx.post(url + "/v1/completions", json={"prompt": high}, timeout=30)
    assert completions.json()["choices"][0]["text"] == f"{TIERS[0]}|{high}"
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "arena-open"
    metrics = httpx.get(url + "/metrics").text
    assert 'cascadia_router_requests_total{tier="tier1"} 2' in metrics
    assert 'cascadia_router_escalations_total{tier="tier1",reason="score"} 1' in metrics


# ------------------------------------------------------------------ streaming


def _events(response: httpx.Response) -> tuple[str, bool]:
    text, done = "", False
    for line in response.text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            choice = json.loads(line[6:])["choices"][0]
            text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    return text, done


@pytest.mark.slow
@pytest.mark.parametrize("chat", [True, False])
def test_streaming_buffers_judged_tiers_and_streams_the_last(serve, chat):
    high, low = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(raw_scores()))
    for rid, tier in ((high, "tier1"), (low, "tier2")):
        body = ({"messages": [{"role": "user", "content": rid}]} if chat else {"prompt": rid})
        path = "/v1/chat/completions" if chat else "/v1/completions"
        with httpx.stream("POST", url + path, json=body | {"stream": True}, timeout=30) as r:
            r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-cascadia-tier"] == tier
        text, done = _events(r)
        assert done and text == f"{TIERS[0] if tier == 'tier1' else TIERS[1]}|{rid}"
    # every replica slot a stream held is given back
    outstanding = [line for line in httpx.get(url + "/metrics").text.splitlines()
                   if line.startswith("cascadia_router_outstanding{")]
    assert len(outstanding) == 3 and all(line.endswith(" 0") for line in outstanding)


# ------------------------------------------------------------------ faults


@pytest.mark.slow
def test_a_failing_replica_is_retried_on_another(serve):
    high, _ = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0], status=500), engine(TIERS[0])],
                          [engine(TIERS[1])]], judge(raw_scores()))
    for _ in range(3):
        r = ask(url, high)
        assert r.status_code == 200 and r.headers["x-cascadia-tier"] == "tier1"
    assert 'cascadia_router_upstream_errors_total{tier="tier1"}' in httpx.get(
        url + "/metrics").text


@pytest.mark.slow
def test_a_tier_down_escalates_and_the_last_tier_down_is_a_clear_error(serve):
    high, _ = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0], status=503), closed_port()],
                          [engine(TIERS[1])]], judge(raw_scores()))
    r = ask(url, high)
    assert r.status_code == 200 and r.headers["x-cascadia-tier"] == "tier2"
    assert 'reason="error"' in httpx.get(url + "/metrics").text
    down = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1], status=500)]],
                   judge(raw_scores()))
    _, low = one_accepted_and_one_escalated()
    r = ask(down, low)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["type"] == "upstream_error" and "tier2" in err["message"]


@pytest.mark.slow
def test_a_timeout_is_retried_then_escalates(serve):
    high, _ = one_accepted_and_one_escalated()
    seen: list = []
    slow = [engine(TIERS[0], delay=3.0, seen=seen) for _ in range(3)]
    url = cascade(serve, [slow, [engine(TIERS[1])]], judge(raw_scores()),
                  escalation={"timeout_s": 0.3, "retries": 1})
    started = time.monotonic()
    r = ask(url, high)
    assert r.status_code == 200 and r.headers["x-cascadia-tier"] == "tier2"
    assert time.monotonic() - started < 2.5
    # tried on two of the three replicas (one retry), then escalated
    assert len([s for s in seen if isinstance(s, dict)]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("judge_kw", [{"status": 500}, {"reply": "a solid 9"},
                                      {"reply": "11"}])
def test_a_failing_or_off_scale_judge_escalates(serve, judge_kw):
    high, _ = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]],
                  judge(raw_scores(), **judge_kw))
    r = ask(url, high)
    assert r.status_code == 200 and r.headers["x-cascadia-tier"] == "tier2"
    assert 'tier="tier1",reason="judge"} 1' in httpx.get(url + "/metrics").text


@pytest.mark.slow
def test_a_client_error_is_passed_back_not_escalated(serve):
    seen: list = []
    url = cascade(serve, [[engine(TIERS[0], status=400)], [engine(TIERS[1], seen=seen)]],
                  judge(raw_scores()))
    r = ask(url, "x")
    assert r.status_code == 400 and "status 400" in r.text and seen == []


@pytest.mark.slow
def test_a_client_that_leaves_cancels_the_upstream_call(serve):
    seen: list = []
    url = cascade(serve, [[engine(TIERS[0], delay=5.0, seen=seen)], [engine(TIERS[1])]],
                  judge(raw_scores()))
    with pytest.raises(httpx.ReadTimeout):
        ask_quick = httpx.post(url + "/v1/chat/completions", timeout=0.5,
                               json={"messages": [{"role": "user", "content": "x"}]})
        del ask_quick
    deadline = time.monotonic() + 5
    while "disconnected" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "disconnected" in seen
    metrics = httpx.get(url + "/metrics").text
    assert 'cascadia_router_failed_requests_total{reason="client disconnected"} 1' in metrics


@pytest.mark.slow
def test_a_thousand_concurrent_requests_all_complete(serve):
    high, low = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0]), engine(TIERS[0])], [engine(TIERS[1])]],
                  judge(raw_scores()))

    answers = burst(url, [{"messages": [{"role": "user", "content": high if i % 2 else low}]}
                          for i in range(1000)])
    assert [r.status for r in answers] == [200] * 1000
    tiers = [r.headers["x-cascadia-tier"] for r in answers]
    assert tiers.count("tier1") == 500 and tiers.count("tier2") == 500
    metrics = httpx.get(url + "/metrics").text
    assert "cascadia_router_request_seconds_count 1000" in metrics
    assert "cascadia_router_in_flight 0" in metrics


# ------------------------------------------------------------------ the edges


def test_the_api_key_is_checked(serve):
    high, _ = one_accepted_and_one_escalated()
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(raw_scores()),
                  env={"CASCADIA_API_KEY": "sekret"})
    assert ask(url, high).status_code == 401
    bad = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer nope"},
                     json={"messages": [{"role": "user", "content": high}]})
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
    good = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer sekret"},
                      json={"messages": [{"role": "user", "content": high}]}, timeout=30)
    assert good.status_code == 200
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.get(url + "/health").status_code == 200


@pytest.mark.slow
def test_the_engines_receive_the_configured_key(serve):
    seen: list = []

    async def complete(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({"choices": [{"index": 0, "message": {"content": "ok"}}]})

    app = Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])
    url = cascade(serve, [[app]], None, env={"ENGINE_KEY": "k1"}, api_key_env="ENGINE_KEY",
                  judger={"kind": "logprob"})
    assert ask(url, "x").status_code == 200 and seen == ["Bearer k1"]


@pytest.mark.slow
def test_health_names_the_tier_that_is_down(serve):
    url = cascade(serve, [[engine(TIERS[0])], [closed_port()]], judge(raw_scores()))
    r = httpx.get(url + "/health", timeout=10)
    assert r.status_code == 503 and r.json()["down"] == ["tier2"]
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(raw_scores()))
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_bad_requests_are_refused(serve):
    url = cascade(serve, [[engine(TIERS[0])], [engine(TIERS[1])]], judge(raw_scores()),
                  max_request_bytes=2048)
    big = httpx.post(url + "/v1/chat/completions",
                     json={"messages": [{"role": "user", "content": "x" * 5000}]})
    assert big.status_code == 413
    assert httpx.post(url + "/v1/chat/completions", content=b"{nope").status_code == 400
    assert httpx.post(url + "/v1/chat/completions", json={"prompt": "x"}).status_code == 400
    other = ask(url, "x", model="gpt-4")
    assert other.status_code == 404 and "arena-open" in other.json()["error"]["message"]


@pytest.mark.slow
def test_the_logprob_judger(serve):
    url = cascade(serve, [[engine(TIERS[0], logprob=-0.05)], [engine(TIERS[1])]], None,
                  judger={"kind": "logprob"})
    r = ask(url, "x")
    assert r.headers["x-cascadia-tier"] == "tier1"
    assert float(r.headers["x-cascadia-score"]) == pytest.approx(100 * math.exp(-0.05), abs=0.01)
    assert "logprobs" not in r.json()["choices"][0]  # the client did not ask for them
    url = cascade(serve, [[engine(TIERS[0], logprob=-2.0)], [engine(TIERS[1])]], None,
                  judger={"kind": "logprob"})
    assert ask(url, "x").headers["x-cascadia-tier"] == "tier2"


def test_replicas_are_balanced_by_least_outstanding_requests():
    pool = Replicas(["a", "b", "c"])
    assert pool.pick(set()) == 0
    pool.outstanding[:] = [2, 1, 1]
    pool.served[:] = [0, 5, 3]
    assert pool.pick(set()) == 2  # fewest outstanding, then fewest served
    assert pool.pick({2}) == 1 and pool.pick({1, 2}) == 0 and pool.pick({0, 1, 2}) is None


def test_scores_are_read_strictly():
    assert parse_score(" 7 ", "1-10") == pytest.approx(200 / 3)
    assert parse_score("10.", "1-10") == 100.0
    assert parse_score("0", "0-100") == 0.0
    for reply in ("", "seven", "7/10", "7 out of 10", "11", "0", "nan", "1e1", "-3"):
        with pytest.raises(JudgeError):
            parse_score(reply, "1-10")
    assert logprob_confidence({"logprobs": {"token_logprobs": [0.0, -1.0]}}) == pytest.approx(
        100 * math.exp(-0.5))
    with pytest.raises(JudgeError):
        logprob_confidence({"logprobs": None})


# ------------------------------------------------------------------ route's inputs


def test_route_needs_a_judge_it_can_call(cli, tmp_path):
    out = tmp_path / "out"
    assert cli("export", "--plan", FIXTURES / "plans" / "single-node.yaml", "--format",
               "router", "--out", out).exit_code == 0
    path = out / "router" / "cascade.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["schema_version"] == 2 and doc["judger"]["kind"] == "llm"
    assert doc["judger"]["endpoints"] == [] and "fill in judger.endpoints" in path.read_text()
    result = cli("route", "--config", path)
    assert result.exit_code == 2
    assert_one_line_error(result, "no endpoints or model")
    assert cli("route").exit_code == 2
    doc["judger"]["endpoints"] = ["ftp://judge"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = cli("route", "--config", bad)
    assert result.exit_code == 2
    assert_one_line_error(result, "not an http(s) base URL")


@pytest.mark.slow
def test_route_from_a_plan_takes_the_exported_placement(cli, tmp_path):
    """A served judge's replicas are the judger's endpoints, as the exports place them."""
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_with_served_judge()))
    cfg = api.router_config(plan_path=path)
    assert cfg.judger.served and cfg.judger.model == "llama-3.1-8b"
    assert len(cfg.judger.endpoints) == 2 and cfg.tiers[0].threshold == 44.4
    out = tmp_path / "out"
    assert cli("export", "--plan", path, "--format", "router", "--out", out).exit_code == 0
    exported = RouterConfig.model_validate(yaml.safe_load(
        (out / "router" / "cascade.yaml").read_text()))
    assert exported == cfg
    hosts = {r["name"]: f"http://{r['hosts'][0]}:{r['port']}/v1" for r in json.loads(
        (out / "plan-summary.json").read_text())["replicas"]}
    assert cfg.judger.endpoints == [hosts["judge-llama-3.1-8b-0"], hosts["judge-llama-3.1-8b-1"]]


@pytest.mark.slow
def test_the_route_command_serves(serve, tmp_path):
    """The console command itself: started as a user would, it answers through the cascade
    and stops on SIGINT."""
    high, low = one_accepted_and_one_escalated()
    e1, e2 = serve(engine(TIERS[0])), serve(engine(TIERS[1]))
    j = serve(judge(raw_scores()))
    cfg = config([[e1.url + "/v1"], [e2.url + "/v1"]], [j.url + "/v1"])
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    port = int(closed_port().split(":")[2].split("/")[0])
    exe = Path(sys.executable).parent / "cascadia-plan"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "planner_cli"]
    proc = subprocess.Popen([*cmd, "route", "--config", str(path), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        assert ask(url, high).headers["x-cascadia-tier"] == "tier1"
        assert ask(url, low).headers["x-cascadia-tier"] == "tier2"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert "routing arena-open (model-1 -> model-2)" in err


@pytest.mark.slow
def test_replay_measures_the_running_cascade_beside_the_plan(serve, cli, tmp_path):
    """`replay` sends the plan's trace through the router at its (scaled) timestamps and
    reports what tier answered and how long it took, beside the plan's simulation."""
    seen: list = []
    url = cascade(serve, [[engine(TIERS[0], seen=seen)], [engine(TIERS[1])]],
                  judge({}, reply="9"))
    plan = FIXTURES / "plans" / "single-node.yaml"
    result = cli("replay", "--plan", plan, "--url", url, "--rate-scale", "20", "--quality",
                 SAMPLE, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["requests"] == 20 and report["completed"] == 20 and report["failed"] == {}
    assert report["answer_share"]["measured"] == [1.0, 0.0]  # the judge says 9 of 10
    assert len(report["answer_share"]["predicted"]) == 2
    assert report["e2e_latency_s"]["measured"]["p50"] > 0
    assert report["e2e_latency_s"]["predicted"]["p50"] > 0
    assert report["rate_scale"] == 20.0
    # the requests are the trace's: its prompt and output lengths, in its order of arrival
    lines = [json.loads(x) for x in (FIXTURES / "plans" / "trace-20.jsonl").read_text()
             .splitlines()]
    bodies = [b for b in seen if isinstance(b, dict)]
    assert sorted(b["max_tokens"] for b in bodies) == sorted(x["output_length"] for x in lines)
    assert sorted(len(b["prompt"].split()) for b in bodies) == sorted(
        x["input_length"] for x in lines)
    assert all(b["model"] == "model-1" and b["ignore_eos"] for b in bodies)
    # a cascade that is down: every request is counted as failed, none dropped
    down = cli("replay", "--plan", plan, "--url", closed_port(), "--rate-scale", "50",
               "--quality", SAMPLE, "--json")
    assert down.exit_code == 0
    failed = json.loads(down.stdout)
    assert failed["completed"] == 0 and sum(failed["failed"].values()) == 20
