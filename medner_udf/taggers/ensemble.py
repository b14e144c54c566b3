"""An ensemble of CRF taggers over the same tags: their potentials averaged, decoded as one CRF.

Every medner tagger scores the same words (``tokenize``) with the same BIOES tags, and a CRF's
score of a tag path is the sum of its emission and transition potentials. The ensemble scores a
path with the weighted sum of its members' potentials (a product of experts): each member's word
emissions, weighted and summed, and a CRF whose start, transition and end scores are the members'
weighted sums. Viterbi and the exact entity probabilities then run on that CRF over whole notes,
so the ensemble outputs valid BIOES paths and calibrated-as-a-CRF confidences, like any tagger.

Artifact (kind ``ensemble``)::

    artifact.json, config.json (weights, member folders), model.safetensors (the combined CRF),
    metrics.json, MODEL_CARD.md
    members/0/, members/1/, ...   complete artifacts of the members (any neural kind)

The extraction job serves it like any other kind: the folder is self-contained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor

from medner_udf.models.base import TaggingNetwork
from medner_udf.taggers.artifact import ArtifactError, ArtifactInfo
from medner_udf.taggers.base import Tagger, load_tagger
from medner_udf.taggers.neural import EmissionBatch, NeuralTagger, length_sorted_batches, sort_entities
from medner_udf.text.tokens import token_bounds
from medner_udf.text.types import Entity

KIND = "ensemble"
MEMBERS_DIR = "members"
_DECODE_BATCH = 64  # notes per Viterbi / forward-backward pass


@dataclass(frozen=True)
class EnsembleConfig:
    """The members' weights and folders (relative to the artifact), and the shared tag list."""

    weights: tuple[float, ...] = ()
    members: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "tags", tuple(self.tags))
        if len(self.weights) != len(self.members) or len(self.members) < 2:
            raise ValueError(
                f"an ensemble needs two or more members with one weight each, got "
                f"{len(self.members)} members and {len(self.weights)} weights"
            )
        if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")


class EnsembleNetwork(TaggingNetwork):
    """No layers of its own: the CRF over the members' weighted potentials."""

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__(config.tags, "crf")
        self.config = config
        self.build_head()

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        raise TypeError("an ensemble's emissions come from its members (EnsembleTagger.emission_batches)")

    @torch.no_grad()
    def combine(self, members: Sequence[TaggingNetwork], weights: Sequence[float]) -> None:
        """Set this CRF's scores to the weighted sum of the members' CRF scores."""
        assert self.crf is not None
        crfs = [m.crf for m in members]
        if any(c is None for c in crfs):
            raise ArtifactError("every member of an ensemble needs a CRF head")
        for name in ("start_transitions", "transitions", "end_transitions"):
            combined = sum(
                w * getattr(c, name).detach().float().cpu() for w, c in zip(weights, crfs, strict=True)
            )
            getattr(self.crf, name).copy_(combined)


