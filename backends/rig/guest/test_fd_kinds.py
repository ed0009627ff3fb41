"""What the memory fd really is (set ``real-qemu``): the VA path (pin_user_pages
of a mapping) and the MAP_FILE path (IOMMU_IOAS_MAP_FILE of the fd) for each
kind of memory QEMU's backends hand to VFIO, on the guest kernel and on the
simulated kernel that mirrors it, step by step (test_differential.py's Runner);
both sides' answers go into the set's artefact (docs/real-qemu-rig.md).

Kinds: memfd (shmem), memfd MFD_HUGETLB, a regular file on tmpfs (/dev/shm),
on hugetlbfs (/dev/hugepages) and on ramfs (/dev/ramfs), each mapped shared
and private.  The simulated kernel has no ramfs: it mounts /dev/ramfs as a
page-cache file system with writeback (its ``ext4``), which answers these calls
as ramfs does: ramfs mmaps with generic_file_vm_ops, whose page_mkwrite makes
vma_needs_dirty_tracking() true, so writable_file_mapping_allowed() refuses a
long-term write pin (-EFAULT, mm/gup.c check_vma_flags()), and
memfd_pin_folios() refuses a file that is neither shmem nor hugetlbfs
(-EINVAL, mm/gup.c).  /dev/zero (QEMU's mem-path=/dev/zero) is checked on the
guest kernel alone: the simulated kernel has no /dev/zero node; its MAP_SHARED
mapping is shmem (drivers/char/mem.c mmap_zero() -> shmem_zero_setup()), the
fd itself is a character device.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from backends.host import MFD_HUGETLB, O_RDWR
from backends.rig.guest.rigutil import U64_MAX
from backends.rig.guest.test_differential import (ATTACH, IOAS, IRF, RW, A, B, C, H, P,
                                                  mirror, guest_edu, run_both, table,  # noqa: F401
                                                  type1)
from backends.rig.guest.rigutil import FEATURES
from backends.rig.real_qemu import mount_all, umount_all

D = 0x400000
N = 4                                   # pages of the 4 KiB kinds


ARTEFACT = "artefact-real-qemu-fd.json"       # boot.py merges artefact-SET*.json
RESULTS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def mounts():
    if os.environ.get("RIG_GUEST") != "1":
        pytest.skip("a rig guest test: run it with vfio-emu rig run --set real-qemu")
    mount_all()
    yield
    umount_all()
    with open(os.path.join(os.environ["RIG_OUT"], ARTEFACT), "w") as f:
        json.dump({"fd_kinds": RESULTS}, f)


def check_and_record(real, mirror, kind, backend, ops):  # noqa: F811
    """test_differential.py's check(), keeping both sides' answers for the artefact."""
    if backend not in FEATURES:
        pytest.skip(f"kernel has no {backend}")
    out_r, out_s = run_both(real, mirror, ops)
    RESULTS.append({"kind": kind, "backend": backend, "profile": mirror[0].name,
                    "ops": [list(map(str, op)) for op in ops],
                    "real": [str(x) for x in out_r], "sim": [str(x) for x in out_s]})
    assert out_r == out_s, (f"{backend}-{kind}: the simulator ({mirror[0].name}) differs from "
                            "the guest kernel\n" + table(ops, out_r, out_s))


@pytest.fixture(autouse=True)
def sim_ramfs(monkeypatch):
    """The mirror's SimHost mounts /dev/ramfs as a writeback file system (module doc)."""
    from backends.simulated import syscalls
    from backends.simulated.fs import EXT4
    monkeypatch.setitem(syscalls.DEFAULT_MOUNTS, "/dev/ramfs", EXT4)


