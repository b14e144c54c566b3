"""spark-submit entry point of the train job.

    spark-submit jobs/train.py [--model bilstm-cnn-crf|transformer] [--corpus PATH] [--set key=value ...]

Training runs on the driver (one GPU if present): MACCROBAT is small, and the product's
distributed part is extraction. The job takes exactly the options of ``medner train``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from medner_udf.cli.main import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli_main.main(args=["train", *args], prog_name="jobs/train.py", standalone_mode=False)
    except SystemExit as exc:  # click's own exit on --help or usage errors
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
