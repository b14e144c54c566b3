"""How a command reports an expected failure: one or two lines and the error's exit code.

``MednerError`` carries a message fit for the user (never note text), an optional hint and an exit
code: 2 when the command was given something wrong (``MednerUsageError``), 1 for a failure at run
time (``medner_udf.errors``). ``MednerGroup`` (the ``medner`` group) and ``run_command`` (the
spark-submit scripts) turn one into

    Error: corpus folder /data/MACCROBAT2020 does not exist
    hint: put MACCROBAT2020 at ../shared/data/maccrobat/MACCROBAT2020, or set --corpus / MEDNER_CORPUS

and exit with its code. Anything else is a bug and keeps its traceback. ``--debug`` or
``MEDNER_DEBUG=1`` prints the traceback of expected failures too.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from medner_udf.errors import MednerError, MednerUsageError, StorageError

DEBUG_ENV = "MEDNER_DEBUG"


class RunFailure(click.ClickException):
    """A ``MednerError`` at run time, as click prints it: ``Error: <message>``; exit code 1."""

    exit_code = MednerError.exit_code


class UsageFailure(click.ClickException):
    """A ``MednerUsageError`` (bad flag, setting, path), as click prints it; exit code 2."""

    exit_code = MednerUsageError.exit_code


def debug_enabled() -> bool:
    """``MEDNER_DEBUG`` set to anything but empty, 0, false or no."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def reported(error: MednerError) -> click.ClickException:
    """``error`` as the click exception that prints its message and hint and exits with its code
    (2 for usage errors, 1 for any other)."""
    message = str(error) if error.hint is None else f"{error}\nhint: {error.hint}"
    return (UsageFailure if error.exit_code == MednerUsageError.exit_code else RunFailure)(message)


def expected(exc: BaseException) -> MednerError | None:
    """``exc`` as an expected failure, or None for a bug.

    Besides ``MednerError``, an operating-system refusal (permission denied, disk full, read-only
    filesystem) is the environment's answer, not a bug: it becomes a ``StorageError``.
    """
    if isinstance(exc, MednerError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS):
        where = f": {exc.filename}" if exc.filename else ""
        return StorageError(
            f"{exc.strerror or exc}{where}", hint="check the path's permissions and free space"
        )
    return None


class MednerGroup(click.Group):
    """A click group whose commands report expected failures in one style (see the module doc)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            error = expected(exc)
            if error is None:
                raise
            if ctx.params.get("debug") or debug_enabled():
                traceback.print_exception(exc, file=sys.stderr)
            raise reported(error) from exc


def run_command(command: click.Command, args: Sequence[str], prog_name: str) -> int:
    """Run ``command`` as a script (spark-submit) and return its exit status; expected failures are
    printed in one style, as ``medner`` prints them, bugs keep their traceback."""
    try:
        command.main(args=list(args), prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except Exception as exc:
        error = expected(exc)
        if error is None:
            raise
        if debug_enabled():
            traceback.print_exception(exc, file=sys.stderr)
        failure = reported(error)
        failure.show()
        return int(failure.exit_code)
    return 0
