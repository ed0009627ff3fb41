"""The real kernel clients (backends/type1.py, backends/iommufd.py) on a SimHost.

Every ioctl a client makes is recorded at the Host seam (``Trace``: path of the
fd, ioctl name, exact argument) and compared with ``uapi.build()`` of the
fields QEMU sends (golden bytes).  Those assertions do not depend on who
answers, so they can run unchanged against the simulated kernel.

Until the simulated /dev/vfio/vfio, groups, /dev/iommu and cdevs land
(backends/simulated/vfio.py), the answers come from ``FakeKernel``: a small
RECORDING TEST DOUBLE, not the simulator.  It answers like a 7.2 kernel on the
happy path (as the rig's Debian 7.2.13 kernel answered its probes:
backends/rig/guest/test_probe_iommufd.py, test_probe_type1.py) and returns
scripted errnos where a test asks.

Sources: QEMU's backends as named in backends/type1.py (hw/vfio/container-legacy.c
vfio_legacy_dma_map()) and backends/iommufd.py (backends/iommufd.c
iommufd_backend_map_dma(), iommufd_backend_map_file_dma()); the UAPI of
include/uapi/linux/vfio.h and iommufd.h; the container calls of
drivers/vfio/container.c and drivers/iommu/iommufd/vfio_compat.c.
"""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import uapi
from backends.base import (DmaRequest, ioas_map_file_request, ioas_map_request, ioas_unmap_request,
                           vfio_dma_map_request, vfio_dma_unmap_request)
from backends.errors import HostError
from backends.host import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from backends.iommufd import IommufdContainer, compat_container
from backends.simulated import SimHost
from backends.simulated.vfio import install
from backends.type1 import SetupError, Type1Container, describe, node_hint
from vmm_model.container import VFIOContainer, attach
from vmm_model.gallery import load
from vmm_model.machine import build_machine
from vmm_model.qemu_versions import get_qemu

U64_MAX = (1 << 64) - 1
GROUP, CDEV, DEVNODE = "/dev/vfio/1", "/dev/vfio/devices/vfio0", "/dev/vfio-device-fd (double)"
PGSIZES = 0x40201000                                      # 4K | 2M | 1G (VT-d)
RIG_RANGES = [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)]   # VT-d IOAPIC hole, 39-bit AW (qemu-vtd)
READ, WRITE = uapi.VFIO_DMA_MAP_FLAG_READ, uapi.VFIO_DMA_MAP_FLAG_WRITE
FIXED, R, W = uapi.IOMMU_IOAS_MAP_FIXED_IOVA, uapi.IOMMU_IOAS_MAP_READABLE, uapi.IOMMU_IOAS_MAP_WRITEABLE


def s32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


# ---- the recording test double -------------------------------------------------------

class FakeKernel:
    """RECORDING TEST DOUBLE for /dev/vfio/vfio, /dev/vfio/1, /dev/iommu and a cdev.

    ``script[name]`` is a FIFO of answers for ioctl ``name``: an int ret (the
    argument comes back unchanged), a (ret, out) pair, or ``callable(arg)``.
    Without a scripted answer it answers like the rig's 7.2.13 kernel."""

    def __init__(self, host: SimHost, *, extensions=(1, 3, 9), ranges=RIG_RANGES,
                 alignment=4096, nodes=("/dev/vfio/vfio", GROUP, "/dev/iommu", CDEV)):
        self.host, self.extensions, self.ranges, self.alignment = host, set(extensions), ranges, alignment
        self.script: dict[str, list] = {}
        self.opened: list[str] = []
        self.released: list[str] = []
        self.next_id = 1
        for path in nodes:
            host.register_chardev(path, self._factory(path))
        host.register_chardev(DEVNODE, self._factory(DEVNODE))

    def _factory(self, path):
        kernel = self

        class Open:
            def ioctl(self, request, arg):
                return kernel.ioctl(path, request, arg)

            def release(self):
                kernel.released.append(path)

        def make(host, file):
            self.opened.append(path)
            return Open()
        return make

    def fail(self, name: str, *answers) -> None:
        self.script.setdefault(name, []).extend(answers)

    def ioctl(self, path, request, arg):
        kind = "iommufd" if path == "/dev/iommu" else "group" if path == GROUP else \
            "device" if path == CDEV else "container"
        ioc = uapi.lookup_ioctl(request, kind)
        if ioc is None:
            return -errno.ENOTTY, (b"" if isinstance(arg, int) else arg)
        queue = self.script.get(ioc.name)
        if queue:
            a = queue.pop(0)
            if callable(a):
                return a(arg)
            return a if isinstance(a, tuple) else (a, b"" if isinstance(arg, int) else arg)
        return getattr(self, ioc.name, self._ok)(arg)

    def _ok(self, arg):
        return 0, (b"" if isinstance(arg, int) else arg)

    def _new_id(self):
        self.next_id += 1
        return self.next_id - 1

    # container (type1 and compat)
    def VFIO_GET_API_VERSION(self, arg):
        return uapi.VFIO_API_VERSION, b""

    def VFIO_CHECK_EXTENSION(self, arg):
        return int(arg in self.extensions), b""

    def VFIO_IOMMU_GET_INFO(self, arg):
        """vfio_iommu_type1_get_info(): caps only if argsz holds them, else argsz grows."""
        argsz = uapi.parse("vfio_iommu_type1_info", arg).argsz
        base = uapi.sizeof("vfio_iommu_type1_info")
        caps = uapi.build_cap_chain(base, [
            ("vfio_iommu_type1_info_cap_iova_range",
             {"iova_ranges": [{"start": s, "end": e} for s, e in self.ranges]}),
            ("vfio_iommu_type1_info_dma_avail", {"avail": 65535})])
        flags = uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
        if argsz < base + len(caps):
            info = uapi.build("vfio_iommu_type1_info", argsz=base + len(caps), flags=flags,
                              iova_pgsizes=PGSIZES)
            return 0, info + arg[base:]
        info = uapi.build("vfio_iommu_type1_info", argsz=argsz, flags=flags,
                          iova_pgsizes=PGSIZES, cap_offset=base)
        return 0, (info + caps).ljust(len(arg), b"\0")

    # group
    def VFIO_GROUP_GET_STATUS(self, arg):
        return 0, uapi.build("vfio_group_status", flags=uapi.VFIO_GROUP_FLAGS_VIABLE)

    def VFIO_GROUP_GET_DEVICE_FD(self, arg):
        return self.host.open(DEVNODE, os.O_RDWR), arg

    # iommufd
    def IOMMU_IOAS_ALLOC(self, arg):
        return 0, uapi.build("iommu_ioas_alloc", out_ioas_id=self._new_id())

    def IOMMU_IOAS_IOVA_RANGES(self, arg):
        """iommufd_ioas_iova_ranges(): EMSGSIZE with num_iovas = the count needed."""
        f = uapi.parse("iommu_ioas_iova_ranges", arg)
        n = min(f.num_iovas, len(self.ranges))
        raw = uapi.build_array("iommu_iova_range", [{"start": s, "last": e}
                                                    for s, e in self.ranges[:n]])
        if raw:
            assert self.host.write_mem(f.allowed_iovas, raw) == len(raw)
        out = uapi.build("iommu_ioas_iova_ranges", ioas_id=f.ioas_id, num_iovas=len(self.ranges),
                         allowed_iovas=f.allowed_iovas, out_iova_alignment=self.alignment)
        return (-errno.EMSGSIZE if f.num_iovas < len(self.ranges) else 0), out

    def VFIO_DEVICE_BIND_IOMMUFD(self, arg):
        f = uapi.parse("vfio_device_bind_iommufd", arg)
        return 0, uapi.build("vfio_device_bind_iommufd", iommufd=f.iommufd, out_devid=self._new_id())

    def VFIO_DEVICE_ATTACH_IOMMUFD_PT(self, arg):
        return 0, uapi.build("vfio_device_attach_iommufd_pt", pt_id=self._new_id())


