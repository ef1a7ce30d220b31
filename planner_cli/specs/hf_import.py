"""Turn a Hugging Face config.json into a model card, through transformers' AutoConfig.

transformers is an optional extra (`cascadia-plan[profile]`) and is imported inside the function.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from planner_cli.errors import InputError, MissingDependencyError
from planner_cli.specs.model import ModelCard

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe",
                         "deepseek_v3")
# Qwen2's modelling code always puts a bias on q/k/v (its config has no flag for it).
_QKV_BIAS_TYPES = ("qwen2",)
_QK_NORM_TYPES = ("qwen3", "qwen3_moe")


def _guess_ids(path: Path, raw: dict[str, Any]) -> tuple[str | None, str]:
    """(hf_id, name) from `_name_or_path`, or a file named like `Org--Repo_config.json`."""
    hf_id = raw.get("_name_or_path") or None
    if hf_id is None:
        stem = path.stem if path.name != "config.json" else path.parent.name
        stem = re.sub(r"[_-]config$", "", stem)
        if "--" in stem:
            hf_id = stem.replace("--", "/", 1)
        repo = stem.split("--")[-1]
    else:
        repo = str(hf_id).rstrip("/").split("/")[-1]
    name = re.sub(r"[^a-z0-9.]+", "-", repo.lower()).strip("-")
    return hf_id, name


def card_from_hf_config(path: Path, name: str | None = None, hf_id: str | None = None,
                        source: str | None = None) -> ModelCard:
    """Read `path` (an HF config.json) through AutoConfig and return the model card."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON config: {exc}",
                         "pass the model's config.json") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise InputError(f"{path}: key 'model_type' missing", "pass an HF config.json")
    model_type = raw["model_type"]
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(f"{path}: key 'model_type' = {model_type!r} is not supported",
                         "supported: " + ", ".join(SUPPORTED_MODEL_TYPES))
    try:
        from transformers import AutoConfig
    except ImportError:
        raise MissingDependencyError(
            "catalog import-hf needs transformers",
            "pip install 'cascadia-plan[profile]'") from None
    fields = {k: v for k, v in raw.items() if k != "model_type"}
    cfg = AutoConfig.for_model(model_type, **fields)
    guessed_id, guessed_name = _guess_ids(path, raw)
    hf_id = hf_id or guessed_id or guessed_name
    card = card_dict_from_config(cfg, model_type)
    card.update(name=name or guessed_name, hf_id=hf_id,
                source=source or f"HF config.json of {hf_id} (imported from {path.name})")
    try:
        return ModelCard.model_validate(card)
    except Exception as exc:  # pydantic ValidationError: report it as input
        raise InputError(f"{path}: the config does not make a valid model card: {exc}",
                         "check the config's fields") from None


def card_dict_from_config(cfg: Any, model_type: str) -> dict[str, Any]:
    """Architecture fields of a card from a transformers config object."""
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    card: dict[str, Any] = {
        "schema_version": 1,
        "architecture": (getattr(cfg, "architectures", None) or [type(cfg).__name__])[0],
        "model_type": model_type,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "attention_bias": bool(getattr(cfg, "attention_bias", None)
                               or model_type in _QKV_BIAS_TYPES),
        "qk_norm": model_type in _QK_NORM_TYPES,
    }
    if getattr(cfg, "use_sliding_window", True) and getattr(cfg, "sliding_window", None):
        card["sliding_window"] = int(cfg.sliding_window)
    if model_type == "mixtral":
        card["moe"] = {"num_experts": cfg.num_local_experts,
                       "num_experts_per_tok": cfg.num_experts_per_tok,
                       "moe_intermediate_size": cfg.intermediate_size}
    elif model_type == "qwen3_moe":
        if getattr(cfg, "mlp_only_layers", None) or getattr(cfg, "decoder_sparse_step", 1) != 1:
            raise InputError("qwen3_moe configs with dense layers (mlp_only_layers, "
                             "decoder_sparse_step) are not supported",
                             "use a config whose every layer is MoE")
        card["moe"] = {"num_experts": cfg.num_experts,
                       "num_experts_per_tok": cfg.num_experts_per_tok,
                       "moe_intermediate_size": cfg.moe_intermediate_size}
    elif model_type == "deepseek_v3":
        card["moe"] = {"num_experts": cfg.n_routed_experts,
                       "num_experts_per_tok": cfg.num_experts_per_tok,
                       "moe_intermediate_size": cfg.moe_intermediate_size,
                       "num_shared_experts": cfg.n_shared_experts or 0,
                       "first_k_dense_replace": cfg.first_k_dense_replace}
        card["mla"] = {"kv_lora_rank": cfg.kv_lora_rank,
                       "q_lora_rank": cfg.q_lora_rank,
                       "qk_nope_head_dim": cfg.qk_nope_head_dim,
                       "qk_rope_head_dim": cfg.qk_rope_head_dim,
                       "v_head_dim": cfg.v_head_dim}
        card["head_dim"] = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    return card


ARCH_FIELDS = ("architecture", "model_type", "num_hidden_layers", "hidden_size",
               "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
               "vocab_size", "max_position_embeddings", "tie_word_embeddings", "attention_bias",
               "qk_norm", "sliding_window", "moe", "mla")


def card_to_yaml(card: ModelCard) -> str:
    """A card as YAML, keys in the schema's order, None fields left out."""
    import yaml

    data = card.model_dump(exclude_none=True)
    ordered = {k: data[k] for k in ModelCard.model_fields if k in data}
    ordered["aliases"] = list(ordered.get("aliases", ()))
    if not ordered["aliases"]:
        del ordered["aliases"]
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
