"""The simulated VFIO type1 container (backends/simulated/vfio_iommu_type1.py),
driven through SimHost with raw ioctls and uapi bytes, as QEMU drives the real
one.  Each section names the kernel code it checks: drivers/vfio/container.c
and vfio_iommu_type1.c (MAP: vfio_dma_do_map(), UNMAP: vfio_dma_do_unmap()),
the VFIO selftests in tools/testing/selftests/vfio/vfio_dma_mapping_test.c, and
what the rig's Debian 7.2.13 kernel answered to the type1 probe
(backends/rig/guest/test_probe_type1.py, the test_4c_* tests)."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import uapi
from backends.host import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, O_CREAT, O_RDWR, PAGE_SIZE,
                           PROT_READ, PROT_WRITE)
from backends.simulated import SimHost
from backends.simulated.dma import dma_read, dma_write
from backends.simulated.iommu import MOCK_IOMMU, IommuHw, SimVfioDevice
from backends.simulated.vfio import bar_store, install, region_offset
from backends.simulated.vfio_container import VfioContainer

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
R, W, VADDR = (uapi.VFIO_DMA_MAP_FLAG_READ, uapi.VFIO_DMA_MAP_FLAG_WRITE,
               uapi.VFIO_DMA_MAP_FLAG_VADDR)
ALL, DIRTY, UVADDR = (uapi.VFIO_DMA_UNMAP_FLAG_ALL, uapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
                      uapi.VFIO_DMA_UNMAP_FLAG_VADDR)
U64_MAX = (1 << 64) - 1
LAST_PAGE = U64_MAX & ~(P - 1)
VTD_LAST = (1 << 39) - 1                  # IommuHw() aperture end: QEMU intel-iommu aw-bits=39 (qemu-vtd)
MAPC = uapi.codec("vfio_iommu_type1_dma_map")
UNMAPC = uapi.codec("vfio_iommu_type1_dma_unmap")
INFOC = uapi.codec("vfio_iommu_type1_info")
OLD, NEW = "6.12", "7.2"                  # before / after 6012379ede6a + ef270ec44637 (6.18)
E = errno


def s32(fd: int) -> bytes:
    return struct.pack("<i", fd)


def map_buf(iova, size, vaddr, flags=R | W, argsz=32) -> bytes:
    return MAPC.pack(argsz, flags, vaddr, iova, size)


def unmap_buf(iova, size, flags=0, argsz=24) -> bytes:
    return UNMAPC.pack(argsz, flags, iova, size)


@dataclass
class T1:
    """One process with a type1 container: host, container fd, group fd, devices."""
    h: SimHost
    c: int
    g: int
    devs: list

    @property
    def cont(self) -> VfioContainer:
        return self.h.fds[self.c].dev

    @property
    def iommu(self):
        return self.cont.iommu

    def ioctl(self, req, arg):
        return self.h.ioctl(self.c, req, arg)

    def map(self, iova, size, vaddr, flags=R | W, argsz=32) -> int:
        ret, out = self.ioctl(uapi.VFIO_IOMMU_MAP_DMA, map_buf(iova, size, vaddr, flags, argsz))
        assert out == map_buf(iova, size, vaddr, flags, argsz)     # MAP copies nothing back
        return ret

    def unmap(self, iova, size, flags=0) -> tuple[int, int]:
        buf = unmap_buf(iova, size, flags)
        ret, out = self.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, buf)
        if ret:
            assert out == buf                                       # nothing copied back on error
        return ret, UNMAPC.unpack(out)[3]

    def info(self, argsz=uapi.sizeof("vfio_iommu_type1_info"), buflen=None):
        buf = uapi.build("vfio_iommu_type1_info", argsz=argsz).ljust(buflen or argsz, b"\0")
        return self.ioctl(uapi.VFIO_IOMMU_GET_INFO, buf)

    def anon(self, size, prot=RW) -> int:
        a = self.h.mmap(0, size, prot, MAP_PRIVATE | MAP_ANONYMOUS)
        assert a > 0
        return a

    def dmas(self) -> list[tuple[int, int]]:
        return [(d.iova, d.size) for d in self.iommu.all_dmas()]

    def pins(self) -> int:
        return len(self.h.mm.private.pins)


def setup(profile=NEW, devices=None, iommu_type=uapi.VFIO_TYPE1v2_IOMMU, set_iommu=True,
          **host_kw) -> T1:
    h = SimHost(profile, **host_kw)
    devs = install(h, devices)
    c = h.open("/dev/vfio/vfio", O_RDWR)
    g = h.open(f"/dev/vfio/{devs[0].group}", O_RDWR)
    assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, s32(c))[0] == 0
    if set_iommu:
        assert h.ioctl(c, uapi.VFIO_SET_IOMMU, iommu_type)[0] == 0
    return T1(h, c, g, devs)


# ---- container-level calls: drivers/vfio/container.c + vfio_iommu_type1_check_extension()

def test_check_extension_before_and_after_set_iommu():
    """vfio_container_ioctl_check_extension() polls type1 with iommu NULL before
    VFIO_SET_IOMMU; vfio_iommu_type1_check_extension() after (T71)."""
    t = setup(set_iommu=False)
    ext = {n: t.ioctl(uapi.VFIO_CHECK_EXTENSION, n)[0] for n in range(12)}
    assert ext == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 1, 10: 0, 11: 0}
    assert t.ioctl(uapi.VFIO_GET_API_VERSION, 0) == (0, b"")
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    ext = {n: t.ioctl(uapi.VFIO_CHECK_EXTENSION, n)[0] for n in range(12)}
    # UPDATE_VADDR 1 once an iommu is set; DMA_CC 0: QEMU's VT-d has no snoop control
    assert ext == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 1, 10: 1, 11: 0}


@pytest.mark.parametrize("profile,ext,set_ret", [(OLD, 1, -E.EINVAL), ("6.13", 0, -E.ENODEV),
                                                 (NEW, 0, -E.ENODEV)])
def test_nesting_extension_6(profile, ext, set_ret):
    """VFIO_TYPE1_NESTING_IOMMU: 1 before 6.13 (SET_IOMMU opens a nesting iommu and
    iommu_enable_nesting() fails on VT-d: EINVAL); __VFIO_RESERVED_... after: 0, ENODEV."""
    t = setup(profile, set_iommu=False)
    assert t.ioctl(uapi.VFIO_CHECK_EXTENSION, 6)[0] == ext
    assert t.ioctl(uapi.VFIO_SET_IOMMU, 6)[0] == set_ret
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0   # nothing left behind


def test_set_iommu_errors():
    """vfio_ioctl_set_iommu(): no group or already set EINVAL; a type no driver
    accepts ENODEV; an extension that is not an IOMMU type: open() EINVAL."""
    h = SimHost(NEW)
    install(h)
    c = h.open("/dev/vfio/vfio", O_RDWR)
    assert h.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == -E.EINVAL   # as on the rig (7.2.13)
    t = setup(set_iommu=False)
    for kind in (0, uapi.VFIO_SPAPR_TCE_IOMMU, uapi.VFIO_DMA_CC_IOMMU, uapi.VFIO_EEH,
                 uapi.VFIO_SPAPR_TCE_v2_IOMMU, uapi.VFIO_NOIOMMU_IOMMU, uapi.VFIO_UPDATE_VADDR, 99):
        assert t.ioctl(uapi.VFIO_SET_IOMMU, kind)[0] == -E.ENODEV, kind
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_UNMAP_ALL)[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_SET_IOMMU, b"\0" * 8)[0] == -E.ENODEV     # a pointer: no such type
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)[0] == 0
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == -E.EINVAL


def test_iommu_ioctls_before_set_iommu_and_unknown_ioctls():
    """vfio_fops_unl_ioctl(): with no driver every other ioctl is -EINVAL; the
    type1 driver answers -ENOTTY to what it does not know."""
    t = setup(set_iommu=False)
    a = t.anon(P)
    assert t.map(0, P, a) == -E.EINVAL
    assert t.unmap(0, P)[0] == -E.EINVAL
    assert t.info()[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_IOMMU_DIRTY_PAGES, uapi.build("vfio_iommu_type1_dirty_bitmap"))[0] \
        == -E.EINVAL
    assert t.ioctl(uapi._IO(";", 99), 0)[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_GROUP_GET_STATUS, b"\0" * 8)[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    for req in (uapi._IO(";", 99), uapi.VFIO_GROUP_GET_STATUS, uapi.VFIO_DEVICE_GET_INFO,
                uapi._IOWR("x", 1, 8), 0):
        assert t.ioctl(req, b"\0" * 8) == (-E.ENOTTY, b"\0" * 8)
    assert t.ioctl(uapi.VFIO_GET_API_VERSION, 0)[0] == 0


def test_get_info_argsz_below_minsz():
    """vfio_iommu_type1_get_info(): minsz = offsetofend(iova_pgsizes) = 16."""
    t = setup()
    for argsz in (0, 1, 15):
        buf = struct.pack("<I", argsz).ljust(24, b"\xaa")
        assert t.ioctl(uapi.VFIO_IOMMU_GET_INFO, buf) == (-E.EINVAL, buf)
    assert t.info(16)[0] == 0


# ---- MAP: vfio_iommu_type1_map_dma() -> vfio_dma_do_map() ----------------------------

@pytest.mark.parametrize("profile", [OLD, "6.18", NEW])
def test_map_rows(profile):
    """The type1 MAP errno table (vfio_iommu_type1_map_dma() and vfio_dma_do_map()
    in drivers/vfio/vfio_iommu_type1.c), one rule per assertion."""
    t = setup(profile)
    ovf = -E.EOVERFLOW if profile != OLD else -E.EINVAL
    a = t.anon(64 * P)
    iova = 0x100000
    assert t.map(iova, P, a, argsz=31) == -E.EINVAL                   # argsz < minsz
    assert t.map(iova, P, a, argsz=0) == -E.EINVAL
    assert t.map(iova, P, a, flags=R | W | (1 << 3)) == -E.EINVAL      # unknown flag
    assert t.map(iova, P, a, flags=R | (1 << 31)) == -E.EINVAL
    assert t.map(iova, P, a, flags=0) == -E.EINVAL                    # no READ, no WRITE
    assert t.map(iova, P, a, flags=VADDR | R) == -E.EINVAL            # VADDR with R/W
    assert t.map(iova, 0, a) == -E.EINVAL                             # size 0
    assert t.map(iova + 0x800, P, a) == -E.EINVAL                     # iova misaligned
    assert t.map(iova, P + 0x800, a) == -E.EINVAL                     # size misaligned
    assert t.map(iova, P, a + 8) == -E.EINVAL                         # vaddr misaligned
    assert t.map(LAST_PAGE, 2 * P, a) == ovf                          # iova + size - 1 wraps
    assert t.map(iova, 2 * P, LAST_PAGE) == ovf                       # vaddr + size - 1 wraps
    assert t.map(iova, U64_MAX & ~(P - 1), a) == ovf
    # >= 6.18 the wrap is checked before prot and alignment (6012379ede6a)
    assert t.map(LAST_PAGE, 2 * P, a, flags=0) == ovf
    assert t.map(LAST_PAGE + 0x800, 2 * P, a) == ovf
    assert t.map(0xFEE00000, P, a) == -E.EINVAL                       # MSI window (reserved)
    assert t.map(0xFEDFF000, 2 * P, a) == -E.EINVAL                   # straddles it
    assert t.map(1 << 39, P, a) == -E.EINVAL                          # outside the aperture
    assert t.map(VTD_LAST - P + 1, 2 * P, a) == -E.EINVAL
    assert t.map(iova, 4 * P, a) == 0
    assert t.map(iova, 4 * P, a) == -E.EEXIST                         # identical
    assert t.map(iova + 2 * P, 4 * P, a) == -E.EEXIST                 # overlapping
    assert t.map(iova - P, 2 * P, a) == -E.EEXIST
    assert t.map(iova - 8 * P, 16 * P, a) == -E.EEXIST                # covering
    assert t.map(iova + P, P, a, flags=VADDR) == -E.EINVAL            # VADDR: not invalidated
    assert t.map(0x200000, P, a, flags=VADDR) == -E.ENOENT            # VADDR: no dma there
    assert t.map(iova - P, P, a) == 0                                 # adjacent is fine
    assert t.map(iova + 4 * P, P, a, flags=R) == 0
    assert t.dmas() == [(iova - P, P), (iova, 4 * P), (iova + 4 * P, P)]
    assert t.h.locked_vm == 6


@pytest.mark.parametrize("profile", [OLD, NEW])
def test_map_dma_entry_limit(profile):
    """vfio_dma_do_map(): ENOSPC when dma_avail is 0 (module param dma_entry_limit,
    U16_MAX), after EEXIST and before the iova-range EINVAL."""
    h_limit = 3
    t = setup(profile, set_iommu=False)
    t.h.type1_dma_entry_limit = h_limit                # read at VFIO_SET_IOMMU (type1_open())
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    a = t.anon(P)
    for i in range(h_limit):
        assert t.map(i * P, P, a) == 0
    assert t.map(0, P, a) == -E.EEXIST                  # EEXIST wins over ENOSPC
    assert t.map(10 * P, P, a) == -E.ENOSPC
    assert t.map(0xFEE00000, P, a) == -E.ENOSPC         # ENOSPC wins over the range check
    assert t.unmap(0, P) == (0, P)
    assert t.map(10 * P, P, a) == 0
    assert setup(profile).iommu.dma_avail == 65535      # profile.type1_dma_entry_limit


def test_dma_entry_limit_module_param():
    VfioContainer.dma_entry_limit = 1
    try:
        t = setup()
        a = t.anon(P)
        assert t.map(0, P, a) == 0 and t.map(P, P, a) == -E.ENOSPC
    finally:
        VfioContainer.dma_entry_limit = None


def test_map_efault_and_partial_pin_undone():
    """vaddr_get_pfns(): GUP -EFAULT (no VMA, a write to a read-only VMA); a
    mapping half unmapped fails whole (vfio_pin_map_dma() -> vfio_remove_dma())."""
    t = setup()
    a = t.anon(8 * P)
    assert t.h.munmap(a + 4 * P, 4 * P) == 0
    assert t.map(0x100000, P, a + 4 * P) == -E.EFAULT                 # vaddr not mapped
    assert t.map(0x100000, 8 * P, a) == -E.EFAULT                     # second half not mapped
    assert (t.dmas(), t.h.locked_vm, t.pins(), t.iommu.dma_avail) == ([], 0, 0, 65535)
    assert t.h.munmap(a, 4 * P) == 0
    assert t.map(0x100000, 8 * P, a) == -E.EFAULT                     # first half too
    ro = t.anon(2 * P, PROT_READ)
    assert t.map(0x200000, 2 * P, ro) == -E.EFAULT                    # WRITE on a RO VMA
    assert t.map(0x200000, 2 * P, ro, flags=W) == -E.EFAULT
    assert t.map(0x200000, 2 * P, ro, flags=R) == 0                   # READ-only map is fine
    assert t.h.locked_vm == 2


def test_map_spanning_two_vmas_pins_both():
    t = setup()
    a = t.anon(2 * P)
    b = t.h.mmap(a + 2 * P, 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x10)   # MAP_FIXED, adjacent
    assert b == a + 2 * P
    assert t.map(0x100000, 4 * P, a) == 0
    assert t.h.locked_vm == 4 and t.pins() == 2
    t.h.write_mem(a + 2 * P - 2, b"abcd")
    assert dma_read(t.devs[0], 0x100000 + 2 * P - 2, 4) == (4, b"abcd")   # across the two pins


@pytest.mark.parametrize("profile,err", [("6.1", 0), ("6.6", -E.EFAULT), ("7.2", -E.EFAULT)])
def test_map_shared_file_on_writeback_fs_write_efault(profile, err):
    """writable_file_mapping_allowed(): FOLL_LONGTERM|FOLL_WRITE on a shared
    mapping of an ext4 file -> EFAULT since 6.5 (8ac268436e6d; 6.1 pins it, as
    Debian 6.1 does on the rig); a READ-only map is allowed."""
    t = setup(profile)
    fd = t.h.open("/tmp/f", O_RDWR | O_CREAT)
    assert t.h.ftruncate(fd, 2 * P) == 0
    a = t.h.mmap(0, 2 * P, RW, MAP_SHARED, fd, 0)
    assert t.map(0x100000, 2 * P, a) == err
    if err == 0:
        assert t.unmap(0x100000, 2 * P)[0] == 0
    assert t.map(0x100000, 2 * P, a, flags=R) == 0


def test_rlimit_memlock_enomem_and_cap_ipc_lock():
    """vfio_pin_pages_remote(): mm->locked_vm + pages > RLIMIT_MEMLOCK -> ENOMEM
    unless CAP_IPC_LOCK (captured at MAP); the failed map is undone."""
    t = setup(rlimit_memlock=4 * P)
    a = t.anon(8 * P)
    assert t.map(0x100000, 3 * P, a) == 0
    assert t.map(0x200000, 2 * P, a) == -E.ENOMEM
    assert (t.h.locked_vm, len(t.dmas())) == (3, 1)
    assert t.map(0x200000, P, a) == 0
    assert t.map(0x300000, P, a) == -E.ENOMEM
    t.h.cap_ipc_lock = True
    assert t.map(0x300000, 4 * P, a) == 0
    assert t.h.locked_vm == 8
    assert t.unmap(0, 0, ALL) == (0, 8 * P)
    assert (t.h.locked_vm, t.pins()) == (0, 0)


def test_rlimit_checked_after_gup():
    """The pages are pinned, then charged: EFAULT before ENOMEM for the same run."""
    t = setup(rlimit_memlock=P)
    a = t.anon(2 * P)
    assert t.h.munmap(a + P, P) == 0
    assert t.map(0x100000, 2 * P, a) == -E.EFAULT           # 1 page fits, then EFAULT
    assert t.map(0x100000, P, a) == 0
    assert t.map(0x200000, P, a) == -E.ENOMEM


def bar_mmap(t: T1, index=0, size=None, offset=0, prot=RW) -> tuple[int, int]:
    dfd = t.h.ioctl(t.g, uapi.VFIO_GROUP_GET_DEVICE_FD, t.devs[0].name.encode() + b"\0")[0]
    assert dfd > 0
    size = size or t.devs[0].bars[index]
    a = t.h.mmap(0, size, prot, MAP_SHARED, dfd, region_offset(index) + offset)
    assert a > 0, a
    return dfd, a


def test_pfnmap_bar_map_succeeds_not_charged():
    """vaddr_get_pfns(): GUP fails on VM_PFNMAP, follow_fault_pfn() gives the BAR
    pfns, reserved: not charged to locked_vm (vfio selftest
    vfio_dma_mapping_mmio_test map_full_bar / map_partial_bar / map_bar_misaligned)."""
    t = setup()
    _, bar = bar_mmap(t)
    bar_size = t.devs[0].bars[0]
    assert t.map(0x10000000, bar_size, bar) == 0                       # map_full_bar
    assert t.map(0x20000000, bar_size // 2, bar + bar_size // 4) == 0  # map_partial_bar
    _, bar2 = bar_mmap(t, size=bar_size - P, offset=P)                 # not BAR-size aligned
    assert t.map(0x30000000 + P, bar_size - P, bar2) == 0              # map_bar_misaligned
    assert t.h.locked_vm == 0
    assert all(d.has_rsvd for d in t.iommu.all_dmas())
    a = t.anon(P)
    bar_store(t.devs[0], 0).pages[0].data[5:9] = b"bar!"               # the BAR's own memory
    assert dma_read(t.devs[0], 0x10000000 + 5, 4) == (4, b"bar!")       # peer DMA reads it
    assert t.map(0x40000000, P, a) == 0 and t.h.locked_vm == 1
    assert t.unmap(0, 0, ALL) == (0, 2 * bar_size - P + bar_size // 2 + P)
    assert t.h.locked_vm == 0


def test_pfnmap_write_to_readonly_bar_efault_and_mixed_vma():
    t = setup()
    _, ro = bar_mmap(t, prot=PROT_READ)
    assert t.map(0x10000000, P, ro) == -E.EFAULT            # follow_fault_pfn(): !writable
    assert t.map(0x10000000, P, ro, flags=R) == 0
    # anon page followed by BAR pages: two runs, only the anon page charged
    _, bar = bar_mmap(t, size=4 * P)
    a = t.h.mmap(bar - P, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x10)
    assert a == bar - P
    assert t.map(0x20000000, 5 * P, a) == 0
    assert t.h.locked_vm == 1
    assert t.unmap(0x20000000, 5 * P) == (0, 5 * P) and t.h.locked_vm == 0


def test_vaddr_update_flow_cpr():
    """VFIO_DMA_UNMAP_FLAG_VADDR then VFIO_DMA_MAP_FLAG_VADDR (QEMU CPR): the
    mapping and its pins stay; device DMA keeps working on the pinned pages."""
    t = setup()
    a = t.anon(4 * P)
    assert t.ioctl(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_UPDATE_VADDR)[0] == 1
    assert t.map(0x100000, 2 * P, a) == 0 and t.map(0x200000, P, a + 2 * P) == 0
    assert t.unmap(0, 0, ALL | UVADDR) == (0, 3 * P)
    assert t.iommu.vaddr_invalid_count == 2
    assert t.unmap(0x100000, 2 * P, UVADDR) == (-E.EINVAL, 2 * P)   # already invalid
    assert t.map(0x100000, 2 * P, a, flags=R | W) == -E.EEXIST
    assert t.map(0x100000, P, a, flags=VADDR) == -E.EINVAL            # size differs
    assert t.map(0x300000, P, a, flags=VADDR) == -E.ENOENT
    b = t.anon(4 * P)
    assert t.map(0x100000, 2 * P, b, flags=VADDR) == 0
    assert t.map(0x100000, 2 * P, b, flags=VADDR) == -E.EINVAL        # valid again
    assert t.iommu.vaddr_invalid_count == 1
    assert t.h.locked_vm == 3
    t.h.write_mem(a, b"old")
    assert dma_read(t.devs[0], 0x100000, 3) == (3, b"old")            # pins unchanged
    # a failing invalidate rolls back the marks it made in this call
    assert t.unmap(0, 0, ALL | UVADDR) == (-E.EINVAL, 0)               # 0x200000 still invalid
    assert t.iommu.vaddr_invalid_count == 1 and not t.iommu.all_dmas()[0].vaddr_invalid
    assert t.map(0x200000, P, b, flags=VADDR) == 0
    assert t.unmap(0, 0, ALL) == (0, 3 * P) and t.h.locked_vm == 0


def test_attach_while_vaddr_invalid_ebusy():
    """vfio_iommu_type1_attach_group(): -EBUSY while any vaddr is invalid (the
    attach could need to pin)."""
    devs = [SimVfioDevice(group=1), SimVfioDevice(name="0000:00:02.0", group=2, cdev=1)]
    t = setup(devices=devs)
    a = t.anon(P)
    assert t.map(0x100000, P, a) == 0
    assert t.unmap(0, 0, ALL | UVADDR) == (0, P)
    g2 = t.h.open("/dev/vfio/2", O_RDWR)
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == -E.EBUSY
    assert t.map(0x100000, P, a, flags=VADDR) == 0
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == 0
    assert devs[1].domain is devs[0].domain                        # same IommuHw: one domain


# ---- UNMAP: vfio_iommu_type1_unmap_dma() -> vfio_dma_do_unmap() ----------------------

@pytest.mark.parametrize("profile", [OLD, NEW])
def test_unmap_rows_v2(profile):
    t = setup(profile)
    ovf = -E.EOVERFLOW if profile == NEW else -E.EINVAL
    a = t.anon(16 * P)
    base = 0x100000
    assert t.map(base, 4 * P, a) == 0 and t.map(base + 4 * P, 4 * P, a) == 0
    buf = unmap_buf(base, 4 * P, argsz=23)
    assert t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, buf) == (-E.EINVAL, buf)   # argsz < 24
    assert t.unmap(base, 4 * P, 1 << 3) == (-E.EINVAL, 4 * P)           # unknown flag
    assert t.unmap(base, 0) == (-E.EINVAL, 0)                            # size 0
    assert t.unmap(base + 8, 4 * P) == (-E.EINVAL, 4 * P)               # iova misaligned
    assert t.unmap(base, 4 * P + 8) == (-E.EINVAL, 4 * P + 8)           # size misaligned
    assert t.unmap(LAST_PAGE, 2 * P) == (ovf, 2 * P)                     # overflow
    assert t.unmap(base + P, P) == (-E.EINVAL, P)                        # bisects (start), rig
    assert t.unmap(base, 2 * P) == (-E.EINVAL, 2 * P)                    # bisects (end)
    assert t.unmap(base + 2 * P, 4 * P) == (-E.EINVAL, 4 * P)
    assert t.unmap(0x800000, P) == (0, 0)                                # covers nothing, rig
    assert t.unmap(base, 0, ALL) == (-E.EINVAL, 0)                       # ALL with iova/size
    assert t.unmap(0, P, ALL) == (-E.EINVAL, P)
    assert t.unmap(0, 0, ALL | DIRTY) == (-E.EINVAL, 0)
    assert t.unmap(base, 4 * P, UVADDR | DIRTY) == (-E.EINVAL, 4 * P)
    assert t.unmap(base - 4 * P, 16 * P) == (0, 8 * P)                   # several whole maps
    assert t.h.locked_vm == 0
    assert t.unmap(0, 0, ALL) == (0, 0)


@pytest.mark.parametrize("profile", [OLD, NEW])
def test_unmap_v1_semantics(profile):
    """type1 v1 (VFIO_TYPE1_IOMMU): no bisection error; the walk stops at a dma
    starting before iova (0 unmapped); a dma starting inside is removed whole."""
    t = setup(profile, iommu_type=uapi.VFIO_TYPE1_IOMMU)
    a = t.anon(8 * P)
    assert t.map(0x100000, 4 * P, a) == 0 and t.map(0x200000, 4 * P, a) == 0
    assert t.unmap(0x100000 + P, P) == (0, 0)                 # inside: nothing
    assert t.unmap(0x100000 + P, 0x200000) == (0, 0)          # starts inside the first: stops
    assert t.unmap(0x100000, P) == (0, 4 * P)                 # covers its first page: all of it
    assert t.unmap(0x1F0000, 0x11000) == (0, 4 * P)           # runs past the end: whole
    assert t.dmas() == [] and t.h.locked_vm == 0
    assert t.ioctl(uapi.VFIO_IOMMU_DIRTY_PAGES,
                   uapi.build("vfio_iommu_type1_dirty_bitmap",
                              flags=uapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START))[0] == -E.EACCES


def test_unmap_vaddr_with_emulated_group_ebusy_and_lazy_pinning():
    """An emulated (mdev) group: UPDATE_VADDR 0, VADDR unmap EBUSY; no IOMMU
    domain, so MAP pins nothing (even a bad vaddr succeeds: vfio_dma_do_map() skips
    vfio_pin_map_dma() while iommu->domain_list is empty) and the
    iova_list is empty (any IOVA); a real group attached later replays the
    mappings and the pin's EFAULT fails VFIO_GROUP_SET_CONTAINER."""
    devs = [SimVfioDevice(name="mdev0", group=7, hw=None), SimVfioDevice(group=1)]
    t = setup(devices=devs)
    assert t.iommu.emulated_groups and not t.iommu.domains
    assert t.ioctl(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_UPDATE_VADDR)[0] == 0
    a = t.anon(2 * P)
    assert t.map(1 << 50, P, a) == 0                      # no iova_list: anything goes
    assert t.map(0x100000, P, 0x10000) == 0               # unmapped vaddr: not pinned yet
    assert t.h.locked_vm == 0 and t.pins() == 0
    assert t.unmap(0, 0, ALL | UVADDR) == (-E.EBUSY, 0)
    assert t.unmap(1 << 50, P) == (0, P)
    g1 = t.h.open("/dev/vfio/1", O_RDWR)
    assert t.h.ioctl(g1, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == -E.EFAULT  # replay pin
    assert t.unmap(0x100000, P) == (0, P)
    assert t.map(0x100000, P, a) == 0
    assert t.h.ioctl(g1, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == 0
    assert t.h.locked_vm == 1 and devs[1].domain is not None
    assert dma_write(devs[1], 0x100000, b"x") == 1 and t.h.read_mem(a, 1) == (1, b"x")
    # the IOMMU group leaves: unpinned and uncharged, the dma stays for the mdev
    assert t.h.ioctl(g1, uapi.VFIO_GROUP_UNSET_CONTAINER, 0)[0] == 0
    assert (t.h.locked_vm, t.dmas(), devs[1].domain) == (0, [(0x100000, P)], None)


# ---- the rig's type1 probe on Debian 7.2.13 (backends/rig/guest/test_probe_type1.py) ----

def test_rig_4c_table():
    h = SimHost(NEW)
    devs = install(h)
    c = h.open("/dev/vfio/vfio", O_RDWR)
    assert h.ioctl(c, uapi.VFIO_GET_API_VERSION, 0)[0] == 0
    assert h.ioctl(c, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU)[0] == 1
    g = h.open("/dev/vfio/1", O_RDWR)
    ret, out = h.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, uapi.build("vfio_group_status"))
    assert ret == 0 and uapi.parse("vfio_group_status", out).flags == 0x1
    assert h.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == -E.EINVAL
    assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, s32(c))[0] == 0
    assert h.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    t = T1(h, c, g, devs)
    a = t.anon(16 * P)
    rows = [
        (t.map(0x100000, 0x4000, a), 0),                  # MAP anon 16K @0x100000
        (t.map(0x102000, 0x4000, a), -E.EEXIST),          # overlapping
        (t.map(0x100000, 0x4000, a), -E.EEXIST),          # identical duplicate
        (t.map(0x200000, 0, a), -E.EINVAL),               # size 0
        (t.map(0x200000, P, a + 100), -E.EINVAL),         # unaligned vaddr
        (t.unmap(0x800000, P), (0, 0)),                   # nonexistent: OK, size 0
        (t.unmap(0x101000, P), (-E.EINVAL, P)),           # a middle page
        (t.unmap(0x100000, 0x4000), (0, 0x4000)),         # exact
    ]
    assert [r[0] for r in rows] == [r[1] for r in rows]
    # GROUP_GET_DEVICE_FD + a device DMA round trip (RAM -> device -> RAM)
    dfd = h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, devs[0].name.encode() + b"\0")[0]
    assert dfd > 0
    assert t.map(0x100000, 2 * P, a) == 0
    h.write_mem(a, b"round trip")
    n, data = dma_read(devs[0], 0x100000, 10)
    assert dma_write(devs[0], 0x100000 + P, data) == 10
    assert h.read_mem(a + P, 10) == (10, b"round trip")


