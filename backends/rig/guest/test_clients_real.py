"""The project's real clients on the guest kernel: backends/type1.py
(Type1Container) and backends/iommufd.py (IommufdContainer, compat_container)
through their public API on a LinuxHost, with the edu device (issue 7).

type1 on edu's group (/dev/vfio/vfio + /dev/vfio/N); iommufd native with edu's
cdev bound and attached; the VFIO compat mode (the group's container is a
/dev/iommu fd: vfio_group_ioctl_set_container() takes an iommufd file whenever
CONFIG_IOMMUFD is on, also when IOMMUFD_VFIO_CONTAINER is off: the rig's built kernels).
Kernels without iommufd (Debian's stock configs) refuse /dev/iommu with ENOENT.
The ``real`` fixture (hosts.py) checks that no fd or mapping leaks.
Expected values: what Debian 7.2.13 answered; the kernel functions are named per test.
"""

from __future__ import annotations

import errno

import pytest
from backends.rig.guest.rigutil import U64_MAX, has, need, reserved_regions

from backends import uapi
from backends.host import F_ADD_SEALS, F_SEAL_WRITE, O_RDONLY, PROT_READ
from backends.iommufd import IommufdContainer, compat_container
from backends.rig.edu import Edu, iommu_group, vfio_cdev
from backends.type1 import SetupError, Type1Container

PAGE = 0x1000
N = 0xFFF                                        # the most one edu transfer may move
PATTERN = (bytes(range(251)) * 17)[:N]
FIX = has("map_file_requires_fmode_write")
MSI = (0xFEE00000, 0xFEEFFFFF)                   # intel-iommu IOMMU_RESV_MSI
PGSIZES = 0x40201000                             # VT-d second level: 4K | 2M | 1G
U32_MAX = (1 << 32) - 1


def unmapped(r) -> int:
    """The size/length the kernel wrote back into an unmap request."""
    name = "iommu_ioas_unmap" if r.request.ioctl == "IOMMU_IOAS_UNMAP" else "vfio_iommu_type1_dma_unmap"
    f = uapi.parse(name, r.out)
    return f.length if name == "iommu_ioas_unmap" else f.size


def check_vtd_ranges(ranges) -> None:
    """The domain's aperture (QEMU intel-iommu aw-bits 39 or 48) minus the MSI window
    (intel_iommu_get_resv_regions())."""
    assert ranges[0] == (0, MSI[0] - 1) and ranges[1][0] == MSI[1] + 1 and len(ranges) == 2
    assert ranges[1][1] + 1 in (1 << 39, 1 << 48)


def round_trip(raw, edu: Edu, map_fn) -> None:
    """edu reads PATTERN at IOVA 0x100000 and writes it back at 0x200000; both
    pages mapped with ``map_fn(iova, size, vaddr)``."""
    src, dst = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(src, PATTERN)
    assert map_fn(0x100000, PAGE, src).ret == 0
    assert map_fn(0x200000, PAGE, dst).ret == 0
    edu.enable_bus_master()
    edu.dma_to_device(0x100000, N)
    edu.dma_from_device(0x200000, N)
    assert raw.read(dst, N) == PATTERN


@pytest.fixture
def group(edu_bdf):
    return iommu_group(edu_bdf)


# ------------------------------------------------------------------------- type1

@pytest.fixture
def t1(real, group):
    need("type1", "/dev/vfio/vfio")
    with Type1Container(real, group) as c:
        yield c
    assert c.teardown == [] and c.fd == c.group_fd == -1


def test_type1_setup_reads_the_vtd_info(t1, group):
    """vfio_legacy_setup(): GET_INFO (argsz grown for the caps) gives PGSIZES|CAPS,
    the IOVA ranges = aperture minus sysfs' reserved regions, DMA_AVAIL 65535."""
    assert t1.name == "type1" and t1.iommu_type == uapi.VFIO_TYPE1v2_IOMMU
    assert t1.info.flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
    assert t1.info.argsz > uapi.sizeof("vfio_iommu_type1_info") and t1.info.cap_offset
    assert t1.pgsizes == PGSIZES
    check_vtd_ranges(t1.iova_ranges)
    assert reserved_regions(group) == (MSI,)
    assert t1.dma_avail == 65535 and t1.unmap_all_supported


