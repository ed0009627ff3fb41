"""Helpers for the rig's guest tests: kernel features and raw ioctls (see conftest.py)."""

from __future__ import annotations

import os

import pytest

from backends import uapi
from backends.host import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

FEATURES = set(filter(None, os.environ.get("RIG_FEATURES", "").split(",")))
U64_MAX = (1 << 64) - 1


def has(feature: str) -> bool:
    return feature in FEATURES


def need(feature: str, path: str | None = None) -> None:
    """Skip when the kernel lacks ``feature``; fail when it has it but ``path`` is missing."""
    if feature not in FEATURES:
        pytest.skip(f"kernel {os.environ.get('RIG_KERNEL')} has no {feature}")
    if path and not os.path.exists(path):
        pytest.fail(f"kernel has {feature} but {path} is missing")


class Raw:
    """Raw ioctls with ``uapi.codec`` structs on a LinuxHost: ``(ret, fields)``."""

    def __init__(self, host):
        self.host = host

    def ioctl(self, fd: int, request: int, name: str, /, **fields) -> tuple[int, dict]:
        c = uapi.codec(name)
        vals = dict.fromkeys(c.names, 0)
        vals[c.names[0]] = c.size                    # argsz / size
        vals.update(fields)
        ret, out = self.host.ioctl(fd, request, c.pack(*(vals[n] for n in c.names)))
        return ret, dict(zip(c.names, c.unpack(out[:c.size])))

    def anon(self, length: int, prot: int = PROT_READ | PROT_WRITE, shared: bool = False) -> int:
        addr = self.host.mmap(0, length, prot, (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS)
        assert addr > 0, addr
        return addr

    def fill(self, addr: int, data: bytes) -> None:
        assert self.host.write_mem(addr, data) == len(data)

    def read(self, addr: int, n: int) -> bytes:
        ret, data = self.host.read_mem(addr, n)
        assert ret == n, ret
        return data

    # iommufd
    def ioas_alloc(self, iommufd: int) -> int:
        ret, out = self.ioctl(iommufd, uapi.IOMMU_IOAS_ALLOC, "iommu_ioas_alloc")
        assert ret == 0, ret
        return out["out_ioas_id"]

    def ioas_map(self, iommufd, ioas, va, length, iova=0, flags=None, **kw) -> tuple[int, int]:
        if flags is None:
            flags = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE | \
                (uapi.IOMMU_IOAS_MAP_FIXED_IOVA if iova else 0)
        ret, out = self.ioctl(iommufd, uapi.IOMMU_IOAS_MAP, "iommu_ioas_map", flags=flags,
                              ioas_id=ioas, user_va=va, length=length, iova=iova, **kw)
        return ret, out["iova"]

    def map_file(self, iommufd, ioas, fd, start, length, iova=0, flags=None) -> tuple[int, int]:
        if flags is None:
            flags = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE | \
                (uapi.IOMMU_IOAS_MAP_FIXED_IOVA if iova else 0)
        ret, out = self.ioctl(iommufd, uapi.IOMMU_IOAS_MAP_FILE, "iommu_ioas_map_file",
                              flags=flags, ioas_id=ioas, fd=fd, start=start, length=length,
                              iova=iova)
        return ret, out["iova"]

    def ioas_unmap(self, iommufd, ioas, iova, length) -> tuple[int, int]:
        ret, out = self.ioctl(iommufd, uapi.IOMMU_IOAS_UNMAP, "iommu_ioas_unmap",
                              ioas_id=ioas, iova=iova, length=length)
        return ret, out["length"]

    def iova_ranges(self, iommufd, ioas) -> tuple[list[tuple[int, int]], int]:
        """IOMMU_IOAS_IOVA_RANGES: ([(start, last)], out_iova_alignment)."""
        buf = self.anon(4096)
        ret, out = self.ioctl(iommufd, uapi.IOMMU_IOAS_IOVA_RANGES, "iommu_ioas_iova_ranges",
                              ioas_id=ioas, num_iovas=16, allowed_iovas=buf)
        assert ret == 0, ret
        n = out["num_iovas"]
        ranges = [(r.start, r.last) for r in
                  uapi.parse_array("iommu_iova_range", self.read(buf, 16 * n), n)]
        return ranges, out["out_iova_alignment"]

    def memfd(self, size: int, content: bytes = b"", flags: int = 0x2) -> int:
        """A MFD_ALLOW_SEALING memfd of ``size`` bytes starting with ``content``."""
        fd = self.host.memfd_create("rig", flags)
        assert fd >= 0 and self.host.ftruncate(fd, size) == 0
        if content:
            assert self.host.pwrite(fd, content, 0) == len(content)
        return fd

    def reopen(self, fd: int, flags: int) -> int:
        """The same file through /proc/self/fd/N with other access flags."""
        new = self.host.open(f"/proc/self/fd/{fd}", flags)
        assert new >= 0, new
        return new

    # vfio device (cdev)
    def bind_attach(self, cdev_fd: int, iommufd: int, pt_id: int) -> tuple[int, int]:
        ret, out = self.ioctl(cdev_fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, "vfio_device_bind_iommufd",
                              iommufd=iommufd)
        assert ret == 0, ("VFIO_DEVICE_BIND_IOMMUFD", ret)
        devid = out["out_devid"]
        ret, out = self.ioctl(cdev_fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                              "vfio_device_attach_iommufd_pt", pt_id=pt_id)
        assert ret == 0, ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", ret)
        return devid, out["pt_id"]

    # type1
    def dma_map(self, container, va, iova, size, flags=None) -> int:
        if flags is None:
            flags = uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE
        return self.ioctl(container, uapi.VFIO_IOMMU_MAP_DMA, "vfio_iommu_type1_dma_map",
                          flags=flags, vaddr=va, iova=iova, size=size)[0]

    def dma_unmap(self, container, iova, size, flags=0) -> tuple[int, int]:
        ret, out = self.ioctl(container, uapi.VFIO_IOMMU_UNMAP_DMA, "vfio_iommu_type1_dma_unmap",
                              flags=flags, iova=iova, size=size)
        return ret, out["size"]


# ---- the simulated kernel that mirrors the guest (test_differential.py) ----

def sim_profile(kernel: str | None = None, release: str | None = None,
                features: set[str] | None = None):
    """The SimHost profile of the guest kernel: the nearest mainline profile at or
    below its release (profiles.host_profile: 7.2.13 -> "7.2", 6.1.0-50-amd64 ->
    "6.1", 6.12.95+deb12 -> "6.12"), "+fix" for a kernel with the write-access patch
    (iommufd-7.2+fix -> "7.2+fix"), and without /dev/iommu and the VFIO cdev when
    the guest's config lacks them (Debian's stock kernels: RIG_FEATURES has no
    ``iommufd``)."""
    import dataclasses

    from backends.kernel_profiles import get_profile, host_profile
    kernel = kernel if kernel is not None else os.environ.get("RIG_KERNEL", "")
    release = release if release is not None else os.environ.get("RIG_RELEASE") or os.uname().release
    features = FEATURES if features is None else features
    name = host_profile(release).name
    if "map_file_requires_fmode_write" in features or kernel.endswith("+fix"):
        name += "+fix"
    profile = get_profile(name)
    if "iommufd" not in features:
        profile = dataclasses.replace(profile, iommufd=False, vfio_cdev=False)
    return profile


def reserved_regions(group: int) -> tuple[tuple[int, int], ...]:
    """/sys/kernel/iommu_groups/N/reserved_regions: ((start, end inclusive), ...),
    e.g. intel-iommu's MSI window 0xfee00000-0xfeefffff."""
    out = []
    with open(f"/sys/kernel/iommu_groups/{group}/reserved_regions") as f:
        for line in f:
            start, end, _kind = line.split()
            out.append((int(start, 16), int(end, 16)))
    return tuple(sorted(out))


def guest_iommu_hw(host, group: int):
    """The guest's IOMMU as the simulator's ``IommuHw``: reserved regions from
    sysfs, page sizes (iova_pgsizes) and aperture (the span of the IOVA_RANGE cap)
    from VFIO_IOMMU_GET_INFO of a type1 container on ``group``."""
    from backends.simulated.iommu import IommuHw
    from backends.type1 import Type1Container
    with Type1Container(host, group) as c:
        pgsizes, ranges = c.pgsizes, c.iova_ranges
    return IommuHw(aperture=(ranges[0][0], ranges[-1][1]), pgsize_bitmap=pgsizes,
                   reserved=reserved_regions(group))


def sim_devices(host, bdf: str):
    """[SimVfioDevice] mirroring the guest's edu: its PCI name, group, cdev index
    and IOMMU (``guest_iommu_hw``)."""
    from backends.rig.edu import iommu_group, vfio_cdev
    from backends.simulated.iommu import SimVfioDevice
    group = iommu_group(bdf)
    cdev = int(vfio_cdev(bdf).rsplit("vfio", 1)[1]) if has("iommufd") else 0
    return [SimVfioDevice(name=bdf, group=group, cdev=cdev, hw=guest_iommu_hw(host, group))]
