"""The extraction job's settings and every check that can run before Spark starts.

``load_extract_settings`` reads ``[extract]`` of ``conf/extract.toml`` (or another file) through the
project's one settings loader (``medner_udf.config.load_settings``) and lays the command-line flags
over it; ``check_settings`` then validates values, paths, formats and the model artifact. Both run
before the JVM starts, so a bad flag costs no Spark start-up. Nothing here imports Spark or torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medner_udf.config import conf_file, load_settings, load_toml
from medner_udf.errors import MednerUsageError, StorageError
from medner_udf.extraction.schemas import ENTITIES_TABLE, STATUS_TABLE
from medner_udf.extraction.tables import FORMATS, detect_format
from medner_udf.taggers.artifact import read_info

INPUT_FORMATS = ("auto", "parquet", "delta")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
REQUIRED = ("input", "output", "model")
CONF_TABLE = "extract"


class ExtractError(MednerUsageError, ValueError):
    """Bad settings or input; raised before any work, the message names what is wrong."""


@dataclass(frozen=True)
class ExtractSettings:
    """Everything one extraction run needs (CLI flags and conf/extract.toml map onto these)."""

    input: str
    output: str
    model: str
    input_format: str = "auto"
    output_format: str = "delta"
    id_column: str = "record_id"
    text_column: str = "text"
    batch_size: int = 32
    max_batch_chars: int = 200_000
    tagger_batch_size: int | None = None
    rows_per_partition: int = 5_000
    partitions: int | None = None
    full: bool = False
    run_id: str | None = None
    ship_artifact: bool = True

    @property
    def entities_path(self) -> str:
        return str(Path(self.output) / ENTITIES_TABLE)

    @property
    def status_path(self) -> str:
        return str(Path(self.output) / STATUS_TABLE)


def load_extract_settings(conf: str | Path | None, flags: Mapping[str, Any]) -> ExtractSettings:
    """Settings from ``[extract]`` of ``conf`` (default: the package's ``conf/extract.toml``),
    overridden by the ``flags`` that were given (not None). Unknown keys and values of the wrong
    type fail with a SettingsError naming them."""
    path = Path(conf) if conf is not None else conf_file("extract.toml")
    given = {k: v for k, v in flags.items() if v is not None}
    defaults = load_toml(path).get(CONF_TABLE, {})
    if not isinstance(defaults, dict):
        raise ExtractError(f"[{CONF_TABLE}] in {path} must be a table")
    missing = [k for k in REQUIRED if not given.get(k, defaults.get(k))]
    if missing:
        raise ExtractError(f"missing required settings: {missing}")
    return load_settings(ExtractSettings, path, given, table=CONF_TABLE)


def check_settings(s: ExtractSettings) -> None:
    """Fail fast, naming the bad value, before Spark starts or reads anything."""
    if s.input_format not in INPUT_FORMATS:
        raise ExtractError(f"input format must be one of {INPUT_FORMATS}, got {s.input_format!r}")
    if s.output_format not in FORMATS:
        raise ExtractError(f"output format must be one of {FORMATS}, got {s.output_format!r}")
    for name, value in (
        ("batch_size", s.batch_size),
        ("max_batch_chars", s.max_batch_chars),
        ("rows_per_partition", s.rows_per_partition),
        ("tagger_batch_size", 1 if s.tagger_batch_size is None else s.tagger_batch_size),
    ):
        if value < 1:
            raise ExtractError(f"{name} must be >= 1, got {value}")
    if s.partitions is not None and s.partitions < 1:
        raise ExtractError(f"partitions must be >= 1, got {s.partitions}")
    for name, col in (("id column", s.id_column), ("text column", s.text_column)):
        if not col or not col.strip():
            raise ExtractError(f"{name} must be a non-empty column name, got {col!r}")
    if s.id_column == s.text_column:
        raise ExtractError(f"id and text columns must differ, both are {s.id_column!r}")
    if s.run_id is not None and not RUN_ID_RE.match(s.run_id):
        raise ExtractError(
            f"run id {s.run_id!r} must be 1-100 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    if not Path(s.input).exists():
        raise ExtractError(f"input folder {s.input} does not exist")
    resolve_input_format(s.input, s.input_format)
    out = Path(s.output)
    if out.exists() and not out.is_dir():
        raise ExtractError(f"output {s.output} exists and is not a folder")
    check_writable(out)
    for path in (s.entities_path, s.status_path):
        found = detect_format(path)
        if found is not None and found != s.output_format:
            raise ExtractError(
                f"output table {path} is {found}, but output format {s.output_format!r} was asked"
            )
    read_info(s.model)  # raises ArtifactError naming the folder when it is missing or incomplete


def check_writable(folder: Path) -> None:
    """The output folder, or the nearest existing folder above it, must be writable by this user."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(
            f"output {folder} cannot be written: {existing} refuses this user",
            hint="choose another --output, or grant write permission on that folder",
        )


def resolve_input_format(path: str, requested: str) -> str:
    """``delta`` or ``parquet`` for the input folder; ``auto`` looks for ``_delta_log``."""
    p = Path(path)
    is_delta = (p / "_delta_log").is_dir()
    if requested == "delta" and not is_delta:
        raise ExtractError(f"input {path} is not a Delta table (no _delta_log folder)")
    if requested == "delta" or (requested == "auto" and is_delta):
        return "delta"
    if p.is_file() and p.suffix == ".parquet":
        return "parquet"
    if not any(p.rglob("*.parquet")):
        raise ExtractError(f"input folder {path} holds no table (neither a _delta_log nor .parquet files)")
    return "parquet"
