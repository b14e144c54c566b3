"""``medner doctor``: check a set-up before the first job, and say how to fix what is wrong.

    medner doctor [--corpus PATH] [--model PATH] [--input URI] [--output URI]
                  [--storage-option KEY=VALUE ...] [--skip-spark] [--lock requirements.lock]

One table, one row per check (``ok``, ``warn``, ``FAIL`` or ``skip``), with a ``fix:`` line under
every failure; the exit status is 1 when a check failed. The checks: Python and the installed
packages against the lock, ``JAVA_HOME`` and the Java version Spark needs, a local Spark session
starting (and how long it took), torch's device, whether the workers' allocator settings take
full effect here (glibc >= 2.35, transparent huge pages not ``never``), the corpus folder, a model
artifact (loads, kind, labels, size), and the input/output storage URIs with their storage options
(reachable, writable, the tables there and their versions).

Storage options are delta-rs's keys (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...); the storage
check is self-contained (pyarrow's filesystems and delta-rs), so it reports what those libraries
see whatever the job does with the same URI. A value is never printed when its key looks like a
secret (``secret``, ``key``, ``token``, ``password``, ``credential``, ``sas``, ``signature``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from medner_udf.errors import MednerError

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
# Spark 4 runs on Java 17 and 21.
SPARK_JAVA_VERSIONS = (17, 21)
PYTHON_VERSION = (3, 11)
SECRET_WORDS = ("secret", "key", "token", "password", "credential", "sas", "signature")
MASK = "****"
_CHECKOUT_LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
PROBE_PREFIX = "_medner_doctor_probe-"


@dataclass(frozen=True)
class Check:
    """One row of the report: what was checked, how it went, what was found, how to fix it."""

    name: str
    status: str
    detail: str
    fix: str | None = None


# ---------------------------------------------------------------------------------------- helpers


def is_secret(key: str) -> bool:
    """Whether a storage option's value must never be printed (its key names a credential)."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def masked(options: Mapping[str, str]) -> dict[str, str]:
    """``options`` fit for printing: secret-like keys keep their name, never their value."""
    return {k: (MASK if is_secret(k) else v) for k, v in options.items()}


