"""Real libvirt for the tests: a private session daemon that answers
``virsh -c qemu:///session domxml-to-native qemu-argv FILE``.

As root, ``qemu:///session`` means the system daemon, which is not running here;
so the daemon runs as ``nobody`` with its HOME and XDG_RUNTIME_DIR in a temporary
directory, in a private mount namespace where a 2 MiB hugetlbfs is mounted (libvirt
refuses <hugepages/> without one: qemuBuildMemoryGetDefaultPagesize()).  Its
qemu.conf names that mount and a memory_backing_dir inside the directory.  The
daemon is stopped by its pid and the directory removed when the session ends.
Needs root (unshare, mount, setpriv), Debian's libvirt-clients and
libvirt-daemon-driver-qemu, and /usr/bin/qemu-system-x86_64.

A second libvirt release runs the same way from the Debian packages unpacked
under a prefix (scripts/libvirt-prefix.sh: 11.3 from bookworm-backports): its
libvirtd and virsh run with LD_LIBRARY_PATH=PREFIX/usr/lib/x86_64-linux-gnu, and in
the daemon's mount namespace PREFIX's driver modules and /usr/share/libvirt are
bind-mounted over the system's, so the installed libvirt is not touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

NOBODY = 65534
LIB = "usr/lib/x86_64-linux-gnu"
PREFIXES = Path(os.environ.get("VFIO_EMU_LIBVIRT_DIR", "/var/cache/vfio-emu"))


def prefix_for(version: str) -> Path | None:
    """The unpacked libvirt ``version`` (scripts/libvirt-prefix.sh), if present."""
    p = PREFIXES / f"libvirt-{version}"
    return p if (p / "usr/sbin/libvirtd").exists() else None


def available() -> str | None:
    """None when a session can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (unshare, mount, setpriv to nobody)"
    for tool in ("virsh", "libvirtd", "unshare", "setpriv"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install libvirt-clients libvirt-daemon " \
                   "libvirt-daemon-driver-qemu)"
    if not Path("/usr/bin/qemu-system-x86_64").exists():
        return "/usr/bin/qemu-system-x86_64 is not installed"
    return None


class Session:
    def __init__(self, root: Path, prefix: Path | None = None):
        self.root = root
        self.prefix = prefix
        self.hugetlbfs = root / "hugepages"
        self.ram = root / "ram"
        self.env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(root),
                    "XDG_RUNTIME_DIR": str(root / "run"), "LC_ALL": "C"}
        self.proc: subprocess.Popen | None = None
        self.virsh = "virsh"
        if prefix is not None:
            self.env["LD_LIBRARY_PATH"] = str(prefix / LIB)
            self.virsh = str(prefix / "usr/bin/virsh")

    def start(self, timeout: float = 60) -> None:
        for d in (self.hugetlbfs, self.ram, self.root / "run", self.root / "xml",
                  self.root / ".config" / "libvirt"):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / ".config/libvirt/qemu.conf").write_text(
            f'hugetlbfs_mount = ["{self.hugetlbfs}"]\nmemory_backing_dir = "{self.ram}"\n')
        for p in [self.root, *self.root.rglob("*")]:
            os.chown(p, NOBODY, NOBODY)
        # unshare, sh and setpriv exec: the pid is libvirtd's
        script = f"mount -t hugetlbfs -o pagesize=2M,uid={NOBODY},gid={NOBODY} none " \
                 f"{self.hugetlbfs}"
        daemon = "/usr/sbin/libvirtd"
        if self.prefix is not None:
            for d in (f"/{LIB}/libvirt", "/usr/share/libvirt"):
                script += f" && mount --bind {self.prefix}{d} {d}"
            daemon = f"{self.prefix}/usr/sbin/libvirtd"
        script += (f" && exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
                   f"{daemon} --timeout=600")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        sock = self.root / "run/libvirt/libvirt-sock"
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not start (rc {self.proc.poll()})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def qemu_argv(self, xml: str) -> subprocess.CompletedProcess:
        """``virsh domxml-to-native qemu-argv`` of a domain XML text."""
        path = self.root / "xml" / f"d{time.monotonic_ns()}.xml"
        path.write_text(xml)
        os.chown(path, NOBODY, NOBODY)
        try:
            return subprocess.run(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 self.virsh, "-c", "qemu:///session", "domxml-to-native", "qemu-argv",
                 str(path)],
                env=self.env, capture_output=True, text=True, timeout=120)
        finally:
            path.unlink()

    def version(self) -> str:
        out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                              "--clear-groups", self.virsh, "-c", "qemu:///session", "version"],
                             env=self.env, capture_output=True, text=True, timeout=60).stdout
        for line in out.splitlines():
            if "libvirt" in line.lower() and "library" in line.lower():
                return line.split()[-1]
        return "?"


@contextlib.contextmanager
def session(prefix: Path | None = None):
    root = Path(tempfile.mkdtemp(prefix="vfio-emu-libvirt-"))
    os.chmod(root, 0o755)
    s = Session(root, prefix)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        shutil.rmtree(root, ignore_errors=True)
