"""Measure iteration times of a model on the local GPUs or the CPU (torch imported lazily).

The model is built from its card with random weights (transformers `from_config`, nothing is
downloaded). A tensor-parallel shard is profiled as the model with its heads, KV heads and FFN
widths divided by tp (the compute one GPU does); with several local CUDA GPUs the all-reduce of
the layer outputs is measured too and added. Large models are profiled on a few layers and
scaled by layer count: the embedding, final norm and LM head are timed apart, so

    time(L layers) = head + L · (time(N layers) - head) / N.
"""

from __future__ import annotations

import inspect
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planner_cli.errors import InputError, MissingDependencyError
from planner_cli.specs.model import ModelCard, param_counts

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class ProfileGrid:
    prefill_tokens: tuple[int, ...] = (32, 128, 512, 2048)
    decode_batch: tuple[int, ...] = (1, 4, 16, 64)
    decode_context: tuple[int, ...] = (128, 512, 2048)  # cached tokens per sequence
    explicit: tuple[tuple[int, int, int], ...] = ()  # if given, exactly these points

    def points(self) -> list[tuple[int, int, int]]:
        """(prefill tokens, decode batch, context tokens per sequence) to measure."""
        if self.explicit:
            return list(self.explicit)
        pts = [(p, 0, 0) for p in self.prefill_tokens]
        pts += [(0, b, c) for b in self.decode_batch for c in self.decode_context]
        return pts


FULL_GRID = ProfileGrid()
QUICK_GRID = ProfileGrid(prefill_tokens=(32, 128, 512), decode_batch=(1, 8, 32),
                         decode_context=(128, 1024))
CPU_GRID = ProfileGrid(prefill_tokens=(16, 64, 256), decode_batch=(1, 4, 16),
                       decode_context=(128, 512))
# --quick on the CPU: 6 points (2 prefill, 4 decode) on QUICK_CPU_LAYERS layers scaled by layer
# count, so a small model profiles in well under a minute and a few GB on a laptop's cores
CPU_QUICK_GRID = ProfileGrid(prefill_tokens=(32, 128), decode_batch=(1, 8),
                             decode_context=(128, 512))
QUICK_CPU_LAYERS = 4
HF_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "mixtral": "mixtral",
                  "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3_moe",
                  "deepseek_v3": "deepseek_v3"}


@dataclass
class ProfileResult:
    rows: list[dict[str, Any]]
    metadata: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _torch():
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError("profiling needs torch and transformers",
                                     "pip install 'cascadia-plan[profile]'") from None
    return torch, transformers


