"""Entity-level scoring on character spans: strict and relaxed micro P/R/F1, macro F1, per type.

Everything here compares ``Span(begin, end, label)`` sets per document, so the figures do not depend
on any tokeniser or tag scheme (docs/training.md, "Evaluation"):

- **strict**: a prediction is correct when a gold mention has exactly its begin, end and label;
- **relaxed** (overlap): a gold mention counts as *found* when any predicted span with the same
  label overlaps it by at least one character, and a prediction counts as *correct* when it overlaps
  any gold span with the same label. Recall = found / n_gold, precision = correct / n_pred. The two
  counts can differ (one long prediction may cover two gold mentions), so ``relaxed.tp`` holds the
  number of gold mentions found (the recall numerator); precision is computed from the count of
  correct predictions, which is not stored separately;
- **macro F1**: the unweighted mean of the strict per-type F1 over the types present in gold;
- **per type**: strict P/R/F1 for every type seen in gold or in predictions;
- **errors**: where the strict misses are. Each prediction that is not exactly a gold mention is
  ``boundary`` (it overlaps a gold mention of its type), else ``type`` (it has exactly the span of a
  gold mention of another type), else ``type_and_boundary`` (it overlaps only mentions of other
  types), else ``spurious`` (it overlaps no gold mention); each gold mention that no prediction
  overlaps at all is ``missed``. The first four add up to ``n_pred - tp``;
- **type confusions**: each ``type`` or ``type_and_boundary`` prediction paired with the gold
  mention it overlaps most (the earliest of equals), counted by (predicted type, gold type).

The token-level, conlleval-like figures that papers usually report (seqeval and friends) are in
``medner_udf.evaluation.token_metrics``, only for comparison with published tables: they are
computed on flattened BIO tags, so they silently ignore the nested mentions a flat tagger cannot
represent, and they are not the figures we lead with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from medner_udf.text.scheme import OUTSIDE, flatten, spans_to_tags
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Span

if TYPE_CHECKING:  # the corpus module is only needed for a type hint
    pass


@dataclass(frozen=True)
class PRF:
    """Counts and precision/recall/F1 for one comparison; each ratio is 0.0 when undefined."""

    tp: int
    n_pred: int
    n_gold: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Scores:
    """All entity-level figures of one evaluation (see the module doc for the matching rules)."""

    strict: PRF
    relaxed: PRF
    macro_f1: float
    per_type: dict[str, PRF]
    errors: dict[str, int] = field(default_factory=dict)
    confusions: dict[tuple[str, str], int] = field(default_factory=dict)  # (predicted, gold) -> count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; per-type entries sorted by gold support (then name)."""
        ordered = sorted(self.per_type.items(), key=lambda kv: (-kv[1].n_gold, kv[0]))
        return {
            "strict": asdict(self.strict),
            "relaxed": asdict(self.relaxed),
            "macro_f1": self.macro_f1,
            "per_type": {label: asdict(prf) for label, prf in ordered},
            "errors": dict(self.errors),
            "type_confusions": [
                {"predicted": p, "gold": g, "count": n}
                for (p, g), n in sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
        }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _prf(tp: int, n_pred: int, n_gold: int) -> PRF:
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gold)
    return PRF(tp, n_pred, n_gold, precision, recall, _f1(precision, recall))


def _as_span_set(spans: Iterable[Span], where: str) -> set[Span]:
    out: set[Span] = set()
    for s in spans:
        if not isinstance(s, Span):
            raise TypeError(f"{where}: expected Span objects, got {type(s).__name__}")
        out.add(s)
    return out


def _overlapping_same_label(span: Span, others: Sequence[Span]) -> bool:
    return any(o.label == span.label and o.begin < span.end and span.begin < o.end for o in others)


ERROR_KINDS = ("boundary", "type", "type_and_boundary", "spurious", "missed")


def _overlaps(a: Span, b: Span) -> bool:
    return a.begin < b.end and b.begin < a.end


