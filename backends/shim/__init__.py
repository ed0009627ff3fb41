"""Run a real, unmodified QEMU against the simulated kernel (``vfio-emu run``).

``vfio_shim.c`` (LD_PRELOAD) forwards QEMU's VFIO/iommufd calls to
``server.ShimServer``, which answers with ``backends.simulated`` over
``prochost.ProcHost`` (QEMU's real address space); ``pci`` is the simulated
vfio-pci function.  See docs/run-real-qemu.md.
"""
