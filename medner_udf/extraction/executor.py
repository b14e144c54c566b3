"""The executor side of the extraction job: tag notes in pandas batches and write table files.

Everything here runs inside Spark's Python workers through ``DataFrame.mapInPandas``, but it is
plain pandas/pyarrow code: importing it needs no Spark session, no GPU and no model file, and the
tests call it on pandas data directly.

Operational facts (after Spark's ``predict_batch_udf``/``ModelCache``):

- The model is loaded once per Python worker and kept in ``MODEL_CACHE``, a module-level cache in
  this installed module, keyed by (artifact path, device). It survives across tasks only when
  ``spark.python.worker.reuse`` is true (Spark's default); an idle worker that Spark kills loses it.
- Device: the GPU address Spark assigned to the task (``TaskContext.resources()["gpu"]``), else
  CUDA when torch sees one, else the CPU with torch threads set to the task's cores
  (``spark.task.cpus``), so N concurrent tasks do not oversubscribe the executor's cores.
- Notes are sorted by length and cut into micro-batches bounded both in notes (``batch_size``) and
  in characters (``max_batch_chars``); a single note longer than the character bound is tagged
  alone, never truncated.
- One record's failure never fails the task: it becomes an ``error`` status row whose message
  names the exception type and the note's length, never its text (notes are patient data).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medner_udf.extraction.schemas import (
    ACTION_DUPLICATE,
    ACTION_NULL_ID,
    ACTION_SKIP,
    ACTION_TAG,
    EMPTY,
    ENTITIES_SCHEMA,
    ENTITIES_TABLE,
    ERROR,
    INPUT_COLUMNS,
    OK,
    SKIPPED,
    STATUS_SCHEMA,
    STATUS_TABLE,
    WRITTEN_FILES_COLUMNS,
)
from medner_udf.taggers.base import Tagger
from medner_udf.text.types import Entity

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# Configuration shipped to the executors


@dataclass(frozen=True)
class TaskConfig:
    """What an executor task needs to tag and write: the artifact, batch bounds and the run's
    identity. Pickled into the ``mapInPandas`` closure, so it stays small and plain."""

    artifact: str
    model_name: str
    model_version: str
    run_id: str = "adhoc"
    run_seq: int = 0
    batch_size: int = 32
    max_batch_chars: int = 200_000
    # Segments (BiLSTM) or windows (transformer) per forward pass inside the tagger; None = the
    # tagger's own default. GPU executors want it large (docs/training.md, GPU).
    tagger_batch_size: int | None = None
    # Name under which the driver shipped the artifact (shipping.ship_artifact); None = use
    # ``artifact`` as a path every executor can read.
    shipped_name: str | None = None
    entities_uri: str | None = None
    status_uri: str | None = None
    # pyarrow filesystem / delta-rs options for the tables and a model URI; kept out of repr so a
    # logged config never shows a credential.
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_chars < 1:
            raise ValueError(f"max_batch_chars must be >= 1, got {self.max_batch_chars}")
        if self.tagger_batch_size is not None and self.tagger_batch_size < 1:
            raise ValueError(f"tagger_batch_size must be >= 1, got {self.tagger_batch_size}")


# ---------------------------------------------------------------------------------------------------
# Device selection and the per-worker model cache


def choose_device(gpu_addresses: Sequence[str], cuda_available: bool) -> str:
    """The torch device for a task: its Spark-assigned GPU, else any CUDA device, else the CPU.

    A GPU address from Spark without CUDA in torch is a cluster misconfiguration (a CPU torch build
    on a GPU node); it fails loudly rather than silently running a GPU job on the CPU.
    """
    if gpu_addresses:
        if not cuda_available:
            raise RuntimeError(
                f"Spark assigned GPU address {gpu_addresses[0]!r} to this task but torch sees no CUDA "
                "device; install a CUDA build of torch on the executors or drop the GPU resource request"
            )
        return f"cuda:{gpu_addresses[0]}"
    return "cuda" if cuda_available else "cpu"


def task_resources() -> tuple[list[str], int]:
    """(GPU addresses, cpus) of the running Spark task; ([], 1) outside Spark."""
    try:
        from pyspark import TaskContext
    except ImportError:  # pragma: no cover - pyspark is a dependency; pure pandas use still works
        return [], 1
    ctx = TaskContext.get()
    if ctx is None:
        return [], 1
    gpu = ctx.resources().get("gpu")
    return (list(gpu.addresses) if gpu is not None else []), max(1, int(ctx.cpus()))


def task_device() -> str:
    """``choose_device`` for the running task; on the CPU also pins torch threads to its cores."""
    import torch

    gpus, cpus = task_resources()
    device = choose_device(gpus, torch.cuda.is_available())
    if device == "cpu" and torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)
    return device


class ModelCache:
    """Taggers loaded in this process, keyed by (artifact path, device).

    Loading is under a lock: a worker that runs several Python threads still loads each model once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], Tagger] = {}

    def get(self, artifact: str, device: str) -> Tagger:
        key = (artifact, device)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                from medner_udf.taggers.base import load_tagger

                started = time.perf_counter()
                model = load_tagger(artifact, device=device)
                self._models[key] = model
                log.info(
                    "pid %d loaded model %s/%s on %s in %.2fs",
                    os.getpid(),
                    model.name,
                    model.version,
                    device,
                    time.perf_counter() - started,
                )
            return model

    def clear(self) -> None:
        """Forget every loaded model (the next ``get`` loads again)."""
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()


