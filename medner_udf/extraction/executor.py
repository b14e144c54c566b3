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
- Clinical heads (``medner_udf.clinical``: assertion and relations, attached beside the tagger in
  its artifact) are loaded once per worker with the tagger and applied to each micro-batch's
  entities; a failure of the heads on one note makes that note an ``error`` row like a tagger
  failure. An artifact without heads writes null assertions and no relation rows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medner_udf.extraction import task_stats
from medner_udf.extraction.schemas import (
    ACTION_DUPLICATE,
    ACTION_NULL_ID,
    ACTION_SKIP,
    ACTION_TAG,
    ASSERTION_VALUES,
    EMPTY,
    ENTITIES_SCHEMA,
    ENTITIES_TABLE,
    ERROR,
    INPUT_COLUMNS,
    OK,
    RELATIONS_SCHEMA,
    RELATIONS_TABLE,
    SKIPPED,
    STATUS_SCHEMA,
    STATUS_TABLE,
    WRITTEN_FILES_COLUMNS,
)
from medner_udf.taggers.base import Tagger
from medner_udf.text.types import Entity

if TYPE_CHECKING:
    from medner_udf.clinical.base import ClinicalHeads

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
    relations_uri: str | None = None
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
        self._heads: dict[str, ClinicalHeads] = {}
        # Taggers and head sets loaded so far (cache misses): a task's share shows whether it
        # paid for loading or found them loaded (``TaskStats.model_loads``).
        self.loads = 0

    def get(self, artifact: str, device: str) -> Tagger:
        key = (artifact, device)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                from medner_udf.taggers.base import load_tagger

                started = time.perf_counter()
                model = load_tagger(artifact, device=device)
                self._models[key] = model
                self.loads += 1
                log.info(
                    "pid %d loaded model %s/%s on %s in %.2fs",
                    os.getpid(),
                    model.name,
                    model.version,
                    device,
                    time.perf_counter() - started,
                )
            return model

    def heads(self, artifact: str, tagger_labels: Sequence[str]) -> ClinicalHeads:
        """The assertion and relation heads attached to the artifact (``.empty`` when none), loaded
        once per process and checked against the tagger's labels (numpy models: no device)."""
        with self._lock:
            heads = self._heads.get(artifact)
            if heads is None:
                from medner_udf.clinical.base import load_heads

                started = time.perf_counter()
                heads = load_heads(artifact, tagger_labels)
                self._heads[artifact] = heads
                self.loads += 1
                log.info(
                    "pid %d loaded clinical heads (assertion: %s, relations: %s) in %.2fs",
                    os.getpid(),
                    heads.assertion is not None,
                    heads.relations is not None,
                    time.perf_counter() - started,
                )
            return heads

    def clear(self) -> None:
        """Forget every loaded model (the next ``get`` loads again)."""
        with self._lock:
            self._models.clear()
            self._heads.clear()


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
    relations: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in RELATIONS_SCHEMA.names}
    )


R = TypeVar("R")


def _batch_or_each(
    run: Callable[[list[int]], Sequence[R]], n: int, what: str, failure: Callable[[int], str]
) -> list[R | str]:
    """``run`` over items ``0..n-1`` at once; if that fails, item by item so only the bad ones fail,
    each as the text ``"<exception type> <failure(i)>"``.

    Exception messages from models can quote their input (a note), so their text is never kept.
    """
    try:
        return list(run(list(range(n))))
    except Exception:  # isolate the failing record(s) below
        log.warning("%s failed on a batch of %d notes; retrying them one by one", what, n)
    out: list[R | str] = []
    for i in range(n):
        try:
            out.append(run([i])[0])
        except Exception as exc:  # one bad record must not fail the task
            out.append(f"{type(exc).__name__} {failure(i)}")
    return out


def _tag_safely(tagger: Tagger, texts: list[str], batch_size: int | None = None) -> list[list[Entity] | str]:
    """Tag a micro-batch; if the batch fails, tag its notes one by one so only the bad ones fail.

    The tagger batches the notes' segments itself (``batch_size`` segments or windows per forward
    pass; None: its own default): ``cfg.batch_size`` counts notes per micro-batch.
    """
    return _batch_or_each(
        lambda idx: [list(e) for e in tagger.tag([texts[i] for i in idx], batch_size=batch_size)],
        len(texts),
        "the tagger",
        lambda i: f"while tagging a note of {len(texts[i])} characters",
    )


@dataclass(frozen=True)
class Clinical:
    """What the heads said about one note: an (assertion, score) per entity (None: no assertion
    model) and relations as (head index, tail index, type, score) into the note's entity list."""

    assertions: list[tuple[str, float]] | None
    relations: list[tuple[int, int, str, float]]


