"""``gc_paused()``: the cyclic garbage collector paused over work that makes many
long-lived objects and frees few (a plan's events and the simulated kernel's
areas, half a million each for a 1 TiB virtio-mem guest): each collection would
walk the growing heap and find no garbage.  Reference counting still frees
everything that is not a cycle; the collector's state is restored on exit (a
nested pause leaves it paused)."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
