"""drivers/iommu/iommufd/pages.c: ``struct iopt_pages``, the memory behind IOAS areas.

An ``IoptPages`` is one MAP / MAP_FILE source (a user VA range, a file range or
a dma-buf range), shared by every area that maps a slice of it (COPY, compat
v1 splits; refcounted like ``pages->kref``).  Nothing is pinned until an area
of it sits in an IOAS with a domain (``iopt_area_fill_domain()``); then the
union of the index ranges of those areas ("domain areas", the kernel's
``pages->domains_itree``) is pinned exactly once (``npinned``) and charged
(``do_update_pinned()``), and the pins are released when the last area that
covers an index is unfilled.  Pins are ``fs.Pin`` ranges from gup.py
(``pin_user_pages()`` / ``memfd_pin_folios()``), so a device DMA reads and
writes the very pages the process and the page cache see.

Kernel names and errnos (T71 = torvalds/linux at the 7.1 merge window, pages.c
blob 9bdb2945afe1):

* ``iopt_alloc_pages()``       EINVAL length 0 or > SIZE_MAX - PAGE_SIZE (6.2+)
* ``iopt_alloc_user_pages()``  EOVERFLOW uptr + length wraps (``check_add_overflow``);
  inlined in io_pagetable.iopt_map_user_pages() (the MAP hot path)
* ``iopt_alloc_file_pages()``  with the unmerged "Require write access for writable MAP_FILE
  mappings" patch: EPERM no FMODE_WRITE / mapping_map_writable()
  (profile.map_file_requires_fmode_write); live update v1 caches the seals
* ``iopt_alloc_dmabuf_pages()`` EINVAL past the dma-buf size; EOPNOTSUPP not a VFIO
  exporter (``sym_vfio_pci_dma_buf_iommufd_map()``); ENODEV revoked (6.19+)
* pinning: GUP errors (EFAULT; VM_PFNMAP -> profile.iommufd_map_pfnmap_errno),
  ``memfd_pin_folios()`` EINVAL (not shmem/hugetlbfs, past EOF), EFAULT when the
  source mm is gone (``pfn_reader_user_pin()``: ``mmget_not_zero()``), ENOMEM over
  RLIMIT_MEMLOCK (``incr_user_locked_vm()`` / ``__account_locked_vm()``)
"""

from __future__ import annotations

import errno

from backends.host import PAGE_SHIFT, PAGE_SIZE
from ..fs import FMODE_WRITE, Held, Pin
from ..iommu import IOMMU_READ, IOMMU_WRITE
from ..gup import (gup_vma_range, memfd_pin_folios, pin_user_pages, unpin_user_page_range_dirty_lock,
                   unpin_user_pages)
from ..mmap import VM_IO, VM_PFNMAP

ULONG_MAX = SIZE_MAX = (1 << 64) - 1
MAX_NPFNS = (1 << 32) - 1                       # type_max(u32), pfn_batch npfns
IOPT_ADDRESS_USER, IOPT_ADDRESS_FILE, IOPT_ADDRESS_DMABUF = 0, 1, 2
IOPT_PAGES_ACCOUNT_NONE, IOPT_PAGES_ACCOUNT_USER, IOPT_PAGES_ACCOUNT_MM = 0, 1, 2

_EINVAL, _EFAULT, _ENOMEM = -errno.EINVAL, -errno.EFAULT, -errno.ENOMEM
_IOMMU_RW = IOMMU_READ | IOMMU_WRITE
_LEN_MAX, _PAGE_LEFT = SIZE_MAX - PAGE_SIZE, PAGE_SIZE - 1


class IoptPages:
    """struct iopt_pages for IOPT_ADDRESS_USER: ``source`` is the source mm,
    ``start`` the page-aligned uptr.  ``pins`` is None (nothing pinned), one
    ``Pin`` starting at the first index of the single domain area, or a list of
    (index, Pin) segments; ``domain_areas`` is None, one area or a list.

    When one pin holds all of the pages (a MAP of a fresh range, the common
    case), the pages are that pin themselves (``pins is pages``): they stand
    in ``PageStore.pins`` with ``store``, ``first`` and ``npages`` as a
    ``Pin`` would, which saves a Pin and its page number per live mapping.
    ``store`` (the mm's private pages, the file's page cache) is set by the
    GUP call that makes them their pin (gup_vma_range(), memfd_pin_folios())."""

    __slots__ = ("source", "start", "npages", "writable", "account_mode", "pins",
                 "domain_areas", "users", "store")
    type = IOPT_ADDRESS_USER
    page, detach = Pin.page, Pin.detach

    def __init__(self, source, start: int, npages: int, writable: bool, account_mode: int):
        self.source, self.start, self.npages = source, start, npages
        self.writable, self.account_mode = writable, account_mode
        self.pins = self.domain_areas = None
        self.users = 1

    @property
    def first(self) -> int:
        return self.start >> PAGE_SHIFT


