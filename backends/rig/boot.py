"""Boot a rig kernel under QEMU, run test sets in the guest, bring back JSON.

docs/kernel-model.md, "The kernel rig" (QEMU command line, /init):
q35 + ``intel-iommu,intremap=on,caching-mode=on`` + N ``edu`` devices (bound
to vfio-pci by /init), the host root read-only over 9p (tag ``host``) and a
private writable run directory over 9p (tag ``rig``) at the same path in the
guest.  The guest runs ``run.sh`` from that directory: one pytest run per test
set, in backends/rig/guest/ with the Python that runs vfio-emu (the host root
is the guest's; the install and the venv are bound back where /tmp hides
them), each writing ``results-SET.json`` through ``backends.rig.guest_plugin``.  /init prints ``RIG: exit status N`` last;
QEMU's own exit code does not carry it.

The console goes to a file that is watched while the guest runs; a guest
that outlives ``timeout`` is killed.  QEMU dies with this process
(PR_SET_PDEATHSIG) and the run directory is removed on every path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

import backends
from backends.errors import HostError, UsageError
from backends.rig import die_with_parent
from backends.rig.initramfs import make_initramfs
from backends.rig.kernels import Kernel
from backends.rig.sets import DEFAULT_TIMEOUT, GUEST_DIR, TestSet

SCHEMA = "vfio-emu-rig/1"
PACKAGE_ROOT = Path(backends.__file__).resolve().parents[1]   # the checkout or site-packages
TAIL_LINES = 40
RUN_PREFIX = "vfio-emu-rig-"                  # + pid + random: the run directory in /tmp
ACCELS = ("tcg", "kvm", "auto")
# The root is read-only in the guest and Python is ~20x slower under TCG:
# no cache, no xdist, no hypothesis plugin (its import alone costs a minute
# there; @given still works without it).
GUEST_PYTEST_OPTS = ("-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:xdist.looponfail",
                     "-p", "no:hypothesispytest")
KVM_GET_API_VERSION, KVM_CREATE_VM = 0xAE00, 0xAE01   # include/uapi/linux/kvm.h


def kvm_usable() -> bool:
    """Hardware KVM that boots a stock kernel: the CPU has vmx or svm, and /dev/kvm
    opens, speaks API 12 and creates a VM.  (The node alone proves nothing: a
    nested host with kvm-pvm creates VMs, but QEMU's -cpu max/host dies on an
    MSR there and an unmodified kernel never prints a line.)"""
    with open("/proc/cpuinfo") as f:
        if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", f.read(), re.M):
            return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) != 12:
            return False
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def guest_python() -> Path:
    """The Python that runs vfio-emu: it runs the test sets inside the guest (the
    host root over 9p), so it needs the test extras (pytest, hypothesis)."""
    missing = [m for m in ("pytest", "hypothesis") if find_spec(m) is None]
    if missing:
        raise HostError(f"the rig runs its test sets with this Python's pytest and hypothesis; "
                        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                        "not installed", where=sys.executable,
                        valid="pip install 'vfio-emu[test]' (a checkout: pip install -e '.[test]')")
    return Path(sys.executable)


def guest_binds(kernel: Kernel) -> list[str]:
    """Host paths bound back into the guest's view of the host root (its /tmp is
    a fresh tmpfs): the installed packages, the venv, the kernel; nested ones once."""
    paths = [_check_path(p, "rig bind")
             for p in (PACKAGE_ROOT, Path(sys.prefix).resolve(), Path(kernel.dir))]
    return [p for i, p in enumerate(paths) if p not in paths[:i]
            and not any(p.startswith(o + "/") for o in paths)]


def qemu_binary(qemu: str | None) -> str:
    name = qemu or os.environ.get("VFIO_EMU_QEMU") or "qemu-system-x86_64"
    path = shutil.which(name)
    if path is None:
        raise HostError(f"QEMU binary {name!r} not found", where="--qemu",
                        valid="qemu-system-x86_64 on PATH (sh scripts/rig-deps.sh) or a path")
    return path


@dataclasses.dataclass
class SetResult:
    """One test set's pytest run in the guest."""
    name: str
    files: list[str]
    exit_status: int | None          # pytest's, None if it never finished
    seconds: float | None
    tests: list[dict]                # guest_plugin records
    artefact: dict | None = None     # what the set wrote to artefact-SET*.json in the run dir

    @property
    def counts(self) -> dict[str, int]:
        c = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        for t in self.tests:
            c[t["outcome"]] += 1
        return c

    def failures(self) -> list[dict]:
        return [t for t in self.tests if t["outcome"] in ("failed", "error")]

    def to_json(self) -> dict:
        return {"name": self.name, "files": self.files, "exit_status": self.exit_status,
                "seconds": self.seconds, "counts": self.counts, "tests": self.tests,
                **({"artefact": self.artefact} if self.artefact is not None else {})}


