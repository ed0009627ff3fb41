"""/dev/iommu on SimHost, one module per file of drivers/iommu/iommufd/:
``main`` (main.c: the context and its ioctl table), ``ioas`` (ioas.c),
``io_pagetable`` (io_pagetable.c), ``pages`` (pages.c), ``device`` (device.c +
hw_pagetable.c) and ``vfio_compat`` (vfio_compat.c)."""
