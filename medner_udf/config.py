"""Settings: defaults from the TOML files in ``conf/``, overridden from the command line.

A settings class is a frozen dataclass; ``load_settings`` reads one TOML table into it and applies
``key=value`` overrides, converting each value to the field's type and rejecting unknown keys, so a
typo fails before any work starts. Train and extract settings both load through it.

The default files ship inside the package (``medner_udf/conf``, a link to the checkout's ``conf/``
that a built wheel carries as package data), so an installed medner finds them from any working
directory. ``$MEDNER_CONF_DIR`` points at a folder of site-specific copies instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from medner_udf.errors import MednerUsageError

T = TypeVar("T")

CONF_ENV = "MEDNER_CONF_DIR"


class SettingsError(MednerUsageError, ValueError):
    """A settings file or value that cannot be used; the message names the key or file."""


def conf_dir() -> Path:
    """The folder of default settings files: ``$MEDNER_CONF_DIR``, else the package's own."""
    override = os.environ.get(CONF_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise SettingsError(
                f"{CONF_ENV}={override} is not a folder", hint="point it at a folder of .toml files"
            )
        return path
    return Path(str(resources.files("medner_udf") / "conf"))


def conf_file(name: str) -> Path:
    """The default settings file ``name`` (``train.toml``, ``extract.toml``, ...)."""
    return conf_dir() / name


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; the message names the file when it is missing or malformed."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SettingsError(f"settings file {p} does not exist") from exc
    except IsADirectoryError as exc:
        raise SettingsError(f"settings file {p} is a folder") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {p} is not valid TOML: {exc}") from exc


def _convert(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_null and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise SettingsError(f"setting {key}: expected true/false, got {value!r}")
    if annotation in (int, float, str):
        try:
            converted = annotation(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"setting {key}: expected {annotation.__name__}, got {value!r}") from exc
        if annotation is int and isinstance(value, float) and value != converted:
            raise SettingsError(f"setting {key}: expected an integer, got {value!r}")
        return converted
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_convert(v, args[0], key) for v in items)
    return value


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["a=1", "optim.epochs=3"]`` -> ``{"a": "1", "optim.epochs": "3"}`` (dashes become underscores)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"override {pair!r} must look like key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def profile_table(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    """Table ``name`` of a settings file; ``extends = "other"`` starts it from table ``other``."""
    seen: list[str] = []
    chain: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in seen:
            raise SettingsError(
                f"profiles in {where} extend each other in a loop: {' -> '.join([*seen, current])}"
            )
        table = data.get(current)
        if not isinstance(table, dict):
            known = sorted(k for k, v in data.items() if isinstance(v, dict))
            raise SettingsError(f"{where} has no profile [{current}]; its profiles: {', '.join(known)}")
        seen.append(current)
        chain.append(table)
        parent = table.get("extends")
        current = str(parent) if parent is not None else None
    merged: dict[str, Any] = {}
    for table in reversed(chain):
        merged = _deep_merge(merged, {k: v for k, v in table.items() if k != "extends"})
    return merged


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _dataclass_fields(cls: Any) -> dict[str, Any]:
    """Field name -> resolved type of a dataclass (empty for anything else)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _paths(cls: Any, prefix: str = "") -> dict[str, str]:
    """Every settable leaf of a (nested) settings dataclass: dotted path -> its last name."""
    out: dict[str, str] = {}
    for name, annotation in _dataclass_fields(cls).items():
        if _dataclass_fields(annotation):
            out.update(_paths(annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = name
    return out


def nest_overrides(cls: type[Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides keyed by dotted path (``optim.epochs``) or by a name that only one group of ``cls``
    has (``epochs``), as a nested dict; an unknown or ambiguous key fails naming the candidates."""
    leaves = _paths(cls)
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in leaves:
            path = key
        else:
            matches = [p for p, name in leaves.items() if name == key]
            if len(matches) > 1:
                raise SettingsError(
                    f"setting {key!r} is ambiguous for {cls.__name__}: say {' or '.join(matches)}"
                )
            if not matches:
                close = difflib.get_close_matches(key, list(leaves) + sorted(set(leaves.values())), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise SettingsError(f"unknown setting(s) [{key!r}] for {cls.__name__}{hint}")
            path = matches[0]
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def build_settings(cls: type[T], raw: Mapping[str, Any], where: str = "") -> T:
    """``cls`` from a nested mapping: values converted to the field types, nested dataclasses built
    from sub-tables, unknown keys and invalid values refused with the key's path."""
    fields = _dataclass_fields(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {unknown} for {cls.__name__}{' in ' + where if where else ''}; "
            f"known: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        annotation = fields[key]
        if _dataclass_fields(annotation):
            if not isinstance(value, Mapping):
                raise SettingsError(f"setting {path} must be a table of settings, got {value!r}")
            kwargs[key] = build_settings(annotation, value, path)
        else:
            kwargs[key] = _convert(value, annotation, path)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"{where or cls.__name__}: {exc}") from exc


def load_settings(
    cls: type[T], path: Path | None, overrides: Mapping[str, Any] | None = None, table: str | None = None
) -> T:
    """Build ``cls`` from the TOML file at ``path`` (its ``table`` profile when given) and overrides
    (see ``nest_overrides``); nested dataclass fields take sub-tables."""
    raw: dict[str, Any] = {}
    if path is not None:
        data = load_toml(path)
        raw = profile_table(data, table, str(path)) if table else dict(data)
    return build_settings(cls, _deep_merge(raw, nest_overrides(cls, overrides or {})))
