"""The standard split and corpus statistics on the real MACCROBAT2020 (skipped when it is absent).

The expected figures are NOTES.md's, measured independently of this reader.
"""

from __future__ import annotations

from pathlib import Path

from medner_udf.corpus.maccrobat import DEV_IDS, TEST_IDS, Document, corpus_stats, read_corpus


def test_standard_split_is_20_20_160_and_disjoint(corpus_dir: Path) -> None:
    ids = {split: {d.doc_id for d in read_corpus(corpus_dir, split)} for split in ("train", "dev", "test")}
    assert {k: len(v) for k, v in ids.items()} == {"train": 160, "dev": 20, "test": 20}
    assert not ids["train"] & ids["dev"]
    assert not ids["train"] & ids["test"]
    assert not ids["dev"] & ids["test"]
    assert ids["dev"] == set(DEV_IDS) and ids["test"] == set(TEST_IDS)
    # Spot-check ids from NOTES.md so a typo in the id tuples cannot pass unnoticed.
    assert {"19214295", "28767567"} <= ids["dev"]
    assert {"18258107", "28538413"} <= ids["test"]


def test_corpus_stats_match_notes(corpus_docs: list[Document]) -> None:
    stats = corpus_stats(corpus_docs)
    assert stats.n_documents == 200
    assert stats.n_mentions == 25_189
    assert len(stats.type_counts) == 41
    assert stats.n_discontinuous == 44
    assert stats.n_characters == 565_716
    assert stats.type_counts["Diagnostic_procedure"] == 4_598
    assert stats.type_counts["Mass"] == 2
    assert dict(stats.other_lines) == {"E": 14_368, "R": 16_307, "*": 2_023, "A": 1_416, "#": 335}


def test_every_mention_is_a_stripped_slice(corpus_docs: list[Document]) -> None:
    for doc in corpus_docs:
        for m in doc.mentions:
            surface = doc.text[m.begin : m.end]
            assert surface and surface == surface.strip(), (doc.doc_id, m.begin)


def test_documents_with_mentions_across_line_breaks(corpus_docs: list[Document]) -> None:
    crossing = sum("\n" in d.text[m.begin : m.end] for d in corpus_docs for m in d.mentions)
    assert crossing == 5


def test_clinical_annotation_counts_match_the_issue(corpus_docs: list[Document]) -> None:
    """Issue 11's figures count .ann lines; ours count distinct (head, tail, type) relations. Seven R
    lines repeat another's relation (six MODIFY, one SUB_PROCEDURE), hence MODIFY 11,565 for 11,571."""
    from collections import Counter

    relations: Counter[str] = Counter(r.type for d in corpus_docs for r in d.relations)
    assert dict(relations) == {
        "MODIFY": 11_565,
        "BEFORE": 2_014,
        "SUB_PROCEDURE": 1_374,
        "IDENTICAL": 795,
        "AFTER": 398,
        "CAUSE": 149,
        "CO-OCCURRENCE": 5,
    }
    attributes = Counter((a.name, a.value) for d in corpus_docs for a in d.attributes)
    assert attributes[("POLARITY", "NEG")] == 1_049
    assert attributes[("POLARITY", "UNCERTAIN")] == 152
    assert attributes[("POLARITY", "MAYBE_POS")] == 47
    assert attributes[("POLARITY", "MAYBE_NEG")] == 22
    assert attributes[("POLARITY", "POS")] == 3
    assert attributes[("TREND", "INC")] + attributes[("TREND", "DEC")] + attributes[("TREND", "STAY")] == 143
    assertions = Counter(a for d in corpus_docs for a in d.assertion_labels)
    # absent = NEG + MAYBE_NEG, possible = UNCERTAIN + MAYBE_POS: one attribute per event, one event per mention.
    assert assertions == {"absent": 1_049 + 22, "possible": 152 + 47, "present": 25_189 - 1_071 - 199}
    assert sum(len(d.events) for d in corpus_docs) == 14_368
    assert sum(len(d.overlaps) for d in corpus_docs) == 2_023
