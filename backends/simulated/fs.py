"""Inodes, address spaces (sparse page cache), open files: include/linux/fs.h,
fs/open.c, fs/read_write.c, mm/filemap.c, mm/truncate.c, fs/ext4 (generic path).

Pages are 4 KiB ``Page`` objects held in a dict per address space, so a 64 GiB
file costs memory only for the pages that were written (or pinned).  An absent
page reads as zeros.  hugetlbfs files are also cached at 4 KiB granularity;
their 2 MiB page size only shows in sizes and alignments.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, field

from backends.host import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE,
                           HPAGE_SIZE, O_ACCMODE, O_LARGEFILE, O_RDONLY, O_RDWR, O_WRONLY,
                           PAGE_SIZE, F_SEAL_SEAL)

FMODE_READ, FMODE_WRITE = 0x1, 0x2          # include/linux/fs.h
FMODE_CAN_READ, FMODE_CAN_WRITE = 0x20000, 0x40000
MAX_LFS_FILESIZE = (1 << 63) - 1
EXT4_MAXBYTES = (1 << 44) - PAGE_SIZE       # ext4_max_size(), 4 KiB blocks, extents
FALLOC_FL_MODE_MASK = 0x7E                  # include/linux/falloc.h (all but KEEP_SIZE)

SHMEM, HUGETLBFS, EXT4, DMABUF, CHARDEV, DIR = "shmem", "hugetlbfs", "ext4", "dmabuf", "chardev", "dir"
_ino = itertools.count(1)


class Page:
    """struct page/folio: 4 KiB of data."""
    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None):
        self.data = bytearray(data) if data is not None else bytearray(PAGE_SIZE)


class Held(dict):
    """What a pin kept of pages its store dropped: the pages by index, and the
    dropped ``ranges`` [lo, hi) (a dropped page never touched is a fresh zero
    page of the pin's own)."""

    __slots__ = ("ranges",)

    def __init__(self):
        super().__init__()
        self.ranges: list[tuple[int, int]] = []


class Pin:
    """A FOLL_PIN reference on ``npages`` consecutive pages ``first..`` of a
    ``PageStore`` (gup.py makes them).  Pages are materialized on first use,
    so pinning 128 GiB costs one object; a page the owner drops while pinned
    (munmap, truncate, hole punch) stays with the pin (``store.held[pin]``),
    as the kernel's pinned folio outlives its removal from the page cache or
    the mm.

    Anything with ``store``, ``first`` and ``npages`` may stand in for a Pin
    in ``PageStore.pins`` and take ``page`` and ``detach`` from it (an
    iommufd ``iopt_pages`` that holds the one pin of all of its pages)."""

    __slots__ = ("store", "first", "npages")

    def __init__(self, store: "PageStore", first: int, npages: int):
        self.store, self.first, self.npages = store, first, npages

    def page(self, i: int) -> Page:
        """The pinned page ``i`` (0-based within the pin)."""
        idx = self.first + i
        store = self.store
        held = store.held.get(self) if store.held else None
        if held is not None:
            page = held.get(idx)
            if page is not None:
                return page
            if any(lo <= idx < hi for lo, hi in held.ranges):
                page = held[idx] = Page()
                return page
        pages = store.pages
        page = pages.get(idx)
        if page is None:
            page = pages[idx] = Page()
        return page

    def detach(self, lo: int, hi: int) -> None:
        """The store drops [lo, hi): keep what this pin holds there."""
        first = self.first
        lo, hi = max(lo, first), min(hi, first + self.npages)
        if lo >= hi:
            return
        store = self.store
        held = store.held.get(self)
        if held is None:
            held = store.held[self] = Held()
        pages = store.pages
        for idx in (range(lo, hi) if hi - lo <= len(pages) else [i for i in pages if lo <= i < hi]):
            if idx in pages and idx not in held:
                held[idx] = pages[idx]
        held.ranges.append((lo, hi))


class PageStore:
    """Pages by index plus the pins held on them: a page cache, a process's
    private pages (by virtual page number), a BAR.  ``held`` is what pins kept
    of dropped pages (rare: a truncate or munmap under a pin), by pin."""

    def __init__(self):
        self.pages: dict[int, Page] = {}
        self.pins: set[Pin] = set()
        self.held: dict[Pin, Held] = {}

    def drop(self, lo: int, hi: int | None = None) -> None:
        """Remove pages [lo, hi) (hi None: to the end); pins keep theirs."""
        hi = (1 << 64) if hi is None else hi
        for pin in self.pins:
            pin.detach(lo, hi)
        for idx in [i for i in self.pages if lo <= i < hi]:
            del self.pages[idx]


class AddressSpace(PageStore):
    """struct address_space: the sparse page cache + i_mmap_writable."""

    def __init__(self):
        super().__init__()
        self.i_mmap_writable = 0

    # include/linux/fs.h helpers, same names and errnos.
    def mapping_map_writable(self) -> int:
        """atomic_inc_unless_negative(&i_mmap_writable) ? 0 : -EPERM."""
        if self.i_mmap_writable < 0:
            return -errno.EPERM
        self.i_mmap_writable += 1
        return 0

    def mapping_unmap_writable(self) -> None:
        self.i_mmap_writable -= 1

    def mapping_deny_writable(self) -> int:
        """atomic_dec_unless_positive(&i_mmap_writable) ? 0 : -EBUSY."""
        if self.i_mmap_writable > 0:
            return -errno.EBUSY
        self.i_mmap_writable -= 1
        return 0

    def mapping_allow_writable(self) -> None:
        self.i_mmap_writable += 1

    # page cache
    def find_or_create(self, index: int) -> Page:
        page = self.pages.get(index)
        if page is None:
            page = self.pages[index] = Page()
        return page

    def read(self, pos: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            idx, off = divmod(pos, PAGE_SIZE)
            k = min(n, PAGE_SIZE - off)
            page = self.pages.get(idx)
            out += page.data[off:off + k] if page else bytes(k)
            pos, n = pos + k, n - k
        return bytes(out)

    def write(self, pos: int, data: bytes) -> None:
        i = 0
        while i < len(data):
            idx, off = divmod(pos + i, PAGE_SIZE)
            k = min(len(data) - i, PAGE_SIZE - off)
            self.find_or_create(idx).data[off:off + k] = data[i:i + k]
            i += k

    def zero_range(self, start: int, end: int) -> None:
        """truncate_inode_pages_range(): drop whole pages, zero partial ones
        (only present pages are visited, so a huge sparse range is cheap)."""
        first, last = -(-start // PAGE_SIZE), end // PAGE_SIZE      # whole pages [first, last)
        for idx in [i for i in self.pages
                    if i * PAGE_SIZE < end and (i + 1) * PAGE_SIZE > start and not first <= i < last]:
            lo = max(start, idx * PAGE_SIZE) - idx * PAGE_SIZE
            hi = min(end, (idx + 1) * PAGE_SIZE) - idx * PAGE_SIZE
            self.pages[idx].data[lo:hi] = bytes(hi - lo)
        if first < last:
            self.drop(first, last)

    def truncate_from(self, size: int) -> None:
        """truncate_inode_pages(mapping, size): zero the tail of the partial page
        at ``size`` and drop every page after it."""
        idx, off = divmod(size, PAGE_SIZE)
        if off and idx in self.pages:
            self.pages[idx].data[off:] = bytes(PAGE_SIZE - off)
        self.drop(idx + (1 if off else 0))


@dataclass(eq=False)
class Inode:
    kind: str                         # SHMEM, HUGETLBFS, EXT4, DMABUF, CHARDEV
    i_size: int = 0
    i_mode: int = 0o100600
    seals: int | None = None          # shmem/hugetlbfs: info->seals; None: no seals ptr
    mapping: AddressSpace = field(default_factory=AddressSpace)
    ino: int = field(default_factory=lambda: next(_ino))
    chardev: object = None            # device model for CHARDEV inodes
    name: str = ""

    @property
    def page_size(self) -> int:
        return HPAGE_SIZE if self.kind == HUGETLBFS else PAGE_SIZE

    @property
    def s_maxbytes(self) -> int:
        return EXT4_MAXBYTES if self.kind == EXT4 else MAX_LFS_FILESIZE

    def can_writeback(self) -> bool:
        """mapping_can_writeback() && !shmem: a file on a writeback filesystem."""
        return self.kind == EXT4


def new_inode(kind: str, **kw) -> Inode:
    """shmem_get_inode()/hugetlbfs_get_inode() start with seals = F_SEAL_SEAL."""
    if kind in (SHMEM, HUGETLBFS):
        kw.setdefault("seals", F_SEAL_SEAL)
    return Inode(kind=kind, **kw)


@dataclass(eq=False)
class File:
    """struct file: an open file description."""
    inode: Inode
    f_mode: int
    f_flags: int
    refs: int = 0                     # fds + VMAs holding it
    dev: object = None                # per-open device object (CHARDEV)

    @classmethod
    def open(cls, inode: Inode, flags: int) -> "File":
        """do_dentry_open(): f_mode from the access mode; f_flags keep the open
        flags minus O_CREAT|O_EXCL|O_NOCTTY|O_TRUNC, plus O_LARGEFILE (64-bit)."""
        acc = flags & O_ACCMODE
        f_mode = {O_RDONLY: FMODE_READ, O_WRONLY: FMODE_WRITE,
                  O_RDWR: FMODE_READ | FMODE_WRITE}.get(acc, 0)
        f_mode |= FMODE_CAN_READ
        if inode.kind in (SHMEM, EXT4):            # hugetlbfs has no write_iter
            f_mode |= FMODE_CAN_WRITE
        f_flags = (flags & ~(0o100 | 0o200 | 0o400 | 0o1000 | 0o2000000)) | O_LARGEFILE
        return cls(inode=inode, f_mode=f_mode, f_flags=f_flags)


# ---------------------------------------------------------------------------
# fs/read_write.c + the per-filesystem write paths.

def vfs_read(file: File, n: int, pos: int) -> tuple[int, bytes]:
    """ksys_pread64()/vfs_read(): EINVAL (pos < 0) -> EBADF (!FMODE_READ) ->
    EINVAL (!FMODE_CAN_READ); reads stop at i_size."""
    if pos < 0:
        return -errno.EINVAL, b""
    if not file.f_mode & FMODE_READ:
        return -errno.EBADF, b""
    if not file.f_mode & FMODE_CAN_READ:
        return -errno.EINVAL, b""
    inode = file.inode
    n = max(0, min(n, inode.i_size - pos))
    data = inode.mapping.read(pos, n) if n else b""
    return len(data), data


def vfs_write(file: File, data: bytes, pos: int, write_begin) -> int:
    """ksys_pwrite64()/vfs_write() -> generic_perform_write(): EINVAL (pos < 0)
    -> EBADF (!FMODE_WRITE) -> EINVAL (no write_iter, e.g. hugetlbfs) -> 0 for an
    empty write -> EFBIG past s_maxbytes -> page by page, each chunk asking the
    filesystem's write_begin(); a refusal after some bytes returns the bytes."""
    if pos < 0:
        return -errno.EINVAL
    if not file.f_mode & FMODE_WRITE:
        return -errno.EBADF
    if not file.f_mode & FMODE_CAN_WRITE:
        return -errno.EINVAL
    if not data:
        return 0
    inode = file.inode
    if pos >= inode.s_maxbytes:
        return -errno.EFBIG
    data = data[:inode.s_maxbytes - pos]
    done = 0
    while done < len(data):
        off = (pos + done) % PAGE_SIZE
        k = min(len(data) - done, PAGE_SIZE - off)
        err = write_begin(inode, pos + done, k)
        if err:
            return done or err
        inode.mapping.write(pos + done, data[done:done + k])
        done += k
        inode.i_size = max(inode.i_size, pos + done)
    return done


def generic_write_begin(inode: Inode, pos: int, n: int) -> int:
    return 0


def truncate_setsize(inode: Inode, newsize: int, mm=None) -> None:
    """truncate_setsize() -> truncate_pagecache(): on shrink (or equal size)
    unmap private COW copies beyond round_up(newsize) (even_cows=1), then
    truncate_inode_pages(newsize)."""
    old = inode.i_size
    inode.i_size = newsize
    if newsize <= old:
        holebegin = -(-newsize // PAGE_SIZE) * PAGE_SIZE
        if mm is not None and old > holebegin:
            mm.unmap_mapping_range(inode, holebegin, None, even_cows=True)
        inode.mapping.truncate_from(newsize)


def ext4_fallocate(file: File, mode: int, offset: int, length: int, mm) -> int:
    """ext4_fallocate(): allocate (no page is materialised: unwritten extents read
    as zeros), PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE.  Private COW copies survive a
    hole punch (unmap_mapping_range(..., even_cows=0))."""
    inode = file.inode
    end = offset + length
    if mode & FALLOC_FL_PUNCH_HOLE:
        start = min(offset, inode.i_size)
        stop = min(end, inode.i_size)
        if stop > start:
            inode.mapping.zero_range(start, stop)
        return 0
    if mode & FALLOC_FL_ZERO_RANGE:
        inode.mapping.zero_range(offset, min(end, max(inode.i_size, end)))
    if not mode & FALLOC_FL_KEEP_SIZE and end > inode.i_size:
        inode.i_size = end
    return 0
