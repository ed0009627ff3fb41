"""The kernel's own iommufd selftest expectations (tools/testing/selftests/iommu/
iommufd.c, T71 blob d1fe5dbc2813) run
against the simulator.  Each test is named ``test_<fixture>_<test>`` after the
selftest it mirrors; fixture variants are parameters.

Translation of the selftest machinery:
  * a mock domain (IOMMU_TEST_OP_MOCK_DOMAIN) = a VFIO cdev of a SimVfioDevice
    behind ``MOCK_IOMMU`` (2048-byte pages, aperture [1<<24, (1<<31)-1]) bound and
    attached to the IOAS;
  * IOMMU_TEST_OP_ADD_RESERVED = ``iopt_reserve_iova(.., owner=None)``;
  * IOMMU_TEST_OP_MD_CHECK_MAP / check_access_rw = a device DMA read compared
    with the process memory;
  * ``buffer`` = a 2 MiB-aligned MAP_SHARED anonymous BUFFER_SIZE mapping.
Tests of selftest-only objects (accesses, dirty tracking, vIOMMU, HW queues,
fault queues) are not mirrored.
"""

from __future__ import annotations

import errno
import random
import struct

import pytest

from backends import uapi
from backends.host import (MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
                           O_RDONLY, O_RDWR, O_CREAT, PAGE_SIZE, PROT_READ, PROT_WRITE)
from backends.simulated.dma import dma_read
from backends.simulated.iommufd.io_pagetable import iopt_reserve_iova
from backends.simulated.iommu import MOCK_IOMMU, SimVfioDevice
from backends.simulated.mmap import MM
from iommufd_env import R, U64_MAX, W, Env

E = errno
P = PAGE_SIZE
BUFFER_SIZE = 16 * P
HUGEPAGE_SIZE = 2 << 20
MOCK_APERTURE_START = 1 << 24
MOCK_APERTURE_LAST = (1 << 31) - 1
MOCK_PAGE_SIZE = 2048
SIZE_MAX = U64_MAX
BUFFER_VA = 0x7E0000000000                    # 2 MiB aligned, as posix_memalign(HUGEPAGE_SIZE)
RW = PROT_READ | PROT_WRITE


