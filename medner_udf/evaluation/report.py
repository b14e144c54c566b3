"""Evaluating a trained tagger on gold documents: scores, predictions and figures in one folder.

``evaluate_tagger`` writes into ``out_dir``:

- ``scores.json``: strict/relaxed/macro/per-type entity scores, the seqeval (conlleval-like) figure
  for comparison with published tables, model name and version, the document ids, the number of
  documents and the tagging throughput;
- ``predictions.jsonl``: one document per line, ``{"doc_id": ..., "entities": [{"start", "end",
  "label", "score"}, ...]}`` (offsets only: no note text leaves the corpus through this file);
- ``per_type.txt``: the plain-text per-type table;
- ``confusion.png``: the token-level gold-type x predicted-type confusion matrix;
- with clinical heads (``medner_udf.clinical.base.load_heads``): ``scores.json`` gains ``assertion``
  and ``relations`` sections (per class / per type P/R/F1 on the gold mentions and end to end on the
  tagger's mentions, ``medner_udf.evaluation.clinical``), ``clinical.txt`` holds their tables, and
  ``predictions.jsonl`` carries each entity's assertion and the document's relations.

Scores are always against all gold mentions (not the flattened ones), so what a flat tagger cannot
represent shows up as lost recall. Nothing here logs note text.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medner_udf.corpus.maccrobat import Document, Relation, read_corpus
from medner_udf.evaluation.plots import confusion_matrix, plot_confusion
from medner_udf.evaluation.scoring import format_table, score_spans, token_label_pairs
from medner_udf.evaluation.token_metrics import token_metrics
from medner_udf.taggers.artifact import write_json
from medner_udf.text.scheme import OUTSIDE
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Entity, Span

if TYPE_CHECKING:  # importing the tagger module pulls in torch; only its type is needed here
    from medner_udf.clinical.base import ClinicalHeads
    from medner_udf.taggers.base import Tagger

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
PREDICTIONS_FILE = "predictions.jsonl"
TABLE_FILE = "per_type.txt"
CONFUSION_FILE = "confusion.png"
CLINICAL_FILE = "clinical.txt"


def _check_entities(doc: Document, entities: Sequence[Entity]) -> None:
    for e in entities:
        if not 0 <= e.begin < e.end <= len(doc.text):
            raise ValueError(
                f"tagger returned entity {e.begin}-{e.end} ({e.label}) outside document {doc.doc_id} "
                f"(length {len(doc.text)})"
            )


def confusion_labels(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Types ordered by gold token frequency (then predicted, then name), with ``O`` last.

    ``O`` goes last although it is the most frequent: it would otherwise take the top-left corner
    that readers look at first, and the entity types are what the figure is about.
    """
    gold_counts = Counter(g for g, _ in pairs)
    pred_counts = Counter(p for _, p in pairs)
    types = (set(gold_counts) | set(pred_counts)) - {OUTSIDE}
    ordered = sorted(types, key=lambda t: (-gold_counts[t], -pred_counts[t], t))
    return [*ordered, OUTSIDE]


