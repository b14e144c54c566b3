"""Benchmark of issue 11: assertion and relation models beside their peers, in one run.

On the same gold mentions of one split (default: test; choose anything on ``--split dev``):

- assertion: our linear classifier (trained with each seed on the 160 train documents; also without
  its cue and scope templates, feature set 1, to show what they add), medspaCy's
  ConText and negspacy's NegEx (both optional: ``make peers``; the run says when they are missing);
  per-class F1, macro F1 over {absent, possible}, and mentions per second; and the CPU milliseconds
  per note of our classifier with and without the cue and scope features, timed alternately;
- relations: our pairwise model (each seed) and the nearest-compatible-mention baseline
  (``NearestMentionBaseline``, below); per-type and micro F1;
- with ``--tagger ARTIFACT``: end-to-end figures on that tagger's mentions, and the executor-side cost:
  notes per second of the tagger alone and of tagger + assertion + relations, one thread, and their
  ratio (the job's ratio is at least this: reading, Arrow and writing cost the same in both).

    .venv/bin/python bench/clinical_bench.py                       # test, 3 seeds, peers if installed
    .venv/bin/python bench/clinical_bench.py --split dev --seeds 13
    .venv/bin/python bench/clinical_bench.py --tagger models/maccrobat-bilstm-cnn-crf/<version>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medner_udf.clinical.assertion import AssertionClassifier
from medner_udf.clinical.relations import RELATION_TYPES, RelationExtractor
from medner_udf.corpus.maccrobat import Document, Relation, corpus_path, read_corpus
from medner_udf.evaluation.clinical import (
    ClassScores,
    evaluate_assertion,
    evaluate_relations,
    gold_assertions,
    gold_relations,
    score_assertions,
    score_relations,
)
from medner_udf.taggers.base import Tagger, load_tagger
from medner_udf.text.types import Span
from medner_udf.training.base import load_train_settings
from medner_udf.training.clinical import (
    AssertionTrainSettings,
    RelationTrainSettings,
    train_assertion,
    train_relations,
)

ASSERTION_ROW = ("present", "absent", "possible")

Predicted = dict[str, list[tuple[Span, str]]]


# --------------------------------------------------------------------------------------------------
# Peers: rules run on the same gold mentions.
def _layers(mentions: Sequence[Span]) -> list[list[Span]]:
    """Mentions split into layers without overlaps (spaCy's doc.ents cannot overlap)."""
    layers: list[list[Span]] = []
    for m in sorted(mentions):
        for layer in layers:
            if layer[-1].end <= m.begin:
                layer.append(m)
                break
        else:
            layers.append([m])
    return layers


def _run_spacy_peer(
    docs: Sequence[Document],
    build: Callable[[], tuple[Any, Callable[[Any], Any]]],
    status: Callable[[Any], str],
) -> tuple[Predicted, float]:
    """Statuses from a spaCy pipeline given each note with a layer of gold mentions as doc.ents."""
    nlp, component = build()
    out: Predicted = {}
    started = time.perf_counter()
    for d in docs:
        pairs: list[tuple[Span, str]] = []
        base = nlp(d.text)
        for layer in _layers(d.mentions):
            doc = base.copy()
            ents: list[Any] = []
            kept: list[Span] = []
            for m in layer:
                span = doc.char_span(m.begin, m.end, label=m.label, alignment_mode="expand")
                if span is not None and (not ents or ents[-1].end <= span.start):
                    ents.append(span)
                    kept.append(m)
                else:
                    pairs.append((m, "present"))
            doc.ents = ents
            doc = component(doc)
            pairs += [(m, status(e)) for m, e in zip(kept, doc.ents, strict=True)]
        out[d.doc_id] = pairs
    return out, time.perf_counter() - started


def context_peer(docs: Sequence[Document]) -> tuple[Predicted, float] | None:
    """medspaCy's ConText with its default rules: negated -> absent; uncertain or hypothetical ->
    possible; anything else present."""
    try:
        import spacy
        from medspacy.context import ConText
    except ImportError:
        return None

    def build() -> tuple[Any, Callable[[Any], Any]]:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        return nlp, ConText(nlp)

    def status(e: Any) -> str:
        if e._.is_negated:
            return "absent"
        return "possible" if e._.is_uncertain or e._.is_hypothetical else "present"

    return _run_spacy_peer(docs, build, status)


def negex_peer(docs: Sequence[Document]) -> tuple[Predicted, float] | None:
    """negspacy's NegEx (clinical termset): negated -> absent, else present (it has no uncertainty)."""
    try:
        import spacy
        from negspacy.negation import Negex  # noqa: F401 - registers the "negex" factory
    except ImportError:
        return None

    def build() -> tuple[Any, Callable[[Any], Any]]:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        return nlp, nlp.add_pipe("negex", config={"ent_types": []})

    return _run_spacy_peer(docs, build, lambda e: "absent" if e._.negex else "present")


# --------------------------------------------------------------------------------------------------
# The relation baseline.
@dataclass(frozen=True)
class NearestRule:
    type: str
    head_label: str
    tail_label: str
    head_first: bool  # the usual direction: the head comes before the tail in the text


class NearestMentionBaseline:
    """Per relation type, the (head label, tail label) pair most often seen in training and the usual
    direction; each mention with the head label is linked to the nearest mention with the tail label
    on that side (ties: the closer start)."""

    def __init__(self, train_docs: Sequence[Document], types: Sequence[str] = RELATION_TYPES) -> None:
        self.rules = []
        for t in types:
            pairs = Counter(
                (r.head.label, r.tail.label) for d in train_docs for r in d.relations if r.type == t
            )
            (head, tail), _ = pairs.most_common(1)[0]
            same = [
                r
                for d in train_docs
                for r in d.relations
                if r.type == t and (r.head.label, r.tail.label) == (head, tail)
            ]
            head_first = sum(r.head.begin < r.tail.begin for r in same) * 2 >= len(same)
            self.rules.append(NearestRule(t, head, tail, head_first))

    def predict(self, docs: Sequence[Document]) -> dict[str, list[Relation]]:
        out: dict[str, list[Relation]] = {}
        for d in docs:
            found = []
            for rule in self.rules:
                tails = [m for m in d.mentions if m.label == rule.tail_label]
                for h in (m for m in d.mentions if m.label == rule.head_label):
                    side = [
                        t
                        for t in tails
                        if t != h and (t.begin > h.begin if rule.head_first else t.begin < h.begin)
                    ]
                    if side:
                        nearest = min(side, key=lambda t: abs(t.begin - h.begin))
                        found.append(Relation(h, nearest, rule.type))
            out[d.doc_id] = found
        return out


# --------------------------------------------------------------------------------------------------
def _f1s(scores: ClassScores, names: Sequence[str]) -> list[float]:
    return [scores.per_class[n].f1 if n in scores.per_class else 0.0 for n in names]


def _mean_sd(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f}±{statistics.stdev(values):.3f}"


def _row(name: str, per_seed: Sequence[Sequence[float]], extra: str = "") -> str:
    cols = list(zip(*per_seed, strict=True))
    return f"{name:<34}" + "".join(f"{_mean_sd(c):>14}" for c in cols) + (f"  {extra}" if extra else "")


def _notes_per_second(run: Callable[[], Any], n_notes: int, repeats: int = 2) -> float:
    run()  # warm-up
    best = min(_timed(run) for _ in range(repeats))
    return n_notes / best


def _timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--split", choices=["dev", "test"], default="test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--tagger", type=Path, help="a tagger artifact: end-to-end figures and throughput")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = corpus_path(args.corpus)
    train_docs = read_corpus(root, "train")
    docs = read_corpus(root, args.split)
    a_settings = load_train_settings("assertion")
    r_settings = load_train_settings("relations")
    assert isinstance(a_settings, AssertionTrainSettings) and isinstance(r_settings, RelationTrainSettings)
    n_mentions = sum(len(d.mentions) for d in docs)
    print(f"split {args.split}: {len(docs)} notes, {n_mentions} gold mentions, seeds {args.seeds}\n")

    assertion_models: list[AssertionClassifier] = []
    set1_models: list[AssertionClassifier] = []
    relation_models: list[RelationExtractor] = []
    fit_seconds: list[tuple[float, float]] = []
    set1_spec = replace(a_settings.model, scope_window=0)
    for seed in args.seeds:
        t0 = time.perf_counter()
        assertion_models.append(train_assertion(train_docs, a_settings.model, a_settings.fit, seed=seed))
        t1 = time.perf_counter()
        if a_settings.model.scope_window:
            set1_models.append(train_assertion(train_docs, set1_spec, a_settings.fit, seed=seed))
        relation_models.append(train_relations(train_docs, r_settings.model, r_settings.fit, seed=seed)[0])
        fit_seconds.append((t1 - t0, time.perf_counter() - t1))

    header = f"{'assertion (gold mentions)':<34}" + "".join(
        f"{h:>14}" for h in (*ASSERTION_ROW, "macro(abs,pos)")
    )
    print(header + "  mentions/s\n" + "-" * (len(header) + 12))
    n = len(args.seeds)
    for name, models in (
        (f"medner assertion-linear ({n} seeds)", assertion_models),
        ("  without cue/scope (set 1)", set1_models),
    ):
        if not models:
            continue
        ours = []
        speed = []
        for model in models:
            started = time.perf_counter()
            scores = evaluate_assertion(model, docs)
            speed.append(n_mentions / (time.perf_counter() - started))
            ours.append([*_f1s(scores, ASSERTION_ROW), scores.macro_f1])
        print(_row(name, ours, f"{statistics.mean(speed):,.0f}"))
    gold = gold_assertions(docs)
    for name, peer in (("medspaCy ConText", context_peer), ("negspacy NegEx", negex_peer)):
        result = peer(docs)
        if result is None:
            print(f"{name:<34}  not installed (make peers)")
            continue
        predicted, seconds = result
        scores = score_assertions(gold, predicted)
        print(_row(name, [[*_f1s(scores, ASSERTION_ROW), scores.macro_f1]], f"{n_mentions / seconds:,.0f}"))

    types = list(RELATION_TYPES)
    header = f"{'relations (gold mentions)':<34}" + "".join(f"{t[:13]:>14}" for t in (*types, "micro"))
    print("\n" + header + "\n" + "-" * len(header))
    rel_rows = []
    for extractor in relation_models:
        scores = evaluate_relations(extractor, docs)
        rel_rows.append([*_f1s(scores, types), scores.micro.f1])
    print(_row(f"medner relations-linear ({len(args.seeds)} seeds)", rel_rows))
    baseline = NearestMentionBaseline(train_docs)
    scores = score_relations(gold_relations(docs), baseline.predict(docs), types)
    print(_row("nearest compatible mention", [[*_f1s(scores, types), scores.micro.f1]]))
    for rule in baseline.rules:
        arrow = "after" if rule.head_first else "before"
        print(f"    {rule.type}: each {rule.head_label} -> nearest {rule.tail_label} {arrow} it")
    print(
        "\nfit seconds per seed (assertion, relations): "
        + ", ".join(f"({a:.0f}, {r:.0f})" for a, r in fit_seconds)
    )
    if set1_models:
        _assertion_cost(assertion_models[0], set1_models[0], docs)

    if args.tagger is not None:
        _end_to_end(
            load_tagger(args.tagger, device="cpu"), docs, assertion_models[0], relation_models[0], types
        )
    return 0


def _assertion_cost(
    model: AssertionClassifier, set1: AssertionClassifier, docs: Sequence[Document], repeats: int = 7
) -> None:
    """CPU milliseconds per note of assertion with and without the cue and scope features, timed
    alternately on the same gold mentions (best of ``repeats`` each). CPU time, not wall time: on a
    shared machine wall time mostly measures the wait for a core (one thread: ``main`` sets it)."""
    texts = [d.text for d in docs]
    entities = [list(d.mentions) for d in docs]
    best = {"set 2 (cue/scope)": float("inf"), "set 1": float("inf")}
    for _ in range(repeats):
        for name, m in zip(best, (model, set1), strict=True):
            started = time.process_time()
            m.classify(texts, entities)
            best[name] = min(best[name], time.process_time() - started)
    per_note = {name: 1000 * seconds / len(texts) for name, seconds in best.items()}
    print(
        f"\nassertion CPU ms/note on one thread (best of {repeats}, alternating): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in per_note.items())
        + f"; ratio {per_note['set 2 (cue/scope)'] / per_note['set 1']:.2f}"
    )


def _end_to_end(
    tagger: Tagger,
    docs: Sequence[Document],
    assertion: AssertionClassifier,
    relations: RelationExtractor,
    types: list[str],
) -> None:
    texts = [d.text for d in docs]
    entities = tagger.tag(texts)
    mentions = {d.doc_id: [e.span for e in ents] for d, ents in zip(docs, entities, strict=True)}
    a = score_assertions(
        gold_assertions(docs),
        {
            d.doc_id: [(e.span, r.status) for e, r in zip(ents, res, strict=True)]
            for d, ents, res in zip(docs, entities, assertion.classify(texts, entities), strict=True)
        },
    )
    r = score_relations(
        gold_relations(docs),
        {
            d.doc_id: [Relation(ents[p.head].span, ents[p.tail].span, p.type) for p in res]
            for d, ents, res in zip(docs, entities, relations.relations(texts, entities), strict=True)
        },
        types,
    )
    n_entities = sum(len(m) for m in mentions.values())
    print(f"\nend to end on {tagger.name}/{tagger.version} ({n_entities} predicted entities)")
    print(_row("assertion: present/absent/possible/macro", [[*_f1s(a, ASSERTION_ROW), a.macro_f1]]))
    print(_row("relations: per type, micro", [[*_f1s(r, types), r.micro.f1]]))

    tag_only = _notes_per_second(lambda: tagger.tag(texts), len(texts))

    def full() -> None:
        found = tagger.tag(texts)
        assertion.classify(texts, found)
        relations.relations(texts, found)

    with_heads = _notes_per_second(full, len(texts))
    print(
        f"\nexecutor-side notes/s on one thread: tagger {tag_only:.1f}, tagger + assertion + relations "
        f"{with_heads:.1f}; ratio {with_heads / tag_only:.2f} ({n_entities / len(texts):.0f} entities per note)"
    )


if __name__ == "__main__":
    sys.exit(main())
