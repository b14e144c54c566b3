"""Fixtures shared by the whole suite (spaCy's convention: one top-level conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from medner_udf.corpus.maccrobat import Document, read_corpus
from medner_udf.text.types import Span

if TYPE_CHECKING:  # the Airflow venv runs the DAG test with this conftest and without torch
    import numpy as np
    from fake_taggers import RecordingArtifact
    from s3_server import S3Server

    from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger

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


# --------------------------------------------------------------------------------------------------
# Tiny transformer encoders (tests/test_transformer_tagger.py, tests/test_transformer_train.py): real
# Hugging Face checkpoint folders (config + safetensors + tokenizer files) written offline, with
# random weights, so TransformerTagger.create walks the same path as with MiniLM.

# The tokenizers are trained on these sentences (those of tests/test_transformer_tagger.py), so
# every word of that module's notes is in their vocabulary.
TOKENIZER_TEXTS = (
    "A 45-year-old man had chest pain.",
    "Aspirin 5mg was given daily.",
    "CT showed a mass in the liver.",
    "She denied fever and chest pain.",
)

TINY_ENCODER_FAMILIES: dict[str, dict[str, Any]] = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    "roberta": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=260,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ),
    "deberta-v2": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        relative_attention=True,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=-1,
        position_buckets=32,
    ),
    # MPNet's position ids skip its padding id: give it the tiny WordPiece vocabulary's [PAD] (0).
    "mpnet": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, pad_token_id=0
    ),
}


def _tokenizer(family: str, corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "roberta":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.post_processor = processors.ByteLevel(trim_offsets=True)
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        bpe.train_from_iterator(
            corpus,
            trainers.BpeTrainer(
                vocab_size=200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            ),
        )
        return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=bpe,
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
        )
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=wp,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def make_encoder_dir(root: Path, family: str) -> Path:
    """A local checkpoint folder with a tiny random encoder of ``family`` and its own tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModel

    folder = root / f"enc-{family}"
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    tokenizer = _tokenizer(family, list(TOKENIZER_TEXTS) * 3)
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), **TINY_ENCODER_FAMILIES[family])
    model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_encoder(family)``: the checkpoint folder of a tiny random encoder of ``family`` (one of
    ``TINY_ENCODER_FAMILIES``), built once per test session."""
    root = tmp_path_factory.mktemp("encoders")
    return lambda family: make_encoder_dir(root, family)


@pytest.fixture
def recording_artifact(tmp_path: Path) -> RecordingArtifact:
    """A ``RecordingTagger`` artifact (tests/fake_taggers.py, kind ``recording``) that tags *fever*,
    *pain* and *aspirin* and logs every load and tag call with its pid to a file named in the
    artifact; ``.calls("load")`` / ``.calls("tag")`` read the log back."""
    from fake_taggers import make_recording_artifact

    words = {"fever": "Sign_symptom", "pain": "Sign_symptom", "aspirin": "Medication"}
    return make_recording_artifact(tmp_path / "recording", words)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: the suite's models are tiny, and on a shared 2-core machine extra
    threads only add synchronisation cost."""
    try:
        import torch
    except ImportError:  # the Airflow environment runs the DAG test without torch
        return
    torch.set_num_threads(1)


# A tiny BiLSTM-CNN-CRF fitted on four hand-made notes: the tagger and ensemble tests build on it.
TINY_NER_NOTES = [
    "A 45-year-old man presented with chest pain.",
    "She was given aspirin 81 mg daily.",
    "CT of the abdomen showed a 3 cm mass.",
    "Chest pain resolved after aspirin.",
]


def _spans(text: str, *pieces: tuple[str, str]) -> tuple[Span, ...]:
    out = []
    for surface, label in pieces:
        begin = text.index(surface)
        out.append(Span(begin, begin + len(surface), label))
    return tuple(out)


