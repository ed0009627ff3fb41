"""Named test sets the rig runs inside a guest: test files of backends/rig/guest/
(``GUEST_DIR``, shipped in the wheel) + the kernels they apply to.

A set is a pytest run of those files, in GUEST_DIR, with the Python that runs
vfio-emu, inside the guest (``backends.rig.boot``).  A set with no files is
reported as empty, not run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from backends.errors import UsageError
from backends.rig.kernels import KERNELS

BUILT = ("iommufd-7.2", "iommufd-7.2+fix")
STOCK = ("debian-6.1", "debian-6.12", "debian-7.2")
GUEST_DIR = Path(__file__).resolve().parent / "guest"
DEFAULT_TIMEOUT = 900.0             # seconds a guest gets (boot.run, vfio-emu rig run --timeout)


@dataclasses.dataclass(frozen=True)
class TestSet:
    __test__ = False                # not a pytest class
    name: str
    files: tuple[str, ...]          # pytest paths relative to GUEST_DIR
    kernels: tuple[str, ...]        # kernels (kernels.KERNELS) the set applies to
    doc: str = ""
    observer: bool = False          # boot.py builds vfio_observe.c: $RIG_OBSERVER in the guest
    timeout: float = DEFAULT_TIMEOUT  # seconds the guest gets when the rig test boots it


SETS: dict[str, TestSet] = {s.name: s for s in (
    TestSet("probe", ("test_probe_iommufd.py", "test_probe_type1.py"),
            BUILT + STOCK,
            "the clients' probes (iommufd IOAS, lazy pinning, MAP_FILE; type1 MAP/UNMAP) "
            "on the guest kernel"),
    TestSet("selftests", ("test_selftests.py",), BUILT,
            "the kernel's tools/testing/selftests/iommu iommufd + iommufd_fail_nth"),
    TestSet("edu-dma", ("test_edu_dma.py",), BUILT + STOCK,
            "edu DMA round trips through the vIOMMU: type1 and iommufd cdev"),
    TestSet("clients", ("test_clients_real.py",), BUILT + STOCK,
            "the real clients (Type1Container, IommufdContainer, compat_container) on the "
            "guest kernel with edu: type1 group, iommufd cdev, VFIO compat"),
    TestSet("differential", ("test_differential.py",), BUILT + STOCK,
            "the same VFIO / iommufd / memfd op sequences on the guest kernel and on "
            "SimHost(its profile) with a mirrored edu, compared step by step"),
    TestSet("disk-fs", ("test_disk_fs.py",), STOCK,
            "memory of a file on ext4 (a loop device on the guest's /tmp): type1 maps of "
            "its shared / private / read-only mappings, guest kernel vs SimHost(its profile); "
            "real QEMU 7.2 / 10.0 with memory-backend-file on it (share=on|off)",
            observer=True),
    TestSet("real-qemu", ("test_real_qemu.py", "test_fd_kinds.py"), BUILT,
            "real QEMU 7.2 / 10.0 / 11.1 on edu bound to vfio-pci, every VFIO/iommufd ioctl "
            "recorded (vfio_observe.c), compared with the model on the host; the VA and MAP_FILE "
            "paths per kind of memory fd, guest kernel vs simulated kernel", observer=True,
            timeout=2400.0),   # ~3.5 s per QEMU run under TCG: 210 runs took 10-19 min
    TestSet("migrate", ("test_migrate_real.py",), BUILT,
            "migrate-check's predictions replayed on the guest kernel (type1 vs iommufd, "
            "the MAP_FILE write-access fix) and real QEMU cpr-transfer vs its verdict"),
)}

assert all(k in KERNELS for s in SETS.values() for k in s.kernels)


def get_set(name: str) -> TestSet:
    try:
        return SETS[name]
    except KeyError:
        raise UsageError(f"unknown test set {name!r}", where="--set",
                         valid=", ".join(SETS)) from None