# ---- VFIO selftests (tools/testing/selftests/vfio/vfio_dma_mapping_test.c) ------------

@pytest.mark.parametrize("profile,ovf", [(OLD, -E.EINVAL), ("6.18", -E.EOVERFLOW), (NEW, -E.EOVERFLOW)])
@pytest.mark.parametrize("iommu_type", [uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU])
def test_selftest_map_limit_overflow(profile, ovf, iommu_type):
    """vfio_dma_map_limit_test.overflow: iova = ~0 & ~(P-1), size 2P."""
    t = setup(profile, iommu_type=iommu_type)
    a = t.anon(2 * P)
    assert t.map(LAST_PAGE, 2 * P, a) == ovf
    assert t.unmap(LAST_PAGE, 2 * P) == (ovf, 2 * P)


def iova_ranges(t: T1) -> list[tuple[int, int]]:
    ret, out = t.info(512)
    info = uapi.parse("vfio_iommu_type1_info", out)
    caps = uapi.parse_cap_chain(out, info.cap_offset)
    r = [c for c in caps if c.header.id == uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE][0]
    return [(x.start, x.end) for x in r.iova_ranges]


def last_range(t: T1) -> tuple[int, int]:
    return iova_ranges(t)[-1]


@pytest.mark.parametrize("profile", [OLD, NEW])
@pytest.mark.parametrize("how", ["range", "all"])
def test_selftest_map_limit_last_page_of_last_range(profile, how):
    """vfio_dma_map_limit_test.unmap_range / unmap_all: a map at the last page of
    the last IOVA range -> unmapped = P (VT-d: 39-bit aperture, all versions)."""
    t = setup(profile)
    a = t.anon(P)
    iova = last_range(t)[1] + 1 - P
    assert iova == VTD_LAST + 1 - P
    assert t.map(iova, P, a) == 0
    assert (t.unmap(iova, P) if how == "range" else t.unmap(0, 0, ALL)) == (0, P)
    assert t.h.locked_vm == 0


