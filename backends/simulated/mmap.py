"""The process address space: mm/mmap.c (do_mmap), mm/vma.c (mmap_region,
munmap), mm/mprotect.c (do_mprotect_pkey), and the page lookup a fault does.

A VMA covers [start, end) with vm_flags, an optional file + pgoff.  Private
(COW) copies live in ``MM.anon`` keyed by virtual page number: a read of a
MAP_PRIVATE file page that was never written shows the page-cache page (so a
later pwrite() shows through), a write copies it first (do_wp_page()).
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass, field

from backends.host import (HPAGE_SIZE, MAP_FIXED, MAP_FIXED_NOREPLACE,
                           MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE,
                           PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, page_align)
from .fs import CHARDEV, FMODE_READ, FMODE_WRITE, HUGETLBFS, SHMEM, File, Page, PageStore, new_inode

# include/linux/mm.h
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC, VM_MAYSHARE = 0x10, 0x20, 0x40, 0x80
VM_PFNMAP, VM_IO, VM_DONTEXPAND, VM_HUGETLB = 0x400, 0x4000, 0x40000, 0x400000

TASK_SIZE = 0x7FFFFFFFF000                # x86-64 4-level
MMAP_BASE = 0x7F0000000000                # top-down allocation starts below this
MMAP_MIN = 0x10000


def calc_vm_prot_bits(prot: int) -> int:
    return (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) | \
        (VM_EXEC if prot & PROT_EXEC else 0)


@dataclass(eq=False)
class VMA:
    start: int
    end: int
    vm_flags: int
    file: File | None = None
    pgoff: int = 0                              # in PAGE_SIZE units
    pfn_store: object = None                    # VM_PFNMAP: the BAR's PageStore

    def counts_writable(self, profile) -> bool:
        """Does this VMA hold an i_mmap_writable reference?  __vma_link_file():
        vma_is_shared_maywrite() from 6.7; every VM_SHARED VMA before."""
        if self.file is None or not self.vm_flags & VM_SHARED:
            return False
        return bool(self.vm_flags & VM_MAYWRITE) or not profile.i_mmap_writable_counts_maywrite_only

    def pgoff_of(self, addr: int) -> int:
        return self.pgoff + (addr - self.start) // PAGE_SIZE


@dataclass(eq=False)
class MM:
    """struct mm_struct: sorted VMAs + private (anonymous/COW) pages by vpn."""
    profile: object
    vmas: list[VMA] = field(default_factory=list)
    private: PageStore = field(default_factory=PageStore)
    starts: list[int] = field(default_factory=list)    # vmas' starts, for bisect
    fast_paths: bool = True                            # SimHost(fast_paths=...): gup.py
    # The VMA find_vma() found last (mm->vmacache before 6.1, mm/vmacache.c): GUP
    # looks there first; unlink() forgets it.
    vmacache: "VMA | None" = None

    @property
    def anon(self) -> dict[int, Page]:
        """Private (anonymous / COW) pages by virtual page number."""
        return self.private.pages

    # -- VMA tree ---------------------------------------------------------
    def find_vma(self, addr: int) -> VMA | None:
        """The VMA containing addr, or None."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0:
            vma = self.vmas[i]
            if vma.end > addr:
                self.vmacache = vma
                return vma
        return None

    def intersecting(self, start: int, end: int) -> list[VMA]:
        return [v for v in self.vmas if v.start < end and v.end > start]

    def link(self, vma: VMA) -> None:
        """vma_link() -> __vma_link_file(): mapping_allow_writable() for a
        counting VMA; the file gains a reference."""
        i = bisect.bisect(self.starts, vma.start)
        self.starts.insert(i, vma.start)
        self.vmas.insert(i, vma)
        if vma.file is not None:
            vma.file.refs += 1
            if vma.counts_writable(self.profile):
                vma.file.inode.mapping.mapping_allow_writable()

    def unlink(self, vma: VMA) -> None:
        """__remove_shared_vm_struct(): mapping_unmap_writable(); fput()."""
        i = self.vmas.index(vma)
        del self.vmas[i], self.starts[i]
        self.vmacache = None
        if vma.file is not None:
            if vma.counts_writable(self.profile):
                vma.file.inode.mapping.mapping_unmap_writable()
            vma.file.refs -= 1

    def split(self, start: int, end: int) -> None:
        """__split_vma() at start and end so that VMAs never straddle them."""
        for addr in (start, end):
            v = self.find_vma(addr)
            if v is None or v.start == addr:
                continue
            self.unlink(v)
            lo = VMA(v.start, addr, v.vm_flags, v.file, v.pgoff, v.pfn_store)
            hi = VMA(addr, v.end, v.vm_flags, v.file, v.pgoff_of(addr), v.pfn_store)
            self.link(lo)
            self.link(hi)

    def zap(self, start: int, end: int) -> None:
        """do_vmi_munmap() body: remove VMAs and private pages in [start, end)."""
        self.split(start, end)
        for v in self.intersecting(start, end):
            self.unlink(v)
        self.private.drop(start // PAGE_SIZE, -(-end // PAGE_SIZE))

    def unmap_mapping_range(self, inode, holebegin: int, holelen: int | None,
                            even_cows: bool) -> None:
        """unmap_mapping_range(): with even_cows, private COW copies of the
        file range are discarded too (truncate); a hole punch keeps them."""
        if not even_cows:
            return
        first = holebegin // PAGE_SIZE
        last = None if holelen is None else (holebegin + holelen - 1) // PAGE_SIZE
        for v in self.vmas:
            if v.file is None or v.file.inode is not inode or v.vm_flags & VM_SHARED:
                continue
            lo = max(first, v.pgoff)
            hi = v.pgoff_of(v.end) if last is None else min(last + 1, v.pgoff_of(v.end))
            if lo < hi:
                base = v.start // PAGE_SIZE - v.pgoff
                self.private.drop(base + lo, base + hi)

    # -- get_unmapped_area ---------------------------------------------------
    def get_unmapped_area(self, addr: int, length: int, flags: int, align: int) -> int:
        """__get_unmapped_area(): -ENOMEM if len > TASK_SIZE; MAP_FIXED: -ENOMEM
        past TASK_SIZE, -EINVAL if addr is not aligned (hugetlb: to 2 MiB); a free
        hint is taken as is; otherwise the highest gap below MMAP_BASE."""
        if length > TASK_SIZE:
            return -errno.ENOMEM
        if flags & MAP_FIXED:
            if addr > TASK_SIZE - length:
                return -errno.ENOMEM
            if addr % align or (align > PAGE_SIZE and length % align):
                return -errno.EINVAL
            return addr
        if addr:
            addr = page_align(addr, align)
            if MMAP_MIN <= addr <= TASK_SIZE - length and not self.intersecting(addr, addr + length):
                return addr
        top = MMAP_BASE
        for v in sorted(self.vmas, key=lambda v: v.start, reverse=True):
            if v.start >= top:
                continue
            if v.end < top and ((top - length) & ~(align - 1)) >= v.end:
                return (top - length) & ~(align - 1)
            top = v.start
        cand = (top - length) & ~(align - 1)
        return cand if cand >= MMAP_MIN else -errno.ENOMEM

    # -- page lookup (the fault path) -----------------------------------------
    def file_page(self, vma: VMA, addr: int, create: bool) -> Page | int:
        """filemap_fault()/shmem_fault(): -EFAULT (SIGBUS) beyond EOF."""
        inode = vma.file.inode
        pg = vma.pgoff_of(addr)
        if pg * PAGE_SIZE >= page_align(inode.i_size, inode.page_size):
            return -errno.EFAULT
        if create:
            return inode.mapping.find_or_create(pg)
        return inode.mapping.pages.get(pg) or _ZERO

    def fault(self, vma: VMA, addr: int, write: bool, unshare: bool = False,
              pin: bool = False) -> Page | int:
        """handle_mm_fault(): the page the process sees at addr.  Shared file:
        the page-cache page.  Private: its COW copy if any; a write (or an
        unshare for a R/O long-term pin) copies the file page first
        (do_wp_page()/wp_page_copy()).  A pin always gets a real page (never
        the shared zero page), so the pinned page is the one later seen."""
        vpn = addr // PAGE_SIZE
        if vma.vm_flags & VM_PFNMAP:
            page = vma.pfn_store.pages.get(vma.pgoff_of(addr)) if vma.pfn_store else None
            return page if page is not None else -errno.EFAULT
        if vma.file is not None and vma.vm_flags & VM_MAYSHARE:
            return self.file_page(vma, addr, create=write or unshare or pin)
        page = self.anon.get(vpn)
        if page is not None:
            return page
        if vma.file is not None:
            src = self.file_page(vma, addr, create=pin and not (write or unshare))
            if isinstance(src, int) or not (write or unshare):
                return src
        elif not (write or unshare or pin):
            return _ZERO
        else:
            src = _ZERO
        page = self.anon[vpn] = Page(src.data)
        return page


_ZERO = Page()          # the shared zero page: never written through


# ---------------------------------------------------------------------------
# Syscalls

def do_mmap(mm: MM, addr: int, length: int, prot: int, flags: int, file: File | None,
            offset: int, hugetlb_free=None) -> int:
    """ksys_mmap_pgoff() + do_mmap() + mmap_region(), checks in kernel order.

    -EINVAL offset not page aligned (sys_mmap)              -EBADF bad fd (caller)
    -EINVAL len == 0; -ENOMEM len rounds to 0; -EOVERFLOW pgoff + pages wraps
    get_unmapped_area: -ENOMEM / -EINVAL (MAP_FIXED misaligned)
    -EEXIST MAP_FIXED_NOREPLACE over an existing VMA
    file MAP_SHARED: -EACCES PROT_WRITE without FMODE_WRITE; a file without
      FMODE_WRITE loses VM_SHARED|VM_MAYWRITE; any type: -EACCES without FMODE_READ;
      -ENODEV no ->mmap; -EINVAL no MAP_SHARED/MAP_PRIVATE type
    seals: memfd_check_seals_mmap() -EPERM / clears VM_MAYWRITE (6.7+: before the
      writable check; <6.7 and the 6.12 regression window: after it)
    mmap_region(): mapping_map_writable() -EPERM when i_mmap_writable < 0
    """
    profile = mm.profile
    if offset % PAGE_SIZE:
        return -errno.EINVAL
    inode = file.inode if file is not None else None
    align = HPAGE_SIZE if (inode is not None and inode.kind == HUGETLBFS) or \
        (file is None and flags & MAP_HUGETLB) else PAGE_SIZE
    if inode is not None and inode.kind == HUGETLBFS:
        length = page_align(length, HPAGE_SIZE)   # ksys_mmap_pgoff(): ALIGN(len, huge_page_size)
    if length == 0:
        return -errno.EINVAL
    length = page_align(length)
    if length == 0 or length > (1 << 64) - PAGE_SIZE:
        return -errno.ENOMEM
    pgoff = offset // PAGE_SIZE
    if pgoff + length // PAGE_SIZE >= 1 << 64:
        return -errno.EOVERFLOW
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    addr = mm.get_unmapped_area(addr, length, flags, align)
    if addr < 0:
        return addr
    if flags & MAP_FIXED_NOREPLACE and mm.intersecting(addr, addr + length):
        return -errno.EEXIST
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    mtype = flags & MAP_TYPE
    if file is not None:
        if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            if prot & PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -errno.EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.f_mode & FMODE_WRITE:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        elif mtype != MAP_PRIVATE:
            return -errno.EINVAL
        if not file.f_mode & FMODE_READ:
            return -errno.EACCES
        if inode.kind == CHARDEV and not hasattr(file.dev, "mmap"):
            return -errno.ENODEV
    else:
        if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            # shmem_zero_setup(): a MAP_SHARED|MAP_ANONYMOUS mapping is an
            # unlinked shmem file of the mapping's size.
            inode = new_inode(SHMEM, i_size=length, name="dev/zero")
            file = File(inode=inode, f_mode=FMODE_READ | FMODE_WRITE, f_flags=2)
            vm_flags |= VM_SHARED | VM_MAYSHARE
            pgoff = 0
        elif mtype != MAP_PRIVATE:
            return -errno.EINVAL

    # mmap_region().  Before 5de195060b2e the old range of a MAP_FIXED mapping
    # was unmapped first, so a failure below left a hole.
    if flags & MAP_FIXED and profile.mmap_region_unmaps_before_checks:
        mm.zap(addr, addr + length)
    early = profile.ro_shared_mmap_of_write_sealed
    if file is not None and early:
        from .memfd import memfd_check_seals_mmap
        err, vm_flags = memfd_check_seals_mmap(file, vm_flags)
        if err:
            return err
    probe = VMA(addr, addr + length, vm_flags, file, pgoff)
    held = False
    if probe.counts_writable(profile):
        err = file.inode.mapping.mapping_map_writable()
        if err:
            return err
        held = True
    if file is not None and not early:
        from .memfd import memfd_check_seals_mmap
        err, vm_flags = memfd_check_seals_mmap(file, vm_flags)
        if err:
            if held:
                file.inode.mapping.mapping_unmap_writable()
            return err
    if inode is not None and inode.kind == HUGETLBFS:
        vm_flags |= VM_HUGETLB
        free = hugetlb_free() if hugetlb_free is not None else None
        if free is not None and free < length // HPAGE_SIZE:
            if held:
                file.inode.mapping.mapping_unmap_writable()
            return -errno.ENOMEM          # hugetlb_reserve_pages()
    vma = VMA(addr, addr + length, vm_flags, file, pgoff)
    if inode is not None and inode.kind == CHARDEV:
        err = file.dev.mmap(file, vma)        # e.g. a BAR: VM_IO|VM_PFNMAP
        if err:
            if held:
                file.inode.mapping.mapping_unmap_writable()
            return err
    mm.zap(addr, addr + length)           # MAP_FIXED replaces what was there
    mm.link(vma)
    if held:
        file.inode.mapping.mapping_unmap_writable()   # "Clear our write mapping regardless of error."
    return addr


def do_munmap(mm: MM, addr: int, length: int) -> int:
    """do_vmi_munmap(): -EINVAL for a misaligned start, a range past TASK_SIZE or
    length 0; unmapping nothing succeeds."""
    if addr % PAGE_SIZE or addr > TASK_SIZE or length > TASK_SIZE - addr:
        return -errno.EINVAL
    end = addr + page_align(length)
    if end == addr:
        return -errno.EINVAL
    mm.zap(addr, end)
    return 0


def do_mprotect(mm: MM, start: int, length: int, prot: int) -> int:
    """do_mprotect_pkey(): -EINVAL misaligned start or unknown prot bits; 0 for
    length 0; -ENOMEM for a wrapped range or when start is in a hole; then VMA
    by VMA: -EACCES when a requested VM_WRITE/READ/EXEC has no VM_MAY* bit
    (e.g. a RO shared mapping of a write-sealed memfd); -ENOMEM at a hole.
    VMAs before the failing one keep their new protection."""
    if start % PAGE_SIZE:
        return -errno.EINVAL
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | 0x8):
        return -errno.EINVAL
    if length == 0:
        return 0
    end = start + page_align(length)
    if end <= start:
        return -errno.ENOMEM
    vmas = mm.intersecting(start, end)
    if not vmas or vmas[0].start > start:
        return -errno.ENOMEM
    newbits = calc_vm_prot_bits(prot)
    tmp = vmas[0].start
    for v in vmas:
        if v.start != tmp:
            return -errno.ENOMEM
        if newbits & ~(v.vm_flags >> 4) & (VM_READ | VM_WRITE | VM_EXEC):
            return -errno.EACCES
        lo, hi = max(v.start, start), min(v.end, end)
        mm.split(lo, hi)
        for piece in mm.intersecting(lo, hi):
            piece.vm_flags = (piece.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | newbits
        tmp = v.end
    if tmp < end:
        return -errno.ENOMEM
    return 0
