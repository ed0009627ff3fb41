"""The VFIO type1 IOMMU driver on SimHost: drivers/vfio/vfio_iommu_type1.c
(struct vfio_iommu: MAP/UNMAP, pinning, RLIMIT_MEMLOCK accounting, domains,
GET_INFO, dirty tracking).  The container that binds it (/dev/vfio/vfio,
VFIO_SET_IOMMU) is drivers/vfio/container.c: vfio_container.py.

Sources (torvalds/linux):
  * T71: vfio_iommu_type1.c blob c8151ba54de3, container.c blob 003281dbf8bc
    (7.1 merge window; identical to Debian 7.2.13, the rig's iommufd-7.2 kernel);
  * 6.2-6.17 form of vfio_iommu_type1.c (vfio_change_dma_owner(), no overflow
    helpers), read for the ``type1_overflow_errno`` / ``type1_map_up_to_limit``
    profile switches (6012379ede6a, ef270ec44637, both 6.18).

Objects, with the kernel's names:
  * ``VfioContainer`` (vfio_container.py)  struct vfio_container + the type1
    driver bound to it by VFIO_SET_IOMMU (``.iommu``).
  * ``VfioIommu``  struct vfio_iommu: ``dma_list`` (an ``IovaTree`` of
    ``vfio_dma``), ``iova_list``, ``domains``, ``dma_avail``, ``pgsize_bitmap``.
  * ``VfioDomain``  struct vfio_domain: one per distinct ``IommuHw``; it is the
    ``Translation`` a device's DMA goes through (``dev.domain``, dma.py).
  * ``vfio_dma``  one MAP_DMA: iova/last/vaddr/prot and the ``Pin``s (a tuple)
    holding its pages; PFNMAP (BAR) pages are followed, never charged.

Kernel-faithful details worth knowing:
  * pages are pinned at MAP once an IOMMU domain exists (always, after a group
    with an IOMMU is attached and VFIO_SET_IOMMU); with only emulated (mdev,
    ``dev.hw is None``) groups nothing is pinned until a real group attaches,
    and then vfio_iommu_replay() pins (ENOMEM/EFAULT surface at
    VFIO_GROUP_SET_CONTAINER).
  * closing /dev/vfio/vfio does not unmap anything while a group still holds
    the container (kref); the type1 driver is released when the last group
    leaves (VFIO_GROUP_UNSET_CONTAINER or the group fd's last close).
  * ``dma_entry_limit`` (module param, default profile.type1_dma_entry_limit,
    65535) is read when the driver is opened (VFIO_SET_IOMMU); override it per
    host with ``host.type1_dma_entry_limit = N`` or globally with
    ``VfioContainer.dma_entry_limit = N``.
  * <6.18 (not profile.type1_map_up_to_limit): a mapping ending at U64_MAX is
    invisible to vfio_find_dma()/vfio_find_dma_first_node() (``iova + size``
    wraps to 0), so it can be mapped twice, is not found by an exact unmap,
    and when it is removed vfio_unmap_unpin()'s ``while (iova < end)`` never
    runs: its pins and locked_vm leak.  Kept here (``top_dmas``), because the
    vfio selftest vfio_dma_map_limit_test exists for it.

Not modelled: mdev pin_pages/dma_rw (vfio_pfn lists; emulated groups only
change accounting and UPDATE_VADDR), iommu_map() failures inside the IOMMU
driver (a mapping replayed into a domain whose aperture does not hold it is
accepted), interrupt-remapping (assumed present: no EPERM at attach), the
per-dma dirty bitmaps (what they would hold is derived: every page of an
IOMMU-mapped dma is dirty while an IOMMU-backed group is attached).
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from backends.host import PAGE_SHIFT, PAGE_SIZE
from .fs import Pin
from .gup import (follow_pfnmap, gup_vma_range, pin_user_pages, unpin_user_page_range_dirty_lock,
                  unpin_user_pages)
from .iommu import IOMMU_READ, IOMMU_WRITE, IovaTree
from .mmap import TASK_SIZE, VM_PFNMAP

U64_MAX = (1 << 64) - 1
_2_64 = 1 << 64
PAGE_MASK = U64_MAX & ~(PAGE_SIZE - 1)          # unsigned long PAGE_MASK
INT_MAX = (1 << 31) - 1

# drivers/vfio/vfio_iommu_type1.c
DIRTY_BITMAP_PAGES_MAX = INT_MAX


def DIRTY_BITMAP_BYTES(n: int) -> int:
    """ALIGN(n, BITS_PER_TYPE(u64)) / BITS_PER_BYTE."""
    return -(-n // 64) * 8


DIRTY_BITMAP_SIZE_MAX = DIRTY_BITMAP_BYTES(DIRTY_BITMAP_PAGES_MAX)

VFIO_API_VERSION = uapi.VFIO_API_VERSION
VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU = uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU
VFIO_TYPE1_NESTING_IOMMU = uapi.__VFIO_RESERVED_TYPE1_NESTING_IOMMU
MAP_READ, MAP_WRITE, MAP_VADDR = (uapi.VFIO_DMA_MAP_FLAG_READ, uapi.VFIO_DMA_MAP_FLAG_WRITE,
                                  uapi.VFIO_DMA_MAP_FLAG_VADDR)
MAP_MASK = MAP_READ | MAP_WRITE | MAP_VADDR
_MAP_RW, _NOT_MAP_MASK = MAP_READ | MAP_WRITE, ~MAP_MASK
UNMAP_DIRTY, UNMAP_ALL, UNMAP_VADDR = (uapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
                                       uapi.VFIO_DMA_UNMAP_FLAG_ALL, uapi.VFIO_DMA_UNMAP_FLAG_VADDR)
UNMAP_MASK = UNMAP_DIRTY | UNMAP_ALL | UNMAP_VADDR
_NOT_UNMAP_MASK = ~UNMAP_MASK
DIRTY_START, DIRTY_STOP, DIRTY_GET = (uapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
                                      uapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
                                      uapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
# The map flags and the IOMMU prot bits coincide (vfio_dma_do_map(): WRITE ->
# IOMMU_WRITE, READ -> IOMMU_READ), so prot = flags & 3 on the hot path.
assert (MAP_READ, MAP_WRITE) == (IOMMU_READ, IOMMU_WRITE)

_MAP = uapi.codec("vfio_iommu_type1_dma_map")              # argsz flags vaddr iova size
_UNMAP = uapi.codec("vfio_iommu_type1_dma_unmap")          # argsz flags iova size
_INFO = uapi.codec("vfio_iommu_type1_info")                # argsz flags iova_pgsizes cap_offset
_DIRTY = uapi.codec("vfio_iommu_type1_dirty_bitmap")       # argsz flags
_BITMAP = uapi.codec("vfio_bitmap")                        # pgsize size data
_MAP_MINSZ = uapi.offsetofend("vfio_iommu_type1_dma_map", "size")          # 32
_UNMAP_MINSZ = uapi.offsetofend("vfio_iommu_type1_dma_unmap", "size")      # 24
_INFO_MINSZ = uapi.offsetofend("vfio_iommu_type1_info", "iova_pgsizes")    # 16
_DIRTY_MINSZ = uapi.offsetofend("vfio_iommu_type1_dirty_bitmap", "flags")  # 8
_RANGE_SIZE = uapi.sizeof("vfio_iommu_type1_dirty_bitmap_get")           # 40
_RANGE_BITMAP = uapi.offsetof("vfio_iommu_type1_dirty_bitmap_get", "bitmap")
_QQ = struct.Struct("<QQ")
_Q = struct.Struct("<Q")
_MAP_DMA, _UNMAP_DMA = uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA
_map_unpack = _MAP.unpack_from
_unmap_unpack = _UNMAP.unpack_from
_q_pack = _Q.pack


def _ffs(x: int) -> int:
    """__ffs(); 0 gives 64 as x86 tzcnt does (the kernel leaves it undefined)."""
    return (x & -x).bit_length() - 1 if x else 64


# vfio_dma.state: the IOMMU prot in bits 0-1, then struct vfio_dma's bools
# (one int instead of five slots: a million mappings are a benchmark case).
DMA_IOMMU_MAPPED, DMA_LOCK_CAP, DMA_VADDR_INVALID, DMA_HAS_RSVD = 1 << 2, 1 << 3, 1 << 4, 1 << 5


def _state_bit(bit: int, doc: str) -> property:
    def get(self) -> bool:
        return bool(self.state & bit)

    def set_(self, value: bool) -> None:
        self.state = self.state | bit if value else self.state & ~bit
    return property(get, set_, doc=doc)


class vfio_dma:
    """struct vfio_dma: one VFIO_IOMMU_MAP_DMA.  ``last`` is iova + size - 1;
    ``pins`` the FOLL_PIN ranges (and followed PFNMAP ranges) backing it, in
    IOVA order: one ``Pin`` (the common case, kept bare: 48 B less per live
    mapping than a 1-tuple) or a tuple, empty while not iommu_mapped (read
    them with ``pinned()``); ``state`` packs prot and the flags below."""

    __slots__ = ("iova", "last", "vaddr", "pins", "state")

    def __init__(self, iova: int, last: int, vaddr: int, state: int):
        self.iova, self.last, self.vaddr, self.state = iova, last, vaddr, state
        self.pins = ()

    iommu_mapped = _state_bit(DMA_IOMMU_MAPPED, "pinned and mapped in the domains")
    lock_cap = _state_bit(DMA_LOCK_CAP, "capable(CAP_IPC_LOCK) at MAP: RLIMIT_MEMLOCK not enforced")
    vaddr_invalid = _state_bit(DMA_VADDR_INVALID, "VFIO_DMA_UNMAP_FLAG_VADDR done, not yet remapped")
    has_rsvd = _state_bit(DMA_HAS_RSVD, "has reserved (PFNMAP) pfns, not charged")

    @property
    def prot(self) -> int:
        return self.state & (IOMMU_READ | IOMMU_WRITE)

    @property
    def size(self) -> int:
        return self.last - self.iova + 1

    def pinned(self) -> tuple:
        """The pins, as a tuple."""
        pins = self.pins
        return (pins,) if type(pins) is Pin else pins

    def keep(self, pins: list[Pin]) -> None:
        """Hold ``pins`` (one kept bare, see the class docstring)."""
        self.pins = pins[0] if len(pins) == 1 else tuple(pins)

    @property
    def locked_vm(self) -> int:
        """dma->locked_vm: the pages charged to mm->locked_vm (PFNMAP pages,
        is_invalid_reserved_pfn(), are not)."""
        if not self.state & DMA_HAS_RSVD:
            return sum(p.npages for p in self.pinned())
        return sum(p.npages for p in self.pinned() if p in p.store.pins)

    def __repr__(self) -> str:
        return (f"vfio_dma(iova={self.iova:#x}, size={self.size:#x}, vaddr={self.vaddr:#x}, "
                f"prot={self.prot}, mapped={self.iommu_mapped})")


def vfio_unpin_pages_remote(dma: vfio_dma) -> int:
    """vfio_unpin_pages_remote() -> put_pfn() over the whole dma: every pinned
    page unpinned (gup.unpin_user_pages()), reserved pfns (a followed PFNMAP
    range, is_invalid_reserved_pfn()) skipped; returns the pages to uncharge."""
    pins = dma.pins
    dma.pins = ()
    if type(pins) is Pin:
        if not dma.state & DMA_HAS_RSVD:               # one run of pinned pages
            unpin_user_page_range_dirty_lock(pins)
            return pins.npages
        pins = (pins,)
    if dma.state & DMA_HAS_RSVD:
        pins = [p for p in pins if p in p.store.pins]
    unpin_user_pages(pins)
    n = 0
    for pin in pins:
        n += pin.npages
    return n


class VfioDomain:
    """struct vfio_domain: an IOMMU paging domain shared by the groups behind
    the same ``IommuHw`` (vfio_iommu_type1_attach_group() reuses a domain with
    the same ops and enforce_cache_coherency).  Every domain holds every
    mapping (vfio_iommu_map() maps into all of them, vfio_iommu_replay()
    copies into a new one), so the translation is the container's dma_list."""

    __slots__ = ("iommu", "hw", "groups", "enforce_cache_coherency")

    def __init__(self, iommu: "VfioIommu", hw, groups: list):
        self.iommu, self.hw, self.groups = iommu, hw, groups
        self.enforce_cache_coherency = bool(getattr(hw, "enforce_cache_coherency", False))

    def iova_to_page(self, iova: int):
        """iommu_iova_to_phys(): (pin, index in pin, IOMMU_READ|IOMMU_WRITE) or None."""
        iommu = self.iommu
        dma = iommu.dma_list.find(iova)
        if dma is None and iommu.top_dmas:
            dma = next((d for d in iommu.top_dmas if d.iova <= iova), None)
        if dma is None or not dma.state & DMA_IOMMU_MAPPED:
            return None
        idx = (iova - dma.iova) >> PAGE_SHIFT
        for pin in dma.pinned():
            if idx < pin.npages:
                return pin, idx, dma.state & (IOMMU_READ | IOMMU_WRITE)
            idx -= pin.npages
        return None

    def __repr__(self) -> str:
        return f"VfioDomain({self.hw}, groups={[g.id for g in self.groups]})"


