"""Kernel profiles: every version difference the simulator knows, as data.

One dataclass of named switches (``KernelProfile``), one table (``_TIMELINE``)
where each row lists only what changed since the row above, and one source per
switch (``SOURCES``: release, commit, kernel file and function).  Code reads
``profile.<switch>``; no version ``if`` lives anywhere else.

What a profile name means (docs/kernel-model.md, "Profiles"): "X.Y" is the X.Y
series: mainline X.Y plus the stable backports whose landing in that series is
documented or observed.  Other backports are named in SOURCES with their point
releases and not applied.  "+fix" and "+lu" profiles add patches that are posted
but not merged.
"""

from __future__ import annotations

import dataclasses
import errno
import re
from dataclasses import dataclass

from backends.errors import UsageError
from backends.version import parse_version


@dataclass(frozen=True)
class KernelProfile:
    name: str
    description: str
    # ---- memory (mm/memfd.c, mm/mmap.c, mm/vma.c, mm/gup.c) ----
    f_seal_future_write: bool = True
    f_seal_exec: bool = False
    i_mmap_writable_counts_maywrite_only: bool = False
    ro_shared_mmap_of_write_sealed: bool = False
    seal_exec_denies_writable: bool = False
    memfd_pin_folios: bool = False
    mmap_region_unmaps_before_checks: bool = True
    longterm_pin_refuses_writable_file: bool = False
    # ---- IOMMU (read by the later iommufd / type1 simulators) ----
    iommufd: bool = False
    vfio_cdev: bool = False
    map_file: bool = False
    change_process: bool = False
    map_file_fget_in_ioas: bool = False
    map_file_dmabuf: bool = False
    map_file_requires_fmode_write: bool = False
    type1_overflow_errno: int = errno.EINVAL
    type1_map_up_to_limit: bool = False
    compat_empty_unmap_ok: bool = False
    iommufd_unmap_enoent_if_nothing_removed: bool = False
    iommufd_map_pfnmap_errno: int = errno.EFAULT
    type1_dma_entry_limit: int = 65535
    type1_nesting_extension: bool = True
    vfio_info_cap_aligned: bool = False
    iommufd_last_cmd_nr: int = 0x88
    iommufd_alloc_iova_align_cap: bool = False
    iommufd_liveupdate: bool = False

    def switches(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "description")}


