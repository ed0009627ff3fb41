"""The kernel rig: real kernels under QEMU with an emulated Intel IOMMU and
QEMU's ``edu`` device bound to vfio-pci (docs/kernel-model.md, "The kernel rig").

``kernels`` fetches/builds/caches kernels, ``initramfs`` packs the guest's
/init, ``boot`` runs a test set in a guest and brings back JSON results,
``sets`` names the test sets, ``edu`` drives the edu device's DMA engine.
"""


def die_with_parent() -> None:
    """``preexec_fn`` for QEMU and build steps: SIGKILL when the process that
    started them dies (prctl PR_SET_PDEATHSIG), so nothing outlives a killed run."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
