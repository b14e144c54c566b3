"""Training the stacked tagger: the BiLSTM-CNN-CRF's training with a frozen encoder's word vectors.

Everything is the BiLSTM-CNN-CRF's (``medner_udf.training.bilstm``: examples, loss, word dropout,
distillation) except that the tagger is a ``StackedTagger`` and each training segment also carries
the encoder's vectors of its words, computed once before the first epoch (the encoder is frozen,
so they never change), from whole notes as at inference. Dev notes' vectors are kept after the
first epoch's scoring for the same reason.

``inputs.encoder`` is a local Hugging Face checkpoint folder (default: all-MiniLM-L6-v2) or a trained
transformer tagger's artifact, whose fine-tuned encoder is then used (trained on the same training
documents only: it must not have seen dev or test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medner_udf.corpus.dataset import Sentence
from medner_udf.corpus.maccrobat import Document
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.taggers.stacked import KIND, StackedTagger
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.types import Token
from medner_udf.training.base import TrainingAdapter
from medner_udf.training.bilstm import BiLstmAdapter, BiLstmInputs, BiLstmTrainSettings, sentence_rows
from medner_udf.training.pretrained import default_encoder_dir


@dataclass(frozen=True)
class StackedInputs(BiLstmInputs):
    """The BiLSTM-CNN-CRF's inputs and the frozen encoder whose word vectors it also takes."""

    encoder: str | None = None  # checkpoint folder or transformer artifact; default: all-MiniLM-L6-v2


@dataclass(frozen=True)
class StackedTrainSettings(BiLstmTrainSettings):
    inputs: StackedInputs = field(default_factory=StackedInputs)


def context_tagger(encoder: str | None, tags: Sequence[str], name: str, version: str) -> TransformerTagger:
    """The frozen encoder as a transformer tagger: a trained artifact as it is, or a checkpoint
    folder under an untrained head (the head is never used)."""
    folder = Path(encoder) if encoder else default_encoder_dir()
    if (folder / "artifact.json").is_file():
        tagger = load_tagger(folder, device="cpu")
        if not isinstance(tagger, TransformerTagger):
            raise ArtifactError(f"inputs.encoder {folder} is a {tagger.kind} artifact, not a transformer one")
        return tagger
    return TransformerTagger.create(folder, tags, name=f"{name}-encoder", version=version)


@TrainingAdapter.register(KIND)
class StackedAdapter(BiLstmAdapter):
    settings_class = StackedTrainSettings  # type: ignore[assignment]  # narrower, as its settings
    settings: StackedTrainSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context: dict[int, torch.Tensor] = {}  # id(sentence) -> (tokens, context_dim)

    def create_tagger(
        self, version: str, tags: Sequence[str], train_tokens: Sequence[Sequence[Token]], **options: Any
    ) -> BiLstmCnnCrfTagger:
        from medner_udf.training.pretrained import load_glove

        run = self.settings.run
        encoder = context_tagger(self.settings.inputs.encoder, tags, run.name, version)
        glove_words, glove_vectors = load_glove()
        return StackedTagger.create_stacked(
            run.name, version, tags, train_tokens, glove_words, glove_vectors, encoder, self.settings.model,
            **options,
        )  # fmt: skip

    def prepare_inputs(
        self, tagger: BiLstmCnnCrfTagger, docs: Sequence[Document], sentences: Sequence[Sentence]
    ) -> None:
        assert isinstance(tagger, StackedTagger)
        tagger.keep_context_vectors(True)  # dev notes too, once scored
        self.context = sentence_rows(docs, sentences, tagger.note_context([d.text for d in docs]))

    def batch_context(self, batch: Sequence[Sentence]) -> torch.Tensor:
        rows = [self.context[id(s)] for s in batch]
        out = torch.zeros((len(rows), max(len(r) for r in rows), rows[0].shape[1]))
        for b, r in enumerate(rows):
            out[b, : len(r)] = r
        return out

    def describe(self, tagger: NeuralTagger) -> list[str]:
        assert isinstance(tagger, StackedTagger)
        encoder: Any = tagger.context.net.encoder.config
        lines = super().describe(tagger)
        lines[0] = (
            "Character CNN + GloVe 6B 50d + a frozen transformer encoder's word vectors + BiLSTM + "
            "constrained CRF (a stacked tagger)."
        )
        lines.append(
            f"Encoder: {encoder.model_type}, {encoder.num_hidden_layers} layers, {encoder.hidden_size} wide, "
            f"frozen; each word's vector is the mean of its last {tagger.config.context_layers} layers at "
            "the word's first piece."
        )
        return lines