def _error_kinds(gold: set[Span], pred: set[Span]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """The module doc's error categories and type confusions for one document's span sets."""
    out: Counter[str] = Counter()
    confusions: Counter[tuple[str, str]] = Counter()
    gold_extents = {(g.begin, g.end) for g in gold}
    for p in pred - gold:
        touching = [g for g in gold if _overlaps(g, p)]
        if any(g.label == p.label for g in touching):
            out["boundary"] += 1
        elif touching:
            out["type" if (p.begin, p.end) in gold_extents else "type_and_boundary"] += 1
            best = max(sorted(touching), key=lambda g: min(g.end, p.end) - max(g.begin, p.begin))
            confusions[p.label, best.label] += 1
        else:
            out["spurious"] += 1
    out["missed"] += sum(not any(_overlaps(g, p) for p in pred) for g in gold)
    return out, confusions


def score_spans(gold: Mapping[str, Iterable[Span]], pred: Mapping[str, Iterable[Span]]) -> Scores:
    """Score predicted spans against gold spans, both keyed by document id.

    A document in ``gold`` that is missing from ``pred`` counts as having no predictions; a document
    in ``pred`` that is not in ``gold`` is a ValueError (it would silently inflate or deflate the
    counts). Spans are compared as sets, so duplicates count once.
    """
    unknown = sorted(set(pred) - set(gold))
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} documents not in gold: {unknown[:5]}")
    tp_by_type: Counter[str] = Counter()
    pred_by_type: Counter[str] = Counter()
    gold_by_type: Counter[str] = Counter()
    relaxed_found = relaxed_correct = 0
    errors: Counter[str] = Counter({kind: 0 for kind in ERROR_KINDS})
    confusions: Counter[tuple[str, str]] = Counter()
    for doc_id, gold_spans in gold.items():
        g = _as_span_set(gold_spans, f"gold[{doc_id!r}]")
        p = _as_span_set(pred.get(doc_id, ()), f"pred[{doc_id!r}]")
        gold_by_type.update(s.label for s in g)
        pred_by_type.update(s.label for s in p)
        tp_by_type.update(s.label for s in g & p)
        g_list, p_list = sorted(g), sorted(p)
        relaxed_found += sum(_overlapping_same_label(s, p_list) for s in g_list)
        relaxed_correct += sum(_overlapping_same_label(s, g_list) for s in p_list)
        doc_errors, doc_confusions = _error_kinds(g, p)
        errors.update(doc_errors)
        confusions.update(doc_confusions)

    n_gold, n_pred = sum(gold_by_type.values()), sum(pred_by_type.values())
    strict = _prf(sum(tp_by_type.values()), n_pred, n_gold)
    r_precision, r_recall = _ratio(relaxed_correct, n_pred), _ratio(relaxed_found, n_gold)
    relaxed = PRF(relaxed_found, n_pred, n_gold, r_precision, r_recall, _f1(r_precision, r_recall))
    labels = sorted(set(gold_by_type) | set(pred_by_type))
    per_type = {lab: _prf(tp_by_type[lab], pred_by_type[lab], gold_by_type[lab]) for lab in labels}
    gold_types = [lab for lab in labels if gold_by_type[lab]]
    macro = sum(per_type[lab].f1 for lab in gold_types) / len(gold_types) if gold_types else 0.0
    return Scores(strict, relaxed, macro, per_type, errors=dict(errors), confusions=dict(confusions))


def token_label_pairs(text: str, gold: Iterable[Span], pred: Iterable[Span]) -> list[tuple[str, str]]:
    """(gold type, predicted type) for every token of a note, ``O`` outside mentions.

    Both sides are flattened longest-first and the BIOES prefix is dropped; used for the confusion
    matrix.
    """
    tokens = tokenize(text)
    gold_tags = spans_to_tags(tokens, flatten(sorted(set(gold))).kept)
    pred_tags = spans_to_tags(tokens, flatten(sorted(set(pred))).kept)

    def strip(tag: str) -> str:
        return OUTSIDE if tag == OUTSIDE else tag[2:]

    return [(strip(g), strip(p)) for g, p in zip(gold_tags, pred_tags, strict=True)]


def format_table(scores: Scores) -> str:
    """A plain-text per-type table sorted by gold support, then micro, macro and relaxed lines."""
    width = max([len("type"), len("micro (strict)"), *(len(t) for t in scores.per_type)])
    header = f"{'type':<{width}}  {'gold':>6} {'pred':>6} {'tp':>6}  {'P':>6} {'R':>6} {'F1':>6}"

    def row(name: str, prf: PRF) -> str:
        return (
            f"{name:<{width}}  {prf.n_gold:>6} {prf.n_pred:>6} {prf.tp:>6}  "
            f"{prf.precision:>6.3f} {prf.recall:>6.3f} {prf.f1:>6.3f}"
        )

    lines = [header, "-" * len(header)]
    by_support = sorted(scores.per_type.items(), key=lambda kv: (-kv[1].n_gold, kv[0]))
    lines.extend(row(label, prf) for label, prf in by_support)
    lines.append("-" * len(header))
    lines.append(row("micro (strict)", scores.strict))
    lines.append(row("relaxed", scores.relaxed))
    lines.append(f"{'macro F1':<{width}}  {'':>6} {'':>6} {'':>6}  {'':>6} {'':>6} {scores.macro_f1:>6.3f}")
    if scores.errors:
        lines.append("")
        lines.append("errors: " + ", ".join(f"{kind} {scores.errors.get(kind, 0)}" for kind in ERROR_KINDS))
    if scores.confusions:
        top = sorted(scores.confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        lines.append(
            "type confusions (predicted for gold): " + ", ".join(f"{p} for {g} {n}" for (p, g), n in top)
        )
    return "\n".join(lines) + "\n"
