"""spark-submit entry point of the extraction job, inside the installed package.

    SCRIPT=$(python -c 'from medner_udf.cli.jobs import script; print(script("extract"))')
    spark-submit --master 'local[2]' "$SCRIPT" --input notes/ --output warehouse/ --model models/<name>/<version>

Takes the same flags as ``medner extract`` (``--help`` lists them); spark-submit's own options
(master, resources, GPU discovery) configure the session it builds. Expected failures print one or
two lines and exit 2 (usage) or 1 (run time), as ``medner`` does (``MEDNER_DEBUG=1`` for their
tracebacks); spark-submit passes that status on.
"""

from __future__ import annotations

import logging
import sys

from medner_udf.cli.extract import extract
from medner_udf.cli.reporting import run_command


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run one extraction, return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(extract, argv if argv is not None else sys.argv[1:], prog_name="extract.py")


if __name__ == "__main__":
    sys.exit(main())
