"""The cascade's family (every ordered sub-cascade is a candidate, the best simulated one wins,
a single model included) and the load planned for (--rate / --rate-scale)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from planner_cli import api
from planner_cli.errors import InputError
from planner_cli.optimize.allocator import NoOption, Planner
from planner_cli.optimize.bilevel import family
from planner_cli.perf.model import analytic_lookup
from planner_cli.plan import Plan
from planner_cli.problem import rate_scale_for
from planner_cli.workload.trace import scaled
from tests.conftest import FIXTURES, ROOT
from tests.util import assert_one_line_error

LLAMA = FIXTURES / "cascade-llama31-8b-70b.yaml"
A100 = FIXTURES / "cluster-2x8-a100-no-node-size.yaml"


def test_the_family_is_every_ordered_sub_cascade():
    assert family(1) == [(0,)]
    assert family(2) == [(0, 1), (0,), (1,)]
    three = family(3)
    assert three[0] == (0, 1, 2) and len(three) == 7 == len(set(three))
    assert all(list(m) == sorted(m) for m in three)  # order kept: small before large


def test_a_member_has_its_own_columns_and_reference_points():
    p = api.load_problem()
    big = p.restrict((1,))
    assert big.names == [p.names[1]] and big.indices == (1,)
    assert [m.model for m in big.cascade.models] == [p.cascade.models[1].model]
    np.testing.assert_array_equal(big.sample.quality[:, 0], p.sample.quality[:, 1])
    np.testing.assert_array_equal(big.mix.outputs[0], p.mix.outputs[1])
    # one model: z1 = z2 = its mean quality, and the best is that too
    assert big.z1 == big.z2 == pytest.approx(p.z1) == pytest.approx(big.best.quality)
    assert big.judged_with == p.judged_with  # the same prompts as the whole cascade


def test_thresholds_that_leave_a_model_unreached_have_no_allocation():
    """Keeping every request at the first model belongs to the member without the second:
    the whole cascade's MILP is not asked (a model nobody reaches gets no GPUs)."""
    p = api.load_problem()
    pl = Planner(p, analytic_lookup)
    keep_all = (float(np.min(p.sample.scores[:, 0])),)
    assert not pl.reached(1, keep_all)
    latency, why = pl.allocate(keep_all)
    assert math.isinf(latency) and isinstance(why, NoOption)
    assert "no request reaches" in why.message


def test_rate_and_rate_scale():
    trace = api.load_trace(api.bundled_example().trace)
    own = (len(trace) - 1) / trace.duration_s
    assert rate_scale_for(trace, None, None) == 1.0
    assert rate_scale_for(trace, None, 2.5) == 2.5
    assert rate_scale_for(trace, 3 * own, None) == pytest.approx(3.0)
    for rate, scale, needle in ((1.0, 2.0, "both given"), (None, 0.0, "--rate-scale 0"),
                                (-1.0, None, "--rate -1"), (math.inf, None, "--rate inf")):
        with pytest.raises(InputError, match=needle):
            rate_scale_for(trace, rate, scale)
    fast = scaled(trace, 4.0)
    assert fast.duration_s == pytest.approx(trace.duration_s / 4)
    assert fast.timestamps_ms[0] == trace.timestamps_ms[0]
    np.testing.assert_array_equal(fast.input_lengths, trace.input_lengths)