def _run_heads(heads: ClinicalHeads, texts: list[str], entities: list[list[Entity]]) -> list[Clinical]:
    assertions: list[list[tuple[str, float]] | None] = [None] * len(texts)
    if heads.assertion is not None:
        found = heads.assertion.classify(texts, entities)
        assertions = [[(a.status, float(a.score)) for a in note] for note in found]
    relations: list[list[tuple[int, int, str, float]]] = [[] for _ in texts]
    if heads.relations is not None:
        found_rel = heads.relations.relations(texts, entities)
        relations = [[(r.head, r.tail, r.type, float(r.score)) for r in note] for note in found_rel]
    if len(assertions) != len(texts) or len(relations) != len(texts):
        raise ValueError(f"the heads answered for {len(assertions)}/{len(relations)} of {len(texts)} notes")
    return [Clinical(a, r) for a, r in zip(assertions, relations, strict=True)]


def _check_clinical(entities: Sequence[Entity], result: Clinical) -> str | None:
    """None when the heads' output fits the note's entities, else a text-free reason."""
    n = len(entities)
    if result.assertions is not None:
        if len(result.assertions) != n:
            return f"assertion model returned {len(result.assertions)} assertions for {n} entities"
        for status, score in result.assertions:
            if status not in ASSERTION_VALUES:
                return f"assertion model returned status {status!r}, not one of {ASSERTION_VALUES}"
            if not 0.0 <= score <= 1.0:
                return f"assertion model returned score {score!r} outside [0, 1]"
    for head, tail, _, score in result.relations:
        if not (0 <= head < n and 0 <= tail < n) or head == tail:
            return f"relation model returned ends {head}, {tail} for a note of {n} entities"
        if not 0.0 <= score <= 1.0:
            return f"relation model returned score {score!r} outside [0, 1]"
    return None


def _heads_safely(
    heads: ClinicalHeads, texts: list[str], entities: list[list[Entity]]
) -> list[Clinical | str]:
    """The heads over a micro-batch; if the batch fails, note by note so only the bad ones fail."""
    return _batch_or_each(
        lambda idx: _run_heads(heads, [texts[i] for i in idx], [entities[i] for i in idx]),
        len(texts),
        "the clinical heads",
        lambda i: (
            f"in the assertion/relation models on a note of {len(texts[i])} characters "
            f"with {len(entities[i])} entities"
        ),
    )


def tag_records(
    frame: pd.DataFrame, tagger: Tagger | None, cfg: TaskConfig, heads: ClinicalHeads | None = None
) -> TaggedRecords:
    """Decide the status of every row of ``frame`` (columns ``INPUT_COLUMNS``) and tag those to tag.

    ``tagger`` may be None when no row has action ``tag`` (the model is then never loaded).
    ``heads`` (None or empty: none attached) add each entity's assertion and the note's relations.
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
    clinical: list[Clinical | None] = [None] * n
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
            if heads is not None and not heads.empty:
                _apply_heads(
                    heads, [i for i in rows if status[i] == OK], texts, found, clinical, status, errors
                )

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
    for i in range(n):
        got = clinical[i]
        if got is not None and got.assertions is not None:
            ent["assertion"].extend(a for a, _ in got.assertions)
            ent["assertion_score"].extend(p for _, p in got.assertions)
        else:
            ent["assertion"].extend([None] * len(found[i]))
            ent["assertion_score"].extend([None] * len(found[i]))
    rel = _relation_columns(record_ids, found, clinical, cfg)

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
        "n_relations": [0 if c is None else len(c.relations) for c in clinical],
    }
    return TaggedRecords(st, ent, rel)


def _apply_heads(
    heads: ClinicalHeads,
    rows: list[int],
    texts: list[str | None],
    found: list[list[Entity]],
    clinical: list[Clinical | None],
    status: list[str],
    errors: list[str | None],
) -> None:
    """Run the heads over the ok notes ``rows`` of one micro-batch, in place; a note the heads fail
    on becomes an ``error`` row and keeps none of its entities."""
    if not rows:
        return
    results = _heads_safely(heads, [texts[i] or "" for i in rows], [found[i] for i in rows])
    for i, result in zip(rows, results, strict=True):
        problem = result if isinstance(result, str) else _check_clinical(found[i], result)
        if problem is not None:
            status[i], errors[i], found[i] = ERROR, problem, []
            continue
        assert not isinstance(result, str)
        clinical[i] = result


def _relation_columns(
    record_ids: list[str | None],
    found: list[list[Entity]],
    clinical: list[Clinical | None],
    cfg: TaskConfig,
) -> dict[str, list[Any]]:
    """Relation rows: both ends' span, label and text come from the note's entity rows."""
    rel: dict[str, list[Any]] = {name: [] for name in RELATIONS_SCHEMA.names}
    for i, got in enumerate(clinical):
        if got is None:
            continue
        ents = found[i]
        # One row per key (head span, tail span, type): the best score wins should a model repeat one.
        best: dict[tuple[int, int, str], float] = {}
        for head, tail, kind, score in got.relations:
            key = (head, tail, kind)
            best[key] = max(score, best.get(key, score))
        for (head, tail, kind), score in sorted(best.items()):
            h, t = ents[head], ents[tail]
            rel["record_id"].append(record_ids[i])
            rel["head_begin"].append(h.begin)
            rel["head_end"].append(h.end)
            rel["head_label"].append(h.label)
            rel["head_text"].append(h.text)
            rel["tail_begin"].append(t.begin)
            rel["tail_end"].append(t.end)
            rel["tail_label"].append(t.label)
            rel["tail_text"].append(t.text)
            rel["type"].append(kind)
            rel["score"].append(score)
    n_rel = len(rel["record_id"])
    rel["model_name"] = [cfg.model_name] * n_rel
    rel["model_version"] = [cfg.model_version] * n_rel
    rel["run_id"] = [cfg.run_id] * n_rel
    return rel


def _needs_model(frame: pd.DataFrame) -> bool:
    return bool((frame["action"] == ACTION_TAG).any())


def _model_for(cfg: TaskConfig) -> Tagger:
    return MODEL_CACHE.get(resolve_artifact(cfg), task_device())


def _heads_for(cfg: TaskConfig, tagger: Tagger) -> ClinicalHeads:
    return MODEL_CACHE.heads(resolve_artifact(cfg), tagger.entity_types)


def warm_worker(batches: Iterator[pd.DataFrame], cfg: TaskConfig) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` function of the warm-up pass: load the tagger and its clinical heads into
    this worker's cache and return one row (``WARM_UP_DDL``: the worker's pid, seconds).

    The driver runs it while it plans the run (``job.WarmUp``), so the reused workers of
    the tagging pass start tagging at once instead of each first importing torch and loading the
    model while the task slot waits.
    """
    for _ in batches:
        pass
    started = time.perf_counter()
    _heads_for(cfg, _model_for(cfg))
    yield pd.DataFrame({"pid": [os.getpid()], "seconds": [time.perf_counter() - started]})


