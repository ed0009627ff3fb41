"""drivers/iommu/iommufd/vfio_compat.c on SimHost: the VFIO type1 container API
on /dev/iommu (set-iommu, MAP_DMA / UNMAP_DMA rows, v1 splits, GET_INFO, the
group path)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import uapi
from backends.host import (MAP_SHARED, O_RDWR, PROT_READ)
from backends.simulated.dma import dma_read
from backends.simulated.vfio import region_offset

from iommufd_env import E, FIXED, P, R, RW, W, Env


# ============================================================================
# the VFIO container API on /dev/iommu (vfio_compat.c: iommufd_vfio_ioctl(),
# iommufd_vfio_map_dma(), iommufd_vfio_unmap_dma())
# ============================================================================

def _dma_map(flags=3, vaddr=0, iova=0, size=P, argsz=32):
    return uapi.build("vfio_iommu_type1_dma_map", argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size)


def _dma_unmap(iova=0, size=P, flags=0, argsz=24):
    return uapi.build("vfio_iommu_type1_dma_unmap", argsz=argsz, flags=flags, iova=iova, size=size)


def _compat(profile="7.2", set_iommu=uapi.VFIO_TYPE1v2_IOMMU):
    e = Env(profile)
    ioas = e.ioas()
    assert e.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert e.attach(ioas)[0] == 0
    if set_iommu:
        assert e.vfio(uapi.VFIO_SET_IOMMU, set_iommu)[0] == 0
    return e, ioas


def test_compat_container_calls(env):
    """iommufd_vfio_ioctl(): API 0; CHECK_EXTENSION; SET_IOMMU type check before
    ENODEV (iommufd_vfio_set_iommu()); ENOTTY."""
    assert env.vfio(uapi.VFIO_GET_API_VERSION, 0)[0] == 0
    for ext, want in [(1, 1), (3, 1), (9, 1), (10, 0), (6, 0), (8, 0), (2, 0)]:
        assert env.vfio(uapi.VFIO_CHECK_EXTENSION, ext)[0] == want, ext
    assert env.vfio(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_DMA_CC_IOMMU)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_SET_IOMMU, 2)[0] == -E.EINVAL
    assert env.vfio(uapi.VFIO_SET_IOMMU, 3)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_SET_IOMMU, 1)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_IOMMU_DIRTY_PAGES, bytes(8))[0] == -E.ENOTTY
    assert env.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map())[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap())[0] == -E.ENODEV
    ioas = env.ioas()
    assert env.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert env.vfio(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_DMA_CC_IOMMU)[0] == 1


def test_compat_map_dma():
    """iommufd_vfio_map_dma(): EINVAL argsz/flags (VADDR too); no R/W: accepted by
    the compat layer, refused by the VT-d domain's map (EINVAL, rig run iommufd-7.2
    2026-11-23); EEXIST; EOVERFLOW; EFAULT with a domain; alignment EINVAL."""
    e, ioas = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(argsz=31, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=7, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=1 << 31, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=0, vaddr=va, iova=0x100000))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == -E.EEXIST
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, size=0, iova=0x200000))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x200800))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=(1 << 64) - P,
                                                    size=2 * P))[0] == -E.EOVERFLOW
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=0x10000, iova=0x300000))[0] == -E.EFAULT
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, bytes(16))[0] == -E.EFAULT
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, 0)[0] == -E.EFAULT


def _compat_map_row(row: str):
    """One compat MAP_DMA rule of iommufd_vfio_map_dma() (VT-d domain attached, TYPE1v2)."""
    e, ioas = _compat()
    va = e.mem(8)

    def m(**kw):
        return e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(**kw))[0]
    if row == "size not aligned":
        return m(vaddr=va, iova=0x100000, size=P + 1)
    if row == "vaddr not aligned":
        return m(vaddr=va + 8, iova=0x100000)
    if row == "vaddr+size overflows":
        return m(vaddr=(1 << 64) - P, iova=0x100000, size=P)
    if row == "reserved region / outside aperture":
        return m(vaddr=va, iova=0xFEE00000), m(vaddr=va, iova=1 << 39)
    if row == "half unmapped":
        assert e.h.munmap(va + 4 * P, 4 * P) == 0
        return m(vaddr=va, iova=0x100000, size=8 * P)
    if row == "write on a read-only vma / read only":
        ro = e.mem(1, prot=PROT_READ)
        return m(vaddr=ro, iova=0x100000), m(flags=1, vaddr=ro, iova=0x100000)
    if row == "pfnmap bar":
        bar = e.h.mmap(0, P, RW, MAP_SHARED, e.cdevs[0], region_offset(0))
        return m(vaddr=bar, iova=0x100000)
    if row == "rlimit memlock":
        e.h.rlimit_memlock = 2 * P
        return m(vaddr=va, iova=0x100000, size=4 * P)
    if row == "no per-container count limit (66000 maps)":
        c = uapi.codec("vfio_iommu_type1_dma_map")
        return max(e.vfio(uapi.VFIO_IOMMU_MAP_DMA, c.pack(32, 3, va, (i + 1) * P, P))[0]
                   for i in range(66000))
    raise AssertionError(row)


COMPAT_MAP_ROWS = [("size not aligned", -E.EINVAL), ("vaddr not aligned", -E.EINVAL),
                   ("vaddr+size overflows", -E.EOVERFLOW),
                   ("reserved region / outside aperture", (-E.EINVAL, -E.EINVAL)),
                   ("half unmapped", -E.EFAULT), ("write on a read-only vma / read only", (-E.EFAULT, 0)),
                   ("pfnmap bar", -E.EFAULT), ("rlimit memlock", -E.ENOMEM),
                   ("no per-container count limit (66000 maps)", 0)]


@pytest.mark.parametrize("row,expect", COMPAT_MAP_ROWS, ids=[r for r, _ in COMPAT_MAP_ROWS])
def test_compat_map_dma_rows(row, expect):
    """iommufd_vfio_map_dma(): the same iopt_map_user_pages() as native, fixed IOVA."""
    assert _compat_map_row(row) == expect


def test_compat_unmap_rows():
    """iommufd_vfio_unmap_dma(): no alignment check in v2 (whole areas), overflow,
    several whole areas summed."""
    e, _ = _compat()
    va = e.mem(8)
    for i in range(3):
        assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000 + 2 * i * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000 - 5, size=6 * P))
    assert (ret, uapi.parse("vfio_iommu_type1_dma_unmap", out).size) == (0, 3 * P)
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=(1 << 64) - P, size=2 * P))[0] == -E.EOVERFLOW


def test_compat_set_iommu_type1_with_mappings_is_einval():
    """iopt_disable_large_pages(): domains already hold mappings -> EINVAL."""
    e, _ = _compat(set_iommu=0)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=e.mem(1), iova=0x100000))[0] == 0
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0


def test_compat_v1_cannot_split_a_dmabuf_area():
    """iopt_area_split(): dma-buf areas cannot be split (6.19+) -> EOPNOTSUPP."""
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    dfd = e.h.dmabuf_export(4 * P)
    assert e.map_file(ioas, dfd, 0, 4 * P, 0x100000)[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=P))[0] == -E.EOPNOTSUPP


def test_native_no_mapping_count_limit(env):
    """No per-IOAS count limit (type1's dma_entry_limit is 65535)."""
    ioas, va = env.ioas(), env.mem(1)
    c = uapi.codec("iommu_ioas_map")
    assert max(env.raw(uapi.IOMMU_IOAS_MAP, c.pack(40, FIXED | R | W, ioas, 0, va, P, (i + 1) * P))[0]
               for i in range(66000)) == 0


@pytest.mark.parametrize("profile,empty", [("6.13", -E.ENOENT), ("6.18", 0), ("7.2", 0)])
def test_compat_unmap_empty_range(profile, empty):
    """afb47765f923 (6.18, profile.compat_empty_unmap_ok): empty range -> 0, else
    ENOENT; size (0) is written back either way."""
    e, _ = _compat(profile)
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000, size=P))
    assert ret == empty and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 0


