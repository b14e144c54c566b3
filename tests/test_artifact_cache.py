"""The driver's cache of model artifacts fetched from object storage does not grow without end."""

from __future__ import annotations

import os
from pathlib import Path

from medner_udf.extraction.storage import prune_cache

DAY = 24 * 3600.0


def _entry(root: Path, name: str, last_used: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "artifact.json").write_text("{}")
    os.utime(folder, (last_used, last_used))
    return folder


def test_old_copies_beyond_the_most_recent_go_recent_or_busy_ones_stay(tmp_path: Path) -> None:
    now = 1_000 * DAY
    recent = [_entry(tmp_path, f"r{i}", now - i * 60) for i in range(2)]  # used in the last minutes
    old = [_entry(tmp_path, f"o{i}", now - (3 + i) * DAY) for i in range(3)]  # idle for days
    young_but_many = _entry(tmp_path, "y", now - 3600)  # beyond `keep` but used an hour ago
    staging = _entry(tmp_path, ".staging-abc", now - 2 * DAY)  # a download that died
    removed = prune_cache(tmp_path, keep=2, min_idle_s=DAY, now=now)
    assert sorted(removed) == sorted([*old, staging])
    assert all(p.is_dir() for p in [*recent, young_but_many])
    assert not any(p.exists() for p in old)


def test_a_missing_cache_folder_is_nothing_to_prune(tmp_path: Path) -> None:
    assert prune_cache(tmp_path / "absent", keep=1, min_idle_s=0) == []