def hf_config_for(card: ModelCard, layers: int, tp: int) -> dict[str, Any]:
    """An HF config dict for `layers` layers of one tensor-parallel shard of `card`."""
    heads = card.num_attention_heads // tp
    kv = max(1, card.num_key_value_heads // tp)
    cfg: dict[str, Any] = {
        "num_hidden_layers": layers, "hidden_size": card.hidden_size,
        "intermediate_size": max(1, card.intermediate_size // tp),
        "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": card.head_dim, "vocab_size": max(1, card.vocab_size // tp),
        "max_position_embeddings": card.max_position_embeddings,
        "tie_word_embeddings": card.tie_word_embeddings,
    }
    if card.model_type in ("qwen2",):
        cfg.pop("head_dim")
    if card.sliding_window and card.model_type == "mistral":
        cfg["sliding_window"] = card.sliding_window
    if card.moe is not None:
        moe = card.moe
        if card.model_type == "mixtral":
            cfg.update(num_local_experts=moe.num_experts,
                       num_experts_per_tok=moe.num_experts_per_tok,
                       intermediate_size=max(1, moe.moe_intermediate_size // tp))
        elif card.model_type == "qwen3_moe":
            cfg.update(num_experts=moe.num_experts,
                       num_experts_per_tok=moe.num_experts_per_tok,
                       moe_intermediate_size=max(1, moe.moe_intermediate_size // tp))
        elif card.model_type == "deepseek_v3":
            cfg.update(n_routed_experts=moe.num_experts,
                       num_experts_per_tok=moe.num_experts_per_tok,
                       moe_intermediate_size=max(1, moe.moe_intermediate_size // tp),
                       n_shared_experts=moe.num_shared_experts,
                       # profile MoE layers only; the few dense layers are scaled as MoE ones
                       first_k_dense_replace=0, n_group=1, topk_group=1)
    if card.mla is not None:
        m = card.mla
        cfg.update(kv_lora_rank=m.kv_lora_rank, q_lora_rank=m.q_lora_rank,
                   qk_nope_head_dim=m.qk_nope_head_dim, qk_rope_head_dim=m.qk_rope_head_dim,
                   v_head_dim=m.v_head_dim, num_key_value_heads=heads)
        cfg.pop("head_dim", None)
    return cfg


def shard_weight_bytes(card: ModelCard, layers: int, tp: int, dtype_bytes: int) -> float:
    """Bytes of `layers` layers of one shard plus embedding and head, at `dtype_bytes`."""

    counts = param_counts(card)
    per_layer = (counts.total - counts.embedding - counts.lm_head) / card.num_hidden_layers
    head = counts.embedding + (counts.embedding if not card.tie_word_embeddings else 0)
    return (layers * per_layer + head) * dtype_bytes / tp


def cuda_gpu_name(device_name: str) -> str:
    """The catalog name of a CUDA device name, or a slug of it."""
    n = device_name.upper()
    table = [("H200", "h200"), ("B200", "b200"), ("GB200", "gb200"), ("MI300X", "mi300x"),
             ("L40S", "l40s"), ("A10G", "a10g")]
    for key, name in table:
        if key in n:
            return name
    if "H100" in n:
        return "h100-pcie" if "PCIE" in n else "h100-sxm"
    if "A100" in n:
        big = "80GB" in n
        pcie = "PCIE" in n
        return {(True, True): "a100-pcie-80gb", (True, False): "a100-sxm-80gb",
                (False, True): "a100-pcie-40gb", (False, False): "a100-40gb"}[(big, pcie)]
    if n.replace("NVIDIA ", "").strip().startswith("L4"):
        return "l4"
    return "".join(ch if ch.isalnum() else "-" for ch in device_name.lower()).strip("-")


def _available_bytes(torch: Any, device: str) -> float:
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return float(free)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


class _Timer:
    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device

    def once(self, setup: Callable[[], Any], run: Callable[[Any], Any]) -> float:
        """Seconds of run(setup()); setup is not timed."""
        torch = self.torch
        arg = setup()
        if self.device == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            run(arg)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        run(arg)
        return time.perf_counter() - t0

    def median(self, setup: Callable[[], Any], run: Callable[[Any], Any], warmup: int,
               reps: int) -> float:
        times = [self.once(setup, run) for _ in range(warmup + reps)]
        return statistics.median(times[warmup:])


def profile_model(card: ModelCard, *, device: str = "cpu", tp_values: tuple[int, ...] = (1,),
                  layers: int | None = None, grid: ProfileGrid | None = None,
                  dtype: str | None = None, warmup: int = 2, reps: int = 5, seed: int = 0,
                  progress: Progress | None = None) -> ProfileResult:
    """Time prefill and decode iterations of `card` over `grid` for each tp."""
    torch, transformers = _torch()
    transformers.logging.set_verbosity_error()  # deprecation chatter is not for our users
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible",
                         "run on a machine with a GPU or use --device cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r} is not known", "use cuda or cpu")
    if card.model_type not in HF_MODEL_TYPES:
        raise InputError(f"{card.name}: model_type {card.model_type!r} cannot be profiled",
                         "supported: " + ", ".join(HF_MODEL_TYPES))
    for tp in tp_values:
        if tp < 1 or card.num_attention_heads % tp or (
                card.mla is None and card.num_key_value_heads % tp
                and tp % card.num_key_value_heads):
            raise InputError(f"--tp {tp} does not divide {card.name}'s "
                             f"{card.num_attention_heads} attention heads / "
                             f"{card.num_key_value_heads} KV heads",
                             "pick tp values that divide the heads")
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
                   "float32": torch.float32}.get(dtype)
    if torch_dtype is None:
        raise InputError(f"--dtype {dtype!r} is not known", "use bfloat16, float16 or float32")
    dtype_bytes = torch.tensor([], dtype=torch_dtype).element_size()
    n_layers = layers or card.num_hidden_layers
    if n_layers < 1:
        raise InputError(f"--layers {layers} is below 1", "profile at least one layer")
    n_layers = min(n_layers, card.num_hidden_layers)
    grid = grid or (CPU_GRID if device == "cpu" else FULL_GRID)
    available = _available_bytes(torch, device)
    need = shard_weight_bytes(card, n_layers, min(tp_values), dtype_bytes)
    if need > 0.8 * available:
        raise InputError(f"{card.name}: {n_layers} layers need {need / 1e9:.1f} GB at {dtype}, "
                         f"more than the {available / 1e9:.1f} GB free on {device}",
                         "profile fewer layers with --layers N (times are scaled by layer count)")
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    torch.manual_seed(seed)
    timer = _Timer(torch, device)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    points = grid.points()
    rounds = warmup + reps
    total = rounds * len(points) * len(tp_values)
    done = 0
    for tp in tp_values:
        cfg = hf_config_for(card, n_layers, tp)
        config = transformers.AutoConfig.for_model(HF_MODEL_TYPES[card.model_type], **cfg)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        model = model.to(device).eval()
        allreduce = None
        if device == "cuda" and tp > 1:
            if gpus >= tp:
                allreduce = _allreduce_timer(torch, tp, card.hidden_size, torch_dtype, timer)
            else:
                notes.append(f"tp={tp}: {gpus} local GPU(s), all-reduce not measured; "
                             "rows hold the shard's compute only")
        elif tp > 1:
            notes.append(f"tp={tp}: shard compute only (no all-reduce on the CPU)")
        runner = _Runner(torch, model, config, device, seed)
        # Round-robin over the grid: a slow drift of the machine's speed then touches every
        # point alike instead of biasing the points measured last.
        full: dict[tuple[int, int, int], list[float]] = {pt: [] for pt in points}
        head: dict[tuple[int, int, int], list[float]] = {pt: [] for pt in points}
        for rnd in range(rounds):
            for pt in points:
                p, b, c = pt
                if progress:
                    progress(f"tp={tp} round {rnd + 1}/{rounds} "
                             + (f"prefill {p}" if p else f"decode b={b} ctx={c}"), done, total)
                t_full = timer.once(*runner.step(p, b, c))
                t_head = timer.once(*runner.head(p, b))
                if rnd >= warmup:
                    full[pt].append(t_full)
                    head[pt].append(t_head)
                done += 1
        for pt in points:
            p, b, c = pt
            t_full = statistics.median(full[pt])
            t_head = statistics.median(head[pt])
            per_layer = max(0.0, (t_full - t_head) / n_layers)
            scaled = t_head + card.num_hidden_layers * per_layer
            ar_ms = None
            if allreduce is not None:
                ar = allreduce(p + b)
                ar_ms = ar * 1e3
                scaled += 2 * card.num_hidden_layers * ar
            scale = scaled / t_full if t_full > 0 else 1.0
            rows.append({
                "tp": tp, "pp": 1, "prefill_tokens": p, "decode_batch": b,
                "context_tokens": b * c, "prefill_context": 0,
                "time_ms": round(scaled * 1e3, 6),
                "p10_ms": round(_pct(full[pt], 10) * scale * 1e3, 6),
                "p90_ms": round(_pct(full[pt], 90) * scale * 1e3, 6),
                "layers_profiled": n_layers, "head_ms": round(t_head * 1e3, 6),
                "per_layer_ms": round(per_layer * 1e3, 6),
                "allreduce_ms": "" if ar_ms is None else round(ar_ms, 6),
            })
        del model, runner
        if device == "cuda":
            torch.cuda.empty_cache()
    if progress:
        progress("done", total, total)
    device_name = (torch.cuda.get_device_name(0) if device == "cuda"
                   else (platform.processor() or platform.machine() or "cpu"))
    metadata = {
        "schema_version": 1,
        "device": cuda_gpu_name(device_name) if device == "cuda" else "cpu",
        "device_name": device_name,
        "device_kind": device,
        "local_gpus": gpus,
        "model": card.name,
        "hf_id": card.hf_id,
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "layers_total": card.num_hidden_layers,
        "layers_profiled": n_layers,
        "tp": list(tp_values),
        "grid": {"prefill_tokens": list(grid.prefill_tokens),
                 "decode_batch": list(grid.decode_batch),
                 "decode_context": list(grid.decode_context)},
        "warmup": warmup, "reps": reps, "seed": seed,
        "method": "random weights (transformers from_config); medians; "
                  + ("CUDA events" if device == "cuda" else "perf_counter")
                  + "; scaled by layer count with embedding+norm+LM head timed apart",
        "notes": notes,
    }
    return ProfileResult(rows=rows, metadata=metadata, notes=notes)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


class _Runner:
    """Builds inputs and caches for one model and times its forward passes.

    Decode steps run on a pre-allocated static KV cache of the step's context length, so the
    timed pass reads the cache as a serving engine's paged attention does, instead of copying
    it as the dynamic cache's concatenation would.
    """

    def __init__(self, torch: Any, model: Any, config: Any, device: str, seed: int) -> None:
        from transformers import StaticCache

        self.torch, self.model, self.config, self.device = torch, model, config, device
        self.static_cache = StaticCache
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params),
                            None)
        with torch.inference_mode():
            out = model(input_ids=self._ids(1, 1), use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        self.kv_shapes = []
        for i in range(config.num_hidden_layers):
            if hasattr(cache, "layers"):
                k, v = cache.layers[i].keys, cache.layers[i].values
            else:
                k, v = cache.key_cache[i], cache.value_cache[i]
            self.kv_shapes.append((tuple(k.shape), tuple(v.shape), k.dtype))

    def _ids(self, batch: int, length: int) -> Any:
        ids = self.torch.randint(0, self.config.vocab_size, (batch, length), generator=self.gen)
        return ids.to(self.device)

    def _cache(self, batch: int, context: int) -> Any:
        """A static cache of context + 1 slots, allocated now (outside the timed pass)."""
        torch = self.torch
        cache = self.static_cache(config=self.config, max_cache_len=context + 1)
        first = {"cache_position": torch.tensor([0], device=self.device)}
        for i, (ks, vs, dt) in enumerate(self.kv_shapes):
            k = torch.zeros((batch, ks[1], 1, ks[3]), dtype=dt, device=self.device)
            v = torch.zeros((batch, vs[1], 1, vs[3]), dtype=dt, device=self.device)
            cache.update(k, v, i, first)
        return cache

    def step(self, p: int, b: int, c: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        torch, model = self.torch, self.model
        if p:
            kw = {self.keep_kw: 1} if self.keep_kw else {}

            def setup() -> Any:
                return self._ids(1, p)

            def run(ids: Any) -> Any:
                with torch.inference_mode():
                    return model(input_ids=ids, use_cache=False, **kw)

            return setup, run

        position = torch.tensor([c], device=self.device)

        def setup_decode() -> Any:
            return self._ids(b, 1), self._cache(b, c)

        def run_decode(arg: Any) -> Any:
            ids, cache = arg
            with torch.inference_mode():
                return model(input_ids=ids, use_cache=True, cache_position=position,
                             position_ids=position.expand(b, 1), **{self.cache_kw: cache})

        return setup_decode, run_decode

    def head(self, p: int, b: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        """Embedding of the iteration's tokens, final norm and LM head of its logit rows."""
        torch, model = self.torch, self.model
        base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        embed, norm, lm_head = base.embed_tokens, base.norm, model.lm_head
        tokens, rows = (p, 1) if p else (b, b)

        def setup() -> Any:
            return self._ids(1, tokens)

        def run(ids: Any) -> Any:
            with torch.inference_mode():
                h = embed(ids)
                return lm_head(norm(h[:, -rows:, :]))

        return setup, run


def _allreduce_timer(torch: Any, tp: int, hidden: int, dtype: Any,
                     timer: _Timer) -> Callable[[int], float]:
    """Times an all-reduce of n x hidden over `tp` local GPUs (NCCL, one process per GPU is
    not needed for a measurement of the collective's cost: torch.cuda.nccl all_reduce over
    per-device tensors from one process)."""
    from torch.cuda import nccl

    cache: dict[int, float] = {}

    def measure(n: int) -> float:
        if n not in cache:
            def setup() -> Any:
                return [torch.ones((n, hidden), dtype=dtype, device=f"cuda:{i}")
                        for i in range(tp)]

            def run(tensors: Any) -> Any:
                nccl.all_reduce(tensors)
                for i in range(tp):
                    torch.cuda.synchronize(i)

            cache[n] = timer.median(setup, run, warmup=2, reps=5)
        return cache[n]

    return measure