def test_compat_unmap_v2_bisect_enoent_size_written_back():
    e, _ = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=P))[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x101000, size=2 * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000, size=2 * P))
    assert ret == -E.ENOENT and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == P
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=0))
    assert ret == -E.EINVAL and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 0


def test_compat_unmap_v1_splits():
    """SET_IOMMU(TYPE1): HUGE_PAGES off, unmap cuts areas (iopt_cut_iova())."""
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    assert e.huge_pages(ioas) == (0, 0)
    va = e.mem(4, fill=b"0123")
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=4 * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=P))
    assert ret == 0 and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == P
    assert e.counters() == (3, 3, 0)
    assert dma_read(e.devs[0], 0x100000, 4) == (4, b"0123")
    assert dma_read(e.devs[0], 0x101000, 1)[0] == -E.EFAULT
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100800, size=P))
    assert ret == -E.EINVAL                                      # cut not page aligned


def test_compat_unmap_all_and_flags():
    e, _ = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=4 * P))[0] == 0
    ALL = uapi.VFIO_DMA_UNMAP_FLAG_ALL
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=ALL, iova=0x100000, size=0))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=1))[0] == -E.EINVAL        # GET_DIRTY_BITMAP
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=4))[0] == -E.EINVAL        # VADDR
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(argsz=8))[0] == -E.EINVAL
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=ALL, size=0))
    assert ret == 0 and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 4 * P


