"""The shipped catalog (hardware/, model_cards/) and name lookup.

Lookups ignore case and accept aliases, the HF id and a card's pre-quantised checkpoints; an
unknown name gets close matches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from planner_cli.errors import InputError, UnknownNameError, did_you_mean
from planner_cli.specs._yaml import load_yaml_model
from planner_cli.specs.gpu import GpuSpec
from planner_cli.specs.model import ModelCard

CATALOG_ENV = "CASCADIA_CATALOG_DIR"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Where hardware/, model_cards/ and examples/ live: inside an installed wheel, or the
    source checkout the package runs from."""
    bundled = _PACKAGE_DIR / "_data"
    if (bundled / "hardware").is_dir():
        return bundled
    return _PACKAGE_DIR.parent


def catalog_dir(explicit: Path | None = None) -> Path:
    """The catalog folder: `--catalog-dir`, else $CASCADIA_CATALOG_DIR, else the shipped one."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CATALOG_ENV)
    return Path(env) if env else data_root()


T = TypeVar("T", GpuSpec, ModelCard)


@dataclass(frozen=True)
class Registry(Generic[T]):
    kind: str  # "GPU" or "model"
    items: dict[str, T]
    index: dict[str, str] = field(default_factory=dict)  # lowercased name/alias/hf id -> name

    def get(self, name: str) -> T:
        key = self.index.get(name.strip().lower())
        if key is None:
            hint = did_you_mean(name, self.index, canonical=self.index)
            names = ", ".join(sorted(self.items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}",
                                   hint or f"known {self.kind}s: {names}")
        return self.items[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self.index

    def names(self) -> list[str]:
        return sorted(self.items)


def _load_dir(folder: Path, cls: type[T], kind: str) -> Registry[T]:
    if not folder.is_dir():
        raise InputError(f"{folder}: catalog folder not found",
                         f"pass --catalog-dir or set {CATALOG_ENV} to a folder with "
                         "hardware/ and model_cards/")
    items: dict[str, T] = {}
    index: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_yaml_model(path, cls)
        if spec.name != path.stem:
            raise InputError(f"{path}: key 'name' = {spec.name!r} differs from the file name",
                             f"rename the file to {spec.name}.yaml or fix the name")
        keys = [spec.name, *spec.aliases]
        if isinstance(spec, ModelCard):
            keys += [spec.hf_id, *(ckpt for ckpt, _ in spec.checkpoints)]
        for key in keys:
            low = key.lower()
            if low in index and index[low] != spec.name:
                raise InputError(f"{path}: name or alias {key!r} is also used by "
                                 f"{index[low]}.yaml", "make names and aliases unique")
            index[low] = spec.name
        items[spec.name] = spec
    return Registry(kind=kind, items=items, index=index)


@dataclass(frozen=True)
class Catalog:
    root: Path
    gpus: Registry[GpuSpec]
    models: Registry[ModelCard]

    def gpu(self, name: str) -> GpuSpec:
        return self.gpus.get(name)

    def model(self, name: str) -> ModelCard:
        return self.models.get(name)


_CACHE: dict[Path, Catalog] = {}


def load_catalog(root: Path | None = None) -> Catalog:
    """Load and validate every GPU and model card under `root` (cached per folder)."""
    folder = catalog_dir(root).resolve()
    if folder not in _CACHE:
        _CACHE[folder] = Catalog(
            root=folder,
            gpus=_load_dir(folder / "hardware", GpuSpec, "GPU"),
            models=_load_dir(folder / "model_cards", ModelCard, "model"),
        )
    return _CACHE[folder]
