"""The harness of the simulated /dev/iommu tests (tests/test_sim_iommufd_*.py,
test_sim_selftests.py): ``Env`` drives backends/simulated/iommufd/ with raw
ioctls and uapi bytes through SimHost; the ``env`` fixture (conftest.py) is ``Env()``.
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from backends.host import (F_ADD_SEALS, MAP_ANONYMOUS, MAP_PRIVATE, MFD_ALLOW_SEALING,
                           O_RDWR, PAGE_SIZE, PROT_READ, PROT_WRITE)
from backends.simulated import SimHost
from backends.simulated.iommu import MOCK_IOMMU, SimVfioDevice
from backends.simulated.vfio import install


P = PAGE_SIZE
U64_MAX = (1 << 64) - 1
RW = PROT_READ | PROT_WRITE
FIXED, W, R = uapi.IOMMU_IOAS_MAP_FIXED_IOVA, uapi.IOMMU_IOAS_MAP_WRITEABLE, uapi.IOMMU_IOAS_MAP_READABLE
E = errno


class Env:
    """A SimHost with VFIO devices installed and /dev/iommu open.

    ``devices``: SimVfioDevice list (default one VT-d edu-like device, cdev 0).
    Every helper returns the kernel answer: (ret, parsed fields) or ret."""

    def __init__(self, profile: str = "7.2", devices=None, **host_kw):
        self.h = SimHost(profile, **host_kw)
        self.devs = install(self.h, devices if devices is not None else [SimVfioDevice()])
        self.fd = self.h.open("/dev/iommu", O_RDWR)
        assert self.fd >= 0
        self.cdevs: dict[int, int] = {}

    @property
    def ctx(self):
        return self.h.fds[self.fd].dev

    # raw
    def raw(self, request: int, arg, fd: int | None = None):
        return self.h.ioctl(self.fd if fd is None else fd, request, arg)

    def call(self, name: str, **fields):
        ioc = uapi.IOCTLS[name] if name in uapi.IOCTLS else None
        req = ioc.nr if ioc else uapi.IOMMU_HWPT_LU_SET_PRESERVE
        sname = ioc.arg if ioc else "iommu_hwpt_lu_set_preserve"
        ret, out = self.raw(req, uapi.build(sname, **fields))
        return ret, uapi.parse(sname, out)

    # objects
    def ioas(self) -> int:
        ret, out = self.call("IOMMU_IOAS_ALLOC")
        assert ret == 0
        return out.out_ioas_id

    def destroy(self, obj_id: int) -> int:
        return self.call("IOMMU_DESTROY", id=obj_id)[0]

    # memory
    def mem(self, npages: int = 16, prot: int = RW, fill: bytes | None = None) -> int:
        va = self.h.mmap(0, npages * P, prot, MAP_PRIVATE | MAP_ANONYMOUS)
        assert va > 0
        if fill is not None and prot & PROT_WRITE:
            assert self.h.write_mem(va, fill) == len(fill)
        return va

    def memfd(self, size: int = 16 * P, seals: int = 0, data: bytes | None = None) -> int:
        fd = self.h.memfd_create("guest", MFD_ALLOW_SEALING)
        assert self.h.ftruncate(fd, size) == 0
        if data:
            assert self.h.pwrite(fd, data, 0) == len(data)
        if seals:
            assert self.h.fcntl(fd, F_ADD_SEALS, seals) == 0
        return fd

    # map / unmap
    def map(self, ioas: int, va: int, length: int, iova: int | None = None, flags: int = R | W):
        fl = flags | (FIXED if iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_MAP", flags=fl, ioas_id=ioas, user_va=va, length=length,
                             iova=iova or 0)
        return ret, out.iova

    def map_file(self, ioas: int, fd: int, start: int, length: int, iova: int | None = None,
                 flags: int = R | W):
        fl = flags | (FIXED if iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_MAP_FILE", flags=fl, ioas_id=ioas, fd=fd, start=start,
                             length=length, iova=iova or 0)
        return ret, out.iova

    def unmap(self, ioas: int, iova: int, length: int):
        ret, out = self.call("IOMMU_IOAS_UNMAP", ioas_id=ioas, iova=iova, length=length)
        return ret, out.length

    def copy(self, dst: int, src: int, length: int, src_iova: int, dst_iova: int | None = None,
             flags: int = R | W):
        fl = flags | (FIXED if dst_iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_COPY", flags=fl, dst_ioas_id=dst, src_ioas_id=src,
                             length=length, dst_iova=dst_iova or 0, src_iova=src_iova)
        return ret, out.dst_iova

    def option(self, option_id: int, op: int, object_id: int = 0, val: int = 0):
        ret, out = self.call("IOMMU_OPTION", option_id=option_id, op=op, object_id=object_id,
                             val64=val)
        return ret, out.val64

    def huge_pages(self, ioas: int, val: int | None = None):
        if val is None:
            return self.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, ioas)
        return self.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, ioas, val)[0]

    def ranges(self, ioas: int, num: int = 16):
        buf = self.mem(1)
        ret, out = self.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=num, allowed_iovas=buf)
        n = min(out.num_iovas, num)
        raw = self.h.read_mem(buf, 16 * n)[1] if n else b""
        return ret, [(r.start, r.last) for r in uapi.parse_array("iommu_iova_range", raw, n)], out

    def allow(self, ioas: int, ranges: list[tuple[int, int]]):
        buf = self.mem(1)
        raw = b"".join(struct.pack("<QQ", a, b) for a, b in ranges)
        if raw:
            assert self.h.write_mem(buf, raw) == len(raw)
        return self.call("IOMMU_IOAS_ALLOW_IOVAS", ioas_id=ioas, num_iovas=len(ranges),
                         allowed_iovas=buf)[0]

    # devices (VFIO cdev)
    def bind(self, idx: int = 0):
        dfd = self.h.open(f"/dev/vfio/devices/vfio{self.devs[idx].cdev}", O_RDWR)
        assert dfd >= 0
        self.cdevs[idx] = dfd
        ret, out = self.raw(uapi.VFIO_DEVICE_BIND_IOMMUFD,
                            uapi.build("vfio_device_bind_iommufd", iommufd=self.fd), fd=dfd)
        return ret, uapi.parse("vfio_device_bind_iommufd", out).out_devid

    def attach(self, pt_id: int, idx: int = 0):
        if idx not in self.cdevs:
            ret, _ = self.bind(idx)
            assert ret == 0
        ret, out = self.raw(uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                            uapi.build("vfio_device_attach_iommufd_pt", pt_id=pt_id), fd=self.cdevs[idx])
        return ret, uapi.parse("vfio_device_attach_iommufd_pt", out).pt_id

    def detach(self, idx: int = 0) -> int:
        return self.raw(uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT,
                        uapi.build("vfio_device_detach_iommufd_pt"), fd=self.cdevs[idx])[0]

    def close_dev(self, idx: int = 0) -> int:
        return self.h.close(self.cdevs.pop(idx))

    # compat
    def vfio(self, request: int, arg):
        return self.raw(request, arg)

    def counters(self):
        h = self.h
        return h.pinned_vm, h.user_locked_vm, h.locked_vm


def mock_env(profile: str = "7.2", n: int = 1, **kw) -> Env:
    return Env(profile, [SimVfioDevice(name=f"mock{i}", group=10 + i, cdev=i, hw=MOCK_IOMMU)
                         for i in range(n)], **kw)
