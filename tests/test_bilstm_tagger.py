"""The BiLSTM-CNN-CRF tagger: overfitting, save/load, batching, artifact validation, long notes."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
from medner_udf.text.scheme import tag_set


@pytest.fixture(scope="module")
def trained(train_tiny_bilstm: Callable[..., BiLstmCnnCrfTagger]) -> BiLstmCnnCrfTagger:
    return train_tiny_bilstm()


def test_bilstm_overfits_a_few_notes(trained: BiLstmCnnCrfTagger, tiny_ner_docs: list[Document]) -> None:
    docs = tiny_ner_docs
    notes = [d.text for d in docs]
    predicted = trained.tag(notes)
    for doc, entities in zip(docs, predicted, strict=True):
        assert {e.span for e in entities} == set(doc.mentions)
        for e in entities:
            assert doc.text[e.begin : e.end] == e.text
            assert 0.5 < e.score <= 1.0


def test_bilstm_save_load_identical_predictions(
    trained: BiLstmCnnCrfTagger, tmp_path: Path, tiny_ner_docs: list[Document]
) -> None:
    docs = tiny_ner_docs
    notes = [d.text for d in docs]
    trained.save(tmp_path / "artifact")
    loaded = load_tagger(tmp_path / "artifact", device="cpu")
    assert isinstance(loaded, BiLstmCnnCrfTagger)
    before = trained.tag(notes)
    after = loaded.tag(notes)
    assert [[e.span for e in ents] for ents in before] == [[e.span for e in ents] for ents in after]
    for b_ents, a_ents in zip(before, after, strict=True):
        for b, a in zip(b_ents, a_ents, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3)  # GloVe rows are stored in fp16
    # Nothing but the artifact's own files is needed, and no pickle is among them.
    names = sorted(p.name for p in (tmp_path / "artifact").iterdir())
    assert names == ["artifact.json", "config.json", "model.safetensors", "vocab.json"]


def test_bilstm_batched_equals_one_at_a_time(
    trained: BiLstmCnnCrfTagger, tiny_ner_docs: list[Document]
) -> None:
    docs = tiny_ner_docs
    notes = [d.text for d in docs]
    texts = [*notes, "", "   \n ", "Chest pain.\nAspirin daily.\r\nCT of the abdomen."]
    batched = trained.tag(texts, batch_size=3)
    single = [trained.tag([t], batch_size=1)[0] for t in texts]
    assert [[e.span for e in x] for x in batched] == [[e.span for e in x] for x in single]
    # Scores agree to float32 rounding: the character features do not depend on the batch
    # (masked pooling); the LSTM's and the CRF's sums only run over other shapes.
    for xs, ys in zip(batched, single, strict=True):
        assert [e.score for e in xs] == pytest.approx([e.score for e in ys], abs=1e-5)
    assert batched[4] == [] and batched[5] == []


def test_bilstm_long_note_is_never_truncated(trained: BiLstmCnnCrfTagger) -> None:
    # Far longer than one segment, one line with no sentence punctuation: every piece is tagged.
    text = " ".join(["chest pain"] * 400) + " aspirin"
    entities = trained.tag([text])[0]
    assert entities, "expected entities"
    assert max(e.end for e in entities) == len(text)  # the last word was tagged
    assert all(text[e.begin : e.end] == e.text for e in entities)


def test_bilstm_unseen_words_use_pretrained_vectors(trained: BiLstmCnnCrfTagger) -> None:
    assert trained.tuned_words.get("unseen") == 1  # UNK in the trainable table
    assert trained.words.get("unseen") > 1  # but a real row in the frozen GloVe table


def test_bilstm_config_mismatch_fails_fast(trained: BiLstmCnnCrfTagger, tmp_path: Path) -> None:
    directory = trained.save(tmp_path / "broken")
    config = json.loads((directory / "config.json").read_text())
    config["lstm_hidden"] = 64
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"do not match the network that .*config\.json describes"):
        load_tagger(directory, device="cpu")
    config["no_such_key"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="unknown config keys"):
        load_tagger(directory, device="cpu")


def test_bilstm_vocabulary_mismatch_fails_fast(trained: BiLstmCnnCrfTagger, tmp_path: Path) -> None:
    directory = trained.save(tmp_path / "vocab")
    vocab = json.loads((directory / "vocab.json").read_text())
    vocab["chars"] = vocab["chars"][:-1]
    (directory / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ArtifactError, match="char vocabulary"):
        load_tagger(directory, device="cpu")


def test_bilstm_rejects_non_string_input(trained: BiLstmCnnCrfTagger) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        trained.tag(["fine", None])  # type: ignore[list-item]


@pytest.mark.parametrize("layers", [1, 2])
def test_bilstm_layer_matches_packed_bidirectional_lstm(layers: int) -> None:
    """The unpacked BiLstm computes exactly what nn.LSTM(bidirectional=True) computes on a
    PackedSequence (the layout of earlier artifacts, whose weights it loads under their old names),
    on every real step of a batch of unequal lengths."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from medner_udf.models.bilstm_cnn_crf import BiLstm

    torch.manual_seed(layers)
    ref = torch.nn.LSTM(7, 5, num_layers=layers, batch_first=True, bidirectional=True).eval()
    new = BiLstm(7, 5, layers, dropout=0.3).eval()
    new.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 6, 7)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None] < lengths[:, None]
    packed, _ = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    want, _ = pad_packed_sequence(packed, batch_first=True, total_length=6)
    got = new(x, mask)
    torch.testing.assert_close(got[mask], want[mask], atol=1e-6, rtol=1e-5)


