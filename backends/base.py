"""The backend interface QEMU's ``vfio_container_dma_map`` talks to, and the
requests each backend sends.

``VFIOIOMMUClass`` mirrors QEMU's class of the same name (hw/vfio/vfio-container*.h):
``dma_map``, ``dma_unmap`` and, only for iommufd (10.1+, fb32965b6dd8),
``dma_map_file``.  A backend without file mapping leaves ``dma_map_file`` as None,
exactly as QEMU tests ``vioc->dma_map_file``.

Results follow QEMU's convention: ``ret`` is 0 or -errno (``None`` when the
request was only planned, not sent to a kernel), plus the ioctl name and its
request fields.  The request builders here are the one place where flags and
struct fields are decided; the real clients send exactly these.
"""

from __future__ import annotations

import errno
import os

from backends import uapi


class DmaRequest:
    """An ioctl request: its name and the exact argument bytes sent.

    ``fields`` decodes the bytes with the struct's codec (backends/uapi.py), so
    what is printed is what the kernel receives."""

    __slots__ = ("ioctl", "data")

    def __init__(self, ioctl: str, data: bytes):
        self.ioctl = ioctl
        self.data = data

    @property
    def fields(self) -> dict:
        c = uapi.codec(uapi.IOCTLS[self.ioctl].arg)
        return dict(zip(c.names, c.unpack_from(self.data)))

    def __eq__(self, other) -> bool:
        return isinstance(other, DmaRequest) and (self.ioctl, self.data) == (other.ioctl, other.data)

    def __repr__(self) -> str:
        return f"DmaRequest({self.ioctl}, {self.fields})"

    def flag_names(self) -> str:
        return flag_names(self.ioctl, self.fields.get("flags", 0))

    def args(self) -> str:
        """The address arguments as VMM developers read them."""
        f = self.fields
        if self.ioctl == "IOMMU_IOAS_MAP_FILE":
            return (f"iova=0x{f['iova']:x} length=0x{f['length']:x} "
                    f"fd={f['fd']} start=0x{f['start']:x}")
        if self.ioctl == "IOMMU_IOAS_MAP":
            return (f"iova=0x{f['iova']:x} length=0x{f['length']:x} "
                    f"user_va=0x{f['user_va']:x}")
        if self.ioctl == "VFIO_IOMMU_MAP_DMA":
            return (f"iova=0x{f['iova']:x} size=0x{f['size']:x} "
                    f"vaddr=0x{f['vaddr']:x}")
        if self.ioctl == "IOMMU_IOAS_UNMAP":
            return f"iova=0x{f['iova']:x} length=0x{f['length']:x}"
        return " ".join(f"{k}=0x{v:x}" for k, v in f.items()
                        if k not in ("argsz", "size", "flags") and isinstance(v, int))


class DmaResult:
    """What one backend hook did: 0 / -errno (None = planned, not run), the
    request sent (None when QEMU sends nothing), and for real or simulated
    kernels the bytes the kernel wrote back (``out``)."""

    __slots__ = ("ret", "request", "note", "warnings", "out")

    def __init__(self, ret: int | None, request: DmaRequest | None = None, note: str = "",
                 warnings: list[str] | None = None, out: bytes | None = None):
        self.ret = ret
        self.request = request
        self.note = note
        self.warnings = warnings if warnings is not None else []
        self.out = out

    def __repr__(self) -> str:
        return f"DmaResult({self.ret}, {self.request!r}{', ' + repr(self.note) if self.note else ''})"

    @property
    def errno_name(self) -> str:
        return errno_name(self.ret)

    @property
    def ioctl(self) -> str | None:
        """The request's ioctl name (None: no request), without building one."""
        return self.request.ioctl if self.request is not None else None

    @property
    def data(self) -> bytes | None:
        """The request's argument bytes (None: no request)."""
        return self.request.data if self.request is not None else None


_KERNEL_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP"}   # Python calls 95 ENOTSUP; the kernel EOPNOTSUPP


def errno_name(ret: int | None) -> str:
    if not ret:
        return ""
    return _KERNEL_NAMES.get(-ret) or errno.errorcode.get(-ret, f"E{-ret}")


def strerror(ret: int) -> str:
    """QEMU's ``strerror(-ret)``."""
    return os.strerror(-ret)


_FLAG_SETS = {
    "VFIO_IOMMU_MAP_DMA": [("READ", uapi.VFIO_DMA_MAP_FLAG_READ),
                           ("WRITE", uapi.VFIO_DMA_MAP_FLAG_WRITE),
                           ("VADDR", uapi.VFIO_DMA_MAP_FLAG_VADDR)],
    "VFIO_IOMMU_UNMAP_DMA": [("GET_DIRTY_BITMAP", uapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP),
                             ("ALL", uapi.VFIO_DMA_UNMAP_FLAG_ALL),
                             ("VADDR", uapi.VFIO_DMA_UNMAP_FLAG_VADDR)],
    "IOMMU_IOAS_MAP": [("FIXED_IOVA", uapi.IOMMU_IOAS_MAP_FIXED_IOVA),
                       ("WRITEABLE", uapi.IOMMU_IOAS_MAP_WRITEABLE),
                       ("READABLE", uapi.IOMMU_IOAS_MAP_READABLE)],
}
_FLAG_SETS["IOMMU_IOAS_MAP_FILE"] = _FLAG_SETS["IOMMU_IOAS_MAP"]


