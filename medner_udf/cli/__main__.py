"""``python -m medner_udf.cli``: the ``medner`` command."""

from medner_udf.cli import main

main()
