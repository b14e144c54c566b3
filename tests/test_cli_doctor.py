"""``medner doctor``: passes on this machine, and fails with a fix for each broken setting."""

from __future__ import annotations

import platform
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from medner_udf.cli import doctor as doctor_module
from medner_udf.cli.main import main
from medner_udf.extraction.schemas import STATUS_SCHEMA
from medner_udf.extraction.tables import Changes, DataFile, DeltaTableStore
from medner_udf.taggers.gazetteer import GazetteerTagger


def doctor(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["doctor", *args], env=env)


def row(result: Result, name: str) -> tuple[str, str, str | None]:
    """(status, detail, fix) of the report's row ``name``."""
    lines = result.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.split(maxsplit=1)[:1] == [name]:
            status, detail = line.split(maxsplit=2)[1:]
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return status, detail, nxt[len("fix: ") :] if nxt.startswith("fix: ") else None
    raise AssertionError(f"no row {name!r} in\n{result.stdout}")


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    pq.write_table(pa.table({"record_id": ["a", "b"], "text": ["fever", "no"]}), folder / "p.parquet")
    return folder


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return GazetteerTagger.from_terms([("fever", "Sign_symptom"), ("aspirin", "Medication")]).save(
        tmp_path / "models" / "gaz" / "1"
    )