def test_compat_get_info():
    """iommufd_vfio_iommu_get_info(): EINVAL argsz < 16; PGSIZES|CAPS; caps
    DMA_AVAIL (U32_MAX) then IOVA_RANGE; argsz grows when caps do not fit."""
    e = Env()
    assert e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=24))[0] == -E.ENODEV
    e, _ = _compat()
    assert e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=15))[0] == -E.EINVAL
    ret, out = e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=24))
    info = uapi.parse("vfio_iommu_type1_info", out)
    assert ret == 0 and info.cap_offset == 0 and info.argsz == 24 + 16 + 48
    assert info.flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
    assert info.iova_pgsizes == 0x40201000
    full = uapi.build("vfio_iommu_type1_info", argsz=info.argsz) + bytes(info.argsz - 24)
    ret, out = e.vfio(uapi.VFIO_IOMMU_GET_INFO, full)
    info = uapi.parse("vfio_iommu_type1_info", out)
    caps = uapi.parse_cap_chain(out, info.cap_offset)
    assert [c.header.id for c in caps] == [3, 1]
    assert caps[0].avail == 0xFFFFFFFF
    assert [(r.start, r.end) for r in caps[1].iova_ranges] == [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)]


def test_compat_group_path_creates_the_ioas_and_attaches():
    """VFIO_GROUP_SET_CONTAINER(iommufd fd) -> iommufd_vfio_compat_ioas_create();
    GET_DEVICE_FD binds + attaches the device to the compat IOAS; closing it unbinds."""
    e = Env()
    g = e.h.open("/dev/vfio/1", O_RDWR)
    assert e.raw(uapi.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", e.fd), fd=g)[0] == 0
    ret, out = e.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_GET)
    assert (ret, out.ioas_id) == (0, 1)
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    dfd, _ = e.raw(uapi.VFIO_GROUP_GET_DEVICE_FD, e.devs[0].name.encode() + b"\0", fd=g)
    assert dfd >= 0
    va = e.mem(1, fill=b"compat")
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == 0
    assert dma_read(e.devs[0], 0x100000, 6) == (6, b"compat")
    assert e.counters()[0] == 1
    assert e.destroy(1) == -E.EBUSY
    assert e.h.close(dfd) == 0
    assert e.devs[0].domain is None and e.counters() == (0, 0, 0)


# ============================================================================
# properties (hypothesis)
# ============================================================================

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15), st.integers(1, 6)), max_size=30))
def test_property_compat_v1_splits_keep_pins_exact(ops):
    """VFIO TYPE1 (v1) compat: random MAP_DMA / sub-range UNMAP_DMA.  Split areas
    share their iopt_pages; a page stays pinned exactly while some area covers it,
    and every remaining byte still DMAs to the process page it was mapped from."""
    from backends.simulated.iommufd.io_pagetable import iopt_pages_of
    from backends.simulated.iommufd.pages import area_index, npinned
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    va = e.mem(32, fill=bytes(range(256)) * 512)
    iopt = e.ctx.get_ioas(ioas).iopt
    for is_map, x, n in ops:
        iova = 0x100000 + x * P
        if is_map:
            e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va + x * P, iova=iova, size=n * P))
        else:
            e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=iova, size=n * P))
        want = 0
        for pages in iopt_pages_of(iopt):
            idx = set()
            for a in iopt.area_itree:
                if a.pages is pages:
                    lo, hi = area_index(a)
                    idx.update(range(lo, hi + 1))
            assert npinned(pages) == len(idx)
            want += len(idx)
        assert e.counters()[:2] == (want, want)
        for a in iopt.area_itree:
            off = a.iova - 0x100000
            assert dma_read(e.devs[0], a.iova, 8) == (8, e.h.read_mem(va + off, 8)[1])
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL, size=0))[0] == 0
    assert e.counters() == (0, 0, 0)