def test_capacity_of_a_one_request_trace_is_refused(cli, tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text((ROOT / "examples" / "azure-conv-10min.jsonl").read_text().splitlines()[0]
                   + "\n")
    assert_one_line_error(cli("optimize", "--trace", one, "--objective", "capacity",
                              "--slo-p95", "30", "--out", tmp_path / "p.json"),
                          "a one-request trace has none")
    assert not (tmp_path / "p.json").exists()


def test_rate_flags_refused_before_work(cli, tmp_path):
    assert_one_line_error(cli("optimize", "--rate", "2", "--rate-scale", "2", "--out",
                              tmp_path / "p.json"), "--rate and --rate-scale both given")
    assert not (tmp_path / "p.json").exists()


def _judged_98(tmp_path):
    """A SYNTHETIC judged sample (labelled as such): Llama-3.1-8B answers 98 % of 200 prompts
    as well as Llama-3.1-70B and fails the rest, which its judge score flags."""
    rows = ["# score_scale: 0-1",
            "# synthetic: test sample, the 8B right on 98% of prompts, the 70B on all",
            "request_id,model,score"]
    for i in range(200):
        rows += [f"q{i},Meta-Llama-3.1-8B-Instruct,{0 if i % 50 == 7 else 1}",
                 f"q{i},Meta-Llama-3.1-70B-Instruct,1"]
    path = tmp_path / "judged.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_a_cascade_that_wins_is_recommended_over_each_model_alone(tmp_path, short_trace):
    """Target 99: the 8B alone reaches 98 on the sample (less at 90 % confidence), so it is
    out; the 70B alone reaches it on all 16 GPUs, but the chain answers 98 % of requests at
    the 8B and is simulated faster."""
    result = api.optimize(trace=short_trace, quality=_judged_98(tmp_path), cascade=LLAMA,
                          cluster=A100, quality_target=99.0)
    plan, fam = result.plan, result.plan.predicted.family
    members = {tuple(m.models): m for m in fam.members}
    assert "promises at most quality" in members[("llama-3.1-8b",)].error
    assert members[("llama-3.1-8b",)].best_quality == pytest.approx(98.0)
    alone = members[("llama-3.1-70b",)]
    chain = members[("llama-3.1-8b", "llama-3.1-70b")]
    assert alone.simulated_e2e_p95_s is not None and chain.chosen
    assert chain.simulated_e2e_p95_s < alone.simulated_e2e_p95_s
    assert [s.model for s in plan.stages] == ["llama-3.1-8b", "llama-3.1-70b"]
    assert fam.runner_up == ["llama-3.1-70b"]
    assert fam.margin == pytest.approx(alone.simulated_e2e_p95_s / chain.simulated_e2e_p95_s)
    assert fam.verdict.startswith("the cascade llama-3.1-8b → llama-3.1-70b")
    # at least 8 distinct candidates were simulated: here only 3 (member, thresholds) pairs
    # are feasible, so next-best allocations of the best make up the rest
    seen = {(tuple(v.models), tuple(v.thresholds), tuple(sorted(v.gpus.items())))
            for v in plan.predicted.verified_candidates}
    assert len(seen) == len(plan.predicted.verified_candidates) >= 8


@pytest.mark.slow
def test_a_plan_for_a_faster_rate_simulates_at_that_rate(cli, tmp_path, short_trace):
    out = tmp_path / "plan.json"
    result = cli("optimize", "--trace", short_trace, "--rate-scale", "2", "--out", out,
                 "--json")
    assert result.exit_code == 0, result.output
    plan = Plan.model_validate(json.loads(out.read_text()))
    trace = api.load_trace(short_trace)
    assert plan.simulation.rate_scale == 2.0
    assert plan.predicted.rate_per_s == pytest.approx(2 * (len(trace) - 1) / trace.duration_s)
    # `simulate` replays the plan at the rate it was made for, and agrees with it
    sim = json.loads(cli("simulate", "--plan", out, "--json").stdout)
    assert sim["rate_scale"] == 2.0
    assert sim["figures"]["e2e_latency_s"]["p95"] == pytest.approx(
        plan.predicted.simulated.e2e_latency_s.p95)


@pytest.mark.slow
def test_long_traces_rank_on_a_window_and_decide_on_the_whole_trace(monkeypatch, short_trace):
    """Past SCREEN_REQUESTS the candidates are ranked on the trace's head; the finalists, the
    winner among them, are simulated on all of it, and the plan's figures are those."""
    from planner_cli.optimize import bilevel

    monkeypatch.setattr(bilevel, "SCREEN_REQUESTS", 300)
    monkeypatch.setattr(bilevel, "FINALISTS", 2)
    result = api.optimize(trace=short_trace)
    pred = result.plan.predicted
    counts = [v.simulated_requests for v in pred.verified_candidates]
    assert counts.count(800) == 2 and set(counts) == {300, 800}
    assert pred.simulated.requests == 800
    chosen = next(m for m in pred.family.members if m.chosen)
    assert chosen.simulated_requests == 800
    assert chosen.simulated_e2e_p95_s == pytest.approx(pred.simulated.e2e_latency_s.p95)
    assert result.timings.simulated_candidates == len(counts) >= 8


# ---------------------------------------------------------------- the quality promise

def test_a_stratified_bootstrap_keeps_every_category_share():
    from planner_cli.workload.confidence import bootstrap

    cats = ["math"] * 30 + ["code"] * 10
    b = bootstrap(40, cats, seed=3, confidence=0.9)
    assert b.stratified and b.weights.shape == (400, 40)
    np.testing.assert_allclose(b.weights[:, :30].sum(axis=1), 0.75)
    np.testing.assert_allclose(b.weights[:, 30:].sum(axis=1), 0.25)
    per = np.r_[np.ones(30), np.zeros(10)]  # right on math, wrong on code: no spread at all
    assert b.lower(per) == pytest.approx(0.75) == b.interval(per)[0]
    plain = bootstrap(40, None, seed=3, confidence=0.9)
    assert plain.lower(per) < 0.75 < plain.interval(per)[1]
    # the same seed, the same resamples; the plain mean at confidence 0.5
    np.testing.assert_array_equal(bootstrap(40, cats, seed=3).weights, b.weights)
    assert bootstrap(40, None, seed=3, confidence=0.5).lower(per) == pytest.approx(0.75)


def test_a_category_column_is_read_and_must_be_one_per_prompt(tmp_path):
    from planner_cli.workload.judged import parse_judged_csv

    good = ["# score_scale: 0-1", "request_id,model,score,category", "a,m1,1,math",
            "a,m2,0,math", "b,m1,0,code", "b,m2,1,code"]
    sample = parse_judged_csv(good)
    assert sample.categories == ("math", "code")
    assert sample.select(["m2"])[0].categories == ("math", "code")
    with pytest.raises(InputError, match="<judged>:6: request 'b' has category 'math'"):
        parse_judged_csv(good[:-1] + ["b,m2,1,math"])


def test_check_reports_the_interval_and_holds_the_target_to_the_bound(cli):
    data = json.loads(cli("check", "--thresholds", "44.4", "--json").stdout)
    row = data["routing"][0]
    lo, hi = row["quality_interval"]
    assert lo < row["quality_lower_bound"] < row["quality"] < hi
    assert data["quality_confidence"] == 0.9
    assert data["best_promised_quality"] < data["best_quality"]
    # 55.9 on the sample meets the target 55; its 90 % bound (about 53.7) does not
    assert row["quality"] >= 55 > row["quality_lower_bound"] and row["meets_target"] is False
    plain = json.loads(cli("check", "--thresholds", "44.4", "--quality-confidence", "0.5",
                           "--json").stdout)["routing"][0]
    assert plain["meets_target"] is True


def test_cross_validation_measures_the_shortfall_on_held_out_prompts():
    from planner_cli.workload.confidence import bootstrap, cross_validate

    rng = np.random.default_rng(0)
    n = 200
    noise = rng.random(n) < 0.5  # a coin: the "fast" θ is right on half the prompts
    per = {(1.0,): noise.astype(float) * 100, (2.0,): np.full(n, 100.0)}
    b = bootstrap(n, None, seed=0, confidence=0.5)
    # a target of 50: where a training fold's coin comes up >= 50 the fast θ is chosen and
    # its held-out fold decides; else the slow one (100) is
    cv = cross_validate([(1.0, (1.0,)), (2.0, (2.0,))], lambda t: per[tuple(t)], b, 50.0,
                        seed=0)
    assert cv is not None and cv.folds == 5 and cv.folds_without_choice == 0
    assert cv.worst_shortfall >= cv.mean_shortfall
    strict = cross_validate([(1.0, (1.0,)), (2.0, (2.0,))], lambda t: per[tuple(t)], b, 100.0,
                            seed=0)
    assert strict.mean_shortfall == 0.0  # only the always-right θ meets 100


# ---------------------------------------------------------------- sizing (--objective cost)

def test_the_cost_objective_needs_an_slo(cli, tmp_path):
    assert_one_line_error(cli("optimize", "--objective", "cost", "--out", tmp_path / "p.json"),
                          "--objective cost sizes the cluster for a latency SLO",
                          "--slo-p95")
    assert_one_line_error(cli("optimize", "--objective", "cost", "--slo-p95", "0", "--out",
                              tmp_path / "p.json"), "--slo-p95 0 is not a positive number")
    assert_one_line_error(cli("optimize", "--objective", "capacity", "--out",
                              tmp_path / "p.json"),
                          "--objective capacity measures capacity for a latency SLO")
    assert_one_line_error(cli("optimize", "--slo-ttft", "2", "--out", tmp_path / "p.json"),
                          "--slo-ttft applies to --objective cost")
    assert not (tmp_path / "p.json").exists()


def _mixtral_alone(tmp_path, price: float | None = None):
    import yaml

    cascade = yaml.safe_load((ROOT / "examples" / "cascade-arena-open.yaml").read_text())
    cascade["models"] = cascade["models"][1:]
    cpath = tmp_path / "mixtral.yaml"
    cpath.write_text(yaml.safe_dump(cascade))
    pool = {"name": "h100", "gpu": "h100-sxm", "nodes": 1, "gpus_per_node": 8}
    if price is not None:
        pool["price_usd_per_gpu_hour"] = price
    kpath = tmp_path / "cluster.yaml"
    kpath.write_text(yaml.safe_dump({"schema_version": 1, "pools": [pool]}))
    return cpath, kpath


@pytest.mark.slow
def test_sizing_finds_what_a_brute_force_enumeration_finds(tmp_path, short_trace):
    """Mixtral-8x7B alone on one 8 × H100 node: every (tp, pp, replicas) that fits is
    simulated; the fewest GPUs whose p95 is within the SLO is what --objective cost answers."""
    from planner_cli.optimize.milp import Option
    from planner_cli.optimize.tables import TableEntry
    from planner_cli.perf.profiles import perf_lookup

    cascade, cluster = _mixtral_alone(tmp_path, price=2.5)
    p = api.load_problem(trace=short_trace, cascade=cascade, cluster=cluster)
    pl = Planner(p, perf_lookup(None))
    pool = p.pools[0]
    found = []
    for shape, kv in pl.shapes(0, pool):
        for r in range(1, pool.gpus // shape.gpus + 1):
            e = TableEntry(shape.gpus * r, 0.0, shape.tp, shape.pp, r, kv)
            sim = pl.simulate(pl.plan_for((), {0: Option(pool.name, e.gpus, 0.0, e)}, "bf"))
            found.append((e.gpus, sim.figures.e2e_latency_s.p95, sim.figures.ttft_s.p95))
    slo = 13.0  # between the best 4-GPU answer (about 12.4 s) and the best 8-GPU one
    holds = [g for g, p95, _ in found if p95 <= slo]
    assert holds and min(holds) < max(g for g, _, _ in found)  # the SLO binds somewhere inside
    result = api.optimize(trace=short_trace, cascade=cascade, cluster=cluster,
                          objective="cost", slo_p95_s=slo)
    pred = result.plan.predicted
    assert pred.sizing.gpus == min(holds) == sum(s.gpus for s in result.plan.stages)
    assert pred.simulated.e2e_latency_s.p95 <= slo
    assert pred.sizing.gpus_per_pool == {"h100": min(holds)}
    assert pred.sizing.cost_usd_per_hour == pytest.approx(2.5 * min(holds))
    per_m = pred.sizing.cost_usd_per_hour / (pred.sizing.output_tokens_per_s * 3600) * 1e6
    assert pred.sizing.cost_usd_per_million_tokens == pytest.approx(per_m)
    assert f"needs {min(holds)} GPUs ({2.5 * min(holds):,.2f} USD/h)" in pred.family.verdict
    # a TTFT limit that the cheapest e2e answer misses: the answer is the cheapest meeting both
    at_min = [t for g, p95, t in found if g == min(holds) and p95 <= slo]
    ttft = 0.9 * min(at_min)
    both = [g for g, p95, t in found if p95 <= slo and t <= ttft]
    assert both and min(both) > min(holds)
    sized = api.optimize(trace=short_trace, cascade=cascade, cluster=cluster,
                         objective="cost", slo_p95_s=slo, slo_ttft_s=ttft).plan.predicted
    assert sized.sizing.gpus == min(both) and sized.sizing.slo_ttft_p95_s == ttft
    assert sized.simulated.ttft_s.p95 <= ttft


@pytest.mark.slow
def test_the_capacity_objective_picks_the_highest_sustainable_rate(short_trace):
    result = api.optimize(trace=short_trace, objective="capacity", slo_p95_s=10.0)
    pred = result.plan.predicted
    assert pred.capacity.latency_limit_s == 10.0 and pred.capacity.slo_scale_target is None
    measured = [m for m in pred.family.members if m.capacity_rps is not None]
    assert len(measured) >= 2  # each member with a plan is measured
    chosen = next(m for m in measured if m.chosen)
    assert chosen.capacity_rps == max(m.capacity_rps for m in measured)
    assert chosen.capacity_rps == pytest.approx(pred.capacity.requests_per_s)
    assert "sustains" in pred.family.verdict and "within 10 s" in pred.family.verdict
    # the baselines' capacities are measured against the same limit
    single = pred.baselines["single-model"].capacity
    assert single is not None and single.latency_limit_s == 10.0


@pytest.mark.slow
def test_the_chosen_plan_lies_on_the_reported_simulated_front(tmp_path, short_trace):
    result = api.optimize(trace=short_trace, quality=_judged_98(tmp_path), cascade=LLAMA,
                          cluster=A100, quality_target=99.0)
    plan, pred = result.plan, result.plan.predicted
    front = pred.simulated_front
    assert front
    here = [p for p in front if p.thresholds == plan.thresholds]
    assert here and here[0].simulated_e2e_p95_s == pytest.approx(
        pred.simulated.e2e_latency_s.p95)
    # non-dominated: quality rises strictly with latency along it
    assert [p.quality for p in front] == sorted({p.quality for p in front})
    assert [p.simulated_e2e_p95_s for p in front] == sorted(p.simulated_e2e_p95_s
                                                            for p in front)
    again = api.optimize(trace=short_trace, quality=_judged_98(tmp_path), cascade=LLAMA,
                         cluster=A100, quality_target=99.0).plan.predicted
    assert again.simulated_front == front and again.pareto_front == pred.pareto_front


@pytest.mark.slow
def test_a_served_judge_is_sized_and_its_gpus_counted(cli, tmp_path, short_trace):
    import yaml

    cascade = yaml.safe_load(LLAMA.read_text())
    cascade["judger"] = {"kind": "model", "model": "qwen3-8b", "output_tokens": 8}
    cpath = tmp_path / "cascade.yaml"
    cpath.write_text(yaml.safe_dump(cascade))
    out = tmp_path / "plan.json"
    result = cli("optimize", "--trace", short_trace, "--quality", _judged_98(tmp_path),
                 "--cascade", cpath, "--cluster", A100, "--quality-target", "99",
                 "--out", out)
    assert result.exit_code == 0, result.output
    plan = Plan.model_validate(json.loads(out.read_text()))
    assert len(plan.stages) == 2 and plan.judge is not None
    assert plan.judge.model == "qwen3-8b" and plan.judge.gpus >= 1
    # the judge is the MILP's third stage and its GPUs count against the 16 of the cluster
    assert set(plan.predicted.milp.assignment) == {"0", "1", "2"}
    used = sum(s.gpus for s in plan.stages) + plan.judge.gpus
    assert used == plan.predicted.milp.gpus <= 16
    chosen = next(m for m in plan.predicted.family.members if m.chosen)
    assert chosen.gpus["judge:qwen3-8b"] == plan.judge.gpus
    assert plan.predicted.simulated.judge is not None  # its queue was simulated
    # a single model alone is never judged: its plan needs no judge replicas
    alone = next(m for m in plan.predicted.family.members if m.models == ["llama-3.1-70b"])
    assert "judge:qwen3-8b" not in (alone.gpus or {})
    sim = json.loads(cli("simulate", "--plan", out, "--json").stdout)
    assert sim["figures"]["e2e_latency_s"]["p95"] == pytest.approx(
        plan.predicted.simulated.e2e_latency_s.p95)
    # sizing counts the judge's GPUs too (an SLO as loose as the plan's own MILP estimate)
    slo = f"{plan.predicted.milp.objective_latency_s:.1f}"
    sized = cli("optimize", "--trace", short_trace, "--quality", _judged_98(tmp_path),
                "--cascade", cpath, "--cluster", A100, "--quality-target", "99",
                "--objective", "cost", "--slo-p95", slo, "--out", tmp_path / "sized.json")
    assert sized.exit_code == 0, sized.output
    sp = Plan.model_validate(json.loads((tmp_path / "sized.json").read_text()))
    assert sp.judge is not None
    assert sp.predicted.sizing.gpus == sum(s.gpus for s in sp.stages) + sp.judge.gpus


def test_a_members_search_solves_the_allocations_that_are_always_simulated():
    """A worker searching a member also solves every MILP phase for its best points (they
    are simulated whatever the others find): the parent gets them back with the caches and
    does not solve them again."""
    from planner_cli.optimize.bilevel import VERIFY_PER_MEMBER, _Member, _searched

    p = api.load_problem()
    searched = _searched(_Member((0, 1), Planner(p, analytic_lookup)), None)
    assert searched.feasible
    fresh = _Member((0, 1), Planner(p, analytic_lookup))
    searched.into(fresh)
    solves = fresh.planner.milp_solves
    for point in searched.feasible[:VERIFY_PER_MEMBER]:
        fresh.planner.allocate(point.thresholds, full=True)
    assert fresh.planner.milp_solves == solves
