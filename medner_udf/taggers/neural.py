"""The base of every tagger backed by a ``TaggingNetwork``: tagging, decoding, save and load.

A neural tagger turns notes into padded batches of word emissions; everything after that is shared:

1. ``check_texts``: a sequence of notes (a bare ``str`` is refused), each a ``str``;
2. ``emission_batches`` (the subclass): the notes' words encoded, sorted by length so each batch pads
   little, run through the network; each batch carries its emissions, mask and, for every row, the
   note it belongs to and the words its steps are;
3. decoding (here): ``net.decode_mentions`` (constrained Viterbi, tag paths to token ranges and the
   exact probability of each mention, all as arrays for the whole batch), token ranges to character
   offsets. Offsets come from the
   tokens, which are slices of the note, so ``text[begin:end] == entity.text`` by construction;
4. entities put back in note order, sorted by (begin, end, label).

The artifact (``medner_udf.taggers.artifact``) is written and read here too: ``artifact.json``,
``config.json`` (the network's frozen config dataclass), ``model.safetensors`` (weights; nothing is
unpickled), ``metrics.json`` when the tagger has training metrics, and whatever kind-specific files the
subclass adds (vocabularies, a tokenizer).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from medner_udf.models.base import TaggingNetwork
from medner_udf.taggers.artifact import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ArtifactInfo,
    config_from_json,
    read_info,
    read_json,
    write_info,
    write_json,
)
from medner_udf.taggers.base import Tagger, check_batch_size, check_texts, default_device
from medner_udf.text.tokens import token_bounds
from medner_udf.text.types import Entity

ItemT = TypeVar("ItemT")


@dataclass
class EmissionBatch:
    """Word emissions of a batch of word sequences, ready to decode.

    ``emissions``: (batch, seq_len, num_tags); ``mask``: (batch, seq_len) bool, left-aligned;
    ``notes[b]``: the index in the ``tag`` call of the note row ``b`` belongs to; ``begins`` and
    ``ends``: (batch, seq_len) character offsets in that note of the word each step is.
    """

    emissions: Tensor
    mask: Tensor
    notes: list[int]
    begins: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]


def length_sorted_batches(
    items: Sequence[ItemT], size: int, length: Callable[[ItemT], int], longest_first: bool = False
) -> Iterator[list[ItemT]]:
    """``items`` sorted by ``length`` (stable) and cut into batches of at most ``size``."""
    order = sorted(items, key=length, reverse=longest_first)
    for start in range(0, len(order), size):
        yield order[start : start + size]


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e.begin, e.end, e.label))


class NeuralTagger(Tagger):
    """A tagger whose model is a ``TaggingNetwork`` (see the module doc).

    Subclasses set ``config_class`` (the network's config dataclass) and ``default_batch_size``, and
    implement ``emission_batches``, ``build_network`` and the ``_save_files``/``_from_artifact`` pair
    for their kind-specific files.
    """

    config_class: ClassVar[type[Any]]
    default_batch_size: ClassVar[int]
    net: TaggingNetwork
    metrics: dict[str, Any] | None = None

    def __init__(
        self, info: ArtifactInfo, net: TaggingNetwork, metrics: dict[str, Any] | None = None
    ) -> None:
        if info.kind != self.kind:
            raise ArtifactError(f"artifact kind is {info.kind!r}, expected {self.kind!r}")
        if tuple(info.tags) != tuple(net.tags):
            raise ArtifactError(
                f"artifact.json lists {len(info.tags)} tags but the network has {net.num_tags}, "
                "or they differ in order; the two come from different models"
            )
        self.info = info
        self.net = net.eval()
        self.metrics = metrics

    # ----------------------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.net.config

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Self:
        self.net.to(torch.device(device))
        return self

    # ----------------------------------------------------------------------------------------------
    # Tagging
    @abstractmethod
    def emission_batches(self, texts: Sequence[str], batch_size: int) -> Iterator[EmissionBatch]:
        """Length-sorted batches of word emissions covering every word of every text once."""

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        notes = check_texts(texts)
        size = check_batch_size(batch_size, self.default_batch_size)
        self.net.eval()
        results: list[list[Entity]] = [[] for _ in notes]
        with torch.inference_mode():
            for batch in self.emission_batches(notes, size):
                for note, entities in zip(batch.notes, self.decode_batch(notes, batch), strict=True):
                    results[note].extend(entities)
        return [sort_entities(r) for r in results]

    def note_emissions(self, texts: Sequence[str], batch_size: int | None = None) -> list[Tensor]:
        """Each note's word emissions, (n_words, num_tags) in float32 on the CPU, words in note
        order (``tokenize``'s): what an ensemble combines and a student is distilled from."""
        notes = check_texts(texts)
        size = check_batch_size(batch_size, self.default_batch_size)
        starts = [token_bounds(text)[0] for text in notes]
        out = [torch.zeros((len(s), self.net.num_tags)) for s in starts]
        self.net.eval()
        with torch.inference_mode():
            for batch in self.emission_batches(notes, size):
                emissions = batch.emissions.float().cpu()
                lengths = batch.mask.sum(dim=1).tolist()
                for b, (note, n) in enumerate(zip(batch.notes, lengths, strict=True)):
                    words = np.searchsorted(starts[note], batch.begins[b, :n])
                    out[note][torch.from_numpy(words)] = emissions[b, :n]
        return out

    def decode_batch(self, texts: Sequence[str], batch: EmissionBatch) -> list[list[Entity]]:
        """Entities of each row of ``batch`` (see the module doc, step 3)."""
        mentions = self.net.decode_mentions(batch.emissions, batch.mask)
        out: list[list[Entity]] = [[] for _ in batch.notes]
        begins = batch.begins[mentions.row, mentions.first].tolist()
        ends = batch.ends[mentions.row, mentions.last].tolist()
        for row, begin, end, label, score in zip(
            mentions.row.tolist(), begins, ends, mentions.types, mentions.score.tolist(), strict=True
        ):
            text = texts[batch.notes[row]]
            out[row].append(Entity(begin, end, text[begin:end], label, score))
        return out

    # ----------------------------------------------------------------------------------------------
    # The artifact
    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_info(directory, self.info)
        write_json(directory / CONFIG_FILE, dataclasses.asdict(self.config))
        # clone(): safetensors refuses tensors that share storage (tied embeddings in some encoders).
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.net.state_dict().items()}
        save_file(
            self._weights_for_saving(state),
            str(directory / WEIGHTS_FILE),
            metadata={"kind": self.kind, "version": self.version},
        )
        self._save_files(directory)
        if self.metrics is not None:
            write_json(directory / METRICS_FILE, self.metrics)
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> Self:
        """Rebuild the tagger from its artifact alone: offline, no pickle, no outside config."""
        directory = Path(directory)
        info = read_info(directory)
        if info.kind != cls.kind:
            raise ArtifactError(f"artifact {directory} is of kind {info.kind!r}, not {cls.kind!r}")
        config_path = directory / CONFIG_FILE
        raw = cls._config_json(read_json(config_path), info, config_path)
        try:
            config = config_from_json(cls.config_class, raw, config_path)
        except ValueError as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{config_path}: {exc}") from exc
        if tuple(config.tags) != tuple(info.tags):
            raise ArtifactError(
                f"{config_path} has {len(config.tags)} tags but {directory / 'artifact.json'} lists "
                f"{len(info.tags)} (or they differ in order): the two files come from different models"
            )
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ArtifactError(f"weights file {weights} is missing")
        try:
            net = cls.build_network(config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{config_path}: cannot build the network it describes: {exc}") from exc
        state = cls._weights_for_loading(load_file(str(weights)))  # safetensors: tensors only
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(
                f"weights in {weights} do not match the network that {config_path} describes: {exc}"
            ) from exc
        metrics_path = directory / METRICS_FILE
        tagger = cls._from_artifact(directory, info, net)
        tagger.metrics = read_json(metrics_path) if metrics_path.is_file() else None
        return tagger.to(device if device is not None else default_device())

    @classmethod
    @abstractmethod
    def build_network(cls, config: Any) -> TaggingNetwork:
        """An untrained network for a bound config (the weights are loaded into it)."""

    @classmethod
    @abstractmethod
    def _from_artifact(cls, directory: Path, info: ArtifactInfo, net: Any) -> Self:
        """The tagger around a loaded network, reading the kind-specific files of ``directory``."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None:
        """Write the kind-specific files (vocabularies, tokenizer) into ``directory``."""

    @classmethod
    def _config_json(cls, raw: Any, info: ArtifactInfo, where: Path) -> Any:
        """``config.json`` as read, adapted from older artifact formats when needed."""
        return raw

    @staticmethod
    def _weights_for_saving(state: dict[str, Tensor]) -> dict[str, Tensor]:
        return state

    @staticmethod
    def _weights_for_loading(state: dict[str, Tensor]) -> dict[str, Tensor]:
        return state
