"""The type1 probes as tests on the guest kernel: VFIO type1 on edu's
group (/dev/vfio/vfio + /dev/vfio/N)."""

from __future__ import annotations

import errno

from backends.rig.guest.rigutil import need

from backends import uapi
from backends.host import O_RDWR
from backends.rig.edu import iommu_group

PAGE = 0x1000


def test_4c_api_version_and_type1v2_extension(raw):
    need("type1", "/dev/vfio/vfio")
    c = raw.host.open("/dev/vfio/vfio", O_RDWR)
    assert raw.host.ioctl(c, uapi.VFIO_GET_API_VERSION)[0] == uapi.VFIO_API_VERSION
    assert raw.host.ioctl(c, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU)[0] == 1


def test_4c_group_viable_and_set_iommu_before_container_einval(raw, edu_bdf):
    need("type1", "/dev/vfio/vfio")
    c = raw.host.open("/dev/vfio/vfio", O_RDWR)
    g = raw.host.open(f"/dev/vfio/{iommu_group(edu_bdf)}", O_RDWR)
    ret, st = raw.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, "vfio_group_status")
    assert ret == 0 and st["flags"] & uapi.VFIO_GROUP_FLAGS_VIABLE
    assert raw.host.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == -errno.EINVAL


def test_4c_map_dma_overlap_and_duplicate_eexist(raw, type1):
    c, _ = type1
    va = raw.anon(0x8000)
    assert raw.dma_map(c, va, 0x100000, 0x4000) == 0
    assert raw.dma_map(c, va + 0x4000, 0x102000, 0x4000) == -errno.EEXIST
    assert raw.dma_map(c, va, 0x100000, 0x4000) == -errno.EEXIST


def test_4c_map_dma_size_zero_and_unaligned_vaddr_einval(raw, type1):
    c, _ = type1
    va = raw.anon(0x2000)
    assert raw.dma_map(c, va, 0x100000, 0) == -errno.EINVAL
    assert raw.dma_map(c, va + 1, 0x100000, PAGE) == -errno.EINVAL


def test_4c_unmap_nonexistent_ok_size_zero(raw, type1):
    assert raw.dma_unmap(type1[0], 0x900000, PAGE) == (0, 0)


def test_4c_unmap_middle_page_einval_then_exact(raw, type1):
    c, _ = type1
    assert raw.dma_map(c, raw.anon(0x4000), 0x100000, 0x4000) == 0
    assert raw.dma_unmap(c, 0x101000, PAGE)[0] == -errno.EINVAL      # v2: no bisecting
    assert raw.dma_unmap(c, 0x100000, 0x4000) == (0, 0x4000)
