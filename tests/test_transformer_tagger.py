"""TransformerTagger on tiny randomly initialised encoders of each family, built offline.

Every encoder here is a real Hugging Face checkpoint folder (config + safetensors + tokenizer files)
written by the test, so ``TransformerTagger.create`` walks the same path as with MiniLM.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medner_udf.taggers.transformer as transformer_module
from medner_udf.corpus.maccrobat import Document
from medner_udf.models.transformer import TransformerConfig
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.scheme import tag_set
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Span
from medner_udf.training.transformer import build_training_data

pytest.importorskip("transformers")

# Sentences with their mentions as (surface, label); offsets are found in the text.
SENTENCES: list[tuple[str, list[tuple[str, str]]]] = [
    ("A 45-year-old man had chest pain.", [("45-year-old", "Age"), ("man", "Sex"), ("chest pain", "Sign")]),
    ("Aspirin 5mg was given daily.", [("Aspirin", "Med"), ("5mg", "Dose")]),
    ("CT showed a mass in the liver.", [("CT", "Proc"), ("mass", "Sign")]),
    ("She denied fever and chest pain.", [("She", "Sex"), ("fever", "Sign"), ("chest pain", "Sign")]),
]
TYPES = sorted({label for _, ms in SENTENCES for _, label in ms})

# Each has a tiny configuration in conftest.py's make_encoder_dir.
FAMILIES = ("bert", "deberta-v2", "distilbert", "mpnet", "roberta")


def make_doc(doc_id: str, lines: Sequence[tuple[str, list[tuple[str, str]]]]) -> Document:
    text = "\n".join(s for s, _ in lines) + "\n"
    mentions: list[Span] = []
    offset = 0
    for sentence, ms in lines:
        cursor = 0
        for surface, label in ms:
            begin = sentence.index(surface, cursor)
            mentions.append(Span(offset + begin, offset + begin + len(surface), label))
            cursor = begin + len(surface)
        offset += len(sentence) + 1
    return Document(doc_id, text, tuple(sorted(mentions)))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine thread hand-offs
    dominate: one thread is several times faster here. Restored afterwards for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoders(tiny_encoder: Callable[[str], Path]) -> Callable[[str], Path]:
    return tiny_encoder


def overfit(tagger: TransformerTagger, docs: Sequence[Document], steps: int = 120) -> None:
    """Fit the tiny model on ``docs`` (all windows in one batch) with a high learning rate."""
    torch.manual_seed(0)
    data, _ = build_training_data(tagger, docs, 128, pack=True)
    optim = torch.optim.AdamW(tagger.net.parameters(), lr=3e-3, weight_decay=0.0)
    tagger.net.train()
    batch = tagger.collate(data.notes, data.windows, data.tag_ids)
    for _ in range(steps):
        _, loss = tagger.net(**batch)
        assert loss is not None
        optim.zero_grad()
        loss.backward()
        optim.step()
    tagger.net.eval()


def new_tagger(encoders: Callable[[str], Path], family: str, **kw: Any) -> TransformerTagger:
    torch.manual_seed(0)
    return TransformerTagger.create(
        encoders(family), tag_set(TYPES), TransformerConfig(**kw), name="tiny", version="1"
    ).to("cpu")


@pytest.fixture(scope="module")
def fitted_bert(encoders: Callable[[str], Path]) -> TransformerTagger:
    tagger = new_tagger(encoders, "bert")
    overfit(tagger, [make_doc("d1", SENTENCES)])
    return tagger


def spans(tagger: TransformerTagger, text: str) -> list[Span]:
    return [e.span for e in tagger.tag([text])[0]]


# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transformer_overfits_each_family(encoders: Callable[[str], Path], family: str) -> None:
    doc = make_doc("d1", SENTENCES)
    tagger = new_tagger(encoders, family)
    before = spans(tagger, doc.text)
    overfit(tagger, [doc])
    assert spans(tagger, doc.text) == list(doc.mentions)
    assert before != list(doc.mentions)  # the untrained model does not get there by chance


def test_transformer_softmax_head_overfits(encoders: Callable[[str], Path]) -> None:
    # Without "5mg": the tiny vocabulary makes it one piece shared by two words, which only the
    # CRF's transitions can tag as B- then E-; a softmax head gives both words the same tag.
    doc = make_doc("d1", [s for s in SENTENCES if "5mg" not in s[0]])
    tagger = new_tagger(encoders, "bert", head="softmax")
    assert tagger.net.crf is None
    overfit(tagger, [doc])
    entities = tagger.tag([doc.text])[0]
    assert [e.span for e in entities] == list(doc.mentions)
    assert all(0.5 < e.score <= 1.0 for e in entities)


def test_transformer_crf_scores_are_probabilities(fitted_bert: TransformerTagger) -> None:
    text = make_doc("d1", SENTENCES).text
    scores = [e.score for e in fitted_bert.tag([text])[0]]
    assert scores and all(0.5 < s <= 1.0 for s in scores)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_transformer_save_load_identical(
    encoders: Callable[[str], Path], tmp_path: Path, family: str
) -> None:
    doc = make_doc("d1", SENTENCES)
    tagger = new_tagger(encoders, family, head="crf" if family == "bert" else "softmax")
    overfit(tagger, [doc], steps=40)  # partly trained: scores away from 1 make the check sharper
    tagger.metrics = {"dev": {"strict": {"f1": 0.5}}}
    out = tagger.save(tmp_path / "artifact")
    assert {"artifact.json", "config.json", "model.safetensors", "metrics.json", "tokenizer"} <= {
        p.name for p in out.iterdir()
    }
    loaded = load_tagger(out, device="cpu")  # through the kind registry, as the extraction job does
    assert isinstance(loaded, TransformerTagger)
    assert loaded.metrics == tagger.metrics
    texts = [doc.text, "Chest pain and fever.", ""]
    before, after = tagger.tag(texts), loaded.tag(texts)
    assert [[e.span for e in r] for r in after] == [[e.span for e in r] for r in before]
    assert np.allclose([e.score for r in after for e in r], [e.score for r in before for e in r], atol=1e-5)


def test_transformer_artifact_config_mismatch_fails_fast(
    fitted_bert: TransformerTagger, tmp_path: Path
) -> None:
    out = fitted_bert.save(tmp_path / "a")
    config = json.loads((out / "config.json").read_text())
    config["encoder"]["hidden_size"] = 48
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="do not match"):
        TransformerTagger.load(out, device="cpu")

    config["encoder"]["hidden_size"] = 32
    config["tags"] = config["tags"][:-1]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="tags"):
        TransformerTagger.load(out, device="cpu")

    config["tags"].append("S-Sign")
    config["windw"] = 12
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="unknown config keys"):
        TransformerTagger.load(out, device="cpu")


def _context_free(tagger: TransformerTagger) -> None:
    """Make every piece's encoding independent of its neighbours and position: attention outputs
    and position embeddings zeroed. Emissions then depend on the word alone, so windowed and
    one-pass emissions must agree exactly if (and only if) stitching is right."""
    with torch.no_grad():
        for name, param in tagger.net.encoder.named_parameters():
            if "attention.output.dense" in name or "position_embeddings" in name:
                param.zero_()


def _with_window(tagger: TransformerTagger, window: int, stride: int) -> TransformerTagger:
    from medner_udf.models.transformer import TransformerTaggerNet

    config = dataclasses.replace(tagger.config, window=window, stride=stride)
    net = TransformerTaggerNet(config)
    net.load_state_dict(tagger.net.state_dict())
    return TransformerTagger(tagger.info, net, tagger.tokenizer).to("cpu")


def test_transformer_windowed_emissions_equal_one_pass(fitted_bert: TransformerTagger) -> None:
    one_pass = _with_window(fitted_bert, 256, 128)
    _context_free(one_pass)
    windowed = _with_window(one_pass, 12, 5)
    text = make_doc("d1", SENTENCES).text
    note = one_pass.encode(text)
    assert len(note.piece_ids) > 3 * windowed.capacity  # really several windows
    assert len(windowed.inference_windows([note])) > 3
    full = one_pass.word_emissions([note])[0]
    parts = windowed.word_emissions([note], batch_size=3)[0]
    assert torch.allclose(full, parts, atol=1e-5)
    assert windowed.tag([text]) == one_pass.tag([text])


def test_transformer_set_stride_changes_only_the_window_step(fitted_bert: TransformerTagger) -> None:
    """A larger stride means fewer windows over a long note; context-free emissions stay identical,
    and a stride that leaves no room (>= the window's capacity + 1) is refused."""
    tagger = _with_window(fitted_bert, 12, 5)
    _context_free(tagger)
    note = tagger.encode(make_doc("d1", SENTENCES).text)
    before = tagger.word_emissions([note])[0]
    n_before = len(tagger.inference_windows([note]))
    tagger.set_stride(9)
    assert tagger.config.stride == 9 and tagger.config.window == 12
    assert len(tagger.inference_windows([note])) < n_before
    assert torch.allclose(tagger.word_emissions([note])[0], before, atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        tagger.set_stride(11)


def test_transformer_offsets_round_trip(fitted_bert: TransformerTagger) -> None:
    texts = [
        "Chest pain\r\n\tand  fever — 5mg ≥ 2 µg\x07 x.",
        "A 45-year-old man had chest pain.\n\nShe denied fever.",
        "   ",
        "",
    ]
    results = fitted_bert.tag(texts)
    assert results[2] == [] and results[3] == []
    assert any(results[:2])
    for text, entities in zip(texts, results, strict=True):
        for e in entities:
            assert text[e.begin : e.end] == e.text
            assert e.text == e.text.strip() and e.text


def test_transformer_encode_maps_words_to_pieces(fitted_bert: TransformerTagger) -> None:
    text = "Aspirin 5mg \x07 given."
    note = fitted_bert.encode(text)
    words = [w.text for w in note.words(text)]
    assert words == ["Aspirin", "5", "mg", "\x07", "given", "."]
    first = note.first_piece.tolist()
    assert first == sorted(first)
    unk = fitted_bert.tokenizer.unk_token_id
    # The BERT normaliser drops the control character: it gets an unk piece of its own.
    assert note.piece_ids[first[3]] == unk and first[3] not in (first[2], first[4])
    # The tiny vocabulary has "5mg" as one piece spanning two words: both words share it.
    pieces = fitted_bert.tokenizer.convert_ids_to_tokens(note.piece_ids.tolist())
    if "5mg" in pieces:
        assert first[1] == first[2]
    else:
        assert first[1] < first[2]


def test_transformer_tag_batches_equal_one_at_a_time(fitted_bert: TransformerTagger) -> None:
    texts = [s for s, _ in SENTENCES] + ["fever", make_doc("d", SENTENCES).text]
    random.Random(0).shuffle(texts)
    together = fitted_bert.tag(texts, batch_size=2)
    alone = [fitted_bert.tag([t])[0] for t in texts]
    assert [[e.span for e in r] for r in together] == [[e.span for e in r] for r in alone]


def test_transformer_tag_rejects_bad_input(fitted_bert: TransformerTagger) -> None:
    with pytest.raises(TypeError, match="sequence of notes"):
        fitted_bert.tag("chest pain")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        fitted_bert.tag(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        fitted_bert.tag(["ok"], batch_size=0)


def test_transformer_create_needs_a_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        TransformerTagger.create(tmp_path, tag_set(TYPES), name="x", version="1")


def test_transformer_window_must_fit_the_encoder(encoders: Callable[[str], Path]) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        new_tagger(encoders, "roberta", window=512)


def test_transformer_artifact_serves_through_the_extraction_udf(
    fitted_bert: TransformerTagger, tmp_path: Path
) -> None:
    # The extraction job's pandas side, loading the model itself from the artifact path (kind
    # registry + per-worker cache), exactly as an executor does; no Spark needed.
    import pandas as pd

    from medner_udf.extraction.executor import TaskConfig, tag_frame
    from medner_udf.extraction.schemas import note_hash

    out = fitted_bert.save(tmp_path / "served")
    text = make_doc("d1", SENTENCES).text
    rows = [("a", text), ("b", " \n "), ("c", "She denied fever.")]
    frame = pd.DataFrame(
        {
            "record_id": [r for r, _ in rows],
            "text": [t for _, t in rows],
            "note_hash": [note_hash(t) for _, t in rows],
            "action": ["tag"] * 3,
            "n_rows": [1] * 3,
        }
    )
    cfg = TaskConfig(artifact=str(out), model_name="tiny", model_version="1", batch_size=2)
    tagged = tag_frame(frame, cfg)
    assert list(tagged.status) == ["ok", "empty", "ok"]
    expected = fitted_bert.tag([t for _, t in rows])
    for (_, note), got, want in zip(rows, tagged.entities, expected, strict=True):
        assert [(e["begin"], e["end"], e["label"]) for e in got] == [(e.begin, e.end, e.label) for e in want]
        assert all(note[e["begin"] : e["end"]] == e["text"] for e in got)
    assert tagged.entities[0]  # the fitted model finds the mentions of its training note


def test_half_precision_checkpoint_is_fine_tuned_in_fp32(
    encoders: Callable[[str], Path], tmp_path: Path
) -> None:
    # Half-precision checkpoints are common on hubs; Adam on fp16 weights loses small updates, so
    # the tagger must hold fp32 master weights whatever the checkpoint stored.
    from transformers import AutoModel, AutoTokenizer

    src = encoders("bert")
    half = tmp_path / "enc-bert-fp16"
    AutoModel.from_pretrained(str(src), dtype=torch.float16).save_pretrained(str(half))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(half))
    tagger = TransformerTagger.create(half, tag_set(TYPES), name="tiny", version="1")
    assert {p.dtype for p in tagger.net.parameters()} == {torch.float32}


def _reference_alignment(tagger: TransformerTagger, text: str) -> tuple[list[int], list[int]]:
    """The word-by-word reading of the alignment rules (align_pieces's doc), as an oracle."""
    enc = tagger.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    out_ids: list[int] = []
    first: list[int] = []
    last_end, j = -1, 0
    for word in tokenize(text):
        while j < len(ids) and spans[j][1] <= word.begin:  # pieces before this word
            out_ids.append(ids[j])
            last_end = spans[j][1]
            j += 1
        if out_ids and last_end > word.begin:
            first.append(len(out_ids) - 1)  # a piece that spans into this word: shared
        else:
            first.append(len(out_ids))
            if not (j < len(ids) and spans[j][0] < word.end):
                out_ids.append(tagger.tokenizer.unk_token_id)  # the tokenizer dropped this word
                last_end = word.end
        while j < len(ids) and spans[j][0] < word.end:  # this word's pieces
            out_ids.append(ids[j])
            last_end = spans[j][1]
            j += 1
    out_ids.extend(ids[j:])
    return out_ids, first


ALIGNMENT_TEXTS = [
    "Aspirin 5mg \x07 given.",
    "",
    "   ",
    "\x07\x08 chest pain\x07",
    "A 45-year-old man had chest pain.\nAspirin 5mg was given daily.\r\nCT: 3cm mass (liver).",
    "µg ≥ 10 \U0001f600 mass",
    "x" * 300 + " fever " + "\x00" * 3,
]


@pytest.mark.parametrize("family", FAMILIES)
def test_transformer_batch_alignment_equals_the_word_by_word_reading(
    encoders: Callable[[str], Path], family: str
) -> None:
    tagger = new_tagger(encoders, family)
    notes = tagger.encode_notes(ALIGNMENT_TEXTS)
    for text, note in zip(ALIGNMENT_TEXTS, notes, strict=True):
        ids, first = _reference_alignment(tagger, text)
        assert note.piece_ids.tolist() == ids, text
        assert note.first_piece.tolist() == first, text
        assert [(t.begin, t.end) for t in note.words(text)] == [(t.begin, t.end) for t in tokenize(text)]


def test_transformer_alignment_with_minilm_on_the_corpus(corpus_docs: list[Document]) -> None:
    from medner_udf.training.pretrained import default_encoder_dir

    tagger = TransformerTagger.create(default_encoder_dir(), tag_set(TYPES), name="minilm", version="0")
    docs = corpus_docs[::10]
    for doc, note in zip(docs, tagger.encode_notes([d.text for d in docs]), strict=True):
        ids, first = _reference_alignment(tagger, doc.text)
        assert note.piece_ids.tolist() == ids and note.first_piece.tolist() == first, doc.doc_id


def test_transformer_cpu_precisions(
    fitted_bert: TransformerTagger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [make_doc("d1", SENTENCES).text, "CT showed a mass in the liver."]
    fp32 = fitted_bert.tag(texts)
    folder = fitted_bert.save(tmp_path / "art")
    for precision in ("bf16", "int8"):
        tagger = TransformerTagger.load(folder, device="cpu", precision=precision)
        assert tagger.precision == precision
        got = tagger.tag(texts)
        # The overfit tiny model is confident: reduced precision must not change what it finds.
        assert [[(e.begin, e.end, e.label) for e in row] for row in got] == [
            [(e.begin, e.end, e.label) for e in row] for row in fp32
        ]
    with pytest.raises(ValueError, match="cannot go back to float"):
        TransformerTagger.load(folder, device="cpu", precision="int8").set_precision("fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        fitted_bert.set_precision("fp16")
    # The artifact's own default applies when it loads on a CPU.
    config = json.loads((folder / "config.json").read_text())
    # ... and names no folder of the machine it was trained on.
    assert "_name_or_path" not in config["encoder"]
    (folder / "config.json").write_text(json.dumps({**config, "cpu_precision": "bf16"}))
    monkeypatch.setattr(transformer_module, "native_bf16", lambda: True)
    assert TransformerTagger.load(folder, device="cpu").precision == "bf16"
    # ... unless the CPU would only emulate bf16 (7x slower than fp32 on an AVX2 machine); an
    # explicit request still stands.
    monkeypatch.setattr(transformer_module, "native_bf16", lambda: False)
    assert TransformerTagger.load(folder, device="cpu").precision == "fp32"
    assert TransformerTagger.load(folder, device="cpu", precision="bf16").precision == "bf16"
