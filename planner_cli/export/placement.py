"""Place a plan's replicas on the nodes of its pools (first fit, in stage order)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner_cli.errors import InputError
from planner_cli.export.flags import BASE_PORT
from planner_cli.problem import Deployment


@dataclass(frozen=True)
class NodeSlot:
    host: str
    gpus: tuple[int, ...]  # GPU indices on that host (CUDA_VISIBLE_DEVICES)


@dataclass(frozen=True)
class Replica:
    stage: int  # 0-based; -1 for the served judge
    tier: str  # e.g. "tier1"
    model: str  # card name (served model name)
    hf_id: str
    index: int  # replica number within the stage
    tp: int
    pp: int
    precision: str
    pool: str
    vendor: str  # the pool's GPU vendor: nvidia or amd
    node_selector: tuple[tuple[str, str], ...] | None  # the pool's node labels, if given
    nodes: tuple[NodeSlot, ...]  # one per node the replica spans; nodes[0] is the head
    port: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    # hf_id is a pre-quantised checkpoint of the card: the engines read its quantisation from
    # its own config (a --quantization flag could contradict it, as fp8 does ModelOpt's)
    prequantised: bool = False

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    @property
    def name(self) -> str:
        return f"{self.tier}-{self.model}-{self.index}"


def host_name(pool: str, node: int) -> str:
    return f"{pool}-{node}"


def place(dep: Deployment) -> list[Replica]:
    """Every replica of every stage (and of a served judge) with its hosts, GPUs and port, for
    a plan resolved by `problem.resolve_deployment` (node sizes and context lengths set)."""
    plan = dep.plan
    hf_ids = {m.name: m.weights for m in dep.models}
    cards = {m.name: m.card for m in dep.models}
    if dep.judge is not None:  # served from the checkpoint the cascade names, else the card's
        named = plan.cascade.judger.model if plan.cascade.judger.kind == "model" else ""
        card = dep.judge.card
        hf_ids.setdefault(dep.judge.model, named if card.checkpoint_precision(named)
                          else card.hf_id)
        cards.setdefault(dep.judge.model, card)
    vendors = {p.name: p.gpu.vendor for p in dep.pools}
    pools = {p.name: p for p in plan.cluster.pools}
    free: dict[str, list[list[int]]] = {}
    ports: dict[str, int] = {}
    out: list[Replica] = []
    stages = [(i, s) for i, s in enumerate(plan.stages)]
    if plan.judge is not None:
        stages.append((-1, plan.judge))
    for i, stage in stages:
        pool = pools[stage.pool]
        per_node = pool.gpus_per_node
        if per_node is None or stage.max_model_len is None:
            raise ValueError("place() takes a resolved plan (problem.resolve_deployment)")
        nodes = free.setdefault(pool.name, [list(range(per_node)) for _ in range(pool.nodes)])
        size = stage.tp * stage.pp
        tier = "judge" if i < 0 else f"tier{i + 1}"
        for r in range(stage.replicas):
            slots: list[NodeSlot] = []
            if size <= per_node:
                node = next((n for n, gpus in enumerate(nodes) if len(gpus) >= size), None)
                if node is None:
                    raise InputError(f"{tier} ({stage.model}) replica {r}: no node of pool "
                                     f"{pool.name!r} has {size} free GPUs",
                                     "fewer replicas or a larger pool")
                taken = nodes[node][:size]
                del nodes[node][:size]
                slots.append(NodeSlot(host_name(pool.name, node), tuple(taken)))
            else:
                if size % per_node:
                    raise InputError(f"{tier} ({stage.model}): a {size}-GPU replica does not "
                                     f"fill whole {per_node}-GPU nodes",
                                     "use tp x pp that is a multiple of the node size")
                need = math.ceil(size / per_node)
                empty = [n for n, gpus in enumerate(nodes) if len(gpus) == per_node][:need]
                if len(empty) < need:
                    raise InputError(f"{tier} ({stage.model}) replica {r}: needs {need} empty "
                                     f"nodes of pool {pool.name!r}", "a larger pool")
                for n in empty:
                    slots.append(NodeSlot(host_name(pool.name, n), tuple(nodes[n])))
                    nodes[n] = []
            head = slots[0].host
            port = ports.get(head, BASE_PORT)
            ports[head] = port + 1
            out.append(Replica(
                stage=i, tier=tier, model=stage.model, hf_id=hf_ids[stage.model], index=r,
                tp=stage.tp, pp=stage.pp, precision=stage.precision, pool=pool.name,
                vendor=vendors[pool.name],
                node_selector=(None if pool.node_selector is None
                               else tuple(sorted(pool.node_selector.items()))),
                nodes=tuple(slots), port=port, max_model_len=stage.max_model_len,
                max_num_seqs=stage.max_num_seqs,
                max_num_batched_tokens=stage.max_num_batched_tokens,
                gpu_memory_utilization=stage.gpu_memory_utilization,
                prequantised=cards[stage.model].checkpoint_precision(
                    hf_ids[stage.model]) is not None))
    return out
