"""ACME's ``vfio_container_dma_map`` policies (the contract: docs/policies.md).

A policy has QEMU's signature and returns the backend's DmaResult, or its own
DmaResult when it decides without asking the kernel.
"""

from __future__ import annotations

import errno

from vmm_model import (DmaResult, MemoryRegion, VFIOIOMMUClass, vfio_container_dma_map_shared)


def never_map_file_private(bcontainer: VFIOIOMMUClass, iova: int, size: int, vaddr: int,
                           readonly: bool, mr: MemoryRegion) -> DmaResult:
    """Never IOMMU_IOAS_MAP_FILE private RAM: MAP_FILE pins the file's pages while
    a MAP_PRIVATE guest writes to copy-on-write copies the device never sees."""
    rb = mr.ram_block
    if (bcontainer.dma_map_file is not None and rb is not None and rb.fd >= 0
            and (rb.is_shared() or mr.ram_device)):
        start = vaddr - rb.host
        return bcontainer.dma_map_file(iova, size, rb.fd, start + rb.fd_offset, readonly)
    return bcontainer.dma_map(iova, size, vaddr, readonly, mr)


def bars_only_on_type1(bcontainer: VFIOIOMMUClass, iova: int, size: int, vaddr: int,
                       readonly: bool, mr: MemoryRegion) -> DmaResult:
    """Map device BARs (ram_device regions, for peer-to-peer DMA) only on type1;
    elsewhere leave them unmapped, and say so, instead of sending a map the
    kernel refuses."""
    if mr.ram_device and bcontainer.name != "type1":
        return DmaResult(0, None, note="BAR not mapped: ACME maps BARs only on type1")
    return vfio_container_dma_map_shared(bcontainer, iova, size, vaddr, readonly, mr)


def refuse_unsealed_memfds(bcontainer: VFIOIOMMUClass, iova: int, size: int, vaddr: int,
                           readonly: bool, mr: MemoryRegion) -> DmaResult:
    """Refuse guest RAM in a memfd that QEMU did not seal against shrinking (a
    truncated memfd under a live DMA mapping): EPERM, so realize fails."""
    rb = mr.ram_block
    if rb is not None and rb.backing.kind == "memfd" and "F_SEAL_SHRINK" not in rb.backing.seals:
        return DmaResult(-errno.EPERM, None, note=f"{rb.idstr}: memfd without F_SEAL_SHRINK")
    return vfio_container_dma_map_shared(bcontainer, iova, size, vaddr, readonly, mr)
