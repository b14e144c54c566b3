"""The stacked tagger: a BiLSTM-CNN-CRF over GloVe, characters and a frozen encoder's word vectors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document
from medner_udf.models.bilstm_cnn_crf import BiLstmCnnCrf, BiLstmCnnCrfConfig
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.stacked import CONTEXT_DIR, KIND, StackedTagger
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.scheme import tag_set
from medner_udf.text.tokens import token_bounds
from medner_udf.training.base import load_train_settings
from medner_udf.training.bilstm import sentence_rows
from medner_udf.training.loop import train
from medner_udf.training.stacked import StackedInputs, context_tagger

NOTES_WITH_LINES = [
    "A 45-year-old man presented with chest pain.\nCT of the abdomen showed a 3 cm mass.",
    "She was given aspirin 81 mg daily.\n\nChest pain resolved after aspirin.",
]


def _stacked(
    docs: list[Document], glove: tuple[list[str], np.ndarray], encoder_dir: Path, **options: object
) -> StackedTagger:
    torch.manual_seed(0)
    sentences, _ = to_sentences(docs)
    tags = tag_set(sorted({m.label for d in docs for m in d.mentions}))
    context = TransformerTagger.create(encoder_dir, tags, name="enc", version="v1")
    config = BiLstmCnnCrfConfig(lstm_hidden=16, char_filters=8, char_dim=8, dropout=0.0, context_layers=2)
    words, vectors = glove
    return StackedTagger.create_stacked(
        "stacked", "v1", tags, [s.tokens for s in sentences], words, vectors, context, config, **options
    )


@pytest.fixture
def stacked(
    tiny_ner_docs: list[Document],
    fake_glove: tuple[list[str], np.ndarray],
    tiny_encoder: Callable[[str], Path],
) -> StackedTagger:
    return _stacked(tiny_ner_docs, fake_glove, tiny_encoder("bert"))


def test_a_stacked_tagger_binds_the_encoder_width_and_freezes_the_encoder(stacked: StackedTagger) -> None:
    assert stacked.kind == KIND == "stacked-bilstm-cnn-crf"
    assert stacked.config.context_dim == 32  # the tiny BERT's hidden size
    assert stacked.net.lstm.forward_layers[0].input_size == 8 + 8 + 32  # GloVe, char CNN, encoder
    assert not any(p.requires_grad for p in stacked.context.net.parameters())
    assert all(p.requires_grad for n, p in stacked.net.named_parameters() if n != "pretrained.weight")


def test_the_network_refuses_a_missing_or_unexpected_context(stacked: StackedTagger) -> None:
    enc = stacked.encode([stacked.segments("chest pain")[0]])
    with pytest.raises(ValueError, match="32-wide context vectors"):
        stacked.net(enc.words, enc.tuned, enc.chars, enc.mask)
    plain = BiLstmCnnCrf(
        BiLstmCnnCrfConfig(tags=stacked.config.tags, num_words=9, num_tuned_words=9, num_chars=9)
    )
    with pytest.raises(ValueError, match="without context_dim"):
        plain(enc.words, enc.tuned, enc.chars, enc.mask, context=torch.zeros(1, enc.words.shape[1], 4))


def test_each_word_gets_the_encoder_vector_of_the_same_word_at_inference_and_in_training(
    stacked: StackedTagger, tiny_ner_docs: list[Document]
) -> None:
    docs = [Document(f"n{i}", text, ()) for i, text in enumerate(NOTES_WITH_LINES)]
    docs += tiny_ner_docs
    texts = [d.text for d in docs]
    vectors = stacked.note_context(texts)  # each note's words, in note order
    # Inference: the vector each of the segments' tokens gathers (the last row is the padding's).
    notes = stacked._encode_notes(texts)
    gathered = stacked._context_vectors(texts, notes)
    assert gathered.shape == (len(notes.begins) + 1, 32) and not gathered[-1].any()
    at_inference = {}
    for n, text in enumerate(texts):
        words = token_bounds(text)[0]
        for k in range(int(notes.note_start[n]), int(notes.note_start[n + 1])):
            word = int(np.searchsorted(words, notes.begins[k]))
            torch.testing.assert_close(gathered[k], vectors[n][word])
            at_inference[n, int(notes.begins[k])] = gathered[k]
    # Training: the same segments as examples, each with its rows of the notes' vectors.
    sentences, _ = to_sentences(docs, stacked.max_segment_tokens, stacked.pack_lines)
    assert len(sentences) > len(docs)  # the notes with two lines make two segments each
    rows = sentence_rows(docs, sentences, vectors)
    index = {d.doc_id: n for n, d in enumerate(docs)}
    for sentence in sentences:
        expected = torch.stack([at_inference[index[sentence.doc_id], t.begin] for t in sentence.tokens])
        torch.testing.assert_close(rows[id(sentence)], expected)
    assert sum(len(s.tokens) for s in sentences) == len(at_inference)


def test_the_encoder_vector_is_the_mean_of_its_last_layers_at_the_first_piece(stacked: StackedTagger) -> None:
    text = "She denied fever and chest pain."
    notes = stacked.context.encode_notes([text])
    flat, offsets = stacked.context.flat_word_vectors(notes, layers=2)
    assert flat.shape == (notes[0].n_words + 1, 32) and offsets.tolist() == [0, notes[0].n_words]
    ids = torch.tensor([[stacked.context.tokenizer.cls_token_id, *notes[0].piece_ids.tolist(),
                         stacked.context.tokenizer.sep_token_id]])  # fmt: skip
    with torch.inference_mode():
        states = stacked.context.net.encoder(input_ids=ids, output_hidden_states=True).hidden_states
    expected = torch.stack(states[-2:]).mean(dim=0)[0, torch.from_numpy(notes[0].first_piece) + 1]
    torch.testing.assert_close(flat[:-1], expected, rtol=1e-4, atol=1e-5)
    assert not flat[-1].any()  # the padding row


def test_a_stacked_artifact_loads_and_tags_as_saved(stacked: StackedTagger, tmp_path: Path) -> None:
    folder = stacked.save(tmp_path / "stacked" / "v1")
    assert json.loads((folder / "artifact.json").read_text())["kind"] == KIND
    assert (folder / CONTEXT_DIR / "artifact.json").is_file()
    loaded = load_tagger(folder, device="cpu")
    assert isinstance(loaded, StackedTagger)
    assert not any(p.requires_grad for p in loaded.context.net.parameters())
    texts = NOTES_WITH_LINES
    for a, b in zip(stacked.note_emissions(texts), loaded.note_emissions(texts), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)  # the artifact keeps GloVe in fp16
    for text, entities in zip(texts, loaded.tag(texts), strict=True):
        assert all(text[e.begin : e.end] == e.text for e in entities)
    shutil.rmtree(folder / CONTEXT_DIR)
    with pytest.raises(ArtifactError, match="encoder is missing"):
        load_tagger(folder, device="cpu")


def test_kept_context_vectors_are_reused_and_can_be_dropped(stacked: StackedTagger) -> None:
    calls: list[int] = []
    original = stacked.context.flat_word_vectors

    def counting(notes, layers=1, batch_size=None):  # type: ignore[no-untyped-def]
        calls.append(len(notes))
        return original(notes, layers, batch_size)

    stacked.context.flat_word_vectors = counting  # type: ignore[method-assign]
    stacked.keep_context_vectors(True)
    first = stacked.note_emissions(NOTES_WITH_LINES)
    again = stacked.note_emissions([*NOTES_WITH_LINES[:1], "A new note about fever."])
    assert calls == [2, 1]  # the kept note is not encoded again
    torch.testing.assert_close(first[0], again[0])
    stacked.keep_context_vectors(False)
    stacked.note_emissions(NOTES_WITH_LINES[:1])
    assert calls == [2, 1, 1]


def test_an_encoder_that_is_not_a_transformer_artifact_is_refused(
    train_tiny_bilstm: Callable[..., object], tmp_path: Path
) -> None:
    bilstm = train_tiny_bilstm(epochs=1)
    folder = bilstm.save(tmp_path / "bilstm")  # type: ignore[attr-defined]
    with pytest.raises(ArtifactError, match="not a transformer one"):
        context_tagger(str(folder), ["O"], "x", "v1")


@pytest.mark.slow
def test_medner_trains_a_stacked_tagger_with_a_frozen_encoder(
    corpus_dir: Path, tmp_path: Path, tiny_encoder: Callable[[str], Path]
) -> None:
    encoder = tiny_encoder("bert")
    settings = load_train_settings(
        None,
        profile="stacked",
        overrides={
            "optim.epochs": 2, "data.train_docs": 3, "data.dev_docs": 1, "inputs.glove_words": 2000,
            "model.lstm_hidden": 8, "model.char_filters": 8, "model.context_layers": 2,
            "inputs.encoder": str(encoder), "data.corpus": str(corpus_dir), "run.output_dir": str(tmp_path),
            "run.version": "v1", "run.evaluate_test": False, "run.progress": False, "run.num_threads": 1,
        },
    )  # fmt: skip
    assert isinstance(settings.inputs, StackedInputs) and settings.inputs.encoder == str(encoder)
    artifact = train(settings).artifact_dir
    tagger = load_tagger(artifact, device="cpu")
    assert isinstance(tagger, StackedTagger) and tagger.config.context_layers == 2
    card = (artifact / "MODEL_CARD.md").read_text()
    assert "frozen transformer encoder" in card and "bert, 2 layers, 32 wide, frozen" in card
    # Frozen: the encoder in the artifact is the checkpoint's, weight for weight.
    saved = load_file(str(artifact / CONTEXT_DIR / "model.safetensors"))
    original = load_file(str(encoder / "model.safetensors"))
    for name, value in original.items():
        key = "encoder." + name.removeprefix("bert.")
        if key in saved:
            torch.testing.assert_close(saved[key], value)
    assert sum(("encoder." + n.removeprefix("bert.")) in saved for n in original) >= len(original) - 2
    history = json.loads((artifact / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(h["loss"] > 0 for h in history)


def test_a_stacked_tagger_keeps_the_taggers_contract_on_awkward_notes(stacked: StackedTagger) -> None:
    notes = [
        "",
        "   \n",
        "CT showed a mass; aspirin given.\nChest pain and chest pain.",
        "chest pain. " * 200,  # far more pieces than one encoder window
        "Fever \u00e9\u00e8 \U0001f600 \x00 ctrl\u200b zero-width and \u0661\u0662 digits.",
    ]
    result = stacked.tag(notes, batch_size=3)
    assert len(result) == len(notes) and result[0] == [] and result[1] == []
    for note, entities in zip(notes, result, strict=True):
        assert entities == sorted(entities, key=lambda e: (e.begin, e.end, e.label))
        assert all(note[e.begin : e.end] == e.text and 0.0 <= e.score <= 1.0 for e in entities)
    emissions = stacked.note_emissions(notes)
    assert [len(e) for e in emissions] == [len(token_bounds(n)[0]) for n in notes]
