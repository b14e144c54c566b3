"""BiLSTM-CNN-CRF (Ma & Hovy 2016): character CNN + word vectors -> BiLSTM -> CRF.

Word vectors are split into two tables whose rows are summed:

- ``pretrained``: GloVe vectors for a large vocabulary, **frozen**. Words never seen in training
  still get their GloVe vector, in the same space the network was trained in.
- ``tuned``: a trainable correction for each training-vocabulary word, initialised at zero. Ma & Hovy
  fine-tune embeddings; doing it as a separate delta keeps unseen words consistent with seen ones
  (their delta is simply zero), which plain fine-tuning of one shared table would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medner_udf.models.crf import CRF

PAD = 0  # padding id in every id space (words, tuned words, chars)
UNK = 1  # unknown id in every id space


@dataclass(frozen=True)
class BiLstmCnnCrfConfig:
    num_tags: int
    num_words: int  # rows of the frozen pretrained table, PAD and UNK included
    num_tuned_words: int  # rows of the trainable delta table, PAD and UNK included
    num_chars: int  # PAD and UNK included
    word_dim: int = 50
    char_dim: int = 30
    char_filters: int = 50
    char_kernel: int = 3
    max_word_chars: int = 24  # longer tokens keep their first chars for the CNN; the token itself is kept
    lstm_hidden: int = 200  # per direction
    lstm_layers: int = 1
    dropout: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "num_tags",
            "num_words",
            "num_tuned_words",
            "num_chars",
            "word_dim",
            "char_dim",
            "char_filters",
            "lstm_hidden",
            "lstm_layers",
            "max_word_chars",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.char_kernel < 1 or self.char_kernel % 2 == 0:
            raise ValueError(f"char_kernel must be a positive odd number, got {self.char_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class BiLstmCnnCrf(nn.Module):
    def __init__(
        self,
        config: BiLstmCnnCrfConfig,
        allowed: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        c = config
        self.pretrained = nn.Embedding(c.num_words, c.word_dim, padding_idx=PAD)
        self.pretrained.weight.requires_grad_(False)
        self.tuned = nn.Embedding(c.num_tuned_words, c.word_dim, padding_idx=PAD)
        nn.init.zeros_(self.tuned.weight)
        self.char_embedding = nn.Embedding(c.num_chars, c.char_dim, padding_idx=PAD)
        self.char_cnn = nn.Conv1d(c.char_dim, c.char_filters, c.char_kernel, padding=c.char_kernel // 2)
        self.dropout = nn.Dropout(c.dropout)
        self.lstm = nn.LSTM(
            c.word_dim + c.char_filters,
            c.lstm_hidden,
            num_layers=c.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=c.dropout if c.lstm_layers > 1 else 0.0,
        )
        self.hidden_to_tags = nn.Linear(2 * c.lstm_hidden, c.num_tags)
        self.crf = CRF(c.num_tags, allowed)

    def set_pretrained(self, vectors: Tensor) -> None:
        if vectors.shape != self.pretrained.weight.shape:
            raise ValueError(
                f"pretrained vectors {tuple(vectors.shape)} != {tuple(self.pretrained.weight.shape)}"
            )
        with torch.no_grad():
            self.pretrained.weight.copy_(vectors)

    def emissions(self, words: Tensor, tuned: Tensor, chars: Tensor, mask: Tensor) -> Tensor:
        """words, tuned, mask: (batch, seq_len); chars: (batch, seq_len, word_chars).

        Returns emission scores, shape (batch, seq_len, num_tags).
        """
        batch, seq_len, word_chars = chars.shape
        word_vectors = self.pretrained(words) + self.tuned(tuned)  # shape: (batch, seq_len, word_dim)
        char_vectors = self.char_embedding(chars.view(batch * seq_len, word_chars))
        # shape: (batch * seq_len, char_dim, word_chars) for Conv1d
        char_vectors = self.dropout(char_vectors).transpose(1, 2)
        char_features = self.char_cnn(char_vectors).max(dim=2).values  # shape: (batch * seq_len, filters)
        char_features = char_features.view(batch, seq_len, -1)
        features = self.dropout(torch.cat([word_vectors, char_features], dim=2))
        lengths = mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=seq_len)
        # shape: (batch, seq_len, 2 * lstm_hidden) -> (batch, seq_len, num_tags)
        emissions: Tensor = self.hidden_to_tags(self.dropout(hidden))
        return emissions

    def forward(
        self, words: Tensor, tuned: Tensor, chars: Tensor, mask: Tensor, tags: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(emissions, loss); loss (mean negative log-likelihood per sequence) only when tags are given."""
        emissions = self.emissions(words, tuned, chars, mask)
        loss = None
        if tags is not None:
            loss = -self.crf(emissions, tags, mask, reduction="mean")
        return emissions, loss
