"""``medner attach``: put assertion and relation models into a tagger artifact."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("attach")
@click.option(
    "--model", "tagger_dir", required=True, type=click.Path(path_type=Path), help="Tagger artifact."
)
@click.option("--assertion", type=click.Path(path_type=Path), help="Assertion model artifact.")
@click.option("--relations", type=click.Path(path_type=Path), help="Relation model artifact.")
def attach(tagger_dir: Path, assertion: Path | None, relations: Path | None) -> None:
    """Copy assertion/relation model artifacts into TAGGER/assertion and TAGGER/relations, after
    checking that they were trained on the tagger's entity labels."""
    from medner_udf.clinical.base import attach as attach_heads
    from medner_udf.errors import MednerUsageError

    if assertion is None and relations is None:
        raise MednerUsageError("nothing to attach: give --assertion and/or --relations")
    for target in attach_heads(tagger_dir, assertion, relations):
        click.echo(f"attached {target}")
