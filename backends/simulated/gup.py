"""mm/gup.c: pin_user_pages(), memfd_pin_folios(), check_vma_flags(); and the
GUP walk behind process_vm_readv/writev (mm/process_vm_access.c).

The pinned handles are the ``Page`` objects the process itself reads and
writes: page-cache pages for shared mappings, private COW pages for private
ones.  A device writing ``page.data`` is seen by read_mem() and pread().
"""

from __future__ import annotations

import errno

from backends.host import PAGE_SIZE
from .fs import HUGETLBFS, SHMEM, File, Page
from .mmap import MM, VM_IO, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE, VMA


def writable_file_mapping_allowed(vma: VMA, longterm: bool) -> bool:
    """writable_file_mapping_allowed(): a FOLL_LONGTERM write pin of a shared
    writable mapping of a file on a writeback filesystem (vma_needs_dirty_tracking())
    is refused; anon, shmem, hugetlbfs are fine."""
    if not longterm or vma.file is None:
        return True
    shared_writable = vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE
    return not (shared_writable and vma.file.inode.can_writeback())


def check_vma_flags(vma: VMA, write: bool, longterm: bool) -> int:
    """check_vma_flags() without FOLL_FORCE: -EFAULT for VM_IO|VM_PFNMAP, for a
    long-term write pin of a writeback-fs shared mapping, for a write to a VMA
    without VM_WRITE, for a read of a VMA without VM_READ."""
    if vma.vm_flags & (VM_IO | VM_PFNMAP):
        return -errno.EFAULT
    if write:
        if not writable_file_mapping_allowed(vma, longterm):
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
    err = check_vma_flags(vma, write, longterm)
    if err:
        return err
    # gup_must_unshare(): a R/O FOLL_LONGTERM pin of a COW mapping (private,
    # VM_MAYWRITE) unshares, i.e. gets its own private copy like a write would.
    unshare = pin and longterm and not vma.vm_flags & VM_SHARED and bool(vma.vm_flags & VM_MAYWRITE)
    return mm.fault(vma, addr, write=write, unshare=unshare, pin=pin)


def pin_user_pages(mm: MM, addr: int, npages: int, write: bool, longterm: bool = True
                   ) -> tuple[int, list[Page]]:
    """pin_user_pages() (FOLL_PIN [| FOLL_WRITE] [| FOLL_LONGTERM]).

    Returns (number pinned, pages) like __get_user_pages(): if a later page
    fails, the pages pinned so far are returned with their count; if the first
    one fails, (-errno, []).  -EINVAL for a misaligned addr or npages < 0
    (callers pass page-aligned starts, as iommufd/vfio do)."""
    if addr % PAGE_SIZE or npages < 0:
        return -errno.EINVAL, []
    pages: list[Page] = []
    for i in range(npages):
        page = _gup_page(mm, addr + i * PAGE_SIZE, write, longterm, pin=True)
        if isinstance(page, int):
            return (len(pages), pages) if pages else (page, [])
        page.pincount += 1
        pages.append(page)
    return len(pages), pages


def unpin_user_pages(pages: list[Page]) -> None:
    for page in pages:
        if page.pincount <= 0:
            raise ValueError("unpin_user_pages(): page is not pinned")
        page.pincount -= 1


def memfd_pin_folios(file: File | None, start: int, end: int, max_folios: int | None = None
                     ) -> tuple[int, list[Page]]:
    """memfd_pin_folios(memfd, start, end (inclusive), ...): pins the page-cache
    pages of [start, end], allocating missing ones.  -EINVAL if start < 0,
    start > end, no file, not shmem/hugetlbfs, or end >= i_size.  (6.11+;
    pages are 4 KiB here, folios may be larger in the kernel.)"""
    if start < 0 or start > end or file is None or max_folios == 0:
        return -errno.EINVAL, []
    inode = file.inode
    if inode.kind not in (SHMEM, HUGETLBFS):
        return -errno.EINVAL, []
    if end >= inode.i_size:
        return -errno.EINVAL, []
    first, last = start // PAGE_SIZE, end // PAGE_SIZE
    if max_folios is not None:
        last = min(last, first + max_folios - 1)
    pages = [inode.mapping.find_or_create(i) for i in range(first, last + 1)]
    for page in pages:
        page.pincount += 1
    return len(pages), pages


def follow_pfnmap(mm: MM, addr: int, write: bool) -> Page | int:
    """follow_pfnmap_start() as used by vfio type1's follow_fault_pfn() for a
    VM_PFNMAP VMA (a BAR mmap): the backing page, -EFAULT if the VMA is not
    VM_PFNMAP or a write is asked of a read-only PTE."""
    vma = mm.find_vma(addr)
    if vma is None or not vma.vm_flags & VM_PFNMAP or vma.pfn_page is None:
        return -errno.EFAULT
    if write and not vma.vm_flags & VM_WRITE:
        return -errno.EFAULT
    return vma.pfn_page(vma.pgoff_of(addr))


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