class Selftest(Env):
    """The FIXTURE of a selftest: /dev/iommu, ``buffer``, mock devices."""

    def __init__(self, mock_domains: int = 0, spare_mocks: int = 4, profile: str = "7.2", **kw):
        n = mock_domains + spare_mocks
        super().__init__(profile, [SimVfioDevice(name=f"mock{i}", group=100 + i, cdev=i, hw=MOCK_IOMMU)
                                   for i in range(n)], **kw)
        self.next_mock = 0
        self.buffer = self.h.mmap(BUFFER_VA, BUFFER_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        assert self.buffer == BUFFER_VA
        self.h.write_mem(self.buffer, bytes(random.Random(1).randrange(256) for _ in range(BUFFER_SIZE)))

    def mock_domain(self, pt_id: int):
        """test_cmd_mock_domain(): a new mock device attached to pt_id ->
        (ret, stdev index, hwpt_id)."""
        idx = self.next_mock
        self.next_mock += 1
        ret, hwpt = self.attach(pt_id, idx)
        return ret, idx, hwpt

    def add_reserved(self, ioas: int, start: int, length: int) -> int:
        """IOMMU_TEST_OP_ADD_RESERVED."""
        return iopt_reserve_iova(self.ctx.get_ioas(ioas).iopt, start, start + length - 1, None)

    def check_mock_iova(self, va: int, iova: int, length: int, idx: int = 0) -> None:
        """IOMMU_TEST_OP_MD_CHECK_MAP: the domain maps iova to the pages at va."""
        got = dma_read(self.devs[idx], iova, length)
        assert got == (length, self.h.read_mem(va, length)[1])


def ioas_fixture(variant: str) -> tuple[Selftest, int, int]:
    """FIXTURE_SETUP(iommufd_ioas): (env, ioas_id, base_iova)."""
    mocks = {"no_domain": 0, "mock_domain": 1, "two_mock_domain": 2, "mock_domain_limit": 1}[variant]
    st = Selftest(mocks)
    ioas = st.ioas()
    base = 0
    for _ in range(mocks):
        assert st.mock_domain(ioas)[0] == 0
        base = MOCK_APERTURE_START
    return st, ioas, base


IOAS_VARIANTS = ["no_domain", "mock_domain", "two_mock_domain", "mock_domain_limit"]
ioas_variant = pytest.mark.parametrize("variant", IOAS_VARIANTS)


# ---- FIXTURE(iommufd) ------------------------------------------------------------

def test_iommufd_cmd_fail():
    st = Selftest()
    assert st.destroy(0) == -E.ENOENT
    assert st.raw(uapi.IOMMU_DESTROY, 0)[0] == -E.EFAULT
    assert st.raw(uapi._IO(";", 0x7F), uapi.build("iommu_destroy"))[0] == -E.ENOTTY


@pytest.mark.parametrize("name,last", [
    ("iommu_destroy", "id"), ("iommu_hwpt_alloc", "__reserved"), ("iommu_ioas_alloc", "out_ioas_id"),
    ("iommu_ioas_iova_ranges", "out_iova_alignment"), ("iommu_ioas_allow_iovas", "allowed_iovas"),
    ("iommu_ioas_map", "iova"), ("iommu_ioas_copy", "src_iova"), ("iommu_ioas_unmap", "length"),
    ("iommu_option", "val64"), ("iommu_vfio_ioas", "__reserved")])
def test_iommufd_cmd_length(name, last):
    """TEST_LENGTH(): min-1 EINVAL; sizeof+1 with 0xFF E2BIG; with 0 like sizeof."""
    st = Selftest()
    req = next(i.nr for i in uapi.IOCTLS.values() if i.arg == name and i.fd == "iommufd")
    size = uapi.sizeof(name)
    body = bytes(size - 4)
    assert st.raw(req, struct.pack("<I", uapi.offsetofend(name, last) - 1) + body + b"\xff")[0] == -E.EINVAL
    assert st.raw(req, struct.pack("<I", size + 1) + body + b"\xff")[0] == -E.E2BIG
    rc = st.raw(req, struct.pack("<I", size) + body + b"\xff")[0]
    assert st.raw(req, struct.pack("<I", size + 1) + body + b"\x00")[0] == rc


def test_iommufd_cmd_ex_fail():
    st = Selftest()
    cmd = struct.pack("<II", 16, 0)
    assert st.raw(uapi.IOMMU_DESTROY, cmd + struct.pack("<Q", 0))[0] == -E.ENOENT
    assert st.raw(uapi.IOMMU_DESTROY, cmd + struct.pack("<Q", 1))[0] == -E.E2BIG
    assert st.raw(uapi.IOMMU_DESTROY, struct.pack("<IIQ", 8, 0, 1))[0] == -E.ENOENT
    assert st.raw(uapi.IOMMU_DESTROY, struct.pack("<IIQ", 7, 0, 1))[0] == -E.EINVAL


def test_iommufd_global_options():
    st = Selftest()
    RL, HP = uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_HUGE_PAGES
    SET, GET = uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET
    assert st.option(RL, GET, 0, 1) == (0, 0)
    assert st.option(RL, SET, 0, 1)[0] == 0
    assert st.option(RL, SET, 0, 2)[0] == -E.EINVAL
    assert st.option(RL, GET) == (0, 1)
    assert st.option(RL, SET, 0, 0)[0] == 0
    assert st.option(HP, GET, 0)[0] == -E.ENOENT
    assert st.option(HP, SET, 0)[0] == -E.ENOENT


def test_iommufd_simple_ioctls():
    st = Selftest()
    assert st.vfio(uapi.VFIO_GET_API_VERSION, 0)[0] == uapi.VFIO_API_VERSION
    assert st.vfio(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU)[0] == 1


def test_iommufd_unmap_cmd():
    st = Selftest()
    cmd = dict(iova=MOCK_APERTURE_START, size=P)
    assert st.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, uapi.build("vfio_iommu_type1_dma_unmap", argsz=1, **cmd))[0] == -E.EINVAL
    assert st.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, uapi.build("vfio_iommu_type1_dma_unmap", flags=1 << 31,
                                                         **cmd))[0] == -E.EINVAL
    assert st.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, uapi.build("vfio_iommu_type1_dma_unmap", **cmd))[0] == -E.ENODEV


def test_iommufd_map_cmd():
    st = Selftest()
    cmd = dict(iova=MOCK_APERTURE_START, size=P, vaddr=st.buffer)
    assert st.vfio(uapi.VFIO_IOMMU_MAP_DMA, uapi.build("vfio_iommu_type1_dma_map", argsz=1, **cmd))[0] == -E.EINVAL
    assert st.vfio(uapi.VFIO_IOMMU_MAP_DMA, uapi.build("vfio_iommu_type1_dma_map", flags=1 << 31,
                                                       **cmd))[0] == -E.EINVAL
    assert st.vfio(uapi.VFIO_IOMMU_MAP_DMA, uapi.build("vfio_iommu_type1_dma_map", flags=3, **cmd))[0] == -E.ENODEV


