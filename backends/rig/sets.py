"""Named test sets the rig runs inside a guest: repo test files + the kernels they apply to.

A set is a pytest run of repo test files with the repo's venv python, inside the
guest (``backends.rig.boot``).  ``clients`` and ``differential`` are slots for
test files still to come; a set with no files is reported as empty, not run.
"""

from __future__ import annotations

import dataclasses

from backends.errors import UsageError
from backends.rig.kernels import KERNELS

BUILT = ("iommufd-7.2", "iommufd-7.2+fix")
STOCK = ("debian-6.1", "debian-6.12", "debian-7.2")


@dataclasses.dataclass(frozen=True)
class TestSet:
    name: str
    files: tuple[str, ...]          # repo-relative pytest paths
    kernels: tuple[str, ...]        # kernels (kernels.KERNELS) the set applies to
    doc: str = ""


SETS: dict[str, TestSet] = {s.name: s for s in (
    TestSet("probe", ("tests/rig/test_probe_iommufd.py", "tests/rig/test_probe_type1.py"),
            BUILT + STOCK,
            "kernel-rig.md §4: iommufd 4a/4b rows, type1 4c rows, on the guest kernel"),
    TestSet("selftests", ("tests/rig/test_selftests.py",), BUILT,
            "the kernel's tools/testing/selftests/iommu iommufd + iommufd_fail_nth"),
    TestSet("edu-dma", ("tests/rig/test_edu_dma.py",), BUILT + STOCK,
            "edu DMA round trips through the vIOMMU: type1 and iommufd cdev"),
    TestSet("clients", (), BUILT + STOCK,
            "backends/type1.py and backends/iommufd.py on real kernels"),
    TestSet("differential", (), BUILT + STOCK,
            "SimHost vs the real guest kernel, same scenarios"),
)}

assert all(k in KERNELS for s in SETS.values() for k in s.kernels)


def get_set(name: str) -> TestSet:
    try:
        return SETS[name]
    except KeyError:
        raise UsageError(f"unknown test set {name!r}", where="--set",
                         valid=", ".join(SETS)) from None