class Trace(list):
    """Records every ioctl at the Host seam: (path of the fd, ioctl name, argument)."""

    def __init__(self, host: SimHost):
        super().__init__()
        real = host.ioctl

        def ioctl(fd, request, arg=0):
            file = host.fds.get(fd)
            path = file.inode.name if file else None
            kind = {"/dev/iommu": "iommufd", GROUP: "group", CDEV: "device"}.get(path, "container")
            self.append((path, uapi.ioctl_name(request, kind), arg))
            return real(fd, request, arg)
        host.ioctl = ioctl

    def names(self) -> list[str]:
        return [n for _, n, _ in self]


def _host(kind: str) -> SimHost:
    """"double": FakeKernel at the VFIO/iommufd nodes; "sim": the simulated 7.2
    kernel's (backends.simulated.vfio.install: type1 and iommufd)."""
    host = SimHost("7.2")
    host.scratch = []
    if kind == "double":
        host.kernel = FakeKernel(host)
    else:
        install(host)
        host.kernel = None                       # no scripting: the simulator answers
    host.trace = Trace(host)
    return host


def _check_clean(host: SimHost, start) -> None:
    for kind, a, b in host.scratch:             # the test's own guest RAM first
        host.munmap(a, b) if kind == "mmap" else host.close(a)
    assert (host.fds, host.mm.vmas) == start, "a client left an fd or a mapping behind"


@pytest.fixture
def sim():
    """A SimHost with the double at the VFIO/iommufd nodes; at the end the host
    must hold exactly the fds and VMAs it had before the test's clients."""
    host = _host("double")
    start = (dict(host.fds), list(host.mm.vmas))
    yield host
    _check_clean(host, start)


@pytest.fixture(params=["double", "sim"])
def kernel(request):
    """The same, answered by the double or by the simulated kernel: tests using it
    assert only the exact bytes sent and what any 7.2 kernel answers."""
    host = _host(request.param)
    start = (dict(host.fds), list(host.mm.vmas))
    yield host
    _check_clean(host, start)


def anon(host, size: int) -> int:
    """Populated anonymous memory (guest RAM), released by the fixture."""
    addr = host.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert addr > 0 and host.write_mem(addr, b"x" * size) == size
    host.scratch.append(("mmap", addr, size))
    return addr


def memfd(host, size: int) -> int:
    fd = host.memfd_create("guest-ram", 0)
    assert fd >= 0 and host.ftruncate(fd, size) == 0
    host.scratch.append(("fd", fd, 0))
    return fd


def clean(host: SimHost) -> bool:
    return not host.fds and not host.mm.vmas


def type1_setup_golden(cfd: int, container="/dev/vfio/vfio", info2=None):
    info_size = uapi.sizeof("vfio_iommu_type1_info")
    return [
        (container, "VFIO_GET_API_VERSION", 0),
        (container, "VFIO_CHECK_EXTENSION", uapi.VFIO_TYPE1v2_IOMMU),
        (GROUP, "VFIO_GROUP_GET_STATUS", uapi.build("vfio_group_status", argsz=8)),
        (GROUP, "VFIO_GROUP_SET_CONTAINER", s32(cfd)),
        (container, "VFIO_SET_IOMMU", uapi.VFIO_TYPE1v2_IOMMU),
        (container, "VFIO_IOMMU_GET_INFO", uapi.build("vfio_iommu_type1_info", argsz=info_size)),
        (container, "VFIO_IOMMU_GET_INFO", info2),
        (container, "VFIO_CHECK_EXTENSION", uapi.VFIO_UNMAP_ALL),
    ]


# ---- type1 ---------------------------------------------------------------------------

