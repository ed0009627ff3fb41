"""What the real Debian 7.2.13 kernel answered in the kernel rig (an empty IOAS;
an IOAS with edu attached), replayed step by step on the simulated 7.2.  The rig
runs the same steps as backends/rig/guest/test_probe_iommufd.py (test_4a_*, test_4b_*)."""

from __future__ import annotations

import struct

import pytest

from backends import uapi
from backends.host import (F_ADD_SEALS, F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, MAP_ANONYMOUS,
                           MAP_PRIVATE, O_CREAT, O_RDONLY, O_RDWR, PROT_READ)
from backends.simulated.dma import dma_read, dma_write

from iommufd_env import E, FIXED, P, R, RW, U64_MAX, W, Env


# ============================================================================
# the rig's iommufd probe (4a: empty IOAS, 4b: edu attached): what Debian 7.2.13 answered
# ============================================================================

def _rig_4a(e: Env, step: str):
    """Each step of the rig's 4a probe (empty IOAS, lazy pinning) -> (ret, extra)."""
    ioas = e.ioas()
    va = e.mem(16)
    fd = e.memfd(4 * P)
    if step == "alloc+ranges":
        return e.ranges(ioas)[1], e.ranges(ioas)[2].out_iova_alignment
    if step == "auto 16K":
        return e.map(ioas, 0x7F00002000, 4 * P)        # an 8K-aligned VA gives iova 0x2000
    if step == "fixed / overlap":
        return e.map(ioas, va, 4 * P, 0x100000)[0], e.map(ioas, va, 4 * P, 0x102000)[0]
    if step == "length 0":
        return e.map(ioas, va, 0, 0x100000)[0]
    if step == "unaligned user_va fixed":
        return e.map(ioas, va + 100, P, 0x100000)[0]
    if step == "unmapped user va":
        return e.map(ioas, 0x10000000, P, 0x100000)[0]
    if step == "map_file rw / r / start 100 / past eof":
        return (e.map_file(ioas, fd, 0, P, 0x100000)[0], e.map_file(ioas, fd, 0, P, 0x200000, flags=R)[0],
                e.map_file(ioas, fd, 100, P, 0x300000)[0], e.map_file(ioas, fd, 0, 8 * P, 0x400000)[0])
    if step == "rdonly reopen rw / r":
        ro = e.h.open(f"/proc/self/fd/{fd}", O_RDONLY)
        return e.map_file(ioas, ro, 0, P, 0x100000)[0], e.map_file(ioas, ro, 0, P, 0x200000, flags=R)[0]
    if step == "sealed rw / r, seal after map":
        s = e.memfd(P, F_SEAL_WRITE)
        r = (e.map_file(ioas, s, 0, P, 0x100000)[0], e.map_file(ioas, s, 0, P, 0x200000, flags=R)[0])
        f2 = e.memfd(P)
        assert e.map_file(ioas, f2, 0, P, 0x300000)[0] == 0
        return r + (e.h.fcntl(f2, F_ADD_SEALS, F_SEAL_WRITE),)
    if step == "regular file":
        reg = e.h.open("/img", O_RDWR | O_CREAT)
        e.h.ftruncate(reg, P)
        return e.map_file(ioas, reg, 0, P, 0x100000)[0]
    if step == "unmap nothing / split / exact / all / all empty":
        assert e.map(ioas, va, 4 * P, 0x100000)[0] == 0
        assert e.map(ioas, va, 10 * P, 0x200000)[0] == 0
        assert e.map(ioas, va, 16 * P, 0x300000)[0] == 0
        return (e.unmap(ioas, 0x900000, P)[0], e.unmap(ioas, 0x100000, P)[0],
                e.unmap(ioas, 0x100000, 4 * P), e.unmap(ioas, 0, U64_MAX), e.unmap(ioas, 0, U64_MAX))
    if step == "destroy bogus":
        return e.destroy(1234)
    raise AssertionError(step)


RIG_4A = [
    ("alloc+ranges", ([(0, U64_MAX)], 1)),
    ("auto 16K", (0, 0x2000)),
    ("fixed / overlap", (0, -E.EEXIST)),
    ("length 0", -E.EINVAL),
    ("unaligned user_va fixed", 0),
    ("unmapped user va", 0),
    ("map_file rw / r / start 100 / past eof", (0, 0, 0, 0)),
    ("rdonly reopen rw / r", (0, 0)),
    ("sealed rw / r, seal after map", (0, 0, 0)),
    ("regular file", 0),
    ("unmap nothing / split / exact / all / all empty",
     (-E.ENOENT, -E.ENOENT, (0, 0x4000), (0, 0x1A000), (0, 0))),
    ("destroy bogus", -E.ENOENT),
]


@pytest.mark.parametrize("step,expect", RIG_4A, ids=[s for s, _ in RIG_4A])
def test_rig_4a_empty_ioas(step, expect):
    """The rig's 4a probe (7.2.13, nothing attached).  The auto-IOVA row needs an
    8 KiB-aligned VA to land at 0x2000 as on the rig."""
    e = Env("7.2")
    if step == "auto 16K":
        assert e.h.mmap(0x7F00002000, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x10) == 0x7F00002000
    assert _rig_4a(e, step) == expect


