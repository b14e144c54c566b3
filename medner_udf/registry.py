"""Name -> class registries whose entries register themselves where they are defined.

After AllenNLP's ``Registrable``: a base class owns a ``Registry``; each subclass adds itself with a
decorator in its own module, so the base never imports its children and a new kind is one new
module. Lookups import the modules that may define kinds first: the built-in ones (module paths, so
each kind string lives in one place), the modules installed packages declare under an entry-point
group, and the modules named in an environment variable (how tests and site plugins add kinds
inside Spark's Python workers, which inherit the environment).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Generic, TypeVar, cast

from medner_udf.errors import MednerUsageError

C = TypeVar("C", bound=type)
S = TypeVar("S", bound=type)


class UnknownKindError(MednerUsageError, ValueError):
    """A kind no module has registered; the message lists the known kinds."""


class Registry(Generic[C]):
    """Kinds of ``what`` (e.g. "tagger") mapped to classes."""

    def __init__(self, what: str, builtin_modules: Sequence[str], env: str, group: str) -> None:
        self.what = what
        self.builtin_modules = tuple(builtin_modules)
        self.env = env
        self.group = group
        self._classes: dict[str, C] = {}
        self._imported: set[str] = set()

    def register(self, kind: str) -> Callable[[S], S]:
        """Class decorator adding the class under ``kind`` and setting its ``kind`` attribute; a
        second class for a kind is an error."""
        if not kind or kind != kind.strip():
            raise ValueError(
                f"{self.what} kind must be a non-empty name without surrounding spaces, got {kind!r}"
            )

        def add(cls: S) -> S:
            existing = self._classes.get(kind)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"{self.what} kind {kind!r} is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            self._classes[kind] = cast(C, cls)
            setattr(cls, "kind", kind)  # noqa: B010 - the registry names the class's kind
            return cls

        return add

    def get(self, kind: str) -> C:
        """The class of ``kind``, importing the modules that may define it first."""
        if kind not in self._classes:
            self.import_modules()
        try:
            return self._classes[kind]
        except KeyError:
            raise UnknownKindError(
                f"no {self.what} kind {kind!r} is registered; known kinds: {', '.join(self.kinds())}",
                hint=f"install the package that defines it, or name its module in ${self.env}",
            ) from None

    def kinds(self) -> list[str]:
        self.import_modules()
        return sorted(self._classes)

    def import_modules(self) -> None:
        names = list(self.builtin_modules)
        names += [name.strip() for name in os.environ.get(self.env, "").split(",") if name.strip()]
        for name in names:
            if name not in self._imported:
                importlib.import_module(name)
                self._imported.add(name)
        for ep in entry_points(group=self.group):
            key = f"entry-point:{ep.value}"
            if key not in self._imported:
                ep.load()
                self._imported.add(key)
