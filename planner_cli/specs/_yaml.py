"""Strict YAML → pydantic loading with errors that name the file, line, key and value."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from planner_cli.errors import InputError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Frozen, unknown keys rejected: the base of every file-backed spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (or of its deepest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Field names allowed at `loc` (the keys of the mapping that holds the bad key)."""
    models: list[type[BaseModel]] = [cls]
    for part in loc:
        if isinstance(part, int):
            continue  # list items share the list's model
        nxt: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(part)
            if field is not None:
                nxt += _models_in(field.annotation)
        models = nxt
    return {name for model in models for name in model.model_fields}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error_line(path: Path | str, root: yaml.Node | None, cls: type[BaseModel],
                          exc: ValidationError) -> InputError:
    """Turn the first pydantic error into one InputError naming file, line, key and value."""
    errors = exc.errors()
    # a typo shows as an unknown key and a missing one: report the unknown key, it has the hint
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    # pydantic adds the union member tag (e.g. 'ExternalJudger') to the location; drop it
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper()))
    key = _dotted(loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    kind = err["type"]
    if kind == "extra_forbidden":
        bad = str(loc[-1]) if loc else key
        allowed = _fields_at(cls, loc[:-1])
        nested = [name for name in sorted(allowed)
                  if bad in _fields_at(cls, (*loc[:-1], name))]
        if nested:
            hint = f"'{bad}' belongs under '{nested[0]}:'"
        else:
            hint = did_you_mean(bad, allowed) or ("allowed keys: " + ", ".join(sorted(allowed)))
        value = err.get("input")
        shown = f" (= {value!r})" if isinstance(value, str | int | float | bool) else ""
        return InputError(f"{where}: unknown key '{key}'{shown}", hint)
    if kind == "missing":
        return InputError(f"{where}: missing key '{key}'", "add it")
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, dict | list):  # a check across keys: the message says what
        return InputError(f"{where}: {key if loc else 'file'}: {msg}", "fix the file")
    return InputError(f"{where}: key '{key}' = {value!r}: {msg}", "fix the value")


def parse_yaml_model(text: str, cls: type[M], path: Path | str) -> M:
    """Validate YAML text as `cls`; every problem becomes one InputError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: invalid YAML: {problem}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys at the top level",
                         "see the examples/ folder for the format")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error_line(path, root, cls, exc) from None


def read_text(path: Path, hint: str = "check the file") -> str:
    """A text file's content; a missing or unreadable file is one InputError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}", hint) from None


def load_yaml_model(path: Path, cls: type[M]) -> M:
    """Read and validate a YAML file as `cls`."""
    return parse_yaml_model(read_text(path), cls, path)
