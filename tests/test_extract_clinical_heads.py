"""The executor side of issue 11 without Spark: assertion columns and relation rows from the heads
attached to the artifact, the no-heads path, per-note failures of the heads, one load per worker,
and a note with thousands of mentions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from fake_taggers import RecordingArtifact
from tiny_heads import TERMS, attach_tiny_heads, train_tiny_heads

import medner_udf.clinical.base as clinical_base
from medner_udf.clinical.assertion import Assertion
from medner_udf.clinical.base import ClinicalHeads
from medner_udf.clinical.relations import RelationPrediction
from medner_udf.extraction.executor import MODEL_CACHE, TaskConfig, tag_records, write_batches
from medner_udf.extraction.schemas import ENTITIES_SCHEMA, RELATIONS_SCHEMA, STATUS_SCHEMA, note_hash
from medner_udf.taggers.gazetteer import GazetteerTagger
from medner_udf.text.types import Entity

TAGGER = GazetteerTagger.from_terms(TERMS, name="g", version="1")
CFG = TaskConfig(artifact="unused", model_name="g", model_version="1", run_id="r1", batch_size=2)


@pytest.fixture(scope="module")
def heads() -> ClinicalHeads:
    assertion, relations = train_tiny_heads()
    return ClinicalHeads(assertion, relations)


def frame(rows: Sequence[tuple[str | None, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "note_hash": [note_hash(r[1]) for r in rows],
            "action": [r[2] for r in rows],
            "n_rows": [1] * len(rows),
        }
    )


def tables(tagged: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three column dicts as frames, through the file schemas (which they must fit)."""
    return tuple(  # type: ignore[return-value]
        pa.Table.from_pydict(cols, schema=schema).to_pandas()
        for cols, schema in (
            (tagged.entities, ENTITIES_SCHEMA),
            (tagged.relations, RELATIONS_SCHEMA),
            (tagged.status, STATUS_SCHEMA),
        )
    )


def test_heads_add_assertions_and_relations_whose_ends_are_entity_rows(heads: ClinicalHeads) -> None:
    rows = [
        ("a", "No fever. Possible chest pain.", "tag"),
        ("b", "CT showed a mass in the liver.\nfever of 38.5 today.", "tag"),
        ("c", "Nothing here.", "tag"),
        ("d", None, "tag"),
        ("e", "fever", "skip"),
    ]
    ents, rels, status = tables(tag_records(frame(rows), TAGGER, CFG, heads))
    got = {(r.record_id, r.text): r.assertion for r in ents.itertuples()}
    assert got == {
        ("a", "fever"): "absent",
        ("a", "chest pain"): "possible",
        ("b", "CT"): "present",
        ("b", "mass"): "present",
        ("b", "liver"): "present",
        ("b", "fever"): "present",
        ("b", "38.5"): "present",
    }
    assert ents.assertion_score.between(0.5, 1.0).all()
    assert sorted(zip(rels.record_id, rels.head_text, rels.type, rels.tail_text, strict=True)) == [
        ("b", "38.5", "MODIFY", "fever"),
        ("b", "liver", "MODIFY", "mass"),
    ]
    text_b = rows[1][1]
    assert text_b is not None
    entity_keys = set(zip(ents.record_id, ents.begin, ents.end, ents.label, ents.text, strict=True))
    for r in rels.itertuples():
        assert ("b", r.head_begin, r.head_end, r.head_label, r.head_text) in entity_keys
        assert ("b", r.tail_begin, r.tail_end, r.tail_label, r.tail_text) in entity_keys
        assert text_b[r.head_begin : r.head_end] == r.head_text
        assert 0.5 < r.score <= 1.0
    assert set(rels.run_id) == {"r1"} and set(rels.model_version) == {"1"}
    assert list(status.n_relations) == [0, 2, 0, 0, 0]
    assert list(status.n_entities) == [2, 5, 0, 0, 0]


@pytest.mark.parametrize("attached", [None, ClinicalHeads()], ids=["none", "empty"])
def test_without_heads_assertions_are_null_and_no_relations(attached: ClinicalHeads | None) -> None:
    rows = [("a", "No fever. Possible chest pain.", "tag")]
    ents, rels, status = tables(tag_records(frame(rows), TAGGER, CFG, attached))
    assert list(ents.text) == ["fever", "chest pain"]
    assert ents.assertion.isna().all() and ents.assertion_score.isna().all()
    assert len(rels) == 0 and list(status.n_relations) == [0]


class _BadAssertion:
    """Fails on notes holding 'boom' and quotes them, as careless models do."""

    def classify(self, texts: Sequence[str], entities: Sequence[Sequence[Entity]]) -> list[list[Assertion]]:
        for t in texts:
            if "boom" in t:
                raise ValueError(f"cannot classify {t!r}")
        return [[Assertion("present", 0.9) for _ in e] for e in entities]


class _BadRelations:
    """Returns an end outside the note's entities for notes holding 'aspirin'."""

    def relations(
        self, texts: Sequence[str], entities: Sequence[Sequence[Entity]]
    ) -> list[list[RelationPrediction]]:
        return [[RelationPrediction(0, 99, "MODIFY", 0.9)] if "aspirin" in t.lower() else [] for t in texts]


