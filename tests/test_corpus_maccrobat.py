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
