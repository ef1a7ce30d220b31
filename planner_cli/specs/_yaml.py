"""Strict YAML → pydantic loading with errors that name the file, line, key and value."""

from __future__ import annotations

import typing
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from planner_cli.errors import InputError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Frozen, unknown keys rejected: the base of every file-backed spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Unicode categories no name, id or path needs: controls (newline, escape, NUL), format
# characters (bidirectional overrides that make a name read differently than it runs) and the
# line and paragraph separators.
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}


def _plain(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    bad = next((c for c in value if unicodedata.category(c) in _INVISIBLE), None)
    if bad is not None:
        raise ValueError(f"holds the invisible character U+{ord(bad):04X} (a control or "
                         "format character); remove it")
    return value


def _engine_arg(value: str) -> str:
    _plain(value)
    if value.startswith("-"):
        raise ValueError("starts with '-', which an engine would read as an option; "
                         "use ./ before a relative path")
    return value


# A string shown or written into exported files (names): no control characters.
PlainText = Annotated[str, AfterValidator(_plain)]
# A string an engine receives as an argument (a model id or weights path): plain, and not
# starting with '-'.
EngineArg = Annotated[str, AfterValidator(_engine_arg)]


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


def _tags(model: type[BaseModel]) -> dict[str, str]:
    """{tag: field} by which pydantic names a union member in an error's location: its class
    name, and the value of each single-string Literal field (a discriminator like `kind`)."""
    tags = {model.__name__: ""}
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is Literal and len(args) == 1 and isinstance(
                args[0], str):
            tags[args[0]] = name
    return tags


def _walk(cls: type[BaseModel], loc: tuple[Any, ...]
          ) -> tuple[tuple[Any, ...], list[type[BaseModel]]]:
    """(the location as keys of the file, the models that can hold the mapping there): a part
    that names a union member (pydantic adds its tag) narrows the models and is not a key."""
    models: list[type[BaseModel]] = [cls]
    keys: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            keys.append(part)  # list items share the list's model
            continue
        # in a union of models, pydantic's location names the member first
        members = [m for m in models if part in _tags(m)] if len(models) > 1 else []
        if members:
            models = members
            continue
        if any(part in m.model_fields for m in models):
            models = [held for m in models if part in m.model_fields
                      for held in _models_in(m.model_fields[part].annotation)]
            keys.append(part)
            continue
        keys.append(part)
        models = []
    return tuple(keys), models


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Field names allowed at `loc` (the keys of the mapping that holds the bad key)."""
    return {name for model in _walk(cls, loc)[1] for name in model.model_fields}


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
    # pydantic adds the union member's tag (e.g. 'model' for kind: model) to the location
    raw = tuple(err["loc"])
    loc = _walk(cls, raw)[0]
    key = _dotted(loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    kind = err["type"]
    if kind == "extra_forbidden":
        bad = str(loc[-1]) if loc else key
        holders = _walk(cls, raw[:-1])[1]  # the union member the mapping was read as
        allowed = {name for model in holders for name in model.model_fields}
        nested = [name for name in sorted(allowed)
                  if bad in _fields_at(cls, (*raw[:-1], name))]
        # the key of another member of the same union (latency_s under a judger of kind model)
        siblings = [(field, tag) for m in _walk(cls, loc[:-1])[1]
                    if m not in holders and bad in m.model_fields
                    for tag, field in _tags(m).items() if field]
        if nested:
            hint = f"'{bad}' belongs under '{nested[0]}:'"
        elif siblings:
            field, tag = siblings[0]
            hint = f"'{bad}' goes with {field}: {tag}; remove it or change {field}"
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


MAX_DEPTH = 32  # nesting levels a spec file may use
MAX_NODES = 200_000  # values in a file, aliases expanded
MAX_INT_DIGITS = 19  # an int64
_CORE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map",
                                                  "seq")}


class _CoreLoader(yaml.SafeLoader):
    """The YAML core schema only: strings, numbers, booleans, null, mappings and lists (a
    date-like value stays a string; other tags are refused before anything is built)."""


_CoreLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _CORE_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _check_nodes(root: yaml.Node, path: Path | str) -> None:
    """Refuse, at its line, a tag outside the core schema, nesting deeper than MAX_DEPTH, an
    integer longer than an int64, or more than MAX_NODES values (aliases expanded)."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        where = f"{path}:{node.start_mark.line + 1}"
        if seen > MAX_NODES:
            raise InputError(f"{where}: more than {MAX_NODES:,} values (aliases counted each "
                             "time they are used)", "a spec file is small: check the file")
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep",
                             "check the file's indentation and brackets")
        if node.tag not in _CORE_TAGS:
            raise InputError(f"{where}: the tag {node.tag!r} is not allowed",
                             "remove the tag: only plain strings, numbers, true/false, null, "
                             "mappings and lists are read")
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":int") and len(node.value.strip().lstrip("+-").replace(
                    "_", "")) > MAX_INT_DIGITS:
                raise InputError(f"{where}: the integer {node.value[:24]}... is too large",
                                 "use a number that fits 64 bits")
        elif isinstance(node, yaml.MappingNode):
            stack += [(n, depth + 1) for pair in node.value for n in pair]
        else:
            stack += [(n, depth + 1) for n in node.value]


def _load(text: str, path: Path | str) -> tuple[yaml.Node | None, Any]:
    """(the composed node tree, the data) of YAML text, through the core-schema checks."""
    loader: _CoreLoader | None = None
    try:
        loader = _CoreLoader(text)  # its reader refuses control characters at once
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_nodes(root, path)
        return root, loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: invalid YAML: {problem}", "fix the syntax") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply", "check the file's indentation and "
                         "brackets") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_data(path: Path) -> Any:
    """A YAML file's data through the core-schema checks; every problem one InputError."""
    return _load(read_text(path), path)[1]


def parse_yaml_model(text: str, cls: type[M], path: Path | str) -> M:
    """Validate YAML text as `cls`; every problem becomes one InputError."""
    root, data = _load(text, path)
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
        return path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is dropped
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}", hint) from None


def load_yaml_model(path: Path, cls: type[M]) -> M:
    """Read and validate a YAML file as `cls`."""
    return parse_yaml_model(read_text(path), cls, path)
