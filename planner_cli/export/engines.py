"""Launch files for vLLM and SGLang: per replica one YAML config (`--config`) and one script per
node it spans. Every interpolated value is shell-quoted; scripts start with set -euo pipefail."""

from __future__ import annotations

import shlex

import yaml

from planner_cli.errors import InputError
from planner_cli.export.flags import DIST_PORT, ENGINES, ENVIRONMENT, PRECISION, config_key
from planner_cli.export.placement import Replica

q = shlex.quote


def environment(engine: str, r: Replica) -> dict[str, str]:
    """Environment variables the replica's precision needs under `engine`."""
    needs = ENVIRONMENT.get(r.precision)
    if needs is None:
        return {}
    if engine not in needs:
        raise InputError(f"{r.model} is planned in {r.precision}, which the {engine} export "
                         "cannot select", f"export --format {' or '.join(needs)}, or plan "
                         f"{r.model} in another precision")
    return needs[engine]


def replica_config(engine: str, r: Replica) -> dict:
    """The engine options of one replica, keyed as the engine's --config file wants them."""
    f = ENGINES[engine]
    dtype, quant = PRECISION[r.precision]
    values = [("tp", r.tp), ("pp", r.pp), ("host", "0.0.0.0"), ("port", r.port),
              ("served_model_name", r.model), ("max_model_len", r.max_model_len),
              ("max_num_seqs", r.max_num_seqs),
              ("max_num_batched_tokens", r.max_num_batched_tokens),
              ("gpu_memory_utilization", r.gpu_memory_utilization), ("dtype", dtype)]
    if quant and not r.prequantised:
        values.append(("quantization", quant))
    return {config_key(engine, f[k]): v for k, v in values}


def _node_flags(engine: str, r: Replica, rank: int) -> list[str]:
    """Flags of one node of a multi-node replica (the head address comes from $HEAD_ADDR)."""
    f = ENGINES[engine]
    if not r.multi_node:
        return []
    if engine == "vllm":
        flags = [f["nnodes"], str(len(r.nodes)), f["node_rank"], str(rank),
                 f["master_addr"], '"$HEAD_ADDR"', f["master_port"], str(DIST_PORT)]
        if rank > 0:
            flags.append(f["headless"])
        return flags
    return [f["nnodes"], str(len(r.nodes)), f["node_rank"], str(rank),
            f["dist_init_addr"], f'"$HEAD_ADDR":{DIST_PORT}']


def script(engine: str, r: Replica, rank: int, config_name: str) -> str:
    f = ENGINES[engine]
    node = r.nodes[rank]
    lines = [
        "#!/usr/bin/env bash",
        f"# cascadia-plan export for {engine} {f['version']}: {r.tier} replica {r.index} of "
        f"{r.model}" + (f", node {rank} of {len(r.nodes)}" if r.multi_node else ""),
        f"# run on host {node.host} (GPUs {','.join(map(str, node.gpus))}); serves port "
        f"{r.port}" + (f" on {r.nodes[0].host}" if r.multi_node else ""),
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "$0")" && pwd)"',
        f"export CUDA_VISIBLE_DEVICES={q(','.join(map(str, node.gpus)))}",
        *(f"export {name}={q(value)}" for name, value in environment(engine, r).items()),
    ]
    if r.multi_node:
        lines += ['HEAD_ADDR="${HEAD_ADDR:-}"  # the address of the head node; default below',
                  f'if [ -z "$HEAD_ADDR" ]; then HEAD_ADDR={q(r.nodes[0].host)}; fi']
    config = f'"$HERE"/{q(config_name)}'
    if engine == "vllm":
        cmd = ["exec", "vllm", "serve", q(r.hf_id), f["config"], config]
    else:
        cmd = ["exec", "python3", "-m", "sglang.launch_server", f["model"], q(r.hf_id),
               f["config"], config]
    cmd += _node_flags(engine, r, rank)
    lines.append(" ".join(cmd))
    return "\n".join(lines) + "\n"


def render_engine(engine: str, replicas: list[Replica]) -> dict[str, str]:
    """{path: text} of one engine's launch files, under `<engine>/`."""
    files: dict[str, str] = {}
    index = [f"# {engine} {ENGINES[engine]['version']} launch files (cascadia-plan export)",
             "# replica | host(s) | GPUs | port | script(s)"]
    for r in replicas:
        base = f"{engine}/{r.name}"
        config_name = f"{r.name}.yaml"
        files[f"{base}.yaml"] = yaml.safe_dump(replica_config(engine, r), sort_keys=False)
        scripts = []
        for rank in range(len(r.nodes)):
            name = f"{r.name}.sh" if not r.multi_node else f"{r.name}-node{rank}.sh"
            files[f"{engine}/{name}"] = script(engine, r, rank, config_name)
            scripts.append(name)
        hosts = " + ".join(n.host for n in r.nodes)
        gpus = " + ".join(",".join(map(str, n.gpus)) for n in r.nodes)
        index.append(f"{r.name} | {hosts} | {gpus} | {r.port} | {' '.join(scripts)}")
    files[f"{engine}/INDEX.txt"] = "\n".join(index) + "\n"
    return files