FULL64 = IommuHw(aperture=(0, U64_MAX), reserved=())
# another IOMMU (36-bit, 4K|2M, its own reserved hole): a second domain
OTHER_HW = IommuHw(aperture=(0x10000, (1 << 36) - 1), pgsize_bitmap=P | (1 << 21),
                   reserved=((0xFF000000, 0xFFFFFFFF),))


@pytest.mark.parametrize("how", ["range", "all"])
def test_selftest_map_limit_u64_top(how):
    """With an aperture reaching U64_MAX: >= 6.18 (ef270ec44637) the last page
    maps and unmaps; before, iova + size wraps: the dma is invisible to
    vfio_find_dma()/first_node, the unmap finds nothing (0, size 0), and
    vfio_unmap_unpin()'s ``while (iova < end)`` never runs: pins leak."""
    new = setup(NEW, devices=[SimVfioDevice(hw=FULL64)])
    a = new.anon(P)
    assert last_range(new) == (0, U64_MAX)
    assert new.map(LAST_PAGE, P, a) == 0
    assert new.map(LAST_PAGE, P, a) == -E.EEXIST
    assert (new.unmap(LAST_PAGE, P) if how == "range" else new.unmap(0, 0, ALL)) == (0, P)
    assert (new.h.locked_vm, new.pins()) == (0, 0)
    old = setup(OLD, devices=[SimVfioDevice(hw=FULL64)])
    a = old.anon(P)
    assert old.map(LAST_PAGE, P, a) == 0
    assert old.map(LAST_PAGE, P, a) == 0                     # not found: mapped twice
    assert old.h.locked_vm == 2
    assert (old.unmap(LAST_PAGE, P) if how == "range" else old.unmap(0, 0, ALL)) == (0, 0)
    assert old.map(0x100000, P, a) == 0                      # with a lower dma, ALL walks on
    assert old.unmap(0, 0, ALL) == (0, 3 * P)
    assert (old.dmas(), old.h.locked_vm, old.pins()) == ([], 2, 2)   # the top pins leaked


