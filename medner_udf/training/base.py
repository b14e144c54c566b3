"""What a model kind must provide to be trained by the one engine (``medner_udf.training.loop``).

The engine owns everything that is the same for every kind: seeding, reading the split, shuffled
length-bucketed batches, the optimiser and its schedule, gradient clipping, weight averaging,
early stopping on dev strict F1, the time budget, the NaN stop, progress, ``metrics.json`` and the
model card. An adapter owns what differs: how the tagger is built from the training data, what
one training example is, and its loss. Adapters register under the tagger kind they train::

    @TrainingAdapter.register("bilstm-cnn-crf")
    class BiLstmAdapter(TrainingAdapter[Sentence]): ...

A model that is not fitted by gradient steps (the linear assertion and relation models, fitted by
their own solver) registers a ``StandaloneTrainer`` in the same registry instead; the engine hands
the whole run to it, so ``medner train --model KIND`` reaches every kind the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch

from medner_udf.config import conf_file, load_settings
from medner_udf.corpus.maccrobat import Document
from medner_udf.registry import Registry
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.training.settings import TrainSettings

if TYPE_CHECKING:  # the engine imports this module
    from medner_udf.training.loop import TrainResult

ExampleT = TypeVar("ExampleT")
A = TypeVar("A", bound="type[Trainer]")
S = TypeVar("S", bound=type)

ADAPTERS: Registry[type[Trainer]] = Registry(
    "trainable model",
    (
        "medner_udf.training.bilstm",
        "medner_udf.training.stacked",
        "medner_udf.training.transformer",
        "medner_udf.training.clinical",
    ),
    env="MEDNER_TRAINER_MODULES",
    group="medner.trainers",
)
TRAIN_CONF = "train.toml"


@dataclass
class Prepared(Generic[ExampleT]):
    """A new tagger and its training examples; ``stats`` goes into metrics.json's ``data``."""

    tagger: NeuralTagger
    examples: list[ExampleT]
    stats: dict[str, Any] = field(default_factory=dict)


class Trainer(ABC):
    """What every registered trainer has: its settings class, kind, settings and device."""

    settings_class: ClassVar[type[TrainSettings]]
    kind: ClassVar[str]

    def __init__(self, settings: TrainSettings, device: torch.device) -> None:
        self.settings = settings
        self.device = device

    @classmethod
    def register(cls, kind: str) -> Callable[[A], A]:
        """Class decorator: train model kind ``kind`` with this class."""
        return ADAPTERS.register(kind)


class TrainingAdapter(Trainer, Generic[ExampleT]):
    """One model kind's part of training (see the module doc)."""

    @abstractmethod
    def prepare(
        self, train_docs: Sequence[Document], tags: Sequence[str], version: str
    ) -> Prepared[ExampleT]:
        """Build the untrained tagger (on ``self.device``) and the training examples."""

    @abstractmethod
    def example_length(self, example: ExampleT) -> int:
        """Length used to batch examples of similar size together."""

    @abstractmethod
    def loss(self, tagger: NeuralTagger, batch: Sequence[ExampleT]) -> torch.Tensor:
        """The training objective of one batch (the network is in train mode)."""

    def parameter_groups(self, tagger: NeuralTagger) -> list[dict[str, Any]]:
        """Optimiser parameter groups; default: every trainable network parameter at one rate."""
        return [{"params": [p for p in tagger.net.parameters() if p.requires_grad]}]

    def averaged_parameters(self, tagger: NeuralTagger) -> list[torch.nn.Parameter]:
        """What weight averaging (``optim.ema_decay``) averages: the network's trainable weights."""
        return [p for p in tagger.net.parameters() if p.requires_grad]

    @property
    def mixed_precision(self) -> bool:
        """Whether the loss runs under bf16 autocast (recorded in metrics)."""
        return False

    @abstractmethod
    def describe(self, tagger: NeuralTagger) -> list[str]:
        """Model-card lines: the architecture and what fed it (encoder, vectors)."""


class StandaloneTrainer(Trainer):
    """A model kind fitted by its own solver rather than the engine's loop (see the module doc).

    It reads its split with ``loop.read_split``, writes its artifact and card, and returns the same
    ``TrainResult``; ``settings_class`` and the registry work as for adapters."""

    @abstractmethod
    def fit(self) -> TrainResult:
        """Fit, score dev (and test when ``run.evaluate_test``), write the artifact."""


def trainable_kinds() -> list[str]:
    return ADAPTERS.kinds()


def load_train_settings(
    kind: str | None,
    config: Path | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainSettings:
    """Settings of one run: profile ``profile`` (default: the kind's own) of ``config`` (default:
    ``conf/train.toml``), then ``overrides``. The profile names its ``kind`` unless ``kind`` is given."""
    from medner_udf.config import SettingsError, load_toml, profile_table

    path = config or conf_file(TRAIN_CONF)
    name = profile or kind
    if name is None:
        raise SettingsError(
            "say which model to train (--model KIND) or which profile to use (--profile NAME)"
        )
    table = profile_table(load_toml(path), name, str(path))
    chosen = kind or str(table.get("kind", ""))
    if not chosen:
        raise SettingsError(f'profile [{name}] of {path} names no kind; add kind = "..." or pass --model')
    if kind is not None and table.get("kind", kind) != kind:
        raise SettingsError(f"profile [{name}] of {path} trains {table['kind']!r}, not {kind!r}")
    cls = ADAPTERS.get(chosen).settings_class
    return load_settings(cls, path, {**dict(overrides or {}), "kind": chosen}, table=name)
