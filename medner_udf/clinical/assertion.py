"""The assertion classifier: present / absent / possible, with a probability, for every mention.

``classify(texts, entities)`` takes notes and, for each, the mentions a tagger found (or gold spans)
and returns one ``Assertion`` per mention, in the order given. Each note is featurised with numpy
(``assertion_features``) and scored by the linear model; notes are independent, so a batch is simply
a list of notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from medner_udf.clinical.assertion_features import AssertionFeatures, CueWords, assertion_features
from medner_udf.clinical.base import ASSERTION_DIR, ClinicalModel
from medner_udf.clinical.features import Mention, Note
from medner_udf.taggers.base import check_texts

KIND = "assertion-linear"


@dataclass(frozen=True, slots=True)
class Assertion:
    status: str  # present, absent or possible
    score: float  # the model's probability of ``status``


def check_entities(texts: Sequence[str], entities: Sequence[Sequence[Mention]]) -> None:
    if len(entities) != len(texts):
        raise ValueError(f"got {len(texts)} notes but entities for {len(entities)}")
    for i, (text, mentions) in enumerate(zip(texts, entities, strict=True)):
        for m in mentions:
            if not 0 <= m.begin < m.end <= len(text):
                raise ValueError(
                    f"note {i}: mention {m.begin}-{m.end} ({m.label}) is outside the note (length {len(text)})"
                )


@ClinicalModel.register(KIND)
class AssertionClassifier(ClinicalModel):
    task = ASSERTION_DIR
    config_class = AssertionFeatures
    config: AssertionFeatures

    @cached_property
    def cue_words(self) -> CueWords:
        """The cue and terminator lists as ids of this model's words (looked up once)."""
        return CueWords.of(self.words)

    def probabilities(self, text: str, mentions: Sequence[Mention]) -> np.ndarray:
        """(n_mentions, n_classes) class probabilities of one note's mentions."""
        note = Note.build(text, mentions, self.words, self.labels)
        return self.linear.probabilities(assertion_features(note, self.config, self.cue_words))

    def classify(self, texts: Sequence[str], entities: Sequence[Sequence[Mention]]) -> list[list[Assertion]]:
        """The assertion of every mention of every note, in the order given."""
        notes = check_texts(texts)
        check_entities(notes, entities)
        classes = self.info.classes
        out: list[list[Assertion]] = []
        for text, mentions in zip(notes, entities, strict=True):
            if not mentions:
                out.append([])
                continue
            probs = self.probabilities(text, mentions)
            best = probs.argmax(axis=1)
            out.append([Assertion(classes[c], float(probs[i, c])) for i, c in enumerate(best)])
        return out

    def describe(self) -> list[str]:
        f = self.config
        return [
            "Multinomial logistic regression over sparse indicator features of the mention in its sentence "
            f"(label; {f.left_window} words left and {f.right_window} right, as bags and by distance; "
            "bigrams; the mention's words; the sentence's first word"
            + (
                f"; the nearest negation/hedging cue on each side within {f.scope_window} tokens, with "
                "scope terminators, distance, mentions between and label)."
                if f.scope_window
                else ")."
            ),
            f"{len(self.linear.index):,} features, {len(self.words):,} words, classes {self.info.classes}.",
        ]
