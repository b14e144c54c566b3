"""spark-submit entry point of the extraction job.

    spark-submit --master local[2] jobs/extract.py --input notes/ --output warehouse/ \
        --model models/bilstm/<version>

Takes the same flags as ``medner extract`` (``--help`` lists them); spark-submit's own options
(master, resources, GPU discovery) configure the session this builds.
"""

from __future__ import annotations

import logging
import sys

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
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
