"""drivers/iommu/iommufd/io_pagetable.c: the IOVA side of an IOAS.

``IoPagetable`` is ``struct io_pagetable``: the area tree (``IovaTree``), the
reserved ranges (domain apertures, device reserved regions; they may overlap
each other, so a short list), the user's allowed ranges, the attached domains
(HWPTs) and ``iova_alignment`` (1 with no domain; the largest domain minimum
page size; PAGE_SIZE with HUGE_PAGES=0).  Each function keeps its kernel name
and returns 0 / -errno (or (rc, value)); the docstrings name the errno rules
(torvalds/linux: T71 = the 7.1 merge window, io_pagetable.c blob 24d4917105d9;
the 6.2-6.17 form at 037dd1308c6d).
"""

from __future__ import annotations

import errno
import heapq

from backends.host import HPAGE_SIZE, PAGE_SIZE
from ..fs import DMABUF
from ..gup import unpin_user_page_range_dirty_lock
from ..iommu import IOMMU_WRITE, IovaTree
from .pages import (IOPT_ADDRESS_DMABUF, IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_NONE,
                    IOPT_PAGES_ACCOUNT_USER, PAGE_SHIFT, ULONG_MAX, IoptPages, area_index,
                    iopt_alloc_dmabuf_pages, iopt_alloc_file_pages, iopt_area_fill_domain,
                    iopt_area_replace_domain_area, iopt_area_translate, iopt_area_unfill_domain,
                    iopt_put_pages)

IOPT_ALLOC_IOVA = 1
_PAGE_MASK = ULONG_MAX & ~(PAGE_SIZE - 1)
_PAGE_LEFT = PAGE_SIZE - 1
_LEN_MAX = ULONG_MAX - PAGE_SIZE
_EINVAL, _EEXIST, _EOVERFLOW, _ENOENT, _EBUSY = (-errno.EINVAL, -errno.EEXIST, -errno.EOVERFLOW,
                                                 -errno.ENOENT, -errno.EBUSY)
_EADDRINUSE = -errno.EADDRINUSE


class IoptArea:
    """struct iopt_area: [iova, last] of ``pages`` from byte ``start_byte``
    (page_offset = start_byte % PAGE_SIZE) with ``iommu_prot``."""

    __slots__ = ("iova", "last", "pages", "start_byte", "iommu_prot")

    def __init__(self, iova: int, last: int, pages, start_byte: int, iommu_prot: int):
        self.iova, self.last, self.pages = iova, last, pages
        self.start_byte, self.iommu_prot = start_byte, iommu_prot

    def __repr__(self) -> str:
        return f"IoptArea({self.iova:#x}-{self.last:#x}, prot={self.iommu_prot})"


class IoptReserved:
    """struct iopt_reserved: [iova, last] reserved by ``owner`` (a domain for
    its aperture, a device for its reserved regions, None for test reservations)."""

    __slots__ = ("iova", "last", "owner")

    def __init__(self, iova: int, last: int, owner):
        self.iova, self.last, self.owner = iova, last, owner


class IoPagetable:
    """struct io_pagetable (iopt_init_table(): alignment 1, no domains)."""

    __slots__ = ("area_itree", "reserved", "resv_lo", "resv_hi", "allowed", "domains",
                 "iova_alignment", "disable_large_pages", "lu_immutable", "host", "profile", "fast_paths")

    def __init__(self, host):
        self.area_itree = IovaTree()
        self.reserved: list[IoptReserved] = []
        self.resv_lo, self.resv_hi = 0, ULONG_MAX   # iopt_reserved_hit(): no reserved IOVA in here
        self.allowed: list[tuple[int, int]] = []
        self.domains: list = []
        self.iova_alignment = 1
        self.disable_large_pages = False
        self.lu_immutable = False
        self.host = host
        self.profile = host.profile
        self.fast_paths = host.fast_paths          # iopt_map_user_pages(), iommufd_ioas_unmap()

    def iova_to_page(self, iova: int):
        """The Translation protocol (iommu.py) of a domain of this IOAS."""
        if not 0 <= iova <= ULONG_MAX:
            return None
        area = self.area_itree.find(iova)
        if area is None or area.pages is None:
            return None
        return iopt_area_translate(area, iova)


