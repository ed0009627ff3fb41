"""The iommufd probes as tests on the guest kernel: iommufd with an
empty IOAS (lazy pinning) and with edu attached through its cdev (a real VT-d
domain, eager pinning).  Skipped whole on kernels without IOMMUFD.

Expected answers are those seen on Debian 7.2.13-1; a kernel with the write-access
patch (docs/kernel-model.md) (feature ``map_file_requires_fmode_write``, drivers/iommu/iommufd/pages.c
iopt_alloc_file_pages()) refuses writable MAP_FILE without FMODE_WRITE or on
a write-sealed file with EPERM, and holds mapping_map_writable() so a later
F_SEAL_WRITE gets EBUSY.
"""

from __future__ import annotations

import errno
import os

import pytest
from backends.rig.guest.rigutil import U64_MAX, has

from backends import uapi
from backends.host import (F_ADD_SEALS, F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, O_RDONLY, O_RDWR,
                           O_TMPFILE, PROT_READ)
from backends.rig.edu import Edu

R, W, FIXED = (uapi.IOMMU_IOAS_MAP_READABLE, uapi.IOMMU_IOAS_MAP_WRITEABLE,
               uapi.IOMMU_IOAS_MAP_FIXED_IOVA)
FIX = has("map_file_requires_fmode_write")
EPERM_IF_FIX = -errno.EPERM if FIX else 0
PAGE = 0x1000
ORIGINAL = b"original-content!"

if not has("iommufd"):
    pytest.skip(f"kernel {os.environ.get('RIG_KERNEL')} has no iommufd",
                allow_module_level=True)


# ---------------------------------------------------------------- 4a: empty IOAS

def test_4a_iova_ranges_of_an_empty_ioas(raw, iommufd, ioas):
    assert raw.iova_ranges(iommufd, ioas) == ([(0, U64_MAX)], 1)


def test_4a_map_kernel_picks_iova(raw, iommufd, ioas):
    ret, iova = raw.ioas_map(iommufd, ioas, raw.anon(0x4000), 0x4000)
    assert ret == 0 and iova % PAGE == 0


def test_4a_map_fixed_then_overlapping_fixed_eexist(raw, iommufd, ioas):
    va = raw.anon(0x8000)
    assert raw.ioas_map(iommufd, ioas, va, 0x4000, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, va + 0x4000, 0x4000, iova=0x102000)[0] == -errno.EEXIST


def test_4a_map_length_zero_einval(raw, iommufd, ioas):
    assert raw.ioas_map(iommufd, ioas, raw.anon(PAGE), 0)[0] == -errno.EINVAL


def test_4a_map_unaligned_user_va_ok_while_nothing_attached(raw, iommufd, ioas):
    va = raw.anon(0x2000)
    assert raw.ioas_map(iommufd, ioas, va + 0x10, PAGE, iova=0x300010)[0] == 0


def test_4a_map_unmapped_user_va_ok_lazy(raw, iommufd, ioas):
    va = raw.anon(0x2000)
    assert raw.host.munmap(va, 0x2000) == 0
    assert raw.ioas_map(iommufd, ioas, va, 0x2000)[0] == 0


def test_4a_map_file_memfd_lazy(raw, iommufd, ioas):
    fd = raw.memfd(0x4000)
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000)[0] == 0
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000, flags=R)[0] == 0
    assert raw.map_file(iommufd, ioas, fd, 100, PAGE)[0] == 0          # unaligned start
    assert raw.map_file(iommufd, ioas, fd, 0, 0x8000)[0] == 0          # beyond EOF


def test_4a_map_file_rdonly_fd_writeable(raw, iommufd, ioas):
    ro = raw.reopen(raw.memfd(0x4000), O_RDONLY)
    assert raw.map_file(iommufd, ioas, ro, 0, 0x4000)[0] == EPERM_IF_FIX
    assert raw.map_file(iommufd, ioas, ro, 0, 0x4000, flags=R)[0] == 0


def test_4a_map_file_write_sealed_memfd(raw, iommufd, ioas):
    fd = raw.memfd(0x4000)
    assert raw.host.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000)[0] == EPERM_IF_FIX
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000, flags=R)[0] == 0


def test_4a_seal_write_after_writeable_map_file_nothing_pinned(raw, iommufd, ioas):
    fd = raw.memfd(0x4000)
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000)[0] == 0
    # mm/memfd.c memfd_add_seals(): mapping_deny_writable() -> -EBUSY while
    # the patched iopt_alloc_file_pages() holds mapping_map_writable()
    assert raw.host.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == (-errno.EBUSY if FIX else 0)


