"""Job settings: defaults from a TOML file under ``conf/``, overridden from the command line.

A settings class is a frozen dataclass; ``load_settings`` reads one TOML table into it and applies
``key=value`` overrides, converting each value to the field's type and rejecting unknown keys, so a
typo fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
DEFAULT_CORPUS = Path("..") / "shared" / "data" / "maccrobat" / "MACCROBAT2020"


def corpus_path(setting: str | Path | None) -> Path:
    """The corpus folder: the setting, else $MEDNER_CORPUS, else ``../shared/...`` beside the checkout.

    A relative path is taken relative to the current directory first, then to the repository root.
    """
    value = setting or os.environ.get("MEDNER_CORPUS") or DEFAULT_CORPUS
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path


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
        raise ValueError(f"setting {key}: expected true/false, got {value!r}")
    if annotation in (int, float, str):
        try:
            converted = annotation(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {key}: expected {annotation.__name__}, got {value!r}") from exc
        if annotation is int and isinstance(value, float) and value != converted:
            raise ValueError(f"setting {key}: expected an integer, got {value!r}")
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
            raise ValueError(f"override {pair!r} must look like key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def load_settings(
    cls: type[T], path: Path | None, overrides: Mapping[str, Any] | None = None, table: str | None = None
) -> T:
    """Build ``cls`` from the TOML file at ``path`` (optionally one ``table`` of it) and overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"settings file {path} does not exist")
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        raw = dict(data.get(table, {}) if table else data)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {k: _convert(v, hints[k], k) for k, v in raw.items()}
    return cls(**kwargs)
