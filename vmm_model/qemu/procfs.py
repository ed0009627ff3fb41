"""What /proc says about a QEMU process on this host: its mappings
(/proc/PID/maps: shared ``s`` or private ``p``, backing file, file offset), its
fds (/proc/PID/fd), and memfd seals (F_GET_SEALS through /proc/PID/fd/N).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from vmm_model.qemu.parse import Vma, parse_maps

F_GET_SEALS = 1034          # F_LINUX_SPECIFIC_BASE + 10 (include/uapi/linux/fcntl.h)
SEAL_NAMES = ((0x0001, "F_SEAL_SEAL"), (0x0002, "F_SEAL_SHRINK"), (0x0004, "F_SEAL_GROW"),
              (0x0008, "F_SEAL_WRITE"), (0x0010, "F_SEAL_FUTURE_WRITE"),
              (0x0020, "F_SEAL_EXEC"))


def seal_names(seals: int | None) -> tuple[str, ...]:
    if seals is None:
        return ()
    return tuple(n for bit, n in SEAL_NAMES if seals & bit)


@dataclass
class FdInfo:
    fd: int
    target: str               # readlink(/proc/PID/fd/N)
    dev: tuple[int, int]
    inode: int


@dataclass
class ProcView:
    pid: int
    vmas: list[Vma]
    fds: list[FdInfo]

    def vma_at(self, addr: int) -> Vma | None:
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def fd_for(self, vma: Vma) -> FdInfo | None:
        """The lowest fd of the process open on the file a VMA maps."""
        if vma.inode == 0:
            return None
        for f in self.fds:
            if f.inode == vma.inode and f.dev == vma.dev:
                return f
        return None

    def seals(self, fd: int) -> int | None:
        """F_GET_SEALS on the process's fd, opened read-only through /proc.
        None when the file does not support seals (EINVAL) or cannot be opened."""
        try:
            mine = os.open(f"/proc/{self.pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return fcntl.fcntl(mine, F_GET_SEALS)
        except OSError:
            return None
        finally:
            os.close(mine)


def readable(pid: int | None) -> bool:
    return pid is not None and os.access(f"/proc/{pid}/maps", os.R_OK)


def read_proc(pid: int) -> ProcView:
    with open(f"/proc/{pid}/maps") as f:
        vmas = parse_maps(f.read())
    fds = []
    fddir = f"/proc/{pid}/fd"
    for name in os.listdir(fddir):
        try:
            target = os.readlink(f"{fddir}/{name}")
            st = os.stat(f"{fddir}/{name}")
        except OSError:
            continue
        fds.append(FdInfo(int(name), target, (os.major(st.st_dev), os.minor(st.st_dev)),
                          st.st_ino))
    fds.sort(key=lambda f: f.fd)
    return ProcView(pid, vmas, fds)


def fs_type(path: str) -> str | None:
    """The filesystem type of ``path`` (longest mount-point prefix in /proc/self/mounts)."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [ln.split()[:3] for ln in f if ln.strip()]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = None
    for _src, mnt, typ in mounts:
        mnt = mnt.replace("\\040", " ")
        if real == mnt or real.startswith(mnt.rstrip("/") + "/"):
            if best is None or len(mnt) > len(best[0]):
                best = (mnt, typ)
    return best[1] if best else None
