"""drivers/iommu/iommufd/vfio_compat.c: the VFIO type1 container API on /dev/iommu.

``iommufd_vfio_ioctl()`` answers every ioctl number below IOMMUFD_CMD_BASE or
beyond the iommufd op table (ENOTTY for anything else), always on the
context's compat IOAS (ENODEV without one).  IOMMU_VFIO_IOAS picks that IOAS;
a VFIO group attached to the iommufd creates it
(``iommufd_vfio_compat_ioas_create()``).  Read from torvalds/linux at the 7.1
merge window ("T71": vfio_compat.c blob acb48cdd3b00).

The user's buffer is the argument bytes: reading or writing past its end is
-EFAULT (copy_from_user()/copy_to_user() on unmapped memory).
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from backends.host import PAGE_SIZE
from .io_pagetable import (iopt_cut_iova, iopt_disable_large_pages, iopt_map_user_pages,
                           iopt_unmap_all, iopt_unmap_iova, reserved_holes)
from .ioas import Ioas, respond
from .pages import ULONG_MAX

_EFAULT, _EINVAL, _ENODEV = -errno.EFAULT, -errno.EINVAL, -errno.ENODEV
PAGE_MASK = ~(PAGE_SIZE - 1) & ULONG_MAX
U32_MAX = (1 << 32) - 1
_DMA_MAP = uapi.codec("vfio_iommu_type1_dma_map")
_DMA_UNMAP = uapi.codec("vfio_iommu_type1_dma_unmap")
_INFO = uapi.codec("vfio_iommu_type1_info")
_INFO_MIN = uapi.offsetofend("vfio_iommu_type1_info", "iova_pgsizes")
_CAP_HDR = uapi.codec("vfio_info_cap_header")
_VFIO_IOAS = uapi.codec("iommu_vfio_ioas")
_RANGE16 = struct.Struct("<QQ")


def get_compat_ioas(ictx) -> Ioas | None:
    """get_compat_ioas(): the compat IOAS or None (callers answer -ENODEV)."""
    ioas = ictx.vfio_ioas
    return ioas if ioas is not None and ictx.objects.get(ioas.id) is ioas else None


def iommufd_vfio_compat_ioas_create(ictx) -> int:
    """iommufd_vfio_compat_ioas_create() (a VFIO group attached to this
    iommufd): -EINVAL in no-iommu mode; keeps an existing compat IOAS, else
    allocates one (a user-visible object, IOMMU_VFIO_IOAS_GET finds it)."""
    if ictx.no_iommu_mode:
        return _EINVAL
    if get_compat_ioas(ictx) is not None:
        return 0
    ioas = Ioas(ictx.alloc_id(), ictx.host)
    ictx.finalize(ioas)
    ictx.vfio_ioas = ioas
    return 0


def iommufd_vfio_ioas(ictx, cmd, buf, size):
    """iommufd_vfio_ioas() (IOMMU_VFIO_IOAS): -EOPNOTSUPP __reserved; GET
    -ENODEV without a compat IOAS (id written back on success); SET -ENOENT
    bad id; CLEAR; any other op -EOPNOTSUPP."""
    sz, ioas_id, op, reserved = _VFIO_IOAS.unpack(cmd)
    if reserved:
        return -errno.EOPNOTSUPP, buf
    if op == uapi.IOMMU_VFIO_IOAS_GET:
        ioas = get_compat_ioas(ictx)
        if ioas is None:
            return _ENODEV, buf
        return 0, respond(buf, size, _VFIO_IOAS.pack(sz, ioas.id, op, reserved))
    if op == uapi.IOMMU_VFIO_IOAS_SET:
        ioas = ictx.get_ioas(ioas_id)
        if ioas is None:
            return -errno.ENOENT, buf
        ictx.vfio_ioas = ioas
        return 0, buf
    if op == uapi.IOMMU_VFIO_IOAS_CLEAR:
        ictx.vfio_ioas = None
        return 0, buf
    return -errno.EOPNOTSUPP, buf


def iommufd_vfio_map_dma(ictx, buf: bytes):
    """iommufd_vfio_map_dma(): -EFAULT short buffer -> -EINVAL argsz < 32 or a
    flag other than READ|WRITE (VADDR included) -> -ENODEV -> iopt_map_user_pages()
    at the fixed iova, no READ/WRITE check here (unlike type1's vfio_dma_do_map()): a prot-less
    area is made, and with a domain the IOMMU driver's map refuses it with
    -EINVAL (pages.iopt_area_fill_domain(); rig run iommufd-7.2 2026-11-23).
    Nothing is written back."""
    if len(buf) < _DMA_MAP.size:
        return _EFAULT, buf
    argsz, flags, vaddr, iova, size = _DMA_MAP.unpack_from(buf)
    if argsz < _DMA_MAP.size or flags & ~(uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE):
        return _EINVAL, buf
    prot = flags & 3                    # VFIO READ/WRITE bits are IOMMU_READ/IOMMU_WRITE
    ioas = get_compat_ioas(ictx)
    if ioas is None:
        return _ENODEV, buf
    rc, _ = iopt_map_user_pages(ictx, ioas.iopt, iova, vaddr, size, prot, 0)
    return rc, buf


def iommufd_vfio_unmap_dma(ictx, buf: bytes):
    """iommufd_vfio_unmap_dma(): -EFAULT -> -EINVAL argsz < 24 or a flag other
    than ALL -> -ENODEV -> ALL: -EINVAL with iova/size != 0, else unmap all ->
    TYPE1 (v1, large pages disabled): iopt_cut_iova() at iova+size-1 and iova-1
    (its errors return at once) -> iopt_unmap_iova().  ``size`` = bytes unmapped
    is written back even when that fails (-ENOENT: bisected v2 area, or an empty
    range before 6.18, profile.compat_empty_unmap_ok)."""
    if len(buf) < _DMA_UNMAP.size:
        return _EFAULT, buf
    argsz, flags, iova, size = _DMA_UNMAP.unpack_from(buf)
    if argsz < _DMA_UNMAP.size or flags & ~uapi.VFIO_DMA_UNMAP_FLAG_ALL:
        return _EINVAL, buf
    ioas = get_compat_ioas(ictx)
    if ioas is None:
        return _ENODEV, buf
    iopt = ioas.iopt
    if flags & uapi.VFIO_DMA_UNMAP_FLAG_ALL:
        if iova or size:
            return _EINVAL, buf
        rc, unmapped = iopt_unmap_all(iopt)
    else:
        if iopt.disable_large_pages:
            cuts = [(iova + size - 1) & ULONG_MAX] + ([iova - 1] if iova else [])
            rc = iopt_cut_iova(iopt, cuts)
            if rc:
                return rc, buf
        rc, unmapped = iopt_unmap_iova(iopt, iova, size)
    return rc, _DMA_UNMAP.pack(argsz, flags, iova, unmapped) + buf[_DMA_UNMAP.size:]


def iommufd_vfio_set_iommu(ictx, arg) -> int:
    """iommufd_vfio_set_iommu(): -EINVAL a type other than TYPE1/TYPE1v2 (before
    the IOAS lookup) -> -ENODEV no compat IOAS (no group attached) -> TYPE1 (v1)
    disables large pages so sub-range unmaps can split (-EINVAL if domains
    already hold mappings)."""
    if arg not in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU) or ictx.no_iommu_mode:
        return _EINVAL
    ioas = get_compat_ioas(ictx)
    if ioas is None:
        return _ENODEV
    if arg == uapi.VFIO_TYPE1_IOMMU:
        return iopt_disable_large_pages(ioas.iopt)
    return 0


def iommufd_vfio_check_extension(ictx, arg) -> int:
    """iommufd_vfio_check_extension(): TYPE1, TYPE1v2, UNMAP_ALL 1; NOIOMMU
    IS_ENABLED(CONFIG_VFIO_NOIOMMU) (host attribute ``config_vfio_noiommu``,
    default off as in the rig kernel); DMA_CC_IOMMU iommufd_vfio_cc_iommu()
    (-ENODEV without a compat IOAS, else 1: simulated domains enforce coherency);
    the reserved nesting type, UPDATE_VADDR and anything else 0."""
    if arg in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_UNMAP_ALL):
        return 1
    if arg == uapi.VFIO_NOIOMMU_IOMMU:
        return int(bool(getattr(ictx.host, "config_vfio_noiommu", False)))
    if arg == uapi.VFIO_DMA_CC_IOMMU:
        return 1 if get_compat_ioas(ictx) is not None else _ENODEV
    return 0


def iommufd_get_pagesizes(ioas: Ioas) -> int:
    """iommufd_get_pagesizes(): the AND of the domains' bitmaps (all ones with
    none), sub-page sizes folded into PAGE_SIZE (vfio_update_pgsize_bitmap()),
    at least iova_alignment."""
    bitmap = ULONG_MAX
    for d in ioas.iopt.domains:
        bitmap &= d.hw.pgsize_bitmap
    if bitmap & ~PAGE_MASK:
        bitmap = (bitmap & PAGE_MASK) | PAGE_SIZE
    return max(bitmap, ioas.iopt.iova_alignment)


class _UserBuf:
    """The user's buffer: copy_to_user() past its end is -EFAULT."""

    def __init__(self, buf: bytes):
        self.b = bytearray(buf)

    def write(self, off: int, data: bytes) -> int:
        if off < 0 or off + len(data) > len(self.b):
            return _EFAULT
        self.b[off:off + len(data)] = data
        return 0


