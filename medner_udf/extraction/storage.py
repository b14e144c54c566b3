"""Storage by URI: local paths, ``file://``, ``s3://``, ``gs://``, ``abfs[s]://`` and ``hdfs://``.

One place turns a location and the user's storage options into what each library wants:

- a pyarrow filesystem and the path inside it (``filesystem``), for the executors' reads and writes
  and the driver's small reads (Parquet footers, status files, the model artifact);
- delta-rs ``storage_options`` (``delta_options``), for the driver's listing and commits.

Options use delta-rs's (object_store's) key names, case-insensitive, e.g. ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AZURE_STORAGE_ACCOUNT_NAME``;
every option goes to delta-rs as given, and the ones pyarrow has a parameter for are mapped onto
it. Without options, each SDK finds credentials the way it does by default (environment, profile,
instance metadata).

Secrets: an option whose key looks secret (``SECRET_WORDS``) is shown as ``***`` wherever medner
prints options, and its value is scrubbed from every error message that passes through ``scrub``
(SDK errors can echo an access key id). Nothing here imports Spark; executors import it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medner_udf.errors import MednerError, MednerUsageError
from medner_udf.errors import StorageError as BaseStorageError

# Scheme -> the family of filesystem that serves it ("file" covers plain local paths too).
SCHEMES = {
    "file": "local",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
    "az": "azure",
    "hdfs": "hdfs",
}
SECRET_WORDS = ("secret", "key", "token", "password", "credential", "sas", "signature")
REDACTED = "***"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageError(BaseStorageError, ValueError):
    """A location that cannot be reached or used: missing bucket, refused credentials, a path that
    holds something else. The message names the location (never a secret)."""


class StorageUsageError(MednerUsageError, ValueError):
    """A location or storage option that is malformed: unknown scheme, ``KEY=VALUE`` without ``=``."""


# ---------------------------------------------------------------------------------------------------
# Options and secrets


def is_secret_key(key: str) -> bool:
    """Whether an option key looks like it holds a credential (matched case-insensitively)."""
    low = key.lower()
    return any(word in low for word in SECRET_WORDS)


def redact_options(options: Mapping[str, str]) -> dict[str, str]:
    """``options`` fit to print: values of secret-looking keys replaced by ``***``."""
    return {k: (REDACTED if is_secret_key(k) else v) for k, v in options.items()}


def scrub(text: str, options: Mapping[str, str]) -> str:
    """``text`` with the value of every secret-looking option replaced by ``***``."""
    for key, value in options.items():
        if is_secret_key(key) and value and len(value) >= 3:
            text = text.replace(value, REDACTED)
    return text


def parse_storage_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--storage-option``, repeatable) as a dict; the last one of a key wins."""
    out: dict[str, str] = {}
    for n, pair in enumerate(pairs, start=1):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            # The text itself is not shown: a mistyped option may be a bare secret.
            raise StorageUsageError(f"storage option number {n} must be KEY=VALUE (it has no key)")
        out[key.strip()] = value
    return out


def _opt(options: Mapping[str, str], *names: str) -> str | None:
    low = {k.lower(): v for k, v in options.items()}
    for name in names:
        if name in low and low[name] != "":
            return low[name]
    return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------------
# Locations


@dataclass(frozen=True)
class Location:
    """A storage location: ``uri`` is an absolute local path (no scheme) or ``scheme://...``."""

    uri: str
    scheme: str  # "file" for local paths

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def family(self) -> str:
        return SCHEMES[self.scheme]

    def join(self, *parts: str) -> Location:
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if self.is_local:
            return Location(os.path.join(self.uri, *tail.split("/")) if tail else self.uri, "file")
        return Location(f"{self.uri.rstrip('/')}/{tail}" if tail else self.uri, self.scheme)

    def file_uri(self) -> str:
        """A URI every reader takes: ``file://`` for local paths, the URI itself otherwise."""
        return f"file://{self.uri}" if self.is_local else self.uri

    def __str__(self) -> str:
        return self.uri


def location(value: str | Path, what: str = "location") -> Location:
    """``value`` as a Location; an unknown scheme fails naming the value and the known ones."""
    text = str(value)
    if not text.strip():
        raise StorageUsageError(f"{what} is empty; expected a path or a URI")
    m = _SCHEME_RE.match(text)
    if m is None:
        return Location(os.path.abspath(text), "file")
    scheme = m.group(1).lower()
    if scheme not in SCHEMES:
        raise StorageUsageError(
            f"{what} {text!r} has the unknown URI scheme {scheme!r}; expected a local path or one of "
            f"{', '.join(s + '://' for s in sorted(SCHEMES))}"
        )
    if scheme == "file":
        return Location(os.path.abspath(text[len("file://") :]), "file")
    rest = text[m.end() :]
    if not rest.split("/", 1)[0]:
        raise StorageUsageError(
            f"{what} {text!r} names no bucket or container; expected {scheme}://<name>/..."
        )
    return Location(f"{scheme}://{rest.rstrip('/')}", scheme)


