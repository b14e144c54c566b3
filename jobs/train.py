"""spark-submit entry point of the train job.

    spark-submit jobs/train.py [--model bilstm-cnn-crf|transformer] [--corpus PATH] [--set key=value ...]

Training runs on the driver (one GPU if present): MACCROBAT is small, and the product's
distributed part is extraction. The job takes exactly the options of ``medner train``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from medner_udf.cli.main import main as cli_main
from medner_udf.cli.reporting import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medner train`` with ``argv``; expected failures print one or two lines, as in ``medner``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_command(cli_main, ["train", *args], prog_name="jobs/train.py")


if __name__ == "__main__":
    sys.exit(main())
