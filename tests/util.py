from __future__ import annotations

from pathlib import Path

import yaml

PLANS = Path(__file__).parent / "fixtures" / "plans"


def assert_one_line_error(result, *needles: str) -> None:
    """An expected problem: non-zero exit, one 'error:' line on stderr, no traceback."""
    assert result.exit_code not in (0, None), result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                      SystemExit)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def plan_with_served_judge() -> dict:
    """The hand-written 2-tier plan with its judge served on the cluster: llama-3.1-8b on two
    of the pool's GPUs (one mixtral replica fewer to make room)."""
    plan = yaml.safe_load((PLANS / "single-node.yaml").read_text())
    plan["cascade"]["judger"] = {"kind": "model", "model": "llama-3.1-8b"}
    plan["stages"][1]["replicas"] = 11
    plan["judge"] = {"model": "llama-3.1-8b", "pool": "h100", "tp": 1, "replicas": 2,
                     "max_model_len": 8192}
    return plan