def is_remote(value: str | Path) -> bool:
    return not location(value).is_local


# ---------------------------------------------------------------------------------------------------
# pyarrow filesystems and delta-rs options


def _s3(loc: Location, options: Mapping[str, str]) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {}
    endpoint = _opt(options, "aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme in ("http", "https"):
            kwargs["scheme"] = parts.scheme
            kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint
    access = _opt(options, "aws_access_key_id", "access_key_id")
    secret = _opt(options, "aws_secret_access_key", "secret_access_key")
    if access and secret:
        kwargs["access_key"], kwargs["secret_key"] = access, secret
        token = _opt(options, "aws_session_token", "session_token", "aws_token", "token")
        if token:
            kwargs["session_token"] = token
    region = _opt(options, "aws_region", "region", "aws_default_region")
    if region:
        kwargs["region"] = region
    if _truthy(_opt(options, "aws_skip_signature", "skip_signature", "anonymous")):
        kwargs["anonymous"] = True
    if _truthy(_opt(options, "aws_virtual_hosted_style_request", "virtual_hosted_style_request")):
        kwargs["force_virtual_addressing"] = True
    kwargs.setdefault(
        "retry_strategy", pafs.AwsStandardS3RetryStrategy(max_attempts=int(_opt(options, "max_retries") or 3))
    )
    path = loc.uri.split("://", 1)[1]
    return pafs.S3FileSystem(**kwargs), path


def _gcs(loc: Location, options: Mapping[str, str]) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {}
    endpoint = _opt(options, "google_endpoint_url", "gcs_endpoint_url", "endpoint_url", "endpoint")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme in ("http", "https"):
            kwargs["scheme"], kwargs["endpoint_override"] = parts.scheme, parts.netloc
        else:
            kwargs["endpoint_override"] = endpoint
    if _truthy(_opt(options, "google_skip_signature", "skip_signature", "anonymous")):
        kwargs["anonymous"] = True
    return pafs.GcsFileSystem(**kwargs), loc.uri.split("://", 1)[1]


def _azure(loc: Location, options: Mapping[str, str]) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    parts = urlsplit(loc.uri)
    container, _, host = parts.netloc.partition("@")
    account = _opt(options, "azure_storage_account_name", "account_name") or (
        host.split(".", 1)[0] if host else None
    )
    if not account:
        raise StorageUsageError(
            f"{loc.uri!r} names no storage account; expected abfss://<container>@<account>.dfs.core.windows.net/"
            "... or the storage option AZURE_STORAGE_ACCOUNT_NAME"
        )
    kwargs: dict[str, Any] = {"account_name": account}
    key = _opt(options, "azure_storage_account_key", "azure_storage_access_key", "account_key", "access_key")
    if key:
        kwargs["account_key"] = key
    sas = _opt(options, "azure_storage_sas_token", "sas_token", "sas_key")
    if sas:
        kwargs["sas_token"] = sas
    client_id = _opt(options, "azure_client_id", "client_id")
    client_secret = _opt(options, "azure_client_secret", "client_secret")
    tenant = _opt(options, "azure_tenant_id", "tenant_id")
    if client_id and client_secret and tenant:
        kwargs.update(client_id=client_id, client_secret=client_secret, tenant_id=tenant)
    endpoint = _opt(options, "azure_storage_endpoint", "azure_endpoint", "endpoint")
    if endpoint:
        ep = urlsplit(endpoint)
        kwargs.update(blob_storage_authority=ep.netloc, dfs_storage_authority=ep.netloc)
        kwargs.update(blob_storage_scheme=ep.scheme or "https", dfs_storage_scheme=ep.scheme or "https")
    return pafs.AzureFileSystem(**kwargs), f"{container}{parts.path}".rstrip("/")


def filesystem(loc: Location, options: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for ``loc`` with the storage options applied."""
    from pyarrow import fs as pafs

    opts = options or {}
    try:
        if loc.is_local:
            return pafs.LocalFileSystem(), loc.uri
        if loc.family == "s3":
            return _s3(loc, opts)
        if loc.family == "gcs":
            return _gcs(loc, opts)
        if loc.family == "azure":
            return _azure(loc, opts)
        fs, path = pafs.FileSystem.from_uri(loc.uri)  # hdfs: libhdfs and the Hadoop environment
        return fs, str(path)
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, MednerError):
            raise
        raise StorageError(f"cannot open a filesystem for {loc.uri}: {scrub(str(exc), opts)}") from exc


def delta_options(loc: Location, options: Mapping[str, str] | None) -> dict[str, str] | None:
    """delta-rs ``storage_options`` for ``loc``: the user's options, plus ``AWS_ALLOW_HTTP`` when an
    ``http://`` endpoint was given (delta-rs refuses plain HTTP otherwise)."""
    if loc.is_local:
        return None
    out = dict(options or {})
    endpoint = _opt(out, "aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    if endpoint and endpoint.startswith("http://") and _opt(out, "aws_allow_http", "allow_http") is None:
        out["AWS_ALLOW_HTTP"] = "true"
    return out


# ---------------------------------------------------------------------------------------------------
# Checks that run before any work


def _classify(
    exc: BaseException,
    loc: Location,
    options: Mapping[str, str],
    what: str,
    failed: str = "cannot be reached",
) -> StorageError:
    msg = scrub(str(exc), options)
    low = msg.lower()
    # Status codes as whole words only: object keys hold hex run ids and uuids ("...a403f...").
    if re.search(r"\b40[13]\b", low) or any(
        s in low
        for s in (
            "access denied",
            "access_denied",
            "forbidden",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "authorization",
            "unauthorized",
        )
    ):
        return StorageError(
            f"{what} {loc.uri}: the storage service refused the credentials (access denied); check the "
            "credentials in the environment or the storage options (not shown)"
        )
    if "nosuchbucket" in low or "bucket does not exist" in low or "containernotfound" in low:
        return StorageError(f"{what} {loc.uri}: the bucket or container does not exist")
    return StorageError(
        f"{what} {loc.uri} {failed}: {_reason(msg, options) or type(exc).__name__}", hint=REACH_HINT
    )


# A Spark task that failed in its Python worker reaches the driver as a PythonException (or a
# Py4JJavaError around one) whose text ends with the worker's traceback; its last line of one of
# these types is a storage failure inside the task.
_TASK_STORAGE_LINE = re.compile(
    r"^(?:[\w.]+\.)?(OSError|IOError|ArrowIOError|FileNotFoundError|PermissionError|TimeoutError|"
    r"ConnectionError|ConnectionResetError|ConnectionRefusedError|BrokenPipeError|StorageError): (.+)$",
    re.MULTILINE,
)
_SPARK_TASK_ERRORS = ("PythonException", "Py4JJavaError", "SparkException")
# delta-rs (object_store) texts of a storage failure, as opposed to a protocol or schema error.
_OBJECT_STORE_WORDS = (
    "object store",
    "objectstore",
    "generic s3 error",
    "generic azure error",
    "generic gcs error",
    "error sending request",
    "error performing",
    "connection",
    "timed out",
    "timeout",
    "service unavailable",
    "serviceunavailable",
    "slowdown",
    "internal error",
    "internalerror",
    "status: 5",
)
REACH_HINT = (
    "check the endpoint, the network and the storage service's health, then re-run: a run that "
    "failed commits nothing that a re-run does not replace"
)
MID_RUN_HINT = (
    "the storage service failed or could not be reached while the job ran; every table is at a "
    'committed version (docs/extraction.md, "Commits"), so re-run the job once the storage answers again'
)


def _reason(text: str, options: Mapping[str, str]) -> str:
    lines = [ln.strip() for ln in scrub(text, options).strip().splitlines() if ln.strip()]
    reason = lines[0] if lines else ""
    return reason if len(reason) <= 300 else reason[:297] + "..."


def storage_failure(
    exc: BaseException, locations: Mapping[str, Location], options: Mapping[str, str] | None
) -> StorageError | None:
    """``exc`` as a ``StorageError`` when it is a storage failure met while a job ran, else None.

    Storage failures are an ``OSError`` (pyarrow's filesystems and delta-rs raise them for an
    object store that fails, times out or refuses), a delta-rs ``DeltaError`` whose text is an
    object-store error, and a Spark task that failed with one of these in its Python worker. The
    message names the location the failure concerns (the first of ``locations``, ``{what: location}``,
    whose path the error text mentions, else the first one), says which way it failed (credentials refused,
    missing bucket, or the first line of the SDK's text with secrets scrubbed), never a traceback.
    A ``MednerError`` is already fit to show: None.
    """
    if isinstance(exc, MednerError) or not locations:
        return None
    opts = options or {}
    text = str(exc)
    if type(exc).__name__ in _SPARK_TASK_ERRORS:
        found = _TASK_STORAGE_LINE.findall(text)
        if not found:
            return None
        text = found[-1][1]
    elif not isinstance(exc, OSError):
        try:
            from deltalake.exceptions import CommitFailedError, DeltaError
        except ImportError:  # pragma: no cover - deltalake is a dependency
            return None
        if not isinstance(exc, DeltaError) or isinstance(exc, CommitFailedError):
            return None
        if not any(w in text.lower() for w in _OBJECT_STORE_WORDS):
            return None
    what, loc = next(
        ((w, x) for w, x in locations.items() if x.uri.split("://", 1)[-1].rstrip("/") in text),
        next(iter(locations.items())),
    )
    classified = _classify(_TextError(text), loc, opts, what, failed="failed while the job ran")
    return StorageError(str(classified), hint=MID_RUN_HINT)


class _TextError(Exception):
    """An error text handed to ``_classify``."""


def file_type(loc: Location, options: Mapping[str, str] | None, what: str = "location") -> str:
    """``missing``, ``file`` or ``dir`` for ``loc``; a missing bucket or refused credentials fail."""
    from pyarrow import fs as pafs

    opts = options or {}
    fs, path = filesystem(loc, opts)
    try:
        if not loc.is_local and loc.family in ("s3", "gcs", "azure"):
            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StorageError(f"{what} {loc.uri}: the bucket or container {bucket!r} does not exist")
        kind = fs.get_file_info(path).type
    except MednerError:
        raise
    except OSError as exc:
        raise _classify(exc, loc, opts, what) from exc
    if kind == pafs.FileType.NotFound:
        return "missing"
    return "dir" if kind == pafs.FileType.Directory else "file"


def list_files(
    loc: Location, options: Mapping[str, str] | None, what: str = "location"
) -> list[tuple[str, int]]:
    """(path relative to ``loc``, size) of every file under ``loc``, sorted."""
    from pyarrow import fs as pafs

    opts = options or {}
    fs, base = filesystem(loc, opts)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise _classify(exc, loc, opts, what) from exc
    prefix = base.rstrip("/") + "/"
    out = [
        (i.path[len(prefix) :] if i.path.startswith(prefix) else i.path, int(i.size or 0))
        for i in infos
        if i.type == pafs.FileType.File
    ]
    return sorted(out)


# ---------------------------------------------------------------------------------------------------
# Bringing a folder (the model artifact) to local disk


ARTIFACT_CACHE = "medner-artifact-cache"


def local_copy(
    loc: Location, options: Mapping[str, str] | None, marker: str, what: str, cache_root: str | None = None
) -> Path:
    """A local copy of the folder at ``loc`` (the folder itself when local).

    The copy lives in a cache folder named by the URI and the remote files' names and sizes, so a
    nightly job downloads an artifact once; it is filled in a staging folder and renamed into place,
    so a concurrent process sees the whole folder or none. ``marker`` must be among the files
    (``artifact.json``), else the location is not what was asked for and nothing is downloaded.
    """
    if loc.is_local:
        return Path(loc.uri)
    opts = options or {}
    kind = file_type(loc, opts, what)
    files = list_files(loc, opts, what) if kind == "dir" else []
    if kind == "missing" or not any(rel == marker for rel, _ in files):
        raise StorageError(f"{what} {loc.uri} is not a medner model artifact (no {marker} in it)")
    digest = hashlib.sha256(f"{loc.uri}|{files}".encode()).hexdigest()[:16]
    root = Path(cache_root or tempfile.gettempdir()) / ARTIFACT_CACHE
    target = root / digest
    if (target / marker).is_file():
        os.utime(target)  # last use, for prune_cache
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex}"
    fs, base = filesystem(loc, opts)
    try:
        for rel, _ in files:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{base.rstrip('/')}/{rel}") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        try:
            staging.rename(target)
        except OSError:  # another process put it there first; theirs is the same files
            if not (target / marker).is_file():
                raise
    except OSError as exc:
        raise _classify(exc, loc, opts, what) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_cache(root, keep=CACHE_KEEP, min_idle_s=CACHE_MIN_IDLE_S)
    return target


# The artifact cache keeps the most recently used copies; older ones go once idle for a day (a
# copy in use by a job that started earlier is never that old: every use touches it).
CACHE_KEEP = 4
CACHE_MIN_IDLE_S = 24 * 3600


def prune_cache(root: Path, keep: int, min_idle_s: float, now: float | None = None) -> list[Path]:
    """Remove cached artifact copies (and abandoned staging folders) beyond the ``keep`` most
    recently used that have not been used for ``min_idle_s`` seconds; returns what was removed.
    Each new download prunes, so a nightly job whose model changes does not fill the disk."""
    import time

    now = time.time() if now is None else now
    try:
        entries = sorted(
            (e for e in root.iterdir() if e.is_dir()), key=lambda e: e.stat().st_mtime, reverse=True
        )
    except OSError:
        return []
    removed = []
    copies = [e for e in entries if not e.name.startswith(".staging-")]
    stale = copies[keep:] + [e for e in entries if e.name.startswith(".staging-")]
    for entry in stale:
        try:
            idle = now - entry.stat().st_mtime
        except OSError:
            continue
        if idle >= min_idle_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