def test_4a_map_file_regular_9p_file_lazy(raw, iommufd, ioas):
    fd = raw.host.open(os.path.abspath(__file__), O_RDONLY)
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE, flags=R)[0] == 0


def test_4a_unmap_nonexistent_enoent(raw, iommufd, ioas):
    assert raw.ioas_unmap(iommufd, ioas, 0x900000, PAGE)[0] == -errno.ENOENT


def test_4a_unmap_part_of_a_mapping_enoent(raw, iommufd, ioas):
    assert raw.ioas_map(iommufd, ioas, raw.anon(0x4000), 0x4000, iova=0x100000)[0] == 0
    assert raw.ioas_unmap(iommufd, ioas, 0x101000, PAGE)[0] == -errno.ENOENT


def test_4a_unmap_exact_all_and_all_of_empty(raw, iommufd, ioas):
    va = raw.anon(0x8000)
    assert raw.ioas_map(iommufd, ioas, va, 0x4000, iova=0x100000)[0] == 0
    assert raw.ioas_unmap(iommufd, ioas, 0x100000, 0x4000) == (0, 0x4000)
    assert raw.ioas_map(iommufd, ioas, va, 0x4000, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, va + 0x4000, 0x4000, iova=0x200000)[0] == 0
    assert raw.ioas_unmap(iommufd, ioas, 0, U64_MAX) == (0, 0x8000)
    assert raw.ioas_unmap(iommufd, ioas, 0, U64_MAX) == (0, 0)


def test_4a_destroy_bogus_id_enoent(raw, iommufd):
    assert raw.ioctl(iommufd, uapi.IOMMU_DESTROY, "iommu_destroy", id=12345)[0] == -errno.ENOENT


# ---------------------------------------------------------------- 4b: edu attached

def test_4b_bind_and_attach(attached):
    cdev, devid, hwpt = attached
    assert devid > 0 and hwpt > 0


def test_4b_iova_ranges_after_attach_have_the_msi_hole(raw, iommufd, ioas, attached):
    ranges, align = raw.iova_ranges(iommufd, ioas)
    assert ranges[0] == (0, 0xFEDFFFFF) and ranges[1][0] == 0xFEF00000 and len(ranges) == 2
    assert ranges[1][1] + 1 in (1 << 39, 1 << 48)          # intel-iommu aw-bits
    assert align == PAGE


def test_4b_map_into_msi_window_einval(raw, iommufd, ioas, attached):
    assert raw.ioas_map(iommufd, ioas, raw.anon(PAGE), PAGE, iova=0xFEE00000)[0] == -errno.EINVAL


def test_4b_map_unmapped_user_va_efault(raw, iommufd, ioas, attached):
    va = raw.anon(0x2000)
    assert raw.host.munmap(va, 0x2000) == 0
    assert raw.ioas_map(iommufd, ioas, va, 0x2000)[0] == -errno.EFAULT


def test_4b_map_read_only_page(raw, iommufd, ioas, attached):
    va = raw.anon(PAGE, prot=PROT_READ)
    assert raw.ioas_map(iommufd, ioas, va, PAGE)[0] == -errno.EFAULT
    assert raw.ioas_map(iommufd, ioas, va, PAGE, flags=R)[0] == 0


def test_4b_map_unaligned_einval(raw, iommufd, ioas, attached):
    va = raw.anon(0x2000)
    assert raw.ioas_map(iommufd, ioas, va + 0x10, PAGE)[0] == -errno.EINVAL
    assert raw.ioas_map(iommufd, ioas, va, PAGE, iova=0x100010)[0] == -errno.EINVAL


def test_4b_map_file_regular_9p_file_einval(raw, iommufd, ioas, attached):
    fd = raw.host.open(os.path.abspath(__file__), O_RDONLY)
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE, flags=R)[0] == -errno.EINVAL


def test_4b_map_file_tmpfs_tmpfile_ok(raw, iommufd, ioas, attached):
    fd = raw.host.open("/tmp", O_TMPFILE | O_RDWR)
    assert fd >= 0 and raw.host.ftruncate(fd, 0x4000) == 0
    assert raw.map_file(iommufd, ioas, fd, 0, 0x4000)[0] == 0


def test_4b_map_file_past_eof_einval(raw, iommufd, ioas, attached):
    fd = raw.memfd(0x4000)
    assert raw.map_file(iommufd, ioas, fd, 0, 0x8000)[0] == -errno.EINVAL
    assert raw.map_file(iommufd, ioas, fd, 0x8000, PAGE)[0] == -errno.EINVAL