def parse_storage_options(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as a dict; a malformed pair is a usage error (the value is not echoed)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = key if not is_secret(key) else MASK
            raise click.BadParameter(f"expected KEY=VALUE, got {shown!r}", param_hint="--storage-option")
        options[key.strip()] = value
    return options


def _scrub(text: str, options: Mapping[str, str]) -> str:
    """``text`` with every secret option value replaced, in case a library echoed one."""
    for key, value in options.items():
        if value and is_secret(key):
            text = text.replace(value, MASK)
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GB"  # pragma: no cover


# ----------------------------------------------------------------------------------------- checks


def check_python() -> Check:
    found = sys.version_info[:2]
    version = ".".join(map(str, sys.version_info[:3]))
    if found != PYTHON_VERSION:
        return Check(
            "python",
            FAIL,
            f"{version} at {sys.executable}",
            f"medner needs Python {'.'.join(map(str, PYTHON_VERSION))}: `make venv` (PYTHON=python3.11)",
        )
    return Check("python", OK, f"{version} at {sys.executable}")


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a lock file, names normalised as pip does."""
    pins: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[_normalise(name)] = version.split(";", 1)[0].strip()
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(installed: str, pinned: str) -> bool:
    """``installed`` satisfies ``==pinned`` as pip reads it: a local label (``2.13.0+cpu``) matches a
    pin without one."""
    from packaging.version import InvalidVersion, Version

    try:
        have, want = Version(installed), Version(pinned)
    except InvalidVersion:
        return installed == pinned
    return have == want or (not want.local and Version(have.public) == want)


def check_packages(lock: Path | None) -> Check:
    path = lock or _CHECKOUT_LOCK
    if not path.is_file():
        return Check("packages", SKIP, f"no lock file at {path} (an installed wheel has none)")
    pins = read_lock(path)
    wrong: list[str] = []
    for name, want in sorted(pins.items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (lock {want})")
            continue
        if not same_version(have, want):
            wrong.append(f"{name} {have} (lock {want})")
    if wrong:
        more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
        return Check(
            "packages",
            FAIL,
            f"{len(wrong)} of {len(pins)} differ from {path.name}: " + "; ".join(wrong[:4]) + more,
            f"`make venv`, or: {sys.executable} -m pip install -r {path}",
        )
    return Check("packages", OK, f"{len(pins)} pinned in {path.name}, all installed at those versions")


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"17.0.9"`` -> 17, ``"1.8.0_392"`` -> 8)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def check_java() -> Check:
    from medner_udf.extraction.session import DEFAULT_JAVA_HOME

    fix = (
        f"export JAVA_HOME={DEFAULT_JAVA_HOME} (a Java {SPARK_JAVA_VERSIONS[0]} JDK; Spark 4 needs 17 or 21)"
    )
    java_home = os.environ.get("JAVA_HOME")
    if not java_home:
        if Path(DEFAULT_JAVA_HOME).is_dir():
            java, where = Path(DEFAULT_JAVA_HOME) / "bin" / "java", f"unset; medner uses {DEFAULT_JAVA_HOME}"
        else:
            return Check("java", FAIL, "JAVA_HOME is not set", fix)
    else:
        java, where = Path(java_home) / "bin" / "java", f"JAVA_HOME={java_home}"
    if not java.is_file():
        return Check("java", FAIL, f"{where}: no bin/java there", fix)
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("java", FAIL, f"{where}: `java -version` failed ({_first_line(exc)})", fix)
    major = java_major(done.stderr + done.stdout)
    if major not in SPARK_JAVA_VERSIONS:
        return Check("java", FAIL, f"{where}: Java {major}, Spark 4 needs 17 or 21", fix)
    status = OK if java_home else WARN
    return Check("java", status, f"Java {major}, {where}", None if java_home else fix)


def check_spark() -> Check:
    from medner_udf.extraction.session import build_session

    started = time.monotonic()
    try:
        spark = build_session(
            {
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.log.level": "ERROR",
            },
            app_name="medner-doctor",
            master="local[1]",
        )
        try:
            n = spark.range(3).count()
            version = spark.version
        finally:
            spark.stop()
    except MednerError as exc:
        return Check("spark", FAIL, str(exc), exc.hint)
    except Exception as exc:  # a JVM that fails after starting: report, do not crash the report
        return Check("spark", FAIL, f"local session failed: {_first_line(exc)}", "run with --debug")
    seconds = time.monotonic() - started
    if n != 3:  # pragma: no cover - Spark counting wrongly is not a set-up problem we can fix
        return Check("spark", FAIL, f"a 3-row count gave {n}")
    return Check("spark", OK, f"Spark {version}, local[1] session started and stopped in {seconds:.1f} s")


def check_torch() -> Check:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        return Check("torch", FAIL, _first_line(exc), "`make venv`")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check(
            "torch", OK, f"torch {torch.__version__}, CUDA {torch.version.cuda}: " + ", ".join(names)
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    note = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build, no GPU visible"
    return Check("torch", OK, f"torch {torch.__version__}, {build}{note}: tagging and training on the CPU")


# glibc learnt ``glibc.malloc.hugetlb`` in 2.35; conf/spark.toml's workers' GLIBC_TUNABLES rely on it.
HUGETLB_GLIBC = (2, 35)
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_ALLOCATOR_DOC = 'docs/extraction.md, Benchmarks, "Worker memory"'


def glibc_version() -> tuple[int, int] | None:
    """This process's glibc as (major, minor); None under another C library (musl, macOS)."""
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    match = re.fullmatch(r"glibc (\d+)\.(\d+)(?:\.\d+)?", found.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The transparent huge pages mode (``always``, ``madvise``, ``never``); None where unknown."""
    try:
        match = re.search(r"\[(\w+)\]", path.read_text(encoding="ascii"))
    except OSError:
        return None
    return match.group(1) if match else None


def check_allocator(
    glibc: Callable[[], tuple[int, int] | None] = glibc_version,
    thp: Callable[[], str | None] = thp_mode,
) -> Check:
    """Whether the workers' allocator settings (conf/spark.toml) take full effect on this machine.

    They keep a worker's memory flat from task to task everywhere; where glibc is older than 2.35 or
    transparent huge pages are ``never`` the 4 MiB mmap threshold runs without huge pages and the
    BiLSTM forward loses 18-28% of its speed; other C libraries ignore ``GLIBC_TUNABLES``. Only this
    machine is checked: in cluster mode, run it on a worker node too.
    """
    version, mode = glibc(), thp()
    if version is None:
        return Check(
            "allocator",
            WARN,
            "not glibc: the workers' GLIBC_TUNABLES do nothing here (memory is still released per batch)",
            f"none needed for correctness; worker memory is measured on glibc ({_ALLOCATOR_DOC})",
        )
    shown = f"glibc {version[0]}.{version[1]}, transparent huge pages {mode or 'unknown'}"
    if version < HUGETLB_GLIBC:
        return Check(
            "allocator",
            WARN,
            f"{shown}: glibc < 2.35 ignores glibc.malloc.hugetlb, so the 4 MiB mmap threshold costs speed",
            "run the workers on glibc >= 2.35, or drop mmap_threshold from spark.executorEnv.GLIBC_TUNABLES "
            f"(faster, memory grows a little per task; {_ALLOCATOR_DOC})",
        )
    if mode == "never":
        return Check(
            "allocator",
            WARN,
            f"{shown}: huge pages are off, so the 4 MiB mmap threshold costs speed",
            f"set {THP_ENABLED} to madvise (the usual default), or drop mmap_threshold from "
            f"spark.executorEnv.GLIBC_TUNABLES ({_ALLOCATOR_DOC})",
        )
    return Check("allocator", OK, f"{shown}: the workers' GLIBC_TUNABLES take full effect")


def check_corpus(setting: Path | None) -> Check:
    from medner_udf.corpus.maccrobat import CORPUS_HINT, corpus_path

    path = corpus_path(setting)
    if not path.is_dir():
        return Check("corpus", FAIL, f"{path} does not exist", CORPUS_HINT)
    pairs = [p for p in path.glob("*.txt") if p.with_suffix(".ann").is_file()]
    if not pairs:
        return Check("corpus", FAIL, f"{path} holds no .txt/.ann pairs", CORPUS_HINT)
    return Check("corpus", OK, f"{path.resolve()}: {len(pairs)} documents")


def check_model(model: Path | None) -> Check:
    if model is None:
        return Check("model", SKIP, "no --model given")
    from medner_udf.taggers.base import load_tagger

    try:
        tagger = load_tagger(model, device="cpu")
    except MednerError as exc:
        return Check("model", FAIL, str(exc), exc.hint or "give --model a models/<name>/<version> folder")
    except Exception as exc:  # a broken artifact: report it in the table
        return Check(
            "model", FAIL, f"{model} does not load: {_first_line(exc)}", "retrain it, or give another --model"
        )
    info = tagger.info
    return Check(
        "model",
        OK,
        f"{info.kind} {info.name}/{info.version}: {len(tagger.entity_types)} entity types, "
        f"{_human(_size(Path(model)))}",
    )


def _filesystem(uri: str, options: Mapping[str, str]) -> tuple[Any, str]:
    """A pyarrow filesystem and the path inside it for ``uri``; S3 options in delta-rs's keys."""
    import pyarrow.fs as pafs

    if uri.startswith("s3://") and options:
        lowered = {k.lower(): v for k, v in options.items()}
        endpoint = (
            lowered.get("aws_endpoint_url") or lowered.get("endpoint_url") or lowered.get("aws_endpoint")
        )
        scheme = None
        if endpoint and "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        fs = pafs.S3FileSystem(
            access_key=lowered.get("aws_access_key_id"),
            secret_key=lowered.get("aws_secret_access_key"),
            session_token=lowered.get("aws_session_token"),
            region=lowered.get("aws_region") or lowered.get("region"),
            endpoint_override=endpoint,
            scheme=scheme or ("http" if lowered.get("aws_allow_http") == "true" else "https"),
            connect_timeout=5,
            request_timeout=10,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
        return fs, uri[len("s3://") :].rstrip("/")
    if "://" not in uri:
        uri = Path(uri).absolute().as_uri()
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def _tables_at(uri: str, fs: Any, path: str, options: Mapping[str, str], role: str) -> list[str]:
    """``name: delta vN`` for the Delta tables at ``uri`` itself and its ``entities`` /
    ``record_status`` children; for an input, the Parquet files a plain folder holds."""
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    found: list[str] = []
    for name in ("", "entities", "record_status"):
        sub_uri = uri.rstrip("/") + (f"/{name}" if name else "")
        sub_path = path.rstrip("/") + (f"/{name}" if name else "")
        label = name or "(here)"
        if fs.get_file_info(sub_path + "/_delta_log").type == pafs.FileType.Directory:
            dt = DeltaTable(sub_uri, storage_options=dict(options) or None)
            found.append(f"{label}: delta v{dt.version()}, {len(dt.file_uris())} files")
        elif fs.get_file_info(sub_path + "/_medner_manifest.json").type == pafs.FileType.File:
            found.append(f"{label}: medner parquet table")
        elif not name and role == "input":
            selector = pafs.FileSelector(sub_path, recursive=True, allow_not_found=True)
            n = sum(1 for f in fs.get_file_info(selector) if f.path.endswith(".parquet"))
            if n:
                found.append(f"(here): {n} parquet files")
    return found


def check_storage(role: str, uri: str | None, options: Mapping[str, str], write: bool) -> Check:
    """``uri`` reachable with ``options`` (and writable when ``write``); the tables found there."""
    import pyarrow.fs as pafs

    name = role
    if uri is None:
        return Check(name, SKIP, f"no --{role} given")
    shown = f"{uri} (options: {masked(options)})" if options else uri
    fix_reach = "check the URI, the credentials (environment or --storage-option) and that the host answers"
    try:
        fs, path = _filesystem(uri, options)
    except ValueError as exc:  # pyarrow's ArrowInvalid (an unknown scheme) is a ValueError
        return Check(
            name,
            FAIL,
            f"{shown}: not a storage URI pyarrow knows ({_scrub(_first_line(exc), options)})",
            "use a local path, file://, s3://, gs://, abfss:// or hdfs:// URI",
        )
    except Exception as exc:
        return Check(name, FAIL, f"{shown}: {_scrub(_first_line(exc), options)}", fix_reach)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return Check(name, FAIL, f"{shown} is a file, not a folder", f"give --{role} a folder")
        exists = info.type == pafs.FileType.Directory
        if not exists and not write:
            return Check(name, FAIL, f"{shown} does not exist", f"give --{role} an existing table folder")
        parts = ["reachable"]
        if write:
            probe = f"{path.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex}"
            try:
                fs.create_dir(path, recursive=True)
                with fs.open_output_stream(probe) as out:
                    out.write(b"medner doctor write probe\n")
                fs.delete_file(probe)
            except Exception as exc:
                return Check(
                    name,
                    FAIL,
                    f"{shown}: reachable but not writable ({_scrub(_first_line(exc), options)})",
                    "grant write access to these credentials, or choose another --output",
                )
            parts.append("writable")
        tables = _tables_at(uri, fs, path, options, role) if exists or write else []
    except Exception as exc:
        return Check(name, FAIL, f"{shown}: {_scrub(_first_line(exc), options)}", fix_reach)
    detail = f"{shown}: " + ", ".join(parts) + "; " + ("; ".join(tables) if tables else "no tables yet")
    if role == "input" and not tables:
        return Check(name, FAIL, detail, "give --input a Delta table or a folder of Parquet files")
    return Check(name, OK, detail)


# ---------------------------------------------------------------------------------------- command


def run_checks(
    corpus: Path | None = None,
    model: Path | None = None,
    input_uri: str | None = None,
    output_uri: str | None = None,
    options: Mapping[str, str] | None = None,
    spark: bool = True,
    lock: Path | None = None,
) -> list[Check]:
    """Every check, in the order of the report."""
    opts = dict(options or {})
    steps: list[Callable[[], Check]] = [
        check_python,
        lambda: check_packages(lock),
        check_java,
        check_spark if spark else (lambda: Check("spark", SKIP, "--skip-spark")),
        check_torch,
        check_allocator,
        lambda: check_corpus(corpus),
        lambda: check_model(model),
        lambda: check_storage("input", input_uri, opts, write=False),
        lambda: check_storage("output", output_uri, opts, write=True),
    ]
    return [step() for step in steps]


def render(checks: Sequence[Check]) -> str:
    """The report: one row per check, a ``fix:`` line under each failure or warning."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<4}  {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            lines.append(f"{'':<{width}}        fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append("")
    lines.append(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all checks passed")
    return "\n".join(lines)


@click.command("doctor")
@click.option(
    "--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder (default: the setting)."
)
@click.option("--model", type=click.Path(path_type=Path), help="A model artifact to load.")
@click.option("--input", "input_uri", help="Notes table URI to check (read).")
@click.option("--output", "output_uri", help="Output folder URI to check (read and write).")
@click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Storage option for --input/--output (delta-rs keys); secret values are never printed.",
)
@click.option("--skip-spark", is_flag=True, help="Do not start a local Spark session.")
@click.option(
    "--lock", type=click.Path(path_type=Path), help="Lock file to compare with [default: requirements.lock]."
)
def doctor(
    corpus: Path | None,
    model: Path | None,
    input_uri: str | None,
    output_uri: str | None,
    storage_options: tuple[str, ...],
    skip_spark: bool,
    lock: Path | None,
) -> None:
    """Check Python, packages, Java, Spark, torch, the corpus, a model and storage; say how to fix
    what fails. Exit status 1 when a check failed."""
    options = parse_storage_options(storage_options)
    checks = run_checks(corpus, model, input_uri, output_uri, options, spark=not skip_spark, lock=lock)
    click.echo(_scrub(render(checks), options))
    if any(c.status == FAIL for c in checks):
        raise click.exceptions.Exit(1)
