"""Start a real QEMU for introspection: from an argv list (never a shell string),
paused (``-S``), ``-nodefaults -display none``, ``-machine q35 -accel tcg`` by
default, with QMP on a socket in a private temporary directory (or HMP on
stdio through pexpect).  Every wait has a timeout; ``close()`` always kills and
reaps the process and removes the directory (use it as a context manager).

Binaries: ``find_qemu("7.2")`` / ``find_qemu("10.0")`` / ``find_qemu("11.1")`` read
VFIO_EMU_QEMU_7_2 / VFIO_EMU_QEMU_10_0 / VFIO_EMU_QEMU_11_1 (defaults
/usr/bin/qemu-system-x86_64, Debian bookworm; /opt/qemu-10.0/bin/qemu-system-x86_64,
bookworm-backports; /opt/qemu-11.1/bin/qemu-system-x86_64, trixie-backports run
through trixie's loader: both installed by scripts/install-qemu.sh).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time

from vmm_model.qemu.errors import QemuGoneError, QemuLaunchError
from vmm_model.qemu.monitor import DEFAULT_TIMEOUT, HmpMonitor, QmpMonitor

QEMU_BINARIES = {
    "7.2": ("VFIO_EMU_QEMU_7_2", "/usr/bin/qemu-system-x86_64"),
    "10.0": ("VFIO_EMU_QEMU_10_0", "/opt/qemu-10.0/bin/qemu-system-x86_64"),
    "11.1": ("VFIO_EMU_QEMU_11_1", "/opt/qemu-11.1/bin/qemu-system-x86_64"),
}
BASE_ARGS = ["-nodefaults", "-display", "none", "-S"]


def _defaults(args: list[str]) -> list[str]:
    """-machine q35 and -accel tcg unless the caller chose; then the base args."""
    out = []
    typed = any(a in ("-machine", "-M", "--machine") and i + 1 < len(args) and
                (args[i + 1].split(",")[0].find("=") < 0 or "type=" in args[i + 1])
                for i, a in enumerate(args))
    if not typed:
        out += ["-machine", "q35"]
    if not any(a in ("-accel", "--accel", "-enable-kvm") for a in args):
        out += ["-accel", "tcg"]
    return out + BASE_ARGS


@functools.lru_cache(maxsize=None)
def binary_version(binary: str) -> str | None:
    """"7.2.22" from ``BINARY --version``, or None if it does not run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    from backends.version import format_version, match_version
    got = match_version(out.partition("version ")[2])
    return format_version(got[0]) if got else None


def find_qemu(label: str) -> tuple[str | None, str]:
    """(binary, "") for QEMU ``label`` ("7.2", "10.0", "11.1"), or (None, why not)."""
    env, default = QEMU_BINARIES[label]
    path = os.environ.get(env) or default
    if not os.path.exists(path):
        return None, (f"QEMU {label} not found at {path} (set {env}, or run "
                      "scripts/install-qemu.sh)")
    ver = binary_version(path)
    if ver is None:
        return None, f"{path} (QEMU {label}, from {env}) does not run: {path} --version failed"
    if not (ver == label or ver.startswith(label + ".")):
        return None, f"{path} is QEMU {ver}, not {label} (set {env})"
    return path, ""


class QemuProcess:
    """One QEMU process with QMP on ``<tmpdir>/qmp.sock``."""

    def __init__(self, binary: str, args: list[str] = (), *, timeout: float = DEFAULT_TIMEOUT):
        if isinstance(args, str):
            raise TypeError("QEMU arguments are an argv list, not a shell string")
        self.binary = binary
        self.args = list(args)
        self.timeout = timeout
        self.tmpdir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.socket_path: str | None = None
        self.argv: list[str] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "QemuProcess":
        self.tmpdir = tempfile.mkdtemp(prefix="vfio-emu-qemu-")
        self.socket_path = os.path.join(self.tmpdir, "qmp.sock")
        self.argv = [self.binary, *_defaults(self.args),
                     "-qmp", f"unix:{self.socket_path},server=on,wait=off", *self.args]
        log = open(os.path.join(self.tmpdir, "qemu.log"), "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, close_fds=True)
        except OSError as e:
            self.close()
            raise QemuLaunchError(f"cannot run QEMU binary {self.binary}: "
                                  f"{e.strerror or e}",
                                  valid="an installed qemu-system-x86_64 (Debian "
                                        "qemu-system-x86; scripts/install-qemu.sh for 10.0 and 11.1)"
                                  ) from None
        finally:
            log.close()
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                msg = self.log_tail()
                code = self.proc.returncode
                self.close()
                raise QemuLaunchError(f"QEMU exited with status {code} before its QMP "
                                      f"socket appeared: {msg}")
            if time.monotonic() > deadline:
                self.close()
                raise QemuLaunchError(f"QEMU did not create its QMP socket within "
                                      f"{self.timeout:g}s")
            time.sleep(0.02)
        return self

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.tmpdir, "qemu.log"), errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except (OSError, TypeError):
            return "(no output)"
        return lines[-1] if lines else "(no output)"

    def monitor(self) -> QmpMonitor:
        return QmpMonitor(self.socket_path, timeout=self.timeout)

    def kill(self) -> None:
        """SIGKILL now (tests: QEMU dying in the middle of a query)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=self.timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=self.timeout)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> "QemuProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.close()


def launch_hmp(binary: str, args: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> HmpMonitor:
    """QEMU with ``-monitor stdio`` under pexpect; close the monitor to end it."""
    import pexpect
    if isinstance(args, str):
        raise TypeError("QEMU arguments are an argv list, not a shell string")
    if shutil.which(binary) is None and not os.access(binary, os.X_OK):
        raise QemuLaunchError(f"cannot run QEMU binary {binary}: not found",
                              valid="an installed qemu-system-x86_64 (Debian "
                                    "qemu-system-x86; scripts/install-qemu.sh for 10.0 and 11.1)")
    argv = [*_defaults(list(args)), "-monitor", "stdio", *args]
    try:
        child = pexpect.spawn(binary, argv, encoding="utf-8", codec_errors="replace",
                              timeout=timeout, echo=False, dimensions=(50, 500))
    except pexpect.ExceptionPexpect as e:
        raise QemuLaunchError(f"cannot run QEMU binary {binary}: {e}") from None
    try:
        return HmpMonitor(child, timeout=timeout, source=f"HMP on stdio of {binary}")
    except QemuGoneError as e:
        child.close(force=True)
        raise QemuLaunchError(e.message.replace("during the HMP banner", "at start-up"),
                              valid="QEMU arguments QEMU accepts") from None
    except Exception:
        child.close(force=True)
        raise
