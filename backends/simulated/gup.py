"""mm/gup.c: pin_user_pages(), memfd_pin_folios(), check_vma_flags(); and the
GUP walk behind process_vm_readv/writev (mm/process_vm_access.c).

Pins are ranges (``fs.Pin``) over the ``PageStore`` the process itself reads
and writes: the page cache for shared mappings, the private COW pages for
private ones.  A device writing ``pin.page(i).data`` is seen by read_mem() and
pread().
"""

from __future__ import annotations

import errno

from backends.host import PAGE_SHIFT, PAGE_SIZE, page_align
from .fs import HUGETLBFS, SHMEM, File, Page, PageStore, Pin
from .mmap import (MM, VM_IO, VM_MAYSHARE, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE,
                   VMA)


# check_vma_flags() passes for these bits of an anonymous VMA: VM_IO/VM_PFNMAP
# clear and VM_WRITE (FOLL_WRITE) or VM_READ set.
_FAST_WRITE, _FAST_READ = VM_IO | VM_PFNMAP | VM_WRITE, VM_IO | VM_PFNMAP | VM_READ
_PAGE_LEFT = PAGE_SIZE - 1
_MEMFD_KINDS = (SHMEM, HUGETLBFS)                  # what memfd_pin_folios() takes

def writable_file_mapping_allowed(vma: VMA, longterm: bool, profile) -> bool:
    """writable_file_mapping_allowed(): a FOLL_LONGTERM write pin of a shared
    writable mapping of a file on a writeback filesystem (vma_needs_dirty_tracking())
    is refused; anon, shmem, hugetlbfs are fine.  Since 6.5 (8ac268436e6d,
    ``profile.longterm_pin_refuses_writable_file``); 6.1 pins it."""
    if not longterm or vma.file is None or not profile.longterm_pin_refuses_writable_file:
        return True
    shared_writable = vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE
    return not (shared_writable and vma.file.inode.can_writeback())


def check_vma_flags(vma: VMA, write: bool, longterm: bool, profile) -> int:
    """check_vma_flags() without FOLL_FORCE: -EFAULT for VM_IO|VM_PFNMAP, for a
    long-term write pin of a writeback-fs shared mapping, for a write to a VMA
    without VM_WRITE, for a read of a VMA without VM_READ."""
    if vma.vm_flags & (VM_IO | VM_PFNMAP):
        return -errno.EFAULT
    if write:
        if not writable_file_mapping_allowed(vma, longterm, profile):
            return -errno.EFAULT
        if not vma.vm_flags & VM_WRITE:
            return -errno.EFAULT
    elif not vma.vm_flags & VM_READ:
        return -errno.EFAULT
    return 0


def _gup_page(mm: MM, addr: int, write: bool, longterm: bool, pin: bool) -> Page | int:
    vma = mm.find_vma(addr)
    if vma is None:
        return -errno.EFAULT
    err = check_vma_flags(vma, write, longterm, mm.profile)
    if err:
        return err
    # gup_must_unshare(): a R/O FOLL_LONGTERM pin of a COW mapping (private,
    # VM_MAYWRITE) unshares, i.e. gets its own private copy like a write would.
    unshare = pin and longterm and not vma.vm_flags & VM_SHARED and bool(vma.vm_flags & VM_MAYWRITE)
    return mm.fault(vma, addr, write=write, unshare=unshare, pin=pin)


