"""Terminal output: rich tables on stderr for people, one JSON document on stdout for machines."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from planner_cli.optimize.bilevel import OptimizeResult
from planner_cli.sim.figures import Capacity, Percentiles, clean
from planner_cli.sim.run import PlanSimulation
from planner_cli.summaries import CheckReport
from planner_cli.workload.stats import TraceStats


def console() -> Console:
    # off a terminal rich assumes 80 columns, which truncates the wider tables
    width = None if sys.stderr.isatty() else 160
    return Console(stderr=True, highlight=False, soft_wrap=False, width=width)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(clean(obj), indent=2) + "\n")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def gpus_table(rows: list[dict]) -> None:
    t = Table(title="GPU catalog", title_justify="left")
    for col in ("name", "memory GiB", "HBM GB/s", "bf16 TFLOP/s", "fp8 TFLOP/s",
                "int8 TOP/s", "GPUs/node", "intra-node", "GB/s/dir", "inter-node GB/s"):
        t.add_column(col, justify="left" if col in ("name", "intra-node") else "right")
    for r in rows:
        t.add_row(r["name"], _fmt(r["memory_gib"]), _fmt(r["hbm_bandwidth_gbps"], 0),
                  _fmt(r["bf16_dense_tflops"]), _fmt(r["fp8_dense_tflops"]),
                  _fmt(r["int8_dense_tops"]), str(r["gpus_per_node"]), r["intra_node_link"],
                  _fmt(r["intra_node_bandwidth_gbps"], 0),
                  _fmt(r["inter_node_bandwidth_gbps"]))
    console().print(t)


def models_table(rows: list[dict]) -> None:
    t = Table(title="Model catalog (derived numbers computed from the architecture)",
              title_justify="left")
    for col in ("name", "params B", "active B", "layers", "attention", "MoE",
                "bf16 GB", "fp8 GB", "int4 GB", "KV B/token", "context"):
        t.add_column(col, justify="left" if col in ("name", "attention", "MoE") else "right")
    for r in rows:
        w = r["weight_gb"]
        t.add_row(r["name"], _fmt(r["total_params_b"], 2), _fmt(r["active_params_b"], 2),
                  str(r["layers"]), r["attention"], r["moe"] or "—", _fmt(w["bf16"]),
                  _fmt(w["fp8"]), _fmt(w["int4-awq"]), _fmt(r["kv_bytes_per_token_bf16"]),
                  _fmt(r["max_position_embeddings"]))
    console().print(t)


def trace_table(stats: TraceStats, title: str) -> None:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("requests", _fmt(stats.requests))
    t.add_row("duration", f"{stats.duration_s:,.1f} s ({stats.duration_s / 60:,.1f} min)")
    t.add_row("mean rate", f"{stats.mean_rate_per_s:,.3f} req/s")
    t.add_row("inter-arrival CV", _fmt(stats.interarrival_cv, 3))
    for label, s in (("input tokens", stats.input_tokens), ("output tokens", stats.output_tokens)):
        t.add_row(label, f"mean {s.mean:,.1f} · p50 {s.p50:,.0f} · p90 {s.p90:,.0f} · "
                  f"p99 {s.p99:,.0f} · max {s.max:,}")
    if stats.has_hash_ids:
        t.add_row("prefix hash ids", "yes")
    if stats.scored_models:
        t.add_row("inline scores", ", ".join(stats.scored_models))
    console().print(t)


def check_report(report: CheckReport, title: str) -> None:
    out = console()
    p = report.problem
    data = report.to_dict()
    out.print(f"[bold]{title}[/bold]")
    t = Table(title="Cluster", title_justify="left")
    for col in ("pool", "GPU", "nodes", "GPUs/node", "GPUs", "GiB/GPU"):
        t.add_column(col)
    for pool in p.pools:
        t.add_row(pool.name, pool.gpu.name, str(pool.nodes), str(pool.gpus_per_node),
                  str(pool.gpus), _fmt(round(pool.gpu.memory_gib, 2)))
    out.print(t)
    t = Table(title="Cascade", title_justify="left")
    for col in ("stage", "model", "precision", "params B", "active B", "weights GB",
                "KV B/token", "context", "judged as", "mean score", "mean quality"):
        t.add_column(col)
    for i, (m, j) in enumerate(zip(data["models"], data["judged"]["models"], strict=True)):
        t.add_row(str(i + 1), m["model"], m["precision"], _fmt(m["total_params_b"], 2),
                  _fmt(m["active_params_b"], 2), _fmt(m["weight_gb"]),
                  _fmt(m["kv_bytes_per_token"]), _fmt(p.models[i].max_model_len),
                  j["judged_as"], _fmt(j["mean_score"]), _fmt(j["mean_quality"]))
    out.print(t)
    trace_table(report.trace, "Trace")
    q_source = "measured quality column" if p.sample.has_quality else "judge scores"
    reach = "at most" if p.best.exact else "at least"
    out.print(f"Judged sample: {len(p.sample)} prompts judged for every stage "
              f"({p.dropped} left out); Q(θ) from {q_source}, 0-100. "
              f"z1* (all to the largest) = {p.z1:.1f}, z2* (all stop at the smallest) = "
              f"{p.z2:.1f}, best over thresholds = {p.best.quality:.1f} ({reach}), target = "
              f"{_fmt(p.quality_target)}"
              + ("" if p.promise is None or p.bound is None else
                 f"; at {p.bound.confidence:.0%} confidence the most thresholds promise is "
                 f"{p.promise.quality:.1f} ({'at most' if p.promise.exact else 'at least'}; "
                 f"bootstrap over the prompts"
                 f"{', by category' if p.bound.stratified else ''})"))
    if data["routing"]:
        m = len(p.models)
        t = Table(title="Routing by threshold" + (
            "" if len(data["routing"]) == 1 else " (one threshold for every stage but the last)"),
            title_justify="left")
        t.add_column("θ (0-100)", justify="right")
        for i in range(m):
            t.add_column(f"answered at {i + 1}", justify="right")
        t.add_column("Q(θ)", justify="right")
        if p.bound is not None:
            t.add_column(f"{p.bound.confidence:.0%} interval", justify="right")
            t.add_column("promised (lower bound)", justify="right")
        t.add_column("meets target")
        for r in data["routing"]:
            flag = {None: "—", True: "yes", False: "no"}[r["meets_target"]]
            extra = ([f"{r['quality_interval'][0]:.1f}–{r['quality_interval'][1]:.1f}",
                      f"{r['quality_lower_bound']:.1f}"] if "quality_interval" in r else [])
            t.add_row(", ".join(f"{x:.1f}" for x in r["thresholds"]),
                      *(f"{s:.1%}" for s in r["answer_share"]), f"{r['quality']:.1f}",
                      *extra, flag)
        out.print(t)


def _ms(value: float) -> str:
    return f"{value:,.3f} ms"


def perf_table(result: dict) -> None:
    out = console()
    s, it, mem = result["shape"], result["iteration"], result["memory"]
    ep = f" ep {s['ep']}" if s.get("ep", 1) > 1 else ""
    dp = f" × dp {s['dp']}" if s.get("dp", 1) > 1 else ""
    out.print(f"[bold]{s['model']}[/bold] on {s['gpus']} × {s['gpu']} (tp {s['tp']} × pp "
              f"{s['pp']}{dp}{ep}, {s['precision']})")
    t = Table(title="Memory per GPU (fullest stage)", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("weights", f"{mem['weights_bytes_per_gpu'] / 1e9:,.2f} GB")
    t.add_row("activations", f"{mem['activation_bytes_per_gpu'] / 1e9:,.2f} GB")
    t.add_row("runtime reserve", f"{mem['reserve_bytes_per_gpu'] / 1e9:,.2f} GB")
    t.add_row("usable", f"{mem['usable_bytes_per_gpu'] / 1e9:,.2f} GB")
    t.add_row("KV bytes per token", f"{mem['kv_bytes_per_token_per_gpu']:,.0f} B")
    t.add_row("KV capacity", f"{mem['kv_capacity_tokens']:,} tokens")
    if mem["state_tokens_per_sequence"]:
        t.add_row("state per sequence", f"{mem['state_tokens_per_sequence']:,} KV tokens")
    t.add_row("fits", "yes" if mem["fits"] else f"no: {mem['reason']}")
    out.print(t)
    out.print(f"Iteration: prefill {it['prefill_tokens']:,} tokens, decode "
              f"{it['decode_batch']:,} sequences holding {it['context_tokens']:,.0f} tokens")
    t = Table(show_header=False)
    t.add_column("what")
    t.add_column("ms", justify="right")
    for key, value in result["breakdown_ms"].items():
        t.add_row(key, _ms(value))
    t.add_row("[bold]total[/bold]", f"[bold]{_ms(result['time_ms'])}[/bold]")
    out.print(t)
    out.print(f"source: {result['source']}")


def serve_table(result: dict) -> None:
    out = console()
    ep = f" ep {result['ep']}" if result["ep"] > 1 else ""
    dp = result.get("dp", 1)
    ranks = f" × dp {dp}" if dp > 1 else ""
    out.print(f"[bold]{result['model']}[/bold] on {result['tp'] * result['pp'] * dp} × "
              f"{result['gpu']} (tp {result['tp']} × pp {result['pp']}{ranks}{ep}, "
              f"{result['precision']}, {result['engine']}): {result['num_prompts']:,} requests "
              f"of {result['isl']:,} → {result['osl']:,} tokens from {result['concurrency']} "
              "closed-loop clients")
    t = Table(show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("mean TTFT", _ms(result["mean_ttft_ms"]))
    t.add_row("mean TPOT", _ms(result["mean_tpot_ms"]))
    t.add_row("mean end-to-end latency", _ms(result["mean_e2el_ms"]))
    t.add_row("output throughput", f"{result['output_throughput_tok_s']:,.1f} tokens/s")
    t.add_row("request throughput", f"{result['request_throughput_rps']:,.3f} req/s")
    t.add_row("KV capacity", f"{result['kv_capacity_tokens']:,} tokens")
    t.add_row("preemptions", f"{result['preemptions']:,}")
    out.print(t)
    seqs = result["max_num_seqs"]
    first = result["prefill_first"]
    scheduling = ("waiting prefills first, decodes paused" if first
                  else "prefill chunks mixed into decode iterations")
    recv = result.get("scheduler_recv_interval", 1)
    if recv > 1:
        scheduling += f"; new requests taken in every {recv} decode iterations"
    each = " on each of its ranks" if result.get("dp", 1) > 1 else ""
    out.print(f"engine batching{each}: {result['max_num_batched_tokens']:,} tokens per "
              f"{'prefill batch' if first else 'iteration'}, "
              f"{'no sequence cap' if seqs is None else f'{seqs:,} sequences'}; {scheduling}")
    out.print(f"source: {result['source']}")


def replay_table(report: dict) -> None:
    """A replay through the running cascade beside the plan's simulation of it."""
    out = console()
    failed = sum(report["failed"].values())
    out.print(f"replayed {report['requests']:,} requests of {report['trace']} "
              f"(rate x{report['rate_scale']:g}) through {report['url']} in "
              f"{report['duration_s']:,.1f} s: {report['completed']:,} answered"
              + (f", {failed:,} failed ({', '.join(f'{k}: {v}' for k, v in sorted(report['failed'].items()))})"  # noqa: E501
                 if failed else ""))
    t = Table()
    t.add_column("")
    t.add_column("plan predicts", justify="right")
    t.add_column("measured", justify="right")
    shares = report["answer_share"]
    for i, (p, m) in enumerate(zip(shares["predicted"], shares["measured"], strict=True)):
        t.add_row(f"answered by tier {i + 1}", f"{100 * p:.1f} %", f"{100 * m:.1f} %")
    for key, label in (("e2e_latency_s", "end-to-end"), ("ttft_s", "time to first token")):
        for q in ("p50", "p90", "p95", "p99"):
            t.add_row(f"{label} {q}", _fmt(report[key]["predicted"][q], 3) + " s",
                      _fmt(report[key]["measured"][q], 3) + " s")
    slo = report["slo"]
    targets = ", ".join(f"{k.removesuffix('_s')} <= {v:g} s"
                        for k, v in slo["targets"].items() if v is not None)
    if targets:
        meet = slo["share_meeting"]
        t.add_row(f"requests meeting {targets}", f"{100 * meet['predicted']:.1f} %",
                  f"{100 * meet['measured']:.1f} %")
    out.print(t)