def test_4b_map_file_unaligned_start_einval(raw, iommufd, ioas, attached):
    fd = raw.memfd(0x4000)
    assert raw.map_file(iommufd, ioas, fd, 100, PAGE, iova=0x100000)[0] == -errno.EINVAL
    assert raw.map_file(iommufd, ioas, fd, 100, PAGE, iova=0x100000 + 100)[0] == -errno.EINVAL


def test_4b_map_file_bad_fd_and_flags(raw, iommufd, ioas, attached):
    fd = raw.memfd(0x4000)
    assert raw.map_file(iommufd, ioas, -1, 0, PAGE)[0] == -errno.EBADF
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE, flags=0)[0] == -errno.EINVAL
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE, flags=R | W | 1 << 3)[0] == -errno.EOPNOTSUPP


def test_4b_ioas_map_bad_struct(raw, iommufd, ioas, attached):
    va = raw.anon(PAGE)
    assert raw.ioas_map(iommufd, ioas, va, PAGE, __reserved=1)[0] == -errno.EOPNOTSUPP
    assert raw.ioas_map(iommufd, ioas, va, PAGE, size=8)[0] == -errno.EINVAL
    assert raw.ioas_map(iommufd, 9999, va, PAGE)[0] == -errno.ENOENT


def test_4b_unmap_length_zero_einval(raw, iommufd, ioas, attached):
    assert raw.ioas_unmap(iommufd, ioas, 0x100000, 0)[0] == -errno.EINVAL


def _device_writes(raw, iommufd, ioas, cdev, data: bytes, iova: int) -> None:
    """edu writes ``data`` at ``iova`` (loaded through a bounce page at 0x200000)."""
    edu = Edu(raw.host, cdev)
    edu.enable_bus_master()
    bounce = raw.anon(PAGE)
    assert raw.ioas_map(iommufd, ioas, bounce, PAGE, iova=0x200000)[0] == 0
    edu.write_buffer(data, iova=0x200000, vaddr=bounce)
    edu.dma_from_device(iova, len(data))


def _file_the_device_should_not_write(raw, how: str) -> tuple[int, int]:
    """(fd, errno of pwrite on it): a memfd with ORIGINAL reopened O_RDONLY (its RW
    fd closed), or sealed with F_SEAL_WRITE / F_SEAL_FUTURE_WRITE."""
    fd = raw.memfd(PAGE, ORIGINAL)
    if how == "rdonly-fd":
        ro = raw.reopen(fd, O_RDONLY)
        assert raw.host.close(fd) == 0
        return ro, -errno.EBADF
    seal = {"write-sealed": F_SEAL_WRITE, "future-write-sealed": F_SEAL_FUTURE_WRITE}[how]
    assert raw.host.fcntl(fd, F_ADD_SEALS, seal) == 0
    return fd, -errno.EPERM


# F_SEAL_FUTURE_WRITE is checked at mmap time (seal_check_write()), not by
# mapping_map_writable(): the write-access patch does not refuse it, and the device
# still writes the sealed file (7.2.13 with and without the patch).
@pytest.mark.parametrize("how,patch_refuses", [("rdonly-fd", True), ("write-sealed", True),
                                               ("future-write-sealed", False)])
def test_4b_writeable_map_file_then_device_writes_the_file(raw, iommufd, ioas, attached, how,
                                                           patch_refuses):
    fd, pwrite_errno = _file_the_device_should_not_write(raw, how)
    ret, _ = raw.map_file(iommufd, ioas, fd, 0, PAGE, iova=0x100000)
    assert ret == (-errno.EPERM if FIX and patch_refuses else 0)
    if ret:
        return
    _device_writes(raw, iommufd, ioas, attached[0], b"DEVICE-WROTE-THIS", 0x100000)
    assert raw.host.pread(fd, 17, 0) == (17, b"DEVICE-WROTE-THIS")
    assert raw.host.pwrite(fd, b"x", 0) == pwrite_errno


def test_4b_seal_write_while_pinned_ebusy(raw, iommufd, ioas, attached):
    fd = raw.memfd(PAGE)
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE)[0] == 0
    assert raw.host.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -errno.EBUSY


def test_4b_dma_round_trip(raw, iommufd, ioas, attached):
    src, dst = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(src, b"round-trip" * 10)
    assert raw.ioas_map(iommufd, ioas, src, PAGE, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, dst, PAGE, iova=0x200000)[0] == 0
    edu = Edu(raw.host, attached[0])
    edu.enable_bus_master()
    edu.dma_to_device(0x100000, 100)
    edu.dma_from_device(0x200000, 100)
    assert raw.read(dst, 100) == b"round-trip" * 10