class IoptFilePages(IoptPages):
    """IOPT_ADDRESS_FILE: ``source`` is the struct file (a reference is held),
    ``start`` the page-aligned file offset; ``mapping_writable`` is the
    i_mmap_writable count the write-access patch takes, ``seals`` what live update v1 caches at map time."""

    __slots__ = ("mapping_writable", "seals")
    type = IOPT_ADDRESS_FILE


class IoptDmabufPages(IoptPages):
    """IOPT_ADDRESS_DMABUF (6.19+): ``source`` is the dma-buf file; never pinned
    through GUP, never charged (``account_mode`` NONE)."""

    __slots__ = ()
    type = IOPT_ADDRESS_DMABUF


def mmget_not_zero(mm) -> bool:
    """A source mm whose process exited (``mm.mm_users = 0``, e.g. the selftest
    ``fork_gone`` child) cannot be pinned from any more."""
    return getattr(mm, "mm_users", 1) > 0


# ---- allocation ------------------------------------------------------------

def iopt_alloc_pages(cls, source, start_byte: int, length: int, writable: bool, host):
    """iopt_alloc_pages(): -EINVAL for length 0 or > SIZE_MAX - PAGE_SIZE; the
    account mode is NONE with CAP_IPC_LOCK, else USER (T71)."""
    if length > SIZE_MAX - PAGE_SIZE or length == 0:
        return _EINVAL
    return cls(source, 0, (length + start_byte + PAGE_SIZE - 1) >> PAGE_SHIFT, writable,
               IOPT_PAGES_ACCOUNT_NONE if host.cap_ipc_lock else IOPT_PAGES_ACCOUNT_USER)


def iopt_alloc_file_pages(host, file, start_byte: int, start: int, length: int, writable: bool):
    """iopt_alloc_file_pages() (6.13+).  With the write-access patch
    (profile.map_file_requires_fmode_write, posted 2026-06-07, not merged):
    a writable mapping needs FMODE_WRITE (-EPERM) and mapping_map_writable()
    (-EPERM on an F_SEAL_WRITE file), held until iopt_release_pages().  No file-type
    check here: a regular file only fails at pin time.  Live update v1 caches
    memfd_get_seals() (0 when it fails)."""
    mapping_writable = False
    if writable and host.profile.map_file_requires_fmode_write:
        if not file.f_mode & FMODE_WRITE:
            return -errno.EPERM
        rc = file.inode.mapping.mapping_map_writable()
        if rc:
            return rc
        mapping_writable = True
    if length > _LEN_MAX or length == 0:               # iopt_alloc_pages()
        if mapping_writable:
            file.inode.mapping.mapping_unmap_writable()
        return _EINVAL
    pages = IoptFilePages(file, start - start_byte, (length + start_byte + _PAGE_LEFT) >> PAGE_SHIFT,
                          writable, IOPT_PAGES_ACCOUNT_NONE if host.cap_ipc_lock else IOPT_PAGES_ACCOUNT_USER)
    file.refs += 1                                   # get_file()
    pages.mapping_writable = mapping_writable
    pages.seals = file.inode.seals or 0              # memfd_get_seals(), -EINVAL cached as 0
    return pages


def iopt_alloc_dmabuf_pages(host, file, start_byte: int, start: int, length: int, writable: bool):
    """iopt_alloc_dmabuf_pages() + iopt_map_dmabuf() (6.19+): -EINVAL when
    start + length - 1 is past the dma-buf or the range is too many pfns for one
    batch entry; -EOPNOTSUPP when the exporter is not vfio-pci (inode attribute
    ``exporter``, default "vfio"; "selftest" is the selftest's mock exporter);
    -ENODEV when revoked (inode attribute ``revoked``).  Never charged."""
    inode = file.inode
    if inode.i_size <= start + length - 1 or length // PAGE_SIZE >= MAX_NPFNS:
        return _EINVAL
    pages = iopt_alloc_pages(IoptDmabufPages, file, start_byte, length, writable, host)
    if isinstance(pages, int):
        return pages
    pages.account_mode = IOPT_PAGES_ACCOUNT_NONE
    pages.start = start - start_byte
    if getattr(inode, "exporter", "vfio") not in ("vfio", "selftest"):
        return -errno.EOPNOTSUPP
    if getattr(inode, "revoked", False):
        return -errno.ENODEV
    file.refs += 1                                   # dma_buf_get() reference kept by the pages
    return pages


