"""spark-submit entry point of the extraction job, for a checkout.

    spark-submit --master local[2] jobs/extract.py --input notes/ --output warehouse/ \
        --model models/bilstm/<version>

A thin wrapper over ``medner_udf.cli.jobs.extract`` (the same script inside the installed package,
which is what ``medner demo`` and an installed wheel submit); flags as ``medner extract``.
"""

from __future__ import annotations

import sys

from medner_udf.cli.jobs.extract import main

if __name__ == "__main__":
    sys.exit(main())
