"""QEMU's iommufd VFIO container (hw/vfio/iommufd.c over backends/iommufd.c),
planned only: the IOMMU_IOAS_MAP / MAP_FILE / UNMAP requests
iommufd_backend_map_dma(), _map_file_dma() and _unmap_dma() build, not sent.
The client that sends them to a kernel is backends/iommufd.py."""

from __future__ import annotations

from backends.base import (DmaResult, VFIOIOMMUClass, ioas_map_file_request, ioas_map_request,
                           ioas_unmap_request)
from backends.iommufd import IommufdContainer
from backends.type1 import VFIO_CDEV_DIR
from vmm_model.iommu_backends import IOMMUBackend, open_attached, register


class IommufdPlan(VFIOIOMMUClass):
    """The iommufd backend (IOMMU_IOAS_MAP / IOMMU_IOAS_MAP_FILE), planned only.

    ``cpr_incoming``: iommufd_backend_map_file_dma() and _unmap_dma() return 0
    without an ioctl (backends/iommufd.c, 10.1+); IOAS_MAP has no short-circuit.
    """

    name = "iommufd"
    ioas_id = 1

    def dma_map(self, iova, size, vaddr, readonly, mr=None):
        return DmaResult(None, ioas_map_request(self.ioas_id, iova, size, vaddr, readonly))

    def dma_map_file(self, iova, size, fd, start, readonly):
        if self.cpr_incoming:
            return DmaResult(0, None, note="cpr incoming: mapping inherited, no ioctl")
        return DmaResult(None, ioas_map_file_request(self.ioas_id, iova, size, fd, start,
                                                     readonly))

    def dma_unmap(self, iova, size, unmap_all=False):
        if self.cpr_incoming:
            return DmaResult(0, None, note="cpr incoming: no ioctl")
        return DmaResult(None, ioas_unmap_request(self.ioas_id, iova, size, unmap_all))


@register
class Iommufd(IOMMUBackend):
    """TYPE_VFIO_IOMMU_IOMMUFD: an IOAS on /dev/iommu, the device's cdev bound and
    attached to it (iommufd_cdev_attach())."""

    name = "iommufd"
    capabilities = frozenset({"map_file", "cdev", "dirty_tracking", "live_update"})
    description = "iommufd (/dev/iommu IOAS + VFIO cdev)"
    iommufd_object = True

    def plan_client(self) -> IommufdPlan:
        return IommufdPlan()

    def open_client(self, host, dev):
        client = IommufdContainer(host)
        return open_attached(client, client.attach_device, f"{VFIO_CDEV_DIR}vfio{dev.cdev}")
