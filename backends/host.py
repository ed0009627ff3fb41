"""The syscall seam (docs/architecture.md): ``Host``, and ``LinuxHost`` (real calls).

Every call uses the kernel convention: ``int >= 0`` on success, ``-errno`` on a
kernel refusal (never an exception).  Calls that return data return
``(ret, data)``.  ``SimHost`` (``backends.simulated``) answers behind the same
interface as a chosen kernel would.

Exceptions are only for misuse (``UsageError``) or for a ``LinuxHost`` refusing
to touch memory it did not map (``HostError``), which would corrupt this process.
"""

from __future__ import annotations

import abc
import ctypes
import errno
import fcntl as _fcntl
import os
import platform

from backends.errors import HostError
from backends.kernel_profiles import host_profile

PAGE_SIZE = 4096
PAGE_SHIFT = 12
HPAGE_SIZE = 2 << 20

# include/uapi/asm-generic/mman-common.h, mman.h
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE, MAP_TYPE = 0x01, 0x02, 0x03, 0x0F
MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE, MAP_HUGETLB = 0x10, 0x20, 0x4000, 0x40000
MAP_FIXED_NOREPLACE = 0x100000
# include/uapi/asm-generic/fcntl.h (x86-64)
O_RDONLY, O_WRONLY, O_RDWR, O_ACCMODE = 0, 1, 2, 3
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_LARGEFILE, O_DIRECTORY, O_CLOEXEC = 0o100000, 0o200000, 0o2000000
O_TMPFILE = 0o20000000 | O_DIRECTORY
# include/uapi/linux/fcntl.h
F_DUPFD_CLOEXEC, F_GETFD, F_GETFL = 1030, 1, 3
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 0x1, 0x2, 0x4
F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_EXEC = 0x8, 0x10, 0x20
# include/uapi/linux/memfd.h
MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB = 0x1, 0x2, 0x4
MFD_NOEXEC_SEAL, MFD_EXEC = 0x8, 0x10
MFD_HUGE_SHIFT, MFD_HUGE_MASK = 26, 0x3F
MFD_HUGE_2MB, MFD_HUGE_1GB = 21 << MFD_HUGE_SHIFT, 30 << MFD_HUGE_SHIFT
# include/uapi/linux/falloc.h
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x1, 0x2, 0x10


def page_align(n: int, size: int = PAGE_SIZE) -> int:
    return (n + size - 1) & ~(size - 1)