def flag_names(ioctl: str, flags: int) -> str:
    """``READ|WRITE`` style names of an ioctl's flags, in bit order."""
    names = [n for n, bit in _FLAG_SETS.get(ioctl, []) if flags & bit]
    rest = flags & ~sum(bit for _, bit in _FLAG_SETS.get(ioctl, []))
    if rest:
        names.append(f"0x{rest:x}")
    return "|".join(names) or "0"


# --- request builders (QEMU's flag rules) -----------------------------------
_DMA_MAP = uapi.codec("vfio_iommu_type1_dma_map")
_DMA_UNMAP = uapi.codec("vfio_iommu_type1_dma_unmap")
_IOAS_MAP = uapi.codec("iommu_ioas_map")
_IOAS_MAP_FILE = uapi.codec("iommu_ioas_map_file")
_IOAS_UNMAP = uapi.codec("iommu_ioas_unmap")


def vfio_dma_map_request(iova: int, size: int, vaddr: int, readonly: bool,
                         vaddr_only: bool = False) -> DmaRequest:
    """vfio_legacy_dma_map(): READ, plus WRITE unless readonly
    (hw/vfio/container-legacy.c); CPR incoming uses VADDR only (cpr-legacy.c, 10.1+)."""
    if vaddr_only:
        flags = uapi.VFIO_DMA_MAP_FLAG_VADDR
    else:
        flags = uapi.VFIO_DMA_MAP_FLAG_READ
        if not readonly:
            flags |= uapi.VFIO_DMA_MAP_FLAG_WRITE
    return DmaRequest("VFIO_IOMMU_MAP_DMA", _DMA_MAP.pack(_DMA_MAP.size, flags, vaddr, iova, size))


def vfio_dma_unmap_request(iova: int, size: int, unmap_all: bool = False,
                           vaddr_only: bool = False) -> DmaRequest:
    """vfio_legacy_dma_unmap_one(): FLAG_ALL with iova = size = 0 for unmap-all;
    ``vaddr_only``: FLAG_VADDR, the vaddrs invalidated, the mappings kept
    (vfio_dma_unmap_vaddr_all(), hw/vfio/cpr-legacy.c, 10.1+)."""
    flags = uapi.VFIO_DMA_UNMAP_FLAG_ALL if unmap_all else 0
    if vaddr_only:
        flags |= uapi.VFIO_DMA_UNMAP_FLAG_VADDR
    if unmap_all:
        iova = size = 0
    return DmaRequest("VFIO_IOMMU_UNMAP_DMA", _DMA_UNMAP.pack(_DMA_UNMAP.size, flags, iova, size))


def _ioas_flags(readonly: bool) -> int:
    """iommufd_backend_map_dma(): READABLE|FIXED_IOVA, plus WRITEABLE unless readonly
    (backends/iommufd.c)."""
    flags = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA
    if not readonly:
        flags |= uapi.IOMMU_IOAS_MAP_WRITEABLE
    return flags


def ioas_map_request(ioas_id: int, iova: int, length: int, user_va: int,
                     readonly: bool) -> DmaRequest:
    return DmaRequest("IOMMU_IOAS_MAP", _IOAS_MAP.pack(
        _IOAS_MAP.size, _ioas_flags(readonly), ioas_id, 0, user_va, length, iova))


def ioas_map_file_request(ioas_id: int, iova: int, length: int, fd: int, start: int,
                          readonly: bool) -> DmaRequest:
    """iommufd_backend_map_file_dma() (10.1+, e563dc88c219)."""
    return DmaRequest("IOMMU_IOAS_MAP_FILE", _IOAS_MAP_FILE.pack(
        _IOAS_MAP_FILE.size, _ioas_flags(readonly), ioas_id, fd, start, length, iova))


def ioas_unmap_request(ioas_id: int, iova: int, length: int,
                       unmap_all: bool = False) -> DmaRequest:
    """iommufd_cdev_unmap(): unmap_all → iova 0, length UINT64_MAX."""
    if unmap_all:
        iova, length = 0, (1 << 64) - 1
    return DmaRequest("IOMMU_IOAS_UNMAP", _IOAS_UNMAP.pack(_IOAS_UNMAP.size, ioas_id, iova, length))


# --- the interface -----------------------------------------------------------

class VFIOIOMMUClass:
    """QEMU's VFIOIOMMUClass: the hooks vfio_container_dma_map() calls.

    Subclasses set ``name`` (the backend's, vmm_model/iommu_backends.py),
    implement ``dma_map`` and ``dma_unmap``, and ``dma_map_file`` only if the backend can map by
    file (QEMU: iommufd only).  ``pgsizes`` is the IOMMU page-size bitmap the
    listener uses for ram_device alignment (type1: iova_pgsizes of
    VFIO_IOMMU_GET_INFO; iommufd: out_iova_alignment; else the host page size).
    The backends themselves (names, how a client is opened) are registered in
    vmm_model/iommu_backends.py.
    """

    name = "abstract"
    dma_map_file = None
    pgsizes = 4096
    cpr_incoming = False
    dma_max_mappings = 0       # bcontainer->dma_max_mappings: 0 = no limit (iommufd)

    def dma_map(self, iova: int, size: int, vaddr: int, readonly: bool, mr=None) -> DmaResult:
        raise NotImplementedError

    def dma_unmap(self, iova: int, size: int, unmap_all: bool = False) -> DmaResult:
        raise NotImplementedError
