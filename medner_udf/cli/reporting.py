"""How a command reports an expected failure: the message, the hint, and the error's exit code.

``MednerError`` carries a message fit for the user (never note text) and an exit code: 2 when the
command was given something wrong (``MednerUsageError``), 1 for a failure at run time
(``medner_udf.errors``). Commands raise ``reported(error)`` so that every command prints one alike.
"""

from __future__ import annotations

import click

from medner_udf.errors import MednerError, MednerUsageError


class RunFailure(click.ClickException):
    """A ``MednerError`` at run time, as click prints it: ``Error: <message>``; exit code 1."""

    exit_code = MednerError.exit_code


class UsageFailure(click.ClickException):
    """A ``MednerUsageError`` (bad flag, setting, path), as click prints it; exit code 2."""

    exit_code = MednerUsageError.exit_code


def reported(error: MednerError) -> click.ClickException:
    """``error`` as the click exception that prints its message and hint and exits with its code."""
    message = str(error) if error.hint is None else f"{error}\nhint: {error.hint}"
    return (UsageFailure if isinstance(error, MednerUsageError) else RunFailure)(message)
