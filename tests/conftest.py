"""Fixtures shared by the whole suite (spaCy's convention: one top-level conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from medner_udf.corpus.maccrobat import Document, read_corpus

# The corpus lives beside every checkout (never inside it); tests that need it skip when it is absent.
_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "maccrobat" / "MACCROBAT2020"

# Hand-made brat documents: (text, T lines as (type, begin, end)). tests/test_corpus_reader.py checks
# the offsets against hand-written surface strings, so a typo here fails loudly.
TINY_DOCS: dict[str, tuple[str, list[tuple[str, int, int]]]] = {
    "1001": (
        "A 45-year-old man had chest pain.\nAspirin was given.\n",
        [("Age", 2, 13), ("Sex", 14, 17), ("Sign_symptom", 22, 32), ("Medication", 34, 41)],
    ),
    "1002": (
        "CT showed a mass in the liver.\n",
        [("Diagnostic_procedure", 0, 2), ("Sign_symptom", 12, 16), ("Biological_structure", 24, 29)],
    ),
    "1003": (
        "She denied fever.\n",
        [("Sex", 0, 3), ("Sign_symptom", 11, 16)],
    ),
    "1004": ("No findings today.\n", []),
}


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The real MACCROBAT2020 folder, or skip the test when it is not beside the checkout."""
    if not (_CORPUS.is_dir() and any(_CORPUS.glob("*.ann"))):
        pytest.skip(f"MACCROBAT2020 corpus not found at {_CORPUS}")
    return _CORPUS


@pytest.fixture(scope="session")
def corpus_docs(corpus_dir: Path) -> list[Document]:
    """All 200 documents of the real corpus, read once per test session."""
    return read_corpus(corpus_dir, "all")


def write_brat(folder: Path, doc_id: str, text: str, ann: str | None) -> Path:
    """Write ``<doc_id>.txt`` and (unless ``ann`` is None) ``<doc_id>.ann`` byte for byte."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{doc_id}.txt").write_bytes(text.encode("utf-8"))
    if ann is not None:
        (folder / f"{doc_id}.ann").write_bytes(ann.encode("utf-8"))
    return folder / f"{doc_id}.txt"


@pytest.fixture
def brat_writer() -> Callable[[Path, str, str, str | None], Path]:
    """``write_brat(folder, doc_id, text, ann)``: writes a brat pair without newline translation."""
    return write_brat


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of four small hand-made brat documents (see ``TINY_DOCS``); one has no mentions.

    Session-scoped: treat it as read-only (write new fixtures into ``tmp_path`` instead).
    """
    folder = tmp_path_factory.mktemp("tiny_corpus")
    for doc_id, (text, mentions) in TINY_DOCS.items():
        lines = []
        for n, (label, begin, end) in enumerate(mentions, start=1):
            lines.append(f"T{n}\t{label} {begin} {end}\t{text[begin:end]}")
        write_brat(folder, doc_id, text, "\n".join(lines) + ("\n" if lines else ""))
    return folder


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: the suite's models are tiny, and on a shared 2-core machine extra
    threads only add synchronisation cost."""
    try:
        import torch
    except ImportError:  # the Airflow environment runs the DAG test without torch
        return
    torch.set_num_threads(1)