SOURCES: dict[str, str] = {
    "longterm_pin_refuses_writable_file":
        "6.5, 8ac268436e6d 'mm/gup: disallow FOLL_LONGTERM GUP-nonfast writing to file-backed "
        "mappings' (mm/gup.c check_vma_flags() -> writable_file_mapping_allowed(): -EFAULT for a "
        "FOLL_LONGTERM|FOLL_WRITE pin of a shared writable mapping of a file that needs dirty "
        "tracking, e.g. ext4); 6.1 pins it: observed on Debian 6.1.176 (VFIO_IOMMU_MAP_DMA of a "
        "MAP_SHARED ext4 file mapping returns 0), rig set disk-fs",
    "f_seal_future_write": "5.1, ab3948f58ff8 'mm/memfd: add an F_SEAL_FUTURE_WRITE seal to memfd' "
                           "(mm/memfd.c memfd_add_seals())",
    "f_seal_exec": "6.3, 'mm/memfd: add F_SEAL_EXEC' + MFD_NOEXEC_SEAL/MFD_EXEC (mm/memfd.c); before: "
                   "F_ADD_SEALS(F_SEAL_EXEC) and memfd_create(MFD_EXEC|MFD_NOEXEC_SEAL) -> EINVAL",
    "i_mmap_writable_counts_maywrite_only":
        "6.7, 'mm: drop the assumption that VM_SHARED always implies writable' "
        "(include/linux/mm.h vma_is_shared_maywrite(), used by mm/mmap.c): i_mmap_writable "
        "counts VM_SHARED|VM_MAYWRITE VMAs; before, "
        "every VM_SHARED VMA. "
        "In 6.1.y via the 2025-07 stable backport (Isaac Manjarres): F_SEAL_WRITE succeeds "
        "with a MAP_SHARED PROT_READ mapping of an F_SEAL_FUTURE_WRITE memfd on Debian 6.1.176, "
        "rig run debian-6.1 2026-11-23; not applied to 6.6 (6.6.y not observed)",
    "ro_shared_mmap_of_write_sealed":
        "6.7, 158978945f31 'mm: perform the mapping_map_writable() check after call_mmap()' "
        "(mm/mmap.c mmap_region()); regressed by 5de195060b2e 'mm: resolve faulty mmap_region() "
        "error path behaviour', fixed by 8ec396d05d1b 'mm: reinstate ability to map write-sealed "
        "memfd mappings read-only' (6.13-rc, 6.12-stable review 2025-01-06). The 2025-07 backport "
        "to 5.4..6.6 stable (Isaac Manjarres; queued for 6.1.149 and 6.6.103, stable reviews "
        "2025-08-26) is applied to 6.1 only: observed on Debian 6.1.176 (MAP_SHARED PROT_READ of "
        "an F_SEAL_WRITE memfd maps), rig run debian-6.1 2026-11-23; the 6.6 profile models "
        "6.6.0-6.6.102",
    "seal_exec_denies_writable":
        "3b041514cb6e 'memfd: deny writeable mappings when implying SEAL_WRITE' (Cc stable): the "
        "F_SEAL_EXEC implied seals are added before mapping_deny_writable() in memfd_add_seals(). "
        "Observed on 6.18.44 (F_SEAL_EXEC with a shared RW mapping -> EBUSY). Before it, WRITE "
        "was implied without mapping_deny_writable(). Mainline 7.1 (7.1-rc); stable 6.6.143, "
        "6.12.93, 6.18.35, 7.0.12; 6.19.y never fixed (OSV CVE-2026-63952 affected ranges)",
    "mmap_region_unmaps_before_checks":
        "before 5de195060b2e 'mm: resolve faulty mmap_region() error path behaviour' (6.12-rc): "
        "mmap_region() unmapped the old range of a MAP_FIXED mapping before mapping_map_writable()/"
        "->mmap(), so their failure left a hole. The CVE-2024-53096 backports (6.1.119, 6.6.63) "
        "move only arch_validate_flags()/mapping_map_writable() before the unmap; an ->mmap() "
        "failure still leaves a hole there (code-read). Not applied: the profiles model .0",
    "memfd_pin_folios": "6.11, mm/gup.c memfd_pin_folios() (added for udmabuf); used by iommufd MAP_FILE",
    "iommufd": "6.2, drivers/iommu/iommufd/ (main.c iommufd_fops_ioctl(), ioas.c, vfio_compat.c): "
               "/dev/iommu, IOAS ioctls, IOMMU_OPTION, VFIO compat",
    "vfio_cdev": "6.6, drivers/vfio/device_cdev.c vfio_df_ioctl_bind_iommufd(): "
                 "VFIO_DEVICE_BIND_IOMMUFD, /dev/vfio/devices/vfioX",
    "map_file": "6.13, f4986a72d6e4 'iommufd: Add IOMMU_IOAS_MAP_FILE' (ioas.c "
                "iommufd_ioas_map_file(), pages.c via memfd_pin_folios())",
    "change_process": "6.13, ioas.c iommufd_ioas_change_process(): IOMMU_IOAS_CHANGE_PROCESS "
                      "(same series as MAP_FILE)",
    "map_file_fget_in_ioas":
        "6.13-6.18: fget() in iommufd_ioas_map_file() after the IOAS lookup; EBADF leaks the IOAS "
        "reference (code-read of ioas.c 6.13-6.18 + main.c iommufd_object_remove(); not run; no stable "
        "fix found). 6.19: 'iommufd: Have iopt_map_file_pages convert the fd to a file' "
        "(io_pagetable.c iopt_map_file_pages())",
    "map_file_dmabuf": "6.19, pages.c IOPT_ADDRESS_DMABUF + drivers/vfio/pci "
                       "VFIO_DEVICE_FEATURE_DMA_BUF: MAP_FILE of a VFIO dma-buf",
    "map_file_requires_fmode_write":
        "NOT MERGED: '[PATCH] iommu/iommufd: Require write access for writable MAP_FILE mappings' "
        "(posted 2026-06-07): iopt_alloc_file_pages() refuses WRITEABLE without FMODE_WRITE "
        "(EPERM) and takes mapping_map_writable(). Not in Debian 7.2.13 (rig run iommufd-7.2 "
        "2026-11-23); see docs/kernel-model.md, 'Unmerged patches'",
    "type1_overflow_errno":
        "6.18, 6012379ede6a 'vfio/type1: sanitize for overflow using check_*_overflow()' "
        "(vfio_iommu_type1.c vfio_dma_do_map()/vfio_dma_do_unmap()): EOVERFLOW; before: EINVAL",
    "type1_map_up_to_limit": "6.18, ef270ec44637 'vfio/type1: handle DMA map/unmap up to the "
                             "addressable limit' (vfio_find_dma(), vfio_dma_do_unmap())",
    "compat_empty_unmap_ok":
        "6.18, afb47765f923 'iommufd: Make vfio_compat's unmap succeed if the range is already "
        "empty' (io_pagetable.c iopt_unmap_iova_range()); before: ENOENT. Stable 6.6.117 / "
        "6.12.59 / 6.17.9 (2025-11-24), not applied: the profiles model .0",
    "iommufd_unmap_enoent_if_nothing_removed":
        "6.18 (afb47765f923): native IOAS_UNMAP ENOENT comes from 'if (!unmapped) rc = -ENOENT' in "
        "ioas.c iommufd_ioas_unmap(); before, from iopt_unmap_iova_range()'s 'rc = -ENOENT' init. "
        "Same errno",
    "iommufd_map_pfnmap_errno":
        "EFAULT from mm/gup.c check_vma_flags() (VM_IO|VM_PFNMAP) in every version; the 2025-10 "
        "EOPNOTSUPP patch was never merged",
    "type1_dma_entry_limit": "5.1, 492855939bdb 'vfio/type1: Limit DMA mappings per container' "
                             "(CVE-2019-3882): module param dma_entry_limit, default U16_MAX",
    "type1_nesting_extension":
        "before 6.13: vfio_iommu_type1_check_extension(VFIO_TYPE1_NESTING_IOMMU) = 1 and SET_IOMMU(6) "
        "opens a nesting v2 iommu (iommu_enable_nesting() at attach: EINVAL without an enable_nesting op, "
        "e.g. VT-d). 6.13: 35890f85573c 'vfio: Remove VFIO_TYPE1_NESTING_IOMMU' renamed it "
        "__VFIO_RESERVED_TYPE1_NESTING_IOMMU: 0, SET_IOMMU(6) -> ENODEV",
    "vfio_info_cap_aligned":
        "6.6, a881b496941f 'vfio: align capability structures' (vfio 6.6 pull): vfio_info_cap_add() "
        "rounds each cap to ALIGN(size, sizeof(u64)), so VFIO_IOMMU_GET_INFO's chain is 120 bytes "
        "(DMA_AVAIL padded to 16); before, the caps are packed (116). Debian 6.1.176: 116, rig run "
        "debian-6.1 2026-11-23",
    "iommufd_last_cmd_nr":
        "the last _IOC_NR in iommufd_ioctl_ops[] (main.c): beyond it iommufd_fops_ioctl() goes to "
        "the VFIO compat layer (ENOTTY) before get_user(size), inside it a NULL arg is EFAULT. "
        "0x88 VFIO_IOAS (6.2), 0x8a GET_HW_INFO (6.6), 0x8c HWPT_GET_DIRTY_BITMAP (6.7), "
        "0x8e FAULT_QUEUE_ALLOC (6.11), 0x92 IOAS_CHANGE_PROCESS (6.13), 0x94 HW_QUEUE_ALLOC (6.17); "
        "from include/uapi/linux/iommufd.h history, release tags UNVERIFIED",
    "iommufd_alloc_iova_align_cap":
        "6.12 (6.12-rc1), 8f6887349b2f 'iommufd: Protect against overflow of ALIGN() during iova "
        "allocation': auto-IOVA alignment capped at HPAGE_SIZE and an ALIGN() overflow skips the "
        "hole. Before: no cap, the overflow wrapped (syzbot). Stable 6.6.54, 6.10.y, 6.11.2 "
        "(reviews 2024-10-02); the 6.6.54 backport is not applied to the 6.6 profile",
    "iommufd_liveupdate":
        "NOT MERGED: '[PATCH 00/14] iommu: Add live update state preservation' v1 (S. Khawaja, "
        "2026-02-03, 20260203220948.2176157-1-skhawaja@google.com): "
        "IOMMU_HWPT_LU_SET_PRESERVE (0x95, 10/14: marks), seals cached at MAP_FILE, checks and an "
        "immutable IOAS when the iommufd fd is preserved (11/14 iommufd_save_hwpts()); see "
        "docs/kernel-model.md, 'Unmerged patches'",
}

