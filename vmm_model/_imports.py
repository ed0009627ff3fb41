"""Keep vfio-emu's top-level ``backends`` package working next to a user's own.

vfio-emu installs two top-level packages, ``vmm_model`` and ``backends``.  A
downstream repository often has a ``backends`` package of its own, found first on
``sys.path`` (its root is on the path under pytest or ``python -m``).  Python has
one ``sys.modules["backends"]``, so whichever is imported first owns the name and
the other's submodules fail with ``ModuleNotFoundError: backends.errors``.

``BackendsFinder`` (first on ``sys.meta_path``, installed when ``vmm_model`` is
imported) resolves vfio-emu's submodules without going through the top-level
name: when ``sys.modules["backends"]`` is someone else's package and the
submodule asked for is one of ours (``backends.errors``, ``backends.simulated``,
...), it is loaded from our directory under its usual name.  The user's
``backends`` keeps the top-level name and all its own submodules.  Two cases it
cannot reconcile fail at import with the clash and the fix:

- the user's package has a submodule with one of our names (``backends/base.py``);
- ours took the top-level name first and the user's package appears later on
  ``sys.path`` (import your ``backends`` before ``vmm_model``, e.g. in conftest.py).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Iterable, Sequence

OURS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backends")


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_ours(mod: ModuleType | None) -> bool:
    return mod is not None and any(_same(p, OURS) for p in getattr(mod, "__path__", ()))


def _has_child(paths: Iterable[str], child: str) -> str | None:
    for p in paths:
        for cand in (os.path.join(p, child + ".py"), os.path.join(p, child, "__init__.py")):
            if os.path.exists(cand):
                return cand
    return None


def _clash(theirs: str, detail: str) -> ImportError:
    return ImportError(
        f"vfio-emu: your top-level package 'backends' ({theirs}) clashes with vfio-emu's "
        f"'backends' ({OURS}): {detail}")


class BackendsFinder:
    """``sys.meta_path`` finder for ``backends.<ours>`` under a foreign ``backends``."""

    def __init__(self) -> None:
        self.names = {n[:-3] if n.endswith(".py") else n for n in os.listdir(OURS)
                      if (n.endswith(".py") and n != "__init__.py")
                      or os.path.exists(os.path.join(OURS, n, "__init__.py"))}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith("backends.") or fullname.count(".") != 1:
            return None
        child = fullname[len("backends."):]
        parent = sys.modules.get("backends")
        if parent is None:
            return None
        if _is_ours(parent):
            if child in self.names:
                return None
            spec = importlib.machinery.PathFinder.find_spec("backends", [
                p for p in sys.path if isinstance(p, str) and not _same(os.path.join(p or ".", "backends"), OURS)])
            if spec and spec.submodule_search_locations and _has_child(
                    spec.submodule_search_locations, child):
                raise _clash(spec.submodule_search_locations[0],
                             f"vfio-emu's was imported first, so 'backends.{child}' cannot be "
                             "found; import your own 'backends' before vmm_model (e.g. at the "
                             "top of conftest.py) or rename it")
            return None
        if child not in self.names:
            return None
        self.check()
        theirs = list(getattr(parent, "__path__", ()))
        own = _has_child(theirs, child)
        if own:
            raise _clash(theirs[0] if theirs else "?",
                         f"both have a module 'backends.{child}' ({own}); rename yours "
                         f"(e.g. backends/{child}.py) or your package")
        return importlib.machinery.PathFinder.find_spec(fullname, [OURS])


    def check(self) -> None:
        """Fail if a foreign ``backends`` already loaded a submodule under one of our
        names (then ``from backends.errors import ...`` would silently get theirs)."""
        parent = sys.modules.get("backends")
        if parent is None or _is_ours(parent):
            return
        for child in self.names:
            mod = sys.modules.get(f"backends.{child}")
            where = getattr(mod, "__file__", None) or ""
            if mod is not None and not where.startswith(OURS + os.sep):
                raise _clash(os.path.dirname(where) or "?",
                             f"both have a module 'backends.{child}' ({where}); rename "
                             f"yours (e.g. backends/{child}.py) or your package")


_FINDER: BackendsFinder | None = None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once) and check for clashes."""
    global _FINDER
    if not os.path.exists(os.path.join(OURS, "__init__.py")):
        return
    if _FINDER is None:
        _FINDER = BackendsFinder()
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    _FINDER.check()


def check() -> None:
    if _FINDER is not None:
        _FINDER.check()