def _rig_4b(e: Env, step: str):
    ioas = e.ioas()
    ret, devid = e.bind()
    ret2, hwpt = e.attach(ioas)
    va = e.mem(16)
    fd = e.memfd(4 * P)
    if step == "bind/attach ids":
        return (ret, devid, ret2, hwpt)
    if step == "ranges":
        return e.ranges(ioas)[1]
    if step == "msi window":
        return e.map(ioas, va, P, 0xFEE00000)[0]
    if step == "unmapped va":
        return e.map(ioas, 0x10000000, P, 0x100000)[0]
    if step == "prot_read page W / R":
        ro = e.mem(1, prot=PROT_READ)
        return e.map(ioas, ro, P, 0x100000)[0], e.map(ioas, ro, P, 0x100000, flags=R)[0]
    if step == "unaligned va / iova":
        return e.map(ioas, va + 8, P, 0x200000)[0], e.map(ioas, va, P, 0x200008)[0]
    if step == "regular file / tmpfs O_TMPFILE":
        reg = e.h.open("/img", O_RDWR | O_CREAT)
        e.h.ftruncate(reg, P)
        tmp = e.h.open("/dev/shm", 0o20200000 | O_RDWR)
        e.h.ftruncate(tmp, P)
        return e.map_file(ioas, reg, 0, P, 0x100000)[0], e.map_file(ioas, tmp, 0, P, 0x100000)[0]
    if step == "past eof / start past eof":
        return e.map_file(ioas, fd, 0, 5 * P, 0x100000)[0], e.map_file(ioas, fd, 8 * P, P, 0x100000)[0]
    if step == "start 100 (iova aligned / iova%4096==100)":
        return e.map_file(ioas, fd, 100, P, 0x100000)[0], e.map_file(ioas, fd, 100, P, 0x100064)[0]
    if step == "fd -1 / flags 0 / unknown flag":
        return (e.map_file(ioas, -1, 0, P, 0x100000)[0], e.map_file(ioas, fd, 0, P, 0x100000, flags=0)[0],
                e.map_file(ioas, fd, 0, P, 0x100000, flags=R | W | 64)[0])
    if step == "__reserved / size 8 / bogus ioas":
        return (e.call("IOMMU_IOAS_MAP", flags=R | FIXED, __reserved=1, ioas_id=ioas, user_va=va,
                       length=P, iova=0x100000)[0],
                e.raw(uapi.IOMMU_IOAS_MAP, struct.pack("<I", 8) + bytes(36))[0],
                e.map(999, va, P, 0x100000)[0])
    if step == "unmap length 0":
        return e.unmap(ioas, 0x100000, 0)[0]
    if step == "rdonly W, device write lands":
        rw = e.memfd(P, data=b"original-content!")
        ro = e.h.open(f"/proc/self/fd/{rw}", O_RDONLY)
        e.h.close(rw)
        r = e.map_file(ioas, ro, 0, P, 0x100000)[0]
        dma_write(e.devs[0], 0x100000, b"DEVICE-WROTE-THIS")
        return r, e.h.pread(ro, 17, 0)[1], e.h.pwrite(ro, b"x", 0)
    if step == "sealed W, device write lands":
        s = e.memfd(P, F_SEAL_WRITE, data=b"sealed")
        r = e.map_file(ioas, s, 0, P, 0x100000)[0]
        dma_write(e.devs[0], 0x100000, b"DEVICE")
        return r, e.h.pread(s, 6, 0)[1], e.h.pwrite(s, b"x", 0)
    if step == "seal write while pinned":
        assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
        return e.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)
    if step == "future_write W":
        return e.map_file(ioas, e.memfd(P, F_SEAL_FUTURE_WRITE), 0, P, 0x100000)[0]
    if step == "dma to R-only / unmapped iova":
        src = e.mem(1, fill=b"ram")
        assert e.map(ioas, src, P, 0x100000, flags=R)[0] == 0
        return dma_write(e.devs[0], 0x100000, b"x"), dma_write(e.devs[0], 0x500000, b"x")
    if step == "dma round trip":
        src = e.mem(1, fill=b"round-trip")
        assert e.map(ioas, src, P, 0x100000)[0] == 0
        n, data = dma_read(e.devs[0], 0x100000, 10)
        return dma_write(e.devs[0], 0x100800, data), e.h.read_mem(src + 0x800, 10)[1]
    raise AssertionError(step)


RIG_4B = [
    ("bind/attach ids", (0, 2, 0, 3)),
    ("ranges", [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)]),
    ("msi window", -E.EINVAL),
    ("unmapped va", -E.EFAULT),
    ("prot_read page W / R", (-E.EFAULT, 0)),
    ("unaligned va / iova", (-E.EINVAL, -E.EINVAL)),
    ("regular file / tmpfs O_TMPFILE", (-E.EINVAL, 0)),
    ("past eof / start past eof", (-E.EINVAL, -E.EINVAL)),
    ("start 100 (iova aligned / iova%4096==100)", (-E.EINVAL, -E.EINVAL)),
    ("fd -1 / flags 0 / unknown flag", (-E.EBADF, -E.EINVAL, -E.EOPNOTSUPP)),
    ("__reserved / size 8 / bogus ioas", (-E.EOPNOTSUPP, -E.EINVAL, -E.ENOENT)),
    ("unmap length 0", -E.EINVAL),
    ("rdonly W, device write lands", (0, b"DEVICE-WROTE-THIS", -E.EBADF)),
    ("sealed W, device write lands", (0, b"DEVICE", -E.EPERM)),
    ("seal write while pinned", -E.EBUSY),
    ("future_write W", 0),
    ("dma to R-only / unmapped iova", (-E.EFAULT, -E.EFAULT)),
    ("dma round trip", (10, b"round-trip")),
]


@pytest.mark.parametrize("step,expect", RIG_4B, ids=[s for s, _ in RIG_4B])
def test_rig_4b_edu_attached(step, expect):
    """The rig's 4b probe (7.2.13, edu bound + attached first: eager pinning)."""
    assert _rig_4b(Env("7.2"), step) == expect
