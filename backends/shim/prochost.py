"""``ProcHost``: the simulated kernel (SimHost) serving a *real* process.

The VFIO / iommufd models in backends/simulated/ act on ``host.mm`` (VMAs,
pages), ``host.read_mem``/``write_mem`` (copy_{from,to}_user of nested user
pointers, e.g. IOMMU_IOAS_IOVA_RANGES) and files in ``host.fds``.  For a real
QEMU these must be QEMU's own:

* ``sync_maps()`` rebuilds ``mm`` from /proc/PID/smaps (ranges, VmFlags, the
  file behind each mapping by device/inode, anonymous, memfd, shmem, hugetlbfs,
  on-disk files), keeping the VM_PFNMAP VMAs of BAR mmaps the shim reported;
* ``read_mem``/``write_mem`` are process_vm_readv/writev on QEMU;
* ``install_real_fd()`` turns a memory fd QEMU passed (SCM_RIGHTS, for
  IOMMU_IOAS_MAP_FILE) into a simulated open file of the same inode, with what
  the real kernel reports for it: size (fstat), seals (F_GET_SEALS), the file
  system (fstatfs), the open mode (F_GETFL).

Page *contents* stay in the simulation (a device DMA through a pin sees the
simulated page); the mapping decisions, errnos and accounting act on QEMU's
real ranges.  RLIMIT_MEMLOCK and CAP_IPC_LOCK are QEMU's (/proc/PID/limits,
/proc/PID/status).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from backends.host import F_GET_SEALS, F_GETFL, MAP_FIXED, PAGE_SIZE, _iovec, _libc
from backends.simulated.fs import EXT4, HUGETLBFS, SHMEM, File, new_inode
from backends.simulated.mmap import (VM_DONTEXPAND, VM_EXEC, VM_HUGETLB, VM_IO, VM_MAYEXEC,
                                     VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_PFNMAP, VM_READ,
                                     VM_SHARED, VM_WRITE, VMA)
from backends.simulated.syscalls import RLIM_INFINITY, SimHost

# fs/proc/task_mmu.c show_smap_vma_flags() mnemonics
_VMFLAGS = {"rd": VM_READ, "wr": VM_WRITE, "ex": VM_EXEC, "sh": VM_SHARED, "mr": VM_MAYREAD,
            "mw": VM_MAYWRITE, "me": VM_MAYEXEC, "ms": VM_MAYSHARE, "io": VM_IO,
            "pf": VM_PFNMAP, "de": VM_DONTEXPAND, "ht": VM_HUGETLB}
# include/uapi/linux/magic.h
TMPFS_MAGIC, HUGETLBFS_MAGIC = 0x01021994, 0x958458F6
CAP_IPC_LOCK = 14


def fs_kind_of_fd(fd: int) -> str:
    """fstatfs(): shmem (tmpfs, memfd), hugetlbfs, else a writeback file system."""
    buf = ctypes.create_string_buffer(120)
    if _libc.fstatfs(fd, buf) != 0:
        return EXT4
    f_type = int.from_bytes(buf.raw[:8], "little")
    return {TMPFS_MAGIC: SHMEM, HUGETLBFS_MAGIC: HUGETLBFS}.get(f_type, EXT4)


def _mounts(pid: int) -> list[tuple[str, str]]:
    try:
        with open(f"/proc/{pid}/mounts") as f:
            return [(ln.split()[1], ln.split()[2]) for ln in f if len(ln.split()) > 2]
    except OSError:
        return []


def parse_smaps(text: str) -> list[dict]:
    """One dict per mapping: start, end, perms, pgoff, dev, ino, path, flags (vm_flags)."""
    out = []
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            maj, mnr = (int(x, 16) for x in head[3].split(":"))
            out.append({"start": lo, "end": hi, "perms": head[1], "pgoff": int(head[2], 16),
                        "dev": os.makedev(maj, mnr), "ino": int(head[4]),
                        "path": head[5].strip() if len(head) > 5 else "", "flags": 0})
        elif line.startswith("VmFlags:") and out:
            out[-1]["flags"] = sum(_VMFLAGS.get(w, 0) for w in line.split()[1:])
    return out


class ProcHost(SimHost):
    """A SimHost whose process is the real process ``pid`` (attach() later)."""

    def __init__(self, profile="7.2", **kw):
        super().__init__(profile, **kw)
        self.pid: int | None = None
        self.inodes: dict[tuple[int, int], object] = {}     # (st_dev, st_ino) -> Inode
        self.real_fds: list[int] = []                       # fds received from the process
        self.device_vmas: dict[tuple[int, int], VMA] = {}   # BAR mmaps, by range
        self.pci_functions: dict[int, object] = {}          # id(SimVfioDevice) -> PciFunction
        self._mounts: list[tuple[str, str]] = []           # /proc/PID/mounts, per sync

    def attach(self, pid: int) -> None:
        """Take QEMU's RLIMIT_MEMLOCK and CAP_IPC_LOCK (what the IOMMU drivers check)."""
        self.pid = pid
        try:
            with open(f"/proc/{pid}/limits") as f:
                for line in f:
                    if line.startswith("Max locked memory"):
                        soft = line.split()[3]
                        self.rlimit_memlock = RLIM_INFINITY if soft == "unlimited" else int(soft)
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("CapEff:"):
                        self.cap_ipc_lock = bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
        except OSError:
            pass

    # ---- files ---------------------------------------------------------------------
    def _path_kind(self, path: str, vm_flags: int) -> str:
        if vm_flags & VM_HUGETLB:
            return HUGETLBFS
        if path.startswith(("/memfd:", "/dev/zero", "/SYSV", "/dev/shm/")):
            return SHMEM
        best = max((m for m in self._mounts if path == m[0] or
                    path.startswith(m[0].rstrip("/") + "/")), key=lambda m: len(m[0]),
                   default=("/", "ext4"))
        return {"tmpfs": SHMEM, "hugetlbfs": HUGETLBFS}.get(best[1], EXT4)

    def _inode(self, key, kind: str, size: int, name: str):
        inode = self.inodes.get(key)
        if inode is None:
            inode = self.inodes[key] = new_inode(kind, i_size=size, name=name)
        inode.i_size = max(inode.i_size, size)
        return inode

    def install_real_fd(self, fd: int) -> int:
        """A simulated fd for the file behind QEMU's real ``fd`` (received by
        SCM_RIGHTS; kept open until close_all())."""
        self.real_fds.append(fd)
        st = os.fstat(fd)
        inode = self._inode((st.st_dev, st.st_ino), fs_kind_of_fd(fd), st.st_size,
                            os.readlink(f"/proc/self/fd/{fd}"))
        inode.i_size = st.st_size
        try:
            inode.seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            inode.seals = None                      # not shmem/hugetlbfs: -EINVAL
        return self._fd_install(File.open(inode, fcntl.fcntl(fd, F_GETFL)))

    # ---- memory ---------------------------------------------------------------------
    def sync_maps(self) -> None:
        """mm := QEMU's mappings now (BAR mmaps keep their simulated VM_PFNMAP VMA)."""
        if self.pid is None:
            return
        try:
            with open(f"/proc/{self.pid}/smaps") as f:
                maps = parse_smaps(f.read())
        except OSError:
            return
        self._mounts = _mounts(self.pid)
        mm = self.mm
        for v in list(mm.vmas):
            mm.unlink(v)
        live = {(m["start"], m["end"]) for m in maps}
        for rng in [r for r in self.device_vmas if not any(
                a <= r[0] and r[1] <= b for a, b in live)]:
            del self.device_vmas[rng]
        files: dict[tuple, File] = {}
        for m in maps:
            dev = [v for (a, b), v in self.device_vmas.items() if a < m["end"] and m["start"] < b]
            if dev:
                for v in dev:
                    if v not in mm.vmas:
                        mm.link(v)
                continue
            flags, file = m["flags"], None
            if m["ino"]:
                key = (m["dev"], m["ino"])
                size = (m["pgoff"] + (m["end"] - m["start"]) // PAGE_SIZE) * PAGE_SIZE
                path = m["path"]
                if path and not path.endswith(" (deleted)") and path.startswith("/"):
                    try:
                        size = max(size, os.stat(path).st_size)
                    except OSError:
                        pass
                inode = self._inode(key, self._path_kind(path, flags), size, path)
                mode = os.O_RDWR if flags & VM_MAYWRITE or not flags & VM_MAYSHARE else os.O_RDONLY
                file = files.get((key, mode))
                if file is None:
                    file = files[(key, mode)] = File.open(inode, mode)
            mm.link(VMA(m["start"], m["end"], flags, file, m["pgoff"] if file else 0))

    def record_device_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int,
                           offset: int) -> int:
        """The shim's BAR mmap at ``addr``: the device's mmap (vfio_pci_core_mmap())
        on the simulated fd at that address, kept across sync_maps()."""
        self.sync_maps()
        ret = self.mmap(addr, length, prot, flags | MAP_FIXED, fd, offset)
        if ret < 0:
            return ret
        for v in self.mm.intersecting(addr, addr + length):
            if v.vm_flags & VM_PFNMAP:
                self.device_vmas[(v.start, v.end)] = v
        return 0

    def forget_device_mmap(self, addr: int, length: int) -> None:
        for rng in [r for r in self.device_vmas if r[0] < addr + length and addr < r[1]]:
            del self.device_vmas[rng]

    def _vm_rw(self, fn, addr: int, buf, length: int) -> int:
        local = _iovec(ctypes.cast(buf, ctypes.c_void_p), length)
        remote = _iovec(addr, length)
        r = fn(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        return r if r >= 0 else -ctypes.get_errno()

    def read_mem(self, addr, length):
        """copy_from_user() from QEMU: process_vm_readv()."""
        if self.pid is None:
            return -errno.EFAULT, b""
        buf = ctypes.create_string_buffer(max(length, 1))
        r = self._vm_rw(_libc.process_vm_readv, addr, buf, length)
        return r, (buf.raw[:r] if r > 0 else b"")

    def write_mem(self, addr, data):
        """copy_to_user() into QEMU: process_vm_writev()."""
        if self.pid is None:
            return -errno.EFAULT
        buf = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
        return self._vm_rw(_libc.process_vm_writev, addr, buf, len(data))

    def close_all(self):
        super().close_all()
        fds, self.real_fds = self.real_fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
