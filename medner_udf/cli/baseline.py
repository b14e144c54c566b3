"""``medner baseline ...``: the peers the learned taggers are measured against.

medner baseline feature-crf [--grid]   the feature CRF (sklearn-crfsuite) trained on train, scored on
                                       dev and test; --grid picks c1/c2 on dev first (never on test)
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from medner_udf.corpus.maccrobat import corpus_path
from medner_udf.evaluation.feature_crf import DEFAULT_C1, DEFAULT_C2, DEFAULT_MAX_ITERATIONS, GRID


@click.group("baseline")
def baseline() -> None:
    """Peer models trained and scored under the same protocol as the learned taggers."""


@baseline.command("feature-crf")
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
@click.option("--c1", type=click.FloatRange(min=0), default=DEFAULT_C1, show_default=True, help="L1 penalty.")
@click.option("--c2", type=click.FloatRange(min=0), default=DEFAULT_C2, show_default=True, help="L2 penalty.")
@click.option(
    "--max-iterations", type=click.IntRange(min=1), default=DEFAULT_MAX_ITERATIONS, show_default=True
)
@click.option("--grid", is_flag=True, help=f"Choose (c1, c2) on dev from {list(GRID)}.")
@click.option("--out", type=click.Path(path_type=Path), help="Also write the summary JSON here.")
def feature_crf_cmd(
    corpus: Path | None, c1: float, c2: float, max_iterations: int, grid: bool, out: Path | None
) -> None:
    """Train the feature CRF on the train split; print its dev and test scores as JSON (no note text)."""
    from medner_udf.evaluation import feature_crf

    result = feature_crf.run(corpus_path(corpus), c1, c2, max_iterations, grid)
    text = json.dumps(result, indent=2)
    click.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
