"""Differential tests: the same operation sequences on this machine's kernel
(LinuxHost) and on SimHost(host_profile()) give the same results, errno for
errno and byte for byte.  Rows are the memfd sealing and mmap rules of
mm/memfd.c (memfd_add_seals(), memfd_check_seals_mmap()), mm/shmem.c and
mm/mmap.c (mmap_region(), mapping_map_writable()), as modelled in
backends/simulated/memfd.py, shmem.py and mmap.py.

Sequences are data.  fd slots and mapping slots are symbolic: ``("memfd", f)``
creates fd slot 0, 1, ...; ``("mmap", ...)`` creates mapping slot 0, 1, ...
Every mapping slot owns a 16-page region at the same address on both hosts
(mmap hint / MAP_FIXED inside it), far from where Python allocates.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backends.errors import HostError
from backends.host import (F_ADD_SEALS, F_GET_SEALS, F_GETFL, F_SEAL_EXEC, F_SEAL_FUTURE_WRITE,
                           F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE,
                           FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MAP_ANONYMOUS, MAP_FIXED,
                           MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING,
                           MFD_EXEC, MFD_NOEXEC_SEAL, O_RDONLY, O_RDWR, O_TMPFILE, O_WRONLY,
                           PAGE_SIZE)
from backends.kernel_profiles import host_profile
from backends.simulated import SimHost
from backends.simulated.fs import EXT4, SHMEM
from backends.rig.guest.steps import rle, result

ARENA = 0x2000_0000_0000          # far below the mmap base: Python never allocates here
SPAN = 64 * PAGE_SIZE             # per mapping slot: 16 pages used, the rest a guard gap
REGION = 16
BAD_FD = 1 << 20


def _fstype(path: str) -> str:
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, fstype = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fstype
    return kind


EXT4_DIR = tempfile.mkdtemp(prefix="vfio-emu-host-", dir="/var/tmp" if os.path.isdir("/var/tmp") else "/tmp")
atexit.register(shutil.rmtree, EXT4_DIR, True)
HAVE_EXT4 = _fstype(EXT4_DIR) in ("ext4", "xfs", "btrfs")
HAVE_SHM = _fstype("/dev/shm") == "tmpfs"


def _sysctl(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except OSError:
        return default


def make_sim() -> SimHost:
    sim = SimHost(host_profile(), mounts={"/": EXT4, "/dev/shm": SHMEM},
                  hugetlb_pages=0, memfd_noexec=_sysctl("/proc/sys/vm/memfd_noexec", 0))
    sim.add_dir(EXT4_DIR)
    return sim


class Reject(Exception):
    """The real process had foreign memory in the way: not a valid example."""


class Runner:
    """Runs symbolic ops on one host; returns normalised results."""

    def __init__(self, host, real: bool):
        self.h, self.real = host, real
        self.fds: list[int | None] = []
        self.maps = 0

    def fd(self, k):
        if k is None or not self.fds:
            return BAD_FD
        fd = self.fds[k % len(self.fds)]
        return BAD_FD if fd is None else fd

    def base(self, m):
        return ARENA + (m % max(self.maps, 1)) * SPAN

    def _check_free(self, addr, n):
        if self.real and self.h.foreign(addr, n):
            raise Reject()

    def run(self, op):
        h, name, a = self.h, op[0], op[1:]
        if name == "memfd":
            return self._newfd(h.memfd_create("t", a[0]))
        if name == "tmpfile":
            d = "/dev/shm" if a[0] == "shm" else EXT4_DIR
            return self._newfd(h.open(d, O_TMPFILE | a[1], 0o600))
        if name == "reopen":
            return self._newfd(h.open(f"/proc/self/fd/{self.fd(a[0])}", a[1]))
        if name == "close":
            fd = self.fd(a[0])
            r = h.close(fd)
            if r == 0:
                self.fds[self.fds.index(fd)] = None
            return result(r)
        if name == "ftruncate":
            return result(h.ftruncate(self.fd(a[0]), a[1]))
        if name == "fallocate":
            return result(h.fallocate(self.fd(a[0]), a[1], a[2], a[3]))
        if name == "add_seals":
            return result(h.fcntl(self.fd(a[0]), F_ADD_SEALS, a[1]))
        if name == "get_seals":
            return result(h.fcntl(self.fd(a[0]), F_GET_SEALS))
        if name == "getfl":
            return result(h.fcntl(self.fd(a[0]), F_GETFL))
        if name == "pwrite":
            return result(h.pwrite(self.fd(a[0]), bytes([a[3]]) * a[2], a[1]))
        if name == "pread":
            r, data = h.pread(self.fd(a[0]), a[2], a[1])
            return result(r), rle(data)
        if name == "mmap":
            k, npages, prot, mtype, pgoff = a
            hint = ARENA + self.maps * SPAN
            self._check_free(hint, SPAN)
            flags = mtype | (MAP_ANONYMOUS if k is None else 0)
            r = h.mmap(hint, npages * PAGE_SIZE, prot, flags,
                       -1 if k is None else self.fd(k), pgoff * PAGE_SIZE)
            if r >= 0:
                self.maps += 1
                return "hint" if r == hint else "elsewhere"
            return result(r)
        if name == "mmap_fixed":
            m, poff, npages, prot, mtype, k, pgoff, noreplace = a
            if not self.maps:
                return "no-slot"
            addr = self.base(m) + poff * PAGE_SIZE
            flags = mtype | (MAP_FIXED_NOREPLACE if noreplace else MAP_FIXED) | \
                (MAP_ANONYMOUS if k is None else 0)
            r = self._guarded(h.mmap, addr, npages * PAGE_SIZE, prot, flags,
                              -1 if k is None else self.fd(k), pgoff * PAGE_SIZE)
            return "fixed" if r == addr else result(r)
        if not self.maps:
            return "no-slot"
        if name == "munmap":
            return result(self._guarded(h.munmap, self.base(a[0]) + a[1] * PAGE_SIZE, a[2] * PAGE_SIZE))
        if name == "mprotect":
            return result(self._guarded(h.mprotect, self.base(a[0]) + a[1] * PAGE_SIZE,
                                      a[2] * PAGE_SIZE, a[3]))
        if name == "read":
            addr = self.base(a[0]) + a[1]
            self._check_free(addr, a[2])
            r, data = h.read_mem(addr, a[2])
            return result(r), rle(data)
        if name == "write":
            addr = self.base(a[0]) + a[1]
            return result(self._guarded(h.write_mem, addr, bytes([a[3]]) * a[2]))
        raise ValueError(op)

    def _guarded(self, fn, *args):
        try:
            return fn(*args)
        except HostError:
            raise Reject() from None

    def _newfd(self, r):
        if r >= 0:
            self.fds.append(r)
            return "fd"
        return result(r)


def run_both(real_host, ops):
    """Run ops on both hosts; return (real results, sim results)."""
    sim = make_sim()
    rr, rs = Runner(real_host, True), Runner(sim, False)
    out_r, out_s = [], []
    with real_host, sim:
        for op in ops:
            out_r.append(rr.run(op))
            out_s.append(rs.run(op))
    return out_r, out_s


def assert_same(real_host, ops, expect=None):
    out_r, out_s = run_both(real_host, ops)
    for i, (op, a, b) in enumerate(zip(ops, out_r, out_s)):
        assert a == b, f"step {i} {op}: real {a!r} != sim {b!r}\nreal: {out_r}\nsim:  {out_s}"
    if expect is not None:
        for i, (op, got, want) in enumerate(zip(ops, out_r, expect)):
            if want is not ...:
                assert got == want, f"step {i} {op}: kernel gave {got!r}, table says {want!r}"
    return out_r


# ---------------------------------------------------------------------------
# Hand-written sequences: (id, ops, expected real results; ... = not asserted)

S, P = MAP_SHARED, MAP_PRIVATE
R, RW = 1, 3
AS = MFD_ALLOW_SEALING
W, FW, GROW, SHRINK, SEAL = F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL
Z = [(0, 4096)]                       # one zero page, run-length encoded
X = ...

SEQUENCES = [
    ("add_seals_needs_fmode_write_first", [
        ("memfd", AS), ("reopen", 0, O_RDONLY), ("add_seals", 1, 0x40), ("add_seals", 1, W)],
     ["fd", "fd", "EPERM", "EPERM"]),
    ("add_seals_unknown_bit", [("memfd", AS), ("add_seals", 0, 0x40)], ["fd", "EINVAL"]),
    ("add_seals_not_shmem_ext4", [("tmpfile", "ext4", O_RDWR), ("add_seals", 0, W), ("get_seals", 0)],
     ["fd", "EINVAL", "EINVAL"]),
    ("add_seals_eperm_on_ext4_rdonly_before_einval", [
        ("tmpfile", "ext4", O_RDWR), ("reopen", 0, O_RDONLY), ("add_seals", 1, W)],
     ["fd", "fd", "EPERM"]),
    ("no_allow_sealing_starts_with_seal_seal", [("memfd", 0), ("get_seals", 0), ("add_seals", 0, W)],
     ["fd", SEAL, "EPERM"]),
    ("tmpfs_file_starts_with_seal_seal", [("tmpfile", "shm", O_RDWR), ("get_seals", 0),
                                          ("add_seals", 0, GROW)], ["fd", SEAL, "EPERM"]),
    ("seal_seal_blocks_more", [("memfd", AS), ("add_seals", 0, SEAL), ("add_seals", 0, GROW),
                               ("get_seals", 0)], ["fd", 0, "EPERM", SEAL]),
    ("noexec_seal_memfd", [("memfd", MFD_NOEXEC_SEAL), ("get_seals", 0), ("add_seals", 0, GROW),
                           ("add_seals", 0, F_SEAL_EXEC), ("get_seals", 0)],
     ["fd", F_SEAL_EXEC, 0, 0, F_SEAL_EXEC | GROW]),
    ("seal_write_ebusy_with_shared_rw_mapping", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("mmap", 0, 2, RW, S, 0), ("add_seals", 0, W),
        ("get_seals", 0), ("munmap", 0, 0, 2), ("add_seals", 0, W), ("get_seals", 0)],
     ["fd", 0, "hint", "EBUSY", 0, 0, 0, W]),
    ("seal_write_ebusy_with_shared_ro_mapping_of_rw_fd", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("mmap", 0, 1, R, S, 0), ("add_seals", 0, W)],
     ["fd", 0, "hint", "EBUSY"]),
    ("seal_write_ok_with_shared_mapping_of_rdonly_fd", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("reopen", 0, O_RDONLY), ("mmap", 1, 1, R, S, 0),
        ("add_seals", 0, W)], ["fd", 0, "fd", "hint", 0]),
    ("seal_write_ok_with_private_rw_mapping", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("mmap", 0, 1, RW, P, 0), ("add_seals", 0, W)],
     ["fd", 0, "hint", 0]),
    ("shared_rw_mmap_of_write_sealed_eperm", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("add_seals", 0, W), ("mmap", 0, 1, RW, S, 0)],
     ["fd", 0, 0, "EPERM"]),
    ("shared_rw_mmap_of_rdonly_fd_eacces_before_seals", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("add_seals", 0, W), ("reopen", 0, O_RDONLY),
        ("mmap", 1, 1, RW, S, 0), ("mmap", 1, 1, R, S, 0)], ["fd", 0, 0, "fd", "EACCES", "hint"]),
    ("ro_shared_mmap_of_write_sealed_allowed_6_7_then_mprotect_eacces", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("pwrite", 0, 0, 10, 7), ("add_seals", 0, W),
        ("mmap", 0, 1, R, S, 0), ("read", 0, 0, 10), ("mprotect", 0, 0, 1, RW), ("write", 0, 0, 1, 1)],
     ["fd", 0, 10, 0, "hint", (10, [(7, 10)]), "EACCES", "EFAULT"]),
    ("future_write_keeps_existing_rw_mapping", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("mmap", 0, 2, RW, S, 0), ("add_seals", 0, FW),
        ("write", 0, 0, 3, 9), ("pread", 0, 0, 4), ("pwrite", 0, 0, 1, 1), ("mmap", 0, 1, RW, S, 0),
        ("mmap", 0, 1, R, S, 0), ("mprotect", 1, 0, 1, RW), ("mmap", 0, 1, RW, P, 0),
        ("write", 2, 0, 2, 5), ("read", 2, 0, 4), ("pread", 0, 0, 4)],
     ["fd", 0, "hint", 0, 3, (4, [(9, 3), (0, 1)]), "EPERM", "EPERM", "hint", "EACCES", "hint",
      2, (4, [(5, 2), (9, 1), (0, 1)]), (4, [(9, 3), (0, 1)])]),
    ("future_write_then_seal_write_ebusy_while_mapped", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("mmap", 0, 1, RW, S, 0), ("add_seals", 0, FW),
        ("add_seals", 0, W), ("munmap", 0, 0, 1), ("add_seals", 0, W)],
     ["fd", 0, "hint", 0, "EBUSY", 0, 0]),
    ("seal_exec_implies_write_seals", [("memfd", AS | MFD_EXEC), ("add_seals", 0, F_SEAL_EXEC),
                                       ("get_seals", 0), ("pwrite", 0, 0, 1, 1), ("ftruncate", 0, 4096)],
     ["fd", 0, F_SEAL_EXEC | SHRINK | GROW | W | FW, "EPERM", "EPERM"]),
    ("seal_exec_with_shared_rw_mapping", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("mmap", 0, 1, RW, S, 0),
        ("add_seals", 0, F_SEAL_EXEC), ("get_seals", 0)], ["fd", 0, "hint", X, X]),
    ("write_seals_block_pwrite", [("memfd", AS), ("pwrite", 0, 0, 5, 1), ("add_seals", 0, W),
                                  ("pwrite", 0, 0, 1, 2), ("pwrite", 0, 0, 0, 2), ("pread", 0, 0, 9)],
     ["fd", 5, 0, "EPERM", 0, (5, [(1, 5)])]),
    ("future_write_blocks_pwrite", [("memfd", AS), ("add_seals", 0, FW), ("pwrite", 0, 0, 1, 2)],
     ["fd", 0, "EPERM"]),
    ("seal_grow_pwrite_partial", [
        ("memfd", AS), ("ftruncate", 0, 4096 + 100), ("add_seals", 0, GROW), ("pwrite", 0, 4096, 100, 3),
        ("pwrite", 0, 4096, 200, 3), ("pwrite", 0, 0, 8192, 4), ("pread", 0, 0, 9000)],
     ["fd", 0, 0, 100, "EPERM", 4096, (4196, [(4, 4096), (3, 100)])]),
    ("seal_shrink_grow_ftruncate", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("add_seals", 0, SHRINK), ("ftruncate", 0, 4096),
        ("ftruncate", 0, 8192), ("ftruncate", 0, 16384), ("add_seals", 0, GROW), ("ftruncate", 0, 20480),
        ("ftruncate", 0, 16384)], ["fd", 0, 0, "EPERM", 0, 0, 0, "EPERM", 0]),
    ("seal_write_does_not_block_ftruncate", [("memfd", AS), ("ftruncate", 0, 8192), ("add_seals", 0, W),
                                             ("ftruncate", 0, 4096), ("ftruncate", 0, 12288)],
     ["fd", 0, 0, 0, 0]),
    ("fallocate_under_seals", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("add_seals", 0, W),
        ("fallocate", 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), ("fallocate", 0, 0, 0, 4096),
        ("add_seals", 0, GROW), ("fallocate", 0, 0, 4096, 8192),
        ("fallocate", 0, FALLOC_FL_KEEP_SIZE, 4096, 8192)],
     ["fd", 0, 0, "EPERM", 0, 0, "EPERM", "EPERM"]),
    ("fallocate_modes_and_fmode", [
        ("memfd", AS), ("reopen", 0, O_RDONLY), ("fallocate", 1, 0, 0, 4096), ("fallocate", 1, 0, 0, 0),
        ("fallocate", 0, FALLOC_FL_PUNCH_HOLE, 0, 4096), ("fallocate", 0, 0x10, 0, 4096),
        ("fallocate", 0, FALLOC_FL_KEEP_SIZE, 0, 8192), ("pread", 0, 0, 10), ("fallocate", 0, 0, 0, 8192),
        ("pread", 0, 0, 10)],
     ["fd", "fd", "EBADF", "EINVAL", "EOPNOTSUPP", "EOPNOTSUPP", 0, (0, []), 0, (10, [(0, 10)])]),
    ("fmode_checks", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("reopen", 0, O_RDONLY), ("reopen", 0, O_WRONLY),
        ("ftruncate", 1, 0), ("pwrite", 1, 0, 1, 1), ("pread", 2, 0, 1), ("mmap", 2, 1, R, P, 0),
        ("mmap", 2, 1, R, S, 0), ("getfl", 0), ("getfl", 1), ("getfl", 2)],
     ["fd", 0, "fd", "fd", "EINVAL", "EBADF", ("EBADF", []), "EACCES", "EACCES", 0o100002, 0o100000, 0o100001]),
    ("reopen_is_same_inode", [
        ("memfd", AS), ("reopen", 0, O_RDWR), ("pwrite", 1, 10, 3, 8), ("pread", 0, 8, 6),
        ("close", 0), ("pread", 1, 8, 6), ("pread", 0, 0, 1)],
     ["fd", "fd", 3, (5, [(0, 2), (8, 3)]), 0, (5, [(0, 2), (8, 3)]), ("EBADF", [])]),
    ("reopen_of_sealed_memfd_rdwr_still_eperm", [
        ("memfd", AS), ("add_seals", 0, W), ("reopen", 0, O_RDWR), ("pwrite", 1, 0, 1, 1),
        ("get_seals", 1)], ["fd", 0, "fd", "EPERM", W]),
    ("cow_divergence_private_mapping", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("pwrite", 0, 0, 8192, 1), ("mmap", 0, 2, RW, P, 0),
        ("write", 0, 0, 4, 2), ("pread", 0, 0, 6), ("read", 0, 0, 6), ("pwrite", 0, 0, 8192, 3),
        ("read", 0, 0, 6), ("read", 0, 4096, 3)],
     ["fd", 0, 8192, "hint", 4, (6, [(1, 6)]), (6, [(2, 4), (1, 2)]), 8192,
      (6, [(2, 4), (1, 2)]), (3, [(3, 3)])]),
    ("cow_divergence_ext4", [
        ("tmpfile", "ext4", O_RDWR), ("pwrite", 0, 0, 8192, 1), ("mmap", 0, 2, RW, P, 0),
        ("write", 0, 4096, 2, 9), ("pwrite", 0, 4096, 4096, 4), ("read", 0, 4096, 3), ("read", 0, 0, 2),
        ("pread", 0, 4096, 3)],
     ["fd", 8192, "hint", 2, 4096, (3, [(9, 2), (1, 1)]), (2, [(1, 2)]), (3, [(4, 3)])]),
    ("shared_mapping_coherence", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("mmap", 0, 2, RW, S, 0), ("pwrite", 0, 100, 5, 6),
        ("read", 0, 98, 9), ("write", 0, 4096, 2, 7), ("pread", 0, 4095, 4)],
     ["fd", 0, "hint", 5, (9, [(0, 2), (6, 5), (0, 2)]), 2, (4, [(0, 1), (7, 2), (0, 1)])]),
    ("shared_ext4_coherence", [
        ("tmpfile", "ext4", O_RDWR), ("ftruncate", 0, 4096), ("mmap", 0, 1, RW, S, 0),
        ("write", 0, 0, 3, 5), ("pread", 0, 0, 4), ("pwrite", 0, 1, 1, 6), ("read", 0, 0, 4)],
     ["fd", 0, "hint", 3, (4, [(5, 3), (0, 1)]), 1, (4, [(5, 1), (6, 1), (5, 1), (0, 1)])]),
    ("mapping_beyond_eof_efault_and_partial", [
        ("memfd", AS), ("ftruncate", 0, 4096), ("mmap", 0, 3, RW, S, 0), ("read", 0, 4096, 1),
        ("read", 0, 4000, 200), ("write", 0, 4090, 20, 1), ("ftruncate", 0, 12288), ("read", 0, 4090, 10)],
     ["fd", 0, "hint", ("EFAULT", []), (96, [(0, 96)]), 6, 0, (10, [(1, 6), (0, 4)])]),
    ("truncate_discards_private_cow_punch_keeps_it", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("mmap", 0, 2, RW, P, 0), ("write", 0, 0, 8192, 5),
        ("fallocate", 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 8192), ("read", 0, 0, 2),
        ("ftruncate", 0, 4096), ("read", 0, 4096, 2), ("ftruncate", 0, 8192), ("read", 0, 4096, 2),
        ("read", 0, 0, 2)],
     ["fd", 0, "hint", 8192, 0, (2, [(5, 2)]), 0, ("EFAULT", []), 0, (2, [(0, 2)]), (2, [(5, 2)])]),
    ("punch_hole_zeroes_shared", [
        ("memfd", AS), ("pwrite", 0, 0, 12288, 1), ("mmap", 0, 3, R, S, 0),
        ("fallocate", 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 4096), ("read", 0, 98, 4),
        ("read", 0, 4194, 4), ("pread", 0, 0, 1)],
     ["fd", 12288, "hint", 0, (4, [(1, 2), (0, 2)]), (4, [(0, 2), (1, 2)]), (1, [(1, 1)])]),
    ("prot_checks_process_vm", [
        ("memfd", AS), ("ftruncate", 0, 8192), ("mmap", 0, 2, R, P, 0), ("write", 0, 0, 1, 1),
        ("mprotect", 0, 0, 1, 0), ("read", 0, 0, 1), ("read", 0, 4090, 10), ("mprotect", 0, 0, 2, RW),
        ("write", 0, 4094, 4, 2), ("read", 0, 4094, 4)],
     ["fd", 0, "hint", "EFAULT", 0, ("EFAULT", []), ("EFAULT", []), 0, 4, (4, [(2, 4)])]),
    ("mprotect_holes_enomem", [
        ("mmap", None, 4, RW, P, 0), ("munmap", 0, 1, 1), ("mprotect", 0, 0, 4, R), ("write", 0, 0, 1, 1),
        ("mprotect", 0, 1, 1, R), ("mprotect", 0, 0, 0, R), ("mprotect", 0, 2, 2, R), ("write", 0, 8192, 1, 1),
        ("munmap", 0, 1, 1)],
     ["hint", 0, "ENOMEM", "EFAULT", "ENOMEM", 0, 0, "EFAULT", 0]),
    ("map_fixed_and_noreplace", [
        ("memfd", AS), ("pwrite", 0, 0, 8192, 4), ("mmap", None, 4, RW, P, 0), ("write", 0, 0, 16384, 1),
        ("mmap_fixed", 0, 1, 1, R, S, 0, 1, True), ("mmap_fixed", 0, 1, 1, R, S, 0, 1, False),
        ("read", 0, 4095, 3), ("munmap", 0, 2, 1), ("mmap_fixed", 0, 2, 1, RW, S, 0, 0, True),
        ("read", 0, 8192, 1)],
     ["fd", 8192, "hint", 16384, "EEXIST", "fixed", (3, [(1, 1), (4, 2)]), 0, "fixed", (1, [(4, 1)])]),
    ("mmap_argument_errors", [
        ("memfd", AS), ("mmap", 0, 0, R, S, 0), ("mmap", 0, 1, R, 0, 0), ("mmap", None, 1, R, S, 0),
        ("close", 0), ("mmap", 0, 1, R, S, 0)],
     ["fd", "EINVAL", "EINVAL", "hint", 0, "EBADF"]),
]


@pytest.mark.parametrize("name,ops,expect", SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_sequence(real, name, ops, expect):
    if any(op[0] == "tmpfile" and op[1] == "ext4" for op in ops) and not HAVE_EXT4:
        pytest.skip(f"{EXT4_DIR} is not on a writeback filesystem")
    assert len(ops) == len(expect)
    assert_same(real, ops, expect)


def test_seal_exec_with_shared_rw_mapping_matches_profile(real):
    """memfd_add_seals()'s F_SEAL_EXEC quirk: only profiles without 3b041514cb6e add the implied
    WRITE without mapping_deny_writable().  The running kernel decides."""
    ops = dict((s[0], s[1]) for s in SEQUENCES)["seal_exec_with_shared_rw_mapping"]
    out = assert_same(real, ops)
    if host_profile().seal_exec_denies_writable:
        assert out[3:] == ["EBUSY", 0]
    else:
        assert out[3:] == [0, F_SEAL_EXEC | SHRINK | GROW | W | FW]


# ---------------------------------------------------------------------------
# Random sequences

fd_k = st.integers(0, 3)
map_k = st.integers(0, 3)
prot = st.sampled_from([0, 1, 2, 3])
mtype = st.sampled_from([MAP_SHARED, MAP_PRIVATE])
sizes = st.sampled_from([0, 1, 100, 4096, 4097, 8192, 12288, 12388, 16384])
offs = st.sampled_from([0, 1, 100, 4095, 4096, 8000, 8192, 12288])
lens = st.sampled_from([0, 1, 3, 100, 4096, 5000, 8192])
seals = st.integers(0, 0x3F) | st.sampled_from([W, FW, GROW, SHRINK, F_SEAL_EXEC, 0x40])
byte = st.integers(1, 255)
npg = st.integers(1, 4)
poff = st.integers(0, 4)

OPS = st.one_of(
    st.tuples(st.just("memfd"), st.sampled_from([0, AS, AS | MFD_NOEXEC_SEAL, MFD_NOEXEC_SEAL, AS | MFD_EXEC])),
    st.tuples(st.just("tmpfile"), st.sampled_from(["shm"] + (["ext4"] if HAVE_EXT4 else [])),
              st.sampled_from([O_RDWR, O_WRONLY])),
    st.tuples(st.just("reopen"), fd_k, st.sampled_from([O_RDONLY, O_RDWR, O_WRONLY])),
    st.tuples(st.just("close"), fd_k),
    st.tuples(st.just("ftruncate"), fd_k, sizes),
    st.tuples(st.just("fallocate"), fd_k, st.sampled_from([0, 1, 2, 3, 0x10]), offs, lens),
    st.tuples(st.just("add_seals"), fd_k, seals),
    st.tuples(st.just("get_seals"), fd_k),
    st.tuples(st.just("getfl"), fd_k),
    st.tuples(st.just("pwrite"), fd_k, offs, lens, byte),
    st.tuples(st.just("pread"), fd_k, offs, lens),
    st.tuples(st.just("mmap"), st.none() | fd_k, npg, prot, mtype, st.integers(0, 2)),
    st.tuples(st.just("mmap_fixed"), map_k, poff, npg, prot, mtype, st.none() | fd_k,
              st.integers(0, 2), st.booleans()),
    st.tuples(st.just("munmap"), map_k, poff, npg),
    st.tuples(st.just("mprotect"), map_k, poff, npg, prot),
    st.tuples(st.just("read"), map_k, st.integers(0, 4 * PAGE_SIZE - 1), st.sampled_from([1, 7, 4096, 9000])),
    st.tuples(st.just("write"), map_k, st.integers(0, 4 * PAGE_SIZE - 1), st.sampled_from([1, 7, 4096, 9000]), byte),
)
PREFIX = st.tuples(st.sampled_from([AS, AS, 0]), prot, mtype).map(lambda t: [
    ("memfd", t[0]), ("ftruncate", 0, 8192), ("pwrite", 0, 0, 100, 0x11),
    ("mmap", 0, 3, t[1], t[2], 0)])
SEQS = st.tuples(PREFIX, st.lists(OPS, min_size=1, max_size=30)).map(lambda t: t[0] + t[1])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=SEQS)
def test_random_sequences(linux_hosts, ops):
    real = linux_hosts()
    try:
        out_r, out_s = run_both(real, ops)
    except Reject:
        assume(False)
    for i, (op, a, b) in enumerate(zip(ops, out_r, out_s)):
        assert a == b, f"step {i} {op}: real {a!r} != sim {b!r}"


def test_open_directory(real):
    """do_open() on a directory: O_RDONLY gives an fd (pread -> EISDIR), write
    access -> EISDIR; a missing path -> ENOENT."""
    def scenario(h):
        fd = h.open(EXT4_DIR, O_RDONLY)
        out = [fd >= 0, h.pread(fd, 1, 0), h.fcntl(fd, F_GET_SEALS), h.ftruncate(fd, 0),
               h.open(EXT4_DIR, O_RDWR), h.open(EXT4_DIR + "/missing", O_RDONLY),
               h.mmap(0, PAGE_SIZE, 1, MAP_PRIVATE, fd)]
        return out
    with make_sim() as sim:
        assert scenario(real) == scenario(sim) == [
            True, (-errno.EISDIR, b""), -errno.EINVAL, -errno.EINVAL, -errno.EISDIR, -errno.ENOENT,
            -errno.ENODEV]
