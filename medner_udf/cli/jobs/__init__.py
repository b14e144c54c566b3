"""spark-submit entry scripts that ship inside the package.

spark-submit runs a *file*, so an installed medner (a wheel, no checkout) needs its job scripts in
the package itself; ``script("extract")`` is the path to hand to spark-submit. Each module is a
thin ``main(argv)`` over the matching ``medner`` command, so the flags and checks are the same. The
checkout's ``jobs/*.py`` wrap these for people who run spark-submit from a checkout.

This folder holds nothing but entry scripts: spark-submit puts a script's folder first on
``sys.path``, where any other module would shadow a top-level one of the same name.
"""

from __future__ import annotations

from pathlib import Path


def script(name: str) -> Path:
    """The spark-submit script of job ``name`` inside the installed package."""
    path = Path(__file__).with_name(f"{name}.py")
    if name.startswith("_") or not path.is_file():
        known = sorted(p.stem for p in Path(__file__).parent.glob("[!_]*.py"))
        raise ValueError(f"no job script {name!r}; the package has {known}")
    return path