def test_selftest_dma_mapping_device_roundtrip_per_iommu_type():
    for kind in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU):
        t = setup(iommu_type=kind)
        a = t.anon(4 * P)
        assert t.map(0x10000, 4 * P, a) == 0
        assert dma_write(t.devs[0], 0x10000 + 3 * P + 100, b"abc") == 3
        assert t.h.read_mem(a + 3 * P + 100, 3) == (3, b"abc")


# ---- GET_INFO ----------------------------------------------------------------------------

def test_get_info_cap_chain_every_argsz():
    """vfio_iommu_type1_get_info(): flags PGSIZES|CAPS; caps MIGRATION, DMA_AVAIL,
    IOVA_RANGE in that order, each 8-byte aligned; argsz grows with cap_offset 0
    when the buffer is too small; min(argsz, 24) bytes of the struct written."""
    t = setup()
    a = t.anon(P)
    assert t.map(0x100000, P, a) == 0
    ret, out = t.info(24)
    full = INFOC.unpack_from(out)[0]
    assert full == 24 + 32 + 16 + 16 + 2 * 16
    for argsz in range(16, full + 17):
        buf = uapi.build("vfio_iommu_type1_info", argsz=argsz).ljust(max(argsz, 24), b"\xee")
        ret, out = t.ioctl(uapi.VFIO_IOMMU_GET_INFO, buf)
        assert ret == 0 and len(out) == len(buf)
        f_argsz, flags, pgsizes, cap_offset, pad = INFOC.unpack_from(out)
        assert flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
        assert pgsizes == IommuHw().pgsize_bitmap
        if argsz < full:
            assert f_argsz == full
            assert out[16:] == buf[16:] if argsz < 20 else cap_offset == 0
            assert out[24:] == buf[24:]
            continue
        assert (f_argsz, cap_offset, pad) == (argsz, 24, 0)
        caps = uapi.parse_cap_chain(out[:argsz], cap_offset)
        assert [c.header.id for c in caps] == [2, 3, 1]
        assert [c._offset for c in caps] == [24, 56, 72]
        mig, avail, rng = caps
        assert (mig.flags, mig.pgsize_bitmap, mig.max_dirty_bitmap_size) == (0, P, 1 << 28)
        assert avail.avail == 65534
        assert [(r.start, r.end) for r in rng.iova_ranges] == \
            [(0, 0xFEDFFFFF), (0xFEF00000, VTD_LAST)]                    # VT-d IOAPIC hole, as on the rig
        assert out[full:] == buf[full:]


