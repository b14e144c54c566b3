"""Clinical model artifacts, their registry, and the heads attached to a tagger artifact.

A clinical model artifact is a directory like a tagger's (nothing pickled)::

    artifact.json      kind, name, version, format, creation time, medner version,
                       entity_labels (the mention labels it was trained on), classes
    config.json        the model's frozen config dataclass (features, decoding thresholds)
    model.safetensors  arrays: feature keys, weights, bias (and the kind's own)
    vocab.json         word list
    metrics.json       training data, dev and test scores
    MODEL_CARD.md      for a human

Kinds register themselves where they are defined (``@ClinicalModel.register("assertion-linear")``),
as taggers do, and ``load_clinical`` picks the class from ``artifact.json``.

A tagger artifact carries its heads in sub-folders, ``<tagger>/assertion/`` and
``<tagger>/relations/`` (``attach`` copies them there after checking them); ``load_heads`` loads
whatever is present and fails, naming both label sets, when a head was trained on entity labels that
do not cover the tagger's.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
from safetensors.numpy import load_file, save_file

import medner_udf
from medner_udf.clinical.features import FeatureIndex, LinearModel, Vocabulary
from medner_udf.registry import Registry
from medner_udf.taggers.artifact import (
    ARTIFACT_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    METRICS_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ArtifactInfo,
    config_from_json,
    read_info,
    read_json,
    write_json,
)

VOCAB_FILE = "vocab.json"
ASSERTION_DIR = "assertion"
RELATIONS_DIR = "relations"
HEAD_DIRS = (ASSERTION_DIR, RELATIONS_DIR)

M = TypeVar("M", bound="type[ClinicalModel]")

CLINICAL: Registry[type[ClinicalModel]] = Registry(
    "clinical model",
    ("medner_udf.clinical.assertion", "medner_udf.clinical.relations"),
    env="MEDNER_CLINICAL_MODULES",
    group="medner.clinical",
)


@dataclass(frozen=True)
class ClinicalInfo:
    """``artifact.json`` of a clinical model."""

    kind: str
    name: str
    version: str
    entity_labels: list[str]
    classes: list[str]
    task: str = ""  # "assertion" or "relations": which head folder it belongs in
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    medner_version: str = medner_udf.__version__

    def __post_init__(self) -> None:
        # The same name rules as a tagger's (ArtifactInfo checks them).
        ArtifactInfo(self.kind, self.name, self.version, [])

    @classmethod
    def read(cls, directory: Path) -> ClinicalInfo:
        if not directory.is_dir():
            raise ArtifactError(f"clinical model artifact {directory} does not exist or is not a directory")
        raw = read_json(directory / ARTIFACT_FILE)
        if not isinstance(raw, dict):
            raise ArtifactError(f"{directory / ARTIFACT_FILE} must hold a JSON object")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"artifact {directory} has format_version {raw.get('format_version')!r}; "
                f"this medner reads {FORMAT_VERSION}"
            )
        if "entity_labels" not in raw:
            raise ArtifactError(f"{directory} is not a clinical model artifact (no entity_labels)")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ArtifactError(f"{directory / ARTIFACT_FILE} has unexpected fields: {exc}") from exc


class LabelMismatchError(ArtifactError):
    """A head trained on entity labels that do not cover the tagger's."""


