"""QEMU's legacy VFIO container (hw/vfio/container-legacy.c; hw/vfio/container.c
up to 10.1), planned only: the VFIO_IOMMU_MAP_DMA / UNMAP_DMA requests
vfio_legacy_dma_map() and vfio_legacy_dma_unmap_one() build, not sent.  The
client that sends them to a kernel is backends/type1.py."""

from __future__ import annotations

from backends import uapi
from backends.base import DmaResult, VFIOIOMMUClass, vfio_dma_map_request, vfio_dma_unmap_request
from backends.iommufd import compat_container
from backends.type1 import Type1Container
from vmm_model.iommu_backends import IOMMUBackend, open_attached, register


class Type1Plan(VFIOIOMMUClass):
    """The legacy type1 container (VFIO_IOMMU_MAP_DMA), planned only: builds the
    exact request and sends nothing."""

    name = "type1"
    dma_max_mappings = 65535     # vfio_legacy_setup(): U16_MAX without a DMA_AVAIL cap

    def dma_map(self, iova, size, vaddr, readonly, mr=None):
        return DmaResult(None, vfio_dma_map_request(iova, size, vaddr, readonly,
                                                    vaddr_only=self.cpr_incoming))

    def dma_unmap(self, iova, size, unmap_all=False):
        return DmaResult(None, vfio_dma_unmap_request(iova, size, unmap_all))


@register
class Legacy(IOMMUBackend):
    """TYPE_VFIO_IOMMU_LEGACY: a VFIO group set on /dev/vfio/vfio, VFIO_SET_IOMMU
    type1v2, the device fd from VFIO_GROUP_GET_DEVICE_FD (vfio_legacy_attach_device())."""

    name = "type1"
    aliases = ("legacy",)
    capabilities = frozenset({"dirty_tracking", "live_update"})
    description = "VFIO type1 container (/dev/vfio/vfio + group)"

    def plan_client(self) -> Type1Plan:
        client = Type1Plan()
        client.name = self.name
        return client

    def _container(self, host, dev):
        return Type1Container(host, dev.group)

    def open_client(self, host, dev):
        client = self._container(host, dev)
        return open_attached(client, client.get_device_fd, dev.name)   # the client closes it

    def cpr_unmap_vaddr_all(self, host, client) -> None:
        """vfio_legacy_cpr_reboot_notifier(): before the transfer the outgoing QEMU
        invalidates every vaddr (VFIO_IOMMU_UNMAP_DMA, FLAG_VADDR|FLAG_ALL), so the
        incoming one's VADDR maps rebind them (hw/vfio/cpr-legacy.c, 10.1+)."""
        req = vfio_dma_unmap_request(0, 0, unmap_all=True, vaddr_only=True)
        host.ioctl(client.fd, uapi.VFIO_IOMMU_UNMAP_DMA, req.data)


@register
class IommufdCompat(Legacy):
    """The legacy container's calls on /dev/iommu: the kernel's VFIO compat layer
    (drivers/iommu/iommufd/vfio_compat.c; no VFIO_UPDATE_VADDR, no dirty pages)."""

    name = "compat"
    aliases = ("iommufd-compat",)
    in_all = False
    capabilities = frozenset()
    description = "the type1 calls on /dev/iommu (iommufd's VFIO compat mode)"

    def _container(self, host, dev):
        return compat_container(host, dev.group)