@dataclasses.dataclass
class RunResult:
    """One boot: the kernel, the machine, the guest's exit status and each set's tests."""
    kernel: dict                     # Kernel.summary(): name, version, config_hash, patches
    qemu: str
    accel: str
    edu: int
    exit_status: int | None          # from "RIG: exit status N"
    error: str | None                # timeout, no exit line, missing results
    boot_seconds: float | None       # QEMU start -> "RIG: kernel"
    seconds: float
    sets: list[SetResult]
    console_tail: str

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status == 0 and all(
            s.exit_status == 0 and not s.failures() for s in self.sets)

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "kernel": self.kernel, "qemu": self.qemu,
                "accel": self.accel, "edu_devices": self.edu, "ok": self.ok,
                "exit_status": self.exit_status, "error": self.error,
                "timings": {"boot": self.boot_seconds, "total": self.seconds},
                "sets": [s.to_json() for s in self.sets], "console_tail": self.console_tail}


def check_sets(kernel: str, sets: list[TestSet]) -> None:
    """UsageError unless every set has test files and applies to ``kernel``."""
    for s in sets:
        if not s.files:
            raise UsageError(f"test set {s.name!r} has no test files yet", where="--set")
        if kernel not in s.kernels:
            raise UsageError(f"test set {s.name!r} does not apply to kernel {kernel!r}",
                             where="--set", valid=", ".join(s.kernels))


def _check_path(p: Path, what: str) -> str:
    s = str(p)
    if re.search(r"[\s,'\"\\]", s):
        raise UsageError(f"{what} path has a space, comma or quote; the guest's kernel "
                         f"command line cannot carry it", where=s)
    return s