# ---- lookups -----------------------------------------------------------------

def iopt_reserved_iter_first(iopt: IoPagetable, start: int, last: int):
    for r in iopt.reserved:
        if r.iova <= last and r.last >= start:
            return r
    return None


def iopt_reserved_hit(iopt: IoPagetable, start: int, last: int) -> bool:
    """iopt_reserved_iter_first() is not None.  The map paths ask it once per
    MAP with [start, last] almost always in the same gap between reserved
    ranges, so the gap of the last miss is kept ([resv_lo, resv_hi]: the fast
    paths test it inline and call this only outside it); iopt_reserve_iova()
    and iopt_remove_reserved_iova() forget it."""
    if iopt.resv_lo <= start and last <= iopt.resv_hi:
        return False
    if iopt_reserved_iter_first(iopt, start, last) is not None:
        return True
    lo, hi = 0, ULONG_MAX
    for r in iopt.reserved:
        if r.last < start:
            lo = max(lo, r.last + 1)
        elif r.iova > last:
            hi = min(hi, r.iova - 1)
    iopt.resv_lo, iopt.resv_hi = lo, hi
    return False


def iopt_allowed_iter_first(iopt: IoPagetable, start: int, last: int):
    for a in iopt.allowed:
        if a[0] <= last and a[1] >= start:
            return a
    return None