def test_type1_map_unmap_and_errnos(raw, t1):
    va = raw.anon(0x8000)
    r = t1.dma_map(0x100000, 0x4000, va, False)
    assert (r.ret, r.request.flag_names()) == (0, "READ|WRITE")
    r = t1.dma_map(0x102000, 0x4000, va + 0x4000, False)
    assert (r.ret, r.errno_name, r.note) == (-errno.EEXIST, "EEXIST", "VFIO_MAP_DMA failed: File exists")
    assert t1.dma_map(0x100000, 0, va, False).ret == -errno.EINVAL
    assert t1.dma_map(0x200000, PAGE, va + 1, False).ret == -errno.EINVAL
    assert t1.dma_map(MSI[0], PAGE, va, False).ret == -errno.EINVAL          # reserved
    r = t1.dma_unmap(0x101000, PAGE)                                         # v2: no bisecting
    assert (r.ret, r.note) == (-errno.EINVAL, "VFIO_UNMAP_DMA failed: Invalid argument")
    r = t1.dma_unmap(0x100000, 0x4000)
    assert (r.ret, unmapped(r)) == (0, 0x4000)
    r = t1.dma_unmap(0x100000, 0x4000)                                       # nothing there
    assert (r.ret, unmapped(r)) == (0, 0)


def test_type1_bad_and_read_only_memory(raw, t1):
    """vfio_pin_pages_remote(): GUP of an unmapped VA or FOLL_WRITE on a read-only
    VMA -> EFAULT at MAP time (the container has a VT-d domain)."""
    gone = raw.anon(0x2000)
    assert raw.host.munmap(gone, 0x2000) == 0
    assert t1.dma_map(0x100000, 0x2000, gone, False).ret == -errno.EFAULT
    ro = raw.anon(PAGE, prot=PROT_READ)
    r = t1.dma_map(0x100000, PAGE, ro, False)
    assert (r.ret, r.note) == (-errno.EFAULT, "VFIO_MAP_DMA failed: Bad address")
    r = t1.dma_map(0x100000, PAGE, ro, True)
    assert (r.ret, r.request.flag_names()) == (0, "READ")


def test_type1_unmap_all(raw, t1):
    va = raw.anon(0x4000)
    assert t1.dma_map(0x100000, 0x1000, va, False).ret == 0
    assert t1.dma_map(0x300000, 0x2000, va + 0x1000, True).ret == 0
    assert t1.dma_map(t1.iova_ranges[-1][1] + 1 - PAGE, PAGE, va + 0x3000, False).ret == 0
    r = t1.dma_unmap(0, 0, unmap_all=True)
    assert r.request.fields["flags"] == uapi.VFIO_DMA_UNMAP_FLAG_ALL
    assert (r.ret, unmapped(r)) == (0, 0x4000)
    r = t1.dma_unmap(0, 0, unmap_all=True)
    assert (r.ret, unmapped(r)) == (0, 0)


def test_type1_get_device_fd_and_dma_round_trip(raw, t1, edu_bdf):
    fd = t1.get_device_fd(edu_bdf)
    assert fd >= 0 and t1.device_fds == [fd]
    edu = Edu(raw.host, fd)
    assert edu.ident() == 0x010000ED
    round_trip(raw, edu, lambda iova, size, va: t1.dma_map(iova, size, va, False))


def test_type1_get_device_fd_of_an_unknown_name(t1):
    """vfio_group_ioctl_get_device_fd(): no such device in the group -> ENODEV."""
    with pytest.raises(SetupError) as e:
        t1.get_device_fd("0000:00:1f.7")
    assert e.value.ret == -errno.ENODEV and t1.device_fds == []


