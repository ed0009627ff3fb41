"""SimHost: the simulated kernel behind the ``Host`` seam (backends/host.py).

One process: an fd table, a mount table, an ``MM``.  Each syscall checks its
arguments in the kernel's order and returns ``>= 0`` or ``-errno``; the
per-version differences come from ``self.profile`` (backends/kernel_profiles.py).

Device nodes: ``register_chardev(path, factory)`` puts a character device at
``path``.  ``factory(host, file)`` is called on every open() and returns the
per-open device object (or -errno: the driver's open refused, open() fails),
which may define

    ioctl(request: int, arg: bytes | int) -> (ret, out_bytes)   (default -ENOTTY)
    mmap(file, vma) -> 0 | -errno     (set vma.vm_flags / vma.pfn_store; absent: -ENODEV)
    release() -> None                 (last close of the open file description)

so that a later issue can put /dev/iommu and /dev/vfio/vfio models there.
"""

from __future__ import annotations

import errno

from backends.host import (F_ADD_SEALS, F_DUPFD_CLOEXEC, F_GET_SEALS, F_GETFD, F_GETFL,
                           FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, HPAGE_SIZE,
                           MAP_ANONYMOUS, O_ACCMODE, O_CLOEXEC, O_CREAT, O_EXCL, O_RDONLY,
                           O_TMPFILE, O_TRUNC, PAGE_SIZE, SimulatedHost, page_align)
from .fs import (CHARDEV, DIR, DMABUF, EXT4, FALLOC_FL_MODE_MASK, FMODE_WRITE,
                 HUGETLBFS, SHMEM, File, Inode, Page, PageStore, ext4_fallocate, generic_write_begin,
                 new_inode, truncate_setsize, vfs_read, vfs_write)
from .gup import memfd_pin_folios, pin_user_pages, process_vm_rw, unpin_user_pages
from .memfd import memfd_create, memfd_fcntl
from .mmap import MM, VM_DONTEXPAND, VM_HUGETLB, VM_IO, VM_PFNMAP, do_mmap, do_mprotect, do_munmap
from backends.kernel_profiles import KernelProfile, get_profile
from .shmem import (hugetlbfs_fallocate, hugetlbfs_setattr, shmem_fallocate, shmem_setattr,
                    shmem_write_begin)

RLIM_INFINITY = (1 << 64) - 1
DEFAULT_MOUNTS = {"/": EXT4, "/dev/shm": SHMEM, "/run": SHMEM, "/dev/hugepages": HUGETLBFS}
PROC_FD = "/proc/self/fd/"


