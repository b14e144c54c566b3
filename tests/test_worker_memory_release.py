"""A reused Python worker hands the memory a task freed back to the kernel at the task's end.

The test makes the C heap look like it does after a tagging task: many medium-sized buffers freed
between a few that stay alive, so the free memory sits in the middle of the heap where ``free``
alone never returns it. Run in a child process, so the test's own heap does not matter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from medner_udf.extraction import task_stats
from medner_udf.extraction.session import load_spark_conf

_CHILD = textwrap.dedent(
    """
    import json
    from medner_udf.extraction import task_stats
    from medner_udf.extraction.executor import _release_memory

    base = task_stats.rss_mib()
    # ~240 MiB of 2 KiB bytes objects (above pymalloc's 512 bytes: they come from malloc); every
    # 64th stays alive, pinning the heap so the freed ones are not at its top.
    blocks = [bytes(2048) for _ in range(120_000)]
    keep = blocks[::64]
    del blocks
    held = task_stats.rss_mib()
    _release_memory()
    released = task_stats.rss_mib()
    print(json.dumps({"base": base, "held": held, "released": released, "kept": len(keep)}))
    """
)


def _run_child() -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"},
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(task_stats._c_library() is None, reason="needs glibc (malloc_trim)")
def test_memory_a_task_freed_in_the_middle_of_the_heap_is_returned_at_its_end() -> None:
    r = _run_child()
    # Freed but not returned before the release: most of the ~240 MiB is still resident.
    assert r["held"] - r["base"] > 150, r
    # The task's end returns it: what stays is the kept 1/64th and the list, well under 60 MiB.
    assert r["released"] - r["base"] < 60, r


def test_trimming_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_stats, "_c_library", lambda: None)
    assert task_stats.trim_c_heap() is False


_LARGE_TEMPORARY_CHILD = textwrap.dedent(
    """
    import json
    from medner_udf.extraction import task_stats

    def touched(size):
        # bytearray, written page by page: calloc'd memory fresh from the kernel is never touched.
        block = bytearray(size)
        block[::4096] = b"x" * len(range(0, size, 4096))
        return block

    # One large block freed: glibc's sliding threshold rises to its size (the tagger's first batch).
    first = touched(24 << 20)
    del first
    base = task_stats.rss_mib()
    # A 10 MiB temporary with small blocks allocated after it, then freed, as each later batch
    # does with its temporaries.
    temp = touched(10 << 20)
    pins = [touched(4096) for _ in range(50)]
    del temp
    print(json.dumps({"kept_mib": task_stats.rss_mib() - base, "pins": len(pins)}))
    """
)


def _kept_after_a_large_temporary(env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_TEMPORARY_CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["kept_mib"])


def _worker_environment() -> dict[str, str]:
    prefix = "spark.executorEnv."
    return {k[len(prefix) :]: v for k, v in load_spark_conf().items() if k.startswith(prefix)}


@pytest.mark.skipif(task_stats._c_library() is None, reason="needs glibc")
def test_the_workers_allocator_settings_return_large_temporaries_on_free() -> None:
    workers = _worker_environment()
    assert "glibc.malloc.mmap_threshold=4194304" in workers["GLIBC_TUNABLES"]
    # glibc's default: the threshold slid up past 10 MiB, the temporary came from the heap and
    # stays resident after it is freed.
    assert _kept_after_a_large_temporary({}) > 8
    # With the workers' settings it had its own mapping, unmapped on free.
    assert _kept_after_a_large_temporary(workers) < 2