WARM_UP_DDL = "pid long, seconds double"


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


def write_batches(
    batches: Iterator[pd.DataFrame], cfg: TaskConfig, stats: Any = None
) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` function: tag every batch (and apply the clinical heads attached to the
    artifact), stream entities, relations and status rows into one Parquet file per table for this task, and return the files' metadata (``WRITTEN_FILES_DDL``).

    The files are not part of any table until the driver commits them; a failed or retried task
    leaves only unreferenced files, which readers never see. ``stats`` (a Spark accumulator of
    ``task_stats.TaskStatsParam``) receives the task's counts, seconds and worker memory.
    """
    if cfg.entities_uri is None or cfg.status_uri is None or cfg.relations_uri is None:
        raise ValueError("write_batches needs cfg.entities_uri, cfg.status_uri and cfg.relations_uri")
    peak_reset = task_stats.reset_peak_rss()
    started = time.perf_counter()
    loads_before = MODEL_CACHE.loads
    rows = tagged_notes = characters = 0
    opts = cfg.storage_options
    ent_file = _StreamingFile(cfg.entities_uri, ENTITIES_TABLE, ENTITIES_SCHEMA, cfg.run_id, opts)
    rel_file = _StreamingFile(cfg.relations_uri, RELATIONS_TABLE, RELATIONS_SCHEMA, cfg.run_id, opts)
    st_file = _StreamingFile(cfg.status_uri, STATUS_TABLE, STATUS_SCHEMA, cfg.run_id, opts)
    for frame in batches:
        rows += len(frame)
        to_tag = frame["text"][frame["action"] == ACTION_TAG]
        tagged_notes += len(to_tag)
        characters += int(to_tag.str.len().sum())
        tagger = _model_for(cfg) if _needs_model(frame) else None
        heads = _heads_for(cfg, tagger) if tagger is not None else None
        tagged = tag_records(frame, tagger, cfg, heads)
        ent_file.write(tagged.entities)
        rel_file.write(tagged.relations)
        st_file.write(tagged.status)
        del frame, tagged, to_tag  # drop this batch before the next one arrives
        # ... and hand back what it freed: Arrow's pool (mimalloc) otherwise keeps the pages of the
        # batch's conversion and row group resident under the next batch's peak (docs/extraction.md,
        # "Worker memory"); once per Arrow batch (<= 1,000 notes) it costs nothing measurable.
        _release_memory()
    written = [info for info in (ent_file.close(), rel_file.close(), st_file.close()) if info is not None]
    peak = task_stats.peak_rss_mib()
    _release_memory()
    if stats is not None:
        stats.add(
            [
                task_stats.as_record(
                    task_stats.TaskStats(
                        partition=_partition_id(),
                        rows=rows,
                        tagged=tagged_notes,
                        characters=characters,
                        seconds=round(time.perf_counter() - started, 3),
                        peak_rss_mib=round(peak, 1),
                        end_rss_mib=round(task_stats.rss_mib(), 1),
                        peak_reset=peak_reset,
                        model_loads=MODEL_CACHE.loads - loads_before,
                    )
                )
            ]
        )
    yield pd.DataFrame(written, columns=list(WRITTEN_FILES_COLUMNS))


def _partition_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.partitionId()) if ctx is not None else -1


def _release_memory() -> None:
    """Hand freed memory back after each Arrow batch and each task: a reused worker runs many
    tasks, and without this its peak creeps up with the batches and tasks it has run (the C heap
    and Arrow's allocator keep freed pages; ``task_stats.trim_c_heap`` has the measurements)."""
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    task_stats.trim_c_heap()