class ClinicalModel(ABC):
    """A trained assertion or relation model: a linear model over sparse features of each note.

    Subclasses set ``config_class`` and ``task``, and implement their own ``classify``/``relations``.
    """

    kind: ClassVar[str]
    task: ClassVar[str]
    config_class: ClassVar[type[Any]]

    def __init__(
        self,
        info: ClinicalInfo,
        config: Any,
        words: Vocabulary,
        linear: LinearModel,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if info.kind != self.kind:
            raise ArtifactError(f"artifact kind is {info.kind!r}, expected {self.kind!r}")
        if linear.weights.shape[1] != len(info.classes):
            raise ArtifactError(
                f"the weights score {linear.weights.shape[1]} classes but artifact.json lists "
                f"{len(info.classes)}: they come from different models"
            )
        self.info = info
        self.config = config
        self.words = words
        self.labels = Vocabulary(info.entity_labels, reserved=0)
        self.linear = linear
        self.metrics = metrics

    @classmethod
    def register(cls, kind: str) -> Callable[[M], M]:
        return CLINICAL.register(kind)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def entity_labels(self) -> list[str]:
        return list(self.info.entity_labels)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def check_labels(self, tagger_labels: Sequence[str], tagger: str = "the tagger") -> None:
        """Fail, naming both label sets, unless this model knows every label ``tagger`` emits."""
        missing = sorted(set(tagger_labels) - set(self.info.entity_labels))
        if missing:
            raise LabelMismatchError(
                f"{self.task} model {self.name}/{self.version} was trained on entity labels "
                f"{sorted(self.info.entity_labels)} but {tagger} emits {sorted(set(tagger_labels))}; "
                f"unknown to the {self.task} model: {missing}",
                hint="train the head on the tagger's label set (the same corpus and split)",
            )

    # ----------------------------------------------------------------------------------------------
    # The artifact
    def _arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        """Kind-specific arrays saved beside the linear model's."""
        return {}

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / ARTIFACT_FILE, asdict(self.info))
        write_json(directory / CONFIG_FILE, asdict(self.config))
        write_json(directory / VOCAB_FILE, {"words": self.words.words})
        arrays: dict[str, np.ndarray[Any, Any]] = {
            "feature_keys": self.linear.index.keys,
            "weights": self.linear.weights,
            "bias": self.linear.bias,
            **self._arrays(),
        }
        save_file(
            arrays, str(directory / WEIGHTS_FILE), metadata={"kind": self.kind, "version": self.version}
        )
        if self.metrics is not None:
            write_json(directory / METRICS_FILE, self.metrics)
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> Self:
        directory = Path(directory)
        info = ClinicalInfo.read(directory)
        if info.kind != cls.kind:
            raise ArtifactError(f"artifact {directory} is of kind {info.kind!r}, not {cls.kind!r}")
        config = config_from_json(
            cls.config_class, read_json(directory / CONFIG_FILE), directory / CONFIG_FILE
        )
        vocab = read_json(directory / VOCAB_FILE)
        if not isinstance(vocab, dict) or not isinstance(vocab.get("words"), list):
            raise ArtifactError(f"{directory / VOCAB_FILE} must hold {{'words': [...]}}")
        weights_path = directory / WEIGHTS_FILE
        if not weights_path.is_file():
            raise ArtifactError(f"weights file {weights_path} is missing")
        arrays = load_file(str(weights_path))
        try:
            linear = LinearModel(
                FeatureIndex(arrays["feature_keys"].astype(np.int64)),
                arrays["weights"].astype(np.float32),
                arrays["bias"].astype(np.float32),
            )
        except (KeyError, ValueError) as exc:
            raise ArtifactError(f"{weights_path} does not hold a linear model: {exc}") from exc
        metrics_path = directory / METRICS_FILE
        metrics = read_json(metrics_path) if metrics_path.is_file() else None
        return cls._from_parts(info, config, Vocabulary(vocab["words"]), linear, arrays, metrics)

    @classmethod
    def _from_parts(
        cls,
        info: ClinicalInfo,
        config: Any,
        words: Vocabulary,
        linear: LinearModel,
        arrays: dict[str, np.ndarray[Any, Any]],
        metrics: dict[str, Any] | None,
    ) -> Self:
        return cls(info, config, words, linear, metrics)

    @abstractmethod
    def describe(self) -> list[str]:
        """Model-card lines about the model."""


def load_clinical(directory: Path | str) -> ClinicalModel:
    """Load any clinical model artifact, choosing the class from its ``artifact.json`` kind."""
    info = ClinicalInfo.read(Path(directory))
    return CLINICAL.get(info.kind).load(directory)


@dataclass(frozen=True)
class ClinicalHeads:
    """The heads found beside a tagger (None where none is attached)."""

    assertion: Any = None  # AssertionClassifier | None (typed loosely: this module does not import it)
    relations: Any = None  # RelationExtractor | None

    @property
    def empty(self) -> bool:
        return self.assertion is None and self.relations is None


def _check_task(model: ClinicalModel, task: str, where: Path) -> None:
    if model.task != task:
        raise ArtifactError(f"{where} holds a {model.task} model ({model.kind}), not a {task} model")


def load_heads(tagger_dir: Path | str, tagger_labels: Sequence[str] | None = None) -> ClinicalHeads:
    """The assertion and relation models in ``<tagger_dir>/assertion`` and ``/relations``, checked
    against the tagger's entity labels (from its artifact.json unless given)."""
    tagger_dir = Path(tagger_dir)
    labels = list(tagger_labels) if tagger_labels is not None else read_info(tagger_dir).entity_types
    found: dict[str, ClinicalModel] = {}
    for task in HEAD_DIRS:
        sub = tagger_dir / task
        if sub.is_dir():
            model = load_clinical(sub)
            _check_task(model, task, sub)
            model.check_labels(labels, f"the tagger in {tagger_dir}")
            found[task] = model
    return ClinicalHeads(found.get(ASSERTION_DIR), found.get(RELATIONS_DIR))


def attach(
    tagger_dir: Path | str,
    assertion: Path | str | None = None,
    relations: Path | str | None = None,
) -> list[Path]:
    """Copy clinical model artifacts into ``<tagger_dir>/assertion`` and ``/relations`` (replacing
    what was there), after checking their task and that their labels cover the tagger's."""
    tagger_dir = Path(tagger_dir)
    labels = read_info(tagger_dir).entity_types
    written = []
    for task, source in ((ASSERTION_DIR, assertion), (RELATIONS_DIR, relations)):
        if source is None:
            continue
        source = Path(source)
        model = load_clinical(source)
        _check_task(model, task, source)
        model.check_labels(labels, f"the tagger in {tagger_dir}")
        target = tagger_dir / task
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        written.append(target)
    return written