# One row per profile: (name, description, what changed since the previous row).
_TIMELINE: list[tuple[str, str, dict]] = [
    ("6.1", "6.1 LTS as Debian 6.1.176: RO shared mmap of a write-sealed memfd allowed "
            "(2025-07 stable backport, observed); no iommufd", dict(
        i_mmap_writable_counts_maywrite_only=True, ro_shared_mmap_of_write_sealed=True)),
    ("6.6", "6.6 LTS: iommufd, VFIO cdev, F_SEAL_EXEC; F_SEAL_WRITE refuses every shared mmap "
            "(the 6.1.y backport not observed on 6.6.y)", dict(
        f_seal_exec=True, iommufd=True, vfio_cdev=True, iommufd_last_cmd_nr=0x8a,
        longterm_pin_refuses_writable_file=True,
        vfio_info_cap_aligned=True, i_mmap_writable_counts_maywrite_only=False,
        ro_shared_mmap_of_write_sealed=False)),
    ("6.7", "6.7: RO shared mmap of a write-sealed memfd allowed", dict(
        i_mmap_writable_counts_maywrite_only=True, ro_shared_mmap_of_write_sealed=True,
        iommufd_last_cmd_nr=0x8c)),
    ("6.12", "6.12.y after 8ec396d05d1b (regression fixed); memfd_pin_folios", dict(
        memfd_pin_folios=True, mmap_region_unmaps_before_checks=False, iommufd_last_cmd_nr=0x8e,
        iommufd_alloc_iova_align_cap=True)),
    ("6.12-regressed", "6.12.0-6.12.8: 5de195060b2e (6.12) until 8ec396d05d1b reached 6.12.9",
     dict(ro_shared_mmap_of_write_sealed=False)),
    ("6.13", "6.13: IOMMU_IOAS_MAP_FILE, CHANGE_PROCESS", dict(
        ro_shared_mmap_of_write_sealed=True, map_file=True, change_process=True,
        map_file_fget_in_ioas=True, iommufd_last_cmd_nr=0x92, type1_nesting_extension=False)),
    ("6.18", "6.18 LTS (as observed on 6.18.44): type1 EOVERFLOW, compat empty unmap 0", dict(
        type1_overflow_errno=errno.EOVERFLOW, type1_map_up_to_limit=True,
        compat_empty_unmap_ok=True, iommufd_unmap_enoent_if_nothing_removed=True,
        seal_exec_denies_writable=True, iommufd_last_cmd_nr=0x94)),
    ("6.19", "6.19: MAP_FILE dmabuf, fget moved into iopt_map_file_pages", dict(
        map_file_dmabuf=True, map_file_fget_in_ioas=False, seal_exec_denies_writable=False)),
    ("7.1", "7.1", dict(seal_exec_denies_writable=True)),
    ("7.2", "7.2 (Debian 7.2.13): MAP_FILE WRITEABLE on an O_RDONLY / sealed fd succeeds", {}),
    ("7.2+fix", "7.2 + '[PATCH] iommu/iommufd: Require write access for writable MAP_FILE "
                "mappings' (2026-06-07, not merged)", dict(
        map_file_requires_fmode_write=True)),
    ("7.2+lu", "7.2 + the 2026-02 iommufd live-update v1 series (not merged)", dict(
        iommufd_liveupdate=True, iommufd_last_cmd_nr=0x95)),
]


