"""The project's one version parser: kernel releases (``uname -r``, Debian
package versions) and QEMU versions (``--version``, ``query-version``, Debian
``1:11.1.3+ds-2~bpo13+1``) all read as (major, minor, micro)."""

from __future__ import annotations

import re

from backends.errors import UsageError

_VERSION = re.compile(r"(?:\d+:)?v?(\d+)\.(\d+)(?:\.(\d+))?")


def match_version(text: str, search: bool = False) -> tuple[tuple[int, int, int], str] | None:
    """((major, minor, micro), what follows) for the version at the start of
    ``text`` (anywhere in it with ``search``), or None.  A missing micro is 0:
    "6.12" -> (6, 12, 0); "7.2.13-1" -> (7, 2, 13); "1:10.0.2+ds-2" -> (10, 0, 2)."""
    m = (_VERSION.search if search else _VERSION.match)(text.strip())
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3] or 0)), text.strip()[m.end():]


def parse_version(text: str, where: str = "version", example: str = "7.2.13") -> tuple[int, int, int]:
    """(major, minor, micro) of ``text``; a UsageError naming ``where`` if it is none."""
    got = match_version(text)
    if got is None:
        raise UsageError(f"not a version: {text!r}", where=where, valid=f"a version like {example}")
    return got[0]


def format_version(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))