def resolve_artifact(cfg: TaskConfig) -> str:
    """Where the artifact lies on this worker: the unpacked copy Spark shipped (inside a task), or
    ``cfg.artifact`` when nothing was shipped or outside Spark (pandas tests).

    Inside a task a missing shipped copy is an error, not a silent fallback to the driver's path,
    which on a cluster would not exist on the executor.
    """
    if cfg.shipped_name is None:
        from medner_udf.extraction.storage import local_copy, location

        # A model URI that was not shipped: each worker downloads it once into its own cache.
        return str(local_copy(location(cfg.artifact, "model"), cfg.storage_options, "artifact.json", "model"))
    from pyspark import SparkFiles, TaskContext

    if TaskContext.get() is None:
        return cfg.artifact
    local = Path(SparkFiles.get(cfg.shipped_name))
    if not (local / "artifact.json").is_file():
        raise FileNotFoundError(f"shipped model artifact {cfg.shipped_name} is not unpacked at {local}")
    return str(local)


# ---------------------------------------------------------------------------------------------------
# Tagging


def micro_batches(lengths: Sequence[int], batch_size: int, max_chars: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped shortest first, each group at most ``batch_size`` items and
    ``max_chars`` characters (a single longer item forms its own group). Every index appears once."""
    if batch_size < 1 or max_chars < 1:
        raise ValueError(f"batch_size and max_chars must be >= 1, got {batch_size}, {max_chars}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    chars = 0
    for i in order:
        if current and (len(current) >= batch_size or chars + lengths[i] > max_chars):
            batches.append(current)
            current, chars = [], 0
        current.append(i)
        chars += lengths[i]
    if current:
        batches.append(current)
    return batches


def _check_entities(text: str, entities: Sequence[Entity]) -> str | None:
    """None when every entity honours the offsets/score contract, else a text-free reason."""
    n = len(text)
    for e in entities:
        if not (0 <= e.begin < e.end <= n):
            return f"tagger returned offsets {e.begin}-{e.end} outside the note (length {n})"
        if text[e.begin : e.end] != e.text:
            return f"tagger returned entity text that differs from the note at {e.begin}-{e.end}"
        if not 0.0 <= e.score <= 1.0:
            return f"tagger returned score {e.score!r} outside [0, 1]"
    return None


def _unpaired_surrogate(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


@dataclass
class TaggedRecords:
    """Columnar result of tagging one input frame: status columns plus flat entity columns."""

    status: dict[str, list[Any]]
    entities: dict[str, list[Any]]


def _tag_safely(tagger: Tagger, texts: list[str], batch_size: int | None = None) -> list[list[Entity] | str]:
    """Tag a micro-batch; if the batch fails, tag its notes one by one so only the bad ones fail.

    The tagger batches the notes' segments itself (``batch_size`` segments or windows per forward
    pass; None: its own default): ``cfg.batch_size`` counts notes per micro-batch.

    A failure becomes a message naming the exception type and the note's length: exception
    messages from models can quote their input, so their text is never kept.
    """
    try:
        return list(tagger.tag(texts, batch_size=batch_size))
    except Exception:  # isolate the failing record(s) below
        log.warning("a batch of %d notes failed; retrying them one by one", len(texts))
    out: list[list[Entity] | str] = []
    for text in texts:
        try:
            out.append(list(tagger.tag([text], batch_size=batch_size)[0]))
        except Exception as exc:  # one bad record must not fail the task
            out.append(f"{type(exc).__name__} while tagging a note of {len(text)} characters")
    return out


def tag_records(frame: pd.DataFrame, tagger: Tagger | None, cfg: TaskConfig) -> TaggedRecords:
    """Decide the status of every row of ``frame`` (columns ``INPUT_COLUMNS``) and tag those to tag.

    ``tagger`` may be None when no row has action ``tag`` (the model is then never loaded).
    """
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"input frame lacks columns {missing}; it has {list(frame.columns)}")
    n = len(frame)
    record_ids: list[str | None] = [None if pd.isna(x) else str(x) for x in frame["record_id"]]
    # Missing text arrives as None or NaN depending on the column's pandas dtype.
    texts: list[str | None] = [x if isinstance(x, str) else None for x in frame["text"]]
    hashes: list[str | None] = [None if pd.isna(x) else str(x) for x in frame["note_hash"]]
    actions = list(frame["action"])
    n_rows = [int(x) if not pd.isna(x) else 1 for x in frame["n_rows"]]

    status: list[str] = [""] * n
    errors: list[str | None] = [None] * n
    found: list[list[Entity]] = [[] for _ in range(n)]
    to_tag: list[int] = []
    for i in range(n):
        action, text = actions[i], texts[i]
        if action == ACTION_SKIP:
            status[i] = SKIPPED
        elif action == ACTION_NULL_ID:
            status[i], errors[i] = ERROR, "record_id is null"
        elif action == ACTION_DUPLICATE:
            status[i] = ERROR
            errors[i] = f"duplicate record_id: {n_rows[i]} input rows share it; none was tagged"
        elif action != ACTION_TAG:
            status[i], errors[i] = ERROR, f"unknown action {action!r}"
        elif text is None or not text.strip():
            status[i] = EMPTY
        elif (pos := _unpaired_surrogate(text)) is not None:
            status[i] = ERROR
            errors[i] = f"note is not valid Unicode: unpaired surrogate at offset {pos}"
        else:
            to_tag.append(i)

    if to_tag:
        if tagger is None:
            raise ValueError("tag_records needs a tagger when rows have action 'tag'")
        lengths = [len(texts[i] or "") for i in to_tag]
        for group in micro_batches(lengths, cfg.batch_size, cfg.max_batch_chars):
            rows = [to_tag[j] for j in group]
            batch_texts = [texts[i] or "" for i in rows]
            for i, text, result in zip(
                rows, batch_texts, _tag_safely(tagger, batch_texts, cfg.tagger_batch_size), strict=True
            ):
                if isinstance(result, str):
                    status[i], errors[i] = ERROR, result
                    continue
                problem = _check_entities(text, result)
                if problem is not None:
                    status[i], errors[i] = ERROR, problem
                    continue
                status[i] = OK
                found[i] = sorted(result, key=lambda e: (e.begin, e.end, e.label))

    ent: dict[str, list[Any]] = {name: [] for name in ENTITIES_SCHEMA.names}
    for i in range(n):
        for e in found[i]:
            ent["record_id"].append(record_ids[i])
            ent["begin"].append(e.begin)
            ent["end"].append(e.end)
            ent["text"].append(e.text)
            ent["label"].append(e.label)
            ent["score"].append(float(e.score))
            ent["note_hash"].append(hashes[i])
    n_ent = len(ent["record_id"])
    ent["model_name"] = [cfg.model_name] * n_ent
    ent["model_version"] = [cfg.model_version] * n_ent
    ent["run_id"] = [cfg.run_id] * n_ent

    st: dict[str, list[Any]] = {
        "record_id": record_ids,
        "note_hash": hashes,
        "status": status,
        "n_entities": [len(f) for f in found],
        "error": errors,
        "n_chars": [None if t is None else len(t) for t in texts],
        "model_name": [cfg.model_name] * n,
        "model_version": [cfg.model_version] * n,
        "run_id": [cfg.run_id] * n,
        "run_seq": [cfg.run_seq] * n,
    }
    return TaggedRecords(st, ent)


def _needs_model(frame: pd.DataFrame) -> bool:
    return bool((frame["action"] == ACTION_TAG).any())


def _model_for(cfg: TaskConfig) -> Tagger:
    return MODEL_CACHE.get(resolve_artifact(cfg), task_device())


def tag_frame(frame: pd.DataFrame, cfg: TaskConfig, tagger: Tagger | None = None) -> pd.DataFrame:
    """One row per input row (``TAGGED_SCHEMA_DDL``), entities nested; the model comes from the
    worker cache unless ``tagger`` is given."""
    if tagger is None and _needs_model(frame):
        tagger = _model_for(cfg)
    tagged = tag_records(frame, tagger, cfg)
    by_record: list[list[dict[str, Any]]] = [[] for _ in range(len(frame))]
    # Entities are emitted in row order, so walk them alongside the rows.
    k = 0
    ent = tagged.entities
    for i, count in enumerate(tagged.status["n_entities"]):
        for j in range(k, k + count):
            by_record[i].append({f: ent[f][j] for f in ("begin", "end", "text", "label", "score")})
        k += count
    st = tagged.status
    return pd.DataFrame(
        {
            "record_id": st["record_id"],
            "note_hash": st["note_hash"],
            "status": st["status"],
            "n_entities": pd.array(st["n_entities"], dtype="int32"),
            "error": st["error"],
            "n_chars": pd.array(st["n_chars"], dtype="Int64"),
            "entities": by_record,
        }
    )


def tag_batches(batches: Iterator[pd.DataFrame], cfg: TaskConfig) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` function returning ``TAGGED_SCHEMA_DDL`` rows (nothing written)."""
    for frame in batches:
        yield tag_frame(frame, cfg)