def iopt_put_pages(pages, host) -> None:
    """iopt_put_pages() -> iopt_release_pages(): the write-access patch drops the
    i_mmap_writable count here, so F_ADD_SEALS(F_SEAL_WRITE) works again."""
    pages.users -= 1
    if pages.users:
        return
    kind = pages.type
    if kind != IOPT_ADDRESS_USER:
        file = pages.source
        if kind == IOPT_ADDRESS_FILE and pages.mapping_writable:
            file.inode.mapping.mapping_unmap_writable()
        host._fput(file)


# ---- index ranges, segments -------------------------------------------------

def area_index(area) -> tuple[int, int]:
    """iopt_area_index() / iopt_area_last_index(): the pages indexes an area uses."""
    sb = area.start_byte
    return sb >> PAGE_SHIFT, (sb + area.last - area.iova) >> PAGE_SHIFT


def _areas(pages) -> list:
    das = pages.domain_areas
    return [] if das is None else das if type(das) is list else [das]


def _segments(pages) -> list[tuple[int, Pin]]:
    p = pages.pins
    if p is None:
        return []
    if type(p) is list:
        return p
    return [(pages.domain_areas.start_byte >> PAGE_SHIFT, p)]


def _store_segments(pages, segs: list) -> None:
    das = pages.domain_areas
    if not segs:
        pages.pins = None
    elif len(segs) == 1 and das is not None and type(das) is not list \
            and segs[0][0] == das.start_byte >> PAGE_SHIFT:
        pages.pins = segs[0][1]
    else:
        pages.pins = sorted(segs, key=lambda s: s[0])


def _coverage(areas) -> list[list[int]]:
    """Merged [lo, hi] index ranges of ``areas`` (the domains_itree spans)."""
    out: list[list[int]] = []
    for lo, hi in sorted(area_index(a) for a in areas):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _subtract(lo: int, hi: int, cov) -> list[tuple[int, int]]:
    """[lo, hi] minus the ranges in ``cov``."""
    out, cur = [], lo
    for a, b in cov:
        if b < cur or a > hi:
            continue
        if a > cur:
            out.append((cur, a - 1))
        cur = max(cur, b + 1)
        if cur > hi:
            return out
    if cur <= hi:
        out.append((cur, hi))
    return out


# ---- pinning and accounting --------------------------------------------------

def do_update_pinned(pages, npages: int, inc: bool, host) -> int:
    """do_update_pinned(): USER mode charges the user's locked_vm against
    RLIMIT_MEMLOCK (incr_user_locked_vm(), -ENOMEM), MM mode mm->locked_vm
    (__account_locked_vm(), -ENOMEM), NONE nothing; pinned_vm always moves."""
    mode = pages.account_mode
    if mode == IOPT_PAGES_ACCOUNT_USER:
        if inc:
            if host.user_locked_vm + npages > host.rlimit_memlock >> PAGE_SHIFT:
                return _ENOMEM
            host.user_locked_vm += npages
        else:
            host.user_locked_vm -= npages
    elif mode == IOPT_PAGES_ACCOUNT_MM:
        if inc:
            if host.locked_vm + npages > host.rlimit_memlock >> PAGE_SHIFT:
                return _ENOMEM
            host.locked_vm += npages
        else:
            host.locked_vm -= npages
    host.pinned_vm += npages if inc else -npages
    return 0