def _group_hw(group):
    """The IommuHw a group sits behind; None for an emulated (mdev) group
    (vfio_group_type VFIO_EMULATED_IOMMU)."""
    return group.devices[0].hw if group.devices else None


def vfio_iommu_type1_check_extension(iommu: "VfioIommu | None", arg: int, profile) -> int:
    """vfio_iommu_type1_check_extension(): TYPE1/TYPE1v2/UNMAP_ALL 1;
    VFIO_TYPE1_NESTING_IOMMU 1 until 6.13 (profile.type1_nesting_extension),
    then __VFIO_RESERVED_TYPE1_NESTING_IOMMU 0; UPDATE_VADDR 1 with an iommu
    and no emulated group (0 before VFIO_SET_IOMMU: iommu is NULL); DMA_CC 1
    iff every domain enforces cache coherency (0 with no iommu); others 0."""
    if arg in (VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, uapi.VFIO_UNMAP_ALL):
        return 1
    if arg == VFIO_TYPE1_NESTING_IOMMU:
        return 1 if profile.type1_nesting_extension else 0
    if arg == uapi.VFIO_UPDATE_VADDR:
        return int(iommu is not None and not iommu.emulated_groups)
    if arg == uapi.VFIO_DMA_CC_IOMMU:
        if iommu is None:
            return 0
        return int(all(d.enforce_cache_coherency for d in iommu.domains))
    return 0