# ---------------------------------------------------------------------------------------------------
# Writing table files from the executors


class _StreamingFile:
    """A Parquet file written row group by row group, so worker memory does not grow with the
    partition; opened on the first non-empty batch only."""

    def __init__(
        self,
        table_uri: str,
        table: str,
        schema: pa.Schema,
        run_id: str,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.table_uri, self.table, self.schema, self.run_id = table_uri, table, schema, run_id
        self.storage_options = storage_options or {}
        self.writer: pq.ParquetWriter | None = None
        self.rel_path = ""
        self.fs: Any = None
        self.full_path = ""
        self.rows = 0

    def write(self, columns: dict[str, list[Any]]) -> None:
        batch = pa.RecordBatch.from_pydict(columns, schema=self.schema)
        if batch.num_rows == 0:
            return
        if self.writer is None:
            from medner_udf.extraction.storage import filesystem, location

            self.fs, base = filesystem(location(self.table_uri, "table"), self.storage_options)
            self.fs.create_dir(base, recursive=True)
            self.rel_path = f"part-{self.run_id}-{uuid.uuid4().hex}.zstd.parquet"
            self.full_path = f"{base.rstrip('/')}/{self.rel_path}"
            self.writer = pq.ParquetWriter(
                self.full_path, self.schema, filesystem=self.fs, compression="zstd"
            )
        self.writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> dict[str, Any] | None:
        if self.writer is None:
            return None
        self.writer.close()
        info = self.fs.get_file_info(self.full_path)
        mtime = int(info.mtime.timestamp() * 1000) if info.mtime is not None else int(time.time() * 1000)
        return {
            "table": self.table,
            "path": self.rel_path,
            "size": int(info.size),
            "num_records": self.rows,
            "modification_time": mtime,
        }


def write_batches(batches: Iterator[pd.DataFrame], cfg: TaskConfig) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` function: tag every batch, stream entities and status rows into one Parquet
    file per table for this task, and return the files' metadata (``WRITTEN_FILES_DDL``).

    The files are not part of any table until the driver commits them; a failed or retried task
    leaves only unreferenced files, which readers never see.
    """
    if cfg.entities_uri is None or cfg.status_uri is None:
        raise ValueError("write_batches needs cfg.entities_uri and cfg.status_uri")
    opts = cfg.storage_options
    ent_file = _StreamingFile(cfg.entities_uri, ENTITIES_TABLE, ENTITIES_SCHEMA, cfg.run_id, opts)
    st_file = _StreamingFile(cfg.status_uri, STATUS_TABLE, STATUS_SCHEMA, cfg.run_id, opts)
    for frame in batches:
        tagger = _model_for(cfg) if _needs_model(frame) else None
        tagged = tag_records(frame, tagger, cfg)
        ent_file.write(tagged.entities)
        st_file.write(tagged.status)
        del frame, tagged  # drop this batch before the next one arrives
    written = [info for info in (ent_file.close(), st_file.close()) if info is not None]
    _release_memory()
    yield pd.DataFrame(written, columns=list(WRITTEN_FILES_COLUMNS))


def _release_memory() -> None:
    """Hand freed memory back after a task: a reused worker runs many tasks, and without this its
    resident size creeps up with the number of tasks (Arrow's allocator keeps freed pages)."""
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
