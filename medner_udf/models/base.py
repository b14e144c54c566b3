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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medner_udf.models.crf import CRF
from medner_udf.text.scheme import TagCodes, allowed_transitions, paths_to_spans

HEADS = ("crf", "softmax")


@dataclass(frozen=True)
class Mentions:
    """Decoded mentions of a batch as arrays: item ``row[k]`` has a mention of type ``types[k]`` on
    steps ``first[k]..last[k]`` (inclusive) with probability ``score[k]``; row-major order."""

    row: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    types: list[str]
    score: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.row)


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

    @torch.no_grad()
    def decode_mentions(self, emissions: Tensor, mask: Tensor) -> Mentions:
        """Best paths read as mentions with their confidences, for the whole batch at once (see
        ``decode`` and ``segment_scores``; these are the same results as arrays, without per-row
        Python work, the invalid paths a softmax head can decode included)."""
        if self.crf is None:
            paths_list = self.decode(emissions, mask)
            lengths = np.array([len(p) for p in paths_list], dtype=np.int64)
            paths = np.zeros(tuple(mask.shape), dtype=np.int64)
            for b, p in enumerate(paths_list):
                paths[b, : len(p)] = p
        else:
            paths, lengths = self.crf.viterbi(emissions, mask)
        codes = self._codes()
        row, first, last, kind = paths_to_spans(paths, lengths, codes)
        types = [codes.types[k] for k in kind.tolist()]
        if self.crf is not None:
            score = self.crf.path_probabilities(emissions, mask, paths, row, first, last)
        else:
            log_probs = emissions.float().log_softmax(dim=2)
            path = torch.from_numpy(paths).to(emissions.device)
            cumulative = log_probs.gather(2, path.unsqueeze(2)).squeeze(2).double().cumsum(dim=1).cpu().numpy()
            before = np.where(first > 0, cumulative[row, np.maximum(first - 1, 0)], 0.0)
            score = np.clip(np.exp(cumulative[row, last] - before), 0.0, 1.0)
        return Mentions(row, first, last, types, score)

    def _codes(self) -> TagCodes:
        codes: TagCodes | None = getattr(self, "_tag_codes", None)
        if codes is None:
            codes = TagCodes.of(self.tags)
            self._tag_codes = codes
        return codes

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