def test_bilstm_training_words_beyond_the_glove_cut_keep_their_vectors(
    tiny_ner_docs: list[Document], fake_glove: tuple[list[str], np.ndarray]
) -> None:
    """The artifact keeps the first ``glove_limit`` GloVe rows plus every training word GloVe knows
    further down the list, with that word's own vector; rarer GloVe words that are not training
    words stay out."""
    docs = tiny_ner_docs
    words, vectors = fake_glove  # the, man, pain, chest, of, aspirin, daily, mass, unseen
    sentences, _ = to_sentences(docs)
    tags = tag_set(sorted({m.label for d in docs for m in d.mentions}))
    tagger = BiLstmCnnCrfTagger.create(
        "m", "v", tags, [s.tokens for s in sentences], words, vectors, glove_limit=3
    )
    table = tagger.net.pretrained.weight.detach().numpy()
    for word in ("the", "man", "pain", "aspirin", "daily", "mass", "chest", "of"):
        row = tagger.words.get(word)
        assert row > 1, word
        np.testing.assert_allclose(table[row], vectors[words.index(word)])
    assert tagger.words.get("unseen") == 1  # beyond the cut and not a training word


def test_bilstm_array_inference_equals_the_token_by_token_encoding(
    trained: BiLstmCnnCrfTagger, tiny_ner_docs: list[Document]
) -> None:
    docs = tiny_ner_docs
    notes = [d.text for d in docs]
    # Inference encodes every note of a call at once from code-point arrays; training encodes
    # segments token by token (encode). The network must see the same ids either way.
    from medner_udf.taggers.neural import EmissionBatch

    texts = [
        *notes,
        "",
        "  \n ",
        "Supercalifragilisticexpialidocious-antidisestablishmentarianism 5mg\r\nµg ≥ 10\U0001f600 ok",
        "chest pain. " * 40,
    ]
    seen: list[tuple[torch.Tensor, ...]] = []
    forward = trained.net.forward

    def spy(words: torch.Tensor, tuned: torch.Tensor, chars: torch.Tensor, mask: torch.Tensor) -> object:
        seen.append((words, tuned, chars, mask))
        return forward(words, tuned, chars, mask)

    trained.net.forward = spy  # type: ignore[method-assign]
    try:
        batches: list[EmissionBatch] = list(trained.emission_batches(texts, 5))
    finally:
        trained.net.forward = forward  # type: ignore[method-assign]
    for batch, (words, tuned, chars, mask) in zip(batches, seen, strict=True):
        segments = []
        for row, note in enumerate(batch.notes):
            n = int(mask[row].sum())
            by_offset = {(t.begin, t.end): t for seg in trained.segments(texts[note]) for t in seg}
            segments.append(
                [by_offset[(b, e)] for b, e in zip(batch.begins[row, :n], batch.ends[row, :n], strict=True)]
            )
        want = trained.encode(segments)
        for got_t, want_t in (
            (words, want.words),
            (tuned, want.tuned),
            (chars, want.chars),
            (mask, want.mask),
        ):
            assert torch.equal(got_t, want_t)
    assert sum(len(b.notes) for b in batches) == sum(len(trained.segments(t)) for t in texts)