def _pin_segment(mm: MM, vma: VMA, addr: int, n: int, write: bool, longterm: bool
                 ) -> tuple[PageStore, int, int]:
    """(store, first index, pages) the kernel would pin for ``n`` pages of
    ``vma`` from ``addr``; fewer pages when the file ends (SIGBUS -> -EFAULT)."""
    vpn = addr // PAGE_SIZE
    if vma.file is not None:
        inode = vma.file.inode
        pg = vma.pgoff_of(addr)
        n = max(0, min(n, page_align(inode.i_size, inode.page_size) // PAGE_SIZE - pg))
        if vma.vm_flags & VM_MAYSHARE:
            return inode.mapping, pg, n
        # Private file mapping: a write or a long-term pin of a VM_MAYWRITE
        # mapping (gup_must_unshare()) pins the process's own COW copies,
        # copied now from the file pages that exist (absent ones are zeros).
        if write or (longterm and vma.vm_flags & VM_MAYWRITE):
            anon, cache = mm.anon, inode.mapping.pages
            for i in (range(n) if n <= len(cache) else
                      [k - pg for k in cache if pg <= k < pg + n]):
                if vpn + i not in anon and pg + i in cache:
                    anon[vpn + i] = Page(cache[pg + i].data)
            return mm.private, vpn, n
        if vpn not in mm.anon:                 # R/O short-term pin: the file page itself
            return inode.mapping, pg, 1
        return mm.private, vpn, 1
    return mm.private, vpn, n


def gup_vma_range(mm: MM, addr: int, npages: int, write, holder=None) -> Pin | None:
    """pin_user_pages() of the common case in one step: one anonymous VMA
    holds all of [addr, +npages) and check_vma_flags() passes (VM_IO and
    VM_PFNMAP clear, VM_WRITE for a write, VM_READ for a read), so the pages
    are the process's private pages and one ``Pin`` holds them (``holder``
    in its place, see pin_user_pages(); it gets the pin's ``store``).  Returns that pin, registered in
    ``mm.private``, or None with nothing pinned: not the common case (or
    ``mm.fast_paths`` off), pin_user_pages() walks VMA by VMA."""
    vma = mm.vmacache
    if vma is None or addr < vma.start or addr >= vma.end:
        vma = mm.find_vma(addr)
        if vma is None:
            return None
    if not mm.fast_paths or vma.file is not None or addr & _PAGE_LEFT or npages <= 0 \
            or addr + (npages << PAGE_SHIFT) > vma.end \
            or vma.vm_flags & (_FAST_WRITE if write else _FAST_READ) != (VM_WRITE if write else VM_READ):
        return None
    store = mm.private
    if holder is None:
        pin = Pin(store, addr >> PAGE_SHIFT, npages)
    else:
        pin = holder
        holder.store = store                    # the holder is the pin now
    store.pins.add(pin)
    return pin


def pin_user_pages(mm: MM, addr: int, npages: int, write: bool, longterm: bool = True,
                   holder=None) -> tuple[int, list[Pin]]:
    """pin_user_pages() (FOLL_PIN [| FOLL_WRITE] [| FOLL_LONGTERM]), VMA by VMA.

    Returns (pages pinned, pins) like __get_user_pages(): when a later page
    fails, what was pinned so far; when the first fails, (-errno, []).  Pages
    of a shared mapping are page-cache pages, of a private one the process's
    own copies; ``Pin.page(i)`` gives them.  -EINVAL for a misaligned addr or
    npages < 0 (iommufd and vfio pass page-aligned starts).  ``holder``: an
    object with the Pin fields for all of [addr, +npages) of ``mm.private``
    (an iommufd iopt_pages) that stands in for the pin when one anonymous VMA
    holds the whole range.  The common case is gup_vma_range()."""
    if addr % PAGE_SIZE or npages < 0:
        return -errno.EINVAL, []
    pin = gup_vma_range(mm, addr, npages, write, holder)
    if pin is not None:
        return npages, [pin]
    pins: list[Pin] = []
    done, err = 0, 0
    while done < npages:
        a = addr + done * PAGE_SIZE
        vma = mm.find_vma(a)
        err = -errno.EFAULT if vma is None else check_vma_flags(vma, write, longterm, mm.profile)
        if err:
            break
        want = min(npages - done, (vma.end - a) // PAGE_SIZE)
        store, first, n = _pin_segment(mm, vma, a, want, write, longterm)
        if n:
            pin = Pin(store, first, n)
            store.pins.add(pin)
            pins.append(pin)
            done += n
        if n < want and not (n == 1 and vma.file is not None and not vma.vm_flags & VM_MAYSHARE
                             and not write and not longterm):
            err = -errno.EFAULT                 # past the end of the file: SIGBUS
            break
    if err and not done:
        return err, []
    return done, pins


def unpin_user_pages(pins) -> None:
    """unpin_user_pages(): drop the FOLL_PIN references of ``pins``.  Every
    pin the IOMMU simulators took is dropped here or, one at a time, in
    unpin_user_page_range_dirty_lock(); dropping one that is not held (a
    double unpin, or a followed PFNMAP range, which holds no reference) is a
    simulator bug and raises KeyError."""
    for pin in pins:
        unpin_user_page_range_dirty_lock(pin)


def unpin_user_page_range_dirty_lock(pin) -> None:
    """unpin_user_page_range_dirty_lock(): drop one pin (a run of pages), as
    unpin_user_pages() does for each of its pins."""
    store = pin.store
    store.pins.remove(pin)
    if store.held:
        store.held.pop(pin, None)


def pages_of(pins: list[Pin]) -> list[Page]:
    """Every page of ``pins``, in order (materializes them; for small ranges)."""
    return [pin.page(i) for pin in pins for i in range(pin.npages)]


def memfd_pin_folios(file: File | None, start: int, end: int, holder=None) -> tuple[int, list[Pin]]:
    """memfd_pin_folios(memfd, start, end (inclusive), ...): pins the page-cache
    pages of [start, end], allocating missing ones.  -EINVAL if start < 0,
    start > end, no file, not shmem/hugetlbfs, or end >= i_size.  (6.11+;
    pages are 4 KiB here, folios may be larger in the kernel.)  ``holder``:
    an object with the Pin fields for exactly these pages that stands in for
    the pin (an iommufd iopt_pages; it gets the pin's ``store``)."""
    if start < 0 or start > end or file is None:
        return -errno.EINVAL, []
    inode = file.inode
    if inode.kind not in _MEMFD_KINDS:
        return -errno.EINVAL, []
    if end >= inode.i_size:
        return -errno.EINVAL, []
    mapping = inode.mapping
    if holder is None:
        first = start >> PAGE_SHIFT
        holder = Pin(mapping, first, (end >> PAGE_SHIFT) - first + 1)
    else:
        holder.store = mapping                  # the holder is the pin now
    mapping.pins.add(holder)
    return holder.npages, [holder]


def follow_pfnmap(mm: MM, addr: int, npages: int, write: bool) -> tuple[int, list[Pin]]:
    """follow_fault_pfn() -> follow_pfnmap_start(), as vfio type1's vaddr_get_pfns()
    uses for a VM_PFNMAP VMA (a BAR mmap): the BAR pages behind [addr, +npages)
    of one VMA (pfns are not refcounted: the Pin is not registered).  -EFAULT if
    the VMA is not VM_PFNMAP or a write is asked of a read-only PTE."""
    vma = mm.find_vma(addr)
    if vma is None or not vma.vm_flags & VM_PFNMAP or vma.pfn_store is None:
        return -errno.EFAULT, []
    if write and not vma.vm_flags & VM_WRITE:
        return -errno.EFAULT, []
    n = min(npages, (vma.end - addr) // PAGE_SIZE)
    return n, [Pin(vma.pfn_store, vma.pgoff_of(addr), n)]


def process_vm_rw(mm: MM, addr: int, length: int, data: bytes | None) -> tuple[int, bytes]:
    """process_vm_rw_core() on our own mm: page by page through GUP (no
    FOLL_FORCE, not long-term).  Returns (bytes done, data) or (-EFAULT, b"")
    when nothing could be done; data is None for a read."""
    if length == 0:
        return 0, b""
    if addr < 0 or addr + length > 1 << 64:
        return -errno.EFAULT, b""
    write = data is not None
    out = bytearray()
    done = 0
    while done < length:
        a = addr + done
        off = a % PAGE_SIZE
        k = min(length - done, PAGE_SIZE - off)
        page = _gup_page(mm, a - off, write, longterm=False, pin=False)
        if isinstance(page, int):
            break
        if write:
            page.data[off:off + k] = data[done:done + k]
        else:
            out += page.data[off:off + k]
        done += k
    if done == 0:
        return -errno.EFAULT, b""
    return done, bytes(out)
