"""Named test sets the rig runs inside a guest: repo test files + the kernels they apply to.

A set is a pytest run of repo test files with the repo's venv python, inside the
guest (``backends.rig.boot``).  A set with no files is reported as empty, not run.
"""

from __future__ import annotations

import dataclasses

from backends.errors import UsageError
from backends.rig.kernels import KERNELS

BUILT = ("iommufd-7.2", "iommufd-7.2+fix")
STOCK = ("debian-6.1", "debian-6.12", "debian-7.2")


@dataclasses.dataclass(frozen=True)
class TestSet:
    __test__ = False                # not a pytest class
    name: str
    files: tuple[str, ...]          # repo-relative pytest paths
    kernels: tuple[str, ...]        # kernels (kernels.KERNELS) the set applies to
    doc: str = ""


SETS: dict[str, TestSet] = {s.name: s for s in (
    TestSet("probe", ("tests/rig/test_probe_iommufd.py", "tests/rig/test_probe_type1.py"),
            BUILT + STOCK,
            "the clients' probes (iommufd IOAS, lazy pinning, MAP_FILE; type1 MAP/UNMAP) "
            "on the guest kernel"),
    TestSet("selftests", ("tests/rig/test_selftests.py",), BUILT,
            "the kernel's tools/testing/selftests/iommu iommufd + iommufd_fail_nth"),
    TestSet("edu-dma", ("tests/rig/test_edu_dma.py",), BUILT + STOCK,
            "edu DMA round trips through the vIOMMU: type1 and iommufd cdev"),
    TestSet("clients", ("tests/rig/test_clients_real.py",), BUILT + STOCK,
            "the real clients (Type1Container, IommufdContainer, compat_container) on the "
            "guest kernel with edu: type1 group, iommufd cdev, VFIO compat"),
    TestSet("differential", ("tests/rig/test_differential.py",), BUILT + STOCK,
            "the same VFIO / iommufd / memfd op sequences on the guest kernel and on "
            "SimHost(its profile) with a mirrored edu, compared step by step"),
)}

assert all(k in KERNELS for s in SETS.values() for k in s.kernels)


def get_set(name: str) -> TestSet:
    try:
        return SETS[name]
    except KeyError:
        raise UsageError(f"unknown test set {name!r}", where="--set",
                         valid=", ".join(SETS)) from None
