"""Auxiliary training objectives (training only: never part of a model or its artifact)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medner_udf.corpus.dataset import Sentence
from medner_udf.models.crf import CRF
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


def crf_soft_cross_entropy(
    student: CRF,
    student_emissions: torch.Tensor,
    teacher: CRF,
    teacher_emissions: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over the batch of the cross-entropy between the teacher CRF's distribution over tag
    paths and the student's: -E_q[log p_student(y)] = log Z_student - E_q[score_student(y)].

    E_q of a path score needs only the teacher's marginals: per-step unary marginals (for the
    emissions, and the start and end scores) and pairwise marginals summed over steps (for the
    transitions). They are the gradient of the teacher's log Z with respect to its potentials,
    which the CRF computes in closed form (``_LogPartition``): one backward pass gives them all.
    Emissions: (batch, seq_len, tags); ``mask`` (batch, seq_len) left-aligned.
    """
    from medner_udf.models.crf import _LogPartition

    mask = mask.bool()
    # Teacher marginals as gradients of its log Z (no gradient reaches the teacher itself).
    t_emissions = teacher_emissions.detach().float().clone().requires_grad_(True)
    t_start = teacher._start().detach().clone().requires_grad_(True)
    t_trans = teacher._trans().detach().clone().requires_grad_(True)
    t_end = teacher._end().detach().clone().requires_grad_(True)
    with torch.enable_grad():
        log_z_teacher = _LogPartition.apply(t_emissions, mask, t_start, t_trans, t_end)  # type: ignore[no-untyped-call]
        q_emissions, q_start, q_trans, q_end = torch.autograd.grad(
            log_z_teacher.sum(), [t_emissions, t_start, t_trans, t_end]
        )
    emissions = student_emissions.float()
    log_z_student = _LogPartition.apply(  # type: ignore[no-untyped-call]
        emissions, mask, student._start(), student._trans(), student._end()
    )
    # Marginals of padding steps are zero, so padding adds nothing to the expectation.
    expected = (
        (q_emissions * emissions).sum()
        + (q_start * student._start()).sum()
        + (q_trans * student._trans()).sum()
        + (q_end * student._end()).sum()
    )
    loss: torch.Tensor = (log_z_student.sum() - expected) / emissions.size(0)
    return loss