def profile_table(result: dict) -> None:
    out = console()
    meta = result["metadata"]
    t = Table(title=f"Profile of {meta['model']} on {meta['device_name']} ({meta['dtype']}, "
              f"{meta['layers_profiled']} of {meta['layers_total']} layers timed)",
              title_justify="left")
    for col in ("tp", "prefill", "batch", "context", "time ms", "head ms", "per layer ms"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        t.add_row(str(r["tp"]), str(r["prefill_tokens"]), str(r["decode_batch"]),
                  f"{r['context_tokens']:,}", f"{r['time_ms']:,.2f}", f"{r['head_ms']:,.2f}",
                  f"{r['per_layer_ms']:,.3f}")
    out.print(t)
    for note in meta.get("notes", []):
        out.print(f"note: {note}")
    points = len(result["rows"])
    out.print(f"measured {points} grid points × {len(meta['tp'])} tp, "
              f"{meta['warmup']} warm-up + {meta['reps']} timed rounds each, round-robin")
    out.print(f"wrote {result['table']}")


def calibration_table(result: dict) -> None:
    out = console()
    fit = result["fit"]
    t = Table(title=f"Calibration of {result['model']} on {result['gpu']}"
              + (f" ({result['engine']})" if result["engine"] else ""), title_justify="left",
              show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for key, value in result["constants"].items():
        t.add_row(key, f"{value * 1e3:,.3f} ms" if key.endswith("_s") else f"{value:.4f}")
    t.add_row("rows", str(fit["rows"]))
    t.add_row("fit error (median / p90)",
              f"{fit['fit_median_ape']:.1%} / {fit['fit_p90_ape']:.1%}")
    if fit["cv_median_ape"] is not None:
        t.add_row(f"cross-validated ({fit['cv_scheme']})",
                  f"{fit['cv_median_ape']:.1%} / {fit['cv_p90_ape']:.1%}")
    else:
        t.add_row("cross-validated", fit["cv_scheme"])
    out.print(t)
    out.print(f"saved {result['saved']}")


def _p(d: Percentiles | None, key: str) -> str:
    v = None if d is None else getattr(d, key)
    return "—" if v is None else f"{v:,.3f}"


def _scale(value: float | None) -> str:
    return "∞ (never reached)" if value is None else f"{value:,.2f}"


def simulation_tables(result: PlanSimulation, trace: str) -> None:
    out = console()
    fig = result.figures
    out.print(f"[bold]Simulated {result.requests:,} requests[/bold] of {trace} "
              f"(rate × {result.rate_scale:g}, {result.balancer}); quality Q(θ) = "
              f"{result.quality:.1f}; scores: {result.scores_from}")
    t = Table(title="Stages", title_justify="left")
    for col in ("stage", "model", "GPU", "tp×pp×rep", "requests", "TTFT p95 s",
                "latency p50 s", "p95 s", "p99 s", "queue p95 s", "preempt", "KV use"):
        t.add_column(col, justify="left" if col in ("model", "GPU") else "right")
    for i, s in enumerate(fig.stages):
        t.add_row(str(i + 1), s.model or "", s.gpu or "", f"{s.tp}×{s.pp}×{s.replicas}",
                  f"{s.requests:,}", _p(s.ttft_s, "p95"), _p(s.latency_s, "p50"),
                  _p(s.latency_s, "p95"), _p(s.latency_s, "p99"),
                  _p(s.queueing_s, "p95"), str(s.preemptions),
                  f"{s.kv_utilisation_mean:.1%}")
    out.print(t)
    t = Table(title="End to end (judger included)", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    e2e = fig.e2e_latency_s
    t.add_row("latency p50 / p90 / p95 / p99 s", " / ".join(_p(e2e, k) for k in
                                                          ("p50", "p90", "p95", "p99")))
    t.add_row("TTFT p50 / p95 s", f"{_p(fig.ttft_s, 'p50')} / {_p(fig.ttft_s, 'p95')}")
    t.add_row("answered per stage", " / ".join(f"{n:,}" for n in fig.answered_by_stage))
    t.add_row("throughput", f"{fig.throughput_rps:,.2f} req/s")
    t.add_row("goodput", f"{fig.goodput_rps:,.2f} req/s")
    t.add_row(f"SLO scale ({fig.slo_attainment_pct:g} % within s × base)",
              _scale(fig.slo_scale))
    if result.capacity is not None:
        cap = result.capacity
        t.add_row(f"capacity at SLO scale {cap.slo_scale_target:g}" if cap.latency_limit_s is None
                  else f"capacity at p95 ≤ {cap.latency_limit_s:g} s",
                  f"{'≥ ' if cap.at_least else ''}× {cap.rate_multiple:.2f} "
                  f"({cap.requests_per_s:,.2f} req/s)")
    t.add_row("SLO reference", result.slo_reference)
    t.add_row("simulation wall time", f"{result.simulation_wall_s:.2f} s")
    out.print(t)
    for i, s in enumerate(fig.stages):
        out.print(f"stage {i + 1} perf source: {s.perf_source}")


def csv_lines(columns: dict) -> list[str]:
    """Equal-length columns as CSV lines (floats with 6 decimals, inf/NaN left empty)."""
    names = list(columns)
    rows = [",".join(names) + "\n"]
    cols = [list(columns[n]) for n in names]
    for values in zip(*cols, strict=True):
        cells = []
        for v in values:
            f = float(v)
            if math.isnan(f) or math.isinf(f):
                cells.append("")
            elif f.is_integer() and abs(f) < 1e15:
                cells.append(str(int(f)))
            else:
                cells.append(f"{f:.6f}")
        rows.append(",".join(cells) + "\n")
    return rows


def _capacity_target(cap: Capacity) -> str:
    return (f"SLO scale {cap.slo_scale_target:g}" if cap.latency_limit_s is None
            else f"e2e latency ≤ {cap.latency_limit_s:g} s")


def _gain(x: float) -> str:
    """A plan-over-baseline ratio; below 1 it is the baseline's win, and says so."""
    return f"{x:.2f}×" if x >= 1 else f"{x:.2f}× (baseline ahead)"


def optimize_tables(result: OptimizeResult, out_path: str | None) -> None:
    out = console()
    plan = result.plan
    pred = plan.predicted
    if pred is None:
        raise ValueError("an optimized plan carries its predictions")
    sim = pred.simulated
    target = ("none: the fastest plan, no quality floor" if result.no_target
              else _fmt(pred.quality_target))
    fam = pred.family
    if fam is None or pred.quality_promise is None:
        raise ValueError("an optimized plan carries its family and quality promise")
    out.print(f"[bold]Verdict[/bold]: {fam.verdict}.")
    sz = pred.sizing
    if sz is not None:
        pools = ", ".join(f"{g} of pool {name}" for name, g in sz.gpus_per_pool.items())
        money = ("no prices in the cluster file" if sz.cost_usd_per_hour is None else
                 f"{sz.cost_usd_per_hour:,.2f} USD/h, "
                 f"{_fmt(sz.cost_usd_per_million_tokens, 3)} USD per million output tokens")
        ttft = ("" if sz.slo_ttft_p95_s is None
                else f" and the p95 TTFT within {sz.slo_ttft_p95_s:g} s")
        out.print(f"[bold]Sizing[/bold]: {sz.gpus} GPUs ({pools}) keep the p95 within "
                  f"{sz.slo_p95_s:g} s{ttft}; {money} ({sz.output_tokens_per_s:,.0f} output "
                  "tokens/s)")
    thresholds = (f"thresholds {', '.join(f'{t:.1f}' for t in plan.thresholds)} (0-100)"
                  if plan.thresholds else "one model, no thresholds")
    qp = pred.quality_promise
    promise = ""
    if qp.confidence is not None and qp.interval is not None:
        promise = (f"; {qp.confidence:.0%} interval {qp.interval[0]:.1f}–{qp.interval[1]:.1f}, "
                   f"promised ≥ {qp.lower_bound:.1f} on {qp.prompts} judged prompts"
                   + (" (bootstrap by category)" if qp.stratified else ""))
    cv = qp.cross_validated
    if cv is not None:
        promise += (f"; cross-validated ({cv.folds} folds: chosen on the others, measured on the "
                    f"one left out) the target is missed by {cv.mean_shortfall:+.1f} on average, "
                    f"{cv.worst_shortfall:+.1f} at worst (negative: exceeded)")
    out.print(f"[bold]Plan[/bold] at {pred.rate_per_s or 0.0:.3g} req/s: {' → '.join(fam.winner)}; "
              f"{thresholds} → quality Q = {pred.quality:.1f}{promise} (target {target}; "
              f"z1* {pred.z1:.1f}, z2* {pred.z2:.1f}); scores: {pred.judged.scores_from}")
    t = Table(title="Family (every ordered sub-cascade; simulated at the planned rate)",
              title_justify="left")
    for col in ("models", "promised Q", "GPUs per model", "MILP p95 s", "sim e2e p95 s",
                "SLO scale", ""):
        t.add_column(col, justify="left" if col in ("models", "GPUs per model", "") else "right")
    whole = max((m.simulated_requests or 0) for m in fam.members)
    for mem in fam.members:
        window = ("" if mem.simulated_requests in (None, whole)
                  else f" (first {mem.simulated_requests:,})")
        t.add_row(" → ".join(mem.models), _fmt(mem.quality, 1),
                  "" if mem.gpus is None else ", ".join(str(g) for g in mem.gpus.values()),
                  _fmt(mem.milp_latency_s, 3), _fmt(mem.simulated_e2e_p95_s, 3) + window,
                  "—" if mem.simulated_e2e_p95_s is None else _scale(mem.simulated_slo_scale),
                  "chosen" if mem.chosen else (mem.error or ""))
    out.print(t)
    t = Table(title="Allocation", title_justify="left")
    for col in ("stage", "model", "pool", "GPU", "GPUs", "tp×pp×replicas", "share of requests",
                "MILP p95 s", "sim p50 s", "sim p95 s", "sim p99 s"):
        t.add_column(col, justify="left" if col in ("model", "pool", "GPU") else "right")
    for i, (stage, fig) in enumerate(zip(plan.stages, sim.stages, strict=True)):
        choice = pred.milp.assignment.get(str(i))
        t.add_row(str(i + 1), stage.model, stage.pool, fig.gpu or "", str(stage.gpus),
                  f"{stage.tp}×{stage.pp}×{stage.replicas}",
                  f"{fig.requests / max(sim.requests, 1):.1%}",
                  _fmt(None if choice is None else choice.latency_s, 3),
                  _p(fig.latency_s, "p50"), _p(fig.latency_s, "p95"), _p(fig.latency_s, "p99"))
    out.print(t)
    for i, fig in enumerate(sim.stages):
        out.print(f"stage {i + 1} perf source: {fig.perf_source}")
    e2e = sim.e2e_latency_s
    cap = pred.capacity
    capacity = ("not measured (the trace has fewer than 2 requests, so no rate)" if cap is None
                else f"at {_capacity_target(cap)} (sustained {cap.sustained_s:g} s): "
                f"{'≥ ' if cap.at_least else ''}× {cap.rate_multiple:.2f} the trace "
                f"({cap.requests_per_s:.1f} req/s)")
    out.print(f"End to end (simulated, judger included): p50 {_p(e2e, 'p50')} s, p95 "
              f"{_p(e2e, 'p95')} s, p99 {_p(e2e, 'p99')} s; SLO scale {_scale(sim.slo_scale)}; "
              f"throughput capacity {capacity}. MILP estimate of the slowest stage's p95: "
              f"{_fmt(pred.milp_estimate_latency_s, 3)} s ({pred.milp.solver}, "
              f"{pred.milp.status})")
    t = Table(title="Baselines (same trace and cluster, simulated)", title_justify="left")
    for col in ("baseline", "deployment", "SLO scale", "e2e p95 s", "capacity ×",
                "plan's SLO-scale gain", "plan's throughput gain"):
        t.add_column(col, justify="left" if col in ("baseline", "deployment") else "right")
    for name, b in pred.baselines.items():
        if b.error is not None or b.plan is None or b.simulated is None:
            t.add_row(name, b.error or "—", "—", "—", "—", "—", "—")
            continue
        dep = ", ".join(f"{s.model} {s.tp}×{s.pp}×{s.replicas}" for s in b.plan.stages)
        g = pred.gains.get(name)
        slo_gain = "—" if g is None or g.slo_scale_gain is None else _gain(g.slo_scale_gain)
        tput = "—"
        if g is not None and g.throughput_gain is not None:
            tput = ({"at most": "≤ ", "at least": "≥ "}.get(g.throughput_gain_bound, "")
                    + _gain(g.throughput_gain))
        t.add_row(name, dep, _scale(b.simulated.slo_scale), _p(b.simulated.e2e_latency_s, "p95"),
                  "—" if b.capacity is None else
                  ("≥ " if b.capacity.at_least else "") + f"{b.capacity.rate_multiple:.2f}",
                  slo_gain, tput)
    out.print(t)
    out.print("Pareto front (promised quality → MILP latency s): " + "; ".join(
        f"{p.quality:.1f} → {_fmt(p.milp_latency_s, 2)}" for p in pred.pareto_front))
    out.print("Simulated front (promised quality → simulated p95 s): " + "; ".join(
        f"{p.quality:.1f} → {_fmt(p.simulated_e2e_p95_s, 2)}" for p in pred.simulated_front))
    tm = result.timings
    out.print(f"{tm.evaluated_thresholds} threshold vectors evaluated, {tm.milp_solves} "
              f"MILP solves, {tm.simulated_candidates} candidates simulated, "
              f"{tm.total_s:.1f} s in all")
    if out_path:
        out.print(f"wrote {out_path}")


def plot_pngs(result: OptimizeResult, folder: str) -> list[str]:
    """pareto.png and attainment.png; needs matplotlib (the `plot` extra)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = result.plan.predicted
    if pred is None:
        raise ValueError("an optimized plan carries its predictions")
    paths: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = os.path.join(folder, name)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    front = pred.pareto_front
    ax.plot([p.quality for p in front], [p.milp_latency_s for p in front], "o-",
            label="Pareto front (MILP estimate)")
    ax.plot([pred.quality], [pred.milp_estimate_latency_s], "r*", markersize=14,
            label="chosen plan")
    if pred.quality_target is not None:
        ax.axvline(pred.quality_target, color="grey", linestyle="--", label="quality target")
    ax.set_xlabel("quality Q(θ) (0-100)")
    ax.set_ylabel("slowest stage p95 latency (s)")
    ax.legend()
    save(fig, "pareto.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {"cascadia plan": pred.simulated.attainment_curve}
    for name, b in pred.baselines.items():
        if b.simulated is not None:
            curves[name] = b.simulated.attainment_curve
    for name, curve in curves.items():
        ax.plot([c[0] for c in curve], [100 * c[1] for c in curve], marker=".", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("SLO scale s")
    ax.set_ylabel("% of requests within s × base latency")
    ax.axhline(95, color="grey", linestyle="--")
    ax.legend()
    save(fig, "attainment.png")
    return paths