def test_type1_v1_unmap_rules(real, raw, group):
    """VFIO_TYPE1_IOMMU (v1): unmapping the middle of a mapping unmaps nothing and
    succeeds; a range that covers a mapping's start removes it whole
    (drivers/vfio/vfio_iommu_type1.c vfio_dma_do_unmap())."""
    need("type1", "/dev/vfio/vfio")
    with Type1Container(real, group, iommu_type=uapi.VFIO_TYPE1_IOMMU) as c:
        assert c.iommu_type == uapi.VFIO_TYPE1_IOMMU and c.pgsizes == PGSIZES
        assert c.dma_map(0x100000, 0x4000, raw.anon(0x4000), False).ret == 0
        r = c.dma_unmap(0x101000, PAGE)
        assert (r.ret, unmapped(r)) == (0, 0)
        r = c.dma_unmap(0x100000, PAGE)
        assert (r.ret, unmapped(r)) == (0, 0x4000)
    assert c.teardown == []


# ------------------------------------------------------------------------ iommufd

@pytest.fixture
def ifd(real):
    need("iommufd", "/dev/iommu")
    with IommufdContainer(real) as c:
        yield c
    assert c.teardown == [] and c.fd == -1 and c.ioas_id == 0


def test_iommufd_empty_ioas(ifd):
    """iommufd_ioas_iova_ranges() with no domain: [0, U64_MAX], alignment 1."""
    assert (ifd.ioas_id, ifd.iova_ranges, ifd.out_iova_alignment) == (1, [(0, U64_MAX)], 1)
    assert ifd.pgsizes == 1 and ifd.warnings == []


def test_iommufd_attach_edu(ifd, edu_bdf):
    devid, hwpt = ifd.attach_device(vfio_cdev(edu_bdf))
    assert (devid, hwpt) == (2, 3)
    assert ifd.devices == [(vfio_cdev(edu_bdf), ifd.devices[0][1], 2, 3)]
    check_vtd_ranges(ifd.iova_ranges)
    assert ifd.out_iova_alignment == ifd.pgsizes == PAGE


def test_iommufd_lazy_then_eager_pinning(raw, ifd, edu_bdf):
    """iommufd pins lazily: with no domain a bad VA maps (nothing is pinned);
    attaching then fails EFAULT and nothing is attached; once attached, a bad VA
    is EFAULT at MAP, with QEMU's "PCI BAR?" warning."""
    gone = raw.anon(0x2000)
    assert raw.host.munmap(gone, 0x2000) == 0
    assert ifd.dma_map(0x100000, 0x2000, gone, False).ret == 0
    with pytest.raises(SetupError) as e:
        ifd.attach_device(vfio_cdev(edu_bdf))
    assert e.value.ret == -errno.EFAULT and e.value.call == "VFIO_DEVICE_ATTACH_IOMMUFD_PT"
    assert ifd.devices == []
    r = ifd.dma_unmap(0x100000, 0x2000)
    assert (r.ret, unmapped(r)) == (0, 0x2000)
    ifd.attach_device(vfio_cdev(edu_bdf))
    r = ifd.dma_map(0x100000, 0x2000, gone, False)
    assert (r.ret, r.warnings) == (-errno.EFAULT, ["IOMMU_IOAS_MAP failed: Bad address, PCI BAR?"])
    ro = raw.anon(PAGE, prot=PROT_READ)
    assert ifd.dma_map(0x100000, PAGE, ro, False).ret == -errno.EFAULT
    r = ifd.dma_map(0x100000, PAGE, ro, True)
    assert (r.ret, r.request.flag_names()) == (0, "FIXED_IOVA|READABLE")


def test_iommufd_map_errnos_with_a_domain(raw, ifd, edu_bdf):
    ifd.attach_device(vfio_cdev(edu_bdf))
    va = raw.anon(0x4000)
    assert ifd.dma_map(0x100000, 0x4000, va, False).ret == 0
    assert ifd.dma_map(0x102000, 0x2000, va, False).ret == -errno.EEXIST
    assert ifd.dma_map(MSI[0], PAGE, va, False).ret == -errno.EINVAL
    assert ifd.dma_map(0x300000, PAGE, va + 0x10, False).ret == -errno.EINVAL
    assert ifd.dma_map(0x300000, 0, va, False).ret == -errno.EINVAL
    assert ifd.dma_map(1 << 39, PAGE, va, False).ret == -errno.EINVAL      # past the aperture


