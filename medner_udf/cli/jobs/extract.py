"""spark-submit entry point of the extraction job, inside the installed package.

    SCRIPT=$(python -c 'from medner_udf.cli.jobs import script; print(script("extract"))')
    spark-submit --master 'local[2]' "$SCRIPT" --input notes/ --output warehouse/ --model models/<name>/<version>

Takes the same flags as ``medner extract`` (``--help`` lists them); spark-submit's own options
(master, resources, GPU discovery) configure the session it builds.
"""

from __future__ import annotations

import logging
import sys

import click

from medner_udf.cli.extract import extract


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run one extraction, return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        extract.main(
            args=argv if argv is not None else sys.argv[1:], prog_name="extract.py", standalone_mode=False
        )
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
