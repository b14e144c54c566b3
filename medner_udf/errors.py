"""The one exception family for expected failures, so the CLI can report them in one style.

An expected failure is something the user can fix: a missing corpus, a bad setting, a path that is
not an artifact, a table that cannot be written. It carries a message that names the bad value and
what was expected (never note text: notes are patient data), an optional ``hint`` saying what to do,
and an exit code: 2 for a usage error (the command was given something wrong), 1 for a failure at
run time. Anything else that escapes a command is a bug and is reported with its traceback
(``medner_udf.cli.reporting``).

The concrete errors of each layer (``CorpusError``, ``ArtifactError``, ``TableError``, ...) derive
from these and from ``ValueError`` (or ``FileNotFoundError``), so existing ``except`` callers keep
working. A new kind of expected failure is one new subclass where it is raised: the CLI needs no
change.
"""

from __future__ import annotations


class MednerError(Exception):
    """An expected failure at run time (exit code 1); ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class MednerUsageError(MednerError):
    """The command was given a bad setting, flag, path or URI (exit code 2)."""

    exit_code = 2


class StorageError(MednerError):
    """A storage location refused or could not be reached at run time: permissions, credentials, a
    host that does not answer (exit code 1). A malformed URI is a usage error instead."""


class ConflictError(MednerError):
    """Another writer changed the same table at the same time; re-running is safe (exit code 1)."""
