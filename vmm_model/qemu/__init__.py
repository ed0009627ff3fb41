"""Live QEMU: introspection over QMP (qemu.qmp) or HMP (pexpect), /proc facts,
and a launcher for real QEMU binaries.  See introspect.py for what is read."""

from vmm_model.qemu.errors import (QemuError, QemuGoneError, QemuLaunchError,
                                   QmpCommandError, QmpConnectError, UnknownBackendError)
from vmm_model.qemu.introspect import LiveVM, ObservedRAMBlock, compare_with_model, introspect
from vmm_model.qemu.launcher import QemuProcess, find_qemu, launch_hmp
from vmm_model.qemu.monitor import HmpMonitor, QmpMonitor, ReplayMonitor

__all__ = ["QemuError", "QemuGoneError", "QemuLaunchError", "QmpCommandError",
           "QmpConnectError", "UnknownBackendError", "LiveVM", "ObservedRAMBlock",
           "compare_with_model", "introspect", "QemuProcess", "find_qemu", "launch_hmp",
           "HmpMonitor", "QmpMonitor", "ReplayMonitor"]