def _spans(ranges: list[tuple[int, int]], start: int, last: int) -> list[tuple[int, int]]:
    """interval_tree_for_each_span() "used" spans of ``ranges`` clipped to [start, last]
    (overlapping or adjacent nodes make one span)."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        a, b = max(a, start), min(b, last)
        if a > b:
            continue
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def reserved_holes(iopt: IoPagetable, start: int = 0, last: int = ULONG_MAX) -> list[tuple[int, int]]:
    """The holes of reserved_itree over [start, last]: IOVA_RANGES, GET_INFO IOVA_RANGE."""
    out, cur = [], start
    for a, b in _spans([(r.iova, r.last) for r in iopt.reserved], start, last):
        if a > cur:
            out.append((cur, a - 1))
        cur = b + 1
    if cur <= last:
        out.append((cur, last))
    return out


def _double_span_holes(iopt: IoPagetable, start: int, last: int):
    """interval_tree_for_each_double_span(reserved_itree, area_itree): the holes
    of both trees in [start, last], in IOVA order, lazily."""
    res = sorted((r.iova, r.last) for r in iopt.reserved if r.last >= start and r.iova <= last)
    areas = ((a.iova, a.last) for a in iopt.area_itree.iter_from(start))
    cur = start
    for a, b in heapq.merge(res, areas):
        if a > last:
            break
        if b < cur:
            continue
        if a > cur:
            yield cur, a - 1
        cur = b + 1
        if cur > last:
            return
    if cur <= last:
        yield cur, last


# ---- IOVA allocation and checks ----------------------------------------------

def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _alloc_iova_check_range(start: int, last: int, length: int, align: int, page_offset: int,
                            capped: bool) -> int | None:
    """__alloc_iova_check_range(): ALIGN_UP(start) | page_offset must leave length
    bytes before last.  Since 8f6887349b2f an ALIGN() overflow skips the range;
    before, it wrapped (the syzbot-found corruption, caught afterwards by the
    CONFIG_IOMMUFD_TEST re-check)."""
    if not capped and last - start < length - 1:
        return None
    aligned = start + align - 1
    if aligned > ULONG_MAX:
        if capped:
            return None
        aligned &= ULONG_MAX
    aligned = (aligned & ~(align - 1)) | page_offset
    if (aligned >= last if capped else aligned > last) or last - aligned < length - 1:
        return None
    return aligned


def iopt_alloc_iova(iopt: IoPagetable, addr: int, length: int) -> tuple[int, int]:
    """iopt_alloc_iova(): -EOVERFLOW length 0 or >= ULONG_MAX/2; alignment is
    min(roundup_pow_of_two(length), 1 << ffs(addr)) (capped at HPAGE_SIZE since
    8f6887349b2f, profile.iommufd_alloc_iova_align_cap); -EINVAL if below
    iova_alignment; first hole of reserved + areas inside the allowed ranges
    (default [PAGE_SIZE, ULONG_MAX - PAGE_SIZE], so never IOVA 0); -ENOSPC."""
    page_offset = addr % PAGE_SIZE
    if length == 0 or length >= ULONG_MAX // 2:
        return _EOVERFLOW, 0
    align = _roundup_pow_of_two(length)
    if addr:
        align = min(align, addr & -addr)
    capped = iopt.profile.iommufd_alloc_iova_align_cap
    if capped and align >= HPAGE_SIZE:
        align = HPAGE_SIZE
    if align < iopt.iova_alignment:
        return _EINVAL, 0
    window = (PAGE_SIZE, ULONG_MAX - PAGE_SIZE)
    spans = _spans(iopt.allowed, *window) if iopt.allowed else [window]
    for s, l in spans:
        s = _alloc_iova_check_range(s, l, length, align, page_offset, capped)
        if s is None:
            continue
        for hs, hl in _double_span_holes(iopt, s, l):
            iova = _alloc_iova_check_range(hs, hl, length, align, page_offset, capped)
            if iova is not None:
                return 0, iova
    return -errno.ENOSPC, 0


def iopt_check_iova(iopt: IoPagetable, iova: int, length: int) -> int:
    """iopt_check_iova(): -EINVAL iova not aligned to iova_alignment (1 with no
    domain: anything goes) -> -EOVERFLOW iova + length - 1 wraps -> -EINVAL a
    reserved range intersects -> -EEXIST an area intersects."""
    if iova & (iopt.iova_alignment - 1):
        return _EINVAL
    last = iova + length - 1
    if last > ULONG_MAX:
        return _EOVERFLOW
    if iopt.reserved and iopt_reserved_iter_first(iopt, iova, last) is not None:
        return _EINVAL
    if iopt.area_itree.first_overlap(iova, last) is not None:
        return _EEXIST
    return 0


def iopt_insert_area(iopt: IoPagetable, pages, iova: int, start_byte: int, length: int,
                     iommu_prot: int) -> IoptArea | int:
    """iopt_insert_area(): -EPERM a WRITE mapping of read-only pages (COPY) ->
    -EINVAL page_offset not aligned to iova_alignment -> -EOVERFLOW."""
    if iommu_prot & IOMMU_WRITE and not pages.writable:
        return -errno.EPERM
    if start_byte % PAGE_SIZE & (iopt.iova_alignment - 1):
        return _EINVAL
    last = iova + length - 1
    if last > ULONG_MAX:
        return _EOVERFLOW
    area = IoptArea(iova, last, pages, start_byte, iommu_prot)
    iopt.area_itree.insert(area)
    return area


def iopt_alloc_area_pages(iopt: IoPagetable, elms: list, length: int, iova: int,
                          iommu_prot: int, flags: int) -> tuple[int, int, list]:
    """iopt_alloc_area_pages(): live update v1: -EBUSY once preserved (11/14: the
    first check under iova_rwsem) -> -EINVAL length 0 or not aligned -> iopt_alloc_iova()
    (auto; guided by the first source address) or iopt_check_iova() (FIXED) ->
    one area per (pages, start_byte, length) element."""
    if iopt.lu_immutable:
        return _EBUSY, 0, []
    if length & (iopt.iova_alignment - 1) or not length:
        return _EINVAL, 0, []
    if flags & IOPT_ALLOC_IOVA:
        pages, start_byte, _ = elms[0]
        rc, iova = iopt_alloc_iova(iopt, pages.start + start_byte, length)
        if rc:
            return rc, 0, []
        if iopt_check_iova(iopt, iova, length):   # the CONFIG_IOMMUFD_TEST WARN_ON re-check
            return _EINVAL, 0, []
    else:
        rc = iopt_check_iova(iopt, iova, length)
        if rc:
            return rc, 0, []
    areas, cur = [], iova
    for pages, start_byte, n in elms:
        area = iopt_insert_area(iopt, pages, cur, start_byte, n, iommu_prot)
        if type(area) is int:
            for a in areas:
                iopt.area_itree.remove(a)
            return area, 0, []
        areas.append(area)
        cur += n
    return 0, iova, areas


def iopt_map_pages(iopt: IoPagetable, elms: list, length: int, iova: int, iommu_prot: int,
                   flags: int) -> tuple[int, int]:
    """iopt_map_pages(): allocate the areas, then iopt_fill_domains_pages() pins
    them if the IOAS has a domain (lazy otherwise); on failure everything is
    undone and the element references dropped."""
    host = iopt.host
    rc, iova, areas = iopt_alloc_area_pages(iopt, elms, length, iova, iommu_prot, flags)
    if not rc and iopt.domains:
        for i, area in enumerate(areas):
            rc = iopt_area_fill_domain(area, host)
            if rc:
                for a in areas[:i]:
                    iopt_area_unfill_domain(a, host)
                break
    if rc:
        for a in areas:
            iopt.area_itree.remove(a)
        for pages, _, _ in elms:
            iopt_put_pages(pages, host)
        return rc, 0
    return 0, iova


def iopt_map_user_pages(ictx, iopt: IoPagetable, iova: int, uptr: int, length: int,
                        iommu_prot: int, flags: int) -> tuple[int, int]:
    """iopt_map_user_pages(): iopt_alloc_user_pages() (-EOVERFLOW, -EINVAL) then
    iopt_map_common().  The common case (FIXED, aligned, no reserved range hit)
    runs inline with the same order of checks: one tree search for the EEXIST
    check and the insertion, then the pin when a domain exists."""
    if uptr + length > ULONG_MAX:
        return _EOVERFLOW, 0
    if length > _LEN_MAX or length == 0:
        return _EINVAL, 0
    host = iopt.host
    down = uptr & _PAGE_MASK
    start_byte = uptr - down
    # iopt_alloc_pages(): NONE with CAP_IPC_LOCK, else USER, which iopt_map_common()
    # makes MM in an MM-mode context: the context's mode (USER or MM).
    mode = IOPT_PAGES_ACCOUNT_NONE if host.cap_ipc_lock else ictx.account_mode
    pages = IoptPages(host.mm, down, (length + start_byte + _PAGE_LEFT) >> PAGE_SHIFT,
                      (iommu_prot & IOMMU_WRITE) != 0, mode)
    align = iopt.iova_alignment - 1
    last = iova + length - 1
    if flags or iopt.lu_immutable or last > ULONG_MAX or not iopt.fast_paths \
            or (align and (length & align or iova & align or start_byte & align)) \
            or (iova < iopt.resv_lo or last > iopt.resv_hi) and iopt_reserved_hit(iopt, iova, last):
        return iopt_map_pages(iopt, [(pages, start_byte, length)], length, iova, iommu_prot, flags)
    area = IoptArea(iova, last, pages, start_byte, iommu_prot)
    if iopt.area_itree.insert_free(area) is not None:
        return _EEXIST, 0
    if iopt.domains:
        rc = iopt_area_fill_domain(area, host)
        if rc:
            iopt.area_itree.remove(area)
            return rc, 0
    return 0, iova


def iopt_map_file_pages(ictx, iopt: IoPagetable, iova: int, file, start: int, length: int,
                        iommu_prot: int, flags: int) -> tuple[int, int]:
    """iopt_map_file_pages(): -EINVAL length 0 -> -EOVERFLOW start + length - 1
    wraps -> dma-buf or file pages -> iopt_map_common().  ``file`` is the struct
    file ioas.c got (6.13-6.18) or, from 6.19 ("iommufd: Have iopt_map_file_pages
    convert the fd to a file"), the fd: dma_buf_get(fd) (profile.map_file_dmabuf),
    else fget(fd), -EBADF, after the length checks."""
    if not length:
        return _EINVAL, 0
    if start + length - 1 > ULONG_MAX:
        return _EOVERFLOW, 0
    host = iopt.host
    dmabuf = False
    if type(file) is int:
        file = host.fds.get(file)                      # fget()
        if file is None:
            return -errno.EBADF, 0
        dmabuf = file.inode.kind == DMABUF and iopt.profile.map_file_dmabuf
    start_byte = start % PAGE_SIZE
    alloc = iopt_alloc_dmabuf_pages if dmabuf else iopt_alloc_file_pages
    pages = alloc(host, file, start_byte, start, length, (iommu_prot & IOMMU_WRITE) != 0)
    if type(pages) is int:
        return pages, 0
    if pages.account_mode == IOPT_PAGES_ACCOUNT_USER:  # iopt_map_common(): MM in an MM-mode
        pages.account_mode = ictx.account_mode           # context (the context's USER or MM)
    # The common case (file pages, FIXED, aligned, no reserved range hit) inline, as
    # in iopt_map_user_pages(): one tree search for the EEXIST check and the insertion.
    align = iopt.iova_alignment - 1
    last = iova + length - 1
    if dmabuf or flags or iopt.lu_immutable or last > ULONG_MAX or not iopt.fast_paths \
            or (align and (length & align or iova & align or start_byte & align)) \
            or (iova < iopt.resv_lo or last > iopt.resv_hi) and iopt_reserved_hit(iopt, iova, last):
        return iopt_map_pages(iopt, [(pages, start_byte, length)], length, iova, iommu_prot, flags)
    area = IoptArea(iova, last, pages, start_byte, iommu_prot)
    if iopt.area_itree.insert_free(area) is not None:
        iopt_put_pages(pages, host)
        return _EEXIST, 0
    if iopt.domains:
        rc = iopt_area_fill_domain(area, host)
        if rc:
            iopt.area_itree.remove(area)
            iopt_put_pages(pages, host)
            return rc, 0
    return 0, iova


def iopt_get_pages(iopt: IoPagetable, iova: int, length: int) -> tuple[int, list]:
    """iopt_get_pages() (COPY): -EINVAL length 0 -> -EOVERFLOW -> -ENOENT unless
    contiguous areas cover [iova, iova + length - 1]; sub-ranges of areas are
    fine (selftest copy_sweep).  Each element holds a pages reference."""
    if not length:
        return _EINVAL, []
    last_iova = iova + length - 1
    if last_iova > ULONG_MAX:
        return _EOVERFLOW, []
    elms, cur = [], iova
    area = iopt.area_itree.find(iova)
    while area is not None and area.pages is not None and area.iova <= cur:
        last = min(last_iova, area.last)
        elms.append((area.pages, area.start_byte + (cur - area.iova), last - cur + 1))
        if last_iova <= area.last:
            for pages, _, _ in elms:
                pages.users += 1
            return 0, elms
        cur = area.last + 1
        area = iopt.area_itree.find(cur)
        if area is not None and area.iova != cur:
            break
    return _ENOENT, []


# ---- unmap -----------------------------------------------------------------------

def iopt_unmap_iova_range(iopt: IoPagetable, start: int, last: int) -> tuple[int, int]:
    """iopt_unmap_iova_range(): areas in IOVA order; -ENOENT as soon as one is not
    fully inside [start, last] (earlier ones are already gone).  Nothing to unmap:
    -ENOENT before 6.18, 0 from 6.18 (afb47765f923, profile.compat_empty_unmap_ok).
    Live update v1: -EBUSY once the IOAS is preserved.  Returns (rc, bytes)."""
    if iopt.lu_immutable:
        return _EBUSY, 0
    host = iopt.host
    tree = iopt.area_itree
    rc = 0 if iopt.profile.compat_empty_unmap_ok else _ENOENT
    unmapped = 0
    filled = bool(iopt.domains)
    for area in tree.overlapping(start, last):
        if area.iova < start or area.last > last:
            return _ENOENT, unmapped
        tree.remove(area)
        if filled:
            iopt_area_unfill_domain(area, host)
        iopt_put_pages(area.pages, host)
        area.pages = None
        unmapped += area.last - area.iova + 1
    return (0 if unmapped else rc), unmapped


def iopt_unmap_iova(iopt: IoPagetable, iova: int, length: int) -> tuple[int, int]:
    """iopt_unmap_iova(): -EINVAL length 0 -> -EOVERFLOW (no alignment check:
    the range only has to cover whole areas)."""
    if not length:
        return _EINVAL, 0
    last = iova + length - 1
    if last > ULONG_MAX:
        return _EOVERFLOW, 0
    return iopt_unmap_iova_range(iopt, iova, last)


def iopt_unmap_all(iopt: IoPagetable) -> tuple[int, int]:
    """iopt_unmap_all(): an empty IOAS is success in every version.  Fast path:
    every area is inside [0, ULONG_MAX], so the tree is emptied at once and the
    areas released in IOVA order, as the general walk removes them one by one."""
    if not iopt.fast_paths or iopt.lu_immutable:
        rc, n = iopt_unmap_iova_range(iopt, 0, ULONG_MAX)
        return (0 if rc == _ENOENT else rc), n
    host = iopt.host
    filled = bool(iopt.domains)
    unmapped = 0
    for area in iopt.area_itree.clear():
        if filled:
            iopt_area_unfill_domain(area, host)
        iopt_put_pages(area.pages, host)
        area.pages = None
        unmapped += area.last - area.iova + 1
    return 0, unmapped


# ---- allowed / reserved ---------------------------------------------------------

def iopt_set_allow_iova(iopt: IoPagetable, ranges: list[tuple[int, int]]) -> int:
    """iopt_set_allow_iova(): -EADDRINUSE (old list kept) if a new range hits a
    reserved one; existing areas are not checked."""
    for a, b in ranges:
        if iopt_reserved_iter_first(iopt, a, b) is not None:
            return _EADDRINUSE
    iopt.allowed = sorted(ranges)
    return 0


def iopt_reserve_iova(iopt: IoPagetable, start: int, last: int, owner) -> int:
    """iopt_reserve_iova(): -EADDRINUSE if an area or an allowed range intersects."""
    if iopt.area_itree.first_overlap(start, last) is not None \
            or iopt_allowed_iter_first(iopt, start, last) is not None:
        return _EADDRINUSE
    iopt.reserved.append(IoptReserved(start, last, owner))
    iopt.resv_lo, iopt.resv_hi = 1, 0
    return 0


def iopt_remove_reserved_iova(iopt: IoPagetable, owner) -> None:
    iopt.reserved = [r for r in iopt.reserved if r.owner is not owner]
    iopt.resv_lo, iopt.resv_hi = 1, 0


def iopt_table_enforce_dev_resv_regions(iopt: IoPagetable, idev) -> int:
    """iopt_table_enforce_dev_resv_regions(): the device's reserved regions
    (e.g. the x86 MSI window) become reserved IOVA owned by the device;
    -EADDRINUSE when one hits an area or an allowed range (all undone)."""
    for start, last in idev.dev.hw.reserved:
        rc = iopt_reserve_iova(iopt, start, last, idev)
        if rc:
            iopt_remove_reserved_iova(iopt, idev)
            return rc
    return 0


# ---- domains and alignment ---------------------------------------------------------

def _min_pgsize(hwpt) -> int:
    return hwpt.hw.min_pgsize


def iopt_check_iova_alignment(iopt: IoPagetable, new_alignment: int) -> int:
    """iopt_check_iova_alignment(): -EADDRINUSE when an area's iova, length or
    page_offset does not fit a larger alignment."""
    mask = new_alignment - 1
    for a in iopt.area_itree:
        if a.iova & mask or (a.last - a.iova + 1) & mask or (a.start_byte % PAGE_SIZE) & mask:
            return _EADDRINUSE
    return 0


def iopt_fill_domain(iopt: IoPagetable) -> int:
    """iopt_fill_domain(): the first domain pins every area (all or nothing);
    further domains copy from the storage domain and pin nothing new."""
    if iopt.domains:
        return 0
    host = iopt.host
    done = []
    for area in iopt.area_itree:
        rc = iopt_area_fill_domain(area, host)
        if rc:
            for a in done:
                iopt_area_unfill_domain(a, host)
            return rc
        done.append(area)
    return 0


def iopt_table_add_domain(iopt: IoPagetable, hwpt) -> int:
    """iopt_table_add_domain(): -EINVAL a minimum page above PAGE_SIZE ->
    -EADDRINUSE areas misaligned for the new alignment -> -EADDRINUSE an area
    outside the aperture (which becomes reserved, owned by the domain) ->
    iopt_fill_domain() errors (pinning: EFAULT, EINVAL, ENOMEM)."""
    new_alignment = max(_min_pgsize(hwpt), iopt.iova_alignment)
    if new_alignment > PAGE_SIZE:
        return _EINVAL
    if new_alignment != iopt.iova_alignment:
        rc = iopt_check_iova_alignment(iopt, new_alignment)
        if rc:
            return rc
    ap_start, ap_end = hwpt.hw.aperture
    rc = 0
    if ap_start != 0:
        rc = iopt_reserve_iova(iopt, 0, ap_start - 1, hwpt)
    if not rc and ap_end != ULONG_MAX:
        rc = iopt_reserve_iova(iopt, ap_end + 1, ULONG_MAX, hwpt)
    if not rc:
        rc = iopt_fill_domain(iopt)
    if rc:
        iopt_remove_reserved_iova(iopt, hwpt)
        return rc
    iopt.iova_alignment = new_alignment
    iopt.domains.append(hwpt)
    return 0


def iopt_calculate_iova_alignment(iopt: IoPagetable) -> int:
    """iopt_calculate_iova_alignment(): PAGE_SIZE with large pages disabled,
    else 1, raised to every domain's minimum page; -EADDRINUSE if areas do not
    fit a larger one."""
    new = PAGE_SIZE if iopt.disable_large_pages else 1
    for d in iopt.domains:
        new = max(new, _min_pgsize(d))
    if new > iopt.iova_alignment:
        rc = iopt_check_iova_alignment(iopt, new)
        if rc:
            return rc
    iopt.iova_alignment = new
    return 0


def iopt_table_remove_domain(iopt: IoPagetable, hwpt) -> None:
    """iopt_table_remove_domain(): the last domain unpins every area."""
    if hwpt not in iopt.domains:
        return
    iopt.domains.remove(hwpt)
    if not iopt.domains:
        iopt_unfill_domain(iopt)
    iopt_remove_reserved_iova(iopt, hwpt)
    iopt_calculate_iova_alignment(iopt)


def iopt_unfill_domain(iopt: IoPagetable) -> None:
    """iopt_unfill_domain() of the last domain: iopt_area_unfill_domain() of
    every area.  Fast path: an area that is its pages' one domain area, the
    pages holding their one pin themselves (the common case), is unpinned
    here, and the charges are dropped once per account mode at the end (the
    sums iopt_area_unfill_domain() would drop area by area)."""
    host = iopt.host
    if not host.fast_paths:
        for area in iopt.area_itree:
            iopt_area_unfill_domain(area, host)
        return
    uncharged = [0, 0, 0]                      # by IOPT_PAGES_ACCOUNT_NONE, _USER, _MM
    for area in iopt.area_itree:
        pages = area.pages
        pin = pages.pins
        if pin is pages and pages.domain_areas is area:     # the pages are their one pin
            unpin_user_page_range_dirty_lock(pin)
            uncharged[pages.account_mode] += pin.npages
            pages.pins = pages.domain_areas = None
        else:
            iopt_area_unfill_domain(area, host)
    host.user_locked_vm -= uncharged[IOPT_PAGES_ACCOUNT_USER]
    host.locked_vm -= uncharged[IOPT_PAGES_ACCOUNT_MM]
    host.pinned_vm -= sum(uncharged)


def iopt_disable_large_pages(iopt: IoPagetable) -> int:
    """iopt_disable_large_pages() (HUGE_PAGES=0, compat TYPE1): -EINVAL when
    domains already hold mappings; -EADDRINUSE when areas do not fit PAGE_SIZE."""
    if iopt.disable_large_pages:
        return 0
    if iopt.domains and len(iopt.area_itree):
        return _EINVAL
    iopt.disable_large_pages = True
    rc = iopt_calculate_iova_alignment(iopt)
    if rc:
        iopt.disable_large_pages = False
    return rc


def iopt_enable_large_pages(iopt: IoPagetable) -> None:
    iopt.disable_large_pages = False
    iopt_calculate_iova_alignment(iopt)


# ---- VFIO type1 (v1) compatibility: splitting ------------------------------------

def iopt_area_split(iopt: IoPagetable, area: IoptArea, iova: int) -> int:
    """iopt_area_split(): ``iova`` becomes the last byte of the left half; no-op
    at either end; -EOPNOTSUPP for dma-buf (6.19+); -EINVAL when the cut is not
    aligned (iova + 1 or its pages byte) or the area may sit in large IOPTEs."""
    if iova == area.iova or iova == area.last:
        return 0
    pages = area.pages
    if pages is None:
        return _EBUSY
    if pages.type == IOPT_ADDRESS_DMABUF:
        return -errno.EOPNOTSUPP
    align = iopt.iova_alignment
    new_start = iova + 1
    if new_start & (align - 1) or (area.start_byte + new_start - area.iova) & (align - 1):
        return _EINVAL
    if iopt.domains and not iopt.disable_large_pages:
        return _EINVAL
    tree = iopt.area_itree
    tree.remove(area)
    lhs = IoptArea(area.iova, iova, pages, area.start_byte, area.iommu_prot)
    rhs = IoptArea(new_start, area.last, pages, area.start_byte + new_start - area.iova,
                   area.iommu_prot)
    tree.insert(lhs)
    tree.insert(rhs)
    pages.users += 1
    if iopt.domains:
        iopt_area_replace_domain_area(area, (lhs, rhs))
    return 0


def iopt_cut_iova(iopt: IoPagetable, iovas: list[int]) -> int:
    """iopt_cut_iova(): split the areas containing each iova."""
    for iova in iovas:
        if not 0 <= iova <= ULONG_MAX:
            continue
        area = iopt.area_itree.find(iova)
        if area is None:
            continue
        rc = iopt_area_split(iopt, area, iova)
        if rc:
            return rc
    return 0


def iopt_pages_of(iopt: IoPagetable) -> list:
    """Every distinct iopt_pages an IOAS maps (for checks across areas)."""
    seen: dict[int, object] = {}
    for a in iopt.area_itree:
        seen.setdefault(id(a.pages), a.pages)
    return list(seen.values())


__all__ = [n for n in dir() if n.startswith(("iopt_", "Io", "IOPT"))] + ["reserved_holes",
                                                                          "area_index"]