def _pin_range(pages, lo: int, hi: int, host) -> int | list:
    """pfn_reader_user_pin() for indexes [lo, hi]: GUP (FOLL_LONGTERM, FOLL_WRITE
    if writable) on the source mm, or memfd_pin_folios() on the file; then
    pfn_reader_user_update_pinned() charges them.  Returns segments or -errno."""
    n = hi - lo + 1
    if pages.type == IOPT_ADDRESS_USER:
        mm = pages.source
        if mm is not host.mm and not mmget_not_zero(mm):
            return _EFAULT
        addr = pages.start + (lo << PAGE_SHIFT)
        pins: list[Pin] = []
        done = 0
        while done < n:
            rc, got = pin_user_pages(mm, addr + (done << PAGE_SHIFT), n - done, pages.writable, True)
            if rc <= 0:
                unpin_user_pages(pins)
                if rc == _EFAULT:
                    vma = mm.find_vma(addr + (done << PAGE_SHIFT))
                    if vma is not None and vma.vm_flags & (VM_IO | VM_PFNMAP):
                        return -host.profile.iommufd_map_pfnmap_errno
                return rc or _EFAULT
            pins += got
            done += rc
    else:
        start = pages.start + (lo << PAGE_SHIFT)
        rc, pins = memfd_pin_folios(pages.source, start, start + (n << PAGE_SHIFT) - 1)
        if rc < 0:
            return rc
    rc = do_update_pinned(pages, n, True, host)
    if rc:
        unpin_user_pages(pins)
        return rc
    segs, s = [], lo
    for pin in pins:
        segs.append((s, pin))
        s += pin.npages
    return segs


def _slice_pin(pin: Pin, off: int, n: int) -> Pin:
    """A new pin on pages [off, off+n) of ``pin`` (keeps what it held)."""
    store = pin.store
    new = Pin(store, pin.first + off, n)
    held = store.held.get(pin)
    if held is not None:
        lo, hi = new.first, new.first + n
        kept = store.held[new] = Held()
        kept.update((i, p) for i, p in held.items() if lo <= i < hi)
        kept.ranges = [(max(a, lo), min(b, hi)) for a, b in held.ranges if a < hi and b > lo]
    store.pins.add(new)
    return new


def iopt_area_fill_domain(area, host) -> int:
    """iopt_area_fill_domain(): make ``area`` a domain area of its pages, pinning
    the indexes no other domain area covers yet (a second domain or an area
    that overlaps another one re-uses the pins: the kernel reads the pfns back
    from the storage domain).  dma-buf pages pin nothing (a revoked one maps
    nothing, T71 iopt_dmabuf_revoked()).

    -EINVAL for an area with neither IOMMU_READ nor IOMMU_WRITE (only the VFIO
    compat MAP_DMA makes one): the IOMMU driver's map refuses it, VT-d's
    __domain_mapping() "(prot & (DMA_PTE_READ|DMA_PTE_WRITE)) == 0" and, with
    generic PT (7.x), pt_iommu map_range() WARN_ON(!(prot & (IOMMU_READ |
    IOMMU_WRITE))) in drivers/iommu/generic_pt/iommu_pt.h; rig run iommufd-7.2
    2026-11-23 (compat MAP_DMA flags=0 with edu attached: EINVAL)."""
    if not area.iommu_prot & _IOMMU_RW:
        return _EINVAL
    pages = area.pages
    das = pages.domain_areas
    kind = pages.type
    if kind == IOPT_ADDRESS_DMABUF:
        pages.domain_areas = area if das is None else _areas(pages) + [area]
        return 0
    sb = area.start_byte                              # area_index()
    lo, hi = sb >> PAGE_SHIFT, (sb + area.last - area.iova) >> PAGE_SHIFT
    if das is None:
        n = hi - lo + 1
        holder = pages if lo == 0 and n == pages.npages else None   # the pages hold their pin
        pin = None                                     # the general path below
        if host.fast_paths and kind == IOPT_ADDRESS_FILE:
            # Fast path (first pin of a file range): memfd_pin_folios() gives one pin.
            start = pages.start + (lo << PAGE_SHIFT)
            rc, got = memfd_pin_folios(pages.source, start, start + (n << PAGE_SHIFT) - 1, holder)
            if rc < 0:
                return rc
            pin = got[0]
        elif host.fast_paths and pages.source is host.mm:
            # Fast path (first pin, one VMA; None when it is not that case).
            pin = gup_vma_range(host.mm, pages.start + (lo << PAGE_SHIFT), n, pages.writable, holder)
        if pin is not None:
            mode = pages.account_mode                  # do_update_pinned(), inline
            if mode == IOPT_PAGES_ACCOUNT_USER:
                if host.user_locked_vm + n > host.rlimit_memlock >> PAGE_SHIFT:
                    unpin_user_page_range_dirty_lock(pin)
                    return _ENOMEM
                host.user_locked_vm += n
            elif mode == IOPT_PAGES_ACCOUNT_MM:
                if host.locked_vm + n > host.rlimit_memlock >> PAGE_SHIFT:
                    unpin_user_page_range_dirty_lock(pin)
                    return _ENOMEM
                host.locked_vm += n
            host.pinned_vm += n
            pages.domain_areas = area
            pages.pins = pin
            return 0
        segs = _pin_range(pages, lo, hi, host)
        if type(segs) is int:
            return segs
        pages.domain_areas = area
        _store_segments(pages, segs)
        return 0
    areas = _areas(pages)
    new: list = []
    for a, b in _subtract(lo, hi, _coverage(areas)):
        segs = _pin_range(pages, a, b, host)
        if type(segs) is int:
            _release_segments(pages, new, host)
            return segs
        new += segs
    old = _segments(pages)
    pages.domain_areas = areas + [area]
    _store_segments(pages, old + new)
    return 0