def iommufd_fill_cap_dma_avail(ioas, ub: _UserBuf | None, off: int, avail: int) -> int:
    """iommufd_fill_cap_dma_avail(): DMA_AVAIL U32_MAX (iommufd has no count limit)."""
    data = _CAP_HDR.pack(uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, 0) + struct.pack("<I", U32_MAX)
    if ub is not None and avail >= len(data) and ub.write(off, data):
        return _EFAULT
    return len(data)


def iommufd_fill_cap_iova(ioas, ub: _UserBuf | None, off: int, avail: int) -> int:
    """iommufd_fill_cap_iova(): the holes of reserved_itree; each range and the
    header only if they fit in ``avail``."""
    holes = reserved_holes(ioas.iopt)
    for i, (start, last) in enumerate(holes):
        if ub is not None and avail >= 16 + 16 * (i + 1) and ub.write(off + 16 + 16 * i,
                                                                      _RANGE16.pack(start, last)):
            return _EFAULT
    total = 16 + 16 * len(holes)
    head = _CAP_HDR.pack(uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0) + struct.pack("<II", len(holes), 0)
    if ub is not None and avail >= total and ub.write(off, head):
        return _EFAULT
    return total


def iommufd_vfio_iommu_get_info(ictx, buf: bytes):
    """iommufd_vfio_iommu_get_info(): -EFAULT -> -EINVAL argsz < 16 -> -ENODEV ->
    flags PGSIZES|CAPS, iova_pgsizes, caps DMA_AVAIL then IOVA_RANGE (8-byte
    aligned) as far as argsz reaches; argsz is set to the size that holds all
    caps, cap_offset only when they all fit; min(argsz, 24) bytes written back."""
    if len(buf) < _INFO_MIN:
        return _EFAULT, buf
    argsz = int.from_bytes(buf[:4], "little")
    if argsz < _INFO_MIN:
        return _EINVAL, buf
    minsz = min(argsz, _INFO.size)
    ioas = get_compat_ioas(ictx)
    if ioas is None:
        return _ENODEV, buf
    flags = uapi.VFIO_IOMMU_INFO_PGSIZES
    pgsizes = iommufd_get_pagesizes(ioas)
    ub = _UserBuf(buf)
    total, last_cap = _INFO.size, None
    for fill in (iommufd_fill_cap_dma_avail, iommufd_fill_cap_iova):
        if argsz > total:
            cap_size = fill(ioas, ub, total, argsz - total)
        else:
            cap_size = fill(ioas, None, 0, 0)
        if cap_size < 0:
            return cap_size, bytes(ub.b)
        cap_size = (cap_size + 7) & ~7
        if last_cap is not None and argsz >= total and ub.write(last_cap + 4, struct.pack("<I", total)):
            return _EFAULT, bytes(ub.b)
        last_cap = total
        total += cap_size
    cap_offset = _INFO.size if argsz >= total else 0
    info = _INFO.pack(total, flags | uapi.VFIO_IOMMU_INFO_CAPS, pgsizes, cap_offset, 0)
    if ub.write(0, info[:minsz]):
        return _EFAULT, bytes(ub.b)
    return 0, bytes(ub.b)


