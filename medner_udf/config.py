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
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"override {pair!r} must look like key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def load_settings(
    cls: type[T], path: Path | None, overrides: Mapping[str, Any] | None = None, table: str | None = None
) -> T:
    """Build ``cls`` from the TOML file at ``path`` (optionally one ``table`` of it) and overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        data = load_toml(path)
        raw = dict(data.get(table, {}) if table else data)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {k: _convert(v, hints[k], k) for k, v in raw.items()}
    return cls(**kwargs)