def _backing(kind: str) -> list[tuple]:
    """Ops that make fd ``f`` and its shared (``v``) and private (``p``) mappings."""
    if kind == "memfd":
        return [("memfd", "f", N * P), ("mmap", "v", "f", N, RW, True),
                ("mmap", "p", "f", N, RW, False)]
    if kind == "memfd-hugetlb":
        return [("memfd", "f", H, 0, MFD_HUGETLB), ("fmap_huge", "v", "f", 1, RW, True),
                ("fmap_huge", "p", "f", 1, RW, False)]
    if kind == "hugetlbfs":
        return [("file", "f", "/dev/hugepages/rig-fd", H), ("fmap_huge", "v", "f", 1, RW, True),
                ("fmap_huge", "p", "f", 1, RW, False)]
    path = {"tmpfs": "/dev/shm/rig-fd", "ramfs": "/dev/ramfs/rig-fd"}[kind]
    return [("file", "f", path, N * P), ("mmap", "v", "f", N, RW, True),
            ("mmap", "p", "f", N, RW, False)]


KINDS = ("memfd", "memfd-hugetlb", "tmpfs", "hugetlbfs", "ramfs")


def _size(kind: str) -> int:
    return H if "huge" in kind else N * P


def _iova(kind: str, base: int) -> int:
    return base * 16 if "huge" in kind else base     # 2 MiB-aligned IOVAs for 2 MiB pages


def _cleanup():
    for d in ("/dev/shm", "/dev/hugepages", "/dev/ramfs"):
        p = f"{d}/rig-fd"
        if os.path.exists(p):
            os.unlink(p)


@pytest.mark.parametrize("kind", KINDS)
def test_iommufd_va_and_map_file(real, mirror, kind):  # noqa: F811
    """IOMMU_IOAS_MAP of the shared and the private mapping, IOMMU_IOAS_MAP_FILE of
    the fd read-write and read-only, with edu attached (pins at map time)."""
    n, a, b, c, d = _size(kind), _iova(kind, A), _iova(kind, B), _iova(kind, C), _iova(kind, D)
    ops = IOAS + ATTACH + _backing(kind) + [
        ("ioas_map", "i", "a", "v", 0, n, a), ("ioas_map", "i", "a", "p", 0, n, b),
        ("map_file", "i", "a", "f", 0, n, c), ("map_file", "i", "a", "f", 0, n, d, IRF),
        ("ioas_unmap", "i", "a", 0, U64_MAX)]
    try:
        check_and_record(real, mirror, kind, "iommufd", ops)
    finally:
        _cleanup()


@pytest.mark.parametrize("kind", KINDS)
def test_type1_va(real, mirror, kind):  # noqa: F811
    """VFIO_IOMMU_MAP_DMA of the shared and the private mapping (type1 pins at map time)."""
    n, a, b = _size(kind), _iova(kind, A), _iova(kind, B)
    ops = type1() + _backing(kind) + [
        ("map_dma", "c", "v", 0, a, n), ("map_dma", "c", "p", 0, b, n),
        ("unmap_dma", "c", 0, 1 << 40)]
    try:
        check_and_record(real, mirror, kind, "type1", ops)
    finally:
        _cleanup()


def test_dev_zero_on_the_guest_kernel(raw, attached, ioas, iommufd):
    """mem-path=/dev/zero share=on: the shared mapping is shmem and pins
    (mmap_zero() -> shmem_zero_setup()); the fd is the character device, which
    memfd_pin_folios() refuses (-EINVAL: not shmem_file()/is_file_hugepages()).
    share=off: a private zero-page mapping that pins by copying on write."""
    from backends.host import MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
    h = raw.host
    fd = h.open("/dev/zero", O_RDWR)
    assert fd >= 0, fd
    shared = h.mmap(0, N * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    private = h.mmap(0, N * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
    assert shared > 0 and private > 0
    assert raw.ioas_map(iommufd, ioas, shared, N * P, A)[0] == 0
    assert raw.ioas_map(iommufd, ioas, private, N * P, B)[0] == 0
    assert raw.map_file(iommufd, ioas, fd, 0, N * P, C)[0] == -errno.EINVAL
    assert raw.map_file(iommufd, ioas, fd, 0, N * P, C, IRF)[0] == -errno.EINVAL
    assert raw.ioas_unmap(iommufd, ioas, 0, U64_MAX)[0] == 0
