"""The contract every tagger honours, and loading any artifact by its kind.

``Tagger.tag(texts)`` is what the Spark UDF calls: raw note strings in, entities with exact
character offsets out (``text[e.begin:e.end] == e.text``), for notes of any length (never truncated).
Implementations batch internally, sorting segments by length so padding stays small.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import torch

from medner_udf.taggers.artifact import ArtifactInfo, read_info
from medner_udf.text.types import Entity

log = logging.getLogger(__name__)


class Tagger(ABC):
    """A trained NER model that tags raw notes. Subclasses register their artifact ``kind``."""

    kind: ClassVar[str]
    info: ArtifactInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def entity_types(self) -> list[str]:
        return self.info.entity_types

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @abstractmethod
    def to(self, device: torch.device | str) -> Tagger:
        """Move the model to ``device`` (in place) and return self."""

    @abstractmethod
    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        """Entities of each text, in text order, sorted by (begin, end, label)."""

    @abstractmethod
    def save(self, directory: Path | str) -> Path:
        """Write a complete artifact to ``directory`` (created) and return it."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> Tagger:
        """Rebuild the tagger from its artifact directory alone."""


_REGISTRY: dict[str, Callable[[], type[Tagger]]] = {}


def register_kind(kind: str, factory: Callable[[], type[Tagger]]) -> None:
    """Register a loader for an artifact kind; the factory imports lazily so torch-heavy
    modules load only when their kind is used."""
    _REGISTRY[kind] = factory


def _builtin_kinds() -> None:
    if "bilstm-cnn-crf" not in _REGISTRY:

        def _bilstm() -> type[Tagger]:
            from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger

            return BiLstmCnnCrfTagger

        register_kind("bilstm-cnn-crf", _bilstm)
    if "transformer" not in _REGISTRY:

        def _transformer() -> type[Tagger]:
            from medner_udf.taggers.transformer import TransformerTagger

            return TransformerTagger

        register_kind("transformer", _transformer)
    if "gazetteer" not in _REGISTRY:

        def _gazetteer() -> type[Tagger]:
            from medner_udf.taggers.gazetteer import GazetteerTagger

            return GazetteerTagger

        register_kind("gazetteer", _gazetteer)


def load_tagger(directory: Path | str, device: torch.device | str | None = None) -> Tagger:
    """Load any artifact, choosing the tagger class from its ``artifact.json`` kind."""
    _builtin_kinds()
    info = read_info(directory)
    if info.kind not in _REGISTRY:
        raise ValueError(f"artifact {directory} has unknown kind {info.kind!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[info.kind]().load(directory, device=device)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