def test_get_info_pgsizes_mock_domain_and_two_domains():
    """vfio_update_pgsize_bitmap(): sub-page sizes hidden, PAGE_SIZE forced; with
    two domains the AND; iova_list = the intersection minus reserved regions."""
    t = setup(devices=[SimVfioDevice(hw=MOCK_IOMMU)])
    ret, out = t.info(24)
    assert INFOC.unpack_from(out)[2] == (MOCK_IOMMU.pgsize_bitmap & ~(P - 1)) | P
    assert last_range(t) == (1 << 24, (1 << 31) - 1)
    a = t.anon(P)
    assert t.map(0x100000, P, a) == -E.EINVAL                     # below the mock aperture
    devs = [SimVfioDevice(group=1), SimVfioDevice(name="0000:00:02.0", group=2, cdev=1,
                                                  hw=OTHER_HW),
            SimVfioDevice(name="0000:00:03.0", group=3, cdev=2)]
    t = setup(devices=devs)
    a = t.anon(P)
    assert t.map(0x1000, P, a) == 0                                # only VT-d so far
    g2 = t.h.open("/dev/vfio/2", O_RDWR)
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == -E.EINVAL  # dma below
    assert t.unmap(0x1000, P) == (0, P)
    assert t.map(0xFFFFF000, P, a) == 0
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == -E.EINVAL  # reserved
    assert t.unmap(0xFFFFF000, P) == (0, P)
    assert t.map(1 << 32, P, a) == 0
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == 0
    g3 = t.h.open("/dev/vfio/3", O_RDWR)
    assert t.h.ioctl(g3, uapi.VFIO_GROUP_SET_CONTAINER, s32(t.c))[0] == 0
    assert len(t.iommu.domains) == 2 and devs[0].domain is devs[2].domain
    assert devs[1].domain is not devs[0].domain
    assert INFOC.unpack_from(t.info(24)[1])[2] == P | (1 << 21)      # VT-d & OTHER_HW
    assert iova_ranges(t) == [(0x10000, 0xFEDFFFFF), (0xFEF00000, 0xFEFFFFFF),
                              (1 << 32, (1 << 36) - 1)]
    assert dma_read(devs[1], 1 << 32, 1) == (1, b"\0") and dma_read(devs[2], 1 << 32, 1)[0] == 1
    assert t.h.locked_vm == 1                                       # pinned once
    # OTHER_HW's group leaves: the aperture expands again, its reserved hole goes
    assert t.h.ioctl(g2, uapi.VFIO_GROUP_UNSET_CONTAINER, 0)[0] == 0
    assert devs[1].domain is None
    assert iova_ranges(t) == [(0, 0xFEDFFFFF), (0xFEF00000, VTD_LAST)]
    assert t.h.locked_vm == 1 and t.dmas() == [(1 << 32, P)]


