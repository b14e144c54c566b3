"""Training the BiLSTM-CNN-CRF (Ma & Hovy 2016) with the one engine: its examples, loss and inputs.

Examples are token segments of the training documents as the tagger segments notes at inference
(lines, long lines cut, optionally packed), tagged BIOES from the flattened gold mentions. The loss
is the CRF's negative log-likelihood per segment, plus, optionally, Rei (2017)'s neighbour-word
language-model loss (``inputs.lm_weight``). Word dropout replaces a training word's tuned vector by
UNK's with probability ``inputs.word_dropout``, so the network learns to work from the frozen GloVe
vector alone, as it must for words training never saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medner_udf.corpus.dataset import Sentence, to_sentences
from medner_udf.corpus.maccrobat import Document
from medner_udf.models.bilstm_cnn_crf import BiLstmCnnCrfConfig
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger, word_key
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.text.tokens import token_bounds
from medner_udf.text.types import Token
from medner_udf.training.base import Prepared, TrainingAdapter
from medner_udf.training.objectives import NeighbourWordObjective, crf_soft_cross_entropy
from medner_udf.training.pretrained import load_glove
from medner_udf.training.settings import TrainSettings


def sentence_rows(
    docs: Sequence[Document], sentences: Sequence[Sentence], per_note: Sequence[torch.Tensor]
) -> dict[int, torch.Tensor]:
    """``id(sentence)`` -> the rows of its words in ``per_note`` (one (words, ...) tensor per
    document of ``docs``, words in note order, e.g. ``note_emissions``)."""
    by_doc = {d.doc_id: (token_bounds(d.text)[0], rows) for d, rows in zip(docs, per_note, strict=True)}
    out = {}
    for sentence in sentences:
        starts, rows = by_doc[sentence.doc_id]
        first = int(np.searchsorted(starts, sentence.tokens[0].begin))
        out[id(sentence)] = rows[first : first + len(sentence.tokens)]
    return out


@dataclass(frozen=True)
class BiLstmInputs:
    """What feeds the BiLSTM-CNN-CRF besides the corpus."""

    glove_words: int = 400_000  # most frequent GloVe words carried in the artifact (plus training words)
    word_dropout: float = 0.15  # share of training words that lose their tuned vector in a step
    lm_weight: float = 0.0  # > 0: add Rei (2017)'s neighbour-word language-model loss, times this weight
    lm_vocab: int = 5000  # the LM loss predicts this many most frequent training words (others: one class)
    min_char_count: int = 1  # characters seen fewer times in training share the unknown id
    # Knowledge distillation: a trained CRF tagger (e.g. an ensemble artifact) whose distribution over
    # tag paths the student also learns, with this share of the loss (the rest: the gold tags).
    teacher: str | None = None
    distill_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.glove_words < 1 or self.lm_vocab < 1 or self.min_char_count < 1:
            raise ValueError("glove_words, lm_vocab and min_char_count must be >= 1")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}")


@dataclass(frozen=True)
class BiLstmTrainSettings(TrainSettings):
    model: BiLstmCnnCrfConfig = field(default_factory=BiLstmCnnCrfConfig)
    inputs: BiLstmInputs = field(default_factory=BiLstmInputs)


@TrainingAdapter.register("bilstm-cnn-crf")
class BiLstmAdapter(TrainingAdapter[Sentence]):
    settings_class = BiLstmTrainSettings
    settings: BiLstmTrainSettings

    def __init__(self, settings: TrainSettings, device: torch.device) -> None:
        super().__init__(settings, device)
        self.rng = np.random.default_rng(settings.run.seed)  # word dropout
        self.lm: NeighbourWordObjective | None = None
        self.teacher: NeuralTagger | None = None
        self.teacher_emissions: dict[int, torch.Tensor] = {}  # id(sentence) -> (tokens, tags)

    def prepare(
        self, train_docs: Sequence[Document], tags: Sequence[str], version: str
    ) -> Prepared[Sentence]:
        data, inputs = self.settings.data, self.settings.inputs
        sentences, flat = to_sentences(
            train_docs, data.max_segment_tokens, data.pack_lines, data.overlap_policy
        )
        sentences = [s for s in sentences if s.tokens]
        tagger = self.create_tagger(
            version,
            tags,
            [s.tokens for s in sentences],
            min_char_count=inputs.min_char_count,
            glove_limit=inputs.glove_words,
            max_segment_tokens=data.max_segment_tokens,
            pack_lines=data.pack_lines,
        ).to(self.device)
        if inputs.lm_weight > 0:
            counts = Counter(word_key(t.text) for s in sentences for t in s.tokens)
            words = [w for w, _ in counts.most_common(inputs.lm_vocab)]
            self.lm = NeighbourWordObjective(tagger.config.lstm_hidden, words).to(self.device)
        stats: dict[str, Any] = {
            "train_tokens": sum(len(s.tokens) for s in sentences),
            "flattening": asdict(flat),
        }
        if inputs.teacher:
            self._prepare_teacher(inputs.teacher, train_docs, sentences, tagger)
            stats["teacher"] = f"{self.teacher.kind} {self.teacher.name}/{self.teacher.version}"  # type: ignore[union-attr]
        self.prepare_inputs(tagger, train_docs, sentences)
        return Prepared(tagger, sentences, stats)

    def create_tagger(
        self, version: str, tags: Sequence[str], train_tokens: Sequence[Sequence[Token]], **options: Any
    ) -> BiLstmCnnCrfTagger:
        """The untrained tagger on the training tokens and GloVe (all its rows; the artifact keeps
        what ``create`` picks)."""
        glove_words, glove_vectors = load_glove()
        return BiLstmCnnCrfTagger.create(
            self.settings.run.name,
            version,
            tags,
            train_tokens,
            glove_words,
            glove_vectors,
            self.settings.model,
            **options,
        )

    def prepare_inputs(
        self, tagger: BiLstmCnnCrfTagger, docs: Sequence[Document], sentences: Sequence[Sentence]
    ) -> None:
        """Compute once what every epoch's batches need besides the tokens (nothing here)."""

    def batch_context(self, batch: Sequence[Sentence]) -> torch.Tensor | None:
        """The batch's context vectors, (batch, longest, context_dim), for a stacked network."""
        return None

    def _prepare_teacher(
        self, folder: str, docs: Sequence[Document], sentences: Sequence[Sentence], student: NeuralTagger
    ) -> None:
        """Load the teacher and keep its word emissions for every training segment (its marginals
        are computed batch by batch from them: ``crf_soft_cross_entropy``)."""
        teacher = load_tagger(folder, device="cpu")
        if not isinstance(teacher, NeuralTagger) or teacher.net.crf is None:
            raise ArtifactError(f"teacher {folder} is not a CRF tagger (kind {teacher.kind})")
        if tuple(teacher.tags) != tuple(student.tags):
            raise ArtifactError(
                f"teacher {folder} tags {len(teacher.tags)} types' BIOES tags, the student "
                f"{len(student.tags)}: they must be trained on the same entity types"
            )
        self.teacher_emissions = sentence_rows(
            docs, sentences, teacher.note_emissions([d.text for d in docs])
        )
        self.teacher = teacher.to(self.device)

    def example_length(self, example: Sentence) -> int:
        return len(example.tokens)

    def loss(self, tagger: NeuralTagger, batch: Sequence[Sentence]) -> torch.Tensor:
        assert isinstance(tagger, BiLstmCnnCrfTagger)
        net = tagger.net
        enc = tagger.encode([s.tokens for s in batch], self.settings.inputs.word_dropout, self.rng).to(
            self.device
        )
        gold = tagger.encode_tags([s.tags for s in batch]).to(self.device)
        context = self.batch_context(batch)
        hidden = net.hidden_states(
            enc.words, enc.tuned, enc.chars, enc.mask, None if context is None else context.to(self.device)
        )
        emissions = net.emissions_from_hidden(hidden)
        loss = net.head_loss(emissions, gold, enc.mask)
        if self.teacher is not None:
            assert net.crf is not None and self.teacher.net.crf is not None
            soft = torch.zeros_like(emissions)
            for b, sentence in enumerate(batch):
                soft[b, : len(sentence.tokens)] = self.teacher_emissions[id(sentence)]
            weight = self.settings.inputs.distill_weight
            distilled = crf_soft_cross_entropy(net.crf, emissions, self.teacher.net.crf, soft, enc.mask)
            loss = (1 - weight) * loss + weight * distilled
        if self.lm is not None:
            targets = self.lm.targets(batch).to(self.device)
            loss = loss + self.settings.inputs.lm_weight * self.lm(hidden, targets, enc.mask)
        return loss

    def parameter_groups(self, tagger: NeuralTagger) -> list[dict[str, Any]]:
        groups = super().parameter_groups(tagger)
        if self.lm is not None:
            groups[0]["params"] = groups[0]["params"] + list(self.lm.parameters())
        return groups

    def describe(self, tagger: NeuralTagger) -> list[str]:
        assert isinstance(tagger, BiLstmCnnCrfTagger)
        c = tagger.config
        inputs = self.settings.inputs
        return [
            "Character CNN + GloVe 6B 50d + BiLSTM + constrained CRF, after Ma & Hovy 2016.",
            f"LSTM {c.lstm_hidden} x 2 x {c.lstm_layers} layer(s), char CNN {c.char_filters} filters of width "
            f"{c.char_kernel}, dropout {c.dropout}, word dropout {inputs.word_dropout}"
            + (f", neighbour-word LM loss x {inputs.lm_weight}" if inputs.lm_weight else "")
            + (
                f", distilled from `{inputs.teacher}` (weight {inputs.distill_weight})"
                if inputs.teacher
                else ""
            )
            + ".",
            f"Vocabularies: {c.num_words:,} GloVe words (frozen), {c.num_tuned_words:,} tuned training words, "
            f"{c.num_chars} characters; segments of up to {tagger.max_segment_tokens} tokens"
            + (", lines packed." if tagger.pack_lines else "."),
        ]