def test_type1_setup_exact_calls_and_info(kernel):
    """vfio_create_container/vfio_set_iommu/vfio_legacy_setup (container-legacy.c)."""
    with Type1Container(kernel, 1) as c:
        assert c.name == "type1"
        grown = uapi.parse("vfio_iommu_type1_info", kernel.trace[6][2]).argsz
        assert grown > uapi.sizeof("vfio_iommu_type1_info")
        info2 = uapi.build("vfio_iommu_type1_info", argsz=grown).ljust(grown, b"\0")
        assert kernel.trace == type1_setup_golden(c.fd, info2=info2)
        assert c.unmap_all_supported and c.pgsizes & kernel.page_size and c.iova_ranges
        if kernel.kernel:
            assert kernel.kernel.opened == ["/dev/vfio/vfio", GROUP]
            assert (c.pgsizes, c.iova_ranges, c.dma_avail) == (PGSIZES, RIG_RANGES, 65535)
            assert c.info.iova_pgsizes == PGSIZES


def test_type1_map_unmap_exact_bytes(kernel):
    """vfio_legacy_dma_map(): READ, plus WRITE unless readonly; unmap_one: flags 0."""
    buf = anon(kernel, 0x5000)
    with Type1Container(kernel, 1) as c:
        del kernel.trace[:]
        rw = c.dma_map(0x100000, 0x4000, buf, False)
        ro = c.dma_map(0x200000, 0x1000, buf + 0x4000, True)
        un = c.dma_unmap(0x100000, 0x4000)
        assert kernel.trace == [
            ("/dev/vfio/vfio", "VFIO_IOMMU_MAP_DMA", uapi.build(
                "vfio_iommu_type1_dma_map", flags=READ | WRITE, vaddr=buf, iova=0x100000,
                size=0x4000)),
            ("/dev/vfio/vfio", "VFIO_IOMMU_MAP_DMA", uapi.build(
                "vfio_iommu_type1_dma_map", flags=READ, vaddr=buf + 0x4000, iova=0x200000,
                size=0x1000)),
            ("/dev/vfio/vfio", "VFIO_IOMMU_UNMAP_DMA", uapi.build(
                "vfio_iommu_type1_dma_unmap", iova=0x100000, size=0x4000))]
        assert [r.ret for r in (rw, ro, un)] == [0, 0, 0]
        assert rw.request.fields["flags"] == READ | WRITE and ro.request.flag_names() == "READ"
        assert un.request.data == kernel.trace[2][2]
        assert uapi.parse("vfio_iommu_type1_dma_unmap", un.out).size == 0x4000   # bytes unmapped
        assert describe(rw) == (f"= 0 (VFIO_IOMMU_MAP_DMA iova=0x100000 size=0x4000 "
                                f"vaddr={buf:#x} flags=READ|WRITE)")


@pytest.mark.parametrize("err,text", [(errno.EFAULT, "Bad address"), (errno.ENOMEM, "Cannot allocate memory"),
                                      (errno.EEXIST, "File exists")])
def test_type1_map_failure_is_a_result(sim, err, text):
    with Type1Container(sim, 1) as c:
        sim.kernel.fail("VFIO_IOMMU_MAP_DMA", -err)
        r = c.dma_map(0x100000, 0x4000, 0x7F0000000000, False)
        assert (r.ret, r.errno_name, r.note) == (-err, errno.errorcode[err], f"VFIO_MAP_DMA failed: {text}")
        assert r.request.ioctl == "VFIO_IOMMU_MAP_DMA" and r.request.fields["iova"] == 0x100000
        assert describe(r) == (f"VFIO_MAP_DMA failed: {text} [{errno.errorcode[err]}] (VFIO_IOMMU_MAP_DMA "
                               "iova=0x100000 size=0x4000 vaddr=0x7f0000000000 flags=READ|WRITE)")
        assert sim.trace.names()[-1] == "VFIO_IOMMU_MAP_DMA"     # no retry except on EBUSY


def test_type1_ebusy_unmaps_and_retries_once(sim):
    """vfio_legacy_dma_map(): EBUSY -> vfio_legacy_dma_unmap(iova, size) -> map again."""
    with Type1Container(sim, 1) as c:
        del sim.trace[:]
        sim.kernel.fail("VFIO_IOMMU_MAP_DMA", -errno.EBUSY)
        r = c.dma_map(0xC0000, 0x20000, 0x7F0000000000, True)
        m = uapi.build("vfio_iommu_type1_dma_map", flags=READ, vaddr=0x7F0000000000, iova=0xC0000,
                       size=0x20000)
        u = uapi.build("vfio_iommu_type1_dma_unmap", iova=0xC0000, size=0x20000)
        assert [(n, a) for _, n, a in sim.trace] == [
            ("VFIO_IOMMU_MAP_DMA", m), ("VFIO_IOMMU_UNMAP_DMA", u), ("VFIO_IOMMU_MAP_DMA", m)]
        assert r.ret == 0 and "retried" in r.note


def test_type1_ebusy_returns_the_last_errno(sim):
    """QEMU returns -errno of the last failing call: the unmap's, or the retry's."""
    with Type1Container(sim, 1) as c:
        sim.kernel.fail("VFIO_IOMMU_MAP_DMA", -errno.EBUSY)
        sim.kernel.fail("VFIO_IOMMU_UNMAP_DMA", -errno.EINVAL)
        r = c.dma_map(0xC0000, 0x20000, 0x7F0000000000, False)
        assert r.ret == -errno.EINVAL and r.request.ioctl == "VFIO_IOMMU_MAP_DMA"
        assert sim.trace.names()[-2:] == ["VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"]
        sim.kernel.fail("VFIO_IOMMU_MAP_DMA", -errno.EBUSY, -errno.EBUSY)
        r = c.dma_map(0xC0000, 0x20000, 0x7F0000000000, False)
        assert (r.ret, r.note) == (-errno.EBUSY, "VFIO_MAP_DMA failed: Device or resource busy")