@Tagger.register(KIND)
class EnsembleTagger(NeuralTagger):
    """Tags notes with the weighted potentials of member taggers (see the module doc)."""

    config_class = EnsembleConfig
    default_batch_size = 64  # passed to each member as its own forward batch
    net: EnsembleNetwork

    def __init__(self, info: ArtifactInfo, net: EnsembleNetwork, members: Sequence[NeuralTagger]) -> None:
        super().__init__(info, net)
        if len(members) != len(net.config.weights):
            raise ArtifactError(f"{len(members)} members but {len(net.config.weights)} weights")
        for i, member in enumerate(members):
            if tuple(member.tags) != tuple(info.tags):
                raise ArtifactError(
                    f"member {i} ({member.kind} {member.name}/{member.version}) has {len(member.tags)} tags "
                    f"where the ensemble has {len(info.tags)}, or they differ in order: members must be "
                    "trained on the same entity types"
                )
        self.members = list(members)

    @classmethod
    def create(
        cls, members: Sequence[NeuralTagger], weights: Sequence[float], *, name: str, version: str
    ) -> EnsembleTagger:
        """An ensemble of ``members`` (kept as they are; saved inside the ensemble's artifact)."""
        if len(members) < 2:
            raise ValueError("an ensemble needs two or more members")
        tags = tuple(members[0].tags)
        config = EnsembleConfig(
            weights=tuple(weights),
            members=tuple(f"{MEMBERS_DIR}/{i}" for i in range(len(members))),
            tags=tags,
        )
        net = EnsembleNetwork(config)
        net.combine([m.net for m in members], config.weights)
        info = ArtifactInfo(kind=KIND, name=name, version=version, tags=list(tags))
        return cls(info, net, members).to(members[0].device)

    def reweight(self, weights: Sequence[float]) -> EnsembleTagger:
        """The same members with other weights (a new tagger; the members are shared)."""
        return EnsembleTagger.create(self.members, weights, name=self.name, version=self.version)

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for member in self.members:
            member.to(device)
        return self

    # ----------------------------------------------------------------------------------------------
    def weighted_emissions(
        self,
        texts: Sequence[str],
        batch_size: int,
        member_emissions: Sequence[Sequence[Tensor]] | None = None,
    ) -> list[Tensor]:
        """Each note's combined word emissions; ``member_emissions`` (per member, per note) may be
        given to re-weigh without running the members again."""
        per_member = member_emissions or [m.note_emissions(texts, batch_size) for m in self.members]
        weights = self.net.config.weights
        return [
            sum(w * member[n] for w, member in zip(weights, per_member, strict=True))  # type: ignore[misc]
            for n in range(len(texts))
        ]

    def emission_batches(self, texts: Sequence[str], batch_size: int) -> Iterator[EmissionBatch]:
        yield from self.batches_of(texts, self.weighted_emissions(texts, batch_size))

    def tag_with(
        self, texts: Sequence[str], member_emissions: Sequence[Sequence[Tensor]]
    ) -> list[list[Entity]]:
        """``tag`` from the members' emissions computed beforehand (weight search re-weighs them
        without running the members again)."""
        results: list[list[Entity]] = [[] for _ in texts]
        with torch.inference_mode():
            for batch in self.batches_of(texts, self.weighted_emissions(texts, 1, member_emissions)):
                for note, entities in zip(batch.notes, self.decode_batch(texts, batch), strict=True):
                    results[note].extend(entities)
        return [sort_entities(r) for r in results]

    def batches_of(self, texts: Sequence[str], emissions: Sequence[Tensor]) -> Iterator[EmissionBatch]:
        """Whole notes of similar length, padded, ready to decode."""
        bounds = [token_bounds(text) for text in texts]
        device = self.device
        with_words = [i for i in range(len(texts)) if len(bounds[i][0])]
        for group in length_sorted_batches(with_words, _DECODE_BATCH, lambda i: len(bounds[i][0])):
            longest = max(len(bounds[i][0]) for i in group)
            padded = torch.zeros((len(group), longest, self.net.num_tags))
            mask = torch.zeros((len(group), longest), dtype=torch.bool)
            begins = np.zeros((len(group), longest), dtype=np.int64)
            ends = np.zeros((len(group), longest), dtype=np.int64)
            for b, i in enumerate(group):
                n = len(bounds[i][0])
                padded[b, :n] = emissions[i]
                mask[b, :n] = True
                begins[b, :n], ends[b, :n] = bounds[i]
            yield EmissionBatch(padded.to(device), mask.to(device), list(group), begins, ends)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def build_network(cls, config: EnsembleConfig) -> EnsembleNetwork:
        return EnsembleNetwork(config)

    def _save_files(self, directory: Path) -> None:
        for member, folder in zip(self.members, self.net.config.members, strict=True):
            member.save(directory / folder)

    @classmethod
    def _from_artifact(cls, directory: Path, info: ArtifactInfo, net: EnsembleNetwork) -> EnsembleTagger:
        members = []
        for folder in net.config.members:
            member = load_tagger(directory / folder, device="cpu")
            if not isinstance(member, NeuralTagger):
                raise ArtifactError(
                    f"ensemble member {directory / folder} is a {member.kind}, not a neural tagger"
                )
            members.append(member)
        return cls(info, net, members)
