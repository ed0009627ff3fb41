"""Errors of the live-QEMU layer, under the one root (backends.errors.VfioEmuError).

Each message is one line: what failed, where (socket, binary, command) and
what to do about it.  The QMP library's own exception is kept as ``__cause__``.
"""

from __future__ import annotations

from backends.errors import HostError, UsageError


class QemuError(HostError):
    """A live QEMU could not be reached, launched or understood."""


class QmpConnectError(QemuError):
    """No QMP session: the socket is missing, refuses, or does not speak QMP."""


class QmpCommandError(QemuError):
    """QEMU answered a QMP command with an error reply (``{"error": ...}``)."""

    def __init__(self, message: str, *, command: str, error_class: str | None = None,
                 desc: str | None = None, **kw):
        super().__init__(message, **kw)
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QemuGoneError(QemuError):
    """QEMU went away (exited, closed the monitor) in the middle of a query."""


class QemuLaunchError(QemuError):
    """The QEMU binary is missing or exited before its monitor came up."""


class UnknownBackendError(UsageError):
    """QEMU reports a memory backend type that vfio-emu does not model."""


__all__ = ["QemuError", "QmpConnectError", "QmpCommandError", "QemuGoneError",
           "QemuLaunchError", "UnknownBackendError"]