def test_dma_cc_extension_with_snoop_control():
    @dataclass(frozen=True)
    class SnoopingHw(IommuHw):
        enforce_cache_coherency: bool = True
    t = setup(devices=[SimVfioDevice(hw=SnoopingHw())])
    assert t.ioctl(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_DMA_CC_IOMMU)[0] == 1


# ---- device DMA (dma.py) -----------------------------------------------------------------

def test_device_dma_reads_and_writes_process_pages():
    t = setup()
    dev = t.devs[0]
    a = t.anon(4 * P)
    fd = t.h.memfd_create("guest", 0)
    assert t.h.ftruncate(fd, 4 * P) == 0
    m = t.h.mmap(0, 4 * P, RW, MAP_SHARED, fd, 0)
    assert t.map(0x100000, 4 * P, a) == 0
    assert t.map(0x200000, 4 * P, m) == 0
    assert t.map(0x300000, P, a, flags=R) == 0
    t.h.write_mem(a + P + 10, b"from cpu")
    assert dma_read(dev, 0x100000 + P + 10, 8) == (8, b"from cpu")
    assert dma_write(dev, 0x100000 + 2 * P - 2, b"span") == 4           # crosses a page
    assert t.h.read_mem(a + 2 * P - 2, 4) == (4, b"span")
    assert dma_write(dev, 0x200000 + 3 * P, b"into memfd") == 10
    assert t.h.pread(fd, 10, 3 * P) == (10, b"into memfd")
    # READ-only mapping: a device write faults, nothing written (a DMAR fault on the rig:
    # backends/rig/guest/test_edu_dma.py test_type1_write_to_read_only_iova_faults)
    assert dma_write(dev, 0x300000, b"no") == -E.EFAULT
    assert t.h.read_mem(a, 2) == (2, b"\0\0")
    assert dev.faults[-1] == (0x300000, "write", "no permission")
    assert dma_read(dev, 0x300000, 2) == (2, b"\0\0")
    assert dma_read(dev, 0x400000, 1) == (-E.EFAULT, b"")               # unmapped IOVA
    assert t.unmap(0x100000, 4 * P) == (0, 4 * P)
    assert dma_read(dev, 0x100000, 1) == (-E.EFAULT, b"")


def test_device_has_no_domain_until_set_iommu_and_after_unset():
    t = setup(set_iommu=False)
    dev = t.devs[0]
    assert dev.domain is None
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    assert dev.domain is not None and dev.domain.hw == dev.hw
    a = t.anon(P)
    assert t.map(0, P, a) == 0
    assert t.h.ioctl(t.g, uapi.VFIO_GROUP_UNSET_CONTAINER, 0)[0] == 0
    assert dev.domain is None and t.h.locked_vm == 0 and t.pins() == 0
    assert t.cont.iommu is None                                        # deprivileged
    assert t.map(0, P, a) == -E.EINVAL


def test_get_device_fd_needs_set_iommu():
    """vfio_group_use_container(): -EINVAL before VFIO_SET_IOMMU."""
    t = setup(set_iommu=False)
    name = t.devs[0].name.encode() + b"\0"
    assert t.h.ioctl(t.g, uapi.VFIO_GROUP_GET_DEVICE_FD, name)[0] == -E.EINVAL
    assert t.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    assert t.h.ioctl(t.g, uapi.VFIO_GROUP_GET_DEVICE_FD, name)[0] > 0