# A short segment, and a neighbour whose long word widens its batch's character padding.
SEGMENT, NEIGHBOUR = "Aspirin for chest pain", "Supercalifragilisticexpialidocious pain"


def _unmasked(tagger: BiLstmCnnCrfTagger) -> BiLstmCnnCrfTagger:
    """A copy of ``tagger`` pooling over the padding too, as artifacts saved before the setting do."""
    legacy = copy.deepcopy(tagger)
    legacy.net.config = dataclasses.replace(tagger.config, char_pool_masked=False)
    return legacy


def _emissions_beside(tagger: BiLstmCnnCrfTagger, segment: str, neighbour: str | None) -> torch.Tensor:
    """The emissions of ``segment``'s tokens, encoded alone or in one batch beside ``neighbour``."""
    from medner_udf.text.tokens import tokenize

    rows = [tokenize(segment)] + ([tokenize(neighbour)] if neighbour else [])
    enc = tagger.encode(rows)
    with torch.no_grad():
        emissions, _ = tagger.net(enc.words, enc.tuned, enc.chars, enc.mask)
    return emissions[0, : len(rows[0])]


def test_bilstm_a_words_features_do_not_depend_on_its_batch(trained: BiLstmCnnCrfTagger) -> None:
    # The character CNN pools over a word's own characters only: a neighbour with a long word
    # (which widens the batch's character padding) changes nothing.
    assert trained.config.char_pool_masked
    alone = _emissions_beside(trained, SEGMENT, None)
    beside = _emissions_beside(trained, SEGMENT, NEIGHBOUR)
    torch.testing.assert_close(beside, alone, atol=1e-5, rtol=0)
    # Pooling over the padding (what artifacts saved before the setting do) is what made them differ.
    legacy = _unmasked(trained)
    gap = (_emissions_beside(legacy, SEGMENT, NEIGHBOUR) - _emissions_beside(legacy, SEGMENT, None)).abs()
    assert float(gap.max()) > 1e-3


def test_bilstm_artifacts_saved_before_masked_pooling_keep_their_behaviour(
    trained: BiLstmCnnCrfTagger, tmp_path: Path
) -> None:
    directory = trained.save(tmp_path / "old")
    assert load_tagger(directory, device="cpu").config.char_pool_masked  # type: ignore[attr-defined]
    config = json.loads((directory / "config.json").read_text())
    del config["char_pool_masked"]  # as an artifact written before the setting existed
    (directory / "config.json").write_text(json.dumps(config))
    old = load_tagger(directory, device="cpu")
    assert isinstance(old, BiLstmCnnCrfTagger)
    assert not old.config.char_pool_masked
    torch.testing.assert_close(
        _emissions_beside(old, SEGMENT, NEIGHBOUR),
        _emissions_beside(_unmasked(trained), SEGMENT, NEIGHBOUR),
        atol=1e-3,
        rtol=0,
    )