class SimHost(SimulatedHost):
    """A simulated Linux process + kernel.

    ``profile``: a profile name or KernelProfile.  ``mounts``: path -> fs kind
    (``shmem``, ``hugetlbfs``, ``ext4``), longest prefix wins.  ``hugetlb_pages``:
    free 2 MiB pages (None: unlimited); memfd_noexec: the vm.memfd_noexec sysctl;
    rlimit_memlock (bytes) / cap_ipc_lock: what the IOMMU drivers check when
    they account pinned pages.  VFIO devices: ``backends.simulated.vfio.install``.
    ``fast_paths``: the MAP/UNMAP hot paths that do in one step what the
    kernel's general path does for the common case (one VMA, one run, an
    exact unmap; see docs/kernel-model.md); False runs the general path
    everywhere, and tests/test_fast_paths.py checks both give the same answers.
    """

    # The KernelProfile, an instance attribute (set once in __init__) in place of
    # Host.profile's property: the map paths read it on every ioctl.
    profile: KernelProfile = None

    def __init__(self, profile: str | KernelProfile = "7.2", *, mounts: dict | None = None,
                 hugetlb_pages: int | None = None, memfd_noexec: int = 0,
                 rlimit_memlock: int = RLIM_INFINITY, cap_ipc_lock: bool = False,
                 fast_paths: bool = True):
        self.profile = get_profile(profile)
        self.kernel_release = self.profile.name + ".0-sim"
        self.mounts = dict(DEFAULT_MOUNTS if mounts is None else mounts)
        self.dirs: set[str] = set(self.mounts) | {"/tmp", "/dev"}
        self.names: dict[str, Inode] = {}
        self.fds: dict[int, File] = {}
        self.cloexec: set[int] = set()
        self.mm = MM(self.profile, fast_paths=fast_paths)
        self.fast_paths = fast_paths
        self.hugetlb_pages = hugetlb_pages
        self.memfd_noexec = memfd_noexec
        # RLIMIT_MEMLOCK and CAP_IPC_LOCK of the process, and the counters the
        # IOMMU drivers charge: mm->locked_vm, mm->pinned_vm, user->locked_vm (pages).
        self.rlimit_memlock = rlimit_memlock
        self.cap_ipc_lock = cap_ipc_lock
        self.locked_vm = self.pinned_vm = self.user_locked_vm = 0
        self.luo_files: set[File] = set()             # luo_preserve()
        self.vfio_devices: list = []

    # ---- registration points ---------------------------------------------
    def register_chardev(self, path: str, factory) -> None:
        """Create a character device node at ``path`` (see module docstring)."""
        self.names[path] = new_inode(CHARDEV, i_mode=0o020600, chardev=factory, name=path)

    def add_dir(self, path: str, kind: str | None = None) -> None:
        """Make ``path`` an existing directory (optionally a mount of ``kind``)."""
        path = path.rstrip("/") or "/"
        self.dirs.add(path)
        if kind:
            self.mounts[path] = kind

    def listdir(self, path: str) -> list[str] | None:
        """The names under ``path`` in the node table and the directories, sorted;
        None when ``path`` is not a directory here."""
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix):].split("/")[0] for p in (*self.names, *self.dirs)
                 if p.startswith(prefix)}
        if not names and path.rstrip("/") not in self.dirs:
            return None
        return sorted(n for n in names if n)

    def install_file(self, inode: Inode, flags: int = 2) -> int:
        """fd_install() of a new open file description of ``inode`` (for device
        models returning fds, e.g. VFIO_GROUP_GET_DEVICE_FD)."""
        return self._fd_install(File.open(inode, flags), flags)

    def anon_inode_getfd(self, name: str, dev, flags: int = 2) -> int:
        """anon_inode_getfd(): a new fd whose file is served by the device
        object ``dev`` (e.g. a VFIO device fd from VFIO_GROUP_GET_DEVICE_FD)."""
        file = File.open(new_inode(CHARDEV, i_mode=0o020600, name=name), flags)
        file.dev = dev
        return self._fd_install(file, flags)

    def dmabuf_export(self, size: int) -> int:
        """A dma-buf fd placeholder of ``size`` bytes (no mmap, no seals)."""
        return self.install_file(new_inode(DMABUF, i_size=size, name="dmabuf"))

    def luo_preserve(self, fd: int) -> int:
        """Preserve fd's file in the Live Update Orchestrator session (proposed
        2026 LUO / memfd preservation series, not merged; docs/kernel-model.md).  A file
        with a live-update handler (/dev/iommu: iommufd_save_hwpts(), iommufd/device.py)
        runs its checks and is not preserved when they fail.  -EBADF for a bad fd."""
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF
        preserve = getattr(file.dev, "liveupdate_preserve", None)
        rc = preserve() if preserve is not None else 0
        if rc == 0:
            self.luo_files.add(file)
        return rc

    def file_of(self, fd: int) -> File | None:
        """fget(): the open file description behind fd (for the IOMMU models)."""
        return self.fds.get(fd)

    # ---- GUP, for the IOMMU simulators --------------------------------------
    def pin_user_pages(self, addr: int, npages: int, write: bool, longterm: bool = True):
        """mm/gup.c pin_user_pages() on this process: (n pinned | -errno, [Pin])."""
        return pin_user_pages(self.mm, addr, npages, write, longterm)

    def unpin_user_pages(self, pages) -> None:
        unpin_user_pages(pages)

    def memfd_pin_folios(self, fd_or_file, start: int, end: int):
        """mm/gup.c memfd_pin_folios(file, start, end inclusive): (n | -errno, [Pin])."""
        file = self.fds.get(fd_or_file) if isinstance(fd_or_file, int) else fd_or_file
        return memfd_pin_folios(file, start, end)

    def page_count(self) -> int:
        """Pages the simulation holds in memory: page caches + private pages."""
        inodes = {id(f.inode): f.inode for f in self.fds.values()}
        inodes.update({id(v.file.inode): v.file.inode for v in self.mm.vmas if v.file})
        inodes.update({id(i): i for i in self.names.values()})
        return sum(len(i.mapping.pages) for i in inodes.values()) + len(self.mm.anon)

    # ---- helpers ---------------------------------------------------------------
    def _fd_install(self, file: File, flags: int = 0) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        self.fds[fd] = file
        file.refs += 1
        if flags & O_CLOEXEC:
            self.cloexec.add(fd)
        return fd

    def _fput(self, file: File) -> None:
        file.refs -= 1
        if file.refs == 0 and file.inode.kind == CHARDEV:
            if file.dev is not None and hasattr(file.dev, "release"):
                file.dev.release()

    def _fs_kind(self, path: str) -> str:
        best = max((m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")),
                   key=len, default="/")
        return self.mounts.get(best, EXT4)

    # ---- files -----------------------------------------------------------------
    def open(self, path, flags, mode=0o600):
        """do_sys_open(): /proc/self/fd/N reopens the same inode with a new open
        file description and f_mode; O_TMPFILE needs a directory and write
        access (-EINVAL); -ENOENT / -EEXIST / -EISDIR as path_openat()."""
        acc = flags & O_ACCMODE
        if acc == O_ACCMODE:
            return -errno.EINVAL
        if path.startswith(PROC_FD):
            try:
                old = self.fds.get(int(path[len(PROC_FD):]))
            except ValueError:
                old = None
            if old is None:
                return -errno.ENOENT
            inode = old.inode
        elif (flags & O_TMPFILE) == O_TMPFILE:
            if acc == O_RDONLY:
                return -errno.EINVAL
            d = path.rstrip("/") or "/"
            if d not in self.dirs:
                return -errno.ENOENT if d not in self.names else -errno.ENOTDIR
            kind = self._fs_kind(d)
            inode = new_inode(kind, i_mode=0o100000 | (mode & 0o7777))
            return self._fd_install(File.open(inode, flags), flags)
        elif (path.rstrip("/") or "/") in self.dirs:
            if acc != O_RDONLY or flags & O_CREAT:
                return -errno.EISDIR                  # do_open(): may_open() on a directory
            inode = self.names.setdefault(path.rstrip("/") or "/", new_inode(DIR, i_mode=0o040755))
        else:
            inode = self.names.get(path)
            if inode is None:
                parent = path.rsplit("/", 1)[0] or "/"
                if not flags & O_CREAT:
                    return -errno.ENOENT
                if parent not in self.dirs:
                    return -errno.ENOENT
                inode = self.names[path] = new_inode(self._fs_kind(path),
                                                     i_mode=0o100000 | (mode & 0o7777))
            elif flags & O_CREAT and flags & O_EXCL:
                return -errno.EEXIST
        file = File.open(inode, flags)
        if inode.kind == CHARDEV:
            file.dev = inode.chardev(self, file)
            if type(file.dev) is int:                 # the driver's ->open() refused
                return file.dev
        if flags & O_TRUNC and acc != O_RDONLY and inode.kind in (SHMEM, EXT4, HUGETLBFS):
            err = self._setattr_size(inode, 0)
            if err:
                return err
        return self._fd_install(file, flags)

    def close(self, fd):
        file = self.fds.pop(fd, None)
        if file is None:
            return -errno.EBADF
        self.cloexec.discard(fd)
        self._fput(file)
        return 0

    def memfd_create(self, name, flags):
        inode = memfd_create(self.profile, name, flags, self.memfd_noexec)
        if isinstance(inode, int):
            return inode
        return self._fd_install(File.open(inode, 2), O_CLOEXEC if flags & 1 else 0)

    def _setattr_size(self, inode: Inode, length: int) -> int:
        if length > inode.s_maxbytes:
            return -errno.EFBIG                       # inode_newsize_ok()
        if inode.kind == SHMEM:
            return shmem_setattr(inode, length, self.mm)
        if inode.kind == HUGETLBFS:
            return hugetlbfs_setattr(inode, length, self.mm)
        truncate_setsize(inode, length, self.mm)
        return 0

    def ftruncate(self, fd, length):
        """do_sys_ftruncate(): -EINVAL length < 0 -> -EBADF -> -EINVAL not a
        regular file or no FMODE_WRITE -> the filesystem's setattr."""
        if length < 0:
            return -errno.EINVAL
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF
        if file.inode.kind not in (SHMEM, HUGETLBFS, EXT4) or not file.f_mode & FMODE_WRITE:
            return -errno.EINVAL
        return self._setattr_size(file.inode, length)

    def fallocate(self, fd, mode, offset, length):
        """vfs_fallocate(): -EBADF no fd; -EINVAL offset < 0 or len <= 0;
        -EOPNOTSUPP unknown mode or PUNCH_HOLE without KEEP_SIZE; -EBADF no
        FMODE_WRITE; -ENODEV not a regular file; -EFBIG past s_maxbytes."""
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF
        if offset < 0 or length <= 0:
            return -errno.EINVAL
        if mode & ~(FALLOC_FL_MODE_MASK | FALLOC_FL_KEEP_SIZE):
            return -errno.EOPNOTSUPP
        kind = mode & FALLOC_FL_MODE_MASK
        if kind not in (0, FALLOC_FL_PUNCH_HOLE, 0x10):
            return -errno.EOPNOTSUPP
        if kind == FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            return -errno.EOPNOTSUPP
        if not file.f_mode & FMODE_WRITE:
            return -errno.EBADF
        inode = file.inode
        if inode.kind == DIR:
            return -errno.EISDIR
        if inode.kind not in (SHMEM, HUGETLBFS, EXT4):
            return -errno.ENODEV
        if offset + length > inode.s_maxbytes or offset + length >= 1 << 63:
            return -errno.EFBIG
        if inode.kind == SHMEM:
            return shmem_fallocate(file, mode, offset, length, self.mm)
        if inode.kind == HUGETLBFS:
            return hugetlbfs_fallocate(file, mode, offset, length, self.mm, self._hugetlb_free())
        return ext4_fallocate(file, mode, offset, length, self.mm)

    def fcntl(self, fd, cmd, arg=0):
        """do_fcntl(): F_ADD_SEALS/F_GET_SEALS go to memfd_fcntl(); F_GETFL
        returns f_flags; F_DUPFD_CLOEXEC dups; other commands -EINVAL."""
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF
        if cmd in (F_ADD_SEALS, F_GET_SEALS):
            return memfd_fcntl(self.profile, file, cmd, arg)
        if cmd == F_GETFL:
            return file.f_flags
        if cmd == F_GETFD:
            return 1 if fd in self.cloexec else 0
        if cmd == F_DUPFD_CLOEXEC:
            new = max(arg, 0)
            while new in self.fds:
                new += 1
            self.fds[new] = file
            file.refs += 1
            self.cloexec.add(new)
            return new
        return -errno.EINVAL

    def pread(self, fd, length, offset):
        if offset < 0:
            return -errno.EINVAL, b""
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF, b""
        if file.inode.kind == DIR:
            return -errno.EISDIR, b""
        if file.inode.kind in (CHARDEV, DMABUF):
            return -errno.EINVAL, b""
        return vfs_read(file, length, offset)

    def pwrite(self, fd, data, offset):
        if offset < 0:
            return -errno.EINVAL
        file = self.fds.get(fd)
        if file is None:
            return -errno.EBADF
        if file.inode.kind in (CHARDEV, DMABUF):
            return -errno.EINVAL
        write_begin = shmem_write_begin if file.inode.kind == SHMEM else generic_write_begin
        return vfs_write(file, bytes(data), offset, write_begin)

    def ioctl(self, fd, request, arg=0):
        """vfs_ioctl(): -EBADF; -ENOTTY unless the file's device model handles it."""
        file = self.fds.get(fd)
        if file is not None:
            try:
                return file.dev.ioctl(request, arg)
            except AttributeError:
                if hasattr(file.dev, "ioctl"):
                    raise                     # from inside the device's ioctl
        return (-errno.EBADF if file is None else -errno.ENOTTY,
                bytes(arg) if not isinstance(arg, int) else b"")

    # ---- memory ------------------------------------------------------------------
    def _hugetlb_free(self):
        if self.hugetlb_pages is None:
            return None
        used = sum((v.end - v.start) // HPAGE_SIZE for v in self.mm.vmas if v.vm_flags & VM_HUGETLB)
        return self.hugetlb_pages - used

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        if offset % PAGE_SIZE:
            return -errno.EINVAL
        file = None
        if not flags & MAP_ANONYMOUS:
            file = self.fds.get(fd)
            if file is None:
                return -errno.EBADF
            if file.inode.kind in (DMABUF, DIR):
                return -errno.EINVAL if file.inode.kind == DMABUF else -errno.ENODEV
        return do_mmap(self.mm, addr, length, prot, flags, file, offset, self._hugetlb_free)

    def munmap(self, addr, length):
        return do_munmap(self.mm, addr, length)

    def mprotect(self, addr, length, prot):
        return do_mprotect(self.mm, addr, length, prot)

    def read_mem(self, addr, length):
        return process_vm_rw(self.mm, addr, length, None)

    def write_mem(self, addr, data):
        return process_vm_rw(self.mm, addr, len(data), bytes(data))[0]

    def close_all(self):
        for v in list(self.mm.vmas):
            self.mm.unlink(v)
        self.mm.anon.clear()
        for fd in list(self.fds):
            self.close(fd)


class PfnmapDevice:
    """A device whose mmap() is a BAR: VM_IO|VM_PFNMAP (vfio_pci_core_mmap()).
    Use as ``sim.register_chardev(path, PfnmapDevice.factory(size))``; the BAR's
    pages are ``device.bar`` (shared by every open), readable by follow_pfnmap()
    but not by GUP (check_vma_flags() -> -EFAULT)."""

    def __init__(self, bar: PageStore):
        self.bar = bar

    @classmethod
    def factory(cls, size: int):
        bar = PageStore()
        bar.pages.update((i, Page()) for i in range(page_align(size) // PAGE_SIZE))
        return lambda host, file: cls(bar)

    def mmap(self, file, vma):
        if vma.pgoff + (vma.end - vma.start) // PAGE_SIZE > len(self.bar.pages):
            return -errno.EINVAL
        vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND
        vma.pfn_store = self.bar
        return 0