def test_type1_cpr_incoming_maps_vaddr_only_without_retry(sim):
    """vfio_legacy_cpr_dma_map() (cpr-legacy.c, 10.1+): VFIO_DMA_MAP_FLAG_VADDR only."""
    with Type1Container(sim, 1) as c:
        c.cpr_incoming = True
        sim.kernel.fail("VFIO_IOMMU_MAP_DMA", -errno.EBUSY)
        n = len(sim.trace)
        r = c.dma_map(0x100000, 0x4000, 0x7F0000000000, False)
        assert sim.trace[n:] == [("/dev/vfio/vfio", "VFIO_IOMMU_MAP_DMA", uapi.build(
            "vfio_iommu_type1_dma_map", flags=uapi.VFIO_DMA_MAP_FLAG_VADDR, vaddr=0x7F0000000000,
            iova=0x100000, size=0x4000))]
        assert r.ret == -errno.EBUSY
        c.cpr_incoming = False


def test_type1_unmap_all_flag_or_halves():
    """vfio_legacy_dma_unmap(): FLAG_ALL iff CHECK_EXTENSION(VFIO_UNMAP_ALL), else
    [0, 2^63) then [2^63, 2^64)."""
    for exts, want in [((3, 9), [uapi.build("vfio_iommu_type1_dma_unmap",
                                            flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL)]),
                       ((3,), [uapi.build("vfio_iommu_type1_dma_unmap", iova=0, size=1 << 63),
                               uapi.build("vfio_iommu_type1_dma_unmap", iova=1 << 63, size=1 << 63)])]:
        host = SimHost("7.2")
        FakeKernel(host, extensions=exts)
        trace = Trace(host)
        with Type1Container(host, 1) as c:
            n = len(trace)
            assert c.dma_unmap(0, 0, unmap_all=True).ret == 0
            assert [a for _, name, a in trace[n:]] == want
        assert clean(host)


def test_type1_unmap_all_halves_stop_at_the_first_failure(sim):
    sim.kernel.extensions.discard(uapi.VFIO_UNMAP_ALL)
    with Type1Container(sim, 1) as c:
        sim.kernel.fail("VFIO_IOMMU_UNMAP_DMA", -errno.EINVAL)
        n = len(sim.trace)
        r = c.dma_unmap(0, 0, unmap_all=True)
        assert r.ret == -errno.EINVAL and r.note == "VFIO_UNMAP_DMA failed: Invalid argument"
        assert sim.trace.names()[n:] == ["VFIO_IOMMU_UNMAP_DMA"]


def test_type1_close_unmaps_unsets_and_closes(kernel):
    """vfio_disconnect_container(): every mapping, the container and both fds go."""
    buf = anon(kernel, 0x4000)
    with Type1Container(kernel, 1) as c:
        assert c.dma_map(0x100000, 0x4000, buf, False).ret == 0
        n = len(kernel.trace)
        c.close()
        assert kernel.trace[n:] == [
            ("/dev/vfio/vfio", "VFIO_IOMMU_UNMAP_DMA", uapi.build(
                "vfio_iommu_type1_dma_unmap", flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL)),
            (GROUP, "VFIO_GROUP_UNSET_CONTAINER", 0)]
        assert c.fd == c.group_fd == -1 and c.teardown == []
        if kernel.kernel:
            assert kernel.kernel.released == [GROUP, "/dev/vfio/vfio"]
        c.close()                                               # idempotent
        assert len(kernel.trace) == n + 2


def test_type1_close_keeps_going_after_failures(sim):
    with Type1Container(sim, 1) as c:
        sim.kernel.fail("VFIO_IOMMU_UNMAP_DMA", -errno.EINVAL)
        sim.kernel.fail("VFIO_GROUP_UNSET_CONTAINER", -errno.EBUSY)
    assert len(c.teardown) == 2 and "EINVAL" in c.teardown[0] and "EBUSY" in c.teardown[1]


def test_type1_v1(kernel):
    """iommu_type=VFIO_TYPE1_IOMMU: the same calls with 1 as the extension and type."""
    with Type1Container(kernel, 1, iommu_type=uapi.VFIO_TYPE1_IOMMU) as c:
        sets = [(n, a) for _, n, a in kernel.trace if n in ("VFIO_SET_IOMMU", "VFIO_CHECK_EXTENSION")]
        assert sets == [("VFIO_CHECK_EXTENSION", uapi.VFIO_TYPE1_IOMMU),
                        ("VFIO_SET_IOMMU", uapi.VFIO_TYPE1_IOMMU),
                        ("VFIO_CHECK_EXTENSION", uapi.VFIO_UNMAP_ALL)]
        assert c.iommu_type == uapi.VFIO_TYPE1_IOMMU


def test_type1_get_info_without_caps_or_pgsizes(sim):
    """vfio_legacy_setup(): no PGSIZES flag -> the host page size; no DMA_AVAIL cap ->
    dma_avail None (QEMU then assumes 65535); no IOVA_RANGE cap -> no ranges."""
    sim.kernel.fail("VFIO_IOMMU_GET_INFO", (0, uapi.build("vfio_iommu_type1_info", argsz=24)))
    with Type1Container(sim, 1) as c:
        assert (c.pgsizes, c.iova_ranges, c.dma_avail) == (sim.page_size, [], None)
        assert sim.trace.names().count("VFIO_IOMMU_GET_INFO") == 1


@pytest.mark.parametrize("make", [lambda h: Type1Container(h, 1), lambda h: IommufdContainer(h),
                                  lambda h: compat_container(h, 1)], ids=["type1", "iommufd", "compat"])
def test_cleanup_when_the_with_body_raises(sim, make):
    with pytest.raises(KeyboardInterrupt):
        with make(sim) as c:
            c.dma_map(0x100000, 0x1000, 0x7F0000000000, False)
            raise KeyboardInterrupt
    assert sim.trace.names()[-1] in ("VFIO_GROUP_UNSET_CONTAINER", "IOMMU_DESTROY")


def test_type1_get_device_fd(kernel):
    """VFIO_GROUP_GET_DEVICE_FD: NUL-terminated name in, the fd as the return value."""
    with Type1Container(kernel, 1) as c:
        fd = c.get_device_fd("0000:00:01.0")
        assert kernel.trace[-1] == (GROUP, "VFIO_GROUP_GET_DEVICE_FD", b"0000:00:01.0\0")
        assert fd in kernel.fds and c.device_fds == [fd]
    assert fd not in kernel.fds


