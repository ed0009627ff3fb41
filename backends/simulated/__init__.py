"""SimHost: a model of the Linux kernel behind the ``Host`` seam.

Modules carry the kernel's file names: ``fs`` (include/linux/fs.h, VFS, page
cache), ``shmem`` (mm/shmem.c, hugetlbfs), ``memfd`` (mm/memfd.c), ``mmap``
(mm/mmap.c, mm/vma.c, mm/mprotect.c), ``gup`` (mm/gup.c), ``vfio``
(drivers/vfio/vfio_main.c, group.c, device_cdev.c), ``vfio_container``
(drivers/vfio/container.c), ``vfio_iommu_type1`` (drivers/vfio/vfio_iommu_type1.c)
and the package ``iommufd`` (drivers/iommu/iommufd/).  Version differences come
from the kernel profile (backends/kernel_profiles.py).
"""

from .syscalls import PfnmapDevice, SimHost

__all__ = ["SimHost", "PfnmapDevice"]