def test_iommufd_unmap_enoent_is_success(raw, ifd):
    """iommufd_backend_unmap_dma(): the kernel's ENOENT (nothing there, or a split)
    is success for QEMU; the length written back is kept."""
    va = raw.anon(0x4000)
    assert ifd.dma_map(0x100000, 0x4000, va, False).ret == 0
    for iova, size in ((0x900000, PAGE), (0x101000, PAGE)):
        r = ifd.dma_unmap(iova, size)
        assert r.ret == 0 and "ENOENT treated as success" in r.note
    r = ifd.dma_unmap(0x100000, 0)
    assert (r.ret, r.note) == (-errno.EINVAL, "IOMMU_IOAS_UNMAP failed: Invalid argument")
    r = ifd.dma_unmap(0x100000, 0x4000)
    assert (r.ret, r.note, unmapped(r)) == (0, "", 0x4000)


def test_iommufd_unmap_all(raw, ifd):
    va = raw.anon(0x3000)
    fd = raw.memfd(0x2000)
    assert ifd.dma_map(0x100000, 0x3000, va, False).ret == 0
    assert ifd.dma_map_file(0x400000, 0x2000, fd, 0, True).ret == 0
    r = ifd.dma_unmap(0, 0, unmap_all=True)
    assert r.request.fields["length"] == U64_MAX
    assert (r.ret, unmapped(r)) == (0, 0x5000)
    r = ifd.dma_unmap(0, 0, unmap_all=True)
    assert (r.ret, unmapped(r)) == (0, 0)


def test_iommufd_map_file_memfd_device_writes_the_file(raw, ifd, edu_bdf):
    """dma_map_file() of a memfd (QEMU 10.1+): edu reads the file's page and
    writes into it through the IOAS; pread sees the device's write."""
    ifd.attach_device(vfio_cdev(edu_bdf))
    fd = raw.memfd(0x2000, PATTERN)
    r = ifd.dma_map_file(0x100000, 0x2000, fd, 0, False)
    assert (r.ret, r.request.flag_names()) == (0, "FIXED_IOVA|WRITEABLE|READABLE")
    edu = Edu(raw.host, ifd.devices[0][1])
    edu.enable_bus_master()
    edu.dma_to_device(0x100000, N)
    edu.dma_from_device(0x101000, N)
    assert raw.host.pread(fd, N, PAGE) == (N, PATTERN)
    assert ifd.dma_map_file(0x200000, 0x4000, fd, 0, False).ret == -errno.EINVAL   # past EOF
    assert ifd.dma_map_file(0x200000, PAGE, -1, 0, False).ret == -errno.EBADF


def test_iommufd_dma_round_trip(raw, ifd, edu_bdf):
    ifd.attach_device(vfio_cdev(edu_bdf))
    round_trip(raw, Edu(raw.host, ifd.devices[0][1]),
               lambda iova, size, va: ifd.dma_map(iova, size, va, False))


@pytest.mark.parametrize("how", ["rdonly-fd", "write-sealed"])
def test_iommufd_writable_map_file_of_a_read_only_file(raw, ifd, how):
    """With the write-access patch a writable MAP_FILE needs FMODE_WRITE and mapping_map_writable()
    (EPERM) on the +fix kernel; the unpatched 7.2.13 maps it.  readonly=True maps
    on both."""
    fd = raw.memfd(PAGE)
    if how == "rdonly-fd":
        fd = raw.reopen(fd, O_RDONLY)
    else:
        assert raw.host.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
    r = ifd.dma_map_file(0x100000, PAGE, fd, 0, False)
    assert (r.ret, r.warnings) == ((-errno.EPERM if FIX else 0), [])
    assert ifd.dma_map_file(0x200000, PAGE, fd, 0, True).ret == 0


def test_iommufd_seal_write_after_writable_map_file(raw, ifd):
    """The +fix kernel holds mapping_map_writable() for a writable MAP_FILE:
    F_SEAL_WRITE -> EBUSY even with nothing pinned (no domain)."""
    fd = raw.memfd(PAGE)
    assert ifd.dma_map_file(0x100000, PAGE, fd, 0, False).ret == 0
    assert raw.host.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == (-errno.EBUSY if FIX else 0)


