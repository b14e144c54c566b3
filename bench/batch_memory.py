"""Peak memory after each Arrow batch of one tagging task, in a plain process (no Spark).

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1 MALLOC_ARENA_MAX=2 \
        .venv/bin/python bench/batch_memory.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --batches 4 [--no-batch-release]

Feeds ``executor.write_batches`` frames of ``--rows`` notes (the corpus texts cycled, as the job's
Arrow batches of ``spark.sql.execution.arrow.maxRecordsPerBatch`` would arrive) on one torch
thread, and prints after each frame the process's peak (``VmHWM``) and resident size, glibc's heap
(in use / free) and mapped blocks (``mallinfo2``), Arrow's allocated bytes and Python's object
count. Set the allocator environment as the workers get it (``conf/spark.toml``) on the command
line. ``--no-batch-release`` replaces the release after each batch (and at the task's end) with
nothing, to see what it does. Only counts and sizes are printed, never note text.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def _status_mib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return -1


def _heap() -> str:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return "heap n/a (not glibc >= 2.33)"
    m = libc.mallinfo2()
    return f"heap {m.arena >> 20} MiB (in use {m.uordblks >> 20}, free {m.fordblks >> 20}), mapped {m.hblkhd >> 20} MiB in {m.hblks}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--corpus", type=Path, default=os.environ.get("MEDNER_CORPUS"))
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--rows", type=int, default=1000, help="notes per frame (one Arrow batch)")
    p.add_argument("--no-batch-release", action="store_true")
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")

    import torch

    from medner_udf.corpus.maccrobat import read_corpus
    from medner_udf.extraction import executor
    from medner_udf.extraction.schemas import note_hash

    torch.set_num_threads(1)
    if a.no_batch_release:
        executor._release_memory = lambda: None
    texts = [d.text for d in read_corpus(a.corpus)]
    started = time.perf_counter()
    print(
        f"model: {a.model}, {a.batches} frames of {a.rows} notes, batch release: {not a.no_batch_release}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}",
        flush=True,
    )

    def frames() -> Iterator[pd.DataFrame]:
        for b in range(a.batches):
            notes = [texts[(b * a.rows + i) % len(texts)] for i in range(a.rows)]
            yield pd.DataFrame(
                {
                    "record_id": [f"n{b * a.rows + i:07d}" for i in range(a.rows)],
                    "text": notes,
                    "note_hash": [note_hash(t) for t in notes],
                    "action": ["tag"] * a.rows,
                    "n_rows": [1] * a.rows,
                }
            )
            # Asked for the next frame: frame b has been tagged, written and (by default) released.
            print(
                f"after frame {b}: peak {_status_mib('VmHWM')} MiB, resident {_status_mib('VmRSS')} MiB; "
                f"{_heap()}; arrow {pa.total_allocated_bytes() >> 20} MiB; objects {len(gc.get_objects())}; "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )

    out = Path(tempfile.mkdtemp(prefix="medner-batch-memory-"))
    try:
        cfg = executor.TaskConfig(
            artifact=str(a.model),
            model_name="bench",
            model_version="1",
            run_id="bench",
            entities_uri=str(out / "entities"),
            status_uri=str(out / "record_status"),
            relations_uri=str(out / "relations"),
        )
        list(executor.write_batches(frames(), cfg))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"end: peak {_status_mib('VmHWM')} MiB, resident {_status_mib('VmRSS')} MiB")


if __name__ == "__main__":
    main()
