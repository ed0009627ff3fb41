"""The one exception root of vfio-emu.

Kernel refusals are *results* (0 or -errno), never exceptions.  Exceptions are
for misuse and bad input; their message says what was wrong, where, and what
would be valid (docs/architecture.md).
"""

import argparse
import math


class VfioEmuError(Exception):
    """Root of every vfio-emu exception.

    ``where`` names the file/argument (and line) the problem is in, ``field``
    the offending field, ``valid`` what would have been accepted.
    """

    def __init__(self, message: str, *, where: str | None = None,
                 field: str | None = None, valid: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.field = field
        self.valid = valid

    def __str__(self) -> str:
        parts = []
        if self.where:
            parts.append(self.where)
        if self.field:
            parts.append(self.field)
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.valid:
            text += f" (valid: {self.valid})"
        return text


class UsageError(VfioEmuError):
    """Bad input: a scenario file, a QEMU argument, a CLI option (exit status 2)."""


class HostError(VfioEmuError):
    """The host cannot do what was asked (a device node is missing, no permission)."""


def seconds(text: str) -> float:
    """argparse type of every ``--timeout``: a finite number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"a number of seconds > 0, not {text!r}")
    return v