def test_iommufd_info_cmd():
    st = Selftest()
    assert st.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=1))[0] == -E.EINVAL
    assert st.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info"))[0] == -E.ENODEV


def test_iommufd_set_iommu_cmd():
    st = Selftest()
    assert st.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == -E.ENODEV
    assert st.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)[0] == -E.ENODEV


def test_iommufd_vfio_ioas():
    st = Selftest()
    GET, SET, CLEAR = uapi.IOMMU_VFIO_IOAS_GET, uapi.IOMMU_VFIO_IOAS_SET, uapi.IOMMU_VFIO_IOAS_CLEAR
    assert st.call("IOMMU_VFIO_IOAS", op=GET)[0] == -E.ENODEV
    assert st.call("IOMMU_VFIO_IOAS", op=SET)[0] == -E.ENOENT
    ioas = st.ioas()
    assert st.call("IOMMU_VFIO_IOAS", op=SET, ioas_id=ioas)[0] == 0
    ret, out = st.call("IOMMU_VFIO_IOAS", op=GET)
    assert (ret, out.ioas_id) == (0, ioas)
    assert st.call("IOMMU_VFIO_IOAS", op=CLEAR)[0] == 0
    assert st.call("IOMMU_VFIO_IOAS", op=GET)[0] == -E.ENODEV


# ---- FIXTURE(iommufd_ioas) ----------------------------------------------------------

@ioas_variant
def test_iommufd_ioas_ioas_destroy(variant):
    st, ioas, _ = ioas_fixture(variant)
    assert st.destroy(ioas) == (-E.EBUSY if variant != "no_domain" else 0)


@ioas_variant
def test_iommufd_ioas_hwpt_attach(variant):
    st, ioas, _ = ioas_fixture(variant)
    hwpt = st.attach(ioas, 0)[1] if variant != "no_domain" else 0
    if variant != "no_domain":
        assert st.mock_domain(hwpt)[0] == 0
    else:
        assert st.mock_domain(hwpt)[0] == -E.ENOENT


@ioas_variant
def test_iommufd_ioas_ioas_area_destroy(variant):
    st, ioas, base = ioas_fixture(variant)
    assert st.map(ioas, st.buffer, P, base)[0] == 0
    assert st.destroy(ioas) == (-E.EBUSY if variant != "no_domain" else 0)


@ioas_variant
def test_iommufd_ioas_ioas_area_auto_destroy(variant):
    st, ioas, base = ioas_fixture(variant)
    for i in range(10):
        assert st.map(ioas, st.buffer, P, base + i * P)[0] == 0
    st.h.close_all()
    assert st.counters() == (0, 0, 0)


@ioas_variant
def test_iommufd_ioas_area(variant):
    st, ioas, base = ioas_fixture(variant)
    for i in range(10):
        assert st.unmap(ioas, i * P, P)[0] == -E.ENOENT
    for i in range(10):
        assert st.map(ioas, st.buffer, P, base + i * P)[0] == 0
    for i in range(10):
        assert st.unmap(ioas, base + i * P, P)[0] == 0
    assert st.map(ioas, st.buffer, 2 * P, base + 16 * P)[0] == 0
    assert st.unmap(ioas, base + 16 * P, P)[0] == -E.ENOENT
    assert st.unmap(ioas, base + 17 * P, P)[0] == -E.ENOENT
    for n, at in [(2, 16), (1, 16), (1, 17), (2, 15), (3, 15)]:
        assert st.map(ioas, st.buffer, n * P, base + at * P)[0] == -E.EEXIST
    assert st.unmap(ioas, 0, U64_MAX)[0] == 0
    assert st.unmap(ioas, 0, U64_MAX)[0] == 0


@ioas_variant
def test_iommufd_ioas_unmap_fully_contained_areas(variant):
    st, ioas, base = ioas_fixture(variant)
    base += 4 * P
    for i in range(4):
        assert st.map(ioas, st.buffer, 8 * P, base + i * 16 * P)[0] == 0
    assert st.unmap(ioas, base - 4 * P, 8 * P)[0] == -E.ENOENT
    assert st.unmap(ioas, base + 3 * 16 * P + 8 * P - 4 * P, 8 * P)[0] == -E.ENOENT
    assert st.unmap(ioas, base - 4 * P, 3 * 16 * P + 8 * P + 4 * P) == (0, 32 * P)