# ---- close / release ------------------------------------------------------------------------

def test_close_container_then_group_releases_everything():
    """vfio_fops_release() only drops a reference: the group keeps the container
    and its mappings; the group fd's last close detaches it and the driver is
    released (vfio_iommu_type1_release(): unmap, unpin, uncharge)."""
    t = setup()
    a = t.anon(4 * P)
    assert t.map(0x100000, 4 * P, a) == 0
    assert t.h.close(t.c) == 0
    assert t.h.locked_vm == 4
    assert dma_write(t.devs[0], 0x100000, b"still") == 5
    dfd = t.h.ioctl(t.g, uapi.VFIO_GROUP_GET_DEVICE_FD, t.devs[0].name.encode() + b"\0")[0]
    assert t.h.close(t.g) == 0
    assert t.h.locked_vm == 4                        # the device fd holds the group
    assert t.h.close(dfd) == 0
    assert (t.h.locked_vm, t.pins(), t.devs[0].domain) == (0, 0, None)


def test_unmap_all_then_close_leaves_nothing():
    t = setup(rlimit_memlock=64 * P)
    a = t.anon(16 * P)
    for i in range(8):
        assert t.map(0x100000 + i * 2 * P, 2 * P, a + i * 2 * P) == 0
    assert t.h.locked_vm == 16
    assert t.unmap(0, 0, ALL) == (0, 16 * P)
    assert (t.h.locked_vm, t.pins(), t.iommu.dma_avail) == (0, 0, 65535)
    assert t.map(0x100000, 2 * P, a) == 0
    t.h.close_all()
    assert (t.h.locked_vm, t.pins()) == (0, 0)


def test_pointer_argument_reads_process_memory():
    """An integer ioctl argument is a user pointer: copy_from_user() from the
    simulated process (EFAULT when not mapped), copy_to_user() back."""
    t = setup()
    a = t.anon(2 * P)
    t.h.write_mem(a, map_buf(0x100000, P, a + P))
    assert t.ioctl(uapi.VFIO_IOMMU_MAP_DMA, a) == (0, b"")
    t.h.write_mem(a, unmap_buf(0x100000, 8 * P))
    assert t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, a) == (0, b"")
    assert UNMAPC.unpack(t.h.read_mem(a, 24)[1])[3] == P
    assert t.ioctl(uapi.VFIO_IOMMU_MAP_DMA, 0)[0] == -E.EFAULT
    assert t.ioctl(uapi.VFIO_IOMMU_GET_INFO, 0x1000)[0] == -E.EFAULT


# ---- dirty tracking --------------------------------------------------------------------------

def dirty_buf(flags, iova=0, size=0, pgsize=P, bsize=0, data=0, argsz=None):
    body = struct.pack("<QQQQQ", iova, size, pgsize, bsize, data) if flags & 4 else b""
    return struct.pack("<II", argsz if argsz is not None else 8 + len(body), flags) + body


def test_dirty_pages_start_stop_get_bitmap_and_unmap_bitmap():
    t = setup()
    a = t.anon(8 * P)
    bm = t.anon(P)
    assert t.map(0x100000, 2 * P, a) == 0
    assert t.map(0x100000 + 4 * P, P, a) == 0
    d = lambda buf: t.ioctl(uapi.VFIO_IOMMU_DIRTY_PAGES, buf)[0]
    assert d(dirty_buf(0)) == -E.EINVAL                                 # no flag
    assert d(dirty_buf(1 | 2)) == -E.EINVAL                             # two flags
    assert d(dirty_buf(1 << 3)) == -E.EINVAL                            # unknown flag
    assert d(dirty_buf(1, argsz=7)) == -E.EINVAL
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 8, bm)) == -E.EINVAL     # not tracking
    # GET_DIRTY_BITMAP unmap without tracking: EINVAL
    ub = unmap_buf(0x100000, 2 * P, DIRTY, argsz=48) + struct.pack("<QQQ", P, 8, bm)
    assert t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, ub) == (-E.EINVAL, ub)
    assert d(dirty_buf(1)) == 0 and d(dirty_buf(1)) == 0
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 8, bm, argsz=47)) == -E.EINVAL   # short range
    assert d(dirty_buf(4, 0x100000, 8 * P, 2 * P, 8, bm)) == -E.EINVAL          # pgsize
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 0, bm)) == -E.EINVAL              # bitmap size 0
    assert d(dirty_buf(4, 0x100000 + P, 8 * P, P, 8, bm)) == -E.EINVAL          # bisects
    assert d(dirty_buf(4, 0x100000, 0, P, 8, bm)) == -E.EINVAL                   # size 0
    assert d(dirty_buf(4, LAST_PAGE, 2 * P, P, 8, bm)) == -E.EOVERFLOW
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 8, 1 << 47)) == -E.EINVAL          # !access_ok
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 8, bm)) == 0
    assert t.h.read_mem(bm, 8)[1] == bytes([0b10011]) + bytes(7)                 # all mapped: dirty
    assert t.h.write_mem(bm, bytes(8)) == 8
    ub = unmap_buf(0x100000, 8 * P, DIRTY, argsz=47) + struct.pack("<QQQ", P, 8, bm)[:23]
    assert t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, ub)[0] == -E.EINVAL                # argsz < 48
    ub = unmap_buf(0x100000, 8 * P, DIRTY, argsz=48) + struct.pack("<QQQ", 2 * P, 8, bm)
    assert t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, ub)[0] == -E.EINVAL                # pgsize
    ub = unmap_buf(0x100000, 8 * P, DIRTY, argsz=48) + struct.pack("<QQQ", P, 8, bm)
    ret, out = t.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, ub)
    assert ret == 0 and UNMAPC.unpack_from(out)[3] == 3 * P and out[24:] == ub[24:]
    assert t.h.read_mem(bm, 8)[1] == bytes([0b10011]) + bytes(7)
    assert d(dirty_buf(2)) == 0
    assert d(dirty_buf(4, 0x100000, 8 * P, P, 8, bm)) == -E.EINVAL
    assert d(dirty_buf(2)) == 0


def test_dirty_get_bitmap_pre_618_overflow_einval():
    t = setup(OLD)
    bm = t.anon(P)
    d = lambda buf: t.ioctl(uapi.VFIO_IOMMU_DIRTY_PAGES, buf)[0]
    assert d(dirty_buf(1)) == 0
    assert d(dirty_buf(4, LAST_PAGE, 2 * P, P, 8, bm)) == -E.EINVAL


# ---- nonsense bytes, never an exception ---------------------------------------------------

REQS = [uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA, uapi.VFIO_IOMMU_GET_INFO,
        uapi.VFIO_IOMMU_DIRTY_PAGES, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_SET_IOMMU,
        uapi.VFIO_GET_API_VERSION]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=st.sampled_from(REQS), data=st.binary(max_size=96), profile=st.sampled_from([OLD, NEW]),
       v2=st.booleans(), word=st.integers(0, 2 ** 64 - 1), as_int=st.booleans())
