"""Settings checks and run-id choice, without Spark."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medner_udf.config import SettingsError
from medner_udf.extraction.planning import choose_run
from medner_udf.extraction.settings import (
    ExtractError,
    ExtractSettings,
    check_settings,
    load_extract_settings,
)
from medner_udf.extraction.shipping import ship_artifact
from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.gazetteer import GazetteerTagger


def test_choose_run_reruns_only_the_latest_run() -> None:
    assert choose_run(None, "rabc", {}) == ("rabc", 0, False)
    assert choose_run(None, "rabc", {"rabc": 0}) == ("rabc", 0, True)
    assert choose_run(None, "rnew", {"rabc": 0}) == ("rnew", 1, False)
    # The input went back to an earlier state: a new run, not a rollback of run rabc.
    assert choose_run(None, "rabc", {"rabc": 0, "rnew": 1}) == ("rabc-2", 2, False)
    assert choose_run(None, "rabc", {"rabc": 0, "rnew": 1, "rabc-2": 2}) == ("rabc-2", 2, True)
    assert choose_run("nightly-1", "rx", {"nightly-1": 4}) == ("nightly-1", 4, True)
    with pytest.raises(ExtractError, match="'nightly-1' is not the latest run"):
        choose_run("nightly-1", "rx", {"nightly-1": 4, "nightly-2": 5})


def test_flags_override_conf_and_unknown_conf_keys_are_named(tmp_path: Path) -> None:
    conf = tmp_path / "extract.toml"
    conf.write_text("[extract]\nbatch_size = 8\nfull = true\nmax_batch_chars = 1000\n")
    flags = {"input": "i", "output": "o", "model": "m", "batch_size": 4, "full": None}
    s = load_extract_settings(conf, flags)
    assert (s.batch_size, s.full, s.max_batch_chars) == (4, True, 1000)
    # Without --conf: the package's own conf/extract.toml, whatever the working directory.
    default = load_extract_settings(None, flags)
    assert (default.batch_size, default.full) == (4, False)
    conf.write_text("[extract]\nbatchsize = 8\n")
    with pytest.raises(SettingsError, match="'batchsize'"):
        load_extract_settings(conf, flags)
    conf.write_text('[extract]\nmax_batch_chars = "many"\n')
    with pytest.raises(SettingsError, match="max_batch_chars: expected int, got 'many'"):
        load_extract_settings(conf, flags)
    with pytest.raises(ExtractError, match="'model'"):
        load_extract_settings(None, {**flags, "model": None})


def test_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    pq.write_table(pa.table({"record_id": ["a"], "text": ["fever"]}), tmp_path / "notes" / "p.parquet")
    model = GazetteerTagger.from_terms([("fever", "Sign_symptom")]).save(tmp_path / "model")
    ok = ExtractSettings(input=str(tmp_path / "notes"), output=str(tmp_path / "out"), model=str(model))
    check_settings(ok)
    bad = {
        "output_format": ("csv", "output format must be one of"),
        "run_id": ("../etc", "run id '../etc'"),
        "id_column": ("text", "id and text columns must differ"),
        "partitions": (0, "partitions must be >= 1, got 0"),
        "tagger_batch_size": (0, "tagger_batch_size must be >= 1, got 0"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ExtractError, match=message):
            check_settings(ExtractSettings(**{**ok.__dict__, key: value}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtractError, match="holds no table"):
        check_settings(ExtractSettings(**{**ok.__dict__, "input": str(tmp_path / "empty")}))
    with pytest.raises(ArtifactError, match="does not exist"):
        check_settings(ExtractSettings(**{**ok.__dict__, "model": str(tmp_path / "nope")}))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExtractError, match="is not a folder"):
        check_settings(ExtractSettings(**{**ok.__dict__, "output": str(tmp_path / "afile")}))


def test_shipping_an_artifact_reuses_one_zip_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nightly runs ship the same artifact again and again: one zip per artifact state in the
    cache folder, nothing else left in the temp dir; a changed artifact gets a new zip."""
    import tempfile
    import zipfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = tmp_path / "model"
    GazetteerTagger.from_terms([("aspirin", "Medication")]).save(model)
    added: list[str] = []

    class _Context:
        def addArchive(self, path: str) -> None:  # noqa: N802 (Spark's name)
            added.append(path)

    class _Spark:
        sparkContext = _Context()  # noqa: N815 (Spark's name)

    first = ship_artifact(_Spark(), str(model))  # type: ignore[arg-type]
    second = ship_artifact(_Spark(), str(model))  # type: ignore[arg-type]
    assert first == second and added[0] == added[1]
    cache = tmp_path / "tmp" / "medner-shipped-artifacts"
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["medner-shipped-artifacts"]
    assert [p.name for p in cache.iterdir()] == [first]
    with zipfile.ZipFile(added[0]) as z:
        assert "artifact.json" in z.namelist()
    (model / "extra.txt").write_text("changed")
    third = ship_artifact(_Spark(), str(model))  # type: ignore[arg-type]
    assert third != first and len(list(cache.iterdir())) == 2
