"""Building an ensemble artifact from trained taggers: weights chosen on dev, test scored once.

The members are trained already (each by the one engine, ``medner train``); what is fitted here is
only the weight of each member's potentials (``medner_udf.taggers.ensemble``). Candidate weights are
scored on the dev split from the members' dev emissions, computed once; the best dev strict F1
wins; test is scored once with the chosen weights. Metrics and model card follow the training
engine's (one schema).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medner_udf.corpus.maccrobat import corpus_path
from medner_udf.corpus.splits import split_documents
from medner_udf.evaluation.scoring import score_spans
from medner_udf.taggers.artifact import CARD_FILE, ArtifactError, new_version
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.ensemble import EnsembleTagger
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.training.card import scores_and_limits
from medner_udf.training.loop import METRICS_SCHEMA, TrainResult, gold_spans, predict_spans

log = logging.getLogger(__name__)

GRID_STEP = 0.1


def weight_grid(n_members: int, step: float = GRID_STEP) -> list[tuple[float, ...]]:
    """Weight vectors on a simplex grid (each a multiple of ``step``, summing to 1, none zero)."""
    units = round(1 / step)
    return [
        tuple(u / units for u in combo)
        for combo in itertools.product(range(1, units), repeat=n_members)
        if sum(combo) == units
    ]


def build_ensemble(
    member_dirs: Sequence[Path | str],
    *,
    name: str,
    version: str | None = None,
    weights: Sequence[float] | None = None,
    output_dir: Path | str = "models",
    corpus: Path | str | None = None,
    evaluate_test: bool = True,
    batch_size: int | None = None,
) -> TrainResult:
    """Load the members, choose weights on dev (unless given), save the ensemble artifact."""
    started = time.monotonic()
    members: list[NeuralTagger] = []
    for folder in member_dirs:
        member = load_tagger(folder, device="cpu")
        if not isinstance(member, NeuralTagger):
            raise ArtifactError(
                f"{folder} is a {member.kind} tagger; ensemble members must be neural (CRF) taggers"
            )
        members.append(member)
    _, dev_docs, test_docs = split_documents(corpus_path(corpus), "dice")
    dev_texts = [d.text for d in dev_docs]
    dev_gold = gold_spans(dev_docs)
    per_member = [m.note_emissions(dev_texts, batch_size) for m in members]
    candidates = [tuple(weights)] if weights is not None else weight_grid(len(members))
    grid: list[dict[str, Any]] = []
    best: tuple[float, tuple[float, ...]] | None = None
    for candidate in candidates:
        ensemble = EnsembleTagger.create(members, candidate, name=name, version="dev")
        predicted = ensemble.tag_with(dev_texts, per_member)
        f1 = score_spans(
            dev_gold, {d.doc_id: [e.span for e in ents] for d, ents in zip(dev_docs, predicted, strict=True)}
        ).strict.f1
        grid.append({"weights": list(candidate), "dev_strict_f1": f1})
        log.info("weights %s: dev strict F1 %.4f", candidate, f1)
        if best is None or f1 > best[0]:
            best = (f1, candidate)
    assert best is not None
    version = version or new_version()
    ensemble = EnsembleTagger.create(members, best[1], name=name, version=version)
    metrics: dict[str, Any] = {
        "schema": METRICS_SCHEMA,
        "model": {"kind": ensemble.kind, "name": name, "version": version},
        "members": [
            {"kind": m.kind, "name": m.name, "version": m.version, "source": str(folder)}
            for m, folder in zip(members, member_dirs, strict=True)
        ],
        "weights": list(best[1]),
        "weight_grid": grid,
        "data": {
            "corpus": "MACCROBAT2020",
            "split": "DICE 160/20/20 document split",
            "dev_docs": len(dev_docs),
        },
        "build_minutes": round((time.monotonic() - started) / 60, 2),
        "dev": score_spans(dev_gold, predict_spans(ensemble, dev_docs)).to_dict(),
    }
    if evaluate_test:
        metrics["test"] = score_spans(gold_spans(test_docs), predict_spans(ensemble, test_docs)).to_dict()
    ensemble.metrics = metrics
    artifact_dir = ensemble.save(Path(output_dir) / name / version)
    (artifact_dir / CARD_FILE).write_text(ensemble_card(metrics), encoding="utf-8")
    log.info("wrote %s", artifact_dir)
    return TrainResult(ensemble, artifact_dir, metrics)


def ensemble_card(metrics: dict[str, Any]) -> str:
    """The model card of an ensemble: its members and weights, then the shared score sections."""
    members = [
        f"- {m['kind']} `{m['name']}/{m['version']}`, weight {w:g}"
        for m, w in zip(metrics["members"], metrics["weights"], strict=True)
    ]
    best = max(metrics["weight_grid"], key=lambda row: row["dev_strict_f1"])
    lines = [
        f"# {metrics['model']['name']} {metrics['model']['version']}",
        "",
        f"Kind: ensemble of {len(members)} CRF taggers over the same tags. Their word emissions and CRF "
        "scores are summed with the weights below (a product of experts) and decoded as one "
        "constrained CRF over whole notes.",
        *members,
        f"- Weights chosen on the DICE dev split from {len(metrics['weight_grid'])} candidates (best dev "
        f"strict F1 {best['dev_strict_f1']:.4f}); each member's own card is in members/<i>/.",
    ]
    return (
        "\n".join(lines + scores_and_limits(metrics.get("dev"), metrics.get("test"), chosen="the weights"))
        + "\n"
    )