def test_doctor_passes_here_and_reports_model_storage_and_tables(
    corpus_dir: Path, notes: Path, model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    status = out / "record_status"
    status.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=STATUS_SCHEMA), status / "f.parquet")
    size = (status / "f.parquet").stat().st_size
    DeltaTableStore(status).commit(Changes(adds=[DataFile("f.parquet", size, 0, 1)]), STATUS_SCHEMA, {})
    result = doctor(
        "--skip-spark", "--corpus", str(corpus_dir), "--model", str(model),
        "--input", str(notes), "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("all checks passed")
    assert row(result, "python")[0] == "ok" and row(result, "packages")[0] == "ok"
    assert row(result, "java")[0] in ("ok", "warn") and "Java 17" in row(result, "java")[1]
    assert row(result, "spark")[:2] == ("skip", "--skip-spark")
    assert row(result, "torch")[1].startswith("torch 2.")
    assert row(result, "allocator")[0] in ("ok", "warn")
    assert row(result, "corpus") == ("ok", f"{corpus_dir.resolve()}: 200 documents", None)
    assert row(result, "model")[1].startswith("gazetteer ") and "2 entity types" in row(result, "model")[1]
    assert "1 parquet files" in row(result, "input")[1]
    output = row(result, "output")
    assert "reachable, writable" in output[1] and "record_status: delta v0, 1 files" in output[1]
    assert not any(p.name.startswith(doctor_module.PROBE_PREFIX) for p in out.iterdir())


@pytest.mark.slow
@pytest.mark.spark
def test_doctor_starts_a_local_spark_session_and_times_it(corpus_dir: Path) -> None:
    result = doctor("--corpus", str(corpus_dir))
    assert result.exit_code == 0, result.output
    status, detail, _ = row(result, "spark")
    assert status == "ok" and detail.startswith("Spark 4.2.0, local[1] session started and stopped in ")


def test_doctor_fails_with_a_fix_for_each_broken_setting(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    lock = tmp_path / "requirements.lock"
    lock.write_text("click==0.0.1\nno-such-package-medner==1.0\n")
    result = doctor(
        "--skip-spark", "--corpus", str(tmp_path / "nope"), "--model", str(tmp_path / "empty"),
        "--input", str(tmp_path / "nonotes"), "--output", str(tmp_path / "afile"), "--lock", str(lock),
        env={"JAVA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 1
    expected = {
        "packages": ("click", "make venv"),
        "java": (f"JAVA_HOME={tmp_path}: no bin/java there", "export JAVA_HOME="),
        "corpus": (f"{tmp_path / 'nope'} does not exist", "put MACCROBAT2020 at"),
        "model": ("artifact file artifact.json is missing", "models/<name>/<version>"),
        "input": ("does not exist", "give --input an existing table folder"),
        "output": ("is a file, not a folder", "give --output a folder"),
    }
    for name, (detail, fix) in expected.items():
        status, got_detail, got_fix = row(result, name)
        assert status == "FAIL" and detail in got_detail, (name, got_detail)
        assert got_fix is not None and fix in got_fix, (name, got_fix)
    assert "no-such-package-medner missing (lock 1.0)" in row(result, "packages")[1]
    assert result.stdout.strip().endswith("6 check(s) failed: packages, java, corpus, model, input, output")


def test_doctor_wrong_python_fails_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "PYTHON_VERSION", (3, 99))
    check = doctor_module.check_python()
    assert check.status == "FAIL" and check.fix is not None and "Python 3.99" in check.fix


def test_doctor_unknown_uri_scheme_fails_with_a_fix(tmp_path: Path) -> None:
    result = doctor("--skip-spark", "--output", "nosuch://bucket/out")
    status, detail, fix = row(result, "output")
    assert result.exit_code == 1 and status == "FAIL" and "not a storage URI" in detail
    assert fix is not None and "s3://" in fix


def test_doctor_never_prints_a_secret(tmp_path: Path) -> None:
    secret = "sup3r-s3cret-value"
    result = doctor(
        "--skip-spark", "--output", "s3://medner-bucket/warehouse",
        "--storage-option", f"AWS_SECRET_ACCESS_KEY={secret}",
        "--storage-option", "AWS_ACCESS_KEY_ID=AKIDEXAMPLE",
        "--storage-option", f"AWS_SESSION_TOKEN={secret}-token",
        "--storage-option", "AWS_ENDPOINT_URL=http://127.0.0.1:9",  # nothing listens: unreachable
        "--storage-option", "AWS_REGION=us-east-1",
    )  # fmt: skip
    status, detail, fix = row(result, "output")
    assert result.exit_code == 1 and status == "FAIL" and fix is not None
    assert secret not in result.output and "AKIDEXAMPLE" not in result.output
    assert "'AWS_SECRET_ACCESS_KEY': '****'" in detail and "'AWS_REGION': 'us-east-1'" in detail


def test_doctor_masks_every_secret_like_option_key() -> None:
    keys = ["AWS_SECRET_ACCESS_KEY", "azure_storage_sas_token", "GOOGLE_SERVICE_ACCOUNT_KEY",
            "password", "client_credential", "x-amz-signature", "AWS_SESSION_TOKEN"]  # fmt: skip
    assert set(doctor_module.masked(dict.fromkeys(keys, "v")).values()) == {"****"}
    assert doctor_module.masked({"AWS_REGION": "eu-west-1"}) == {"AWS_REGION": "eu-west-1"}


@pytest.mark.parametrize(
    ("output", "major"),
    [('openjdk version "17.0.9" 2023-10-17', 17), ('java version "1.8.0_392"', 8), ("garbage", None)],
)
def test_doctor_reads_the_java_major_version(output: str, major: int | None) -> None:
    assert doctor_module.java_major(output) == major


@pytest.mark.parametrize(
    ("glibc", "thp", "status", "said"),
    [
        (
            (2, 36),
            "madvise",
            "ok",
            "glibc 2.36, transparent huge pages madvise: the workers' GLIBC_TUNABLES take",
        ),
        ((2, 35), "always", "ok", "transparent huge pages always"),
        ((2, 36), None, "ok", "transparent huge pages unknown"),
        ((2, 31), "madvise", "warn", "glibc < 2.35 ignores glibc.malloc.hugetlb"),
        ((2, 39), "never", "warn", "huge pages are off"),
        (None, "madvise", "warn", "not glibc"),
    ],
)
def test_doctor_allocator_check_says_whether_the_workers_tunables_take_effect(
    glibc: tuple[int, int] | None, thp: str | None, status: str, said: str
) -> None:
    check = doctor_module.check_allocator(glibc=lambda: glibc, thp=lambda: thp)
    assert check.name == "allocator" and check.status == status and said in check.detail
    assert (check.fix is not None) == (status == "warn")


def test_doctor_reads_the_transparent_huge_pages_mode_and_glibc(tmp_path: Path) -> None:
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")
    assert doctor_module.thp_mode(enabled) == "madvise"
    enabled.write_text("[always] madvise never\n")
    assert doctor_module.thp_mode(enabled) == "always"
    assert doctor_module.thp_mode(tmp_path / "missing") is None
    version = doctor_module.glibc_version()  # this process's C library, as the check sees it
    libc, found = platform.libc_ver()
    if libc == "glibc":
        assert version == tuple(int(x) for x in found.split(".")[:2])
    else:
        assert version is None