def test_random_bytes_give_errno_not_exceptions(req, data, profile, v2, word, as_int):
    t = setup(profile, iommu_type=uapi.VFIO_TYPE1v2_IOMMU if v2 else uapi.VFIO_TYPE1_IOMMU)
    a = t.anon(4 * P)
    assert t.map(0x100000, 4 * P, a) == 0
    arg = word if as_int else data
    ret, out = t.ioctl(req, arg)
    assert isinstance(ret, int) and isinstance(out, bytes)
    if not as_int:
        assert len(out) == len(data)
        if ret < 0:
            assert out == data
    assert ret <= 1 or req in (uapi.VFIO_GET_API_VERSION,)
    assert t.h.locked_vm == sum(d.locked_vm for d in t.iommu.all_dmas())


@settings(max_examples=200, deadline=None)
@given(fields=st.tuples(st.integers(0, 64), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 64 - 1),
                        st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1)),
       profile=st.sampled_from([OLD, NEW]))
def test_random_map_fields(fields, profile):
    t = setup(profile)
    argsz, flags, vaddr, iova, size = fields
    ret, out = t.ioctl(uapi.VFIO_IOMMU_MAP_DMA, MAPC.pack(*fields))
    assert ret in (0, -E.EINVAL, -E.EOVERFLOW, -E.EEXIST, -E.ENOENT, -E.EFAULT, -E.ENOMEM)
    if ret == -E.EOVERFLOW:
        assert profile == NEW and (iova + size > 2 ** 64 or vaddr + size > 2 ** 64)
    if argsz < 32 or flags & ~7 or not size:
        assert ret == -E.EINVAL


# ---- the property test -----------------------------------------------------------------------

PAGES = 64
op = st.one_of(
    st.tuples(st.just("map"), st.integers(0, PAGES - 1), st.integers(1, 8), st.integers(0, 15),
              st.sampled_from([R, W, R | W])),
    st.tuples(st.just("unmap"), st.integers(0, PAGES - 1), st.integers(1, 16)),
    st.tuples(st.just("unmap_all")),
    st.tuples(st.just("invalidate"), st.integers(0, PAGES - 1), st.integers(1, 16)),
    st.tuples(st.just("revalidate"), st.integers(0, PAGES - 1), st.integers(1, 8)),
    st.tuples(st.just("dma"), st.integers(0, PAGES * P - 1)),
)


def check_invariants(t: T1, mapped: int, unmapped: int) -> None:
    iommu = t.iommu
    dmas = iommu.all_dmas()
    for x, y in zip(dmas, dmas[1:]):
        assert x.last < y.iova                                   # ordered, never overlapping
    assert mapped - unmapped == sum(d.size for d in dmas)
    assert t.h.locked_vm == sum(d.locked_vm for d in dmas) == sum(d.size for d in dmas) // P
    assert t.pins() == sum(len(d.pinned()) for d in dmas)
    assert iommu.dma_avail + len(dmas) == t.h.type1_dma_entry_limit
    assert iommu.vaddr_invalid_count == sum(d.vaddr_invalid for d in dmas)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=40), profile=st.sampled_from([OLD, "6.18", NEW]),
       v2=st.booleans(), limit=st.integers(1, 12))
def test_property_random_map_unmap_sequences(ops, profile, v2, limit):
    h = SimHost(profile)
    h.type1_dma_entry_limit = limit
    devs = install(h)
    c, g = h.open("/dev/vfio/vfio", O_RDWR), h.open("/dev/vfio/1", O_RDWR)
    assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, s32(c))[0] == 0
    kind = uapi.VFIO_TYPE1v2_IOMMU if v2 else uapi.VFIO_TYPE1_IOMMU
    assert h.ioctl(c, uapi.VFIO_SET_IOMMU, kind)[0] == 0
    t = T1(h, c, g, devs)
    a = t.anon(16 * P)
    mapped = unmapped = 0
    for o in ops:
        if o[0] == "map":
            _, pg, n, off, flags = o
            before = t.dmas()
            ret = t.map(pg * P, n * P, a + off * P, flags)
            overlap = any(i < (pg + n) * P and pg * P < i + s for i, s in before)
            if off + n > 16:
                assert ret == (-E.EEXIST if overlap else -E.ENOSPC if len(before) == limit
                               else -E.EFAULT)
            elif ret == 0:
                assert not overlap
                mapped += n * P
            else:
                assert ret == (-E.EEXIST if overlap else -E.ENOSPC)
        elif o[0] == "unmap":
            ret, size = t.unmap(o[1] * P, o[2] * P)
            if ret == 0:
                unmapped += size
            else:
                assert ret == -E.EINVAL and v2
        elif o[0] == "unmap_all":
            ret, size = t.unmap(0, 0, ALL)
            assert ret == 0
            unmapped += size
        elif o[0] == "invalidate":
            t.unmap(o[1] * P, o[2] * P, UVADDR)
        elif o[0] == "revalidate":
            ret = t.map(o[1] * P, o[2] * P, a, VADDR)
            assert ret in (0, -E.ENOENT, -E.EINVAL)
        else:
            hit = t.devs[0].domain.iova_to_page(o[1])
            dma = t.iommu.dma_list.find(o[1])
            assert (hit is None) == (dma is None)
            if hit:
                assert hit[2] == dma.prot and hit[0].page(hit[1]) is not None
        check_invariants(t, mapped, unmapped)
    ret, size = t.unmap(0, 0, ALL)
    unmapped += size
    assert ret == 0 and mapped == unmapped
    assert (h.locked_vm, t.pins(), t.dmas()) == (0, 0, [])
    assert t.map(0, P, a) == 0
    h.close_all()
    assert (h.locked_vm, t.pins()) == (0, 0)


@pytest.mark.parametrize("profile, shared_rw", [("6.1", 0), ("6.6", -errno.EFAULT),
                                                 ("6.12", -errno.EFAULT), ("7.2", -errno.EFAULT)])
def test_longterm_write_pin_of_a_shared_ext4_mapping(profile, shared_rw):
    """mm/gup.c check_vma_flags() -> writable_file_mapping_allowed() (8ac268436e6d,
    6.5): VFIO_IOMMU_MAP_DMA READ|WRITE of a MAP_SHARED writable mapping of a file
    on a writeback file system (ext4) is -EFAULT; 6.1 pins it.  A private mapping,
    and a read-only map of a read-only shared mapping, pin on every version (the
    rig's disk-fs set saw the same on Debian 6.1.176, 6.12.95 and 7.2.13)."""
    t = setup(profile)
    h = t.h
    assert h.profile.longterm_pin_refuses_writable_file is (shared_rw != 0)
    fd = h.open("/tmp/guest-ram", O_RDWR | O_CREAT)           # "/" is ext4
    assert fd >= 0 and h.ftruncate(fd, 4 * P) == 0
    shared, private, ro = (h.mmap(0, 4 * P, prot, flags, fd, 0) for prot, flags in
                           ((RW, MAP_SHARED), (RW, MAP_PRIVATE), (PROT_READ, MAP_SHARED)))
    assert min(shared, private, ro) > 0
    assert t.map(0x100000, 4 * P, shared) == shared_rw
    assert t.map(0x200000, 4 * P, private) == 0
    assert t.map(0x300000, 4 * P, ro, flags=R) == 0
    # 4 pages charged per map that pinned; the private map pins the process's own
    # (COW) pages, the shared ones the file's page cache
    cache_pins = len(h.fds[fd].inode.mapping.pins)
    assert (h.locked_vm, t.pins(), cache_pins) == ((8, 1, 1) if shared_rw else (12, 1, 2))
