"""What the IOMMU simulators share: the interval tree of mapped IOVA ranges,
the IOMMU hardware a device sits behind, and its translation.

* ``IovaTree``: non-overlapping ``[iova, last]`` nodes ordered by start, the
  role of ``struct rb_root dma_list`` in drivers/vfio/vfio_iommu_type1.c and of
  ``iopt->area_itree`` (lib/interval_tree.c) in drivers/iommu/iommufd.
  Chunked sorted lists: O(log n) lookups, O(sqrt n) worst-case inserts, and
  about 16 bytes per node of overhead, so a million live mappings stay cheap.
* ``IommuHw``: what ``iommu_paging_domain_alloc()`` gives a device: the
  aperture (``domain->geometry``), ``pgsize_bitmap`` and the reserved regions
  (``iommu_get_resv_regions()``, e.g. the x86 MSI window).  ``HOST_IOMMUS``
  names the host IOMMUs a simulated host can have (``--host-iommu``).
* ``Translation``: the protocol a domain's owner implements so a device can DMA
  (backends/simulated/dma.py): ``iova_to_page(iova) -> (Pin, index, prot[, offset]) | None``
  (``offset``: the byte in the page, when it is not ``iova % PAGE_SIZE``; iommufd areas
  mapped at a sub-page IOVA alignment).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterator, Protocol

IOMMU_READ, IOMMU_WRITE = 1 << 0, 1 << 1       # include/linux/iommu.h

# x86: the interrupt (MSI) window, IOMMU_RESV_MSI in drivers/iommu/intel/iommu.c
# intel_iommu_get_resv_regions() (IOAPIC_RANGE_START..IOAPIC_RANGE_END) and in
# drivers/iommu/amd/iommu.c amd_iommu_get_resv_regions() (MSI_RANGE_START..END).  The rig's
# iommufd-7.2 guest reported IOVA_RANGES [0, 0xfedfffff], [0xfef00000, 0x7fffffffff].
X86_MSI_WINDOW = (0xFEE00000, 0xFEEFFFFF)
# AMD: the HyperTransport range, IOMMU_RESV_RESERVED in amd_iommu_get_resv_regions()
# (HT_RANGE_START..HT_RANGE_END), unless the IOMMU sets FEATURE_HT_RANGE_IGNORE.
AMD_HT_RANGE = (0xFD00000000, 0xFFFFFFFFFF)
# ARM SMMU: the software-managed MSI window, IOMMU_RESV_SW_MSI in
# drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_resv_regions()
# (MSI_IOVA_BASE 0x8000000, MSI_IOVA_LENGTH 0x100000).
SMMU_SW_MSI = (0x8000000, 0x80FFFFF)
RESERVED_NAMES = {X86_MSI_WINDOW: "MSI window", AMD_HT_RANGE: "HyperTransport range",
                  SMMU_SW_MSI: "software MSI window"}
_LOAD = 512
_SPLIT = 2 * _LOAD                              # a chunk longer than this splits


class IovaTree:
    """Nodes with ``.iova`` and ``.last`` (inclusive), never overlapping.

    Chunks of nodes sorted by start; ``_maxes`` holds the last start of every
    chunk but the last, which takes every start above them (so a search never
    falls off the end, and a node added or removed at the top of the tree
    moves no bound).  Only the last chunk may be empty, and only when it is
    the only one (the empty tree)."""

    __slots__ = ("_keys", "_nodes", "_maxes")

    def __init__(self):
        self._keys: list[list[int]] = [[]]    # chunks of starts, sorted
        self._nodes: list[list] = [[]]        # the nodes, parallel to _keys
        self._maxes: list[int] = []           # the last start of each chunk but the last

    def __len__(self) -> int:
        return sum(map(len, self._keys))

    def __bool__(self) -> bool:
        return bool(self._keys[0])

    def __iter__(self) -> Iterator:
        return chain.from_iterable(self._nodes)     # no Python frame per node

    def clear(self) -> list:
        """Remove every node; return them in IOVA order (an unmap of everything)."""
        nodes = list(chain.from_iterable(self._nodes))
        self._keys, self._nodes, self._maxes = [[]], [[]], []
        return nodes

    def insert(self, node) -> None:
        key = node.iova
        c = bisect_left(self._maxes, key)
        self._insert_at(c, bisect_left(self._keys[c], key), node)

    def _insert_at(self, c: int, i: int, node) -> None:
        """Put ``node`` at index i of chunk c; split the chunk when it grows too long."""
        keys, nodes = self._keys[c], self._nodes[c]
        keys.insert(i, node.iova)
        nodes.insert(i, node)
        if len(keys) > _SPLIT:
            self._keys.insert(c + 1, keys[_LOAD:])
            self._nodes.insert(c + 1, nodes[_LOAD:])
            del keys[_LOAD:], nodes[_LOAD:]
            self._maxes.insert(c, keys[-1])

    def _top_removed(self, c: int) -> None:
        """Chunk c lost its last node: its bound follows; an empty chunk goes
        (the chunk before an emptied last one becomes the last)."""
        keys, maxes = self._keys[c], self._maxes
        if keys:
            if c < len(maxes):
                maxes[c] = keys[-1]
        else:
            del self._keys[c], self._nodes[c], maxes[c if c < len(maxes) else -1]

    def remove(self, node) -> None:
        key = node.iova
        c = bisect_left(self._maxes, key)
        keys, nodes = self._keys[c], self._nodes[c]
        i = bisect_left(keys, key)
        if i == len(keys) or nodes[i] is not node:
            raise KeyError(hex(key))
        del keys[i], nodes[i]
        if i == len(keys) and (c or self._maxes):
            self._top_removed(c)

    def insert_free(self, node):
        """Insert ``node`` unless it intersects a node already there: return
        that node (nothing inserted) or None.  One search for the overlap
        check and the insertion (vfio_find_dma() + vfio_link_dma())."""
        key = node.iova
        maxes = self._maxes                       # a key past the top (a plan's order) needs
        c = len(maxes)                            # no search: it goes last in the last chunk
        if c and key <= maxes[-1]:
            c = bisect_left(maxes, key)
        keys, nodes = self._keys[c], self._nodes[c]
        i = len(keys)
        if i and key <= keys[-1]:
            i = bisect_left(keys, key)
            if keys[i] <= node.last:
                return nodes[i]
        prev = nodes[i - 1] if i else (self._nodes[c - 1][-1] if c else None)
        if prev is not None and prev.last >= key:
            return prev
        if len(keys) >= _SPLIT:
            self._insert_at(c, i, node)
            return None
        keys.insert(i, key)                       # _insert_at() without a split
        nodes.insert(i, node)
        return None

    def remove_exact(self, start: int, last: int):
        """Remove and return the node that is exactly [start, last], or None
        (nothing removed).  One search (the exact unmap)."""
        c = bisect_left(self._maxes, start)
        keys = self._keys[c]
        i = bisect_left(keys, start)
        if i == len(keys) or keys[i] != start:
            return None
        nodes = self._nodes[c]
        node = nodes[i]
        if node.last != last:
            return None
        del keys[i], nodes[i]
        if i == len(keys) and (c or self._maxes):   # (the only chunk has no bound)
            self._top_removed(c)
        return node

    def _floor(self, key: int) -> tuple[int, int] | None:
        """(chunk, index) of the node with the greatest start <= key."""
        c = bisect_left(self._maxes, key)
        i = bisect_right(self._keys[c], key) - 1
        if i >= 0:
            return c, i
        if c == 0:
            return None
        return c - 1, len(self._keys[c - 1]) - 1

    def find(self, iova: int):
        """The node containing ``iova``, or None."""
        pos = self._floor(iova)
        if pos is None:
            return None
        node = self._nodes[pos[0]][pos[1]]
        return node if node.last >= iova else None

    def first_overlap(self, start: int, last: int):
        """Any node intersecting [start, last], or None (the one with the greatest start <= last)."""
        pos = self._floor(last)
        if pos is None:
            return None
        node = self._nodes[pos[0]][pos[1]]
        return node if node.last >= start else None

    def overlapping(self, start: int, last: int) -> list:
        """Every node intersecting [start, last], in IOVA order."""
        out = []
        for node in self.iter_from(start):
            if node.iova > last:
                break
            out.append(node)
        return out

    def iter_from(self, start: int) -> Iterator:
        """Nodes in IOVA order from the one containing or following ``start``,
        lazily (an allocator walking holes stops at the first fit)."""
        pos = self._floor(start)
        if pos is None:
            c, i = 0, 0
        else:
            c, i = pos
            if self._nodes[c][i].last < start:
                i += 1
        nodes = self._nodes
        while c < len(nodes):
            chunk = nodes[c]
            while i < len(chunk):
                yield chunk[i]
                i += 1
            c, i = c + 1, 0

    def holes(self, start: int, last: int) -> Iterator[tuple[int, int]]:
        """The unmapped [start, last] ranges inside [start, last]."""
        cur = start
        for node in self.overlapping(start, last):
            if node.iova > cur:
                yield cur, node.iova - 1
            cur = node.last + 1
        if cur <= last:
            yield cur, last


@dataclass(frozen=True)
class IommuHw:
    """The IOMMU a device sits behind: what its paging domain offers.

    ``aperture``: domain->geometry [start, end]; ``pgsize_bitmap``: supported
    page sizes (the minimum is the domain's alignment); ``reserved``: the
    iommu_get_resv_regions() ranges, inclusive; ``name``: the ``HOST_IOMMUS``
    key (empty for a custom one).  The defaults are QEMU's emulated intel-iommu
    as the rig's guests see it (39-bit aperture, MSI window).
    """

    aperture: tuple[int, int] = (0, (1 << 39) - 1)
    pgsize_bitmap: int = 0x40201000                 # 4K | 2M | 1G (intel_iommu)
    reserved: tuple[tuple[int, int], ...] = (X86_MSI_WINDOW,)
    name: str = ""

    @property
    def min_pgsize(self) -> int:
        return self.pgsize_bitmap & -self.pgsize_bitmap

    @property
    def address_width(self) -> int:
        """Bits of IOVA the aperture spans (39 for [0, 2^39 - 1])."""
        return self.aperture[1].bit_length()

    def explain(self, iova: int, size: int) -> str | None:
        """Why [iova, iova + size) cannot be mapped on this IOMMU, in words
        (outside the aperture, or over a reserved region), or None."""
        last = iova + max(size, 1) - 1
        label = f" ({self.name})" if self.name else ""
        if iova < self.aperture[0] or last > self.aperture[1]:
            bad = iova if iova > self.aperture[1] or iova < self.aperture[0] else self.aperture[1] + 1
            return (f"IOVA {bad:#x} is beyond the host IOMMU's {self.address_width}-bit "
                    f"aperture{label}")
        for start, end in self.reserved:
            if iova <= end and last >= start:
                what = RESERVED_NAMES.get((start, end), f"region [{start:#x}, {end:#x}]")
                return f"IOVA {max(iova, start):#x} is in the host IOMMU's reserved {what}{label}"
        return None


_SZ_4K_2M_1G = (1 << 12) | (1 << 21) | (1 << 30)

# The host IOMMUs a simulated host can have: name -> (IommuHw, description with
# its source).  VT-d's second-stage tables (what VFIO's paging domains use
# unless first-stage translation is chosen) give aperture_end = __DOMAIN_MAX_ADDR(gaw)
# and pgsize_bitmap SZ_4K plus the super pages the hardware offers
# (drivers/iommu/intel/iommu.c paging_domain_alloc()); first-stage tables
# drop the top bit (__DOMAIN_MAX_ADDR(gaw - 1)), not modelled.
HOST_IOMMUS: dict[str, tuple[IommuHw, str]] = {
    "vtd-39": (IommuHw((0, (1 << 39) - 1), _SZ_4K_2M_1G, (X86_MSI_WINDOW,), "vtd-39"),
               "Intel VT-d, 39-bit address width (3-level tables): drivers/iommu/intel/iommu.c "
               "paging_domain_alloc(), intel_iommu_get_resv_regions()"),
    "vtd-48": (IommuHw((0, (1 << 48) - 1), _SZ_4K_2M_1G, (X86_MSI_WINDOW,), "vtd-48"),
               "Intel VT-d, 48-bit address width (4-level tables; a current x86 server; "
               "DEFAULT_DOMAIN_ADDRESS_WIDTH 48): drivers/iommu/intel/iommu.c"),
    "vtd-57": (IommuHw((0, (1 << 57) - 1), _SZ_4K_2M_1G, (X86_MSI_WINDOW,), "vtd-57"),
               "Intel VT-d, 57-bit address width (5-level tables): drivers/iommu/intel/iommu.c"),
    "amd-vi": (IommuHw((0, (1 << 64) - 1), ((1 << 64) - 1) & ~0xFFF & ~(2 << 38),
                       (X86_MSI_WINDOW, AMD_HT_RANGE), "amd-vi"),
               "AMD-Vi, v1 (host) page table: aperture to U64_MAX (drivers/iommu/amd/iommu.c "
               "dma_max_address()), AMD_IOMMU_PGSIZES (every size from 4K but 512G), MSI "
               "window and HyperTransport range reserved (amd_iommu_get_resv_regions())"),
    "smmu-v3": (IommuHw((0, (1 << 48) - 1), _SZ_4K_2M_1G, (SMMU_SW_MSI,), "smmu-v3"),
                "ARM SMMUv3, stage 1, 4K granule, 48-bit input (drivers/iommu/arm/arm-smmu-v3/"
                "arm-smmu-v3.c arm_smmu_domain_finalise(): aperture_end = (1 << ias) - 1), "
                "software MSI window reserved (arm_smmu_get_resv_regions())"),
    "qemu-vtd": (IommuHw(name="qemu-vtd"),
                 "QEMU's emulated intel-iommu with aw-bits=39 (its default before QEMU 9.2, "
                 "81ab964f2162 'intel_iommu: Set default aw_bits to 48 starting from QEMU "
                 "9.2'): what the rig's guests see"),
}
DEFAULT_HOST_IOMMU = "vtd-48"


def get_host_iommu(name: str | None = None) -> IommuHw:
    """The ``HOST_IOMMUS`` entry ``name`` (default: DEFAULT_HOST_IOMMU)."""
    from backends.errors import UsageError
    try:
        return HOST_IOMMUS[name or DEFAULT_HOST_IOMMU][0]
    except KeyError:
        raise UsageError(f"unknown host IOMMU {name!r}", where="--host-iommu",
                         valid=", ".join(HOST_IOMMUS)) from None


def format_host_iommus() -> str:
    """The ``vfio-emu profiles --host-iommus`` table."""
    rows = [("name", "aperture", "page sizes", "reserved")]
    for name, (hw, _) in HOST_IOMMUS.items():
        sizes = [s for s in (12, 21, 30) if hw.pgsize_bitmap >> s & 1]
        more = bin(hw.pgsize_bitmap).count("1") - len(sizes)
        ps = "|".join({12: "4K", 21: "2M", 30: "1G"}[s] for s in sizes) + (f" +{more}" if more else "")
        rows.append((name + (" *" if name == DEFAULT_HOST_IOMMU else ""),
                     f"{hw.address_width}-bit [0, {hw.aperture[1]:#x}]", ps,
                     ", ".join(f"{a:#x}-{b:#x}" for a, b in hw.reserved)))
    ws = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, ws)) + "  " + r[3] for r in rows]
    lines += ["", f"* the default ({DEFAULT_HOST_IOMMU}); sources:"]
    lines += [f"{name}: {desc}" for name, (_, desc) in HOST_IOMMUS.items()]
    return "\n".join(lines) + "\n"


def host_iommus_dict() -> dict:
    """JSON-able ``HOST_IOMMUS`` for ``vfio-emu profiles --host-iommus --json``."""
    return {"schema": 1, "default": DEFAULT_HOST_IOMMU, "host_iommus": {
        name: {"aperture": list(hw.aperture), "address_width": hw.address_width,
               "pgsize_bitmap": hw.pgsize_bitmap, "reserved": [list(r) for r in hw.reserved],
               "description": desc} for name, (hw, desc) in HOST_IOMMUS.items()}}


# The iommufd selftest's mock domain (tools/testing/selftests/iommu/iommufd_utils.h):
# MOCK_APERTURE_START 1<<24, MOCK_APERTURE_LAST (1<<31)-1, MOCK_PAGE_SIZE 2048.
MOCK_IOMMU = IommuHw(aperture=(1 << 24, (1 << 31) - 1), pgsize_bitmap=2048 | (512 * 2048),
                     reserved=())


class Translation(Protocol):
    """What a device's attached domain answers (type1 container, iommufd HWPT)."""

    def iova_to_page(self, iova: int):
        """(pin, index within pin, prot IOMMU_READ|IOMMU_WRITE) or None (fault)."""


@dataclass(eq=False)
class SimVfioDevice:
    """A PCI function bound to vfio-pci (drivers/vfio/pci): its group, its
    cdev index, the IOMMU it sits behind, its BARs, and what its DMA
    currently translates through (``domain``: a ``Translation`` or None:
    DMA is blocked, as with no domain attached).  ``faults`` logs DMA faults
    like the DMAR fault reports (drivers/iommu/intel/dmar.c dmar_fault_do_one())."""

    name: str = "0000:00:01.0"
    group: int = 1
    cdev: int = 0
    hw: IommuHw = HOST_IOMMUS["qemu-vtd"][0]
    bars: dict[int, int] = field(default_factory=lambda: {0: 1 << 20})   # index -> size (edu: 1 MiB)
    domain: object = None
    faults: list = field(default_factory=list)