def _run_script(kernel: Kernel, sets: list[TestSet], out: Path,
                pytest_args: list[str]) -> str:
    q = shlex.quote
    env = {"RIG_GUEST": "1", "RIG_OUT": str(out), "RIG_KERNEL": kernel.name, "RIG_RELEASE": kernel.release,
           "RIG_FEATURES": ",".join(kernel.features),
           "RIG_PATCHES": ",".join(p["file"] for p in kernel.patches),
           "RIG_SELFTESTS": kernel.selftests or "", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1"}
    if any(s.observer for s in sets):
        # built on the host, copied into the run directory (the guest sees it at the
        # same path, wherever the build cache is)
        from backends.rig.real_qemu import OBSERVER_SOURCE
        from backends.shim.build import build
        env["RIG_OBSERVER"] = str(shutil.copy(build(OBSERVER_SOURCE), out / "vfio_observe.so"))
    lines = ["#!/bin/sh", "# written by backends/rig/boot.py; runs in the guest's chroot",
             f"cd {q(str(GUEST_DIR))} || exit 125",
             "export " + " ".join(f"{k}={q(v)}" for k, v in env.items()), "rc=0"]
    for s in sets:
        argv = [str(guest_python()), "-m", "pytest", *GUEST_PYTEST_OPTS,
                "-p", "backends.rig.guest_plugin", "--rig-json", str(out / f"results-{s.name}.json"),
                "-v", *s.files, *pytest_args]
        lines += [f"echo 'RIG: set {s.name} start'", " ".join(map(q, argv)),
                  f"r=$?; echo \"RIG: set {s.name} exit status $r\"; [ $r = 0 ] || rc=$r"]
    lines.append("exit $rc")
    return "\n".join(lines) + "\n"


def qemu_argv(qemu: str, kernel: Kernel, out: Path, accel: str, edu: int,
              memory: str) -> list[str]:
    """The rig's QEMU command line (docs/kernel-model.md), plus the run directory."""
    # no_timer_check: timer_irq_works() (arch/x86/kernel/apic/io_apic.c) gives a TCG
    # guest on a busy host ten ticks to arrive, else "Kernel panic - not syncing:
    # timer doesn't work through Interrupt-remapped IO-APIC" (seen with two rig
    # guests and a CI run on 2 cores); the timer itself works, only the check is late.
    cmdline = (f"console=ttyS0 intel_iommu=on panic=-1 hugepages=128 no_timer_check "
               f"rig.out={_check_path(out, 'run directory')} "
               f"rig.bind={','.join(guest_binds(kernel))}")
    argv = [qemu, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", memory, "-smp", "1", "-machine", "q35,kernel-irqchip=split",
            "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-device", "intel-iommu,intremap=on,caching-mode=on"]
    argv += ["-device", "edu"] * edu
    argv += ["-kernel", kernel.bzimage, "-initrd", str(out / "initrd.gz"), "-append", cmdline,
             "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                        "multidevs=remap",
             "-virtfs", f"local,path={out},mount_tag=rig,security_model=none,multidevs=remap"]
    return argv


def run(kernel: Kernel, sets: list[TestSet], *, qemu: str | None = None, accel: str = "tcg",
        timeout: float = DEFAULT_TIMEOUT, edu: int = 1, memory: str = "2G",
        pytest_args: list[str] | tuple[str, ...] = (),
        echo: Callable[[str], None] | None = None,
        console_log: Path | None = None) -> RunResult:
    """Boot ``kernel``, run ``sets`` in one guest, return what happened
    (``console_log``: where to keep the whole console).

    Kernel refusals and test failures are results; bad arguments raise
    UsageError, a host that can't run QEMU raises HostError.
    """
    check_sets(kernel.name, sets)
    guest_python()
    if accel not in ACCELS:
        raise UsageError(f"unknown accelerator {accel!r}", where="--accel", valid=", ".join(ACCELS))
    if not 1 <= edu <= 8:
        raise UsageError(f"{edu} edu devices", where="--edu", valid="1 to 8")
    if timeout <= 0:
        raise UsageError(f"timeout {timeout}", where="--timeout", valid="seconds > 0")
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    elif accel == "kvm" and not kvm_usable():
        raise HostError("no hardware KVM here (vmx/svm and a working /dev/kvm)", where="--accel kvm",
                        valid="--accel tcg")
    binary = qemu_binary(qemu)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL).stdout.split("\n")[0].strip()
    _remove_orphaned_run_dirs()
    with _sigterm_as_exit(), \
            tempfile.TemporaryDirectory(prefix=f"{RUN_PREFIX}{os.getpid()}-") as tmp:
        out = Path(tmp)
        (out / "run.sh").write_text(_run_script(kernel, sets, out, list(pytest_args)))
        make_initramfs(out / "initrd.gz", [Path(m) for m in kernel.modules])
        console = out / "console.log"
        marks: dict[str, float] = {}
        t0 = time.monotonic()
        error = None
        with open(console, "wb") as con:
            proc = subprocess.Popen(qemu_argv(binary, kernel, out, accel, edu, memory),
                                    stdin=subprocess.DEVNULL, stdout=con,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            try:
                error = _watch(proc, console, t0, timeout, marks, echo)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        seconds = round(time.monotonic() - t0, 1)
        text = console.read_text(errors="replace")
        if console_log is not None:
            shutil.copyfile(console, console_log)
        m = re.findall(r"^RIG: exit status (\d+)\s*$", text, re.M)
        status = int(m[-1]) if m else None
        init_error = re.search(r"^RIG: error: (.*?)\s*$", text, re.M)
        if init_error and error is None:
            error = f"guest /init: {init_error[1]}"
        if status is None and error is None:
            said = re.search(r"^qemu(?:-system-\w+)?: (.*?)\s*$|Kernel panic - (.*?)\s*$",
                             text, re.M)
            error = (f"the guest printed no 'RIG: exit status' line (QEMU exit "
                     f"{proc.returncode}" + (f": {said[1] or said[2]})" if said else ")"))
        results = [_set_result(s, out, text, marks) for s in sets]
        if error is None and any(r.exit_status is not None and not r.tests for r in results):
            error = "a test set finished without writing its results"
    tail = "\n".join(text.splitlines()[-TAIL_LINES:])
    return RunResult(kernel.summary(), version, accel, edu, status, error,
                     marks.get("boot"), seconds, results, tail)



@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM (timeout(1), a CI runner) raises SystemExit, so the run directory
    and QEMU are cleaned up as on any other exit (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _remove_orphaned_run_dirs() -> None:
    """Run directories of rig processes that died by SIGKILL (their pid is in the name)."""
    for d in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*-*"):
        pid = d.name[len(RUN_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def _watch(proc: subprocess.Popen, console: Path, t0: float, timeout: float,
           marks: dict[str, float], echo: Callable[[str], None] | None) -> str | None:
    """Follow the console until QEMU exits (None) or the timeout (an error)."""
    pos, partial = 0, b""
    with open(console, "rb") as f:
        while True:
            done = proc.poll() is not None
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            now = round(time.monotonic() - t0, 1)
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if echo:
                    echo(line)
                if line.startswith("RIG: kernel ") and "boot" not in marks:
                    marks["boot"] = now
                m = re.match(r"RIG: set (\S+) (start|exit status)", line)
                if m:
                    marks[f"{m[1]} {m[2]}"] = now
            if done:
                return None
            if now > timeout:
                return f"guest timed out after {timeout:g} s; QEMU killed"
            time.sleep(0.2)


def _set_result(s: TestSet, out: Path, console: str, marks: dict[str, float]) -> SetResult:
    m = re.findall(rf"^RIG: set {re.escape(s.name)} exit status (\d+)\s*$", console, re.M)
    path = out / f"results-{s.name}.json"
    tests = json.loads(path.read_text())["tests"] if path.exists() else []
    start, end = marks.get(f"{s.name} start"), marks.get(f"{s.name} exit status")
    secs = round(end - start, 1) if start is not None and end is not None else None
    art: dict = {}
    for p in sorted(out.glob(f"artefact-{s.name}*.json")):   # one per test file that writes one
        art.update(json.loads(p.read_text()))
    return SetResult(s.name, list(s.files), int(m[-1]) if m else None, secs, tests, art or None)
