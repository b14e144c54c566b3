"""The contract every tagger honours, the registry of tagger kinds, and loading any artifact.

``Tagger.tag(texts)`` is what the extraction job calls: raw note strings in, entities with exact
character offsets out (``text[e.begin:e.end] == e.text``), for notes of any length (never truncated).

Kinds register themselves where they are defined (after AllenNLP's ``Registrable``)::

    @Tagger.register("bilstm-cnn-crf")
    class BiLstmCnnCrfTagger(NeuralTagger): ...

so this module never imports its children and a new kind is one new module. ``load_tagger`` reads an
artifact's ``kind`` and asks the registry for its class. The registry is filled by importing the
built-in tagger modules, the modules that installed packages declare under the ``medner.taggers``
entry-point group, and the modules named in ``$MEDNER_TAGGER_MODULES`` (comma-separated; how tests
and site plugins add kinds inside Spark's Python workers, which inherit the environment).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

import torch

from medner_udf.registry import Registry
from medner_udf.taggers.artifact import ArtifactInfo, read_info
from medner_udf.text.types import Entity

log = logging.getLogger(__name__)

T = TypeVar("T", bound="type[Tagger]")

# Modules that define the built-in kinds (module paths, not kind names: each module registers its
# own kind, so the kind strings live in one place each).
BUILTIN_MODULES = (
    "medner_udf.taggers.bilstm",
    "medner_udf.taggers.transformer",
    "medner_udf.taggers.gazetteer",
    "medner_udf.taggers.ensemble",
    "medner_udf.taggers.stacked",
)
TAGGERS: Registry[type[Tagger]] = Registry(
    "tagger", BUILTIN_MODULES, env="MEDNER_TAGGER_MODULES", group="medner.taggers"
)


class Tagger(ABC):
    """A trained NER model that tags raw notes. Subclasses register their artifact ``kind``."""

    kind: ClassVar[str]
    info: ArtifactInfo

    # ----------------------------------------------------------------------------------------------
    # Registry
    @classmethod
    def register(cls, kind: str) -> Callable[[T], T]:
        """Class decorator: make ``kind`` (the artifact's ``kind`` field) load with this class."""
        return TAGGERS.register(kind)

    @classmethod
    def by_kind(cls, kind: str) -> type[Tagger]:
        """The class registered for ``kind``; an error naming the known kinds otherwise."""
        return TAGGERS.get(kind)

    # ----------------------------------------------------------------------------------------------
    # What every tagger is
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def tags(self) -> list[str]:
        return list(self.info.tags)

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
        """Entities of each text, in text order, sorted by (begin, end, label).

        ``batch_size`` is the tagger's own unit per forward pass (segments, windows); None uses
        its default. A bare ``str`` is refused (see ``check_texts``).
        """

    @abstractmethod
    def save(self, directory: Path | str) -> Path:
        """Write a complete artifact to ``directory`` (created) and return it."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> Tagger:
        """Rebuild the tagger from its artifact directory alone."""


def check_texts(texts: Sequence[str]) -> list[str]:
    """The notes of a ``tag`` call as a list, refusing a bare string and non-string items.

    A bare ``str`` is a sequence of characters: tagging it would tag each character as a note.
    """
    if isinstance(texts, str):
        raise TypeError("tag() takes a sequence of notes, not a single string: wrap it in a list")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return out


def check_batch_size(batch_size: int | None, default: int) -> int:
    size = default if batch_size is None else batch_size
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return size


def registered_kinds() -> list[str]:
    return TAGGERS.kinds()


def load_tagger(directory: Path | str, device: torch.device | str | None = None) -> Tagger:
    """Load any artifact, choosing the tagger class from its ``artifact.json`` kind."""
    info = read_info(directory)
    return Tagger.by_kind(info.kind).load(directory, device=device)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
