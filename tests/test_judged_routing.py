"""Judged samples (scales, quality column, validation) and routing(θ) against hand-computed
cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from planner_cli.errors import InputError
from planner_cli.workload.judged import parse_judged_csv, parse_scale
from planner_cli.workload.routing import candidate_thresholds, reference_points, route

SAMPLE = """# score_scale: 1-10
# quality_scale: 0-1
request_id,model,score,quality,output_tokens
a,small,10,1,5
a,big,1,0,50
b,small,4,0,6
b,big,7,1,60
c,small,7,1,7
c,big,10,1,70
d,small,1,0,8
d,big,4,0,
"""


def parse(text: str, **kw):
    return parse_judged_csv(text.splitlines(keepends=True), "j.csv", **kw)


def test_scales_normalise_to_0_100():
    s = parse(SAMPLE)
    assert s.models == ("small", "big") and s.request_ids == ("a", "b", "c", "d")
    assert s.scores[0].tolist() == [100.0, 0.0]
    assert s.scores[1, 0] == pytest.approx(100 / 3)
    assert s.quality[:, 0].tolist() == [100.0, 0.0, 100.0, 0.0]
    assert s.has_quality
    assert s.output_tokens is not None and s.output_tokens[3].tolist() == [8, -1]


def test_routing_hand_computed():
    s = parse(SAMPLE)
    # θ = 50 on the 0-100 scale (5.5 on 1-10): a (10) and c (7) stay at small; b (4), d (1) go
    r = route(s.scores, s.quality, [50.0])
    assert r.answered_by.tolist() == [0, 1, 0, 1]
    assert r.answer_fraction.tolist() == [0.5, 0.5]
    assert r.reach_fraction.tolist() == [1.0, 0.5]
    # answers: a small q=1, b big q=1, c small q=1, d big q=0 -> 75 (quality column, not score)
    assert r.quality == pytest.approx(75.0)
    assert r.stage_requests(1).tolist() == [1, 3]
    z1, z2 = reference_points(s.quality)
    assert (z1, z2) == (50.0, 50.0)
    # θ above every score: all escalate -> z1*; θ = 0: all stay -> z2*
    assert route(s.scores, s.quality, [101.0]).quality == z1
    assert route(s.scores, s.quality, [0.0]).quality == z2


def test_three_stage_routing():
    scores = np.array([[90, 10, 0], [10, 90, 0], [10, 10, 0], [60, 60, 60]], dtype=float)
    quality = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]], dtype=float)
    r = route(scores, quality, [50.0, 70.0])
    assert r.answered_by.tolist() == [0, 1, 2, 0]
    assert r.reach_fraction.tolist() == [1.0, 0.5, 0.25]
    assert r.quality == pytest.approx((1 + 2 + 3 + 1) / 4)
    with pytest.raises(InputError, match="cascade of 3 models"):
        route(scores, quality, [1.0])


def test_without_quality_column_q_uses_scores():
    text = "# score_scale: 0-100\nrequest_id,model,score\nx,m1,20\nx,m2,80\n"
    s = parse(text)
    assert not s.has_quality and np.array_equal(s.scores, s.quality)
    assert route(s.scores, s.quality, [10.0]).quality == 20.0


def test_scale_from_argument_and_missing_scale():
    text = "request_id,model,score\nx,m1,7\n"
    s = parse(text, score_scale=(1.0, 10.0))
    assert s.scores[0, 0] == pytest.approx(600 / 9)
    with pytest.raises(InputError, match="score scale is not declared"):
        parse(text)
    assert parse_scale("0..100") == (0.0, 100.0)
    with pytest.raises(InputError):
        parse_scale("10-1")


@pytest.mark.parametrize("body,needle", [
    ("request_id,model,score\nx,m1,11\n", "j.csv:3: column 'score' = 11 is outside"),
    ("request_id,model,score\nx,m1,-1\n", "outside the declared scale"),
    ("request_id,model,score\nx,m1,abc\n", "not a number"),
    ("request_id,model,scroe\nx,m1,3\n", "column 'score' missing"),
    ("request_id,model,score,extra\nx,m1,3,4\n", "unknown column 'extra'"),
    ("request_id,model,score\nx,m1,3\nx,m1,4\n", "appear twice"),
    ("request_id,model,score\nx,m1\n", "2 fields"),
    ("request_id,model,score\n", "no rows"),
])
def test_bad_judged_rows(body, needle):
    with pytest.raises(InputError) as info:
        parse("# score_scale: 1-10\n" + body)
    assert needle in info.value.one_line()


def test_select_orders_filters_and_reports_mismatch():
    s = parse(SAMPLE)
    sub, dropped = s.select(["BIG", "small"])
    assert sub.models == ("big", "small") and dropped == 0
    text = "# score_scale: 1-10\nrequest_id,model,score\nx,m1,3\nx,m2,4\ny,m1,5\n"
    sub, dropped = parse(text).select(["m1", "m2"])
    assert sub.request_ids == ("x",) and dropped == 1
    with pytest.raises(InputError, match="no model 'm3'") as info:
        parse(text).select(["m1", "m3"])
    assert "m1" in info.value.one_line()


def test_candidate_thresholds_are_the_judged_values():
    scores = np.array([[30.0, 0], [70.0, 0], [30.0, 0]])
    assert candidate_thresholds(scores, 0).tolist() == [30.0, 70.0, np.inf]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 4)),
              elements=st.sampled_from([0.0, 25.0, 50.0, 75.0, 100.0])),
       st.floats(0, 100))
def test_routing_properties(scores, theta):
    m = scores.shape[1]
    r = route(scores, scores, [theta] * (m - 1))
    assert r.answer_fraction.sum() == pytest.approx(1.0)
    assert r.reach_fraction[0] == pytest.approx(1.0)
    assert np.all(np.diff(r.reach_fraction) <= 1e-12)
    # each request is answered by the first stage whose score clears θ, else the last
    for i, stage in enumerate(r.answered_by):
        passed = [j for j in range(m - 1) if scores[i, j] >= theta]
        assert stage == (passed[0] if passed else m - 1)
    # a higher threshold never keeps more requests at stage 0
    higher = route(scores, scores, [min(100.0, theta + 10)] * (m - 1))
    assert higher.answer_fraction[0] <= r.answer_fraction[0] + 1e-12
