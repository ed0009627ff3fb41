"""LinuxHost: real calls, -errno results, nothing leaked (the ``linux_hosts``
fixture compares /proc/self/fd and /proc/self/maps before and after)."""

from __future__ import annotations

import ctypes
import errno

import pytest

from backends.errors import HostError
from backends.host import (F_ADD_SEALS, F_DUPFD_CLOEXEC, F_GET_SEALS, F_SEAL_WRITE, MAP_ANONYMOUS,
                           MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING, O_RDONLY, PAGE_SIZE,
                           PROT_READ, PROT_WRITE)
from backends.kernel_profiles import host_profile
from backends.simulated import SimHost

RW = PROT_READ | PROT_WRITE


def test_kernel_release_and_profile(real):
    assert real.kernel_release
    assert real.profile is host_profile()


def test_errno_results_not_exceptions(real):
    assert real.close(1 << 20) == -errno.EBADF
    assert real.open("/nonexistent/x", O_RDONLY) == -errno.ENOENT
    assert real.mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS) == -errno.EINVAL
    assert real.munmap(123, PAGE_SIZE) == -errno.EINVAL
    assert real.read_mem(8, 8) == (-errno.EFAULT, b"")
    assert real.pread(1 << 20, 1, 0) == (-errno.EBADF, b"")
    fd = real.memfd_create("x", MFD_ALLOW_SEALING)
    assert real.ioctl(fd, 0x3B81, bytes(12)) == (-errno.ENOTTY, bytes(12))   # IOMMU_IOAS_ALLOC on a memfd
    assert real.ioctl(fd, 0x3B64, 0) == (-errno.ENOTTY, b"")
    assert real.fcntl(fd, F_GET_SEALS) == 0
    dup = real.fcntl(fd, F_DUPFD_CLOEXEC, 0)
    assert dup > fd and real.fcntl(dup, F_ADD_SEALS, F_SEAL_WRITE) == 0
    assert real.fcntl(fd, F_GET_SEALS) == F_SEAL_WRITE


def test_read_write_mem_partial_and_readonly(real):
    a = real.mmap(0, 2 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert real.write_mem(a + PAGE_SIZE - 2, b"abcd") == 4
    assert real.mprotect(a + PAGE_SIZE, PAGE_SIZE, PROT_READ) == 0
    assert real.write_mem(a + PAGE_SIZE - 2, b"xyzw") == 2           # stops at the read-only page
    assert real.read_mem(a + PAGE_SIZE - 2, 4) == (4, b"xycd")
    assert real.munmap(a + PAGE_SIZE, PAGE_SIZE) == 0
    assert real.read_mem(a + PAGE_SIZE - 2, 4) == (2, b"xy")
    assert real.read_mem(a + PAGE_SIZE, 4) == (-errno.EFAULT, b"")


def test_guard_refuses_foreign_memory(real):
    buf = ctypes.create_string_buffer(PAGE_SIZE * 2)
    addr = (ctypes.addressof(buf) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    with pytest.raises(HostError):
        real.munmap(addr, PAGE_SIZE)
    with pytest.raises(HostError):
        real.mmap(addr, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    with pytest.raises(HostError):
        real.write_mem(addr, b"x")
    assert real.read_mem(addr, 1)[0] == 1          # reading is harmless and allowed


def test_context_manager_releases_on_error(linux_hosts):
    with pytest.raises(RuntimeError):
        with linux_hosts() as h:
            fd = h.memfd_create("leak-check", 0)
            h.ftruncate(fd, 4 * PAGE_SIZE)
            a = h.mmap(0, 4 * PAGE_SIZE, RW, MAP_SHARED, fd)
            h.munmap(a + PAGE_SIZE, PAGE_SIZE)            # two pieces left
            h.open(f"/proc/self/fd/{fd}", O_RDONLY)
            h.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
            raise RuntimeError("boom")
    assert h._fds == set() and h._owned == []
    # the fixture then checks /proc/self/fd and /proc/self/maps


def test_failed_calls_leak_nothing(linux_hosts):
    h = linux_hosts()
    fd = h.memfd_create("x", MFD_ALLOW_SEALING)
    h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)
    assert h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd) == -errno.EPERM
    assert h.open(f"/proc/self/fd/{1 << 20}", O_RDONLY) == -errno.ENOENT
    assert h.memfd_create("x" * 300, 0) == -errno.EINVAL
    assert h._owned == [] and h._fds == {fd}


def test_same_api_on_both_hosts(real):
    """A smoke test of the seam: the same code against both hosts."""
    def scenario(h):
        fd = h.memfd_create("guest-ram", MFD_ALLOW_SEALING)
        h.ftruncate(fd, 2 * PAGE_SIZE)
        a = h.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        return [h.write_mem(a, b"ram"), h.pread(fd, 3, 0), h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE),
                h.munmap(a, 2 * PAGE_SIZE), h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)]
    with SimHost(host_profile()) as sim:
        assert scenario(real) == scenario(sim) == [3, (3, b"ram"), -errno.EBUSY, 0, 0]
