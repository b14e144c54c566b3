"""spark-submit script for the GPU test: which GPU address and device each task is given.

Not a test module: tests/spark/test_extract_local_cluster.py runs it under a local-cluster master
with a fake GPU discovery script and reads the JSON it prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pandas as pd

from medner_udf.extraction.executor import choose_device, task_resources
from medner_udf.extraction.session import build_session


def probe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import os

    for frame in batches:
        gpus, cpus = task_resources()
        # torch on this machine has no CUDA: ask what the UDF would choose on a CUDA build.
        device = choose_device(gpus, cuda_available=True)
        yield pd.DataFrame(
            {
                "pid": [os.getpid()] * len(frame),
                "gpus": [",".join(gpus)] * len(frame),
                "device": [device] * len(frame),
                "cpus": [cpus] * len(frame),
            }
        )


def main() -> None:
    spark = build_session({"spark.ui.enabled": "false"}, app_name="gpu-probe")
    rows = (
        spark.range(0, 8, numPartitions=4)
        .mapInPandas(probe, "pid long, gpus string, device string, cpus int")
        .collect()
    )
    print("PROBE " + json.dumps([r.asDict() for r in rows]))
    spark.stop()


if __name__ == "__main__":
    main()
    sys.exit(0)