def evaluate_tagger(
    tagger: Tagger,
    docs: Sequence[Document],
    out_dir: Path,
    batch_size: int | None = None,
    split: str | None = None,
    heads: ClinicalHeads | None = None,
) -> dict[str, Any]:
    """Tag ``docs`` with ``tagger``, score against their gold mentions and write the report files.

    Returns the dict written to ``scores.json``. ``split`` is only recorded. With ``heads``, the
    assertion and relation models are scored too (see the module doc).
    """
    if not docs:
        raise ValueError("docs is empty: nothing to evaluate")
    ids = [d.doc_id for d in docs]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate document ids: {duplicates[:5]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    predicted = tagger.tag([d.text for d in docs], batch_size=batch_size)
    seconds = time.perf_counter() - started
    if len(predicted) != len(docs):
        raise ValueError(f"tagger returned {len(predicted)} results for {len(docs)} documents")
    for doc, entities in zip(docs, predicted, strict=True):
        _check_entities(doc, entities)
    n_tokens = sum(len(tokenize(d.text)) for d in docs)

    gold = {d.doc_id: d.mentions for d in docs}
    pred: dict[str, list[Span]] = {
        d.doc_id: [e.span for e in entities] for d, entities in zip(docs, predicted, strict=True)
    }
    scores = score_spans(gold, pred)
    result: dict[str, Any] = {
        "model_name": tagger.name,
        "model_version": tagger.version,
        "split": split,
        "n_docs": len(docs),
        "doc_ids": ids,
        "n_tokens": n_tokens,
        "tag_seconds": round(seconds, 4),
        "tokens_per_second": round(n_tokens / seconds, 1) if seconds > 0 else None,
        **scores.to_dict(),
        # Token-level figures, only for comparison with published tables (token_metrics' doc).
        "token_level": token_metrics(docs, pred).to_dict(),
    }
    clinical = _clinical(heads, docs, pred, out_dir) if heads is not None and not heads.empty else None
    if clinical is not None:
        result.update(clinical.scores)
    write_json(out_dir / SCORES_FILE, result)

    with open(out_dir / PREDICTIONS_FILE, "w", encoding="utf-8") as fh:
        for doc, entities in zip(docs, predicted, strict=True):
            ordered = sorted(entities, key=lambda e: (e.begin, e.end, e.label))
            row: dict[str, Any] = {
                "doc_id": doc.doc_id,
                "entities": [
                    {"start": e.begin, "end": e.end, "label": e.label, "score": float(e.score)}
                    for e in ordered
                ],
            }
            if clinical is not None:
                clinical.annotate(doc.doc_id, row)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    (out_dir / TABLE_FILE).write_text(format_table(scores), encoding="utf-8")

    pairs = [pair for d in docs for pair in token_label_pairs(d.text, d.mentions, pred[d.doc_id])]
    labels = confusion_labels(pairs)
    plot_confusion(
        confusion_matrix(pairs, labels),
        labels,
        out_dir / CONFUSION_FILE,
        title=f"{tagger.name} {tagger.version}: token-level confusion (rows: gold, row-normalised)",
    )
    log.info(
        "evaluated %s/%s on %d docs: strict F1 %.4f, relaxed F1 %.4f, %.0f tokens/s",
        tagger.name,
        tagger.version,
        len(docs),
        scores.strict.f1,
        scores.relaxed.f1,
        result["tokens_per_second"] or 0.0,
    )
    return result


class _ClinicalResults:
    """The heads' predictions on the tagger's mentions, and the scores (see the module doc)."""

    def __init__(self) -> None:
        self.scores: dict[str, Any] = {}
        self.assertions: dict[str, dict[Span, tuple[str, float]]] = {}
        self.relations: dict[str, list[dict[str, Any]]] = {}

    def annotate(self, doc_id: str, row: dict[str, Any]) -> None:
        """Add assertions to ``row``'s entities and its relations (entity indices into the row)."""
        entities = row["entities"]
        statuses = self.assertions.get(doc_id)
        if statuses is not None:
            for e in entities:
                status, score = statuses[Span(e["start"], e["end"], e["label"])]
                e["assertion"], e["assertion_score"] = status, score
        if doc_id in self.relations:
            row["relations"] = self.relations[doc_id]


def _clinical(
    heads: ClinicalHeads, docs: Sequence[Document], pred: dict[str, list[Span]], out_dir: Path
) -> _ClinicalResults:
    from medner_udf.evaluation import clinical as c

    out = _ClinicalResults()
    tables = []
    mentions = {doc_id: sorted(set(spans)) for doc_id, spans in pred.items()}
    if heads.assertion is not None:
        model = heads.assertion
        gold = c.gold_assertions(docs)
        on_gold = c.score_assertions(gold, c.predict_assertions(model, docs))
        results = model.classify([d.text for d in docs], [mentions[d.doc_id] for d in docs])
        predicted = {
            d.doc_id: [(s, a.status) for s, a in zip(mentions[d.doc_id], res, strict=True)]
            for d, res in zip(docs, results, strict=True)
        }
        end_to_end = c.score_assertions(gold, predicted)
        out.assertions = {
            d.doc_id: {s: (a.status, a.score) for s, a in zip(mentions[d.doc_id], res, strict=True)}
            for d, res in zip(docs, results, strict=True)
        }
        out.scores["assertion"] = {
            "model": f"{model.name}/{model.version}",
            "gold_mentions": on_gold.to_dict(),
            "end_to_end": end_to_end.to_dict(),
        }
        tables += [
            c.format_clinical_table("assertion (gold mentions)", on_gold, "accuracy"),
            c.format_clinical_table("assertion (end to end)", end_to_end, "all"),
        ]
    if heads.relations is not None:
        model = heads.relations
        gold_rel = c.gold_relations(docs)
        on_gold = c.score_relations(gold_rel, c.predict_relations(model, docs), model.types)
        results = model.relations([d.text for d in docs], [mentions[d.doc_id] for d in docs])
        predicted_rel = {
            d.doc_id: [Relation(mentions[d.doc_id][r.head], mentions[d.doc_id][r.tail], r.type) for r in res]
            for d, res in zip(docs, results, strict=True)
        }
        end_to_end = c.score_relations(gold_rel, predicted_rel, model.types)
        out.relations = {
            d.doc_id: [{"head": r.head, "tail": r.tail, "type": r.type, "score": r.score} for r in res]
            for d, res in zip(docs, results, strict=True)
        }
        out.scores["relations"] = {
            "model": f"{model.name}/{model.version}",
            "gold_mentions": on_gold.to_dict(),
            "end_to_end": end_to_end.to_dict(),
        }
        tables += [
            c.format_clinical_table("relations (gold mentions)", on_gold),
            c.format_clinical_table("relations (end to end)", end_to_end),
        ]
    (out_dir / CLINICAL_FILE).write_text("\n".join(tables), encoding="utf-8")
    return out


def evaluate_path(
    model_dir: Path | str,
    corpus_dir: Path | str,
    split: str,
    out_dir: Path | str,
    batch_size: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Load the artifact in ``model_dir`` (with the heads attached to it) and evaluate it on ``split``."""
    from medner_udf.clinical.base import load_heads
    from medner_udf.taggers.base import load_tagger

    if split not in ("train", "dev", "test", "all"):
        raise ValueError(f"split must be train, dev, test or all, got {split!r}")
    tagger = load_tagger(model_dir, device=device)
    docs = read_corpus(corpus_dir, split)
    heads = load_heads(model_dir, tagger.entity_types)
    return evaluate_tagger(tagger, docs, Path(out_dir), batch_size=batch_size, split=split, heads=heads)
