"""Shipping the model artifact to the executors: one zip per artifact state, added with ``addArchive``.

Spark unpacks an archive beside each executor (``SparkFiles``); ``addFile`` refuses local folders
on cluster masters, so the artifact folder travels as a zip. The executor side finds the unpacked
copy through ``executor.resolve_artifact``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from medner_udf.extraction.tables import TableError
from medner_udf.taggers.artifact import read_info

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CACHE_FOLDER = "medner-shipped-artifacts"


def artifact_archive(model: str | Path) -> Path:
    """The zip of the artifact folder ``model``, built once per artifact state.

    The zip lives in one cache folder under the system temp dir, named by the artifact's path,
    version and files (size, mtime): a nightly job re-uses it instead of leaving a new copy behind
    at every run, and Spark can still serve it to executors that join later in the session.
    """
    path = Path(model).resolve()
    info = read_info(path)
    stamp = sorted(
        (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in path.rglob("*")
        if f.is_file()
    )
    digest = hashlib.sha256(f"{path}|{info.version}|{stamp}".encode()).hexdigest()[:10]
    name = f"medner-model-{info.name}-{info.version}-{digest}"
    cache = Path(tempfile.gettempdir()) / CACHE_FOLDER
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}.zip"
    if not archive.exists():
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
        try:
            built = shutil.make_archive(str(staging / name), "zip", root_dir=path)
            Path(built).replace(archive)  # atomic: a concurrent job sees the whole zip or none
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return archive


def ship_artifact(spark: SparkSession, model: str | Path) -> str:
    """Ship the artifact folder to every executor; returns the SparkFiles name under which the
    unpacked folder appears on the workers (``TaskConfig.shipped_name``)."""
    archive = artifact_archive(model)
    try:
        spark.sparkContext.addArchive(str(archive))
    except Exception as exc:
        # Re-adding the same archive in one session (a second run) is harmless.
        if "already" not in str(exc).lower():
            raise TableError(f"could not ship model artifact {model} to the executors: {exc}") from exc
    return archive.name
