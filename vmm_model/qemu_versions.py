"""What differs between QEMU versions, as data: one row per version, one named
switch per behaviour, each with its source (qemu/qemu commit; research
qemu-vfio-dma-map.md).  Code reads ``qemu.<switch>``; there are no version
comparisons anywhere else.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from backends.errors import UsageError


@dataclass(frozen=True)
class QemuVersion:
    name: str
    title: str
    policy: str
    """Built-in ``vfio_container_dma_map`` variant (vmm_model.policy.POLICIES)."""
    dma_map_name: str
    """Name in the map error: vfio_dma_map (≤8.2) / vfio_container_dma_map
    (9.0+, b08501a999e2)."""
    ram_share_memfd: bool
    """memory-backend-ram,share=on and aux-ram-share RAM get a memfd (9fb40bb9621d, 10.0)."""
    aux_ram_share: bool
    """-machine aux-ram-share exists (91792807d11c, 10.0)."""
    memory_backend_shm: bool
    """memory-backend-shm exists (4e647fa08586, 9.1)."""
    ram_device_warn_once: bool
    """ram_device map failure: warn_report_err_once + P2P hint (aaec00422ba6, 10.0);
    before: error_report_err, plus "failed to vfio_dma_map. pci p2p may not work"."""
    legacy_reports_map_error: bool
    """vfio_legacy_dma_map prints "VFIO_MAP_DMA failed: %s" itself (≤9.2; silent from 10.0)."""
    bar_dmabuf: bool
    """VFIO BAR mmaps carry a VFIO dma-buf fd (8cfaf22668c7, master only)."""
    rdm_budget_fatal: bool
    """RamDiscardManager DMA-mapping budget exceeded is an error (ceb59c1cc61d, 10.2);
    before it was a warning."""
    bypass_ro: bool
    """iommufd nesting + ERRATA_772415_SPR17 skips readonly sections (68d3a2a24d7c, master)."""
    cpr_transfer: bool
    """cpr-transfer exists (624e6e654e11, 10.0); incoming iommufd MAP_FILE/UNMAP
    short-circuit to 0 (10.1+, with dma_map_file)."""
    legacy_cpr_vaddr: bool
    """legacy CPR incoming maps with VFIO_DMA_MAP_FLAG_VADDR only (7e9f21411302, 10.1)."""
    legacy_unmap_overflow_workaround: bool
    """type1 unmap retried with size - min_pagesize on EINVAL when iova+size wraps
    (removed by 1d9a832b58be, 10.2)."""
    # --- migration modes (vmm_model/migration.py); defaults are the newest releases' ---
    cpr_reboot: bool = True
    """MigMode cpr-reboot exists (qapi/migration.json "since 8.2")."""
    vfio_cpr_reboot: bool = True
    """hw/vfio/cpr.c vfio_cpr_reboot_notifier(): VFIO allows cpr-reboot when the guest
    is suspended (d9fa4223b30a "vfio: register container for cpr", 0cb51c183a91 "vfio:
    allow cpr-reboot migration if suspended", 9.0); before, VFIO's migration blocker
    (migrate_add_blocker(): every mode) covered it."""
    vfio_migration_v2: bool = True
    """hw/vfio/migration.c probes VFIO_DEVICE_FEATURE_MIGRATION (protocol v2, 8.0): the
    blocker "%s: VFIO migration is not supported in kernel"; before, v1's
    "VFIO device doesn't support migration"."""
    vfio_cpr_transfer: bool = True
    """VFIO takes part in cpr-transfer: hw/vfio/cpr-legacy.c (7e9f21411302) and
    cpr-iommufd.c with iommufd_change_process_capable() ("backends/iommufd: change
    process ioctl") and their blockers, Steve Sistare's VFIO/iommufd live-update
    series (10.1).  Before, QEMU has no VFIO CPR code at all."""
    cpr_exec: bool = True
    """MigMode cpr-exec, and VFIO's CPR blockers also cover it ("vfio: cpr-exec mode",
    ee1ca09fc1, 10.2)."""
    iommufd_cpr_blocker_bug: bool = False
    """vfio_iommufd_cpr_register_iommufd() returns migrate_add_blocker_modes()'s 0 as
    false when the kernel lacks IOMMU_IOAS_CHANGE_PROCESS, so iommufd_backend_connect()
    and the vfio-pci realize fail (3ca0a0ab05c, 10.2.0; fixed by 0e387bd1df, 11.0)."""

    @property
    def has_dma_map_file(self) -> bool:
        return self.policy != "va-only"


_ROWS = [
    # name       title                                      policy              dma_map_name              memfd  aux    shm    warn1  legrep dmabuf rdmfat byp    cpr    cprva  ovfwa
    ("7.2",    "QEMU 7.2 (Debian bookworm)",                 "va-only",          "vfio_dma_map",           False, False, False, False, True,  False, False, False, False, False, True),
    ("8.2",    "QEMU 8.2",                                   "va-only",          "vfio_dma_map",           False, False, False, False, True,  False, False, False, False, False, True),
    ("9.0",    "QEMU 9.0",                                   "va-only",          "vfio_container_dma_map", False, False, False, False, True,  False, False, False, False, False, True),
    ("9.2",    "QEMU 9.2",                                   "va-only",          "vfio_container_dma_map", False, False, True,  False, True,  False, False, False, False, False, True),
    ("10.0",   "QEMU 10.0 (Debian bookworm-backports)",      "va-only",          "vfio_container_dma_map", True,  True,  True,  True,  False, False, False, False, True,  False, True),
    ("10.1",   "QEMU 10.1 (fb32965b6dd8: MAP_FILE when the RAMBlock has an fd)", "fd", "vfio_container_dma_map", True, True, True, True, False, False, False, False, True, True, True),
    ("10.2",   "QEMU 10.2",                                  "fd",               "vfio_container_dma_map", True,  True,  True,  True,  False, False, True,  False, True,  True,  False),
    ("master", "QEMU master@2026-02-13 (10.2.50: BAR dma-buf, bypass_ro)", "fd", "vfio_container_dma_map", True, True, True, True, False, True, True, True, True, True, False),
    ("fixed",  "QEMU 10.2 + seed 002 (vfio_container_can_dma_map_file: shared or ram_device)", "fd-shared-or-ram-device", "vfio_container_dma_map", True, True, True, True, False, False, True, False, True, True, False),
    ("fixed+dmabuf", "QEMU master@2026-02-13 + seed 002",       "fd-shared-or-ram-device", "vfio_container_dma_map", True, True, True, True, False, True, True, True, True, True, False),
]

# Migration-mode switches of the releases before the newest behaviour (keyword fields).
_NO_EXEC = dict(cpr_exec=False)
_MIGRATION = {
    "7.2": dict(cpr_reboot=False, vfio_cpr_reboot=False, vfio_migration_v2=False,
                vfio_cpr_transfer=False, **_NO_EXEC),
    "8.2": dict(vfio_cpr_reboot=False, vfio_cpr_transfer=False, **_NO_EXEC),
    "9.0": dict(vfio_cpr_transfer=False, **_NO_EXEC),
    "9.2": dict(vfio_cpr_transfer=False, **_NO_EXEC),
    "10.0": dict(vfio_cpr_transfer=False, **_NO_EXEC), "10.1": _NO_EXEC,
    "10.2": dict(iommufd_cpr_blocker_bug=True),
    "fixed": dict(iommufd_cpr_blocker_bug=True),
}

_NAMES = [f.name for f in fields(QemuVersion) if f.default is MISSING]
QEMU_VERSIONS: dict[str, QemuVersion] = {r[0]: QemuVersion(*r, **_MIGRATION.get(r[0], {}))
                                         for r in _ROWS}
assert all(len(r) == len(_NAMES) for r in _ROWS)

DEFAULT_QEMU = "10.1"
ALIASES = {"10.1.0": "10.1", "10.2.0": "10.2", "10.0.2": "10.0", "10.0.0": "10.0",
           "7.2.0": "7.2", "10.2.50": "master"}


def get_qemu(name: str, where: str = "--qemu") -> QemuVersion:
    """The QemuVersion called ``name`` (a label, or a full version such as 10.0.2)."""
    key = ALIASES.get(name, name)
    if key not in QEMU_VERSIONS:
        key = _nearest(name)
    if key is None:
        raise UsageError(f"unknown QEMU version {name!r}", where=where,
                         valid=", ".join(QEMU_VERSIONS))
    return QEMU_VERSIONS[key]


def _nearest(text: str) -> str | None:
    """Map a full version string (e.g. "10.0.7", "9.2.3") to the newest known
    release row at or below it."""
    try:
        want = tuple(int(x) for x in text.split("+")[0].split(".")[:2])
    except ValueError:
        return None
    best = None
    for name in QEMU_VERSIONS:
        try:
            have = tuple(int(x) for x in name.split("."))
        except ValueError:
            continue
        if have <= want and (best is None or have > best[0]):
            best = (have, name)
    if best is None or want[0] > 10 or (want[0] == 10 and want[1] > 2):
        return None
    return best[1]


def parse_qemu_list(text: str, where: str = "--qemu") -> list[QemuVersion]:
    """``all`` or a comma-separated list of versions."""
    if text == "all":
        return list(QEMU_VERSIONS.values())
    return [get_qemu(t.strip(), where) for t in text.split(",") if t.strip()]
