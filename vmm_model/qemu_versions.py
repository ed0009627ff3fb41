"""What differs between QEMU versions, as data.

Each behaviour that changed upstream is a ``Rule``: the ``QemuVersion`` field it
sets, the upstream commit that introduced it, its first release, and (when it
went away) the commit and release that removed it; a fix that reached a stable
branch before the next release names that stable release.  Each modelled
release line is a ``QemuVersion`` record whose switches are computed from the
rules for its version number, so code reads ``qemu.<switch>`` and there are no
version comparisons anywhere else.  docs/qemu-versions.md explains the lines
and the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from backends.errors import UsageError
from backends.version import format_version, match_version

Version = tuple[int, int, int]


@dataclass(frozen=True)
class Rule:
    field: str
    """The QemuVersion switch this rule sets."""
    summary: str
    commit: str | None
    """Upstream qemu/qemu commit that introduced it (None: only its subject is known)."""
    subject: str
    since: str
    """First release with it ("4.0.0")."""
    source: str
    """QEMU file and function where it lives."""
    until: str | None = None
    """First release without it, when a later commit removed it."""
    until_commit: str | None = None
    stable: tuple[str, ...] = ()
    """Stable releases that carry it before ``since`` ("11.0.2": 11.0.2 and later 11.0.x)."""

    def applies(self, v: Version) -> bool:
        if self.until and v >= _v(self.until):
            return False
        if v >= _v(self.since):
            return True
        return any(v[:2] == _v(s)[:2] and v >= _v(s) for s in self.stable)

    def first_release(self) -> str:
        return " / ".join((self.since,) + tuple(f"{s} (stable)" for s in self.stable))


def _v(text: str) -> Version:
    return match_version(text)[0]


RULES: tuple[Rule, ...] = (
    Rule("legacy_unmap_overflow_workaround",
         "type1 VFIO_IOMMU_UNMAP_DMA that fails EINVAL with iova+size at the top of the "
         "address space is retried with size - min page size",
         "567d7d3e6be5", "vfio/common: Work around kernel overflow bug in DMA unmap", "4.0.0",
         "hw/vfio/container-legacy.c: vfio_legacy_dma_unmap()",
         until="10.2.0", until_commit="1d9a832b58be"),
    Rule("legacy_reports_map_error",
         "vfio_legacy_dma_map() prints \"VFIO_MAP_DMA failed: <strerror>\" itself",
         "b09d51c9098a", "Report stringified errno in VFIO related errors", "5.0.0",
         "hw/vfio/container.c: vfio_legacy_dma_map()",
         until="10.0.0", until_commit="889695f8f3c1"),
    Rule("memory_backend_file_offset",
         "memory-backend-file has offset= (RAMBlock fd_offset)",
         "4b870dc4d0c0", "hostmem-file: add offset option", "8.1.0",
         "backends/hostmem-file.c: file_backend_class_init()"),
    Rule("memory_backend_file_rom",
         "memory-backend-file has rom= (readonly files mapped as ROM or as writable private RAM)",
         "e92666b0ba4c", "backends/hostmem-file: Add \"rom\" property to support VM templating "
         "with R/O files", "8.2.0", "backends/hostmem-file.c: file_backend_class_init()"),
    Rule("container_dma_map_api",
         "map errors are reported as vfio_container_dma_map(...) (before: vfio_dma_map(...))",
         "b08501a999e2", "vfio/container: Switch to dma_map|unmap API", "9.0.0",
         "hw/vfio/common.c: vfio_listener_region_add()"),
    Rule("iommufd_object",
         "-object iommufd and vfio-pci iommufd= exist (the iommufd backend)",
         "6e6d8ac62b5b", "backends/iommufd: Introduce the iommufd object", "9.0.0",
         "backends/iommufd.c"),
    Rule("q35_smram_region_needs_smm",
         "q35 creates smram-region, the alias that shows the PCI space (a VGA's "
         "vga-lowmem) at 0xa0000-0xbffff, only with SMM enabled: with smm=off (or KVM "
         "without SMM) guest RAM shows through the VGA window and VFIO maps it",
         "b07bf7b73fd0", "q35: Introduce smm_ranges property for q35-pci-host", "9.1.0",
         "hw/pci-host/q35.c: mch_realize() (mch->has_smm_ranges)"),
    Rule("isa_bios_aliases_pflash",
         "with the firmware in a pflash (-drive if=pflash), isa-bios (0xe0000-0xfffff) is "
         "an alias of the flash, a ROM device VFIO does not map; before, a read-only RAM "
         "copy of the flash's last 128 KiB that VFIO maps",
         "a44ea3fa7f2a", "hw/i386/pc_sysfw: Alias rather than copy isa-bios region", "9.1.0",
         "hw/i386/pc_sysfw.c: pc_system_flash_map() -> x86_isa_bios_init()"),
    Rule("memory_backend_shm",
         "memory-backend-shm exists (POSIX shm_open, always shared)",
         "4e647fa08586", "hostmem: add a new memory backend based on POSIX shm_open()", "9.1.0",
         "backends/hostmem-shm.c"),
    Rule("ram_share_memfd",
         "memory-backend-ram,share=on (and aux-ram-share RAM) is a memfd, so it has an fd",
         "9fb40bb9621d", "physmem: fd-based shared memory", "10.0.0",
         "system/physmem.c: qemu_ram_alloc_internal(), qemu_ram_get_shared_fd()"),
    Rule("aux_ram_share",
         "-machine aux-ram-share=on exists: ROMs and other implicit RAM become shared memfds",
         "91792807d11c", "machine: aux-ram-share option", "10.0.0",
         "hw/core/machine.c: machine_set_aux_ram_share()"),
    Rule("cpr_transfer",
         "migration mode cpr-transfer exists (-incoming cpr channel)",
         "624e6e654e11", "migration: cpr-transfer mode", "10.0.0", "migration/cpr-transfer.c"),
    Rule("ram_device_warn_once",
         "a ram_device (BAR) map failure is warn_report_err_once() with the PCI P2P hint; "
         "before: error_report_err() plus \"failed to vfio_dma_map. pci p2p may not work\"",
         "aaec00422ba6", "vfio: Improve error reporting when MMIO region mapping fails",
         "10.0.0", "hw/vfio/listener.c: vfio_listener_region_add()"),
    Rule("dma_map_file",
         "iommufd maps RAM that has an fd with IOMMU_IOAS_MAP_FILE (fd, offset), any fd",
         "fb32965b6dd8", "vfio/iommufd: use IOMMU_IOAS_MAP_FILE", "10.1.0",
         "hw/vfio/container.c: vfio_container_dma_map(); hw/vfio/iommufd.c: "
         "iommufd_cdev_map_file()"),
    Rule("legacy_cpr_vaddr",
         "type1 cpr-transfer incoming maps with VFIO_DMA_MAP_FLAG_VADDR only",
         "7e9f21411302", "vfio/container: restore DMA vaddr", "10.1.0",
         "hw/vfio/cpr-legacy.c: vfio_legacy_cpr_dma_map()"),
    Rule("rdm_budget_fatal",
         "virtio-mem needing more DMA mappings than the type1 limit fails realize "
         "(before: a warning)",
         "ceb59c1cc61d", "vfio: Report an error when the 'dma_max_mappings' limit is reached",
         "10.2.0", "hw/vfio/listener.c: vfio_ram_discard_register_listener()"),
    Rule("iommufd_cpr_blocker_bug",
         "on a kernel without IOMMU_IOAS_CHANGE_PROCESS (before 6.13) the first iommufd "
         "connect fails: vfio_iommufd_cpr_register_iommufd() returns "
         "migrate_add_blocker_modes()'s 0 as false, so vfio-pci realize fails",
         "3ca0a0ab05ca", "migration: Use bitset of MigMode instead of variable arguments",
         "10.2.0", "hw/vfio/cpr-iommufd.c: vfio_iommufd_cpr_register_iommufd()",
         until="11.0.0", until_commit="0e387bd1dff4"),
    # --- migration modes (vmm_model/migration.py) ---
    Rule("vfio_migration_v2",
         "VFIO migration protocol v2: the blocker for a device without it is "
         "\"<dev>: VFIO migration is not supported in kernel\" (VFIO_DEVICE_FEATURE_MIGRATION "
         "-ENOTTY); before, v1's \"VFIO device doesn't support migration\"",
         "31bcbbb5be04", "vfio/migration: Implement VFIO migration protocol v2", "8.0.0",
         "hw/vfio/migration.c: vfio_migration_realize()"),
    Rule("vfio_migration_init_errp",
         "vfio_migration_init() reports through errp: the blocker for a device without "
         "VFIO migration is \"<dev>: VFIO migration init failed: migration is not supported "
         "in kernel: Inappropriate ioctl for device\" (query-migrate of the real QEMU 11.1.3; "
         "10.0.2 prints the v2 wording)",
         None, "upstream commit not identified: observed in the real QEMU 11.1.3 "
         "(Debian 1:11.1.3+ds-2~bpo13+1)", "11.1.0",
         "hw/vfio/migration.c: vfio_migration_realize()"),
    Rule("cpr_reboot",
         "migration mode cpr-reboot exists (qapi MigMode: \"since 8.2\")",
         "a87e64519b02", "cpr: reboot mode", "8.2.0", "qapi/migration.json: MigMode"),
    Rule("vfio_cpr_reboot",
         "VFIO allows cpr-reboot while the guest is suspended; before, VFIO's migration "
         "blocker (migrate_add_blocker(): every mode) covered cpr-reboot too",
         "0cb51c183a91", "vfio: allow cpr-reboot migration if suspended", "9.0.0",
         "hw/vfio/cpr.c: vfio_cpr_reboot_notifier() (with d9fa4223b30a)"),
    Rule("vfio_cpr_transfer",
         "VFIO takes part in cpr-transfer: cpr-legacy.c (VFIO_UPDATE_VADDR, VFIO_UNMAP_ALL) "
         "and cpr-iommufd.c (IOMMU_IOAS_CHANGE_PROCESS) with their blockers; before, QEMU "
         "has no VFIO CPR code",
         "7e9f21411302", "vfio/container: restore DMA vaddr", "10.1.0",
         "hw/vfio/cpr-legacy.c: vfio_cpr_supported(); hw/vfio/cpr-iommufd.c"),
    Rule("cpr_exec",
         "migration mode cpr-exec exists and VFIO's CPR blockers cover it too",
         None, "vfio: cpr-exec mode", "10.2.0",
         "hw/vfio/cpr-legacy.c, hw/vfio/cpr-iommufd.c: migrate_add_blocker_modes()"),
    Rule("bypass_ro",
         "iommufd nesting parents on hosts with ERRATA_772415_SPR17 skip readonly sections",
         "68d3a2a24d7c", "Workaround for ERRATA_772415_SPR17", "11.0.0",
         "hw/vfio/listener.c: vfio_listener_skipped_section()"),
    Rule("bar_dmabuf",
         "VFIO BAR mmaps carry a VFIO dma-buf fd, so iommufd maps BARs with "
         "IOMMU_IOAS_MAP_FILE of the dma-buf (kernel 6.19+)",
         "8cfaf22668c7", "hw/vfio/region: Create dmabuf for PCI BAR per region", "11.0.0",
         "hw/vfio/region.c: vfio_region_create_dma_buf()"),
    Rule("dma_map_file_shared_only",
         "IOMMU_IOAS_MAP_FILE only for RAM_SHARED RAMBlocks and ram_device regions; private "
         "fd-backed RAM (private memfd, private file, -mem-path) is mapped by VA. From 11.1 "
         "the choice is inside iommufd's .dma_map() (877da3831355 \"vfio/iommufd: Merge "
         ".dma_map_file() into .dma_map()\"); a MAP_FILE failure still fails realize, "
         "there is no VA fallback",
         None, "vfio/container: Restrict dma_map_file() to shared RAM or RAM devices",
         "11.1.0", "hw/vfio/container.c: vfio_container_dma_map()", stable=("11.0.2",)),
)
RULE = {r.field: r for r in RULES}


@dataclass(frozen=True)
class QemuVersion:
    """One QEMU release line.  Every switch is a field named after its Rule."""

    name: str
    version: Version
    """The version the rules are evaluated at (a release line's first release)."""
    title: str
    commit: str | None = None
    """For master: the upstream commit modelled."""
    legacy_unmap_overflow_workaround: bool = False
    legacy_reports_map_error: bool = False
    memory_backend_file_offset: bool = False
    memory_backend_file_rom: bool = False
    container_dma_map_api: bool = False
    iommufd_object: bool = False
    q35_smram_region_needs_smm: bool = False
    isa_bios_aliases_pflash: bool = False
    memory_backend_shm: bool = False
    ram_share_memfd: bool = False
    aux_ram_share: bool = False
    cpr_transfer: bool = False
    ram_device_warn_once: bool = False
    dma_map_file: bool = False
    legacy_cpr_vaddr: bool = False
    rdm_budget_fatal: bool = False
    iommufd_cpr_blocker_bug: bool = False
    vfio_migration_v2: bool = False
    vfio_migration_init_errp: bool = False
    cpr_reboot: bool = False
    vfio_cpr_reboot: bool = False
    vfio_cpr_transfer: bool = False
    cpr_exec: bool = False
    bypass_ro: bool = False
    bar_dmabuf: bool = False
    dma_map_file_shared_only: bool = False

    @property
    def policy(self) -> str:
        """The built-in ``vfio_container_dma_map`` variant (vmm_model.policy.POLICIES)."""
        if not self.dma_map_file:
            return "va-only"
        return "fd-shared-or-ram-device" if self.dma_map_file_shared_only else "fd"

    @property
    def has_dma_map_file(self) -> bool:
        return self.dma_map_file

    @property
    def dma_map_name(self) -> str:
        """The function named in QEMU's map error message."""
        return "vfio_container_dma_map" if self.container_dma_map_api else "vfio_dma_map"

    def switches(self) -> dict[str, bool]:
        return {r.field: getattr(self, r.field) for r in RULES}


SWITCHES = tuple(f.name for f in fields(QemuVersion))[4:]
assert set(SWITCHES) == set(RULE), "one Rule per QemuVersion switch"


def at_version(v: Version, name: str | None = None, title: str = "",
               commit: str | None = None) -> QemuVersion:
    """The QemuVersion of release ``v``: every rule evaluated at that version."""
    return QemuVersion(name or format_version(v), v, title or f"QEMU {format_version(v)}",
                       commit, **{r.field: r.applies(v) for r in RULES})


# The modelled release lines, oldest first.  A line is named by its first release
# with different rules; any x.y.z maps to the line it belongs to (get_qemu).
LINES: tuple[tuple[str, str, str], ...] = (
    ("7.2", "7.2.0", "QEMU 7.2.x (Debian 12 bookworm)"),
    ("8.2", "8.2.0", "QEMU 8.2.x"),
    ("9.0", "9.0.0", "QEMU 9.0.x"),
    ("9.1", "9.1.0", "QEMU 9.1.x"),
    ("9.2", "9.2.0", "QEMU 9.2.x"),
    ("10.0", "10.0.0", "QEMU 10.0.x (Debian 13 trixie, bookworm-backports)"),
    ("10.1", "10.1.0", "QEMU 10.1.x"),
    ("10.2", "10.2.0", "QEMU 10.2.x"),
    ("11.0.0", "11.0.0", "QEMU 11.0.0 - 11.0.1"),
    ("11.0.2", "11.0.2", "QEMU 11.0.2 and later 11.0.x"),
    ("11.1", "11.1.0", "QEMU 11.1.x (Debian trixie-backports)"),
)
MASTER_COMMIT = "b2e5620b4f5d"
"""Upstream master at "Merge tag 'pull-vfio-20260721'" (2026-07-22), the newest
master whose hw/vfio changes are known here: the 11.1 rules."""

QEMU_VERSIONS: dict[str, QemuVersion] = {
    name: at_version(_v(first), name, title) for name, first, title in LINES}
QEMU_VERSIONS["master"] = at_version(
    (11, 1, 0), "master", f"QEMU master@{MASTER_COMMIT} (2026-07-22, pull-vfio-20260721 merged)",
    MASTER_COMMIT)

DEFAULT_QEMU = "11.1"
"""The newest release: the default of every command and the examples in help."""

RETIRED = {
    "fixed": "the shared-or-ram-device MAP_FILE rule it stood for shipped in QEMU 11.0.2 "
             "(stable) and 11.1: use --qemu 11.0.2 or --qemu 11.1",
    "fixed+dmabuf": "dma-buf BARs (11.0) and the shared-or-ram-device MAP_FILE rule "
                    "(11.0.2, 11.1) are both in QEMU 11.1: use --qemu 11.1",
}


def line_of(v: Version) -> str | None:
    """The release line ``v`` belongs to: the newest line at or below it, or
    None when it is older than the oldest line or newer than master."""
    if v >= (11, 2, 0) or v < (7, 2, 0):
        return None
    best = None
    for name, first, _ in LINES:
        if _v(first) <= v:
            best = name
    return best


def get_qemu(name: str, where: str = "--qemu") -> QemuVersion:
    """The QemuVersion called ``name``: a line name ("11.1", "11.0.2", "master") or
    any release ("10.0.2", "11.0.1", "1:11.1.3+ds-2~bpo13+1")."""
    if name in QEMU_VERSIONS:
        return QEMU_VERSIONS[name]
    if name in RETIRED:
        raise UsageError(f"QEMU {name!r} is retired: {RETIRED[name]}", where=where,
                         valid=", ".join(QEMU_VERSIONS))
    got = match_version(name)
    line = line_of(got[0]) if got else None
    if line is None:
        raise UsageError(f"unknown QEMU version {name!r}", where=where,
                         valid=", ".join(QEMU_VERSIONS) + " or a release from 7.2.0 to 11.1.x")
    return QEMU_VERSIONS[line]


def parse_qemu_list(text: str, where: str = "--qemu") -> list[QemuVersion]:
    """``all`` or a comma-separated list of versions."""
    if text == "all":
        return list(QEMU_VERSIONS.values())
    return [get_qemu(t.strip(), where) for t in text.split(",") if t.strip()]


def versions_table() -> str:
    """``vfio-emu versions``: each line with its switches, then each rule with
    the release it appeared in."""
    out = ["QEMU versions (default " + DEFAULT_QEMU + "):"]
    for q in QEMU_VERSIONS.values():
        out.append(f"  {q.name:8} policy {q.policy:24} {q.title}")
    out.append("")
    out.append("Rules (switch, first release, upstream commit):")
    for r in RULES:
        gone = f", until {r.until} ({r.until_commit})" if r.until else ""
        on = ",".join(q.name for q in QEMU_VERSIONS.values() if getattr(q, r.field)) or "-"
        out.append(f"  {r.field:34} {r.first_release():22} {r.commit or '(stable patch)':13} "
                   f"\"{r.subject}\"{gone}")
        out.append(f"  {'':34} {r.summary}; in: {on}")
    return "\n".join(out)


def versions_dict() -> dict:
    return {"schema_version": 1, "default": DEFAULT_QEMU,
            "versions": {q.name: {"version": format_version(q.version), "title": q.title,
                                  "commit": q.commit, "policy": q.policy, **q.switches()}
                         for q in QEMU_VERSIONS.values()},
            "rules": [{"switch": r.field, "summary": r.summary, "commit": r.commit,
                       "subject": r.subject, "since": r.since, "stable": list(r.stable),
                       "until": r.until, "until_commit": r.until_commit, "source": r.source}
                      for r in RULES]}
