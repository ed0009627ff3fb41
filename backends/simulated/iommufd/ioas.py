"""drivers/iommu/iommufd/ioas.c: the IOAS object and its ioctls.

Each handler is ``handler(ictx, cmd, buf, size) -> (ret, out)``: ``cmd`` is the
command copied in by ``copy_struct_from_user()`` (exactly sizeof bytes),
``buf`` the user's buffer, ``size`` its ``size`` field; ``out`` is the user's
buffer after the call (``iommufd_ucmd_respond()`` writes back min(size, sizeof)
bytes, and only on success unless noted).  ``cmd is buf`` when the user's
buffer is exactly the struct (size == sizeof == its length: main.py passes it
as both), so a handler whose answer is the command unchanged returns ``buf``.  Errnos follow torvalds/linux ioas.c
(T71 = the 7.1 merge window, blob fed06c2b728e; the 6.13-6.18 MAP_FILE form
from 051ae5aa73d7).
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from .io_pagetable import (IOPT_ALLOC_IOVA, IoPagetable, iopt_disable_large_pages,
                           iopt_enable_large_pages, iopt_get_pages, iopt_map_file_pages,
                           iopt_map_pages, iopt_map_user_pages, iopt_pages_of, iopt_put_pages,
                           iopt_set_allow_iova, iopt_unmap_all, iopt_unmap_iova, reserved_holes)
from .pages import (IOPT_ADDRESS_FILE, IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_USER, ULONG_MAX,
                    iopt_area_unfill_domain)

U64_MAX = (1 << 64) - 1
FIXED, WRITEABLE, READABLE = (uapi.IOMMU_IOAS_MAP_FIXED_IOVA, uapi.IOMMU_IOAS_MAP_WRITEABLE,
                              uapi.IOMMU_IOAS_MAP_READABLE)
_MAP_FLAGS = FIXED | WRITEABLE | READABLE
_NOT_MAP_FLAGS, _RW = ~_MAP_FLAGS, WRITEABLE | READABLE
_EOPNOTSUPP, _EOVERFLOW, _EINVAL, _ENOENT = (-errno.EOPNOTSUPP, -errno.EOVERFLOW, -errno.EINVAL,
                                             -errno.ENOENT)

_ALLOC = uapi.codec("iommu_ioas_alloc")
_RANGES = uapi.codec("iommu_ioas_iova_ranges")
_ALLOW = uapi.codec("iommu_ioas_allow_iovas")
_RANGE = uapi.codec("iommu_iova_range")
_MAP = uapi.codec("iommu_ioas_map")
_MAP_FILE = uapi.codec("iommu_ioas_map_file")
_COPY = uapi.codec("iommu_ioas_copy")
_UNMAP = uapi.codec("iommu_ioas_unmap")
_OPTION = uapi.codec("iommu_option")
_CHANGE = uapi.codec("iommu_ioas_change_process")
_U64 = struct.Struct("<Q")
_MAP_unpack, _MAP_pack = _MAP.unpack, _MAP.pack
_UNMAP_unpack, _UNMAP_pack = _UNMAP.unpack, _UNMAP.pack
_MAP_FILE_unpack = _MAP_FILE.unpack


class IommufdObject:
    """struct iommufd_object: ``id`` from the context's xarray (lowest free, from
    1, shared by every type) and ``users`` (1 = only the xarray holds it)."""

    __slots__ = ("id", "users")
    kind = "ANY"

    def __init__(self, obj_id: int):
        self.id, self.users = obj_id, 1


class Ioas(IommufdObject):
    """struct iommufd_ioas: an io_pagetable and the HWPTs (domains) on it."""

    __slots__ = ("iopt", "hwpt_list")
    kind = "IOAS"

    def __init__(self, obj_id: int, host):
        super().__init__(obj_id)
        self.iopt = IoPagetable(host)
        self.hwpt_list: list = []


def respond(buf: bytes, size: int, new: bytes) -> bytes:
    """iommufd_ucmd_respond(): copy min(size, sizeof) bytes of the command back."""
    n = size if size < len(new) else len(new)
    if n == len(buf):
        return new if n == len(new) else new[:n]
    return new[:n] + buf[n:]


def conv_iommu_prot(flags: int) -> int:
    """conv_iommu_prot(): WRITEABLE -> IOMMU_WRITE (2), READABLE -> IOMMU_READ (1)."""
    return (flags & WRITEABLE) | ((flags & READABLE) >> 2)


_IOMMU_PROT = tuple(conv_iommu_prot(f) for f in range(_RW + 1))   # conv_iommu_prot(flags & _RW)


def iommufd_ioas_alloc_ioctl(ictx, cmd, buf, size):
    """iommufd_ioas_alloc_ioctl(): -EOPNOTSUPP flags != 0."""
    sz, flags, _ = _ALLOC.unpack(cmd)
    if flags:
        return _EOPNOTSUPP, buf
    ioas = Ioas(ictx.alloc_id(), ictx.host)
    ictx.finalize(ioas)
    return 0, respond(buf, size, _ALLOC.pack(sz, flags, ioas.id))


def iommufd_ioas_iova_ranges(ictx, cmd, buf, size):
    """iommufd_ioas_iova_ranges(): -EOPNOTSUPP __reserved -> -ENOENT ioas -> the
    holes of reserved_itree over [0, ULONG_MAX] written to the user array
    ``allowed_iovas`` (host memory, -EFAULT) -> the struct is written back
    (num_iovas = needed count, out_iova_alignment) -> -EMSGSIZE if too few."""
    sz, ioas_id, max_iovas, reserved, uptr, _ = _RANGES.unpack(cmd)
    if reserved:
        return _EOPNOTSUPP, buf
    ioas = ictx.get_ioas(ioas_id)
    if ioas is None:
        return _ENOENT, buf
    holes = reserved_holes(ioas.iopt)
    for i, (start, last) in enumerate(holes[:max_iovas]):
        if ictx.host.write_mem(uptr + i * _RANGE.size, _RANGE.pack(start, last)) != _RANGE.size:
            return -errno.EFAULT, buf
    out = respond(buf, size, _RANGES.pack(sz, ioas_id, len(holes), reserved, uptr,
                                          ioas.iopt.iova_alignment))
    return (-errno.EMSGSIZE if len(holes) > max_iovas else 0), out


def iommufd_ioas_load_iovas(ictx, uptr: int, num: int):
    """iommufd_ioas_load_iovas(): -EFAULT unreadable entry, -EINVAL start >= last
    (so start == last is refused) or an entry overlapping an earlier one."""
    out: list[tuple[int, int]] = []
    for i in range(num):
        n, raw = ictx.host.read_mem(uptr + i * _RANGE.size, _RANGE.size)
        if n != _RANGE.size:
            return -errno.EFAULT
        start, last = _RANGE.unpack(raw)
        if start >= last:
            return _EINVAL
        if any(a <= last and b >= start for a, b in out):
            return _EINVAL
        out.append((start, last))
    return out


def iommufd_ioas_allow_iovas(ictx, cmd, buf, size):
    """iommufd_ioas_allow_iovas(): -EOPNOTSUPP __reserved -> -ENOENT -> load
    (EFAULT/EINVAL) -> iopt_set_allow_iova() (-EADDRINUSE); num_iovas 0 clears."""
    _, ioas_id, num, reserved, uptr = _ALLOW.unpack(cmd)
    if reserved:
        return _EOPNOTSUPP, buf
    ioas = ictx.get_ioas(ioas_id)
    if ioas is None:
        return _ENOENT, buf
    ranges = iommufd_ioas_load_iovas(ictx, uptr, num)
    if type(ranges) is int:
        return ranges, buf
    return iopt_set_allow_iova(ioas.iopt, ranges), buf


def iommufd_ioas_map(ictx, cmd, buf, size):
    """iommufd_ioas_map(): -EOPNOTSUPP unknown flag or __reserved -> -EOVERFLOW
    iova or length >= ULONG_MAX -> -EINVAL neither READABLE nor WRITEABLE ->
    -ENOENT ioas -> iopt_map_user_pages(); ``iova`` written back on success."""
    sz, flags, ioas_id, reserved, uptr, length, iova = _MAP_unpack(cmd)
    if flags & _NOT_MAP_FLAGS or reserved:
        return _EOPNOTSUPP, buf
    if iova >= ULONG_MAX or length >= ULONG_MAX:
        return _EOVERFLOW, buf
    if not flags & _RW:
        return _EINVAL, buf
    ioas = ictx.objects.get(ioas_id)                   # iommufd_get_ioas()
    if type(ioas) is not Ioas:
        return _ENOENT, buf
    rc, out_iova = iopt_map_user_pages(ictx, ioas.iopt, iova, uptr, length,
                                       _IOMMU_PROT[flags & _RW],     # conv_iommu_prot()
                                       0 if flags & FIXED else IOPT_ALLOC_IOVA)
    if rc:
        return rc, buf
    if cmd is buf and out_iova == iova:
        return 0, buf                          # the struct written back is the one sent
    return 0, respond(buf, size, _MAP_pack(sz, flags, ioas_id, reserved, uptr, length, out_iova))


def iommufd_ioas_map_file(ictx, cmd, buf, size):
    """iommufd_ioas_map_file() (6.13+, profile.map_file): -EOPNOTSUPP flags ->
    -EOVERFLOW -> -EINVAL no R/W -> -ENOENT ioas -> 6.13-6.18
    (profile.map_file_fget_in_ioas): fget() here, -EBADF returns without
    iommufd_put_object(), leaking an IOAS reference (a later DESTROY is -EBUSY:
    iommufd_object_remove()'s refcount_dec_if_one(); code-read, not run) ->
    iopt_map_file_pages(); 6.19+: the fd is resolved in
    iopt_map_file_pages() after its length checks (dma-buf first)."""
    sz, flags, ioas_id, fd, start, length, iova = _MAP_FILE_unpack(cmd)
    if flags & _NOT_MAP_FLAGS:
        return _EOPNOTSUPP, buf
    if iova >= ULONG_MAX or length >= ULONG_MAX:
        return _EOVERFLOW, buf
    if not flags & _RW:
        return _EINVAL, buf
    ioas = ictx.objects.get(ioas_id)                   # iommufd_get_ioas()
    if type(ioas) is not Ioas:
        return _ENOENT, buf
    alloc = 0 if flags & FIXED else IOPT_ALLOC_IOVA
    prot = _IOMMU_PROT[flags & _RW]                    # conv_iommu_prot()
    if ictx.profile.map_file_fget_in_ioas:
        file = ictx.host.file_of(fd)
        if file is None:
            ioas.users += 1
            return -errno.EBADF, buf
    else:
        file = fd                                      # 6.19+: iopt_map_file_pages() takes the fd
    rc, out_iova = iopt_map_file_pages(ictx, ioas.iopt, iova, file, start, length, prot, alloc)
    if rc:
        return rc, buf
    if cmd is buf and out_iova == iova:
        return 0, buf                          # the struct written back is the one sent
    return 0, respond(buf, size, _MAP_FILE.pack(sz, flags, ioas_id, fd, start, length, out_iova))


def iommufd_ioas_copy(ictx, cmd, buf, size):
    """iommufd_ioas_copy(): -EOPNOTSUPP flags -> -EOVERFLOW -> -EINVAL no R/W ->
    -ENOENT src -> iopt_get_pages() (EINVAL/EOVERFLOW/ENOENT) -> -ENOENT dst ->
    iopt_map_pages() (EPERM for WRITEABLE from a read-only source)."""
    sz, flags, dst_id, src_id, length, dst_iova, src_iova = _COPY.unpack(cmd)
    if flags & ~_MAP_FLAGS:
        return _EOPNOTSUPP, buf
    if length >= ULONG_MAX or src_iova >= ULONG_MAX or dst_iova >= ULONG_MAX:
        return _EOVERFLOW, buf
    if not flags & (WRITEABLE | READABLE):
        return _EINVAL, buf
    src = ictx.get_ioas(src_id)
    if src is None:
        return _ENOENT, buf
    rc, elms = iopt_get_pages(src.iopt, src_iova, length)
    if rc:
        return rc, buf
    dst = ictx.get_ioas(dst_id)
    if dst is None:
        for pages, _, _ in elms:
            iopt_put_pages(pages, ictx.host)
        return _ENOENT, buf
    rc, iova = iopt_map_pages(dst.iopt, elms, length, dst_iova, conv_iommu_prot(flags),
                              0 if flags & FIXED else IOPT_ALLOC_IOVA)
    if rc:
        return rc, buf
    return 0, respond(buf, size, _COPY.pack(sz, flags, dst_id, src_id, length, iova, src_iova))


def iommufd_ioas_unmap(ictx, cmd, buf, size):
    """iommufd_ioas_unmap(): -ENOENT ioas -> iova 0 + length U64_MAX unmaps all
    (0 even when empty) -> -EOVERFLOW iova or length >= ULONG_MAX ->
    iopt_unmap_iova() -> -ENOENT nothing removed (6.18+ here, before from
    iopt_unmap_iova_range()); ``length`` = bytes unmapped, written back on success."""
    sz, ioas_id, iova, length = _UNMAP_unpack(cmd)
    ioas = ictx.objects.get(ioas_id)
    if type(ioas) is not Ioas:
        return _ENOENT, buf
    iopt = ioas.iopt
    if iova == 0 and length == U64_MAX:
        rc, unmapped = iopt_unmap_all(iopt)
    else:
        # Fast path: exactly one area is [iova, iova + length - 1] (what the general
        # iopt_unmap_iova_range() walk would remove, and all it would remove).  A
        # range that fits below U64_MAX passes the EOVERFLOW check below.
        if length and iova + length <= U64_MAX and iopt.fast_paths and not iopt.lu_immutable:
            area = iopt.area_itree.remove_exact(iova, iova + length - 1)
            if area is not None:
                if iopt.domains:
                    iopt_area_unfill_domain(area, iopt.host)
                pages = area.pages
                area.pages = None
                iopt_put_pages(pages, iopt.host)
                if cmd is buf:
                    return 0, buf              # length unmapped == length sent
                return 0, respond(buf, size, _UNMAP_pack(sz, ioas_id, iova, length))
        if iova >= ULONG_MAX or length >= ULONG_MAX:
            return _EOVERFLOW, buf
        rc, unmapped = iopt_unmap_iova(iopt, iova, length)
        if not rc and not unmapped and ictx.profile.iommufd_unmap_enoent_if_nothing_removed:
            rc = _ENOENT
    if rc:
        return rc, buf
    if unmapped == length and cmd is buf:
        return 0, buf
    return 0, respond(buf, size, _UNMAP_pack(sz, ioas_id, iova, unmapped))


def iommufd_option_rlimit_mode(ictx, op: int, object_id: int, val: int):
    """iommufd_option_rlimit_mode(): -EOPNOTSUPP object_id != 0 or bad op; GET:
    1 iff MM mode; SET: -EPERM without CAP_SYS_RESOURCE (host attribute
    ``cap_sys_resource``, default True) -> -EBUSY if any object exists -> -EINVAL
    unless 0 (USER) or 1 (MM)."""
    if object_id:
        return _EOPNOTSUPP, val
    if op == uapi.IOMMU_OPTION_OP_GET:
        return 0, int(ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
    if op == uapi.IOMMU_OPTION_OP_SET:
        if not getattr(ictx.host, "cap_sys_resource", True):
            return -errno.EPERM, val
        if ictx.objects or ictx.reserved_ids:
            return -errno.EBUSY, val
        if val == 0:
            ictx.account_mode = IOPT_PAGES_ACCOUNT_USER
        elif val == 1:
            ictx.account_mode = IOPT_PAGES_ACCOUNT_MM
        else:
            return _EINVAL, val
        return 0, val
    return _EOPNOTSUPP, val


def iommufd_ioas_option(ictx, op: int, object_id: int, val: int):
    """iommufd_ioas_option() HUGE_PAGES: -ENOENT object not an IOAS; GET: 1 unless
    disabled; SET 0: iopt_disable_large_pages() (EINVAL / EADDRINUSE); SET 1;
    other values -EINVAL; bad op -EOPNOTSUPP."""
    ioas = ictx.get_ioas(object_id)
    if ioas is None:
        return _ENOENT, val
    if op == uapi.IOMMU_OPTION_OP_GET:
        return 0, int(not ioas.iopt.disable_large_pages)
    if op == uapi.IOMMU_OPTION_OP_SET:
        if val == 0:
            return iopt_disable_large_pages(ioas.iopt), val
        if val == 1:
            iopt_enable_large_pages(ioas.iopt)
            return 0, val
        return _EINVAL, val
    return _EOPNOTSUPP, val


def iommufd_option(ictx, cmd, buf, size):
    """iommufd_option() (main.c): -EOPNOTSUPP __reserved or unknown option_id;
    on success only ``val64`` is copied back."""
    _, option_id, op, reserved, object_id, val = _OPTION.unpack(cmd)
    if reserved:
        return _EOPNOTSUPP, buf
    if option_id == uapi.IOMMU_OPTION_RLIMIT_MODE:
        rc, val = iommufd_option_rlimit_mode(ictx, op, object_id, val)
    elif option_id == uapi.IOMMU_OPTION_HUGE_PAGES:
        rc, val = iommufd_ioas_option(ictx, op, object_id, val)
    else:
        return _EOPNOTSUPP, buf
    if rc:
        return rc, buf
    return 0, buf[:16] + _U64.pack(val) + buf[24:]


def iommufd_ioas_change_process(ictx, cmd, buf, size):
    """iommufd_ioas_change_process() (6.13+, profile.change_process): -EOPNOTSUPP
    __reserved; -EINVAL while any IOAS has an area that is not IOPT_ADDRESS_FILE:
    a user VA, or (6.19+) a dma-buf (``area->pages->type != IOPT_ADDRESS_FILE``;
    selftest change_process.basic).  The simulator has one
    process, so moving the source mm and the charges changes no counter."""
    _, reserved = _CHANGE.unpack(cmd)
    if reserved:
        return _EOPNOTSUPP, buf
    for obj in ictx.objects.values():
        if type(obj) is Ioas:
            for pages in iopt_pages_of(obj.iopt):
                if pages.type != IOPT_ADDRESS_FILE:
                    return _EINVAL, buf
    return 0, buf
