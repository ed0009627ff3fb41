"""What the differential tests (tests/test_host_differential.py and the rig's
test_differential.py) compare per step: return values with errno names for refusals, and bytes run-length encoded."""

from __future__ import annotations

import errno

NAMES = {**errno.errorcode, errno.EOPNOTSUPP: "EOPNOTSUPP"}


def result(r):
    """A return value as compared: "EINVAL" for -22, anything else as is."""
    return NAMES.get(-r, r) if isinstance(r, int) and r < 0 else r


def rle(data: bytes) -> list[tuple[int, int]]:
    """``data`` as [(byte, count), ...]: short to print, exact to compare."""
    out: list[list[int]] = []
    for b in data:
        if out and out[-1][0] == b:
            out[-1][1] += 1
        else:
            out.append([b, 1])
    return [tuple(x) for x in out]
