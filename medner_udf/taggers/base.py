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

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar, TypeVar

import torch

from medner_udf.taggers.artifact import ArtifactError, ArtifactInfo, read_info
from medner_udf.text.types import Entity

log = logging.getLogger(__name__)

T = TypeVar("T", bound="type[Tagger]")

# Modules that define the built-in kinds (module paths, not kind names: each module registers its
# own kind, so the kind strings live in one place each).
BUILTIN_MODULES = (
    "medner_udf.taggers.bilstm",
    "medner_udf.taggers.transformer",
    "medner_udf.taggers.gazetteer",
)
PLUGIN_GROUP = "medner.taggers"
PLUGIN_ENV = "MEDNER_TAGGER_MODULES"


class Tagger(ABC):
    """A trained NER model that tags raw notes. Subclasses register their artifact ``kind``."""

    kind: ClassVar[str]
    info: ArtifactInfo
    _registry: ClassVar[dict[str, type[Tagger]]] = {}

    # ----------------------------------------------------------------------------------------------
    # Registry
    @classmethod
    def register(cls, kind: str) -> Callable[[T], T]:
        """Class decorator: make ``kind`` (the artifact's ``kind`` field) load with this class."""
        if not kind or kind != kind.strip():
            raise ValueError(f"tagger kind must be a non-empty name without surrounding spaces, got {kind!r}")

        def add(subclass: T) -> T:
            existing = Tagger._registry.get(kind)
            if existing is not None and existing is not subclass:
                raise ValueError(
                    f"tagger kind {kind!r} is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            subclass.kind = kind
            Tagger._registry[kind] = subclass
            return subclass

        return add

    @classmethod
    def by_kind(cls, kind: str) -> type[Tagger]:
        """The class registered for ``kind``; ArtifactError naming the known kinds otherwise."""
        if kind not in Tagger._registry:
            import_tagger_modules()
        try:
            return Tagger._registry[kind]
        except KeyError:
            raise ArtifactError(
                f"no tagger kind {kind!r} is registered; known kinds: {', '.join(registered_kinds())}",
                hint=f"install the package that defines it, or name its module in ${PLUGIN_ENV}",
            ) from None

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


_imported: set[str] = set()


def import_tagger_modules() -> None:
    """Import the modules that register tagger kinds (built-in, entry points, ``$MEDNER_TAGGER_MODULES``)."""
    names = list(BUILTIN_MODULES)
    names += [name.strip() for name in os.environ.get(PLUGIN_ENV, "").split(",") if name.strip()]
    for name in names:
        if name not in _imported:
            importlib.import_module(name)
            _imported.add(name)
    for ep in entry_points(group=PLUGIN_GROUP):
        key = f"entry-point:{ep.value}"
        if key not in _imported:
            ep.load()
            _imported.add(key)


def registered_kinds() -> list[str]:
    import_tagger_modules()
    return sorted(Tagger._registry)


def load_tagger(directory: Path | str, device: torch.device | str | None = None) -> Tagger:
    """Load any artifact, choosing the tagger class from its ``artifact.json`` kind."""
    info = read_info(directory)
    return Tagger.by_kind(info.kind).load(directory, device=device)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
