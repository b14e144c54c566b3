"""Auxiliary training objectives (training only: never part of a model or its artifact)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medner_udf.corpus.dataset import Sentence
from medner_udf.taggers.bilstm import word_key


class NeighbourWordObjective(torch.nn.Module):
    """Rei (2017)'s auxiliary language-model loss for sequence labelling: the forward LSTM's state
    at each token predicts the next word, the backward one's the previous word (through a small
    tanh layer and a softmax over the ``vocab`` most frequent training words, the rest as one
    class). It trains the encoder on every token, not only on the ~25% inside mentions. Training
    only: the head is not part of the model or its artifact."""

    def __init__(self, lstm_hidden: int, words: Sequence[str], dim: int = 50) -> None:
        super().__init__()
        self.index = {w: i + 1 for i, w in enumerate(words)}  # 0: any other word
        vocab = len(words) + 1
        self.next_word = torch.nn.Sequential(
            torch.nn.Linear(lstm_hidden, dim), torch.nn.Tanh(), torch.nn.Linear(dim, vocab)
        )
        self.previous_word = torch.nn.Sequential(
            torch.nn.Linear(lstm_hidden, dim), torch.nn.Tanh(), torch.nn.Linear(dim, vocab)
        )

    def targets(self, batch: Sequence[Sentence]) -> torch.Tensor:
        out = np.zeros((len(batch), max(len(s.tokens) for s in batch)), dtype=np.int64)
        for b, sent in enumerate(batch):
            out[b, : len(sent.tokens)] = [self.index.get(word_key(t.text), 0) for t in sent.tokens]
        return torch.from_numpy(out)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (batch, seq_len, 2 * lstm_hidden), forward direction first; targets, mask (batch, seq_len)."""
        half = hidden.size(2) // 2
        valid = mask[:, 1:]  # a next word for positions 0..n-2, a previous word for 1..n-1
        if not bool(valid.any()):
            return hidden.new_zeros(())
        forward_states = hidden[:, :-1, :half][valid]
        backward_states = hidden[:, 1:, half:][valid]
        loss_next = torch.nn.functional.cross_entropy(self.next_word(forward_states), targets[:, 1:][valid])
        loss_prev = torch.nn.functional.cross_entropy(
            self.previous_word(backward_states), targets[:, :-1][valid]
        )
        return loss_next + loss_prev