@ioas_variant
def test_iommufd_ioas_area_auto_iova(variant):
    st, ioas, base = ioas_fixture(variant)
    iovas = []
    for _ in range(10):
        ret, iova = st.map(ioas, st.buffer, P)
        assert ret == 0
        iovas.append(iova)
    for iova in iovas:
        assert st.unmap(ioas, iova, P)[0] == 0
    iovas = []
    for i in range(10):
        length = P * (i + 1)
        va = st.buffer if variant != "no_domain" else 1 << 31
        ret, iova = st.map(ioas, va, length)
        assert ret == 0 and iova % (length & -length) == 0
        iovas.append(iova)
    for i, iova in enumerate(iovas):
        assert st.unmap(ioas, iova, P * (i + 1))[0] == 0
    assert st.add_reserved(ioas, 4 * P, 100 * P) == 0
    iovas = []
    for i in range(10):
        length = P * (i + 1)
        ret, iova = st.map(ioas, st.buffer, length)
        assert ret == 0 and iova % (length & -length) == 0
        assert not 4 * P < iova < 104 * P
        iovas.append(iova)
    for i, iova in enumerate(iovas):
        assert st.unmap(ioas, iova, P * (i + 1))[0] == 0
    assert st.allow(ioas, [(P, 600 * P)]) == -E.EADDRINUSE
    if variant != "no_domain":
        rng = (MOCK_APERTURE_START + P, MOCK_APERTURE_START + 600 * P - 1)
    else:
        rng = (200 * P, 600 * P - 1)
    assert st.allow(ioas, [rng]) == 0
    for i in range(10):
        length = P * (i + 1)
        ret, iova = st.map(ioas, st.buffer, length)
        assert ret == 0 and iova % (length & -length) == 0
        assert rng[0] <= iova and iova + length <= rng[1] + 1


@ioas_variant
def test_iommufd_ioas_reserved_overflow(variant):
    st, ioas, _ = ioas_fixture(variant)
    assert st.add_reserved(ioas, 6, 0xFFFFFFFFFFFF8001) == 0        # may overlap the aperture
    assert st.map(ioas, st.buffer, 0x5000)[0] == -E.ENOSPC


@ioas_variant
def test_iommufd_ioas_area_allowed(variant):
    st, ioas, base = ioas_fixture(variant)
    assert st.allow(ioas, [(base, base + 600 * P)]) == 0
    assert st.add_reserved(ioas, base + P, P) == -E.EADDRINUSE
    assert st.allow(ioas, []) == 0
    assert st.add_reserved(ioas, base + P, P) == 0
    assert st.allow(ioas, [(base, base + 600 * P)]) == -E.EADDRINUSE


@ioas_variant
def test_iommufd_ioas_copy_area(variant):
    """COPY (FIXED|WRITEABLE, T71) inside one IOAS and to a new IOAS at dst_iova 0."""
    st, ioas, base = ioas_fixture(variant)
    assert st.map(ioas, st.buffer, P, base)[0] == 0
    assert st.copy(ioas, ioas, P, base, base + P, flags=W)[0] == 0
    dst = st.ioas()
    assert st.copy(dst, ioas, P, base, 0, flags=W)[0] == 0


@ioas_variant
def test_iommufd_ioas_iova_ranges(variant):
    st, ioas, _ = ioas_fixture(variant)
    ret, ranges, out = st.ranges(ioas, BUFFER_SIZE // 16)
    assert ret == 0
    if variant == "no_domain":
        assert (ranges, out.out_iova_alignment) == ([(0, SIZE_MAX)], 1)
    else:
        assert (ranges, out.out_iova_alignment) == ([(MOCK_APERTURE_START, MOCK_APERTURE_LAST)],
                                                    MOCK_PAGE_SIZE)
    buf = st.mem(1, fill=bytes(P))
    ret, out = st.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=0, allowed_iovas=buf)
    assert (ret, out.num_iovas) == (-E.EMSGSIZE, 1)
    assert st.h.read_mem(buf, 16)[1] == bytes(16)
    assert st.add_reserved(ioas, P, P) == (0 if variant == "no_domain" else 0)
    ret, ranges, out = st.ranges(ioas, BUFFER_SIZE // 16)
    if variant == "no_domain":
        assert (ret, ranges) == (0, [(0, P - 1), (2 * P, SIZE_MAX)])
        ret, out = st.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=1, allowed_iovas=buf)
        assert (ret, out.num_iovas) == (-E.EMSGSIZE, 2)
        assert st.h.read_mem(buf, 32)[1] == struct.pack("<QQ", 0, P - 1) + bytes(16)
    else:
        assert (ret, ranges) == (0, [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)])


@ioas_variant
def test_iommufd_ioas_ioas_option_huge_pages(variant):
    st, ioas, _ = ioas_fixture(variant)
    assert st.huge_pages(ioas) == (0, 1)
    assert st.huge_pages(ioas, 0) == 0
    assert st.huge_pages(ioas) == (0, 0)
    assert st.huge_pages(ioas, 2) == -E.EINVAL
    assert st.huge_pages(ioas, 1) == 0


