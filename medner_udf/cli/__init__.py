"""The ``medner`` command line: one click group over the functions the jobs call."""

from medner_udf.cli.main import main

__all__ = ["main"]
