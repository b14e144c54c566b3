"""Storage by URI without Spark: locations, storage options and secrets, the checks that run before
any work (against a real S3 server, moto), per-file statistics, and racing commits."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from medner_udf.errors import MednerError
from medner_udf.extraction.settings import ExtractError, ExtractSettings, check_settings
from medner_udf.extraction.storage import (
    StorageError,
    StorageUsageError,
    filesystem,
    location,
    parse_storage_options,
    redact_options,
    scrub,
)
from medner_udf.extraction.tables import (
    Changes,
    CommitConflictError,
    DataFile,
    open_table,
    plan_row_removal,
)
from medner_udf.taggers.gazetteer import GazetteerTagger

if TYPE_CHECKING:
    from s3_server import S3Server

SCHEMA = pa.schema([("record_id", pa.string()), ("model_version", pa.string()), ("n", pa.int64())])


def test_location_accepts_paths_and_known_schemes_and_names_an_unknown_one(tmp_path: Path) -> None:
    assert location(str(tmp_path)).uri == str(tmp_path)
    assert location(f"file://{tmp_path}").uri == str(tmp_path)
    assert location("s3://bucket/a/b/").join("entities").uri == "s3://bucket/a/b/entities"
    assert location("abfss://c@acct.dfs.core.windows.net/x").scheme == "abfss"
    with pytest.raises(
        StorageUsageError, match=r"'ftp://host/notes' has the unknown URI scheme 'ftp'.*s3://"
    ):
        location("ftp://host/notes", "input")
    with pytest.raises(StorageUsageError, match="names no bucket"):
        location("s3:///notes", "input")


def test_secret_looking_options_are_never_shown() -> None:
    opts = parse_storage_options(
        ["AWS_ACCESS_KEY_ID=AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY=s3cr3t-value", "AWS_REGION=eu-west-1"]
    )
    assert opts["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    shown = redact_options({**opts, "azure_storage_sas_token": "sv=1&sig=abc", "password": "pw123"})
    assert shown == {
        "AWS_ACCESS_KEY_ID": "***",
        "AWS_SECRET_ACCESS_KEY": "***",
        "AWS_REGION": "eu-west-1",
        "azure_storage_sas_token": "***",
        "password": "***",
    }
    assert scrub("denied for AKIAEXAMPLE with s3cr3t-value", opts) == "denied for *** with ***"
    settings = ExtractSettings(input="i", output="o", model="m", storage_options=opts)
    assert "s3cr3t-value" not in repr(settings) and "AKIAEXAMPLE" not in repr(settings)
    with pytest.raises(StorageUsageError, match="number 1 must be KEY=VALUE") as err:
        parse_storage_options(["justasecretvalue"])
    assert "justasecretvalue" not in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Checks before any work, on a real S3 server


def _put_notes(server: S3Server, bucket: str) -> str:
    fs, _ = filesystem(location(f"s3://{bucket}"), server.options)
    pq.write_table(
        pa.table({"record_id": ["a"], "text": ["fever"]}), f"{bucket}/notes/p.parquet", filesystem=fs
    )
    return f"s3://{bucket}/notes"


def _put_model(server: S3Server, bucket: str, tmp_path: Path) -> str:
    local = tmp_path / "model"
    GazetteerTagger.from_terms([("fever", "Sign_symptom")], name="g", version="1").save(local)
    fs, _ = filesystem(location(f"s3://{bucket}"), server.options)
    for f in local.rglob("*"):
        if f.is_file():
            with fs.open_output_stream(f"{bucket}/models/g/1/{f.relative_to(local)}") as out:
                out.write(f.read_bytes())
    return f"s3://{bucket}/models/g/1"


def _objects(server: S3Server, bucket: str) -> list[str]:
    from pyarrow import fs as pafs

    fs, _ = filesystem(location(f"s3://{bucket}"), server.options)
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)))


@pytest.fixture
def s3_job(s3_server: S3Server, tmp_path: Path) -> dict[str, Any]:
    bucket = s3_server.make_bucket("checks")
    return {
        "bucket": bucket,
        "input": _put_notes(s3_server, bucket),
        "model": _put_model(s3_server, bucket, tmp_path),
        "output": f"s3://{bucket}/out",
        "storage_options": s3_server.options,
    }


def test_s3_settings_pass_the_checks(s3_job: dict[str, Any]) -> None:
    job = {k: v for k, v in s3_job.items() if k != "bucket"}
    check_settings(ExtractSettings(**job))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"input": "s3://no-such-bucket-medner/notes"},
            StorageError,
            "bucket or container 'no-such-bucket-medner'",
        ),
        ({"output": "gopher://x/out"}, StorageUsageError, "unknown URI scheme 'gopher'"),
        (
            {"model": "s3://{bucket}/notes"},
            StorageError,
            r"model s3://.*/notes is not a medner model artifact",
        ),
        ({"output": "s3://{bucket}/notes"}, ExtractError, "holds 1 files but no medner table"),
        ({"output_format": "parquet"}, ExtractError, "output format 'parquet' needs a local"),
    ],
)
def test_s3_bad_locations_fail_naming_the_value_and_write_nothing(
    s3_server: S3Server, s3_job: dict[str, Any], change: dict[str, str], error: type, message: str
) -> None:
    bucket = s3_job.pop("bucket")
    before = _objects(s3_server, bucket)
    change = {k: v.replace("{bucket}", bucket) for k, v in change.items()}
    if "output" in change and change["output"].endswith("/notes"):
        change["output"] = f"s3://{bucket}"  # its "notes" folder is no medner table... and neither
        # are entities/record_status: make one of them hold foreign files
        fs, _ = filesystem(location(f"s3://{bucket}"), s3_server.options)
        with fs.open_output_stream(f"{bucket}/entities/foreign.csv") as out:
            out.write(b"a,b\n")
        before = _objects(s3_server, bucket)
    with pytest.raises(error, match=message) as err:
        check_settings(ExtractSettings(**{**s3_job, **change}))
    assert isinstance(err.value, MednerError)
    assert s3_server.secret_key not in str(err.value) and s3_server.access_key not in str(err.value)
    assert _objects(s3_server, bucket) == before


class _Refuser(http.server.BaseHTTPRequestHandler):
    """Answers every request as S3 does for an unknown access key (403 InvalidAccessKeyId)."""

    def _refuse(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS '
            b"Access Key Id you provided does not exist in our records.</Message><AWSAccessKeyId>"
            + self.headers.get("Authorization", "").split("Credential=")[-1].split("/")[0].encode()
            + b"</AWSAccessKeyId></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._refuse()

    def do_HEAD(self) -> None:
        self._refuse()

    def do_PUT(self) -> None:
        self._refuse()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_s3() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_refused_credentials_are_reported_without_printing_them(refusing_s3: str) -> None:
    opts = {
        "AWS_ENDPOINT_URL": refusing_s3,
        "AWS_ACCESS_KEY_ID": "AKIAREFUSEDKEY",
        "AWS_SECRET_ACCESS_KEY": "refused-secret-value",
        "AWS_REGION": "us-east-1",
        "max_retries": "1",
    }
    settings = ExtractSettings(
        input="s3://warehouse/notes", output="s3://warehouse/out", model="s3://m/g/1", storage_options=opts
    )
    with pytest.raises(StorageError, match="refused the credentials") as err:
        check_settings(settings)
    assert "AKIAREFUSEDKEY" not in str(err.value) and "refused-secret-value" not in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Statistics and racing commits


def _put(table: Any, name: str, ids: list[str]) -> DataFile:
    rows = pa.table(
        {"record_id": ids, "model_version": ["1"] * len(ids), "n": list(range(len(ids)))}, schema=SCHEMA
    )
    return table.write_file(name, rows)


def test_delta_add_actions_carry_min_max_and_null_counts(tmp_path: Path) -> None:
    table = open_table(tmp_path / "t", "delta")
    f1 = _put(table, "a.parquet", ["k", "c", "x"])
    rows = pa.table({"record_id": ["m", None], "model_version": ["2", "2"], "n": [5, None]}, schema=SCHEMA)
    f2 = table.write_file("b.parquet", rows)
    table.commit(Changes(adds=[f1, f2]), SCHEMA, {})
    log = (tmp_path / "t" / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
    stats = {a["add"]["path"]: json.loads(a["add"]["stats"]) for a in map(json.loads, log) if "add" in a}
    assert stats["a.parquet"] == {
        "numRecords": 3,
        "minValues": {"record_id": "c", "model_version": "1", "n": 0},
        "maxValues": {"record_id": "x", "model_version": "1", "n": 2},
        "nullCount": {"record_id": 0, "model_version": 0, "n": 0},
    }
    assert stats["b.parquet"]["nullCount"] == {"record_id": 1, "model_version": 0, "n": 1}
    assert stats["b.parquet"]["minValues"]["record_id"] == "m"
    # delta-rs uses them: a predicate on record_id prunes the file that cannot hold it.
    pruned = DeltaTable(str(tmp_path / "t")).file_uris(file_pruning_predicate=[("record_id", "=", "d")])
    assert [Path(u).name for u in pruned] == ["a.parquet"]


def _race(
    table_path: str, fmt: str, opts: dict[str, str] | None, drop: list[str], tag: str
) -> list[BaseException | None]:
    """Two writers plan a removal from the same version, then commit one after the other."""
    writers = [open_table(table_path, fmt, opts) for _ in range(2)]
    plans = []
    for i, w in enumerate(writers):
        ch = plan_row_removal(
            w, ["record_id"], lambda t: pc.is_in(t["record_id"], pa.array(drop, pa.string())), SCHEMA, f"w{i}"
        )
        ch.adds.append(_put(w, f"{tag}-{i}.parquet", [f"{tag}{i}"]))
        plans.append(ch)
    results: list[BaseException | None] = []
    for w, ch in zip(writers, plans, strict=True):
        try:
            w.commit(ch, SCHEMA, {})
            results.append(None)
        except MednerError as exc:
            results.append(exc)
    return results


def _race_cases(root: str, fmt: str, opts: dict[str, str] | None) -> None:
    table = open_table(f"{root}/t", fmt, opts)
    table.commit(
        Changes(adds=[_put(table, "a.parquet", ["a", "b"]), _put(table, "c.parquet", ["c"])]), SCHEMA, {}
    )
    # Both only add: both commits land.
    assert _race(f"{root}/t", fmt, opts, drop=[], tag="new") == [None, None]
    assert sorted(open_table(f"{root}/t", fmt, opts).read()["record_id"].to_pylist()) == [
        "a",
        "b",
        "c",
        "new0",
        "new1",
    ]
    # Both rewrite the same file: the first lands, the second fails cleanly and changes nothing.
    version = open_table(f"{root}/t", fmt, opts).version()
    first, second = _race(f"{root}/t", fmt, opts, drop=["b"], tag="cow")
    assert first is None and isinstance(second, CommitConflictError)
    after = open_table(f"{root}/t", fmt, opts)
    assert after.version() == (version or 0) + 1
    assert sorted(after.read()["record_id"].to_pylist()) == ["a", "c", "cow0", "new0", "new1"]


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_racing_commits_both_land_or_one_fails_cleanly_locally(tmp_path: Path, fmt: str) -> None:
    _race_cases(str(tmp_path), fmt, None)


def test_racing_commits_both_land_or_one_fails_cleanly_on_s3(s3_server: S3Server) -> None:
    _race_cases(f"s3://{s3_server.make_bucket('race')}", "delta", s3_server.options)


def test_concurrent_threads_appending_to_one_s3_table_all_land(s3_server: S3Server) -> None:
    root = f"s3://{s3_server.make_bucket('threads')}/t"
    first = open_table(root, "delta", s3_server.options)
    first.commit(Changes(adds=[_put(first, "seed.parquet", ["seed"])]), SCHEMA, {})
    errors: list[BaseException] = []
    landed: list[str] = []

    def writer(i: int) -> None:
        t = open_table(root, "delta", s3_server.options)
        try:
            t.commit(Changes(adds=[_put(t, f"t{i}.parquet", [f"t{i}"])]), SCHEMA, {})
            landed.append(f"t{i}")
        except MednerError as exc:  # a clean failure is allowed; a lost commit is not
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert time.perf_counter() - started < 120
    ids = sorted(open_table(root, "delta", s3_server.options).read()["record_id"].to_pylist())
    assert ids == sorted(["seed", *landed]) and len(landed) + len(errors) == 4
    assert open_table(root, "delta", s3_server.options).version() == len(landed)


def test_storage_options_come_from_conf_and_flags_win_key_by_key(tmp_path: Path) -> None:
    from medner_udf.extraction.settings import load_extract_settings

    conf = tmp_path / "extract.toml"
    conf.write_text('[extract]\n[extract.storage_options]\nAWS_REGION = "eu-west-1"\nmax_retries = 5\n')
    flags = {"input": "i", "output": "o", "model": "m", "storage_options": {"AWS_REGION": "us-east-2"}}
    s = load_extract_settings(conf, flags)
    assert s.storage_options == {"AWS_REGION": "us-east-2", "max_retries": "5"}


def test_each_scheme_maps_to_its_pyarrow_filesystem_and_path() -> None:
    from pyarrow import fs as pafs

    s3, path = filesystem(
        location("s3://bkt/a/b"), {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "x"}
    )
    assert isinstance(s3, pafs.S3FileSystem) and path == "bkt/a/b"
    gcs, path = filesystem(location("gs://bkt/notes"), {"anonymous": "true"})
    assert isinstance(gcs, pafs.GcsFileSystem) and path == "bkt/notes"
    az, path = filesystem(
        location("abfss://cont@acct.dfs.core.windows.net/warehouse/notes"),
        {"AZURE_STORAGE_ACCOUNT_KEY": "a2V5a2V5a2V5"},
    )
    assert isinstance(az, pafs.AzureFileSystem) and path == "cont/warehouse/notes"
    local, path = filesystem(location("file:///tmp/x"))
    assert isinstance(local, pafs.LocalFileSystem) and path == "/tmp/x"
