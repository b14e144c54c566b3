"""Training settings, in groups (after Hugging Face ``run_ner.py``'s model / data / training split):

- ``run``: what the run is called, where the artifact goes, seed, device, progress;
- ``data``: the corpus, its split, how documents become examples;
- ``optim``: optimiser, learning-rate schedule, batches, epochs, early stopping, weight averaging;
- ``model``: the network's own frozen config dataclass (``BiLstmCnnCrfConfig``, ``TransformerConfig``):
  its hyperparameters, never a copy of its fields; the sizes bound to the data stay unset here;
- ``inputs``: what feeds the network beyond the corpus (GloVe rows, a pretrained encoder folder).

``conf/train.toml`` holds one profile per model kind (and variants that ``extends`` one); every key
can be overridden on the command line by its dotted path (``optim.epochs=20``) or, when only one
group has it, by its name (``epochs=20``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from medner_udf.text.scheme import OVERLAP_POLICIES

OPTIMIZERS = ("adam", "adamw", "sgd")
# plateau: halve on a dev plateau (ReduceLROnPlateau); linear: warm-up then linear decay per step;
# inverse: lr / (1 + lr_decay * epoch) (Ma & Hovy's SGD schedule); constant.
SCHEDULES = ("plateau", "linear", "inverse", "constant")
SPLIT_RE = re.compile(r"^(dice|random-\d+)$")


@dataclass(frozen=True)
class RunSettings:
    name: str = "medner-model"
    version: str | None = None  # default: UTC time of the run
    output_dir: str = "models"  # the artifact goes to <output_dir>/<name>/<version>
    seed: int = 13
    device: str | None = None  # default: cuda if available, else cpu
    num_threads: int | None = None  # torch intra-op threads (default: torch's)
    evaluate_test: bool = True  # score the test split once, after training, with the chosen weights
    progress: bool = True  # bars on a terminal, log lines elsewhere (medner_udf.progress)


@dataclass(frozen=True)
class DataSettings:
    corpus: str | None = None  # default: $MEDNER_CORPUS, else ../shared/data/maccrobat/MACCROBAT2020
    # dice: the published 160/20/20 document split; random-<seed>: a seeded random 90/10 split with
    # dev carved from the training part (the seed study's protocol, docs/table1.md).
    split: str = "dice"
    train_docs: int | None = None  # first N train documents only (quick runs, tests)
    dev_docs: int | None = None
    max_segment_tokens: int = 128
    pack_lines: bool = True  # join consecutive lines up to the example length (cross-sentence context)
    overlap_policy: str = "most"  # how nested gold mentions are flattened for training (scheme.flatten)

    def __post_init__(self) -> None:
        if not SPLIT_RE.match(self.split):
            raise ValueError(f"split must be 'dice' or 'random-<seed>', got {self.split!r}")
        if self.overlap_policy not in OVERLAP_POLICIES:
            raise ValueError(f"overlap_policy must be one of {OVERLAP_POLICIES}, got {self.overlap_policy!r}")
        if self.max_segment_tokens < 1:
            raise ValueError(f"max_segment_tokens must be >= 1, got {self.max_segment_tokens}")
        for name in ("train_docs", "dev_docs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    head_learning_rate: float | None = None  # output layer and CRF of a pretrained encoder (None: same)
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    batch_size: int = 4  # examples (segments or windows) per step
    epochs: int = 40
    patience: int = 6  # epochs without a dev improvement before stopping (with select_best)
    select_best: bool = True  # keep the best dev epoch (False: the last one)
    max_minutes: float = 14.0  # wall-clock budget for the training loop
    grad_clip: float = 1.0  # max gradient norm (0: off)
    schedule: str = "plateau"
    lr_halve_after: int = 3  # plateau: halve after this many epochs without a dev gain (0: never)
    lr_decay: float = 0.05  # inverse
    warmup_fraction: float = 0.0  # linear: share of all steps spent warming up
    ema_decay: float = 0.0  # > 0: score dev with, and keep, an exponential moving average of the weights

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "max_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ValueError(f"head_learning_rate must be > 0, got {self.head_learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr_halve_after < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("lr_halve_after, grad_clip and weight_decay must be >= 0")


@dataclass(frozen=True)
class TrainSettings:
    """One training run; each model kind narrows ``model`` and ``inputs`` to its own dataclasses."""

    kind: str = ""
    run: RunSettings = field(default_factory=RunSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    model: Any = None
    inputs: Any = None
