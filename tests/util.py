from __future__ import annotations


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
