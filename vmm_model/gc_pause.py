"""``gc_paused()``: the cyclic garbage collector paused over work that makes many
long-lived objects and frees few (a plan's events and the simulated kernel's
areas, half a million each for a 1 TiB virtio-mem guest): each collection would
walk the growing heap and find no garbage.  Reference counting still frees
everything that is not a cycle; the collector's state is restored on exit (a
nested pause leaves it paused).  On exit the objects the pause made are moved
to the oldest generation as they are (``gc.freeze()`` then ``gc.unfreeze()``)
instead of being scanned by the next young collection, which would walk every
one of them to find them alive; a cycle among them is still collected by the
next full collection."""

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
            gc.freeze()     # what the pause made goes to the oldest generation unscanned
            gc.unfreeze()
            gc.enable()
