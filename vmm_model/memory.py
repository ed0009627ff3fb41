"""QEMU's memory objects, with QEMU's names: RAMBlock, MemoryRegion, FlatRange /
MemoryRegionSection (include/exec/ramblock.h, include/system/memory.h).

Only what ``vfio_container_dma_map`` and the VFIO listener look at is modelled:
the RAMBlock's fd, fd_offset, flags (RAM_SHARED, ...), host address and page
size; the MemoryRegion's kind (ram, ram_device, rom, romd, i/o, iommu) and
readonly bit; the section's offsets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

P = 4096
"""qemu_real_host_page_size() on x86-64."""


class RamFlags(enum.IntFlag):
    """RAM_* flags of include/exec/memory.h (QEMU ≥ 8.2 values)."""

    RAM_PREALLOC = 1 << 0
    RAM_SHARED = 1 << 1
    RAM_RESIZEABLE = 1 << 2
    RAM_UF_ZEROPAGE = 1 << 3
    RAM_MIGRATABLE = 1 << 4
    RAM_PMEM = 1 << 5
    RAM_UF_WRITEPROTECT = 1 << 6
    RAM_NORESERVE = 1 << 7
    RAM_PROTECTED = 1 << 8
    RAM_NAMED_FILE = 1 << 9
    RAM_READONLY = 1 << 10
    RAM_READONLY_FD = 1 << 11
    RAM_GUEST_MEMFD = 1 << 12
    RAM_PRIVATE = 1 << 13


class MRKind(str, enum.Enum):
    """``memory_region_type()`` names as ``info mtree`` prints them (system/memory.c)."""

    RAM = "ram"
    RAM_DEVICE = "ramd"     # memory_region_init_ram_device_ptr (VFIO BAR mmaps)
    ROM = "rom"             # RAM with mr->readonly
    ROMD = "romd"           # ROM device in ROMD mode (pflash): mr->ram == false
    IO = "i/o"              # I/O, containers, ROM device not in ROMD mode
    IOMMU = "iommu"         # IOMMUMemoryRegion (vIOMMU)


@dataclass
class Backing:
    """What the host object behind a RAMBlock is (for the simulated host and reports).

    kind: "anon" (no fd), "memfd", "file" (regular file or hugetlbfs via mem-path),
    "shm" (POSIX shm), "dmabuf" (VFIO BAR dma-buf), "pfnmap" (VFIO BAR mmap, no fd).
    """

    kind: str
    path: str | None = None          # mem-path / shm name / memfd name
    open_flags: str = "O_RDWR"       # how QEMU opened the file: O_RDWR or O_RDONLY
    seals: tuple[str, ...] = ()      # memfd seals QEMU applies (F_SEAL_GROW, ...)
    hugetlb: bool = False
    fs: str | None = None            # "tmpfs", "hugetlbfs", "ext4", ... for files


_RAM_SHARED = int(RamFlags.RAM_SHARED)


@dataclass
class RAMBlock:
    """struct RAMBlock (include/exec/ramblock.h): the fields VFIO depends on."""

    idstr: str
    used_length: int
    max_length: int
    flags: RamFlags
    backing: Backing
    host: int = 0            # rb->host: filled when the block is allocated
    fd: int = -1             # rb->fd, -1 when there is none
    fd_offset: int = 0       # rb->fd_offset (qemu_ram_get_fd_offset, d7ae4a740c8e)
    page_size: int = P
    mr_readonly: bool = False  # mr->readonly of the owning region (RAM_READONLY)

    def is_shared(self) -> bool:
        """qemu_ram_is_shared(): rb->flags & RAM_SHARED (int arithmetic: IntFlag's
        own ``&`` builds enum members, a cost paid per section)."""
        return bool(int.__and__(self.flags, _RAM_SHARED))


@dataclass
class MemoryRegion:
    """struct MemoryRegion, reduced to what memory_region_is_*() answer."""

    name: str
    kind: MRKind
    size: int
    ram_block: RAMBlock | None = None
    readonly: bool = False
    owner: str | None = None                  # e.g. "0000:01:00.0" for a vfio-pci BAR
    rdm_granularity: int = 0                  # RamDiscardManager (virtio-mem block-size)
    rdm_populated: tuple[tuple[int, int], ...] = ()   # populated [start, end) in region offsets

    @property
    def ram(self) -> bool:
        """mr->ram: true for ram, ram_device and rom; false for ROM devices and I/O."""
        return self.kind in (MRKind.RAM, MRKind.RAM_DEVICE, MRKind.ROM)

    @property
    def ram_device(self) -> bool:
        """memory_region_is_ram_device()."""
        return self.kind is MRKind.RAM_DEVICE

    @property
    def iommu(self) -> bool:
        """memory_region_is_iommu()."""
        return self.kind is MRKind.IOMMU

    @property
    def protected(self) -> bool:
        """memory_region_is_protected(): RAM_PROTECTED (memory-backend-epc)."""
        return bool(self.ram_block and self.ram_block.flags & RamFlags.RAM_PROTECTED)

    @property
    def has_ram_discard_manager(self) -> bool:
        """memory_region_has_ram_discard_manager() (virtio-mem)."""
        return self.rdm_granularity > 0


@dataclass
class MemoryRegionSection:
    """One FlatRange of the flat view, as the listener receives it."""

    mr: MemoryRegion
    offset_within_address_space: int
    size: int
    offset_within_region: int = 0
    readonly: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.offset_within_address_space + self.size


def memory_region_get_ram_ptr(mr: MemoryRegion) -> int:
    """memory_region_get_ram_ptr(): rb->host of the region's RAMBlock."""
    assert mr.ram_block is not None, f"{mr.name} has no RAMBlock"
    return mr.ram_block.host


def round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def align_down(x: int, a: int) -> int:
    return x // a * a


def ctz64(x: int) -> int:
    """Count trailing zeros (QEMU's ctz64); 64 for 0."""
    return (x & -x).bit_length() - 1 if x else 64
