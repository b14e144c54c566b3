"""Scoring assertion status and relations, on gold mentions and end to end.

- **assertion**, per class (present, absent, possible): a predicted mention is a true positive of
  class c when a gold mention has exactly its span and label, both statuses are c. ``n_pred`` counts
  predicted mentions with status c, ``n_gold`` gold mentions with status c. Given the gold mentions,
  this is the plain per-class P/R/F1 of the classifier; given a tagger's mentions, it is the end-to-end
  figure (a mention the tagger missed is a false negative of its gold class, a spurious one a false
  positive of its predicted class). ``macro_f1`` is the mean F1 over {absent, possible}: the classes a
  reader of the entities table must not get wrong, and the ones "present" would swamp.
- **relations**, per type and micro over all types: a predicted relation is correct when a gold
  relation has the same type, the same head span and label, and the same tail span and label
  (direction matters). With gold mentions this scores the relation model alone; with a tagger's
  mentions, both ends must also be strict matches of gold mentions (end to end).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from medner_udf.corpus.maccrobat import ASSERTIONS, Document, Relation
from medner_udf.evaluation.scoring import PRF, _prf
from medner_udf.text.types import Span

if TYPE_CHECKING:  # the models are passed in; only their types are needed here
    from medner_udf.clinical.assertion import AssertionClassifier
    from medner_udf.clinical.relations import RelationExtractor

MACRO_CLASSES = ("absent", "possible")


@dataclass(frozen=True)
class ClassScores:
    """Per-class (or per-type) P/R/F1, the micro figure over them, and a macro F1."""

    per_class: dict[str, PRF]
    micro: PRF
    macro_f1: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": {name: asdict(prf) for name, prf in self.per_class.items()},
            "micro": asdict(self.micro),
            "macro_f1": self.macro_f1,
        }


def _check_docs(gold: Mapping[str, Any], pred: Mapping[str, Any]) -> None:
    unknown = sorted(set(pred) - set(gold))
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} documents not in gold: {unknown[:5]}")


def _scores(
    tp: Counter[str], n_pred: Counter[str], n_gold: Counter[str], names: Sequence[str], macro: Sequence[str]
) -> ClassScores:
    per_class = {name: _prf(tp[name], n_pred[name], n_gold[name]) for name in names}
    micro = _prf(sum(tp[n] for n in names), sum(n_pred[n] for n in names), sum(n_gold[n] for n in names))
    macro_f1 = sum(per_class[n].f1 for n in macro) / len(macro) if macro else 0.0
    return ClassScores(per_class, micro, macro_f1)


def score_assertions(
    gold: Mapping[str, Iterable[tuple[Span, str]]],
    pred: Mapping[str, Iterable[tuple[Span, str]]],
    classes: Sequence[str] = ASSERTIONS,
) -> ClassScores:
    """Per-class assertion scores; ``gold``/``pred`` map document ids to (mention, status) pairs.

    ``micro`` here is the share of mentions whose span, label and status are all right (accuracy on
    gold mentions). A mention listed twice in one document counts once (its last status)."""
    _check_docs(gold, pred)
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for doc_id, gold_pairs in gold.items():
        g = dict(gold_pairs)
        p = dict(pred.get(doc_id, ()))
        for status in (*g.values(), *p.values()):
            if status not in classes:
                raise ValueError(f"document {doc_id}: assertion {status!r} is not one of {list(classes)}")
        n_gold.update(g.values())
        n_pred.update(p.values())
        tp.update(status for span, status in p.items() if g.get(span) == status)
    return _scores(tp, n_pred, n_gold, classes, [c for c in MACRO_CLASSES if c in classes])


def score_relations(
    gold: Mapping[str, Iterable[Relation]],
    pred: Mapping[str, Iterable[Relation]],
    types: Sequence[str],
) -> ClassScores:
    """Per-type and micro relation scores over ``types`` (relations of other types are ignored on
    both sides); ``macro_f1`` is the mean F1 over the types with gold relations."""
    _check_docs(gold, pred)
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for doc_id, gold_relations in gold.items():
        g = {r for r in gold_relations if r.type in types}
        p = {r for r in pred.get(doc_id, ()) if r.type in types}
        n_gold.update(r.type for r in g)
        n_pred.update(r.type for r in p)
        tp.update(r.type for r in g & p)
    return _scores(tp, n_pred, n_gold, types, [t for t in types if n_gold[t]])


def format_clinical_table(title: str, scores: ClassScores, micro_name: str = "micro") -> str:
    """A plain-text table: one row per class or type, then the micro row and the macro F1."""
    width = max([len(title), len(micro_name), *(len(n) for n in scores.per_class)])
    header = f"{title:<{width}}  {'gold':>6} {'pred':>6} {'tp':>6}  {'P':>6} {'R':>6} {'F1':>6}"

    def row(name: str, prf: PRF) -> str:
        return (
            f"{name:<{width}}  {prf.n_gold:>6} {prf.n_pred:>6} {prf.tp:>6}  "
            f"{prf.precision:>6.3f} {prf.recall:>6.3f} {prf.f1:>6.3f}"
        )

    lines = [header, "-" * len(header), *(row(n, prf) for n, prf in scores.per_class.items())]
    lines += ["-" * len(header), row(micro_name, scores.micro)]
    lines.append(f"{'macro F1':<{width}}  {'':>6} {'':>6} {'':>6}  {'':>6} {'':>6} {scores.macro_f1:>6.3f}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Predicting on documents (gold mentions by default) and scoring in one call.
def gold_assertions(docs: Sequence[Document]) -> dict[str, list[tuple[Span, str]]]:
    return {d.doc_id: list(zip(d.mentions, d.assertion_labels, strict=True)) for d in docs}


def gold_relations(docs: Sequence[Document]) -> dict[str, list[Relation]]:
    return {d.doc_id: list(d.relations) for d in docs}


def _mentions_of(docs: Sequence[Document], mentions: Mapping[str, Sequence[Span]] | None) -> list[list[Span]]:
    if mentions is None:
        return [list(d.mentions) for d in docs]
    return [list(mentions.get(d.doc_id, ())) for d in docs]


def predict_assertions(
    model: AssertionClassifier,
    docs: Sequence[Document],
    mentions: Mapping[str, Sequence[Span]] | None = None,
) -> dict[str, list[tuple[Span, str]]]:
    """(mention, predicted status) per document, on ``mentions`` (default: the gold mentions)."""
    spans = _mentions_of(docs, mentions)
    results = model.classify([d.text for d in docs], spans)
    return {
        d.doc_id: [(s, a.status) for s, a in zip(ms, res, strict=True)]
        for d, ms, res in zip(docs, spans, results, strict=True)
    }


def predict_relations(
    model: RelationExtractor,
    docs: Sequence[Document],
    mentions: Mapping[str, Sequence[Span]] | None = None,
) -> dict[str, list[Relation]]:
    """Predicted relations per document between ``mentions`` (default: the gold mentions)."""
    spans = _mentions_of(docs, mentions)
    results = model.relations([d.text for d in docs], spans)
    return {
        d.doc_id: [Relation(ms[r.head], ms[r.tail], r.type) for r in res]
        for d, ms, res in zip(docs, spans, results, strict=True)
    }


def evaluate_assertion(
    model: AssertionClassifier, docs: Sequence[Document], mentions: Mapping[str, Sequence[Span]] | None = None
) -> ClassScores:
    return score_assertions(gold_assertions(docs), predict_assertions(model, docs, mentions))


def evaluate_relations(
    model: RelationExtractor, docs: Sequence[Document], mentions: Mapping[str, Sequence[Span]] | None = None
) -> ClassScores:
    return score_relations(gold_relations(docs), predict_relations(model, docs, mentions), model.types)