TINY_NER_DOCS = [
    Document(
        "d1",
        TINY_NER_NOTES[0],
        _spans(TINY_NER_NOTES[0], ("45-year-old", "Age"), ("man", "Sex"), ("chest pain", "Sign_symptom")),
    ),
    Document(
        "d2",
        TINY_NER_NOTES[1],
        _spans(TINY_NER_NOTES[1], ("aspirin", "Medication"), ("81 mg", "Dosage"), ("daily", "Frequency")),
    ),
    Document(
        "d3",
        TINY_NER_NOTES[2],
        _spans(
            TINY_NER_NOTES[2],
            ("CT", "Diagnostic_procedure"),
            ("abdomen", "Biological_structure"),
            ("3 cm", "Distance"),
            ("mass", "Sign_symptom"),
        ),
    ),
    Document(
        "d4",
        TINY_NER_NOTES[3],
        _spans(TINY_NER_NOTES[3], ("Chest pain", "Sign_symptom"), ("aspirin", "Medication")),
    ),
]


def fake_glove(dim: int = 8) -> tuple[list[str], np.ndarray]:
    import numpy as np

    words = ["the", "man", "pain", "chest", "of", "aspirin", "daily", "mass", "unseen"]
    rng = np.random.default_rng(0)
    return words, rng.normal(0, 0.5, (len(words), dim)).astype(np.float32)


def train_tiny_bilstm(epochs: int = 60, seed: int = 0) -> BiLstmCnnCrfTagger:
    """A tiny BiLSTM-CNN-CRF fitted to ``TINY_NER_DOCS`` (fake 8-d GloVe), for tests of the tagger kinds."""
    import random

    import torch

    from medner_udf.corpus.dataset import to_sentences
    from medner_udf.models.bilstm_cnn_crf import BiLstmCnnCrfConfig
    from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
    from medner_udf.text.scheme import tag_set

    torch.manual_seed(seed)
    random.seed(seed)
    sentences, _ = to_sentences(TINY_NER_DOCS)
    tags = tag_set(sorted({m.label for d in TINY_NER_DOCS for m in d.mentions}))
    words, vectors = fake_glove()
    tagger = BiLstmCnnCrfTagger.create(
        "test-model", "v1", tags, [s.tokens for s in sentences], words, vectors,
        BiLstmCnnCrfConfig(lstm_hidden=32, char_filters=16, char_dim=8, dropout=0.0),
    )  # fmt: skip
    opt = torch.optim.Adam([p for p in tagger.net.parameters() if p.requires_grad], lr=0.02)
    tagger.net.train()
    enc = tagger.encode([s.tokens for s in sentences])
    gold = tagger.encode_tags([s.tags for s in sentences])
    for _ in range(epochs):
        opt.zero_grad()
        _, loss = tagger.net(enc.words, enc.tuned, enc.chars, enc.mask, gold)
        assert loss is not None
        loss.backward()
        opt.step()
    tagger.net.eval()
    return tagger


@pytest.fixture(scope="session", name="fake_glove")
def _fake_glove_fixture() -> tuple[list[str], np.ndarray]:
    """A 9-word, 8-dimensional stand-in for GloVe (the tiny BiLSTM's pretrained vectors)."""
    return fake_glove()


@pytest.fixture(scope="session")
def tiny_ner_docs() -> list[Document]:
    """The four hand-made notes ``train_tiny_bilstm`` fits, with their gold mentions."""
    return list(TINY_NER_DOCS)


@pytest.fixture(scope="session", name="train_tiny_bilstm")
def _train_tiny_bilstm_fixture() -> Callable[..., BiLstmCnnCrfTagger]:
    """``train_tiny_bilstm(epochs=60, seed=0)``: a fresh tiny fitted BiLSTM-CNN-CRF each call."""
    return train_tiny_bilstm


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible HTTP server (moto, in its own process) on 127.0.0.1 at a free port;
    tests make their own buckets (``s3_server.make_bucket()``)."""
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3") / "requests.log")
    yield server
    server.stop()


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replaces the CLI's session builder by one that records the call and refuses to start."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        raise RuntimeError("build_session called")

    monkeypatch.setattr("medner_udf.cli.extract.build_session", refuse)
    return calls