def _release_segments(pages, segs, host) -> None:
    pins = [pin for _, pin in segs]
    unpin_user_pages(pins)
    n = sum(pin.npages for pin in pins)
    if n:
        do_update_pinned(pages, n, False, host)


def iopt_area_unfill_domain(area, host) -> None:
    """iopt_area_unfill_domain(): drop ``area`` from its pages' domain areas and
    unpin + uncharge (update_unpinned()) the indexes no remaining one covers."""
    pages = area.pages
    das = pages.domain_areas
    if das is area:
        pin = pages.pins
        if pin is not None:
            if type(pin) is not list and host.fast_paths:   # one pin, do_update_pinned() inline
                unpin_user_page_range_dirty_lock(pin)
                n = pin.npages
                mode = pages.account_mode
                if mode == IOPT_PAGES_ACCOUNT_USER:
                    host.user_locked_vm -= n
                elif mode == IOPT_PAGES_ACCOUNT_MM:
                    host.locked_vm -= n
                host.pinned_vm -= n
            else:
                _release_segments(pages, _segments(pages), host)
            pages.pins = None
        pages.domain_areas = None
        return
    areas = _areas(pages)
    if area not in areas:
        return
    segs = _segments(pages)
    areas = [a for a in areas if a is not area]
    lo, hi = area_index(area)
    freed = _subtract(lo, hi, _coverage(areas)) if pages.type != IOPT_ADDRESS_DMABUF else []
    keep, n = [], 0
    for s, pin in segs:
        e = s + pin.npages - 1
        cuts = [(max(a, s), min(b, e)) for a, b in freed if a <= e and b >= s]
        if not cuts:
            keep.append((s, pin))
            continue
        cur = s
        for a, b in cuts:
            if a > cur:
                keep.append((cur, _slice_pin(pin, cur - s, a - cur)))
            n += b - a + 1
            cur = b + 1
        if cur <= e:
            keep.append((cur, _slice_pin(pin, cur - s, e - cur + 1)))
        unpin_user_pages((pin,))
    pages.domain_areas = None if not areas else areas[0] if len(areas) == 1 else areas
    _store_segments(pages, keep)
    if n:
        do_update_pinned(pages, n, False, host)


def iopt_area_replace_domain_area(old, new_areas) -> None:
    """iopt_area_split(): the halves take the old area's place in domains_itree."""
    pages = old.pages
    segs = _segments(pages)
    areas = [a for a in _areas(pages) if a is not old] + list(new_areas)
    pages.domain_areas = areas
    pages.pins = None
    _store_segments(pages, segs)


# ---- translation (what the IOMMU domain holds) --------------------------------

def iopt_area_translate(area, iova: int):
    """What iommu_iova_to_phys() gives for ``iova`` inside a filled area:
    (pin, index in pin, IOMMU prot, byte offset in the page) or None.  The
    first page of an area starts at its page_offset (batch_to_domain())."""
    pages = area.pages
    b = area.start_byte + (iova - area.iova)
    idx, off = b >> PAGE_SHIFT, b & (PAGE_SIZE - 1)
    if pages.type == IOPT_ADDRESS_DMABUF:
        inode = pages.source.inode
        if getattr(inode, "revoked", False) or pages.domain_areas is None:
            return None
        return Pin(inode.mapping, (pages.start >> PAGE_SHIFT) + idx, 1), 0, area.iommu_prot, off
    for s, pin in _segments(pages):
        if s <= idx < s + pin.npages:
            return pin, idx - s, area.iommu_prot, off
    return None


def npinned(pages) -> int:
    """pages->npinned."""
    return sum(pin.npages for _, pin in _segments(pages))
