"""The transformer tagger's host path: sub-word pieces from distinct chunks (``taggers.pieces``) are
exactly the tokenizer's own for whole notes, and tagging through them gives the same entities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medner_udf.corpus.maccrobat import Document
from medner_udf.models.transformer import TransformerConfig
from medner_udf.taggers.pieces import ChunkPieces, chunked_encoding_is_exact
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.scheme import tag_set

pytest.importorskip("transformers")

# Text that a chunk-by-chunk reading could get wrong: accents and letters that lowercase to two
# code points, CJK (spaced by the normalizer), emoji, control and zero-width characters (removed),
# Unicode spaces other than the four chunk cuts, a chunk past WordPiece's 100-character limit, the
# literal text of special tokens, and notes that are empty or only whitespace.
HOSTILE = [
    "",
    " ",
    "\n\n",
    "a",
    "Ünïcödé café naïve, a\u0301e\u0301 combining",
    "İstanbul ǅ ß ﬁ",
    "汉字测试 mixed汉字text",
    "emoji 😀👍🏽 x",
    "ctrl\x00\x01\x1c\x7f\u200b\u200d\ufeff chars \ufffd",
    "nbsp\xa0here\u2003em\u3000ideo\u2028line\u2029para\x85nel\x0bvt\x0cff",
    "tab\tcr\rcrlf\r\nlf\n  lead and trail  ",
    "x" * 250 + " " + "ab," * 200,
    "[CLS] [SEP]x [MASK] <s>y</s> <mask>",
    "5mg 10mL q.i.d. x\x1cy\x1dz",
]


def whole_note(backend: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = backend.encode(text, add_special_tokens=False)
    return list(encoding.ids), [tuple(o) for o in encoding.offsets]


def assert_same_as_whole_notes(pieces: ChunkPieces, texts: list[str]) -> None:
    for text, (ids, offsets) in zip(texts, pieces.encode(texts), strict=True):
        want_ids, want_offsets = whole_note(pieces.backend, text)
        assert ids.tolist() == want_ids, repr(text[:40])
        assert [tuple(o) for o in offsets.tolist()] == want_offsets, repr(text[:40])


def minilm_backend() -> Any:
    from transformers import AutoTokenizer

    from medner_udf.training.pretrained import default_encoder_dir

    return AutoTokenizer.from_pretrained(str(default_encoder_dir()), local_files_only=True).backend_tokenizer


def test_chunk_pieces_equal_the_tokenizers_own_on_the_corpus_and_hostile_text(
    corpus_docs: list[Document],
) -> None:
    pieces = ChunkPieces(minilm_backend())
    assert pieces.chunked, "MiniLM's tokenizer is BERT's: normalizer, pre-tokenizer, WordPiece"
    texts = [d.text for d in corpus_docs] + HOSTILE
    assert_same_as_whole_notes(pieces, texts)
    # Distinct chunks only: the corpus repeats most of its chunks.
    n_chunks = sum(len(t.split()) for t in texts)
    assert 0 < len(pieces) < n_chunks / 4
    # A second call reads every chunk from the table and gives the same again.
    known = len(pieces)
    assert_same_as_whole_notes(pieces, texts)
    assert len(pieces) == known


def test_chunk_table_stays_bounded_and_exact_when_it_is_cleared(corpus_docs: list[Document]) -> None:
    pieces = ChunkPieces(minilm_backend(), max_chunks=800, max_chars=6_000)
    texts = [d.text for d in corpus_docs[:40]] + HOSTILE
    for start in range(0, len(texts), 6):
        assert_same_as_whole_notes(pieces, texts[start : start + 6])
        # Cleared before a call that would pass a bound; one call's own chunks may pass it.
        assert len(pieces) <= 800 + sum(len(t.split()) for t in texts[start : start + 6])


@pytest.mark.parametrize(
    ("family", "chunked"),
    [("bert", True), ("distilbert", True), ("mpnet", True), ("roberta", False), ("deberta-v2", True)],
)
def test_chunk_pieces_on_each_family(tiny_encoder: Callable[[str], Path], family: str, chunked: bool) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder(family)), local_files_only=True)
    pieces = ChunkPieces(tokenizer.backend_tokenizer)
    # Byte-level BPE pieces carry the space before a word: note by note for those.
    assert pieces.chunked is chunked
    assert chunked_encoding_is_exact(tokenizer.backend_tokenizer) is chunked
    assert_same_as_whole_notes(pieces, [*HOSTILE, "A 45-year-old man had chest pain.\nAspirin 5mg daily."])


def test_tagging_through_chunks_gives_the_entities_of_whole_note_tokenisation(
    corpus_docs: list[Document],
) -> None:
    """End to end with the real MiniLM encoder and a random head: the same windows, emissions and
    entities whether the pieces come from distinct chunks or from one tokenizer call per note."""
    from medner_udf.training.pretrained import default_encoder_dir

    torch.manual_seed(0)
    types = sorted({m.label for d in corpus_docs for m in d.mentions})
    tagger = TransformerTagger.create(
        default_encoder_dir(), tag_set(types), TransformerConfig(window=128, stride=96), name="t", version="0"
    )
    texts = [d.text[:1500] for d in corpus_docs[:6]] + HOSTILE[4:9]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chunked = tagger.tag(texts, batch_size=8)
        assert tagger._pieces().chunked
        tagger._pieces().chunked = False  # one tokenizer call per note, as before the table
        whole = tagger.tag(texts, batch_size=8)
    finally:
        torch.set_num_threads(before)
    assert chunked == whole
    assert sum(map(len, chunked)) > 0


def test_collate_pads_windows_as_the_network_expects(tiny_encoder: Callable[[str], Path]) -> None:
    tagger = TransformerTagger.create(
        tiny_encoder("bert"), tag_set(["Sign"]), TransformerConfig(window=8, stride=4), name="t", version="0"
    )
    notes = tagger.encode_notes(["chest pain and fever today", "no"])
    windows = tagger.inference_windows(notes)
    batch = tagger.collate(notes, windows)
    cls, sep, pad = tagger._prefix, tagger._suffix, tagger._pad
    for b, w in enumerate(windows):
        row = notes[w.note].piece_ids[w.piece_start : w.piece_end].tolist()
        n = len(row) + 2
        assert batch["input_ids"][b, :n].tolist() == [cls, *row, sep]
        assert (batch["input_ids"][b, n:] == pad).all()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        words = w.word_end - w.word_start
        firsts = notes[w.note].first_piece[w.word_start : w.word_end] - w.piece_start + 1
        assert batch["word_pieces"][b, :words].tolist() == firsts.tolist()
        assert batch["word_mask"][b].tolist() == [True] * words + [False] * (
            batch["word_mask"].shape[1] - words
        )
    # Every word is provided by exactly one window.
    covered = np.zeros(sum(n.n_words for n in notes), dtype=int)
    offsets = np.cumsum([0] + [n.n_words for n in notes])
    for w in windows:
        covered[offsets[w.note] + w.word_start : offsets[w.note] + w.word_end] += 1
    assert (covered == 1).all()
