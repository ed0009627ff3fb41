"""A simulated device doing DMA through its IOMMU domain.

The device reads and writes exactly the pages the kernel pinned for the IOVA
(file pages for MAP_FILE, the process's pages at pin time for VA maps, BAR
pages for a type1 PFNMAP map), with the IOMMU's permissions: a write through a
READ-only mapping, or any access to an unmapped IOVA or with no domain,
faults and transfers nothing, as VT-d's DMAR fault does (drivers/iommu/intel/dmar.c
dmar_fault_do_one(); the rig's iommufd-7.2 guest logged "DMAR: [DMA Write NO_PASID]
... fault reason 0x05" and the data stayed unchanged).
"""

from __future__ import annotations

import errno

from backends.host import PAGE_SIZE
from .iommu import IOMMU_READ, IOMMU_WRITE, SimVfioDevice


def _translate(dev: SimVfioDevice, iova: int, length: int, prot: int) -> list | int:
    """[(page, offset, n)] covering [iova, iova+length), or -EFAULT after
    logging the fault in ``dev.faults``."""
    out = []
    done = 0
    while done < length:
        a = iova + done
        hit = dev.domain.iova_to_page(a) if dev.domain is not None else None
        if hit is None or not hit[2] & prot:
            reason = "no domain" if dev.domain is None else \
                "not mapped" if hit is None else "no permission"
            dev.faults.append((a, "write" if prot == IOMMU_WRITE else "read", reason))
            return -errno.EFAULT
        pin, idx = hit[0], hit[1]
        off = hit[3] if len(hit) > 3 else a % PAGE_SIZE    # iommufd: an area's page_offset
        n = min(length - done, PAGE_SIZE - off)
        out.append((pin.page(idx), off, n))
        done += n
    return out


def dma_read(dev: SimVfioDevice, iova: int, length: int) -> tuple[int, bytes]:
    """The device reads [iova, iova+length): (length, data) or (-EFAULT, b"")."""
    segs = _translate(dev, iova, length, IOMMU_READ)
    if isinstance(segs, int):
        return segs, b""
    return length, b"".join(bytes(page.data[off:off + n]) for page, off, n in segs)


def dma_write(dev: SimVfioDevice, iova: int, data: bytes) -> int:
    """The device writes ``data`` at ``iova``: len(data) or -EFAULT (nothing written)."""
    segs = _translate(dev, iova, len(data), IOMMU_WRITE)
    if isinstance(segs, int):
        return segs
    pos = 0
    for page, off, n in segs:
        page.data[off:off + n] = data[pos:pos + n]
        pos += n
    return len(data)
