"""Rei (2017)'s neighbour-word objective, the train job's optional auxiliary loss (``lm_weight``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medner_udf.corpus.dataset import Sentence
from medner_udf.text.types import Token
from medner_udf.training.bilstm import BiLstmInputs
from medner_udf.training.objectives import NeighbourWordObjective


def _sentence(words: list[str]) -> Sentence:
    tokens, pos = [], 0
    for w in words:
        tokens.append(Token(pos, pos + len(w), w))
        pos += len(w) + 1
    return Sentence("d", tokens, ["O"] * len(tokens))


def test_targets_are_lowercased_word_classes_with_one_class_for_the_rest() -> None:
    objective = NeighbourWordObjective(4, ["the", "pain"])
    targets = objective.targets([_sentence(["The", "chest", "pain"]), _sentence(["pain"])])
    assert targets.tolist() == [[1, 0, 2], [2, 0, 0]]  # row 2 is padded after its one word


def test_loss_reads_next_words_forward_and_previous_words_backward_only_inside_each_sequence() -> None:
    torch.manual_seed(0)
    hidden_size, vocab = 3, ["a", "b", "c", "d"]
    objective = NeighbourWordObjective(hidden_size, vocab)
    hidden = torch.randn(2, 3, 2 * hidden_size)  # forward half first, then backward half
    targets = torch.tensor([[1, 2, 3], [4, 1, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])

    fwd, bwd = hidden[..., :hidden_size], hidden[..., hidden_size:]
    # Sequence 1 (3 words): forward states at 0, 1 predict words 1, 2; backward at 1, 2 predict 0, 1.
    # Sequence 2 (2 words): forward at 0 predicts word 1; backward at 1 predicts word 0.
    want_next = F.cross_entropy(
        objective.next_word(torch.stack([fwd[0, 0], fwd[0, 1], fwd[1, 0]])), torch.tensor([2, 3, 1])
    )
    want_prev = F.cross_entropy(
        objective.previous_word(torch.stack([bwd[0, 1], bwd[0, 2], bwd[1, 1]])), torch.tensor([1, 2, 4])
    )
    got = objective(hidden, targets, mask)
    torch.testing.assert_close(got, want_next + want_prev)

    # Padding and the states with no neighbour to predict do not move the loss.
    changed = hidden.clone()
    changed[1, 2] = 100.0  # padding
    changed[0, 2, :hidden_size] = 100.0  # forward state at the last word: no next word
    changed[0, 0, hidden_size:] = 100.0  # backward state at the first word: no previous word
    torch.testing.assert_close(objective(changed, targets, mask), got)


def test_one_word_sequences_give_a_zero_loss_not_nan() -> None:
    objective = NeighbourWordObjective(2, ["a"])
    loss = objective(torch.randn(2, 1, 4), torch.tensor([[1], [0]]), torch.ones(2, 1, dtype=torch.bool))
    assert loss.item() == 0.0


def test_train_settings_reject_a_negative_lm_weight() -> None:
    with pytest.raises(ValueError, match="lm_weight"):
        BiLstmInputs(lm_weight=-0.1)