def test_type1_get_device_fd_failure(sim):
    with Type1Container(sim, 1) as c:
        sim.kernel.fail("VFIO_GROUP_GET_DEVICE_FD", -errno.EBUSY)
        with pytest.raises(SetupError) as e:
            c.get_device_fd("0000:00:02.0")
        assert str(e.value) == (
            "/dev/vfio/1: VFIO_GROUP_GET_DEVICE_FD(0000:00:02.0): error getting device from group 1: "
            "Device or resource busy [EBUSY]; Verify all devices in group 1 are bound to vfio-<bus> "
            "or pci-stub and not already in use")
        assert c.device_fds == []


SETUP_FAILURES = [
    # (what fails, answer, message fragments, calls made after the failure)
    ("VFIO_GET_API_VERSION", 1, ["supported vfio version: 0, reported version: 1"], []),
    ("VFIO_CHECK_EXTENSION", 0, ["VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)", "No available IOMMU models",
                                 "vfio_iommu_type1"], []),
    ("VFIO_GROUP_GET_STATUS", (0, uapi.build("vfio_group_status", flags=0)),
     ["group 1 is not viable", "bound to their vfio bus driver"], []),
    ("VFIO_GROUP_GET_STATUS", -errno.EFAULT, ["failed to get group status: Bad address [EFAULT]"], []),
    ("VFIO_GROUP_SET_CONTAINER", -errno.EPERM, ["Failed to set group container", "[EPERM]"], []),
    ("VFIO_SET_IOMMU", -errno.ENODEV, ["VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)",
                                       "Failed to set iommu for container: No such device [ENODEV]"],
     ["VFIO_GROUP_UNSET_CONTAINER"]),
    ("VFIO_IOMMU_GET_INFO", -errno.EINVAL, ["Failed to get VFIO IOMMU info", "[EINVAL]"],
     ["VFIO_GROUP_UNSET_CONTAINER"]),
]


@pytest.mark.parametrize("name,answer,texts,after", SETUP_FAILURES,
                         ids=[f"{f[0]}-{i}" for i, f in enumerate(SETUP_FAILURES)])
def test_type1_setup_failure_is_one_line_and_undone(sim, name, answer, texts, after):
    sim.kernel.fail(name, answer)
    with pytest.raises(SetupError) as e:
        Type1Container(sim, 1)
    msg = str(e.value)
    assert "\n" not in msg and all(t in msg for t in texts), msg
    assert isinstance(e.value, HostError) and e.value.call.startswith(name)
    i = max(i for i, n in enumerate(sim.trace.names()) if n == name)
    assert sim.trace.names()[i + 1:] == after          # then the fixture checks fds/VMAs


@pytest.mark.parametrize("path,group,frag", [
    ("/dev/vfio/vfio", 1, "modprobe vfio_iommu_type1"),
    (GROUP, 7, "bind every device of the IOMMU group to vfio-pci")])
def test_type1_missing_node(path, group, frag):
    host = SimHost("7.2")
    FakeKernel(host, nodes=["/dev/vfio/vfio"] if path == GROUP else [GROUP])
    with pytest.raises(SetupError) as e:
        Type1Container(host, group)
    want = "/dev/vfio/7" if path == GROUP else path
    assert str(e.value).startswith(f"{want}: open: No such file or directory [ENOENT]; ")
    assert frag in str(e.value) and e.value.ret == -errno.ENOENT
    assert clean(host)


def test_compat_is_type1_on_dev_iommu(kernel):
    """VFIO compat: the group takes the iommufd fd (drivers/iommu/iommufd/vfio_compat.c)."""
    buf = anon(kernel, 0x1000)
    with compat_container(kernel, 1) as c:
        assert c.name == "compat" and c.container_path == "/dev/iommu"
        grown = uapi.parse("vfio_iommu_type1_info", kernel.trace[6][2]).argsz
        info2 = uapi.build("vfio_iommu_type1_info", argsz=grown).ljust(grown, b"\0")
        assert kernel.trace == type1_setup_golden(c.fd, "/dev/iommu", info2)
        assert c.dma_map(0x100000, 0x1000, buf, False).ret == 0
        assert kernel.trace[-1][:2] == ("/dev/iommu", "VFIO_IOMMU_MAP_DMA")
        assert c.dma_map_file is None                 # QEMU: only iommufd has dma_map_file


def test_compat_set_container_refused(sim):
    sim.kernel.fail("VFIO_GROUP_SET_CONTAINER", -errno.EINVAL)
    with pytest.raises(SetupError) as e:
        compat_container(sim, 1)
    assert "CONFIG_IOMMUFD" in str(e.value) and str(e.value).startswith(GROUP)


# ---- iommufd -------------------------------------------------------------------------

def ranges_golden(ioas_id, num, addr):
    return ("/dev/iommu", "IOMMU_IOAS_IOVA_RANGES", uapi.build(
        "iommu_ioas_iova_ranges", ioas_id=ioas_id, num_iovas=num, allowed_iovas=addr))


