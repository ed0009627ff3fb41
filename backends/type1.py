"""VFIO type1 container client: QEMU's legacy backend on any ``Host``.

QEMU: hw/vfio/container-legacy.c @ master (<= 10.1: hw/vfio/container.c:
vfio_legacy_dma_map(), vfio_legacy_dma_unmap()).  Kernel: drivers/vfio/container.c,
drivers/vfio/vfio_iommu_type1.c, and the VFIO compat layer of iommufd
(drivers/iommu/iommufd/vfio_compat.c) when the container is ``/dev/iommu``.

    with Type1Container(host, group=1) as c:          # /dev/vfio/vfio + /dev/vfio/1
        r = c.dma_map(0x100000, 0x4000, vaddr, readonly=False)
        if r.ret: print(describe(r))                  # VFIO_MAP_DMA failed: Bad address [EFAULT] ...

Setup (``vfio_create_container``/``vfio_set_iommu``/``vfio_legacy_setup``): open
the container, VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION(iommu_type), open the
group, VFIO_GROUP_GET_STATUS (viable), VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU,
VFIO_IOMMU_GET_INFO (argsz grow-and-retry, cap chain), VFIO_CHECK_EXTENSION
(VFIO_UNMAP_ALL).  A setup failure raises ``SetupError`` (a ``HostError``) after
undoing what was done; kernel refusals of map/unmap are ``DmaResult``s.
``close()`` (or leaving the ``with``) closes device fds, unmaps everything,
unsets the container and closes both fds, whatever happened before.

This module also holds what the iommufd client and ``vfio-emu probe`` share:
``SetupError``, ``node_hint`` and ``describe``.
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from backends.base import (DmaRequest, DmaResult, VFIOIOMMUClass, errno_name, strerror,
                           vfio_dma_map_request, vfio_dma_unmap_request)
from backends.errors import HostError
from backends.host import O_CLOEXEC, O_RDWR

VFIO_CONTAINER_PATH = "/dev/vfio/vfio"
IOMMUFD_PATH = "/dev/iommu"
VFIO_CDEV_DIR = "/dev/vfio/devices/"
OPEN_FLAGS = O_RDWR | O_CLOEXEC            # qemu_open() always adds O_CLOEXEC

_S32 = struct.Struct("<i")                 # the "s32*" argument of VFIO_GROUP_SET_CONTAINER
_MAP_DMA = uapi.VFIO_IOMMU_MAP_DMA
_UNMAP_DMA = uapi.VFIO_IOMMU_UNMAP_DMA
_HALF = 1 << 63                            # "The unmap ioctl doesn't accept a full 64-bit span."
IOMMU_TYPE_NAMES = {uapi.VFIO_TYPE1_IOMMU: "VFIO_TYPE1_IOMMU",
                    uapi.VFIO_TYPE1v2_IOMMU: "VFIO_TYPE1v2_IOMMU"}


# --- what the clients and the probe share -------------------------------------------

class SetupError(HostError):
    """A setup call failed: ``call`` on ``path`` returned ``ret`` (-errno, or None
    when the call worked but its answer is unusable, e.g. a non-viable group).
    One line: the path, the call, the errno (strerror + symbol), and ``hint``,
    what would provide the missing piece.  ``result`` holds the exact request
    when the call was a struct ioctl."""

    def __init__(self, call: str, path: str, ret: int | None, hint: str = "", *,
                 detail: str | None = None, result: DmaResult | None = None):
        self.call, self.path, self.ret, self.hint, self.result = call, path, ret, hint, result
        if detail is None:
            detail = f"{strerror(ret)} [{errno_name(ret)}]" if ret else "failed"
        self.detail = detail
        super().__init__(f"{call}: {detail}" + (f"; {hint}" if hint else ""), where=path)


def node_hint(path: str, ret: int) -> str:
    """What would provide ``path`` when opening it failed with ``ret`` (-errno)."""
    e = -ret
    if e in (errno.EACCES, errno.EPERM):
        return (f"permission: run as root, or give this user read-write access to {path} "
                "(its group, or a udev rule)")
    if path == VFIO_CONTAINER_PATH:
        return ("load the vfio and vfio_iommu_type1 modules (modprobe vfio_iommu_type1; "
                "kernel CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1)")
    if path == IOMMUFD_PATH:
        return "load the iommufd module (modprobe iommufd; kernel 6.2+ with CONFIG_IOMMUFD)"
    if path.startswith(VFIO_CDEV_DIR):
        return ("bind the device to vfio-pci (modprobe vfio-pci); the cdev needs kernel 6.6+ "
                "with CONFIG_VFIO_DEVICE_CDEV=y")
    if path.startswith("/dev/vfio/"):
        if e == errno.EBUSY:
            return "the group is already open (another VFIO user, e.g. a running QEMU)"
        return ("bind every device of the IOMMU group to vfio-pci (modprobe vfio-pci; "
                "CONFIG_VFIO_PCI) with the IOMMU enabled (intel_iommu=on or amd_iommu=on)")
    return ""


def describe(r: DmaResult) -> str:
    """One line for a result: QEMU's text (``note``, e.g. ``VFIO_MAP_DMA failed: Bad
    address``), the symbolic errno, and the decoded request:
    ``VFIO_MAP_DMA failed: Bad address [EFAULT] (VFIO_IOMMU_MAP_DMA iova=0x100000
    size=0x4000 vaddr=0x7f00... flags=READ|WRITE)``."""
    req = r.request
    head = r.note or (f"= {r.ret}" if r.ret is not None else "not run")
    if r.ret:
        head += f" [{errno_name(r.ret)}]"
    if req is None:
        return head
    flags = f" flags={req.flag_names()}" if "flags" in req.fields else ""
    return f"{head} ({req.ioctl} {req.args()}{flags})"


def _failed(name: str, req: DmaRequest, ret: int, out: bytes) -> DmaResult:
    return DmaResult(ret, req, note=f"{name} failed: {strerror(ret)}", out=out)


# --- the hot path ---------------------------------------------------------------------

def builder_field(req: DmaRequest, name: str) -> int:
    """One field of a request built by backends/base.py."""
    c = uapi.codec(uapi.IOCTLS[req.ioctl].arg)
    return c.unpack_from(req.data)[c.names.index(name)]


# Hot path (a MAP+UNMAP pair costs a few microseconds): the bytes are packed with
# the struct's codec, with the flags the request builders of backends/base.py
# decide (computed once here, so the bytes are exactly theirs; tests/test_clients.py
# checks byte equality); uncommon cases call the builders themselves.
_MAP = uapi.codec("vfio_iommu_type1_dma_map")
_UNMAP = uapi.codec("vfio_iommu_type1_dma_unmap")
_MAP_FLAGS_RW, _MAP_FLAGS_RO = (builder_field(vfio_dma_map_request(0, 0, 0, ro), "flags")
                                for ro in (False, True))
_UNMAP_FLAGS = builder_field(vfio_dma_unmap_request(0, 0), "flags")


class OkResult(DmaResult):
    """A successful DmaResult whose DmaRequest (and empty note/warnings) are made
    on first access: the hot path only keeps the ioctl name and the exact bytes."""

    __slots__ = ("ioctl", "data")        # DmaResult.ioctl / .data as plain slots

    def __init__(self, ioctl: str, data: bytes, out: bytes):
        self.ret = 0
        self.ioctl = ioctl
        self.data = data
        self.out = out
        self.note = ""

    def __getattr__(self, name: str):          # only reached for slots not set yet
        if name == "request":
            value = DmaRequest(self.ioctl, self.data)
        elif name == "warnings":
            value = []
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value


# --- the client -------------------------------------------------------------------------

class Type1Container(VFIOIOMMUClass):
    """A VFIO container with one group attached, driven like QEMU's legacy backend.

    ``group``: the IOMMU group number (``/dev/vfio/<group>``) or a path.
    ``container_path="/dev/iommu"`` is the VFIO compat mode of iommufd (name
    ``compat``): a real kernel's VFIO_GROUP_SET_CONTAINER accepts an iommufd fd
    and creates the compat IOAS (vfio_compat.c).

    After setup: ``pgsizes`` (iova_pgsizes, else the host page size),
    ``iova_ranges`` [(start, end inclusive)], ``dma_avail`` (None when the
    kernel has no DMA_AVAIL cap; QEMU then assumes 65535), ``unmap_all_supported``,
    ``info`` (the parsed VFIO_IOMMU_GET_INFO) and ``teardown`` (failed cleanup calls).
    """

    name = "type1"
    dma_max_mappings = 65535     # vfio_legacy_setup(): U16_MAX without a DMA_AVAIL cap

    def __init__(self, host, group: int | str, *, iommu_type: int = uapi.VFIO_TYPE1v2_IOMMU,
                 container_path: str = VFIO_CONTAINER_PATH):
        self.host = host
        self._ioctl = host.ioctl
        self.container_path = container_path
        if container_path == IOMMUFD_PATH:
            self.name = "compat"
        self.group = group
        self.group_path = group if isinstance(group, str) else f"/dev/vfio/{group}"
        self.iommu_type = iommu_type
        self.fd = self.group_fd = -1
        self.device_fds: list[int] = []
        self.pgsizes = host.page_size
        self.iova_ranges: list[tuple[int, int]] = []
        self.dma_avail: int | None = None
        self.unmap_all_supported = False
        self.info = None
        self.teardown: list[str] = []
        self._container_set = self._ready = False
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------
    def _setup(self) -> None:
        host, path = self.host, self.container_path
        fd = host.open(path, OPEN_FLAGS)
        if fd < 0:
            raise SetupError("open", path, fd, node_hint(path, fd))
        self.fd = fd
        ret, _ = self._ioctl(fd, uapi.VFIO_GET_API_VERSION, 0)
        if ret < 0:
            raise SetupError("VFIO_GET_API_VERSION", path, ret, "not a VFIO container")
        if ret != uapi.VFIO_API_VERSION:
            raise SetupError("VFIO_GET_API_VERSION", path, None, detail=(
                f"supported vfio version: {uapi.VFIO_API_VERSION}, reported version: {ret}"))
        tname = IOMMU_TYPE_NAMES.get(self.iommu_type, str(self.iommu_type))
        ret, _ = self._ioctl(fd, uapi.VFIO_CHECK_EXTENSION, self.iommu_type)
        if ret <= 0:
            raise SetupError(f"VFIO_CHECK_EXTENSION({tname})", path, ret or None,
                             detail=None if ret else "0 (No available IOMMU models)",
                             hint="load vfio_iommu_type1 (CONFIG_VFIO_IOMMU_TYPE1)"
                             if path == VFIO_CONTAINER_PATH else "")
        gpath = self.group_path
        gfd = host.open(gpath, OPEN_FLAGS)
        if gfd < 0:
            raise SetupError("open", gpath, gfd, node_hint(gpath, gfd))
        self.group_fd = gfd
        self._group_status()
        ret, _ = self._ioctl(gfd, uapi.VFIO_GROUP_SET_CONTAINER, _S32.pack(fd))
        if ret:
            raise SetupError(f"VFIO_GROUP_SET_CONTAINER({path})", gpath, ret, detail=(
                f"Failed to set group container: {strerror(ret)} [{errno_name(ret)}]"),
                hint="an iommufd fd needs kernel 6.2+ with CONFIG_IOMMUFD"
                if path == IOMMUFD_PATH else "")
        self._container_set = True
        ret, _ = self._ioctl(fd, uapi.VFIO_SET_IOMMU, self.iommu_type)
        if ret:
            raise SetupError(f"VFIO_SET_IOMMU({tname})", path, ret, detail=(
                f"Failed to set iommu for container: {strerror(ret)} [{errno_name(ret)}]"))
        self._get_info()
        ret, _ = self._ioctl(fd, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_UNMAP_ALL)
        self.unmap_all_supported = ret > 0
        self._ready = True

    def _group_status(self) -> None:
        req = DmaRequest("VFIO_GROUP_GET_STATUS", uapi.build("vfio_group_status"))
        ret, out = self._ioctl(self.group_fd, uapi.VFIO_GROUP_GET_STATUS, req.data)
        if ret:
            raise SetupError("VFIO_GROUP_GET_STATUS", self.group_path, ret,
                             result=DmaResult(ret, req, out=out),
                             detail=f"failed to get group status: {strerror(ret)} "
                                    f"[{errno_name(ret)}]")
        if not uapi.parse("vfio_group_status", out).flags & uapi.VFIO_GROUP_FLAGS_VIABLE:
            raise SetupError("VFIO_GROUP_GET_STATUS", self.group_path, None,
                             result=DmaResult(0, req, out=out),
                             detail=f"group {self.group} is not viable",
                             hint="Please ensure all devices within the iommu_group are "
                                  "bound to their vfio bus driver.")

    def _get_info(self) -> None:
        """vfio_get_iommu_info() + vfio_legacy_setup(): grow argsz until the
        kernel's answer fits, then read pgsizes and the IOVA_RANGE / DMA_AVAIL caps."""
        base = uapi.sizeof("vfio_iommu_type1_info")
        argsz = base
        for _ in range(8):
            data = uapi.build("vfio_iommu_type1_info", argsz=argsz).ljust(argsz, b"\0")
            req = DmaRequest("VFIO_IOMMU_GET_INFO", data)
            ret, out = self._ioctl(self.fd, uapi.VFIO_IOMMU_GET_INFO, data)
            if ret:
                raise SetupError("VFIO_IOMMU_GET_INFO", self.container_path, ret,
                                 result=DmaResult(ret, req, out=out),
                                 detail=f"Failed to get VFIO IOMMU info: {strerror(ret)} "
                                        f"[{errno_name(ret)}]")
            info = uapi.parse("vfio_iommu_type1_info", out)
            if info.argsz <= argsz:
                break
            argsz = info.argsz
        else:
            raise SetupError("VFIO_IOMMU_GET_INFO", self.container_path, None,
                             detail=f"argsz keeps growing ({argsz})")
        self.info = info
        if info.flags & uapi.VFIO_IOMMU_INFO_PGSIZES:
            self.pgsizes = info.iova_pgsizes
        caps = uapi.parse_cap_chain(out[:argsz], info.cap_offset) \
            if info.flags & uapi.VFIO_IOMMU_INFO_CAPS else []
        for cap in caps:
            if cap.header.id == uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                self.iova_ranges = [(r.start, r.end) for r in cap.iova_ranges]
            elif cap.header.id == uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                self.dma_avail = cap.avail

    def get_device_fd(self, name: str) -> int:
        """VFIO_GROUP_GET_DEVICE_FD: a NUL-terminated device name in, the new fd as
        the ioctl's return value (drivers/vfio/group.c vfio_group_ioctl_get_device_fd()).
        Closed by ``close()``."""
        ret, _ = self._ioctl(self.group_fd, uapi.VFIO_GROUP_GET_DEVICE_FD,
                             name.encode() + b"\0")
        if ret < 0:
            raise SetupError(f"VFIO_GROUP_GET_DEVICE_FD({name})", self.group_path, ret,
                             detail=f"error getting device from group {self.group}: "
                                    f"{strerror(ret)} [{errno_name(ret)}]",
                             hint=f"Verify all devices in group {self.group} are bound to "
                                  "vfio-<bus> or pci-stub and not already in use")
        self.device_fds.append(ret)
        return ret

    # -- QEMU's hooks ------------------------------------------------------------------
    def dma_map(self, iova: int, size: int, vaddr: int, readonly: bool, mr=None) -> DmaResult:
        """vfio_legacy_dma_map(): READ, plus WRITE unless readonly; on EBUSY unmap
        the range and retry once ("we sometimes see it in the VGA ROM space").
        QEMU returns -errno of the last failing call.  CPR incoming:
        vfio_legacy_cpr_dma_map(), VADDR only, no retry."""
        if self.cpr_incoming:
            req = vfio_dma_map_request(iova, size, vaddr, readonly, vaddr_only=True)
            ret, out = self._ioctl(self.fd, _MAP_DMA, req.data)
            return _failed("VFIO_MAP_DMA", req, ret, out) if ret else OkResult(req.ioctl, req.data, out)
        data = _MAP.pack(_MAP.size, _MAP_FLAGS_RO if readonly else _MAP_FLAGS_RW, vaddr, iova, size)
        ret, out = self._ioctl(self.fd, _MAP_DMA, data)
        if not ret:
            return OkResult("VFIO_IOMMU_MAP_DMA", data, out)
        req = DmaRequest("VFIO_IOMMU_MAP_DMA", data)
        if ret != -errno.EBUSY:
            return _failed("VFIO_MAP_DMA", req, ret, out)
        u = self.dma_unmap(iova, size)
        if u.ret:
            return DmaResult(u.ret, req, out=out, note=(
                f"VFIO_MAP_DMA failed: {strerror(u.ret)} (EBUSY, then the unmap before "
                f"the retry failed)"))
        ret, out = self._ioctl(self.fd, _MAP_DMA, data)
        if ret:
            return _failed("VFIO_MAP_DMA", req, ret, out)
        return DmaResult(0, req, out=out, note="EBUSY: unmapped and retried")

    def dma_unmap(self, iova: int, size: int, unmap_all: bool = False) -> DmaResult:
        """vfio_legacy_dma_unmap(): unmap-all is VFIO_DMA_UNMAP_FLAG_ALL when
        VFIO_CHECK_EXTENSION(VFIO_UNMAP_ALL), else two calls [0, 2^63) and [2^63, 2^64).
        ``out`` carries the unmapped size (vfio_legacy_dma_unmap_one())."""
        if unmap_all:
            if not self.unmap_all_supported:
                r = self._unmap_one(vfio_dma_unmap_request(0, _HALF).data)
                return r if r.ret else self._unmap_one(vfio_dma_unmap_request(_HALF, _HALF).data)
            return self._unmap_one(vfio_dma_unmap_request(0, 0, unmap_all=True).data)
        return self._unmap_one(_UNMAP.pack(_UNMAP.size, _UNMAP_FLAGS, iova, size))

    def _unmap_one(self, data: bytes) -> DmaResult:
        ret, out = self._ioctl(self.fd, _UNMAP_DMA, data)
        if ret:
            return _failed("VFIO_UNMAP_DMA", DmaRequest("VFIO_IOMMU_UNMAP_DMA", data), ret, out)
        return OkResult("VFIO_IOMMU_UNMAP_DMA", data, out)

    # -- cleanup -----------------------------------------------------------------------
    def close(self) -> None:
        """vfio_disconnect_container(): device fds, unmap-all, GROUP_UNSET_CONTAINER,
        then the fds.  Idempotent; failures are kept in ``teardown``, never raised."""
        host = self.host
        while self.device_fds:
            host.close(self.device_fds.pop())
        if self._ready:
            self._ready = False
            r = self.dma_unmap(0, 0, unmap_all=True)
            if r.ret:
                self.teardown.append(describe(r))
        if self._container_set:
            self._container_set = False
            ret, _ = self._ioctl(self.group_fd, uapi.VFIO_GROUP_UNSET_CONTAINER, 0)
            if ret:
                self.teardown.append(f"VFIO_GROUP_UNSET_CONTAINER: {strerror(ret)} "
                                     f"[{errno_name(ret)}]")
        for attr in ("group_fd", "fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                host.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
