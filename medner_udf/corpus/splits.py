"""Seeded random document splits, for the mirror of the seed study's Table I protocol.

The seed study split its one-row-per-document copy of MACCROBAT2020 90/10 at random. medner's own
figures use the fixed DICE split (``maccrobat.split_ids``); this module makes the random kind,
reproducibly, so a model can be scored on several random splits (20 test documents vary a lot, so
report the mean over several split seeds).

``random_split(ids, seed)`` first takes ``test_fraction`` of the documents as test, then carves dev out
of the **rest** (``dev_fraction`` of the non-test part), so choosing epochs on dev never sees a test
document. With 200 documents and the defaults: 20 test, 18 dev, 162 train.

The order is a SHA-256 of ``"<seed>:<doc id>"`` for every id, not a pseudo-random generator's
shuffle: the same seed gives the same split on any Python or NumPy version and whatever order the ids
arrive in, and a document's place depends on nothing but its id and the seed. Split by document
only, never by sentence (NOTES.md: near-duplicate documents would leak between sides).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from medner_udf.corpus.maccrobat import Document, read_corpus


def _rank(seed: int, doc_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()


def _share(n: int, fraction: float) -> int:
    """``fraction`` of ``n`` rounded half up, at least 1 when the fraction is positive."""
    return max(1, int(n * fraction + 0.5)) if fraction > 0 else 0


def random_split(
    doc_ids: Iterable[str], seed: int, test_fraction: float = 0.1, dev_fraction: float = 0.1
) -> tuple[list[str], list[str], list[str]]:
    """(train, dev, test) document ids, each sorted; a partition of ``doc_ids`` (see the module doc).

    ``test_fraction`` is a share of all documents; ``dev_fraction`` a share of what is left after
    test (0 gives an empty dev list). Duplicate ids, fractions outside [0, 1) and splits that leave
    train empty are ValueErrors.
    """
    ids = list(doc_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"doc_ids holds {len(ids) - len(set(ids))} duplicate ids; a split needs unique ids")
    for name, fraction in (("test_fraction", test_fraction), ("dev_fraction", dev_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    order = sorted(ids, key=lambda doc_id: _rank(seed, doc_id))
    n_test = _share(len(order), test_fraction)
    n_dev = _share(len(order) - n_test, dev_fraction)
    if len(order) - n_test - n_dev < 1:
        raise ValueError(
            f"{len(order)} documents leave no training documents with test_fraction={test_fraction} "
            f"and dev_fraction={dev_fraction}"
        )
    test = sorted(order[:n_test])
    dev = sorted(order[n_test : n_test + n_dev])
    train = sorted(order[n_test + n_dev :])
    return train, dev, test


def split_documents(root: Path | str, split: str) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, dev, test) documents of a named split: ``dice`` (the published 160/20/20 split) or
    ``random-<seed>`` (``random_split`` over every document of the corpus)."""
    if split == "dice":
        return read_corpus(root, "train"), read_corpus(root, "dev"), read_corpus(root, "test")
    prefix, _, seed = split.partition("-")
    if prefix != "random" or not seed.isdigit():
        raise ValueError(f"split must be 'dice' or 'random-<seed>', got {split!r}")
    docs = {d.doc_id: d for d in read_corpus(root, "all")}
    train, dev, test = random_split(docs, int(seed))
    return [docs[i] for i in train], [docs[i] for i in dev], [docs[i] for i in test]
