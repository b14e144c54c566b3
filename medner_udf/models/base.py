"""The contract every tagging network honours, and the head that decodes its emissions.

After AllenNLP's ``CrfTagger``: a network maps its inputs to per-word emission scores, and

- ``forward(**inputs, tags=None) -> (emissions, loss)``: emissions of shape (batch, seq_len,
  num_tags); the loss only when gold ``tags`` are given (it always decodes the same way);
- ``decode(emissions, mask)``: the best tag ids of each sequence (unpadded): constrained Viterbi with a
  CRF head, argmax with a softmax head;
- ``segment_scores(emissions, mask, paths, segments)``: the confidence of each decoded mention.

The CRF's transition constraints come from the network's own tag list (``config.tags``), so a loaded
network can never decode a sequence its scheme forbids (``O -> I-X``), whatever the caller passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medner_udf.models.crf import CRF
from medner_udf.text.scheme import allowed_transitions

HEADS = ("crf", "softmax")


class TaggingNetwork(nn.Module):
    """Base of the tagging networks: owns the output head over ``tags`` (a CRF or a softmax).

    Subclasses build their layers, then call ``build_head()``. ``loss_reduction`` is how the CRF's
    per-sequence negative log-likelihood is averaged
    (``mean``: per sequence; ``token_mean``: per word); subclasses pick the one they were tuned with.
    """

    loss_reduction = "mean"

    def __init__(self, tags: Sequence[str], head: str = "crf") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if len(tags) < 2:
            raise ValueError(f"need at least 2 tags (O and one entity tag), got {len(tags)}")
        self.tags = tuple(tags)
        self._head_kind = head
        self.crf: CRF | None = None

    def build_head(self) -> None:
        """Create the CRF (with a ``crf`` head); subclasses call this last in ``__init__``, after
        their own layers, so that a seeded run initialises every layer as it always has."""
        # Attribute name "crf" is part of the artifact format: the weights are stored as crf.*.
        if self._head_kind == "crf":
            self.crf = CRF(len(self.tags), allowed_transitions(self.tags))

    @property
    def num_tags(self) -> int:
        return len(self.tags)

    def head_loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """The loss of gold ``tags`` (batch, seq_len) under ``emissions``; ``mask`` (batch, seq_len)."""
        mask = mask.bool()
        loss: Tensor
        if self.crf is not None:
            loss = -self.crf(emissions, tags, mask, reduction=self.loss_reduction)
        else:
            loss = F.cross_entropy(emissions[mask], tags[mask])
        return loss

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Best tag ids per item (unpadded): constrained Viterbi with a CRF, argmax otherwise."""
        mask = mask.bool()
        if self.crf is not None:
            return self.crf.decode(emissions, mask)
        best = emissions.argmax(dim=2).cpu().tolist()
        lengths = mask.sum(dim=1).tolist()
        return [row[:n] for row, n in zip(best, lengths, strict=True)]

    @torch.no_grad()
    def segment_scores(
        self,
        emissions: Tensor,
        mask: Tensor,
        paths: list[list[int]],
        segments: list[list[tuple[int, int]]],
    ) -> list[list[float]]:
        """Confidence of each decoded mention: with a CRF its exact probability; with softmax the
        product of its words' tag probabilities (the same quantity if the words were independent)."""
        mask = mask.bool()
        if self.crf is not None:
            return self.crf.segment_probabilities(emissions, mask, paths, segments)
        log_probs = emissions.float().log_softmax(dim=2).cpu().numpy()
        out: list[list[float]] = []
        for b, (path, segs) in enumerate(zip(paths, segments, strict=True)):
            logs = [
                float(log_probs[b, first:last][range(last - first), path[first:last]].sum())
                for first, last in segs
            ]
            out.append([min(1.0, max(0.0, math.exp(x))) for x in logs])
        return out
