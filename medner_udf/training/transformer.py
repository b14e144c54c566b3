"""Training transformer taggers with the one engine: fine-tune an encoder to tag words.

Training examples are windows of whole notes: consecutive lines packed up to ``window`` pieces, so the
network trains with the cross-sentence context it gets at inference (``model.scope = "note"`` with
``data.pack_lines``). With ``scope = "segment"`` each line is its own example, which is the plain
token-classification recipe. Windows are cut only at word boundaries outside a mention
(``medner_udf.taggers.windows.training_windows``), so a CRF never sees a gold path that starts inside
an entity. Encoder weights train at ``optim.learning_rate`` with weight decay except for biases and
LayerNorm gains (BERT's recipe); the new output layer and CRF at ``optim.head_learning_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document
from medner_udf.models.transformer import TransformerConfig
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.taggers.windows import EncodedNote, IntArray, Window, training_windows
from medner_udf.text.scheme import OUTSIDE
from medner_udf.training.base import Prepared, TrainingAdapter
from medner_udf.training.pretrained import default_encoder_dir
from medner_udf.training.settings import TrainSettings


@dataclass(frozen=True)
class TransformerInputs:
    """The pretrained encoder a transformer tagger starts from."""

    encoder: str | None = None  # local Hugging Face checkpoint folder; default: all-MiniLM-L6-v2
    # The word-embedding table is half of MiniLM's weights; freezing it saves a third of each
    # optimiser step on CPU and keeps rare pieces where pretraining put them.
    freeze_embeddings: bool = True


@dataclass(frozen=True)
class TransformerTrainSettings(TrainSettings):
    model: TransformerConfig = field(default_factory=TransformerConfig)
    inputs: TransformerInputs = field(default_factory=TransformerInputs)

    def __post_init__(self) -> None:
        if self.model.scope == "segment" and self.data.pack_lines:
            raise ValueError("model.scope 'segment' tags each line alone: set data.pack_lines = false")


@dataclass(frozen=True)
class TrainingData:
    notes: list[EncodedNote]
    tag_ids: list[IntArray]
    windows: list[Window]


def build_training_data(
    tagger: TransformerTagger,
    docs: Sequence[Document],
    max_segment_tokens: int,
    pack: bool,
    overlap_policy: str = "longest",
) -> tuple[TrainingData, dict[str, Any]]:
    """Encode ``docs`` and cut them into training windows (see ``training_windows``); also the
    flattening report of their gold mentions."""
    index = {t: i for i, t in enumerate(tagger.config.tags)}
    notes: list[EncodedNote] = []
    tag_ids: list[IntArray] = []
    windows: list[Window] = []
    sentences, report = to_sentences(docs, max_segment_tokens, overlap_policy=overlap_policy)
    by_doc: dict[str, list[Any]] = {}
    for s in sentences:
        by_doc.setdefault(s.doc_id, []).append(s)
    for doc, note in zip(docs, tagger.encode_notes([d.text for d in docs]), strict=True):
        lines = by_doc.get(doc.doc_id, [])
        words = [(t.begin, t.end) for s in lines for t in s.tokens]
        if words != list(zip(note.begins.tolist(), note.ends.tolist(), strict=True)):
            raise ValueError(f"document {doc.doc_id}: its segments do not partition the note's words")
        if not words:
            continue
        tags = [t for s in lines for t in s.tags]
        blocks, a = [], 0
        for s in lines:
            blocks.append((a, a + len(s.tokens)))
            a += len(s.tokens)
        i = len(notes)
        notes.append(note)
        # Types unseen in training (possible with train_docs limits) fall back to O.
        tag_ids.append(np.asarray([index.get(t, index[OUTSIDE]) for t in tags], dtype=np.int64))
        windows.extend(training_windows(note, i, tags, blocks, tagger.capacity, pack))
    return TrainingData(notes, tag_ids, windows), asdict(report)


@TrainingAdapter.register("transformer")
class TransformerAdapter(TrainingAdapter[Window]):
    settings_class = TransformerTrainSettings
    settings: TransformerTrainSettings

    def __init__(self, settings: TrainSettings, device: torch.device) -> None:
        super().__init__(settings, device)
        self.data = TrainingData([], [], [])
        self.encoder_dir = Path(self.settings.inputs.encoder or default_encoder_dir())

    @property
    def mixed_precision(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def prepare(self, train_docs: Sequence[Document], tags: Sequence[str], version: str) -> Prepared[Window]:
        data = self.settings.data
        tagger = TransformerTagger.create(
            self.encoder_dir, tags, self.settings.model, name=self.settings.run.name, version=version
        ).to(self.device)
        if self.settings.inputs.freeze_embeddings:
            tagger.net.encoder.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]
        self.data, flattening = build_training_data(
            tagger, train_docs, data.max_segment_tokens, data.pack_lines, data.overlap_policy
        )
        stats = {"train_tokens": sum(n.n_words for n in self.data.notes), "flattening": flattening}
        return Prepared(tagger, list(self.data.windows), stats)

    def example_length(self, example: Window) -> int:
        return example.piece_end - example.piece_start

    def loss(self, tagger: NeuralTagger, batch: Sequence[Window]) -> torch.Tensor:
        assert isinstance(tagger, TransformerTagger)
        collated = tagger.collate(self.data.notes, batch, self.data.tag_ids)
        inputs = {k: v.to(self.device) for k, v in collated.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision):
            _, loss = tagger.net(**inputs)
        assert loss is not None, "the network returns a loss when gold tags are given"
        result: torch.Tensor = loss
        return result

    def parameter_groups(self, tagger: NeuralTagger) -> list[dict[str, Any]]:
        optim = self.settings.optim
        decay, no_decay, head = [], [], []
        for name, param in tagger.net.named_parameters():
            if not param.requires_grad:
                continue
            if not name.startswith("encoder."):
                head.append(param)
            elif param.ndim < 2:  # biases and LayerNorm gains are not decayed (BERT's recipe)
                no_decay.append(param)
            else:
                decay.append(param)
        head_lr = optim.head_learning_rate or optim.learning_rate
        return [
            {"params": decay, "lr": optim.learning_rate, "weight_decay": optim.weight_decay},
            {"params": no_decay, "lr": optim.learning_rate, "weight_decay": 0.0},
            {"params": head, "lr": head_lr, "weight_decay": 0.0},
        ]

    def describe(self, tagger: NeuralTagger) -> list[str]:
        assert isinstance(tagger, TransformerTagger)
        c = tagger.config
        return [
            f"Encoder `{self.encoder_dir.parent.name}/{self.encoder_dir.name}` ({c.model_type}) "
            f"fine-tuned with a {c.head} head over words (first sub-word piece of each word).",
            f"Scope {c.scope}: windows of {c.window} pieces, stride {c.stride} at inference; dropout "
            f"{c.dropout}; input embeddings {'frozen' if self.settings.inputs.freeze_embeddings else 'tuned'}.",
        ]