def _build() -> dict[str, KernelProfile]:
    out, prev = {}, {}
    for name, desc, changes in _TIMELINE:
        base = dict(prev)
        base.update(changes)
        if name.endswith("-regressed") or "+" in name:   # side branches: the next row starts
                                                          # from the last mainline row
            out[name] = KernelProfile(name=name, description=desc, **base)
            continue
        prev = base
        out[name] = KernelProfile(name=name, description=desc, **base)
    return out


PROFILES: dict[str, KernelProfile] = _build()
assert set(SOURCES) == set(KernelProfile(name="", description="").switches())


def list_profiles() -> list[str]:
    return list(PROFILES)


def get_profile(name: str | KernelProfile) -> KernelProfile:
    if isinstance(name, KernelProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown kernel profile {name!r}", field="profile",
                         valid=", ".join(PROFILES)) from None


def _version(s: str) -> tuple[int, int, int]:
    """"6.12.5-amd64" -> (6, 12, 5); "6.12" -> (6, 12, 0) (backends.version)."""
    return parse_version(s, where="kernel release", example="6.18.44")


# Point releases that fall in a side profile: (series, first, last point release, profile).
POINT_RELEASES = [((6, 12), 0, 8, "6.12-regressed")]     # 8ec396d05d1b reached 6.12.9


