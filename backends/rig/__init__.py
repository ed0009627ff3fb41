"""The kernel rig: real kernels under QEMU with an emulated Intel IOMMU and
QEMU's ``edu`` device bound to vfio-pci (research/kernel-rig.md).

``kernels`` fetches/builds/caches kernels, ``initramfs`` packs the guest's
/init, ``boot`` runs a test set in a guest and brings back JSON results,
``sets`` names the test sets, ``edu`` drives the edu device's DMA engine.
"""
