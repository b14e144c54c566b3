"""What each tagging task did, measured inside the task and gathered on the driver.

Each task of the tagging pass records its notes, characters, seconds and its Python worker's
resident memory (peak during the task, and at its end) into a Spark accumulator; the run summary
reports the spread (``tasks``) so an operator can size ``spark.executor.memoryOverhead`` and see
whether the waves were even, and the benchmarks print the per-task list. Counts and sizes only:
nothing here ever holds note text.

The per-task peak comes from the kernel: writing ``5`` to ``/proc/self/clear_refs`` resets the
process's peak RSS (``VmHWM``, Linux 4.0+), so a reused worker's peak is the task's own, not the
largest of every task it ran before. Where that is not allowed, ``peak_reset`` is false and the
peak is the worker's lifetime peak (``getrusage``).

A task Spark retries adds its record again (accumulators in transformations count each attempt);
the figures are for operators, never for correctness.
"""

from __future__ import annotations

import ctypes
import functools
import resource
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.accumulators import AccumulatorParam


@dataclass(frozen=True)
class TaskStats:
    """One task of the tagging pass."""

    partition: int
    rows: int
    tagged: int
    characters: int
    seconds: float
    peak_rss_mib: float
    end_rss_mib: float
    peak_reset: bool
    # Taggers and clinical head sets this task loaded (0: the worker had them from the warm-up
    # pass or an earlier task).
    model_loads: int = 0


class TaskStatsParam(AccumulatorParam[list[dict[str, Any]]]):
    """Spark accumulator of a list of per-task records (plain dicts, so they pickle anywhere)."""

    def zero(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    def addInPlace(  # noqa: N802 (Spark's name)
        self, a: list[dict[str, Any]], b: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        a.extend(b)
        return a


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory of this process since the last reset (or since it started)."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: getrusage's lifetime peak (KiB on Linux, bytes on macOS)
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


@functools.cache
def _c_library() -> Any | None:
    """The process's C library when it is glibc (the one with ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has: its C library's
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim_c_heap() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim(0)``); False where
    the C library has no such call (musl, macOS).

    Why a reused Python worker needs it: glibc keeps memory freed in the middle of its heap
    resident until something trims it, and only the top of the heap is trimmed on ``free``. Each
    tagging task frees a few hundred MiB of short-lived buffers (the batch's pandas strings, token
    and character id arrays, LSTM activations) scattered between longer-lived blocks, so without a
    trim the worker carries that free memory into its next task (measured with a temporary probe,
    docs/extraction.md "Worker memory": the heap's free part rose
    from 157 to 216 MiB over the first three tasks, the part in use stayed at 115-125 MiB, Python's
    object count was the same after every task, and Arrow's pool never held more than 7 MiB).
    """
    libc = _c_library()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def rss_mib() -> float:
    """Resident memory of this process now."""
    kib = _status_kib("VmRSS")
    return (kib or 0) / 1024


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run summary's ``tasks`` entry: count and spread of the per-task figures."""
    if not records:
        return {"count": 0}
    secs = [float(r["seconds"]) for r in records]
    peaks = [float(r["peak_rss_mib"]) for r in records]
    return {
        "count": len(records),
        "rows": {"min": min(int(r["rows"]) for r in records), "max": max(int(r["rows"]) for r in records)},
        "seconds": {
            "min": round(min(secs), 3),
            "median": round(statistics.median(secs), 3),
            "max": round(max(secs), 3),
        },
        "peak_worker_rss_mib": {"median": round(statistics.median(peaks), 1), "max": round(max(peaks), 1)},
        "model_loads": sum(int(r.get("model_loads", 0)) for r in records),
    }


def as_record(stats: TaskStats) -> dict[str, Any]:
    return asdict(stats)