class VfioIommu:
    """struct vfio_iommu: the type1 driver's state for one container
    (vfio_iommu_type1_open() -> vfio_iommu_type1_release())."""

    def __init__(self, host, v2: bool, nesting: bool, dma_entry_limit: int):
        self.host, self.mm, self.profile = host, host.mm, host.profile
        self.v2, self.nesting = v2, nesting
        self.domains: list[VfioDomain] = []            # list_add(): newest first
        self.emulated_groups: list = []
        self.iova_list = []                           # [[start, end inclusive]], sorted
        self.dma_list = IovaTree()
        self.top_dmas: list[vfio_dma] = []            # <6.18 only: dmas ending at U64_MAX
        self.dma_avail = dma_entry_limit
        self.vaddr_invalid_count = 0
        self.pgsize_bitmap = PAGE_MASK
        self.pgmask = PAGE_SIZE - 1                   # (1 << __ffs(pgsize_bitmap)) - 1
        self.num_non_pinned_groups = 0
        self.dirty_page_tracking = False
        self.up_to_limit = self.profile.type1_map_up_to_limit
        self.overflow_errno = self.profile.type1_overflow_errno
        # The one-step MAP and exact-UNMAP paths (SimHost(fast_paths=False): the general ones)
        self.fast_map = host.fast_paths
        self.fast_link = self.up_to_limit and host.fast_paths     # insert_free(): 6.18+ only
        self.fast_unmap = v2 and self.up_to_limit and host.fast_paths

    # ---- the dma_list -----------------------------------------------------------
    def groups(self) -> list:
        return [g for d in self.domains for g in d.groups] + self.emulated_groups

    def all_dmas(self) -> list[vfio_dma]:
        """rb_first()..rb_next() over dma_list (the <6.18 top dmas sort last)."""
        return list(self.dma_list) + self.top_dmas

    def vfio_find_dma(self, start: int, size: int) -> vfio_dma | None:
        """vfio_find_dma(): a dma intersecting [start, start + size).  Before
        ef270ec44637 (6.18) the rb walk compares ``start + size <= dma->iova``
        and ``start >= dma->iova + dma->size`` in u64: a query whose end wraps
        to 0, or a dma ending at U64_MAX, is never found."""
        if size == 0:               # the <6.18 unmap probe vfio_find_dma(iova + size - 1, 0)
            return self.dma_list.find(start)
        last = start + size - 1
        if not self.up_to_limit and last == U64_MAX:
            return None
        return self.dma_list.first_overlap(start, last)

    def _link(self, dma: vfio_dma) -> None:
        """vfio_link_dma()."""
        if dma.last == U64_MAX and not self.up_to_limit:
            self.top_dmas.append(dma)
        else:
            self.dma_list.insert(dma)

    def _unlink(self, dma: vfio_dma) -> None:
        """vfio_unlink_dma()."""
        if dma.last == U64_MAX and not self.up_to_limit:
            self.top_dmas.remove(dma)
        else:
            self.dma_list.remove(dma)

    @property
    def iova_list(self) -> list[list[int]]:
        return self._iova_list

    @iova_list.setter
    def iova_list(self, ranges: list[list[int]]) -> None:
        self._iova_list = ranges
        # The range vfio_iommu_iova_dma_valid() found last, tested inline on MAP
        # (an empty list accepts anything).
        self.iova_lo, self.iova_hi = (1, 0) if ranges else (0, U64_MAX)

    def vfio_iommu_iova_dma_valid(self, start: int, end: int) -> bool:
        """vfio_iommu_iova_dma_valid(): inside one iova_list range; an empty
        list (no IOMMU domain, e.g. mdev only) accepts anything.  The range
        found is kept ([iova_lo, iova_hi]) for vfio_dma_do_map()'s inline test."""
        for s, e in self._iova_list:
            if start >= s and end <= e:
                self.iova_lo, self.iova_hi = s, e
                return True
        return not self._iova_list

    # ---- pinning and accounting ---------------------------------------------------
    def _limit(self) -> int:
        """rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT."""
        return self.host.rlimit_memlock >> PAGE_SHIFT

    def vfio_pin_pages_remote(self, dma: vfio_dma, vaddr: int, npage: int, limit: int,
                              charged: int) -> tuple[int, object]:
        """vfio_pin_pages_remote() -> vaddr_get_pfns(): pin_user_pages_remote(
        FOLL_LONGTERM [| FOLL_WRITE]); if GUP fails and the VMA is VM_PFNMAP,
        follow_fault_pfn() (EFAULT for a write to a read-only PTE) and the
        pages are reserved pfns, not charged.  Page-backed runs are checked
        against RLIMIT_MEMLOCK after pinning: ``mm->locked_vm + lock_acct +
        acct_pages > limit`` -> -ENOMEM unless dma->lock_cap.  Returns
        (pages, Pin) or (-errno, None); ``charged`` = lock_acct so far."""
        mm = self.mm
        write = bool(dma.prot & IOMMU_WRITE)
        n, pins = pin_user_pages(mm, vaddr, npage, write, True)
        if n > 0:
            if not dma.lock_cap and self.host.locked_vm + charged + n > limit:
                unpin_user_pages(pins)
                return -errno.ENOMEM, None
            return n, pins
        vma = mm.find_vma(vaddr)
        if vma is not None and vma.vm_flags & VM_PFNMAP:
            n, pins = follow_pfnmap(mm, vaddr, npage, write)
            if n > 0:
                dma.has_rsvd = True
                return n, pins
        return n if n < 0 else -errno.EFAULT, None

    def vfio_pin_map_dma(self, dma: vfio_dma, size: int) -> int:
        """vfio_pin_map_dma(): pin (vfio_pin_pages_remote()) and map run by
        run; any failure -> vfio_remove_dma() undoes the whole mapping (unpin,
        uncharge, unlink).  vfio_dma_do_map() has the one-run fast path."""
        ret = self._pin_runs(dma, self._limit())
        if ret:
            self.vfio_remove_dma(dma)
        return ret

    def _pin_runs(self, dma: vfio_dma, limit: int) -> int:
        """The loop of vfio_pin_map_dma()/vfio_iommu_replay(): vfio_pin_pages_remote()
        run by run over the whole dma, vfio_lock_acct() per run.  The pins made,
        even on failure, stay in dma.pins and the dma is marked iommu_mapped, so
        vfio_unmap_unpin() undoes exactly them.  0 or the first -errno."""
        npage = dma.size >> PAGE_SHIFT
        got, charged, done, ret = [], 0, 0, 0
        while done < npage:
            n, pins = self.vfio_pin_pages_remote(dma, dma.vaddr + (done << PAGE_SHIFT),
                                                 npage - done, limit, charged)
            if n < 0:
                ret = n
                break
            got += pins
            if pins[0] in pins[0].store.pins:
                charged += n
            done += n
        dma.keep(got)
        self.host.locked_vm += charged
        dma.state |= DMA_IOMMU_MAPPED
        return ret

    def vfio_unmap_unpin(self, dma: vfio_dma) -> None:
        """vfio_unmap_unpin(dma, do_accounting=true): unpin every page
        (unpin_user_page_range_dirty_lock()) and vfio_lock_acct(-unlocked).
        Before ef270ec44637 (6.18) the walk is ``while (iova < end)`` with
        end = iova + size: for a dma ending at U64_MAX end is 0 and nothing is
        unpinned or uncharged (the leak the 6.18 fix closed)."""
        state = dma.state
        if not state & DMA_IOMMU_MAPPED:
            return
        dma.state = state & ~DMA_IOMMU_MAPPED
        if dma.last == U64_MAX and not self.up_to_limit:
            return
        self.host.locked_vm -= vfio_unpin_pages_remote(dma)

    def vfio_remove_dma(self, dma: vfio_dma) -> None:
        """vfio_remove_dma(): unmap + unpin + uncharge, unlink, dma_avail++."""
        self.vfio_unmap_unpin(dma)
        self._unlink(dma)
        if dma.state & DMA_VADDR_INVALID:
            self.vaddr_invalid_count -= 1
        self.dma_avail += 1

    def vfio_iommu_unmap_unpin_all(self) -> None:
        """vfio_iommu_unmap_unpin_all(): every dma removed."""
        for dma in self.all_dmas():
            self.vfio_unmap_unpin(dma)
            if dma.vaddr_invalid:
                self.vaddr_invalid_count -= 1
            self.dma_avail += 1
        self.dma_list = IovaTree()
        self.top_dmas = []

    # ---- VFIO_IOMMU_MAP_DMA ---------------------------------------------------------
    def vfio_iommu_type1_map_dma(self, buf) -> int:
        """vfio_iommu_type1_map_dma(): minsz = offsetofend(size) = 32;
        -EINVAL if argsz < minsz or a flag outside READ|WRITE|VADDR.
        Nothing is copied back (success or not)."""
        if len(buf) < _MAP_MINSZ:
            buf = bytes(buf).ljust(_MAP_MINSZ, b"\0")
        argsz, flags, vaddr, iova, size = _map_unpack(buf)
        if argsz < _MAP_MINSZ or flags & _NOT_MAP_MASK:
            return -errno.EINVAL
        return self.vfio_dma_do_map(flags, vaddr, iova, size)

    def vfio_dma_do_map(self, flags: int, vaddr: int, iova: int, size: int) -> int:
        """vfio_dma_do_map().  Order (T71, >= 6.18): size 0 EINVAL -> iova or
        vaddr + size - 1 overflows u64 (check_add_overflow) EOVERFLOW -> no
        READ/WRITE without VADDR, or R/W with VADDR, EINVAL -> size|iova|vaddr
        not aligned to the IOMMU page EINVAL -> vfio_find_dma(): VADDR: none
        ENOENT, not invalidated or iova/size differ EINVAL, else rebind;
        otherwise EEXIST -> dma_avail 0 ENOSPC (dma_entry_limit) -> outside
        iova_list EINVAL (vfio_iommu_iova_dma_valid) -> pin (EFAULT, ENOMEM;
        the whole mapping undone).  Before 6012379ede6a (6.18) the wrap check
        sat after the alignment check and returned EINVAL
        (profile.type1_overflow_errno); every earlier check is EINVAL too, so
        the first failing check gives the same errno in either order and one
        order serves both."""
        if not size:
            return -errno.EINVAL
        last = iova + size - 1
        if last > U64_MAX or vaddr + size > _2_64:
            return -self.overflow_errno
        prot = flags & _MAP_RW                         # == IOMMU_READ | IOMMU_WRITE
        if flags & MAP_VADDR:
            if prot:
                return -errno.EINVAL
            if (size | iova | vaddr) & self.pgmask:
                return -errno.EINVAL
            return self._set_vaddr(vaddr, iova, size)
        if not prot or (size | iova | vaddr) & self.pgmask:
            return -errno.EINVAL
        host = self.host
        dma = vfio_dma(iova, last, vaddr, prot | DMA_LOCK_CAP if host.cap_ipc_lock else prot)
        if self.fast_link:
            if self.dma_list.insert_free(dma) is not None:      # vfio_find_dma() + link
                return -errno.EEXIST
        elif self.vfio_find_dma(iova, size) is not None:
            return -errno.EEXIST
        else:
            self._link(dma)
        if not self.dma_avail:
            self._unlink(dma)
            return -errno.ENOSPC
        if (iova < self.iova_lo or last > self.iova_hi) \
                and not self.vfio_iommu_iova_dma_valid(iova, last):
            self._unlink(dma)
            return -errno.EINVAL
        self.dma_avail -= 1
        if self.domains:                 # else (mdev only): nothing pinned at MAP
            # vfio_pin_map_dma() when one anonymous VMA holds the mapping (else: the general path)
            pin = gup_vma_range(self.mm, vaddr, size >> PAGE_SHIFT, prot & IOMMU_WRITE) \
                if self.fast_map else None
            if pin is not None and (dma.state & DMA_LOCK_CAP or
                                    host.locked_vm + pin.npages <= host.rlimit_memlock >> PAGE_SHIFT):
                host.locked_vm += pin.npages
                dma.pins = pin                                  # dma.keep([pin])
                dma.state |= DMA_IOMMU_MAPPED
            else:
                if pin is not None:
                    unpin_user_page_range_dirty_lock(pin)
                ret = self.vfio_pin_map_dma(dma, size)
                if ret:
                    return ret
        if self.dirty_page_tracking and size >> (_ffs(self.pgsize_bitmap) & 63) > DIRTY_BITMAP_PAGES_MAX:
            self.vfio_remove_dma(dma)    # vfio_dma_bitmap_alloc(): -EINVAL
            return -errno.EINVAL
        return 0

    def _set_vaddr(self, vaddr: int, iova: int, size: int) -> int:
        """The VFIO_DMA_MAP_FLAG_VADDR branch of vfio_dma_do_map(): no dma at
        iova -> ENOENT; not invalidated, or iova/size differ -> EINVAL; else
        vfio_change_dma_owner() (the same mm here: nothing moves) and the new
        vaddr.  The pinned pages are not touched."""
        dma = self.vfio_find_dma(iova, size)
        if dma is None:
            return -errno.ENOENT
        if not dma.state & DMA_VADDR_INVALID or dma.iova != iova or dma.size != size:
            return -errno.EINVAL
        dma.vaddr = vaddr
        dma.state &= ~DMA_VADDR_INVALID
        self.vaddr_invalid_count -= 1
        return 0

    # ---- VFIO_IOMMU_UNMAP_DMA --------------------------------------------------------
    def vfio_iommu_type1_unmap_dma(self, buf) -> tuple[int, bytes]:
        """vfio_iommu_type1_unmap_dma(): minsz 24; -EINVAL argsz < minsz or an
        unknown flag -> GET_DIRTY_BITMAP with ALL or VADDR EINVAL -> with
        GET_DIRTY_BITMAP: argsz < 24 + sizeof(vfio_bitmap) EINVAL, !access_ok
        EINVAL, verify_bitmap_size() EINVAL.  On success the first 24 bytes
        are copied back with size = bytes unmapped; on error nothing."""
        out = buf if type(buf) is bytes else bytes(buf)
        if len(buf) < _UNMAP_MINSZ:
            buf = out.ljust(_UNMAP_MINSZ, b"\0")
        argsz, flags, iova, size = _unmap_unpack(buf)
        if argsz < _UNMAP_MINSZ or flags & _NOT_UNMAP_MASK:
            return -errno.EINVAL, out
        if not flags and self.fast_unmap:
            # Fast path: v2, a range that is exactly one dma (what QEMU does):
            # the checks of vfio_dma_do_unmap() pass and vfio_remove_dma() it.
            if size and not (iova | size) & self.pgmask:
                dma = self.dma_list.remove_exact(iova, iova + size - 1)
                if dma is not None:
                    state = dma.state
                    if state & DMA_IOMMU_MAPPED:         # vfio_unmap_unpin()
                        self.host.locked_vm -= vfio_unpin_pages_remote(dma)
                    if state & DMA_VADDR_INVALID:
                        self.vaddr_invalid_count -= 1
                    self.dma_avail += 1
                    return 0, out        # copied back: size unmapped == size, as passed
        bitmap = None
        if flags & UNMAP_DIRTY:
            if flags & (UNMAP_ALL | UNMAP_VADDR):
                return -errno.EINVAL, out
            if argsz < _UNMAP_MINSZ + _BITMAP.size:
                return -errno.EINVAL, out
            bitmap = _BITMAP.unpack_from(bytes(buf).ljust(_UNMAP_MINSZ + _BITMAP.size, b"\0"),
                                         _UNMAP_MINSZ)
            pgsize, bsize, data = bitmap
            if data + bsize > TASK_SIZE:                       # access_ok()
                return -errno.EINVAL, out
            pgshift = _ffs(pgsize) & 63           # __ffs(0): tzcnt 64, and >> 64 shifts by 0 on x86
            ret = verify_bitmap_size(size >> pgshift, bsize)
            if ret:
                return ret, out
        ret, unmapped = self.vfio_dma_do_unmap(flags, iova, size, bitmap)
        if ret:
            return ret, out
        if len(out) >= _UNMAP_MINSZ:
            return 0, out[:16] + _q_pack(unmapped) + out[24:]
        return 0, (out[:16] + _q_pack(unmapped))[:len(out)]

    def vfio_dma_do_unmap(self, flags: int, iova: int, size: int, bitmap) -> tuple[int, int]:
        """vfio_dma_do_unmap() -> (ret, unmapped).  Order (T71): VADDR with an
        emulated (mdev) group EBUSY -> iova misaligned EINVAL -> ALL: iova or
        size != 0 EINVAL; else size 0 or misaligned EINVAL -> iova + size - 1
        overflows EOVERFLOW (< 6.18: EINVAL in the same test) -> GET_DIRTY_BITMAP
        without tracking or with bitmap.pgsize != IOMMU page EINVAL -> v2 (not
        ALL): a dma straddling iova or iova + size - 1 EINVAL (no bisection)
        -> walk: v1 stops at a dma starting before iova (0 unmapped) and
        removes a dma starting inside the range whole; VADDR marks each dma
        vaddr_invalid (one already invalid -> roll back, EINVAL).  A range
        covering nothing gives 0 with size 0 (v1 and v2)."""
        unmap_all = flags & UNMAP_ALL
        invalidate_vaddr = flags & UNMAP_VADDR
        if invalidate_vaddr and self.emulated_groups:
            return -errno.EBUSY, 0
        mask = self.pgmask
        if iova & mask:
            return -errno.EINVAL, 0
        if unmap_all:
            if iova or size:
                return -errno.EINVAL, 0
            iova_end = U64_MAX
        else:
            if not size or size & mask:
                return -errno.EINVAL, 0
            iova_end = iova + size - 1
            if iova_end > U64_MAX:
                return -self.overflow_errno, 0
        if bitmap is not None and (not self.dirty_page_tracking or bitmap[0] != mask + 1):
            return -errno.EINVAL, 0
        tree = self.dma_list
        if not self.up_to_limit:
            return self._do_unmap_pre618(flags, iova, size, iova_end, bitmap)
        if self.v2 and not unmap_all:
            dma = tree.find(iova)
            if dma is not None and dma.iova != iova:
                return -errno.EINVAL, 0
            dma = tree.find(iova_end)
            if dma is not None and dma.last != iova_end:
                return -errno.EINVAL, 0
        if unmap_all and not invalidate_vaddr and bitmap is None:
            unmapped = sum(d.size for d in tree)
            self.vfio_iommu_unmap_unpin_all()
            return 0, unmapped
        return self._unmap_walk(tree.overlapping(iova, iova_end), flags, iova, bitmap)

    def _do_unmap_pre618(self, flags, iova, size, iova_end, bitmap) -> tuple[int, int]:
        """vfio_dma_do_unmap() before ef270ec44637 (6.18): ``iova + size`` is a
        u64 that wraps to 0 when the range ends at U64_MAX; the second probe is
        vfio_find_dma(iova + size - 1, 0); vfio_find_dma_first_node(iova, size)
        drops its result when ``dma->iova >= start + size``; dmas ending at
        U64_MAX are never found by the probes but are walked by rb_next()."""
        unmap_all = flags & UNMAP_ALL
        end = U64_MAX if unmap_all else (iova + size) & U64_MAX      # iova + size, u64
        tree = self.dma_list
        if self.v2 and not unmap_all:
            dma = self.vfio_find_dma(iova, 1)
            if dma is not None and dma.iova != iova:
                return -errno.EINVAL, 0
            dma = self.vfio_find_dma(iova_end, 0)
            if dma is not None and (dma.last + 1) & U64_MAX != end:
                return -errno.EINVAL, 0
        nodes = tree.overlapping(iova, iova_end)
        if not nodes or (size and nodes[0].iova >= end):     # vfio_find_dma_first_node()
            return 0, 0
        nodes = [d for d in nodes + self.top_dmas if d.iova < end]
        return self._unmap_walk(nodes, flags, iova, bitmap)

    def _unmap_walk(self, nodes: list, flags: int, iova: int, bitmap) -> tuple[int, int]:
        """The ``while (n)`` loop of vfio_dma_do_unmap() over the dmas from
        vfio_find_dma_first_node() on."""
        unmapped = 0
        if flags & UNMAP_VADDR:
            marked = []
            for dma in nodes:
                if not self.v2 and iova > dma.iova:
                    break
                if dma.vaddr_invalid:
                    for d in marked:                    # roll back this call's marks
                        d.vaddr_invalid = False
                        self.vaddr_invalid_count -= 1
                    return -errno.EINVAL, 0
                dma.vaddr_invalid = True
                self.vaddr_invalid_count += 1
                marked.append(dma)
                unmapped += dma.size
            return 0, unmapped
        for dma in nodes:
            if not self.v2 and iova > dma.iova:
                break
            if bitmap is not None:
                ret = self.update_user_bitmap(bitmap[2], dma, iova, bitmap[0])
                if ret:
                    return ret, unmapped
            unmapped += dma.size
            self.vfio_remove_dma(dma)
        return 0, unmapped

    # ---- dirty tracking ------------------------------------------------------------
    def update_user_bitmap(self, data: int, dma: vfio_dma, base_iova: int, pgsize: int) -> int:
        """update_user_bitmap(): the dma's bits (all set when an IOMMU-backed
        group, not pinned-page dirty scope, has it iommu_mapped; else none: no
        mdev pins here) shifted to their offset from base_iova; the low bits
        of the first u64 are kept from the user's word (copy_from_user), then
        DIRTY_BITMAP_BYTES(nbits + shift) bytes are written over the user's
        bitmap (copy_to_user); an unreadable/unwritable bitmap -> -EFAULT."""
        pgshift = _ffs(pgsize)
        nbits = dma.size >> pgshift
        bit_offset = (dma.iova - base_iova) >> pgshift
        addr = data + (bit_offset // 64) * 8
        shift = bit_offset % 64
        bits = (1 << nbits) - 1 if self.num_non_pinned_groups and dma.iommu_mapped else 0
        val = bits << shift
        if shift:
            ret, old = self.host.read_mem(addr, 8)
            if ret != 8:
                return -errno.EFAULT
            val |= int.from_bytes(old, "little") & ((1 << shift) - 1)
        nbytes = DIRTY_BITMAP_BYTES(nbits + shift)
        if self.host.write_mem(addr, val.to_bytes(nbytes, "little")) != nbytes:
            return -errno.EFAULT
        return 0

    def vfio_iommu_type1_dirty_pages(self, buf) -> int:
        """vfio_iommu_type1_dirty_pages(): v1 -> EACCES; argsz < 8 or an
        unknown flag EINVAL; not exactly one flag EINVAL; START allocates the
        per-dma bitmaps (a dma over DIRTY_BITMAP_PAGES_MAX pages -> EINVAL);
        STOP frees them; GET_BITMAP: argsz - 8 < sizeof(range) EINVAL ->
        iova + size - 1 overflow EOVERFLOW (< 6.18: iova + size < iova EINVAL)
        -> size 0 EINVAL -> !access_ok EINVAL -> verify_bitmap_size EINVAL ->
        bitmap.pgsize != IOMMU page, iova or size misaligned, or tracking off
        EINVAL -> vfio_iova_dirty_bitmap() (bisected dma EINVAL)."""
        if not self.v2:
            return -errno.EACCES
        raw = bytes(buf).ljust(_DIRTY_MINSZ, b"\0")
        argsz, flags = _DIRTY.unpack_from(raw)
        if argsz < _DIRTY_MINSZ or flags & ~(DIRTY_START | DIRTY_STOP | DIRTY_GET):
            return -errno.EINVAL
        if not flags or flags & (flags - 1):
            return -errno.EINVAL
        pgsize = self.pgmask + 1
        if flags & DIRTY_START:
            if not self.dirty_page_tracking:
                if any(d.size // pgsize > DIRTY_BITMAP_PAGES_MAX for d in self.all_dmas()):
                    return -errno.EINVAL
                self.dirty_page_tracking = True
            return 0
        if flags & DIRTY_STOP:
            self.dirty_page_tracking = False
            return 0
        data_size = argsz - _DIRTY_MINSZ
        if not data_size or data_size < _RANGE_SIZE:
            return -errno.EINVAL
        raw = raw.ljust(_DIRTY_MINSZ + _RANGE_SIZE, b"\0")
        iova, size = _QQ.unpack_from(raw, _DIRTY_MINSZ)
        bpgsize, bsize, data = _BITMAP.unpack_from(raw, _DIRTY_MINSZ + _RANGE_BITMAP)
        if self.up_to_limit:
            if not size:
                return -errno.EINVAL
            if iova + size - 1 > U64_MAX:
                return -errno.EOVERFLOW
        elif iova + size > U64_MAX:
            return -errno.EINVAL
        if data + bsize > TASK_SIZE:
            return -errno.EINVAL
        ret = verify_bitmap_size(size >> (_ffs(bpgsize) & 63), bsize)
        if ret:
            return ret
        if bpgsize != pgsize or iova & (pgsize - 1) or not size or size & (pgsize - 1):
            return -errno.EINVAL
        if not self.dirty_page_tracking:
            return -errno.EINVAL
        iova_end = iova + size - 1
        dma = self.vfio_find_dma(iova, 1)
        if dma is not None and dma.iova != iova:
            return -errno.EINVAL
        dma = self.dma_list.find(iova_end)
        if dma is not None and dma.last != iova_end:
            return -errno.EINVAL
        for dma in self.all_dmas():
            if dma.iova < iova:
                continue
            if dma.iova > iova_end:
                break
            ret = self.update_user_bitmap(data, dma, iova, bpgsize)
            if ret:
                return ret
        return 0

    # ---- VFIO_IOMMU_GET_INFO ------------------------------------------------------------
    def vfio_iommu_type1_get_info(self, buf) -> tuple[int, bytes]:
        """vfio_iommu_type1_get_info(): argsz < 16 -> EINVAL.  flags =
        PGSIZES|CAPS, iova_pgsizes = pgsize_bitmap; caps in the order they are
        built: MIGRATION (pgsize_bitmap = min IOMMU page, max_dirty_bitmap_size),
        DMA_AVAIL, IOVA_RANGE (only with a non-empty iova_list), each 8-byte
        aligned by vfio_info_cap_add() from 6.6 (profile.vfio_info_cap_aligned),
        packed before.  If argsz < 24 + caps, argsz grows to
        the size needed and cap_offset stays 0; else the chain is copied at
        offset 24.  min(argsz, 24) bytes of the struct are copied back."""
        out = bytearray(buf)
        raw = bytes(out).ljust(_INFO.size, b"\0")
        argsz = _INFO.unpack_from(raw)[0]
        if argsz < _INFO_MINSZ:
            return -errno.EINVAL, bytes(out)
        minsz = min(argsz, _INFO.size)
        pgsize = self.pgmask + 1
        caps = [("vfio_iommu_type1_info_cap_migration",
                 dict(flags=0, pgsize_bitmap=pgsize, max_dirty_bitmap_size=DIRTY_BITMAP_SIZE_MAX)),
                ("vfio_iommu_type1_info_dma_avail", dict(avail=self.dma_avail))]
        if self.iova_list:
            caps.append(("vfio_iommu_type1_info_cap_iova_range",
                         dict(iova_ranges=[dict(start=s, end=e) for s, e in self.iova_list])))
        chain = uapi.build_cap_chain(_INFO.size, caps,
                                     align=8 if self.profile.vfio_info_cap_aligned else 1)
        flags = uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
        cap_offset = 0
        if argsz < _INFO.size + len(chain):
            argsz = _INFO.size + len(chain)
        else:
            _write(out, _INFO.size, chain)
            cap_offset = _INFO.size
        info = _INFO.pack(argsz, flags, self.pgsize_bitmap, cap_offset, 0)
        _write(out, 0, info[:minsz])
        return 0, bytes(out)

    # ---- domains: attach / detach (vfio_iommu_type1_attach_group() ...) ----------------
    def vfio_update_pgsize_bitmap(self) -> None:
        """vfio_update_pgsize_bitmap(): AND of the domains' bitmaps; sub-page
        sizes hidden and PAGE_SIZE forced on."""
        bitmap = U64_MAX
        for d in self.domains:
            bitmap &= d.hw.pgsize_bitmap
        if bitmap & ~PAGE_MASK:
            bitmap = (bitmap & PAGE_MASK) | PAGE_SIZE
        self.pgsize_bitmap = bitmap
        self.pgmask = (1 << (_ffs(bitmap) & 63)) - 1      # no common size: shl by 64 is by 0

    def vfio_iommu_aper_conflict(self, start: int, end: int) -> bool:
        """vfio_iommu_aper_conflict(): disjoint from the current list, or
        existing dmas outside the new aperture."""
        iova = self.iova_list
        if not iova:
            return False
        first, last = iova[0], iova[-1]
        if start > last[1] or end < first[0]:
            return True
        if start > first[0] and self.vfio_find_dma(first[0], start - first[0]):
            return True
        if end < last[1] and self.vfio_find_dma(end + 1, last[1] - end):
            return True
        return False

    def vfio_iommu_resv_conflict(self, resv) -> bool:
        """vfio_iommu_resv_conflict(): a reserved region over an existing dma."""
        return any(self.vfio_find_dma(s, e - s + 1) for s, e in resv)

    def vfio_iommu_replay(self, domain: VfioDomain) -> int:
        """vfio_iommu_replay(): map every dma into the new domain; dmas not yet
        iommu_mapped (made with no IOMMU domain) are pinned now, with the same
        EFAULT/ENOMEM as at MAP; on failure the pins made here are undone."""
        limit = self._limit()
        newly = []
        ret = 0
        for dma in self.all_dmas():
            if dma.iommu_mapped:
                continue
            if dma.last == U64_MAX and not self.up_to_limit:
                continue                     # <6.18: ``while (iova < dma->iova + dma->size)``
            ret = self._pin_runs(dma, limit)
            newly.append(dma)
            if ret:
                break
        if ret:
            for dma in newly:
                self.vfio_unmap_unpin(dma)
            return ret
        for dma in self.all_dmas():
            dma.iommu_mapped = True
        return 0

    def attach_group(self, group) -> int:
        """vfio_iommu_type1_attach_group(): EBUSY while any vaddr is invalid;
        EINVAL for a duplicate; an emulated group just joins; else a paging
        domain for the group's IommuHw: (< 6.13, VFIO_TYPE1_NESTING_IOMMU:
        iommu_enable_nesting() fails, no enable_nesting op -> EINVAL) ->
        aperture conflict EINVAL -> reserved region over a dma EINVAL ->
        iova_list = aperture minus reserved (empty -> EINVAL) -> join an
        existing domain of the same IommuHw, or replay the mappings into the
        new one (pinning: EFAULT/ENOMEM) -> pgsize_bitmap updated."""
        if self.vaddr_invalid_count:
            return -errno.EBUSY
        if group in self.groups():
            return -errno.EINVAL
        hw = _group_hw(group)
        if hw is None:
            self.emulated_groups.append(group)
            return 0
        if self.nesting:
            return -errno.EINVAL
        start, end = hw.aperture
        if self.vfio_iommu_aper_conflict(start, end):
            return -errno.EINVAL
        if self.vfio_iommu_resv_conflict(hw.reserved):
            return -errno.EINVAL
        iova_copy = [list(r) for r in self.iova_list]
        vfio_iommu_aper_resize(iova_copy, start, end)
        if vfio_iommu_resv_exclude(iova_copy, hw.reserved):
            return -errno.EINVAL
        cc = bool(getattr(hw, "enforce_cache_coherency", False))
        domain = next((d for d in self.domains
                       if d.hw == hw and d.enforce_cache_coherency == cc), None)
        if domain is not None:
            domain.groups.append(group)
        else:
            domain = VfioDomain(self, hw, [group])
            ret = self.vfio_iommu_replay(domain)
            if ret:
                return ret
            self.domains.insert(0, domain)
            self.vfio_update_pgsize_bitmap()
        self.iova_list = iova_copy
        self.num_non_pinned_groups += 1
        for dev in group.devices:
            dev.domain = domain
        return 0

    def vfio_iommu_unmap_unpin_reaccount(self) -> None:
        """vfio_iommu_unmap_unpin_reaccount(): the last IOMMU domain goes while
        emulated groups stay: unpin and uncharge, keep the dmas."""
        for dma in self.all_dmas():
            self.vfio_unmap_unpin(dma)

    def detach_group(self, group) -> None:
        """vfio_iommu_type1_detach_group(): an emulated group leaves (the last
        one with no domain: unmap everything); else the group leaves its
        domain; an empty domain is freed, and if it was the only one every
        dma is removed (or only unpinned while emulated groups remain); the
        aperture is re-expanded and the reserved regions recomputed."""
        if group in self.emulated_groups:
            self.emulated_groups.remove(group)
            if not self.emulated_groups and not self.domains:
                self.vfio_iommu_unmap_unpin_all()
            return
        iova_copy = [list(r) for r in self.iova_list]
        for domain in self.domains:
            if group not in domain.groups:
                continue
            domain.groups.remove(group)
            for dev in group.devices:
                dev.domain = None
            if not domain.groups:
                if len(self.domains) == 1:
                    if not self.emulated_groups:
                        self.vfio_iommu_unmap_unpin_all()
                    else:
                        self.vfio_iommu_unmap_unpin_reaccount()
                self.domains.remove(domain)
                vfio_iommu_aper_expand(self.domains, iova_copy)
                self.vfio_update_pgsize_bitmap()
            self.num_non_pinned_groups -= 1
            break
        resv = [r for d in self.domains for g in d.groups for r in _group_hw(g).reserved]
        if iova_copy:                                    # vfio_iommu_resv_refresh()
            new = [[iova_copy[0][0], iova_copy[-1][1]]]
            if not vfio_iommu_resv_exclude(new, resv):
                self.iova_list = new

    def release(self) -> None:
        """vfio_iommu_type1_release(): unmap and unpin everything, detach
        every group from its domain."""
        self.emulated_groups = []
        self.vfio_iommu_unmap_unpin_all()
        for domain in self.domains:
            for group in domain.groups:
                for dev in group.devices:
                    dev.domain = None
        self.domains = []
        self.iova_list = []


def vfio_iommu_aper_resize(iova: list[list[int]], start: int, end: int) -> None:
    """vfio_iommu_aper_resize(): clip the list to [start, end] (an empty list
    becomes [[start, end]])."""
    if not iova:
        iova.append([start, end])
        return
    while iova:                                        # adjust the start
        node = iova[0]
        if start < node[0]:
            break
        if node[0] <= start < node[1]:
            node[0] = start
            break
        iova.pop(0)
    keep = []
    for node in iova:                                  # adjust the end
        if end > node[1]:
            keep.append(node)
        elif node[0] < end <= node[1]:
            node[1] = end
            keep.append(node)
    iova[:] = keep


def vfio_iommu_resv_exclude(iova: list[list[int]], resv) -> int:
    """vfio_iommu_resv_exclude(): cut the reserved regions out; an empty
    result -> -EINVAL."""
    for start, end in resv:
        out = []
        for s, e in iova:
            if start > e or end < s:
                out.append([s, e])
                continue
            if start > s:
                out.append([s, start - 1])
            if end < e:
                out.append([end + 1, e])
        iova[:] = out
    return -errno.EINVAL if not iova else 0


def vfio_iommu_aper_expand(domains: list[VfioDomain], iova: list[list[int]]) -> None:
    """vfio_iommu_aper_expand(): the aperture of the remaining domains (all of
    u64 with none) becomes the list's outer bounds."""
    if not iova:
        return
    start, end = 0, U64_MAX
    for d in domains:
        start, end = max(start, d.hw.aperture[0]), min(end, d.hw.aperture[1])
    iova[0][0] = start
    iova[-1][1] = end


def verify_bitmap_size(npages: int, bitmap_size: int) -> int:
    """verify_bitmap_size(): -EINVAL unless 0 < bytes <= DIRTY_BITMAP_SIZE_MAX
    and large enough for npages."""
    if (not npages or not bitmap_size or bitmap_size > DIRTY_BITMAP_SIZE_MAX
            or bitmap_size < DIRTY_BITMAP_BYTES(npages)):
        return -errno.EINVAL
    return 0


def _write(out: bytearray, off: int, data: bytes) -> None:
    """copy_to_user() into the caller's buffer; bytes past its end are dropped
    (the simulated user buffer is exactly what was passed)."""
    data = data[:max(0, len(out) - off)]
    out[off:off + len(data)] = data
