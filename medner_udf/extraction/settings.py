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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medner_udf.config import conf_file, load_settings, load_toml
from medner_udf.errors import MednerUsageError
from medner_udf.extraction.schemas import ENTITIES_TABLE, RELATIONS_TABLE, STATUS_TABLE
from medner_udf.extraction.storage import (
    Location,
    StorageError,
    file_type,
    list_files,
    location,
    redact_options,
)
from medner_udf.extraction.tables import FORMATS, MANIFEST, detect_format
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
    chars_per_partition: int = 20_000_000
    partitions: int | None = None
    full: bool = False
    run_id: str | None = None
    ship_artifact: bool = True
    # Passed to pyarrow's filesystems and delta-rs for input, output and model (storage.py); never
    # printed: secret-looking keys are redacted in repr and logs.
    storage_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        opts = self.storage_options
        if not isinstance(opts, Mapping):
            raise ExtractError(f"storage_options must be a table of KEY = VALUE, got a {type(opts).__name__}")
        # TOML may give numbers or booleans; the SDKs take strings.
        norm = {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in opts.items()}
        object.__setattr__(self, "storage_options", norm)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.__dict__.items() if k != "storage_options"}
        shown["storage_options"] = redact_options(self.storage_options)
        return f"ExtractSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def entities_path(self) -> str:
        return location(self.output, "output").join(ENTITIES_TABLE).uri

    @property
    def status_path(self) -> str:
        return location(self.output, "output").join(STATUS_TABLE).uri

    @property
    def relations_path(self) -> str:
        return location(self.output, "output").join(RELATIONS_TABLE).uri


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
        ("chars_per_partition", s.chars_per_partition),
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
    inp = location(s.input, "input")
    out = location(s.output, "output")
    model = location(s.model, "model")
    if s.output_format == "parquet" and not out.is_local:
        raise ExtractError(
            f"output format 'parquet' needs a local or shared POSIX folder, got {out.uri}: its commit is "
            "an atomic rename, which object stores lack; use output format 'delta' there"
        )
    opts = s.storage_options
    if file_type(inp, opts, "input") == "missing":
        raise ExtractError(f"input folder {inp.uri} does not exist")
    resolve_input_format(s.input, s.input_format, opts)
    check_output(out, s.output_format, opts)
    if out.is_local:
        check_writable(Path(out.uri))
    if model.is_local:
        read_info(s.model)  # raises ArtifactError naming the folder when it is missing or incomplete
    elif file_type(model.join("artifact.json"), opts, "model") != "file":
        raise StorageError(f"model {model.uri} is not a medner model artifact (no artifact.json in it)")


# What medner's own tables hold at their top level; anything else means the folder is not ours.
_KEY_COLUMNS = ("record_id", "model_version", "run_id")


def check_output(out: Location, fmt: str, options: Mapping[str, str]) -> None:
    """The output must be a folder that is missing, empty, or holds medner's tables (of ``fmt``);
    anything else (a file, a Delta table of its own, a table folder of other data) is refused
    before a byte is written."""
    kind = file_type(out, options, "output")
    if kind == "file":
        raise ExtractError(f"output {out.uri} exists and is not a folder")
    if kind == "missing":
        return
    if file_type(out.join("_delta_log"), options, "output") == "dir":
        raise ExtractError(
            f"output {out.uri} is itself a Delta table; expected a folder for medner's tables "
            f"({ENTITIES_TABLE}, {STATUS_TABLE})"
        )
    for name in (ENTITIES_TABLE, RELATIONS_TABLE, STATUS_TABLE):
        table = out.join(name)
        found = detect_format(table.uri, options)
        if found is not None and found != fmt:
            raise ExtractError(f"output table {table.uri} is {found}, but output format {fmt!r} was asked")
        if found is None:
            files = (
                list_files(table, options, "output") if file_type(table, options, "output") == "dir" else []
            )
            if files:
                raise ExtractError(
                    f"output table folder {table.uri} holds {len(files)} files but no medner table (no "
                    f"_delta_log, no {MANIFEST}); expected an empty folder or one medner wrote"
                )
            if file_type(table, options, "output") == "file":
                raise ExtractError(f"output table {table.uri} is a file; expected a medner table folder")
        elif found == "delta":
            _check_delta_columns(table, options)


def _check_delta_columns(table: Location, options: Mapping[str, str]) -> None:
    import pyarrow as pa
    from deltalake import DeltaTable

    from medner_udf.extraction.storage import delta_options

    dt = DeltaTable(table.uri, storage_options=delta_options(table, options))
    names = set(pa.schema(dt.schema().to_arrow()).names)
    missing = [c for c in _KEY_COLUMNS if c not in names]
    if missing:
        raise ExtractError(
            f"output table {table.uri} is a Delta table without medner's columns {missing}; expected "
            "a table medner wrote (or none)"
        )


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


def resolve_input_format(path: str, requested: str, options: Mapping[str, str] | None = None) -> str:
    """``delta`` or ``parquet`` for the input (folder or file); ``auto`` looks for ``_delta_log``."""
    loc = location(path, "input")
    opts = options or {}
    is_delta = file_type(loc.join("_delta_log"), opts, "input") == "dir"
    if requested == "delta" and not is_delta:
        raise ExtractError(f"input {path} is not a Delta table (no _delta_log folder)")
    if requested == "delta" or (requested == "auto" and is_delta):
        return "delta"
    if loc.uri.endswith(".parquet") and file_type(loc, opts, "input") == "file":
        return "parquet"
    if not any(rel.endswith(".parquet") for rel, _ in list_files(loc, opts, "input")):
        raise ExtractError(f"input folder {path} holds no table (neither a _delta_log nor .parquet files)")
    return "parquet"
