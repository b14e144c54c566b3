"""The model artifact: one self-contained directory per trained model version.

Layout (every file plain and inspectable; nothing is unpickled on load)::

    models/<name>/<version>/
        artifact.json      kind, name, version, format, creation time, medner version, tag list
        config.json        the model's frozen dataclass config
        model.safetensors  weights (safetensors: no code execution on load)
        metrics.json       training history and dev/test scores
        MODEL_CARD.md      data, split, settings, scores, for a human
        ...                kind-specific files (vocabularies, tokenizer files)

Loading needs this directory only: no ``conf/``, no GloVe package, no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import medner_udf
from medner_udf.errors import MednerUsageError

ARTIFACT_FILE = "artifact.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
FORMAT_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ArtifactError(MednerUsageError, ValueError):
    """An artifact directory that is missing, incomplete or of an unknown kind/format."""


@dataclass(frozen=True)
class ArtifactInfo:
    kind: str
    name: str
    version: str
    tags: list[str]
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    medner_version: str = medner_udf.__version__

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("version", self.version)):
            if not _NAME_RE.match(value):
                raise ArtifactError(
                    f"artifact {what} {value!r} must be 1-128 letters, digits, '.', '_' or '-'"
                )

    @property
    def entity_types(self) -> list[str]:
        return sorted({t[2:] for t in self.tags if t != "O"})


def new_version() -> str:
    """A sortable, filesystem-safe version string: the UTC time of training."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"artifact file {path.name} is missing in {path.parent}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"artifact file {path} is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from exc


def write_info(directory: Path, info: ArtifactInfo) -> None:
    write_json(directory / ARTIFACT_FILE, asdict(info))


def read_info(directory: Path | str) -> ArtifactInfo:
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact {directory} does not exist or is not a directory")
    raw = read_json(directory / ARTIFACT_FILE)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{directory / ARTIFACT_FILE} must hold a JSON object")
    fmt = raw.get("format_version")
    if fmt != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {directory} has format_version {fmt!r}; this medner reads {FORMAT_VERSION}"
        )
    try:
        return ArtifactInfo(**raw)
    except TypeError as exc:
        raise ArtifactError(f"{directory / ARTIFACT_FILE} has unexpected fields: {exc}") from exc


def config_from_json(cls: type[Any], raw: Any, where: Path) -> Any:
    """Rebuild a frozen dataclass config, failing fast on missing or unknown keys.

    Keys an older artifact lacks take the class's ``LEGACY_DEFAULTS`` (the behaviour it was saved
    with) when it names them, else the field's default.
    """
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where} must hold a JSON object")
    raw = {**getattr(cls, "LEGACY_DEFAULTS", {}), **raw}
    expected = {f.name for f in fields(cls)}
    unknown = set(raw) - expected
    if unknown:
        raise ArtifactError(f"{where}: unknown config keys {sorted(unknown)} for {cls.__name__}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ArtifactError(f"{where}: config does not match {cls.__name__}: {exc}") from exc
