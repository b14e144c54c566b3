"""Test-only tagger kinds, registered through the tagger registry like any site plugin.

``RecordingTagger`` (kind ``recording``) tags a few words and appends one JSON line to a log file
for every load and every ``tag`` call: the process id, the number of notes and their characters.
Its artifact names the log file, so a test can see what happened inside Spark's Python workers,
where the tagger object itself is out of reach, without counters in the product. Workers find this
module through ``$MEDNER_TAGGER_MODULES=fake_taggers`` and ``PYTHONPATH`` (tests/spark/conftest.py
passes both with ``spark.executorEnv.*``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medner_udf.taggers.artifact import (
    ArtifactError,
    ArtifactInfo,
    read_info,
    read_json,
    write_info,
    write_json,
)
from medner_udf.taggers.base import Tagger, check_texts
from medner_udf.text.scheme import tag_set
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Entity

KIND = "recording"
SETTINGS_FILE = "recording.json"
MODULE = "fake_taggers"


def _record(log: Path, event: dict[str, Any]) -> None:
    # One write of one short line in append mode: lines from concurrent workers do not interleave.
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**event, "pid": os.getpid()}) + "\n")


@Tagger.register(KIND)
class RecordingTagger(Tagger):
    """Tags whole tokens found in ``words`` (case-insensitive, score 0.5) and logs every call."""

    def __init__(self, info: ArtifactInfo, words: Mapping[str, str], log: Path) -> None:
        self.info = info
        self.words = {w.casefold(): label for w, label in words.items()}
        self.log = log
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> RecordingTagger:
        self._device = torch.device(device)
        return self

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        notes = check_texts(texts)
        _record(self.log, {"event": "tag", "notes": len(notes), "chars": sum(map(len, notes))})
        return [
            [
                Entity(t.begin, t.end, t.text, self.words[t.text.casefold()], 0.5)
                for t in tokenize(text)
                if t.text.casefold() in self.words
            ]
            for text in notes
        ]

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_info(directory, self.info)
        write_json(directory / SETTINGS_FILE, {"log": str(self.log), "words": self.words})
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> RecordingTagger:
        directory = Path(directory)
        info = read_info(directory)
        if info.kind != KIND:
            raise ArtifactError(f"artifact {directory} is of kind {info.kind!r}, not {KIND!r}")
        raw = read_json(directory / SETTINGS_FILE)
        tagger = cls(info, raw["words"], Path(raw["log"]))
        _record(tagger.log, {"event": "load", "artifact": str(directory)})
        return tagger.to(device) if device is not None else tagger


@dataclass(frozen=True)
class RecordingArtifact:
    """A saved ``RecordingTagger`` and the log its loads and calls go to."""

    path: Path
    log: Path

    def calls(self, event: str) -> list[dict[str, Any]]:
        """The logged events of one kind (``load`` or ``tag``), in the order they were written."""
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]
        return [r for r in rows if r["event"] == event]


def make_recording_artifact(
    folder: Path, words: Mapping[str, str], name: str = "rec", version: str = "1"
) -> RecordingArtifact:
    """Save a RecordingTagger under ``folder/model`` logging to ``folder/calls.jsonl``."""
    info = ArtifactInfo(kind=KIND, name=name, version=version, tags=tag_set(sorted(set(words.values()))))
    log = folder / "calls.jsonl"
    return RecordingArtifact(RecordingTagger(info, words, log).save(folder / "model"), log)