def host_profile(release: str | None = None) -> KernelProfile:
    """The profile for ``release`` (default: this machine's ``uname -r``): the
    nearest known mainline profile at or below it (6.18.44 -> "6.18"), or the
    side profile POINT_RELEASES names (6.12.5 -> "6.12-regressed").  ``7.2+fix``
    and other patched profiles are never chosen."""
    import platform
    want = _version(release or platform.release())
    for series, first, last, name in POINT_RELEASES:
        if want[:2] == series and first <= want[2] <= last:
            return PROFILES[name]
    best = None
    for name in PROFILES:
        if not re.fullmatch(r"\d+\.\d+", name):
            continue
        if _version(name) <= want and (best is None or _version(name) > _version(best)):
            best = name
    return PROFILES[best or "6.1"]


def profiles_dict() -> dict:
    """JSON-able table for ``vfio-emu profiles --json``."""
    return {"schema": 1,
            "switches": {k: SOURCES[k] for k in SOURCES},
            "profiles": {p.name: {"description": p.description, **p.switches()}
                         for p in PROFILES.values()}}


def _fmt(v: object, key: str) -> str:
    if isinstance(v, bool):
        return "y" if v else "-"
    if key.endswith("errno") and isinstance(v, int):
        return errno.errorcode.get(v, str(v))
    return str(v)


def format_profiles(names: list[str] | None = None) -> str:
    """Plain-text table (one row per switch, one column per profile) + sources."""
    names = names or list(PROFILES)
    keys = list(SOURCES)
    w0 = max(len(k) for k in keys)
    ws = [max([len(n)] + [len(_fmt(getattr(PROFILES[n], k), k)) for k in keys]) for n in names]
    lines = ["switch".ljust(w0) + "  " + "  ".join(n.ljust(w) for n, w in zip(names, ws))]
    for k in keys:
        cells = [_fmt(getattr(PROFILES[n], k), k).ljust(w) for n, w in zip(names, ws)]
        lines.append(k.ljust(w0) + "  " + "  ".join(cells))
    lines.append("")
    lines += [f"{k}: {SOURCES[k]}" for k in keys]
    return "\n".join(lines) + "\n"
