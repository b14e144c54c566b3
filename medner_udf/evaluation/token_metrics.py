"""Token-level figures of the seed study's Table I protocol, for comparison with its table only.

The seed study scored a Hugging Face copy of MACCROBAT2020 (one row per document, B-/I- tags) on a
random 90/10 split and reported "F1" without saying which. These are the candidate figures, all
computed on BIO tags over the ``medner_udf.text.tokens.tokenize`` tokens of each **whole document**
(one tag sequence per document), gold and predicted spans flattened longest-first exactly as
``document_bio_tags`` does (so nested gold mentions a flat tagger cannot represent are
dropped from gold here, which the document-level scorer never does):

- ``seqeval``: seqeval's entity-level micro P/R/F1 in its default (conlleval-like) mode, where an
  ``I-X`` that does not continue an ``X`` chunk opens one;
- ``seqeval_strict``: the same with ``mode="strict", scheme=IOB2``, where such an ``I-X`` opens
  nothing. Tags made from spans are always valid IOB2, so for ``token_metrics`` the two agree; they
  differ only on raw tag sequences (``bio_metrics``) from a decoder that can emit an invalid one;
- ``token_micro``: micro P/R/F1 over tokens whose gold or predicted tag is not ``O``: a token is
  correct when its predicted type equals its gold type, B/I prefix ignored (scikit-learn's micro
  average over the entity types, ``O`` left out);
- ``token_weighted_f1``: per-label F1 over **all** labels, ``O`` included, with the B-/I- tags as the
  labels (the seed's label ids), averaged weighted by gold support: scikit-learn's
  ``classification_report`` "weighted avg" line. ``O`` dominates the support, so this figure sits
  near the token accuracy;
- ``token_accuracy``: the share of tokens whose predicted BIO tag equals the gold one.

The figure medner leads with stays the document-level strict entity F1 of ``scoring.score_spans``
(docs/training.md, "Evaluation"); docs/table1.md describes the mirror protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from medner_udf.text.scheme import OUTSIDE, flatten, spans_to_tags
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Span

if TYPE_CHECKING:  # the corpus module is only needed for a type hint
    from medner_udf.corpus.maccrobat import Document


@dataclass(frozen=True)
class Ratios:
    """Precision, recall and F1 of one comparison (0.0 where undefined)."""

    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class TokenMetrics:
    """The module doc's figures for one set of tag sequences."""

    seqeval: Ratios
    seqeval_strict: Ratios
    token_micro: Ratios
    token_weighted_f1: float
    token_accuracy: float
    n_sequences: int
    n_tokens: int
    n_gold_entity_tokens: int  # tokens whose gold tag is not O: the support of token_micro's recall

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """``S-X`` -> ``B-X`` and ``E-X`` -> ``I-X``; other tags unchanged."""
    out = []
    for tag in tags:
        if tag.startswith("S-"):
            out.append("B-" + tag[2:])
        elif tag.startswith("E-"):
            out.append("I-" + tag[2:])
        else:
            out.append(tag)
    return out


def document_bio_tags(text: str, spans: Iterable[Span]) -> list[str]:
    """Token-level BIO tags of a whole note (``tokenize``), from spans flattened longest-first."""
    return bioes_to_bio(spans_to_tags(tokenize(text), flatten(sorted(set(spans))).kept))


def _type_of(tag: str) -> str:
    return OUTSIDE if tag == OUTSIDE else tag[2:]


def bio_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> TokenMetrics:
    """All figures for gold and predicted BIO tag sequences (one pair per document, equal lengths)."""
    from seqeval.metrics import f1_score as seqeval_f1
    from seqeval.metrics import precision_score, recall_score
    from seqeval.scheme import IOB2
    from sklearn.metrics import accuracy_score, classification_report, precision_recall_fscore_support

    if len(y_true) != len(y_pred):
        raise ValueError(f"got {len(y_true)} gold and {len(y_pred)} predicted tag sequences")
    for index, (gold, pred) in enumerate(zip(y_true, y_pred, strict=True)):
        if len(gold) != len(pred):
            raise ValueError(f"sequence {index}: {len(gold)} gold tags but {len(pred)} predicted tags")
    true_lists = [list(seq) for seq in y_true]
    pred_lists = [list(seq) for seq in y_pred]
    flat_true = [tag for seq in true_lists for tag in seq]
    flat_pred = [tag for seq in pred_lists for tag in seq]
    if not flat_true:
        raise ValueError("no tokens to score")

    def seqeval_ratios(**mode: Any) -> Ratios:
        return Ratios(
            float(precision_score(true_lists, pred_lists, zero_division=0, **mode)),
            float(recall_score(true_lists, pred_lists, zero_division=0, **mode)),
            float(seqeval_f1(true_lists, pred_lists, zero_division=0, **mode)),
        )

    true_types = [_type_of(t) for t in flat_true]
    pred_types = [_type_of(t) for t in flat_pred]
    entity_types = sorted((set(true_types) | set(pred_types)) - {OUTSIDE})
    if entity_types:
        p, r, f, _ = precision_recall_fscore_support(
            true_types, pred_types, labels=entity_types, average="micro", zero_division=0
        )
        micro = Ratios(float(p), float(r), float(f))
    else:  # neither side tags anything: nothing to find, nothing found
        micro = Ratios(0.0, 0.0, 0.0)
    report = classification_report(flat_true, flat_pred, output_dict=True, zero_division=0)
    return TokenMetrics(
        seqeval=seqeval_ratios(),
        seqeval_strict=seqeval_ratios(mode="strict", scheme=IOB2),
        token_micro=micro,
        token_weighted_f1=float(report["weighted avg"]["f1-score"]),
        token_accuracy=float(accuracy_score(flat_true, flat_pred)),
        n_sequences=len(true_lists),
        n_tokens=len(flat_true),
        n_gold_entity_tokens=sum(t != OUTSIDE for t in true_types),
    )


def token_metrics(docs: Sequence[Document], predictions: Mapping[str, Iterable[Span]]) -> TokenMetrics:
    """The module doc's figures for predicted spans keyed by document id, against the documents' gold.

    A document missing from ``predictions`` counts as predicting nothing; a prediction for a document
    not in ``docs`` is a ValueError (it would silently change nothing and hide a mix-up).
    """
    doc_ids = {d.doc_id for d in docs}
    unknown = sorted(set(predictions) - doc_ids)
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} documents not in docs: {unknown[:5]}")
    y_true = [document_bio_tags(d.text, d.mentions) for d in docs]
    y_pred = [document_bio_tags(d.text, predictions.get(d.doc_id, ())) for d in docs]
    return bio_metrics(y_true, y_pred)
