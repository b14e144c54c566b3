"""The relation extractor: directed, typed relations between the mentions of a note.

``relations(texts, entities)`` returns, per note, ``RelationPrediction``s whose ``head`` and ``tail``
index the mentions as given (head = brat's Arg1: the modifier of MODIFY, the sub-procedure of
SUB_PROCEDURE, the anaphor of IDENTICAL, the cause of CAUSE, the earlier event of BEFORE). Candidate
pairs are pruned (``candidate_pairs``: at most ``max_candidates`` per mention), each is classified
into NONE or a type with its direction, and decoded as ``RelationConfig`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from medner_udf.clinical.assertion import check_entities
from medner_udf.clinical.base import RELATIONS_DIR, ClinicalInfo, ClinicalModel
from medner_udf.clinical.features import FloatArray, IntArray, LinearModel, Mention, Note, Vocabulary
from medner_udf.clinical.relation_features import RelationConfig, candidate_pairs, relation_features
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import check_texts

KIND = "relations-linear"
NONE = "NONE"
# The relation types the model predicts; CO-OCCURRENCE (5 instances in MACCROBAT) is left out.
RELATION_TYPES = ("MODIFY", "SUB_PROCEDURE", "IDENTICAL", "BEFORE", "AFTER", "CAUSE")
FORWARD, BACKWARD = ">", "<"  # the earlier mention of the pair is the head / the tail


def relation_classes(types: Sequence[str] = RELATION_TYPES) -> list[str]:
    """NONE, then each type in both directions: ``MODIFY>`` (earlier mention is the head), ``MODIFY<``."""
    return [NONE] + [t + d for t in types for d in (FORWARD, BACKWARD)]


@dataclass(frozen=True, slots=True)
class RelationPrediction:
    head: int  # index of the head mention (brat Arg1) in the note's mention list
    tail: int
    type: str
    score: float  # the model's probability of this type and direction for the pair


def decode(
    a: IntArray, b: IntArray, probs: FloatArray, classes: Sequence[str], config: RelationConfig
) -> list[RelationPrediction]:
    """Relations of one note from the class probabilities of its candidate pairs (see the config)."""
    if len(a) == 0:
        return []
    best = probs[:, 1:].argmax(axis=1) + 1
    chosen = np.where(probs[:, 0] < config.none_threshold, best, 0)
    modify = [classes.index("MODIFY" + FORWARD), classes.index("MODIFY" + BACKWARD)]
    chosen[np.isin(chosen, modify)] = 0
    # One head per modifier: the best MODIFY pair of each mention as head (Arg1).
    pair = np.concatenate([np.arange(len(a)), np.arange(len(a))])
    modifier = np.concatenate([a, b])
    cls = np.repeat(np.array(modify, dtype=np.int64), len(a))
    prob = np.concatenate([probs[:, modify[0]], probs[:, modify[1]]])
    order = np.lexsort((-prob, modifier))
    _, first = np.unique(modifier[order], return_index=True)
    for k in order[first]:
        if prob[k] >= config.modify_threshold and chosen[pair[k]] == 0:
            chosen[pair[k]] = cls[k]
    out = []
    for k in np.flatnonzero(chosen):
        name = classes[int(chosen[k])]
        head, tail = (a[k], b[k]) if name.endswith(FORWARD) else (b[k], a[k])
        out.append(RelationPrediction(int(head), int(tail), name[:-1], float(probs[k, chosen[k]])))
    return sorted(out, key=lambda r: (r.head, r.tail, r.type))


@ClinicalModel.register(KIND)
class RelationExtractor(ClinicalModel):
    task = RELATIONS_DIR
    config_class = RelationConfig
    config: RelationConfig

    def __init__(
        self,
        info: ClinicalInfo,
        config: RelationConfig,
        words: Vocabulary,
        linear: LinearModel,
        compatible: npt.NDArray[np.bool_],
        metrics: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(info, config, words, linear, metrics)
        n = len(info.entity_labels)
        if compatible.shape != (n, n):
            raise ArtifactError(
                f"label compatibility matrix has shape {compatible.shape}, expected ({n}, {n})"
            )
        self.compatible = compatible.astype(bool)

    @property
    def types(self) -> list[str]:
        return sorted({c[:-1] for c in self.info.classes if c != NONE})

    def candidates(self, text: str, mentions: Sequence[Mention]) -> tuple[Note, IntArray, IntArray]:
        note = Note.build(text, mentions, self.words, self.labels)
        a, b = candidate_pairs(note, self.config, self.compatible)
        return note, a, b

    def relations(
        self, texts: Sequence[str], entities: Sequence[Sequence[Mention]]
    ) -> list[list[RelationPrediction]]:
        """The predicted relations of every note (indices into that note's mentions as given)."""
        notes = check_texts(texts)
        check_entities(notes, entities)
        out = []
        for text, mentions in zip(notes, entities, strict=True):
            note, a, b = self.candidates(text, mentions)
            probs = self.linear.probabilities(relation_features(note, a, b, self.config))
            out.append(decode(a, b, probs, self.info.classes, self.config))
        return out

    def _arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return {"compatible": self.compatible.astype(np.uint8)}

    @classmethod
    def _from_parts(
        cls,
        info: ClinicalInfo,
        config: Any,
        words: Vocabulary,
        linear: LinearModel,
        arrays: dict[str, np.ndarray[Any, Any]],
        metrics: dict[str, Any] | None,
    ) -> Self:
        if "compatible" not in arrays:
            raise ArtifactError(
                f"relation model {info.name}/{info.version} has no label compatibility matrix"
            )
        return cls(info, config, words, linear, arrays["compatible"].astype(bool), metrics)

    def describe(self) -> list[str]:
        c = self.config
        return [
            "Pairwise multinomial logistic regression over sparse indicator features of candidate mention "
            "pairs (label pair crossed with distances, nesting and the count of same-label mentions between; "
            "words and mention labels between; words around the pair); one class per type and direction.",
            f"Candidates: label pairs seen in training, at most {c.max_candidates} later mentions per mention, "
            f"within {c.max_sentence_gap} sentences. Decoding: P(NONE) < {c.none_threshold}; best MODIFY head "
            f"per modifier at P >= {c.modify_threshold}.",
            f"{len(self.linear.index):,} features, {len(self.words):,} words, types {self.types}.",
        ]