def iommufd_vfio_ioctl(ictx, cmd: int, arg):
    """iommufd_vfio_ioctl(): the VFIO container ioctls; -ENOTTY (ENOIOCTLCMD)
    for anything else, VFIO_IOMMU_DIRTY_PAGES included."""
    buf = b"" if isinstance(arg, int) else bytes(arg)
    if cmd == uapi.VFIO_GET_API_VERSION:
        return uapi.VFIO_API_VERSION, buf
    if cmd == uapi.VFIO_SET_IOMMU:
        return iommufd_vfio_set_iommu(ictx, arg if isinstance(arg, int) else -1), buf
    if cmd == uapi.VFIO_CHECK_EXTENSION:
        return iommufd_vfio_check_extension(ictx, arg if isinstance(arg, int) else -1), buf
    if cmd in (uapi.VFIO_IOMMU_GET_INFO, uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA):
        if isinstance(arg, int):
            return _EFAULT, buf
        if cmd == uapi.VFIO_IOMMU_MAP_DMA:
            return iommufd_vfio_map_dma(ictx, buf)
        if cmd == uapi.VFIO_IOMMU_UNMAP_DMA:
            return iommufd_vfio_unmap_dma(ictx, buf)
        return iommufd_vfio_iommu_get_info(ictx, buf)
    return -errno.ENOTTY, buf
