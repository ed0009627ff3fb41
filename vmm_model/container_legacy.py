"""QEMU's legacy VFIO container (hw/vfio/container-legacy.c; hw/vfio/container.c
up to 10.1), planned only: the VFIO_IOMMU_MAP_DMA / UNMAP_DMA requests
vfio_legacy_dma_map() and vfio_legacy_dma_unmap_one() build, not sent.  The
client that sends them to a kernel is backends/type1.py."""

from __future__ import annotations

from backends.base import DmaResult, VFIOIOMMUClass, vfio_dma_map_request, vfio_dma_unmap_request


class Type1Plan(VFIOIOMMUClass):
    """The legacy type1 container (VFIO_IOMMU_MAP_DMA), planned only: builds the
    exact request and sends nothing."""

    name = "type1"

    def dma_map(self, iova, size, vaddr, readonly, mr=None):
        return DmaResult(None, vfio_dma_map_request(iova, size, vaddr, readonly,
                                                    vaddr_only=self.cpr_incoming))

    def dma_unmap(self, iova, size, unmap_all=False):
        return DmaResult(None, vfio_dma_unmap_request(iova, size, unmap_all))