@ioas_variant
def test_iommufd_ioas_ioas_iova_alloc(variant):
    st, ioas, _ = ioas_fixture(variant)
    for length in range(1, 2 * P):
        if variant != "no_domain" and length % MOCK_PAGE_SIZE:
            assert st.map(ioas, st.buffer, length)[0] == -E.EINVAL
        else:
            ret, iova = st.map(ioas, st.buffer, length)
            assert ret == 0
            assert st.unmap(ioas, iova, length)[0] == 0


def test_iommufd_ioas_ioas_align_change():
    st, ioas, _ = ioas_fixture("no_domain")
    assert st.map(ioas, st.buffer, P, MOCK_APERTURE_START)[0] == 0
    assert st.huge_pages(ioas, 0) == 0
    assert st.map(ioas, st.buffer + MOCK_PAGE_SIZE, P, MOCK_APERTURE_START + P)[0] == -E.EINVAL
    assert st.huge_pages(ioas, 0) == 0
    assert st.huge_pages(ioas, 1) == 0
    assert st.map(ioas, st.buffer + MOCK_PAGE_SIZE, P, MOCK_APERTURE_START + P)[0] == 0
    assert st.huge_pages(ioas, 0) == -E.EADDRINUSE
    assert st.unmap(ioas, MOCK_APERTURE_START + P, P)[0] == 0
    assert st.unmap(ioas, MOCK_APERTURE_START, P)[0] == 0


@ioas_variant
def test_iommufd_ioas_copy_sweep(variant):
    st, ioas, _ = ioas_fixture(variant)
    dst = st.ioas()
    last_iova = MOCK_APERTURE_START + BUFFER_SIZE - (1 if variant != "no_domain" else 2)
    assert st.map(ioas, st.buffer, last_iova - MOCK_APERTURE_START + 1, MOCK_APERTURE_START)[0] == 0
    iova = MOCK_APERTURE_START - P
    while iova <= last_iova:
        ret = st.copy(dst, ioas, MOCK_PAGE_SIZE, iova, MOCK_APERTURE_START, flags=W)[0]
        if iova < MOCK_APERTURE_START or iova + MOCK_PAGE_SIZE - 1 > last_iova:
            assert ret == -E.ENOENT, hex(iova)
        else:
            assert ret == 0, hex(iova)
            assert st.unmap(dst, MOCK_APERTURE_START, MOCK_PAGE_SIZE)[0] == 0
        iova += 511
    assert st.destroy(dst) == 0


@ioas_variant
def test_iommufd_ioas_fork_gone(variant):
    """The mapping process exits: with a domain the pages were pinned at map
    (copy from domain to domain: 0); without one the attach must pin -> EFAULT."""
    st, ioas, _ = ioas_fixture(variant)
    h = st.h
    parent = h.mm
    child = h.mm = MM(h.profile)
    buf = h.mmap(BUFFER_VA, BUFFER_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    h.write_mem(buf, b"child-data")
    assert st.map(ioas, buf, BUFFER_SIZE, MOCK_APERTURE_START)[0] == 0
    h.mm = parent
    child.mm_users = 0
    ret, idx, _ = st.mock_domain(ioas)
    if variant != "no_domain":
        assert ret == 0
        assert dma_read(st.devs[idx], MOCK_APERTURE_START, 10) == (10, b"child-data")
    else:
        assert ret == -E.EFAULT


@pytest.mark.parametrize("profile", ["6.19", "7.2"])
def test_iommufd_ioas_dmabuf_simple(profile):
    st = Selftest(profile=profile)
    ioas = st.ioas()
    dfd = st.h.dmabuf_export(4 * P)
    st.h.fds[dfd].inode.exporter = "selftest"
    assert st.map_file(ioas, dfd, 0, 0)[0] == -E.EINVAL
    assert st.map_file(ioas, dfd, 4 * P, 4 * P)[0] == -E.EINVAL
    assert st.map_file(ioas, dfd, 0, 4 * P + 1)[0] == -E.EINVAL
    assert st.map_file(ioas, dfd, 0, 4 * P)[0] == 0


def test_iommufd_ioas_dmabuf_revoke():
    st = Selftest()
    ioas = st.ioas()
    dfd = st.h.dmabuf_export(4 * P)
    inode = st.h.fds[dfd].inode
    inode.exporter, inode.revoked = "selftest", True
    assert st.map_file(ioas, dfd, 0, 4 * P)[0] == -E.ENODEV
    inode.revoked = False
    assert st.map_file(ioas, dfd, 0, 4 * P)[0] == 0


# ---- FIXTURE(change_process) -----------------------------------------------------------

@pytest.mark.parametrize("account", ["account_none", "account_user", "account_mm"])
def test_change_process_basic(account):
    """A user-VA map blocks IOMMU_IOAS_CHANGE_PROCESS (EINVAL); MAP_FILE only: 0,
    the pins stay charged (VmPin; VmLck in MM mode)."""
    st = Selftest(1, cap_ipc_lock=account == "account_none")
    if account == "account_mm":
        assert st.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, 0, 1)[0] == 0
    ioas = st.ioas()
    assert st.mock_domain(ioas)[0] == 0
    assert st.map(ioas, st.buffer, BUFFER_SIZE, MOCK_APERTURE_START)[0] == 0
    assert st.call("IOMMU_IOAS_CHANGE_PROCESS")[0] == -E.EINVAL
    assert st.unmap(ioas, 0, U64_MAX)[0] == 0
    mfd = st.memfd(BUFFER_SIZE)
    assert st.map_file(ioas, mfd, 0, BUFFER_SIZE, MOCK_APERTURE_START)[0] == 0
    assert st.call("IOMMU_IOAS_CHANGE_PROCESS")[0] == 0
    n = BUFFER_SIZE // P
    assert st.counters() == {"account_none": (n, 0, 0), "account_user": (n, n, 0),
                             "account_mm": (n, 0, n)}[account]


