"""How the router scores an answer: the LLM judge's prompt and the strict reading of its reply,
and the log-probability confidence of an answer. Pure functions: the server makes the calls."""

from __future__ import annotations

import math
import re

from planner_cli.workload.judged import parse_scale

# The scoring prompt an `llm` judger sends (a cascade file's `judger.prompt` replaces it). The
# judge sees the request's last user message and the tier's answer, and must reply with one
# number on its scale; anything else is a judge failure, and the request escalates.
DEFAULT_PROMPT = (
    "You grade answers. Rate how well the answer below responds to the question: its "
    "correctness, completeness and helpfulness.\n\n"
    "[Question]\n{question}\n\n[Answer]\n{answer}\n\n"
    "Reply with a single number from {low} to {high} ({high} is best) and nothing else.")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


class JudgeError(Exception):
    """The judge did not give a score (the message says why); the request escalates."""


def judge_messages(prompt: str | None, question: str, answer: str, scale: str) -> list[dict]:
    lo, hi = parse_scale(scale)
    text = (prompt or DEFAULT_PROMPT).format(question=question, answer=answer,
                                             low=f"{lo:g}", high=f"{hi:g}")
    return [{"role": "user", "content": text}]


def parse_score(reply: str, scale: str) -> float:
    """The judge's reply as a 0-100 score: exactly one number on `scale` (surrounding blanks
    and one trailing period allowed), mapped as the judged sample's scores were."""
    lo, hi = parse_scale(scale)
    text = reply.strip().removesuffix(".").strip()
    if not _NUMBER.fullmatch(text):
        raise JudgeError(f"the judge replied {reply[:60]!r}, not one number")
    value = float(text)
    if not lo <= value <= hi:
        raise JudgeError(f"the judge replied {value:g}, outside its scale {lo:g}-{hi:g}")
    return (value - lo) / (hi - lo) * 100.0


def logprob_confidence(choice: dict) -> float:
    """100 x exp(mean log-probability of the answer's tokens), from an OpenAI-style choice
    with `logprobs` (chat: logprobs.content[].logprob; completions: logprobs.token_logprobs)."""
    lp = choice.get("logprobs") or {}
    values = ([t.get("logprob") for t in lp.get("content") or []]
              if "content" in lp else list(lp.get("token_logprobs") or []))
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        raise JudgeError("the answer carries no token log-probabilities")
    return 100.0 * math.exp(min(sum(values) / len(values), 0.0))


def question_of(body: dict) -> str:
    """The text a judge is shown as the question: the last user message (chat) or the prompt
    (completions)."""
    if "messages" in body:
        for message in reversed(body["messages"]):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
        return ""
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else str(prompt)


def answer_of(response: dict) -> str:
    """The first choice's text of an OpenAI-style chat or completions response."""
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if isinstance(choice.get("message"), dict):
        return _text(choice["message"].get("content"))
    return _text(choice.get("text"))


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # chat content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