def test_iommufd_query_iova_ranges_again(ifd, edu_bdf):
    assert ifd.query_iova_ranges().ret == 0 and ifd.iova_ranges == [(0, U64_MAX)]
    ifd.attach_device(vfio_cdev(edu_bdf))
    r = ifd.query_iova_ranges()
    assert r.ret == 0 and uapi.parse("iommu_ioas_iova_ranges", r.out).num_iovas == 2


# ------------------------------------------------------------------------- compat

@pytest.fixture
def compat(real, group):
    need("iommufd", "/dev/iommu")
    with compat_container(real, group) as c:
        yield c
    assert c.teardown == [] and c.fd == c.group_fd == -1


def test_compat_setup_before_a_device_is_attached(compat):
    """iommufd_vfio_iommu_get_info(): the compat IOAS has no domain until a device
    fd is opened: page sizes ~(PAGE_SIZE-1), one range [0, U64_MAX], DMA_AVAIL U32_MAX."""
    assert compat.name == "compat" and compat.container_path == "/dev/iommu"
    assert compat.pgsizes == U64_MAX & ~(PAGE - 1)
    assert compat.iova_ranges == [(0, U64_MAX)] and compat.dma_avail == U32_MAX
    assert compat.unmap_all_supported and compat.dma_map_file is None


def test_compat_map_unmap(raw, compat, edu_bdf):
    compat.get_device_fd(edu_bdf)              # binds edu and attaches it to the compat IOAS
    va = raw.anon(0x4000)
    assert compat.dma_map(0x100000, 0x4000, va, False).ret == 0
    assert compat.dma_map(0x102000, PAGE, va, False).ret == -errno.EEXIST
    assert compat.dma_map(MSI[0], PAGE, va, False).ret == -errno.EINVAL
    assert compat.dma_unmap(0x101000, PAGE).ret == -errno.ENOENT          # v2: no splitting
    r = compat.dma_unmap(0x900000, PAGE)                                   # empty: 0 (6.18+)
    assert (r.ret, unmapped(r)) == (0, 0)
    r = compat.dma_unmap(0x100000, 0x4000)
    assert (r.ret, unmapped(r)) == (0, 0x4000)
    gone = raw.anon(PAGE)
    assert raw.host.munmap(gone, PAGE) == 0
    assert compat.dma_map(0x100000, PAGE, gone, False).ret == -errno.EFAULT


def test_compat_unmap_all(raw, compat):
    va = raw.anon(0x3000)
    assert compat.dma_map(0x100000, 0x1000, va, False).ret == 0
    assert compat.dma_map(0x200000, 0x2000, va + 0x1000, True).ret == 0
    r = compat.dma_unmap(0, 0, unmap_all=True)
    assert (r.ret, unmapped(r)) == (0, 0x3000)


def test_compat_v1_splits(real, raw, group):
    """VFIO_TYPE1_IOMMU on iommufd: SET_IOMMU disables huge pages and unmap cuts
    areas at both ends (iopt_cut_iova()), so a sub-range unmap succeeds."""
    need("iommufd", "/dev/iommu")
    with compat_container(real, group, iommu_type=uapi.VFIO_TYPE1_IOMMU) as c:
        assert c.dma_map(0x100000, 0x4000, raw.anon(0x4000), False).ret == 0
        r = c.dma_unmap(0x101000, PAGE)
        assert (r.ret, unmapped(r)) == (0, PAGE)
        r = c.dma_unmap(0, 0, unmap_all=True)
        assert (r.ret, unmapped(r)) == (0, 0x3000)
    assert c.teardown == []


def test_compat_dma_round_trip(raw, compat, edu_bdf):
    edu = Edu(raw.host, compat.get_device_fd(edu_bdf))
    round_trip(raw, edu, lambda iova, size, va: compat.dma_map(iova, size, va, False))


def test_no_iommufd_kernel_refuses_dev_iommu(real, group):
    """Debian's stock kernels here have no /dev/iommu: both iommufd clients fail
    setup with one line naming the node and the module."""
    if has("iommufd"):
        pytest.skip("the kernel has iommufd")
    for make in (lambda: IommufdContainer(real), lambda: compat_container(real, group)):
        with pytest.raises(SetupError) as e:
            make()
        assert e.value.ret == -errno.ENOENT and str(e.value).startswith(
            "/dev/iommu: open: No such file or directory [ENOENT]; load the iommufd module")