# ---- FIXTURE(iommufd_mock_domain) -------------------------------------------------------

MOCK_VARIANTS = {"one_domain": (1, False), "two_domains": (2, False),
                 "one_domain_hugepage": (1, True), "two_domains_hugepage": (2, True)}
mock_variant = pytest.mark.parametrize("variant", list(MOCK_VARIANTS))


def mock_fixture(variant: str):
    domains, huge = MOCK_VARIANTS[variant]
    st = Selftest(domains)
    ioas = st.ioas()
    hwpts = []
    for _ in range(domains):
        ret, _, hwpt = st.mock_domain(ioas)
        assert ret == 0
        hwpts.append(hwpt)
    flags = MAP_SHARED | MAP_ANONYMOUS | (MAP_HUGETLB if huge else 0)
    size = 2 * HUGEPAGE_SIZE if huge else 8 * P
    return st, ioas, hwpts, flags, size


@mock_variant
def test_iommufd_mock_domain_basic(variant):
    st, ioas, _, flags, size = mock_fixture(variant)
    ret, iova = st.map(ioas, st.buffer, P)
    assert ret == 0
    st.check_mock_iova(st.buffer, iova, P)
    buf = st.h.mmap(0, size, RW, flags)
    assert buf > 0
    assert st.h.munmap(buf + size // 2, size // 2) == 0
    assert st.map(ioas, buf, size)[0] == -E.EFAULT
    assert st.h.munmap(buf, size // 2) == 0
    assert st.map(ioas, buf, size)[0] == -E.EFAULT


@mock_variant
def test_iommufd_mock_domain_basic_file(variant):
    """The file variants of iommufd_mock_domain.basic: map_file ok, past EOF EINVAL,
    truncated to 0 EINVAL."""
    st, ioas, _, _, size = mock_fixture(variant)
    mfd = st.memfd(BUFFER_SIZE)
    assert st.map_file(ioas, mfd, 0, P)[0] == 0
    mfd2 = st.memfd(size)
    assert st.map_file(ioas, mfd2, 0, size + 1)[0] == -E.EINVAL
    assert st.h.ftruncate(mfd2, 0) == 0
    assert st.map_file(ioas, mfd2, 0, size)[0] == -E.EINVAL


@mock_variant
def test_iommufd_mock_domain_ro_unshare(variant):
    """MAP_PRIVATE PROT_RW of an O_RDONLY file, READABLE map: the pinned page
    is the unshared copy, so a later CPU write is what the domain sees."""
    st, ioas, _, _, _ = mock_fixture(variant)
    fd = st.h.open("/tmp/selftest-exe", O_RDWR | O_CREAT)
    st.h.pwrite(fd, b"\x7fELF" + bytes(P - 4), 0)
    st.h.close(fd)
    fd = st.h.open("/tmp/selftest-exe", O_RDONLY)
    buf = st.h.mmap(0, P, RW, MAP_PRIVATE, fd, 0)
    st.h.close(fd)
    ret, iova = st.map(ioas, buf, P, flags=R)
    assert ret == 0
    st.check_mock_iova(buf, iova, P)
    st.h.write_mem(buf, b"\x01" * P)
    st.check_mock_iova(buf, iova, P)


@mock_variant
def test_iommufd_mock_domain_all_aligns(variant):
    st, ioas, _, flags, size = mock_fixture(variant)
    huge = MOCK_VARIANTS[variant][1]
    step = size // 16 if huge else MOCK_PAGE_SIZE
    buf = st.h.mmap(0, size, RW, flags)
    st.h.write_mem(buf, bytes(range(256)) * (size // 256))
    for start in range(0, size, step):
        end = size if huge else start + MOCK_PAGE_SIZE
        while end < size:
            length = end - start
            ret, iova = st.map(ioas, buf + start, length)
            assert ret == 0
            st.check_mock_iova(buf + start, iova, min(length, 3 * P))
            assert st.counters()[0] == (end + P - 1) // P - start // P         # check_refs
            assert st.unmap(ioas, iova, length)[0] == 0
            end += MOCK_PAGE_SIZE
    assert st.counters() == (0, 0, 0)


@mock_variant
def test_iommufd_mock_domain_all_aligns_copy(variant):
    """Add and destroy a domain while the area exists: pins are shared."""
    st, ioas, _, flags, size = mock_fixture(variant)
    huge = MOCK_VARIANTS[variant][1]
    step = size // 16 if huge else MOCK_PAGE_SIZE * 3
    buf = st.h.mmap(0, size, RW, flags)
    for start in range(0, size, step):
        end = size if huge else start + MOCK_PAGE_SIZE
        while end < size:
            length = end - start
            ret, iova = st.map(ioas, buf + start, length)
            assert ret == 0
            ret, idx, _ = st.mock_domain(ioas)
            assert ret == 0
            st.check_mock_iova(buf + start, iova, min(length, 2 * P), idx)
            assert st.counters()[0] == (end + P - 1) // P - start // P
            assert st.close_dev(idx) == 0
            st.next_mock -= 1
            assert st.unmap(ioas, iova, length)[0] == 0
            end += MOCK_PAGE_SIZE * 5
    assert st.counters() == (0, 0, 0)


@mock_variant
def test_iommufd_mock_domain_replace(variant):
    st, ioas, hwpts, _, _ = mock_fixture(variant)
    other = st.ioas()
    assert st.attach(other, 0)[0] == 0                   # replace into a new IOAS
    if len(hwpts) == 1:
        assert st.attach(hwpts[0], 0)[0] == -E.ENOENT     # the old auto HWPT is gone
    assert st.attach(other, 0)[0] == 0
    if len(hwpts) >= 2:
        assert st.attach(hwpts[1], 0)[0] == 0
        assert st.attach(hwpts[1], 0)[0] == 0
        assert st.attach(hwpts[0], 0)[0] == 0
    assert st.attach(ioas, 0)[0] == 0
    assert st.destroy(other) == 0


@mock_variant
def test_iommufd_mock_domain_alloc_hwpt(variant):
    st, ioas, hwpts, _, _ = mock_fixture(variant)
    for i in range(len(hwpts)):
        devid = st.ctx.objects[[k for k, o in st.ctx.objects.items()
                                if o.kind == "DEVICE" and o.dev is st.devs[i]][0]].id
        ret, _ = st.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas,
                         flags=~uapi.IOMMU_HWPT_ALLOC_NEST_PARENT & 0xFFFFFFFF)
        assert ret == -E.EOPNOTSUPP
        ret, out = st.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas)
        assert ret == 0
        h0 = out.out_hwpt_id
        ret, out = st.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas,
                           flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        assert ret == 0
        h1 = out.out_hwpt_id
        assert st.attach(h0, i)[0] == 0
        assert st.destroy(h0) == -E.EBUSY
        assert st.attach(h1, i)[0] == 0
        assert st.destroy(h1) == -E.EBUSY
        assert st.attach(ioas, i)[0] == 0
        assert st.destroy(h1) == 0
        ret, idx, _ = st.mock_domain(h0)
        assert ret == 0
        assert st.close_dev(idx) == 0
        assert st.destroy(h0) == 0


# ---- FIXTURE(vfio_compat_mock_domain) ---------------------------------------------------

def compat_fixture(version: int):
    st = Selftest(1)
    ioas = st.ioas()
    assert st.mock_domain(ioas)[0] == 0
    assert st.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert st.vfio(uapi.VFIO_SET_IOMMU, version)[0] == 0
    return st, ioas


compat_variant = pytest.mark.parametrize("version", [uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_TYPE1_IOMMU],
                                         ids=["Ver1v2", "Ver1v0"])


@compat_variant
def test_vfio_compat_mock_domain_option_huge_pages(version):
    st, ioas = compat_fixture(version)
    assert st.huge_pages(ioas) == (0, 0 if version == uapi.VFIO_TYPE1_IOMMU else 1)


@compat_variant
def test_vfio_compat_mock_domain_get_info(version):
    """Pre-cap ABI, the cap chain size, then every argsz in between: flags are
    PGSIZES|CAPS, nothing is written past argsz, no corrupt chain."""
    st, _ = compat_fixture(version)

    def info(argsz: int) -> bytes:
        buf = struct.pack("<I", argsz) + bytes(20) + b"\xaa" * (BUFFER_SIZE - 24)
        ret, out = st.vfio(uapi.VFIO_IOMMU_GET_INFO, buf)
        assert ret == 0
        assert out[max(argsz, 0):] == buf[max(argsz, 0):]            # ioctl_check_buf()
        return out

    out = info(uapi.offsetof("vfio_iommu_type1_info", "cap_offset"))
    argsz, flags, pgsizes = struct.unpack_from("<IIQ", out)
    assert pgsizes and flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
    out = info(24)
    i = uapi.parse("vfio_iommu_type1_info", out)
    assert i.iova_pgsizes and i.cap_offset == 0 and i.argsz > 24
    caplen = i.argsz
    for n in range(24, caplen + 1):
        out = info(n)
        i = uapi.parse("vfio_iommu_type1_info", out)
        assert i.flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
        if i.cap_offset:
            caps = uapi.parse_cap_chain(out[:n], i.cap_offset)
            assert {c.header.id for c in caps} == {1, 3}
            rng = [c for c in caps if c.header.id == 1][0]
            assert [(r.start, r.end) for r in rng.iova_ranges] == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]


def _vmap(st, vaddr, iova, size):
    return st.vfio(uapi.VFIO_IOMMU_MAP_DMA, uapi.build("vfio_iommu_type1_dma_map", flags=3, vaddr=vaddr,
                                                       iova=iova, size=size))[0]


def _vunmap(st, iova, size, flags=0):
    ret, out = st.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, uapi.build("vfio_iommu_type1_dma_unmap", flags=flags,
                                                             iova=iova, size=size))
    return ret, uapi.parse("vfio_iommu_type1_dma_unmap", out).size