def test_a_note_the_heads_fail_on_becomes_an_error_row_without_its_text() -> None:
    secret = "Jane Doe: boom, fever"
    rows = [
        ("a", "fever today", "tag"),
        ("b", secret, "tag"),
        ("c", "aspirin given", "tag"),
        ("d", "fever", "tag"),
    ]
    ents, rels, status = tables(
        tag_records(frame(rows), TAGGER, CFG, ClinicalHeads(_BadAssertion(), _BadRelations()))
    )
    assert list(status.status) == ["ok", "error", "error", "ok"]
    assert status.error[1] == (
        f"ValueError in the assertion/relation models on a note of {len(secret)} characters with 1 entities"
    )
    assert "Jane" not in status.error[1] and "aspirin" not in status.error[2]
    assert status.error[2] == "relation model returned ends 0, 99 for a note of 1 entities"
    # Failed notes keep no entity rows (the quality gate wants entities only for ok records).
    assert sorted(ents.record_id) == ["a", "d"] and list(status.n_entities) == [1, 0, 0, 1]
    assert len(rels) == 0


def test_writer_loads_heads_once_per_worker_and_writes_the_relations_file(
    tmp_path: Path, recording_artifact: RecordingArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    attach_tiny_heads(recording_artifact.path, tmp_path / "heads")
    loads: list[str] = []
    real_load_heads = clinical_base.load_heads

    def counting_load_heads(tagger_dir: Any, labels: Any = None) -> ClinicalHeads:
        loads.append(str(tagger_dir))
        return real_load_heads(tagger_dir, labels)

    monkeypatch.setattr(clinical_base, "load_heads", counting_load_heads)
    MODEL_CACHE.clear()
    cfg = TaskConfig(
        artifact=str(recording_artifact.path),
        model_name="rec",
        model_version="1",
        run_id="r9",
        entities_uri=str(tmp_path / "entities"),
        status_uri=str(tmp_path / "status"),
        relations_uri=str(tmp_path / "relations"),
    )
    batches = [frame([(f"id{i}", "No fever.", "tag"), (f"x{i}", "none", "skip")]) for i in range(4)]
    written = pd.concat(list(write_batches(iter(batches), cfg)))
    MODEL_CACHE.clear()
    assert loads == [str(recording_artifact.path)]
    assert len(recording_artifact.calls("load")) == 1
    # No relations were predicted (one mention per note): no relations file, nothing to commit.
    assert dict(zip(written.table, written.num_records, strict=True)) == {"entities": 4, "record_status": 8}
    ent = pd.read_parquet(tmp_path / "entities" / written.path[written.table == "entities"].iloc[0])
    assert set(ent.assertion) == {"absent"}


def test_writer_needs_the_relations_uri() -> None:
    cfg = TaskConfig(artifact="unused", model_name="g", model_version="1", entities_uri="e", status_uri="s")
    with pytest.raises(ValueError, match="relations_uri"):
        list(write_batches(iter([]), cfg))


@pytest.mark.slow
def test_a_note_with_thousands_of_mentions_gives_bounded_relations(heads: ClinicalHeads) -> None:
    line = "CT showed a mass in the liver. fever of 38.5 today.\n"
    n_lines = 10_000  # the 10k-line note of the issue
    rows = [("big", line * n_lines, "tag")]
    started = time.perf_counter()
    ents, rels, status = tables(tag_records(frame(rows), TAGGER, CFG, heads))
    seconds = time.perf_counter() - started
    assert list(status.status) == ["ok"]
    n_mentions = len(ents)
    assert n_mentions == 5 * n_lines
    # Candidate pruning: at most max_candidates pairs per mention, so the rows are linear in the
    # mentions (a quadratic pairing would give ~7e7 pairs); each line's two MODIFY relations are found.
    assert 2 * n_lines <= len(rels) <= heads.relations.config.max_candidates * n_mentions
    modify = rels[rels.type == "MODIFY"]
    assert ((modify.head_text == "liver") & (modify.tail_text == "mass")).sum() == n_lines
    assert int(status.n_relations[0]) == len(rels)
    # About 17 s here when the machine is quiet; a quadratic pairing of 50,000 mentions (1.25e9
    # pairs) would not finish at all. Generous, because this shared machine is at times 10x slower.
    assert seconds < 600


def test_the_driver_refuses_heads_that_do_not_know_the_tagger_labels(tmp_path: Path) -> None:
    import shutil

    from medner_udf.clinical.base import LabelMismatchError
    from medner_udf.extraction.job import _attached_heads

    tagger = GazetteerTagger.from_terms([*TERMS, ("ache", "Weird_label")], name="w", version="1")
    model = tagger.save(tmp_path / "model")
    assert _attached_heads(str(model)) == {"assertion": None, "relations": None}
    _, relations = train_tiny_heads()
    # Copied by hand: `medner attach` would refuse it, an old or hand-edited artifact may not.
    shutil.copytree(relations.save(tmp_path / "r"), model / "relations")
    with pytest.raises(LabelMismatchError) as info:
        _attached_heads(str(model))
    message = str(info.value)
    assert "unknown to the relations model: ['Weird_label']" in message
    assert "'Lab_value'" in message and "'Weird_label'" in message  # both label sets named


def test_the_run_summary_says_once_which_heads_are_missing() -> None:
    from medner_udf.extraction.job import _heads_notes

    assert _heads_notes({"assertion": "a/1", "relations": "r/1"}) == []
    (only,) = _heads_notes({"assertion": None, "relations": None})
    assert "no assertion or relation model" in only and "no relations were written" in only
    assert _heads_notes({"assertion": "a/1", "relations": None}) == [
        "no relations model is attached to the artifact: no relations were written"
    ]