class Host(abc.ABC):
    """The calls QEMU makes, kernel convention (``>= 0`` or ``-errno``).

    ``kernel_release`` is the ``uname -r`` string; ``profile`` the
    ``backends.kernel_profiles.KernelProfile`` describing it (for LinuxHost,
    the nearest known profile).  ``with host:`` releases every fd and mapping
    the host created, on every path.
    """

    kernel_release: str
    page_size: int = PAGE_SIZE

    @property
    def profile(self):
        return host_profile(self.kernel_release)

    # files
    @abc.abstractmethod
    def open(self, path: str, flags: int, mode: int = 0o600) -> int: ...
    @abc.abstractmethod
    def close(self, fd: int) -> int: ...
    @abc.abstractmethod
    def memfd_create(self, name: str, flags: int) -> int: ...
    @abc.abstractmethod
    def ftruncate(self, fd: int, length: int) -> int: ...
    @abc.abstractmethod
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> int: ...
    @abc.abstractmethod
    def fcntl(self, fd: int, cmd: int, arg: int = 0) -> int: ...
    @abc.abstractmethod
    def pread(self, fd: int, length: int, offset: int) -> tuple[int, bytes]: ...
    @abc.abstractmethod
    def pwrite(self, fd: int, data: bytes, offset: int) -> int: ...
    @abc.abstractmethod
    def ioctl(self, fd: int, request: int, arg: bytes | int = 0) -> tuple[int, bytes]:
        """``arg`` bytes: passed by pointer, the buffer after the call is returned.
        ``arg`` int: passed by value (VFIO_CHECK_EXTENSION...), ``b""`` returned.
        ``ret`` is the ioctl's return value (e.g. a new fd) or -errno."""

    # memory
    @abc.abstractmethod
    def mmap(self, addr: int, length: int, prot: int, flags: int,
             fd: int = -1, offset: int = 0) -> int: ...
    @abc.abstractmethod
    def munmap(self, addr: int, length: int) -> int: ...
    @abc.abstractmethod
    def mprotect(self, addr: int, length: int, prot: int) -> int: ...
    @abc.abstractmethod
    def read_mem(self, addr: int, length: int) -> tuple[int, bytes]:
        """process_vm_readv() on oneself: bytes read (partial if a later page
        faults) or -EFAULT when the first page cannot be read."""
    @abc.abstractmethod
    def write_mem(self, addr: int, data: bytes) -> int:
        """process_vm_writev() on oneself (no FOLL_FORCE: read-only -> -EFAULT)."""

    @abc.abstractmethod
    def close_all(self) -> None:
        """Unmap every mapping and close every fd this host created."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close_all()


class SimulatedHost(Host):
    """A Host whose kernel is a model (backends/simulated: ``SimHost``): what a
    simulation (vmm_model/simulate.py) does beyond QEMU's syscalls, in place of
    what an administrator would have set up on a real machine."""

    #: the vfio-pci functions on this host (``backends.simulated.vfio.install``)
    vfio_devices: list

    @abc.abstractmethod
    def add_dir(self, path: str, kind: str | None = None) -> None:
        """Make ``path`` an existing directory (a mount of ``kind``: shmem,
        hugetlbfs, ext4, when given)."""
    @abc.abstractmethod
    def register_chardev(self, path: str, factory) -> None:
        """A character device node at ``path``; ``factory(host, file)`` serves each open()."""
    @abc.abstractmethod
    def dmabuf_export(self, size: int) -> int:
        """A dma-buf fd of ``size`` bytes (what VFIO_DEVICE_FEATURE_DMA_BUF returns)."""
    @abc.abstractmethod
    def listdir(self, path: str) -> list[str] | None:
        """The names in directory ``path`` (the seam has no getdents), None if absent."""


# --------------------------------------------------------------------------
# LinuxHost: the real syscalls.

class _iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
for _f in (_libc.process_vm_readv, _libc.process_vm_writev):
    _f.restype = ctypes.c_ssize_t
    _f.argtypes = [ctypes.c_int, ctypes.POINTER(_iovec), ctypes.c_ulong,
                   ctypes.POINTER(_iovec), ctypes.c_ulong, ctypes.c_ulong]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _neg(e: OSError) -> int:
    return -(e.errno or errno.EIO)


def _maps() -> list[tuple[int, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            rng, rest = line.split(" ", 1)
            lo, hi = (int(x, 16) for x in rng.split("-"))
            out.append((lo, hi, line.rstrip("\n")))
    return out


class LinuxHost(Host):
    """The real kernel.  Tracks the fds and the address ranges it created and
    releases them in ``close_all()``.  Refuses (HostError) to munmap, mprotect,
    MAP_FIXED over or write memory that another part of this process mapped."""

    def __init__(self):
        self.kernel_release = platform.release()
        self._fds: set[int] = set()
        self._owned: list[tuple[int, int]] = []   # [start, end) page ranges we mapped
        self.history: list[tuple[int, int]] = []  # every range ever mapped (leak checks)

    # -- bookkeeping ------------------------------------------------------
    def _own(self, lo: int, hi: int) -> None:
        self._disown(lo, hi)
        self._owned.append((lo, hi))

    def _disown(self, lo: int, hi: int) -> None:
        kept = []
        for a, b in self._owned:
            if b <= lo or a >= hi:
                kept.append((a, b))
                continue
            if a < lo:
                kept.append((a, lo))
            if b > hi:
                kept.append((hi, b))
        self._owned = kept

    def foreign(self, addr: int, length: int) -> bool:
        """True if [addr, addr+length) touches memory mapped by someone else."""
        lo, hi = addr & ~(PAGE_SIZE - 1), page_align(addr + length)
        for a, b, _ in _maps():
            if b <= lo or a >= hi:
                continue
            for x in range(max(a, lo), min(b, hi), PAGE_SIZE):
                if not any(o <= x < e for o, e in self._owned):
                    return True
        return False

    def _guard(self, what: str, addr: int, length: int) -> None:
        if length > 0 and addr >= 0 and self.foreign(addr, length):
            raise HostError(f"LinuxHost refuses to {what} memory it did not map",
                            where=f"{addr:#x}+{length:#x}")

    def _newfd(self, fd: int) -> int:
        self._fds.add(fd)
        return fd

    # -- files ------------------------------------------------------------
    def open(self, path, flags, mode=0o600):
        try:
            return self._newfd(os.open(path, flags, mode))
        except OSError as e:
            return _neg(e)

    def close(self, fd):
        try:
            os.close(fd)
        except OSError as e:
            return _neg(e)
        self._fds.discard(fd)
        return 0

    def memfd_create(self, name, flags):
        try:
            return self._newfd(os.memfd_create(name, flags))
        except (OSError, ValueError) as e:
            return _neg(e) if isinstance(e, OSError) else -errno.EINVAL

    def ftruncate(self, fd, length):
        try:
            os.ftruncate(fd, length)
            return 0
        except OSError as e:
            return _neg(e)

    def fallocate(self, fd, mode, offset, length):
        if _libc.fallocate(fd, mode, offset, length) == 0:
            return 0
        return -ctypes.get_errno()

    def fcntl(self, fd, cmd, arg=0):
        try:
            r = _fcntl.fcntl(fd, cmd, arg)
        except OSError as e:
            return _neg(e)
        if cmd == F_DUPFD_CLOEXEC:
            self._newfd(r)
        return r

    def pread(self, fd, length, offset):
        try:
            data = os.pread(fd, length, offset)
        except OSError as e:
            return _neg(e), b""
        return len(data), data

    def pwrite(self, fd, data, offset):
        try:
            return os.pwrite(fd, data, offset)
        except OSError as e:
            return _neg(e)

    def ioctl(self, fd, request, arg=0):
        if isinstance(arg, int):
            r = _libc.ioctl(fd, request, ctypes.c_void_p(arg))
            return (r if r >= 0 else -ctypes.get_errno()), b""
        buf = ctypes.create_string_buffer(bytes(arg), len(arg))
        r = _libc.ioctl(fd, request, buf)
        return (r if r >= 0 else -ctypes.get_errno()), buf.raw

    # -- memory -----------------------------------------------------------
    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) == MAP_FIXED:
            self._guard("MAP_FIXED over", addr, length)
        r = _libc.mmap(addr or None, length, prot, flags, fd, offset)
        if r is None or r == _MAP_FAILED:
            return -ctypes.get_errno()
        # hugetlbfs rounds the length up to its page size (st_blksize).
        size = PAGE_SIZE
        if flags & MAP_HUGETLB:
            size = HPAGE_SIZE
        elif fd >= 0 and not flags & MAP_ANONYMOUS:
            try:
                size = max(PAGE_SIZE, os.fstat(fd).st_blksize)
            except OSError:
                pass
        end = r + page_align(length, size)
        self._own(r, end)
        self.history.append((r, end))
        return r

    def munmap(self, addr, length):
        self._guard("munmap", addr, length)
        if _libc.munmap(addr, length) != 0:
            return -ctypes.get_errno()
        self._disown(addr, page_align(addr + length))
        return 0

    def mprotect(self, addr, length, prot):
        self._guard("mprotect", addr, length)
        if _libc.mprotect(addr, length, prot) != 0:
            return -ctypes.get_errno()
        return 0

    def _vm_rw(self, fn, addr, buf, length) -> int:
        local = _iovec(ctypes.cast(buf, ctypes.c_void_p), length)
        remote = _iovec(addr, length)
        r = fn(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        return r if r >= 0 else -ctypes.get_errno()

    def read_mem(self, addr, length):
        buf = ctypes.create_string_buffer(max(length, 1))
        r = self._vm_rw(_libc.process_vm_readv, addr, buf, length)
        return r, (buf.raw[:r] if r > 0 else b"")

    def write_mem(self, addr, data):
        self._guard("write", addr, len(data))
        buf = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
        return self._vm_rw(_libc.process_vm_writev, addr, buf, len(data))

    def close_all(self):
        owned, self._owned = self._owned, []
        for a, b in owned:
            _libc.munmap(a, b - a)
        fds, self._fds = self._fds, set()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

