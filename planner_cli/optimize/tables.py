"""Latency tables l_i(g, f): the best estimated p95 latency of stage i's workload on f GPUs of
pool g, over the candidate shapes (dp replicas of one (tp, pp) shape, dp·tp·pp ≤ f), with the
shape kept. Non-increasing in f; only the counts that improve on every smaller one are kept
(using more GPUs for the same latency never helps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner_cli.optimize.candidates import replica_shapes
from planner_cli.optimize.estimate import Workload, p95_latency
from planner_cli.perf.memory import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS
from planner_cli.perf.model import CostModel
from planner_cli.perf.shapes import ReplicaShape
from planner_cli.problem import Pool
from planner_cli.specs.model import ModelCard

CostFactory = Callable[[ReplicaShape], CostModel]


@dataclass(frozen=True)
class TableEntry:
    gpus: int  # f: GPUs the stage takes in the pool
    latency_s: float  # estimated p95
    tp: int
    pp: int
    replicas: int
    kv_capacity_tokens: int

    def to_dict(self) -> dict:
        return {"gpus": self.gpus, "latency_s": self.latency_s, "tp": self.tp, "pp": self.pp,
                "replicas": self.replicas}


def latency_table(card: ModelCard, pool: Pool, precision: str, workload: Workload,
                  cost_factory: CostFactory, *, max_model_len: int | None = None,
                  max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
                  max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
                  max_gpus: int | None = None,
                  shapes: list[tuple[ReplicaShape, int]] | None = None) -> list[TableEntry]:
    """The improving entries of l(g, f) for f = 1..pool size (or max_gpus)."""
    shapes = shapes if shapes is not None else replica_shapes(card, pool, precision,
                                                             max_model_len)
    limit = min(pool.gpus, max_gpus or pool.gpus)
    raw: dict[int, TableEntry] = {}
    for shape, kv in shapes:
        cost = cost_factory(shape)
        per = shape.gpus
        memo: dict = {}
        for dp in range(1, limit // per + 1):
            lat = p95_latency(cost, workload, dp, max_num_seqs, max_num_batched_tokens, kv,
                              memo=memo)
            f = dp * per
            if f not in raw or lat < raw[f].latency_s:
                raw[f] = TableEntry(f, lat, shape.tp, shape.pp, dp, kv)
            if lat != float("inf") and dp > 1 and lat >= _prev(raw, f, per):
                break  # more replicas no longer help this shape
    out: list[TableEntry] = []
    best = float("inf")
    for f in sorted(raw):
        if raw[f].latency_s < best:
            best = raw[f].latency_s
            out.append(raw[f])
    return out


def _prev(raw: dict[int, TableEntry], f: int, per: int) -> float:
    e = raw.get(f - per)
    return e.latency_s if e is not None else float("inf")


def lookup(table: list[TableEntry], gpus: int) -> TableEntry | None:
    """The best entry using at most `gpus` GPUs (the table is non-increasing in f)."""
    best = None
    for e in table:
        if e.gpus <= gpus:
            best = e
    return best