def test_iommufd_setup_exact_calls(kernel):
    """iommufd_backend_connect/alloc_ioas + iommufd_cdev_get_info_iova_range()."""
    with IommufdContainer(kernel) as c:
        addr = uapi.parse("iommu_ioas_iova_ranges", kernel.trace[1][2]).allowed_iovas
        assert kernel.trace == [
            ("/dev/iommu", "IOMMU_IOAS_ALLOC", uapi.build("iommu_ioas_alloc")),
            ranges_golden(c.ioas_id, kernel.page_size // uapi.sizeof("iommu_iova_range"), addr)]
        assert c.name == "iommufd" and c.ioas_id >= 1 and c.iova_ranges
        assert c.pgsizes == c.out_iova_alignment and c.dma_map_file is not None
        assert not kernel.mm.vmas                              # the scratch buffer is gone
        if kernel.kernel:
            assert (c.ioas_id, c.iova_ranges, c.pgsizes) == (1, RIG_RANGES, 4096)


def test_iommufd_iova_ranges_grow_on_emsgsize(sim):
    many = [(i << 32, (i << 32) + 0xFFFF) for i in range(300)]
    sim.kernel.ranges = many
    with IommufdContainer(sim) as c:
        first, second = sim.trace[1][2], sim.trace[2][2]
        assert uapi.parse("iommu_ioas_iova_ranges", first).num_iovas == 256
        assert uapi.parse("iommu_ioas_iova_ranges", second).num_iovas == 300
        assert c.iova_ranges == many
        assert not sim.mm.vmas


def test_iommufd_iova_ranges_failure_warns_and_falls_back(sim):
    """QEMU: warn "Cannot get IOVA ranges" + "Fallback to default 64bit IOVA range and 4K page size"."""
    sim.kernel.alignment = 1 << 21
    sim.kernel.fail("IOMMU_IOAS_IOVA_RANGES", -errno.EOPNOTSUPP)
    with IommufdContainer(sim) as c:
        assert c.pgsizes == sim.page_size and c.iova_ranges == []
        (w,) = c.warnings
        assert "Cannot get IOVA ranges" in w and "Operation not supported" in w
        assert not sim.mm.vmas


def test_iommufd_map_map_file_unmap_exact_bytes(kernel):
    """iommufd_backend_map_dma/_map_file_dma/_unmap_dma (backends/iommufd.c)."""
    buf = anon(kernel, 0x5000)
    mfd = memfd(kernel, 0x201000)
    with IommufdContainer(kernel) as c:
        del kernel.trace[:]
        i = c.ioas_id
        rs = [c.dma_map(0x100000, 0x4000, buf, False),
              c.dma_map(0x200000, 0x1000, buf + 0x4000, True),
              c.dma_map_file(0x400000, 0x200000, mfd, 0x1000, False),
              c.dma_map_file(0x800000, 0x1000, mfd, 0, True),
              c.dma_unmap(0x100000, 0x4000),
              c.dma_unmap(0, 0, unmap_all=True)]
        assert [(n, a) for _, n, a in kernel.trace] == [
            ("IOMMU_IOAS_MAP", uapi.build("iommu_ioas_map", flags=FIXED | R | W, ioas_id=i,
                                          user_va=buf, length=0x4000, iova=0x100000)),
            ("IOMMU_IOAS_MAP", uapi.build("iommu_ioas_map", flags=FIXED | R, ioas_id=i,
                                          user_va=buf + 0x4000, length=0x1000, iova=0x200000)),
            ("IOMMU_IOAS_MAP_FILE", uapi.build("iommu_ioas_map_file", flags=FIXED | R | W, ioas_id=i,
                                               fd=mfd, start=0x1000, length=0x200000, iova=0x400000)),
            ("IOMMU_IOAS_MAP_FILE", uapi.build("iommu_ioas_map_file", flags=FIXED | R, ioas_id=i,
                                               fd=mfd, start=0, length=0x1000, iova=0x800000)),
            ("IOMMU_IOAS_UNMAP", uapi.build("iommu_ioas_unmap", ioas_id=i, iova=0x100000, length=0x4000)),
            ("IOMMU_IOAS_UNMAP", uapi.build("iommu_ioas_unmap", ioas_id=i, iova=0, length=U64_MAX))]
        assert [r.ret for r in rs] == [0] * 6 and all(not r.warnings for r in rs)
        assert rs[0].request == ioas_map_request(i, 0x100000, 0x4000, buf, False)
        assert uapi.parse("iommu_ioas_unmap", rs[4].out).length == 0x4000
        if not kernel.kernel:                   # the simulator reports what was left
            assert uapi.parse("iommu_ioas_unmap", rs[5].out).length == 0x1000 + 0x200000 + 0x1000


@pytest.mark.parametrize("hook", ["dma_map", "dma_map_file"])
def test_iommufd_efault_warns_pci_bar(sim, hook):
    """warn_report("IOMMU_IOAS_MAP failed: %m, PCI BAR?") on EFAULT only."""
    name = {"dma_map": "IOMMU_IOAS_MAP", "dma_map_file": "IOMMU_IOAS_MAP_FILE"}[hook]
    with IommufdContainer(sim) as c:
        sim.kernel.fail(name, -errno.EFAULT, -errno.EINVAL)
        r = getattr(c, hook)(0xF0000000, 0x1000, 0x7F0000000000 if hook == "dma_map" else 5,
                             *([False] if hook == "dma_map" else [0, False]))
        assert (r.ret, r.errno_name) == (-errno.EFAULT, "EFAULT")
        assert r.warnings == [f"{name} failed: Bad address, PCI BAR?"]
        assert r.request.ioctl == name and r.request.fields["iova"] == 0xF0000000
        r = getattr(c, hook)(0xF0000000, 0x1000, 0x7F0000000000 if hook == "dma_map" else 5,
                             *([False] if hook == "dma_map" else [0, False]))
        assert (r.ret, r.warnings, r.note) == (-errno.EINVAL, [], f"{name} failed: Invalid argument")


def test_iommufd_map_file_on_a_kernel_without_it(sim):
    """Before 6.13 IOMMU_IOAS_MAP_FILE is unknown: ENOTTY comes back as the result."""
    with IommufdContainer(sim) as c:
        sim.kernel.fail("IOMMU_IOAS_MAP_FILE", -errno.ENOTTY)
        r = c.dma_map_file(0x100000, 0x1000, 5, 0, False)
        assert (r.ret, r.errno_name, r.warnings) == (-errno.ENOTTY, "ENOTTY", [])


def test_iommufd_unmap_enoent_is_success(sim):
    """iommufd_backend_unmap_dma(): "treat them as succeess ... just like legacy backend"."""
    with IommufdContainer(sim) as c:
        sim.kernel.fail("IOMMU_IOAS_UNMAP", -errno.ENOENT, -errno.EINVAL)
        r = c.dma_unmap(0x100000, 0x1000)
        assert r.ret == 0 and "ENOENT" in r.note and r.request.ioctl == "IOMMU_IOAS_UNMAP"
        r = c.dma_unmap(0x100000, 0)
        assert (r.ret, r.note) == (-errno.EINVAL, "IOMMU_IOAS_UNMAP failed: Invalid argument")


def test_iommufd_cpr_incoming(sim):
    """map_file_dma / unmap_dma return 0 without an ioctl; map_dma has no short-circuit."""
    with IommufdContainer(sim) as c:
        c.cpr_incoming = True
        n = len(sim.trace)
        assert c.dma_map_file(0x100000, 0x1000, 5, 0, False).request is None
        assert c.dma_unmap(0x100000, 0x1000).request is None
        assert len(sim.trace) == n
        assert c.dma_map(0x100000, 0x1000, 0x7F0000000000, False).ret == 0
        assert sim.trace.names()[n:] == ["IOMMU_IOAS_MAP"]
        c.cpr_incoming = False


def test_iommufd_attach_device(kernel):
    """BIND_IOMMUFD (-> devid) then ATTACH_IOMMUFD_PT(pt_id = IOAS) -> the hwpt id
    (as on the rig: backends/rig/guest/test_probe_iommufd.py test_4b_bind_and_attach)."""
    with IommufdContainer(kernel) as c:
        n = len(kernel.trace)
        devid, hwpt = c.attach_device(CDEV)
        dfd = c.devices[0][1]
        addr = uapi.parse("iommu_ioas_iova_ranges", kernel.trace[n + 2][2]).allowed_iovas
        assert kernel.trace[n:n + 3] == [
            (CDEV, "VFIO_DEVICE_BIND_IOMMUFD", uapi.build("vfio_device_bind_iommufd", iommufd=c.fd)),
            (CDEV, "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
             uapi.build("vfio_device_attach_iommufd_pt", pt_id=c.ioas_id)),
            ranges_golden(c.ioas_id, 256, addr)]
        assert c.devices == [(CDEV, dfd, devid, hwpt)] and len({c.ioas_id, devid, hwpt}) == 3
        assert c.pgsizes == c.out_iova_alignment >= kernel.page_size     # a domain now
        if kernel.kernel:
            assert (devid, hwpt) == (2, 3)
    if kernel.kernel:
        assert kernel.kernel.released.count(CDEV) == 1


@pytest.mark.parametrize("name,text", [
    ("VFIO_DEVICE_BIND_IOMMUFD", "error bind device fd={dfd} to iommufd={fd}: Operation not permitted"),
    ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "[iommufd={fd}] error attach /dev/vfio/devices/vfio0 ({dfd}) to "
                                      "id=1: Operation not permitted")])
def test_iommufd_attach_failure_closes_the_cdev(sim, name, text):
    with IommufdContainer(sim) as c:
        fds = dict(sim.fds)
        sim.kernel.fail(name, -errno.EPERM)
        with pytest.raises(SetupError) as e:
            c.attach_device(CDEV)
        dfd = min(set(range(3, 64)) - set(fds))
        assert str(e.value) == f"{CDEV}: {name}: " + text.format(dfd=dfd, fd=c.fd) + " [EPERM]"
        assert e.value.result.request.ioctl == name
        assert sim.fds == fds and c.devices == []
        assert c.dma_map(0x100000, 0x1000, 0x7F0000000000, False).ret == 0   # still usable


def test_iommufd_attach_missing_cdev(sim):
    with IommufdContainer(sim) as c:
        with pytest.raises(SetupError) as e:
            c.attach_device("/dev/vfio/devices/vfio9")
        assert "CONFIG_VFIO_DEVICE_CDEV" in str(e.value) and "[ENOENT]" in str(e.value)


def test_iommufd_close_detaches_unmaps_destroys(sim):
    with IommufdContainer(sim) as c:
        c.attach_device(CDEV)
        c.dma_map(0x100000, 0x4000, 0x7F0000000000, False)
        n = len(sim.trace)
        c.close()
        assert sim.trace[n:] == [
            ("/dev/iommu", "IOMMU_IOAS_UNMAP", uapi.build("iommu_ioas_unmap", ioas_id=1, iova=0,
                                                          length=U64_MAX)),
            ("/dev/iommu", "IOMMU_DESTROY", uapi.build("iommu_destroy", id=1))]
        assert sim.kernel.released == [CDEV, "/dev/iommu"]    # the cdev first: it unbinds
        c.close()
        assert len(sim.trace) == n + 2 and c.ioas_id == 0
        r = c.dma_map(0x100000, 0x1000, 0x7F0000000000, False)  # used after close: EBADF
        assert (r.ret, r.request.fields["ioas_id"]) == (-errno.EBADF, 0)


def test_iommufd_close_failures_are_kept(sim):
    with IommufdContainer(sim) as c:
        sim.kernel.fail("IOMMU_IOAS_UNMAP", -errno.EBUSY)
        sim.kernel.fail("IOMMU_DESTROY", -errno.EBUSY)
    assert "IOMMU_IOAS_UNMAP failed" in c.teardown[0]
    assert c.teardown[1] == "Failed to free id: 1 Device or resource busy [EBUSY]"


def test_iommufd_setup_failures(sim):
    sim.kernel.fail("IOMMU_IOAS_ALLOC", -errno.ENOMEM)
    with pytest.raises(SetupError) as e:
        IommufdContainer(sim)
    assert str(e.value) == ("/dev/iommu: IOMMU_IOAS_ALLOC: Failed to allocate ioas: "
                            "Cannot allocate memory [ENOMEM]")
    assert sim.kernel.released == ["/dev/iommu"]
    host = SimHost("7.2")
    with pytest.raises(SetupError) as e:
        IommufdContainer(host)
    assert str(e.value) == ("/dev/iommu: open: No such file or directory [ENOENT]; load the iommufd "
                            "module (modprobe iommufd; kernel 6.2+ with CONFIG_IOMMUFD)")
    assert clean(host)


def test_setup_error_when_the_scratch_mmap_fails(sim, monkeypatch):
    monkeypatch.setattr(sim, "mmap", lambda *a, **k: -errno.ENOMEM)
    with IommufdContainer(sim) as c:
        assert "mmap of the allowed_iovas buffer failed" in c.warnings[0]


def test_permission_hint():
    assert node_hint("/dev/vfio/vfio", -errno.EACCES).startswith("permission: run as root")
    assert "already open" in node_hint("/dev/vfio/3", -errno.EBUSY)


# ---- both, through QEMU's container -----------------------------------------------------

@pytest.mark.parametrize("backend", ["type1", "iommufd", "compat"])
def test_vfio_container_uses_the_clients_unchanged(sim, backend):
    """vmm_model.container.VFIOContainer replays a gallery VM through a real client."""
    opts = {} if backend == "iommufd" else {"group": 1}
    qemu = get_qemu("10.1")
    clients = {"type1": Type1Container, "iommufd": IommufdContainer, "compat": compat_container}
    with clients[backend](sim, **opts) as client:
        c = attach(build_machine(load("s02"), qemu), VFIOContainer(client, qemu))
        maps = [ev for ev in c.events if ev.kind == "map"]
        assert maps and all(ev.result.ret == 0 for ev in maps) and c.error is None
        want = "IOMMU_IOAS_MAP" if backend == "iommufd" else "VFIO_IOMMU_MAP_DMA"
        assert {ev.result.request.ioctl for ev in maps} == {want}
        assert sum(n == want for n in sim.trace.names()) == len(maps)


def test_vfio_container_sees_kernel_errors(sim):
    qemu = get_qemu("10.1")
    with IommufdContainer(sim) as client:
        sim.kernel.fail("IOMMU_IOAS_MAP", -errno.EFAULT)
        c = attach(build_machine(load("s02"), qemu), VFIOContainer(client, qemu))
        assert c.error and "= -14 (Bad address)" in c.error


# ---- this machine (LinuxHost): no /dev/vfio, no /dev/iommu ----------------------------

@pytest.mark.skipif(os.path.exists("/dev/vfio/vfio"), reason="this host has VFIO")
def test_linux_type1_without_vfio_is_one_line(linux_hosts):
    host = linux_hosts()
    with pytest.raises(SetupError) as e:
        Type1Container(host, 1)
    assert str(e.value) == ("/dev/vfio/vfio: open: No such file or directory [ENOENT]; load the vfio "
                            "and vfio_iommu_type1 modules (modprobe vfio_iommu_type1; kernel "
                            "CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1)")
    assert not host._fds


@pytest.mark.skipif(os.path.exists("/dev/iommu"), reason="this host has iommufd")
def test_linux_iommufd_without_dev_iommu_is_one_line(linux_hosts):
    host = linux_hosts()
    for make in (lambda: IommufdContainer(host), lambda: compat_container(host, 1)):
        with pytest.raises(SetupError) as e:
            make()
        assert str(e.value).startswith("/dev/iommu: open: No such file or directory [ENOENT]; "
                                       "load the iommufd module")
    assert not host._fds


def test_linux_scratch_buffer_round_trip(linux_hosts):
    """The allowed_iovas path on real memory: mmap(anonymous) + write/read_mem + munmap."""
    host = linux_hosts()
    addr = host.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    raw = uapi.build_array("iommu_iova_range", [{"start": s, "last": e} for s, e in RIG_RANGES])
    assert host.write_mem(addr, raw) == len(raw)
    assert host.read_mem(addr, len(raw)) == (len(raw), raw)
    assert host.munmap(addr, 4096) == 0


def test_request_fields_decode_the_exact_bytes(sim):
    with Type1Container(sim, 1) as c:
        r = c.dma_map(0x1000, 0x2000, 0x3000, True)
        assert r.request == DmaRequest("VFIO_IOMMU_MAP_DMA", sim.trace[-1][2])
        assert r.request.fields == {"argsz": 32, "flags": READ, "vaddr": 0x3000, "iova": 0x1000,
                                    "size": 0x2000}


# ---- the hot path sends exactly the builders' bytes -------------------------------------

u64 = st.integers(0, U64_MAX)


@settings(max_examples=200, deadline=None)
@given(iova=u64, size=u64, vaddr=u64, ro=st.booleans(), fd=st.integers(-1, 1 << 20))
def test_hot_path_bytes_equal_the_request_builders(iova, size, vaddr, ro, fd):
    """backends/base.py decides flags and fields; the clients pack with codecs for speed
    and must produce the very same bytes (golden = the builders)."""
    host = SimHost("7.2")
    FakeKernel(host)
    trace = Trace(host)
    with Type1Container(host, 1) as t, IommufdContainer(host) as i:
        n = len(trace)
        t.dma_map(iova, size, vaddr, ro)
        t.dma_unmap(iova, size)
        i.dma_map(iova, size, vaddr, ro)
        i.dma_map_file(iova, size, fd, vaddr, ro)
        i.dma_unmap(iova, size)
        assert [a for _, _, a in trace[n:]] == [
            vfio_dma_map_request(iova, size, vaddr, ro).data,
            vfio_dma_unmap_request(iova, size).data,
            ioas_map_request(i.ioas_id, iova, size, vaddr, ro).data,
            ioas_map_file_request(i.ioas_id, iova, size, fd, vaddr, ro).data,
            ioas_unmap_request(i.ioas_id, iova, size).data]


def test_success_results_build_their_request_on_demand(sim):
    with IommufdContainer(sim) as c:
        r = c.dma_map(0x100000, 0x1000, 0x7F0000000000, True)
        assert (r.ret, r.note, r.warnings, r.errno_name) == (0, "", [], "")
        assert r.request is r.request and r.request.flag_names() == "FIXED_IOVA|READABLE"
        assert repr(r).startswith("DmaResult(0, DmaRequest(IOMMU_IOAS_MAP, ")
        with pytest.raises(AttributeError):
            r.nothing