@compat_variant
def test_vfio_compat_mock_domain_map(version):
    st, _ = compat_fixture(version)
    assert _vmap(st, st.buffer, MOCK_APERTURE_START, BUFFER_SIZE) == 0
    assert _vunmap(st, MOCK_APERTURE_START, BUFFER_SIZE) == (0, BUFFER_SIZE)
    assert _vunmap(st, MOCK_APERTURE_START, BUFFER_SIZE) == (0, 0)        # the 6.18 line
    assert _vmap(st, st.buffer, MOCK_APERTURE_START, BUFFER_SIZE) == 0
    ALL = uapi.VFIO_DMA_UNMAP_FLAG_ALL
    assert _vunmap(st, MOCK_APERTURE_START, BUFFER_SIZE, ALL)[0] == -E.EINVAL
    assert _vunmap(st, 0, 0, ALL) == (0, BUFFER_SIZE)
    pages = [MOCK_APERTURE_START + i * P for i in range(BUFFER_SIZE // P)]
    for i, iova in enumerate(pages):
        assert _vmap(st, st.buffer + i * P, iova, P) == 0
    random.Random(7).shuffle(pages)
    for iova in pages:
        assert _vunmap(st, iova, P) == (0, P)


@pytest.mark.parametrize("profile", ["6.13", "6.18"])
def test_vfio_compat_mock_domain_map_empty_unmap_before_6_18(profile):
    """The 'unmap again (empty)' line of ..map: ENOENT before afb47765f923."""
    st = Selftest(1, profile=profile)
    ioas = st.ioas()
    assert st.mock_domain(ioas)[0] == 0
    assert st.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert st.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    assert _vunmap(st, MOCK_APERTURE_START, BUFFER_SIZE)[0] == (-E.ENOENT if profile == "6.13" else 0)


@compat_variant
def test_vfio_compat_mock_domain_huge_map(version):
    st, _ = compat_fixture(version)
    size = 2 * HUGEPAGE_SIZE
    buf = st.h.mmap(0, size, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    assert buf > 0
    assert _vmap(st, buf, MOCK_APERTURE_START, size) == 0
    chunk = size // 16
    pages = [MOCK_APERTURE_START + i * chunk for i in range(16)]
    random.Random(3).shuffle(pages)
    for iova in pages:
        ret = _vunmap(st, iova, chunk)[0]
        assert ret == (0 if version == uapi.VFIO_TYPE1_IOMMU else -E.ENOENT)
    if version == uapi.VFIO_TYPE1_IOMMU:
        assert st.counters() == (0, 0, 0)
