"""``vfio-emu migrate-check``: will this VM survive the move?

Both sides (QEMU version, IOMMU backend, kernel profile, machine type,
migration mode) are realized on a simulated kernel with the real clients
(vmm_model/simulate.py), then probed with the ioctls QEMU itself issues
(VFIO_CHECK_EXTENSION, VFIO_IOMMU_GET_INFO caps, IOMMU_HWPT_ALLOC with
DIRTY_TRACKING, IOMMU_IOAS_CHANGE_PROCESS, VFIO_DEVICE_FEATURE) and, on a
kernel with the live-update series, preserved in a LUO session.  The two runs
are compared section by section with one registry of rules (``RULES``); each
finding names the upstream code behind it.

    result = migrate_check(scenario, "qemu=10.0,backend=type1,kernel=6.12",
                           "qemu=10.2,backend=iommufd,kernel=7.2")
    result.verdict            # "safe" | "changes" | "breaks"
    print(result)             # one line per finding: code, section, before -> after, why

Verdicts: ``safe`` (nothing the guest or device can notice), ``changes`` (works,
behaves differently: the finding says how), ``breaks`` (does not start, loses a
mapping, or lets the device DMA somewhere the guest does not see).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from backends.base import errno_name
from backends.errors import UsageError
from vmm_model.gc_pause import gc_paused
from vmm_model.iommu_backends import get_backend
from vmm_model.qemu_versions import DEFAULT_QEMU, QEMU_VERSIONS, get_qemu
from vmm_model.memory import RamFlags
from vmm_model.scenario import MACHINE_TYPES, Scenario

SCHEMA_VERSION = 1
SIDE_KEYS = ("qemu", "backend", "kernel", "machine", "mode")
MODES = ("normal", "cpr-reboot", "cpr-transfer", "cpr-exec")
VERDICTS = ("safe", "changes", "breaks")           # in order of severity
DEFAULT_BACKEND = "iommufd"
LU_SEALS = frozenset({"F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK"})
VFIO_DEVICE_FEATURE_MIGRATION = 1                  # include/uapi/linux/vfio.h


# --- sides ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """One end of the move: every key resolved."""

    qemu: str
    backend: str
    kernel: str
    machine: str
    mode: str

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, k)}" for k in SIDE_KEYS)


def parse_side(text: str, where: str = "--from") -> dict[str, str]:
    """``qemu=10.0,backend=type1,kernel=6.12`` -> the given keys, each value
    checked (unknown key or value: UsageError naming the key and what is valid)."""
    from backends.kernel_profiles import PROFILES, get_profile, host_profile
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if key not in SIDE_KEYS:
            raise UsageError(f"unknown key {key!r}", where=where, valid=", ".join(SIDE_KEYS))
        if not sep or not value:
            raise UsageError(f"{key} needs a value ({key}=...)", where=where, field=key)
        if key == "qemu":
            value = get_qemu(value, where=f"{where} qemu").name
        elif key == "kernel":
            if value == "host" or re.fullmatch(r"\d+\.\d+\.\d+\S*", value):
                # this machine, or a release (6.12.5 -> 6.12-regressed, 7.2.13 -> 7.2)
                value = host_profile(None if value == "host" else value).name
            try:
                value = get_profile(value).name
            except UsageError:
                raise UsageError(f"unknown kernel profile {value!r}", where=where, field=key,
                                 valid=", ".join(PROFILES) + ", a release like 6.12.5, "
                                       "host") from None
        elif key == "backend":
            value = get_backend(value, where=f"{where}: backend").name
        else:
            valid = {"machine": MACHINE_TYPES, "mode": MODES}[key]
            if value not in valid:
                raise UsageError(f"unknown {key} {value!r}", where=where, field=key,
                                 valid=", ".join(valid))
        out[key] = value
    return out


def resolve_side(sc: Scenario, given: dict[str, str] | str, where: str = "--from",
                 mode: str | None = None) -> Side:
    """Fill the keys not given from the scenario, then the project defaults
    (QEMU 10.1, iommufd, kernel 7.2, the scenario's machine, mode normal)."""
    from vmm_model.plan import DEFAULT_KERNEL
    g = parse_side(given, where) if isinstance(given, str) else dict(given)
    return Side(qemu=g.get("qemu") or get_qemu(sc.qemu or DEFAULT_QEMU).name,
                backend=g.get("backend") or sc.backend or DEFAULT_BACKEND,
                kernel=g.get("kernel") or DEFAULT_KERNEL,
                machine=g.get("machine") or sc.machine.get("type", "q35"),
                mode=g.get("mode") or mode or "normal")


def _legacy(backend: str) -> bool:
    """QEMU's legacy container (TYPE_VFIO_IOMMU_LEGACY: type1, or iommufd's VFIO
    compat mode behind the same calls), not an ``-object iommufd``."""
    return not get_backend(backend).iommufd_object


# --- one side, run ---------------------------------------------------------------------

class SectionRun(NamedTuple):
    """What the listener decided for a section and the kernel's answer.  The section
    itself is its key in ``SideRun.sections``, (listener path, iova, size): the same
    section on both sides.  Sections of one MemoryRegionSection decided alike share
    one SectionRun (a 1 TiB virtio-mem guest's 524,288 blocks share one), so a side
    costs a dict entry per section."""

    ramblock: str
    kind: str                  # "file" (IOMMU_IOAS_MAP_FILE), "va" (MAP_DMA / IOAS_MAP), "skip"
    ioctl: str | None
    readonly: bool
    ret: int | None
    ram_device: bool = False
    shared: bool = False
    cow: bool = False          # private file RAM mapped by file: device and CPU diverge
    seals: tuple = ()
    backing: str = ""
    delta: int = 0             # iova - offset within the RAMBlock
    open_flags: str = "O_RDWR"  # how QEMU opened the RAMBlock's file
    ram_readonly: bool = False  # RAM_READONLY: mmap'ed PROT_READ (rom=on)

    @property
    def outcome(self) -> str:
        if self.kind == "skip":
            return "not mapped"
        what = {"file": "MAP_FILE", "va": "VA map"}.get(self.kind, self.kind)
        ro = " RO" if self.readonly else ""
        return f"{what}{ro} {'0' if self.ret == 0 else errno_name(self.ret)}"

    def label(self, key: tuple) -> str:
        """"ram0 [0x100000, 0x80000000)": the section ``key`` in the RAMBlock."""
        return f"{self.ramblock} [0x{key[1]:x}, 0x{key[1] + key[2]:x})"

    def region(self, key: tuple) -> tuple[int, int]:
        """[start, end) of the section ``key`` within the RAMBlock."""
        return key[1] - self.delta, key[1] + key[2] - self.delta


@dataclass
class LiveUpdate:
    """Kernel live update (LUO) of the iommufd: every mapped memfd preserved,
    the HWPT marked (IOMMU_HWPT_LU_SET_PRESERVE), then the iommufd fd preserved."""

    rc: int
    blocking: list[tuple[str, str]] = field(default_factory=list)   # (section, why)
    after: int | None = None     # QEMU's next unmap once preserved (-EBUSY: immutable)
    iommufd_first: int | None = None   # the iommufd preserved before its memfds


@dataclass
class SideRun:
    """Everything compared about one side; plain data (picklable, JSON-able)."""

    side: Side
    sections: dict[tuple, SectionRun] = field(default_factory=dict)
    rejected: str | None = None
    kernel_error: str | None = None
    realize_error: str | None = None
    aborted: str | None = None
    device: str = "vfio-pci"
    mappings: int = 0
    dma_limit: int | None = None          # type1 dma_entry_limit (DMA_AVAIL before mapping)
    locked_bytes: int = 0                 # what RLIMIT_MEMLOCK must allow
    locked_scope: str = "-"               # mm->locked_vm (type1) / user->locked_vm (iommufd)
    dirty_tracking: str | None = None     # "container (VFIO_IOMMU_DIRTY_PAGES)" / "IOMMU (HWPT)"
    dirty_why: str = ""
    probes: dict[str, int] = field(default_factory=dict)
    ramblocks: list[tuple[str, bool, bool]] = field(default_factory=list)  # idstr, fd, shared
    live_update: LiveUpdate | None = None
    blockers: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, message, source)
    failures: list[tuple[str, str, str]] = field(default_factory=list)   # ... once migrating
    needs: list[str] = field(default_factory=list)
    group: int = 0                        # the device's IOMMU group (/dev/vfio/N)

    @property
    def starts(self) -> bool:
        return not (self.rejected or self.kernel_error or self.realize_error)

    @property
    def outcome(self) -> str:
        from vmm_model.compare import run_outcome
        return run_outcome(self.rejected, self.kernel_error, self.realize_error, self.aborted)


def _kind(ev) -> str:
    if ev.kind != "map":
        return "skip"
    return "file" if ev.result and ev.result.ioctl == "IOMMU_IOAS_MAP_FILE" else "va"


_UNMAPS = {"region_del": ("region_add", "rdm"), "rdm": ("rdm",), "iommu": ("iommu",)}


def _record_sections(run: SideRun, container) -> None:
    """The mappings in place once the listener is done: later unmaps (region_del
    at machine reset, vIOMMU UNMAP) remove what they cover."""
    sections, made = run.sections, {}
    last = x = None
    for ev in container.events:
        kind, s, res = ev.kind, ev.section, ev.result
        if kind == "unmap":
            if res is not None and res.ret == 0:
                paths, lo, end = _UNMAPS.get(ev.path, ()), ev.iova, ev.iova + ev.size
                for key in [k for k in sections if k[1] <= end and lo <= k[1]
                            and k[1] + k[2] <= end and k[0] in paths]:
                    if sections[key].ret == 0:
                        del sections[key]
            continue
        if kind == "map":
            key = (ev.path, ev.iova, ev.size)
        elif kind == "skip" and s is not None:
            lo = s.offset_within_address_space
            key = (ev.path, lo, s.end - lo)
        else:
            continue
        how = ((id(s), kind, res.ioctl, res.ret, ev.readonly) if res is not None else
               (id(s), kind, None, None, ev.readonly))
        if how != last:         # a virtio-mem device's blocks come in a row, alike
            if s is None or s.mr.ram_block is None:
                continue
            last, x = how, made.get(how)
            if x is None:
                x = made[how] = _section_run(ev)
        sections[key] = x


def _section_run(ev) -> SectionRun:
    """The SectionRun of a map or skip event (made once per section and answer)."""
    s, res = ev.section, ev.result
    rb, mr = s.mr.ram_block, s.mr
    kind, ret = _kind(ev), res.ret if res else None
    return SectionRun(
        ramblock=rb.idstr, kind=kind, ioctl=res.ioctl if res else None, readonly=ev.readonly,
        ret=ret, ram_device=mr.ram_device, shared=rb.is_shared(),
        cow=kind == "file" and ret == 0 and not rb.is_shared() and not mr.ram_device,
        seals=tuple(rb.backing.seals), backing=rb.backing.kind,
        delta=s.offset_within_address_space - s.offset_within_region,
        open_flags=rb.backing.open_flags, ram_readonly=bool(rb.flags & RamFlags.RAM_READONLY))


def _probe(sim, run: SideRun) -> None:
    """The capability questions QEMU asks the kernel, asked of the simulated one."""
    from backends import uapi
    host, client = sim.host, sim.client
    if _legacy(run.side.backend):
        for name, ext in (("VFIO_UPDATE_VADDR", uapi.VFIO_UPDATE_VADDR),
                          ("VFIO_UNMAP_ALL", uapi.VFIO_UNMAP_ALL)):
            run.probes[name] = host.ioctl(client.fd, uapi.VFIO_CHECK_EXTENSION, ext)[0]
        # vfio_get_iommu_info_migration() (hw/vfio/container-legacy.c): the MIGRATION cap
        # of VFIO_IOMMU_GET_INFO sets dirty_pages_supported.
        argsz = 4096
        data = uapi.build("vfio_iommu_type1_info", argsz=argsz).ljust(argsz, b"\0")
        ret, out = host.ioctl(client.fd, uapi.VFIO_IOMMU_GET_INFO, data)
        info = uapi.parse("vfio_iommu_type1_info", out)
        caps = uapi.parse_cap_chain(out, info.cap_offset) if not ret else []
        if any(c.id == uapi.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION for c in
               (c.header if "header" in c else c for c in caps)):
            run.dirty_tracking = "container (VFIO_IOMMU_DIRTY_PAGES)"
        else:
            run.dirty_why = "VFIO_IOMMU_GET_INFO has no VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION"
        dev_fd = client.device_fds[0] if client.device_fds else -1
    else:
        (_, dev_fd, devid, _hwpt), = client.devices
        # iommufd_change_process_capable() (backends/iommufd.c, 10.1): the ioctl itself.
        c = uapi.codec("iommu_ioas_change_process")
        run.probes["iommufd fd"], run.probes["device fd"] = client.fd, dev_fd
        run.probes["IOMMU_IOAS_CHANGE_PROCESS"] = host.ioctl(
            client.fd, uapi.IOMMU_IOAS_CHANGE_PROCESS, c.pack(c.size, 0))[0]
        # iommufd_cdev_autodomains_get() (hw/vfio/iommufd.c): a HWPT with DIRTY_TRACKING.
        req = uapi.build("iommu_hwpt_alloc", flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                         dev_id=devid, pt_id=client.ioas_id)
        ret = host.ioctl(client.fd, uapi.IOMMU_HWPT_ALLOC, req)[0]
        run.probes["IOMMU_HWPT_ALLOC(DIRTY_TRACKING)"] = ret
        if ret == 0:
            run.dirty_tracking = "IOMMU (HWPT dirty tracking)"
        else:
            run.dirty_why = f"IOMMU_HWPT_ALLOC(DIRTY_TRACKING) = {errno_name(ret)}"
    if dev_fd >= 0:
        feat = uapi.build("vfio_device_feature", argsz=16,
                          flags=uapi.VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION)
        run.probes["VFIO_DEVICE_FEATURE(MIGRATION)"] = host.ioctl(
            dev_fd, uapi.VFIO_DEVICE_FEATURE, feat.ljust(16, b"\0"))[0]


def _live_update(sim, run: SideRun) -> LiveUpdate:
    """LUO preservation as the (unmerged) series orders it: the RAM memfds first,
    then IOMMU_HWPT_LU_SET_PRESERVE on the HWPT, then the iommufd fd, whose
    iommufd_save_hwpts() checks every area (check_iopt_pages_preserved())."""
    from backends import uapi
    host, client = sim.host, sim.client
    fds = {ev.section.mr.ram_block.fd for ev in sim.container.events
           if ev.kind == "map" and ev.result and ev.result.ret == 0
           and ev.section.mr.ram_block.fd >= 0}
    (_, _, _, hwpt), = client.devices
    c = uapi.codec("iommu_hwpt_lu_set_preserve")
    rc = host.ioctl(client.fd, uapi.IOMMU_HWPT_LU_SET_PRESERVE, c.pack(c.size, hwpt, 1))[0]
    early = host.luo_preserve(client.fd) if rc == 0 and fds else None   # the wrong order
    for fd in sorted(fds):
        host.luo_preserve(fd)
    if rc == 0:
        rc = host.luo_preserve(client.fd)
    lu = LiveUpdate(rc, iommufd_first=early)
    if rc:
        for key, s in sorted(run.sections.items(), key=lambda kv: kv[0][1]):
            if s.kind == "va" and s.ret == 0:
                lu.blocking.append((s.label(key), "mapped by VA (IOPT_ADDRESS_USER): only file "
                                                  "areas are preserved"))
            elif s.kind == "file" and s.ret == 0 and s.backing == "dmabuf":
                lu.blocking.append((s.label(key), "a VFIO dma-buf (BAR) area: only memfd file "
                                                  "areas are preserved"))
            elif s.kind == "file" and s.ret == 0 and not LU_SEALS <= set(s.seals):
                lu.blocking.append((s.label(key), "seals at MAP_FILE time "
                                    f"{'|'.join(s.seals) or 'none'}: needs "
                                    "F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK"))
    else:
        first = next((ev for ev in sim.container.events
                      if ev.kind == "map" and ev.result.ret == 0), None)
        if first is not None:
            lu.after = sim.container.dma_unmap(first.iova, first.size).ret
    return lu


def _simulate_side(sc: Scenario, qemu, run: SideRun, live_update: bool) -> None:
    """``run.side`` realized on its simulated kernel: the sections, the kernel's
    accounting, the probes and (``live_update``) the LUO preservation."""
    from vmm_model.container import realize_error
    from vmm_model.simulate import simulate
    side = run.side
    with simulate(sc, qemu, side.backend, side.kernel) as sim:
        run.device = sim.machine.vfio_devices[0] if sim.machine.vfio_devices else \
            sim.host.vfio_devices[0].name
        run.group = sim.host.vfio_devices[0].group
        run.ramblocks = [(rb.idstr, rb.fd >= 0, rb.is_shared()) for rb in sim.machine.ramblocks
                         if rb.backing.kind not in ("pfnmap", "dmabuf")]
        if sim.error:
            run.kernel_error = sim.error
            return
        _record_sections(run, sim.container)
        run.realize_error = realize_error(sim.machine, sim.container)
        run.aborted = sim.container.aborted
        run.mappings = sum(1 for s in run.sections.values() if s.kind != "skip" and s.ret == 0)
        if _legacy(side.backend) and sim.client.dma_avail is not None:
            run.dma_limit = sim.client.dma_avail
        host = sim.host
        pages = max(host.locked_vm, host.user_locked_vm)
        run.locked_bytes = pages << 12
        run.locked_scope = ("mm->locked_vm" if host.locked_vm >= host.user_locked_vm
                            else "user->locked_vm") if pages else "-"
        _probe(sim, run)
        if live_update and host.profile.iommufd_liveupdate and run.starts:
            if "cdev" in get_backend(side.backend).capabilities:
                run.live_update = _live_update(sim, run)
            else:   # nothing to run: the series has no handler for /dev/vfio/vfio or groups
                run.live_update = LiveUpdate(-errno.EOPNOTSUPP, [("VM", (
                    f"the {side.backend} container cannot be preserved: VFIO live update "
                    "preserves VFIO cdev devices bound to an iommufd only"))])


def run_side(sc: Scenario, side: Side, live_update: bool = False) -> SideRun:
    """Plan and run ``sc`` on ``side``'s simulated kernel, then probe it."""
    from vmm_model.machine import CommandLineRejected, build_machine
    qemu = get_qemu(side.qemu)
    if side.machine != sc.machine.get("type", "q35"):
        sc = dataclasses.replace(sc, machine={**sc.machine, "type": side.machine})
    run = SideRun(side)
    try:      # as make_plan(): refused by this QEMU, or bad input in every version
        build_machine(sc, qemu, backend=side.backend)
    except CommandLineRejected as e:
        run.rejected = e.message
        return run
    except UsageError as e:
        build_machine(sc, get_qemu(sc.qemu or DEFAULT_QEMU))
        run.rejected = f"QEMU {qemu.name} rejects this command line: {e}"
        return run
    # Paused until the simulation is freed: a collection would walk its events and
    # kernel objects (and the source's sections) and find no garbage.
    with gc_paused():
        _simulate_side(sc, qemu, run, live_update)
    if run.kernel_error:
        return run
    run.blockers, run.failures, run.needs = mode_blockers(run, qemu)
    return run


# --- QEMU's migration blockers per mode --------------------------------------------------

SRC_MIGRATION = "hw/vfio/migration.c vfio_migration_realize()"
SRC_CPR_RAM = ("system/physmem.c ram_block_add_cpr_blocker() (\"migration: ram block cpr "
               "blockers\", 10.0; mode CPR_TRANSFER only)")
SRC_CPR_LEGACY = ("hw/vfio/cpr-legacy.c vfio_cpr_supported() (10.1; for cpr-exec too from "
                  "\"vfio: cpr-exec mode\", 10.2)")
SRC_CPR_IOMMUFD = ("hw/vfio/cpr-iommufd.c vfio_cpr_supported() + backends/iommufd.c "
                   "iommufd_change_process_capable() (10.1)")
SRC_CHANGE_PROCESS = ("hw/vfio/cpr-iommufd.c iommufd_cpr_pre_save(): the source QEMU tries "
                      "the ioctl while saving and fails the migration (10.1); "
                      "drivers/iommu/iommufd/ioas.c iommufd_ioas_change_process(): -EINVAL "
                      "when an area is not IOPT_ADDRESS_FILE (a user VA, or a VFIO dma-buf "
                      "BAR from 6.19) (6.13)")
SRC_NO_VFIO_CPR = ("QEMU 10.0 registers no VFIO blocker for cpr-transfer (hw/vfio/migration.c "
                   "vfio_block_migration(): migrate_add_blocker_normal()) and has no VFIO CPR "
                   "code; the new QEMU's vfio-pci realize: drivers/vfio/group.c "
                   "vfio_group_fops_open() -EBUSY (group already open), drivers/vfio/vfio_main.c "
                   "vfio_df_open() -EINVAL (cdev device already open)")


def mode_blockers(run: SideRun, qemu) -> tuple[list[tuple[str, str, str]],
                                               list[tuple[str, str, str]], list[str]]:
    """QEMU's blockers for ``run.side.mode`` (as ``query-migrate`` lists them in
    ``blocked-reasons``) as (kind, message, source); what fails once the move is
    under way although nothing blocked it (same shape); what a successful move
    needs.  ``kind`` identifies a blocker across versions whose wording differs."""
    mode, dev, p = run.side.mode, run.device, run.probes
    legacy = _legacy(run.side.backend)
    out: list[tuple[str, str, str]] = []
    fails: list[tuple[str, str, str]] = []
    needs: list[str] = []
    exists = {"normal": True, "cpr-reboot": qemu.cpr_reboot, "cpr-transfer": qemu.cpr_transfer,
              "cpr-exec": qemu.cpr_exec}[mode]
    if not exists:
        return [("no-mode", f"Parameter 'mode' does not accept value '{mode}' (QEMU {qemu.name} has no "
                 f"migration mode {mode})", "qapi/migration.json MigMode")], [], []
    if not run.starts:
        return [], [], []
    no_mig = (f"{dev}: VFIO migration init failed: migration is not supported in kernel: "
              "Inappropriate ioctl for device" if qemu.vfio_migration_init_errp else
              f"{dev}: VFIO migration is not supported in kernel" if qemu.vfio_migration_v2
              else "VFIO device doesn't support migration")
    vfio_mig = p.get("VFIO_DEVICE_FEATURE(MIGRATION)", 0)
    if mode == "normal" or (mode == "cpr-reboot" and not qemu.vfio_cpr_reboot):
        if vfio_mig:
            out.append(("vfio-migration", no_mig, SRC_MIGRATION + (" (VFIO_DEVICE_FEATURE_MIGRATION = "
                                                 f"{errno_name(vfio_mig)})")))
        needs.append("a device whose driver implements VFIO migration "
                     "(VFIO_DEVICE_FEATURE_MIGRATION) and device or IOMMU dirty tracking")
    if mode == "cpr-reboot" and qemu.vfio_cpr_reboot:
        needs.append("the guest suspended first (guest-suspend-ram): otherwise \"VFIO device "
                     "only supports cpr-reboot for runstate suspended\" (hw/vfio/cpr.c "
                     "vfio_cpr_reboot_notifier())")
    if mode == "cpr-transfer":
        for idstr, has_fd, shared in run.ramblocks:
            if not (has_fd and shared):
                out.append((f"cpr-ram {idstr}", f"Memory region {idstr} is not compatible with CPR. share=on is "
                            "required for memory-backend objects, and aux-ram-share=on is "
                            "required.", SRC_CPR_RAM))
    elif mode == "cpr-exec" and any(not (fd and sh) for _, fd, sh in run.ramblocks):
        needs.append("share=on and aux-ram-share=on although QEMU registers no cpr-exec "
                     "blocker for it: private RAM is not preserved across exec "
                     "(docs/devel/migration/CPR.rst)")
    if mode in ("cpr-transfer", "cpr-exec") and not qemu.vfio_cpr_transfer:
        # No VFIO CPR code: nothing blocks the move, nothing hands the device's fds
        # over, so the new QEMU's vfio-pci realize opens them while the old one holds them.
        fails.append(("vfio-cpr", f"vfio {dev}: Could not open '/dev/vfio/{run.group}': Device or "
                      "resource busy" if legacy else
                      f"vfio {dev}: error bind device fd={p.get('device fd', -1)} to "
                      f"iommufd={p.get('iommufd fd', -1)}: Invalid argument", SRC_NO_VFIO_CPR))
        needs.append("QEMU 10.1 or later on both sides for a VFIO device (hw/vfio/cpr-legacy.c, "
                     "cpr-iommufd.c: the device and container fds handed to the new QEMU)")
    elif mode in ("cpr-transfer", "cpr-exec"):
        if legacy:
            if p.get("VFIO_UPDATE_VADDR", 1) <= 0:
                out.append(("cpr-legacy", "VFIO container does not support VFIO_UPDATE_VADDR", SRC_CPR_LEGACY))
            elif p.get("VFIO_UNMAP_ALL", 1) <= 0:
                out.append(("cpr-legacy", "VFIO container does not support VFIO_UNMAP_ALL", SRC_CPR_LEGACY))
        else:
            cp = p.get("IOMMU_IOAS_CHANGE_PROCESS", 0)
            if cp == -errno.ENOTTY:
                out.append(("cpr-iommufd", "vfio iommufd backend does not support "
                            "IOMMU_IOAS_CHANGE_PROCESS",
                            SRC_CPR_IOMMUFD))
            elif cp:
                fails.append(("change-process", "some memory regions do not support "
                              "IOMMU_IOAS_CHANGE_PROCESS", SRC_CHANGE_PROCESS))
        needs.append("the same backend, kernel and mapping kind for every section: the new "
                     "QEMU inherits the container/IOAS and does not remap")
        if not legacy:
            needs.append("a kernel with IOMMU_IOAS_CHANGE_PROCESS (6.13+) and every section "
                         "mapped by file")
        needs.append("KVM (accel=kvm): the vfio-pci CPR notifier moves the INTx/MSI irqfds with "
                     "kvm_irqchip_remove_irqfd_notifier_gsi() (hw/vfio/cpr.c "
                     "vfio_cpr_set_msi_virq()); under TCG the source QEMU dies (SIGSEGV)")
    return out, fails, needs


# --- findings and the rule registry ---------------------------------------------------------

@dataclass
class Finding:
    code: str
    verdict: str
    section: str               # "ram0 [0x0, 0xa0000)" or "VM" or "mode cpr-transfer"
    before: str
    after: str
    why: str
    source: str

    def with_source(self, source: str) -> "Finding":
        return dataclasses.replace(self, source=source)

    def __str__(self) -> str:
        return (f"{self.verdict.upper():7} [{self.code}] {self.section}: {self.before} -> "
                f"{self.after}\n        {self.why}")


@dataclass(frozen=True)
class Rule:
    code: str
    verdict: str
    why: str
    source: str


def _rules(*rows) -> dict[str, Rule]:
    return {r[0]: Rule(*r) for r in rows}


SRC_POLICY = ("hw/vfio/container.c vfio_container_dma_map(): MAP_FILE when the RAMBlock has "
              "an fd (fb32965b6dd8, 10.1); only for shared or ram_device RAM from 11.0.2 and "
              "11.1 (\"vfio/container: Restrict dma_map_file() to shared RAM or RAM devices\")")
RULES = _rules(
    ("rejected", "breaks", "the destination QEMU refuses this command line (an object, "
     "property or backend it does not have): the VM does not start",
     "QEMU's option parsing at the release that added it (vfio-emu versions lists them)"),
    ("backend-unavailable", "breaks", "the IOMMU backend cannot be set up on the destination "
     "kernel", "backends/type1.py, backends/iommufd.py setup ioctls on the simulated kernel"),
    ("attach-fails", "breaks", "the destination kernel refuses to attach the device to the "
     "IOMMU domain (page sizes, aperture or reserved regions do not fit): the VM does not "
     "start", "drivers/iommu/iommufd/device.c iommufd_device_attach() -> "
     "io_pagetable.c iopt_table_add_domain() (-EINVAL: minimum IOMMU page above PAGE_SIZE) / "
     "iopt_table_enforce_dev_resv_regions() (-EADDRINUSE); drivers/vfio/vfio_iommu_type1.c "
     "vfio_iommu_type1_attach_group()"),
    ("realize-fails", "breaks", "vfio-pci realize fails: the VM does not start",
     "hw/vfio/listener.c vfio_listener_region_add() (init-time map failure is fatal)"),
    ("realize-works", "safe", "the VM starts now where it failed before",
     "hw/vfio/listener.c vfio_listener_region_add()"),
    ("iommufd-cpr-register-fails", "breaks", "QEMU 10.2.0 fails the iommufd connect on a "
     "kernel without IOMMU_IOAS_CHANGE_PROCESS (before 6.13)", "hw/vfio/cpr-iommufd.c "
     "vfio_iommufd_cpr_register_iommufd() (3ca0a0ab05c, 10.2.0; fixed by 0e387bd1df, 11.0)"),
    ("aborts", "breaks", "QEMU aborts at runtime (hw_error) when a later map fails",
     "hw/vfio/listener.c vfio_listener_region_add() runtime failure"),
    ("section-fails", "breaks", "a section that was mapped fails now: the device loses it",
     "the kernel's map ioctl on the destination profile"),
    ("bar-pfnmap-efault", "breaks", "a BAR (VM_PFNMAP) mapped by VA is refused with EFAULT: "
     "peer-to-peer DMA to it is lost (QEMU only warns)", "drivers/iommu/iommufd/pages.c "
     "pfn_reader_user_pin() -> mm/gup.c check_vma_flags() VM_IO|VM_PFNMAP -EFAULT (every "
     "version); hw/vfio/listener.c warn_report_once (aaec00422ba6)"),
    ("dma-entry-limit", "breaks", "type1's dma_entry_limit is reached: ENOSPC",
     "drivers/vfio/vfio_iommu_type1.c vfio_dma_do_map(): !iommu->dma_avail -> -ENOSPC "
     "(module parameter dma_entry_limit, default U16_MAX)"),
    ("section-works", "safe", "a section that failed is mapped now",
     "the kernel's map ioctl on the destination profile"),
    ("errno-changes", "changes", "the section still fails, with another errno",
     "the kernel's map ioctl on each profile"),
    ("map-va-to-file", "changes", "mapped by file now: the kernel pins the file's pages by "
     "offset instead of walking the process's page tables", SRC_POLICY),
    ("map-file-to-va", "changes", "mapped by VA now: the kernel pins the process's pages "
     "(pin_user_pages), not the file's page cache", SRC_POLICY),
    ("readonly-changes", "changes", "the IOMMU permission of the section changes",
     "hw/vfio/listener.c vfio_listener_region_add(): section->readonly"),
    ("cow-divergence-appears", "breaks", "private (MAP_PRIVATE) file RAM mapped by file: the "
     "device reads and writes the file's pages while the guest runs on its copy-on-write "
     "copies", SRC_POLICY + "; drivers/iommu/iommufd/io_pagetable.c iopt_map_file_pages() "
     "pins page-cache folios (6.13); kernel bugzilla 220776"),
    ("cow-divergence-gone", "safe", "private file RAM is mapped by VA now: the device sees the "
     "guest's pages", SRC_POLICY),
    ("section-lost", "breaks", "a section that was mapped is not mapped any more: the device "
     "cannot reach it", "hw/vfio/listener.c vfio_listener_skipped_section()"),
    ("section-new", "changes", "a section is mapped now that was not",
     "hw/vfio/listener.c vfio_listener_skipped_section()"),
    ("memlock-changes", "changes", "pinned-memory accounting changes: size RLIMIT_MEMLOCK for "
     "the destination", "drivers/vfio/vfio_iommu_type1.c vfio_lock_acct() (mm->locked_vm); "
     "drivers/iommu/iommufd/pages.c do_update_pinned() (IOPT_PAGES_ACCOUNT_USER: "
     "user->locked_vm, or mm with IOMMU_OPTION_RLIMIT_MODE)"),
    ("dirty-tracking-lost", "changes", "no dirty tracking in the IOMMU backend any more: a "
     "device without its own DMA logging is blocked from migration (enable-migration=auto) or "
     "sends all pages as dirty (=on)", "hw/vfio/migration.c vfio_migration_realize(); "
     "container-legacy.c vfio_get_iommu_info_migration(); hw/vfio/iommufd.c "
     "iommufd_cdev_autodomains_get() (IOMMU_HWPT_ALLOC_DIRTY_TRACKING)"),
    ("dirty-tracking-gained", "safe", "the IOMMU backend tracks dirty pages now",
     "hw/vfio/iommufd.c iommufd_cdev_autodomains_get()"),
    ("migration-blocked", "breaks", "the source QEMU refuses to migrate in this mode "
     "(query-migrate blocked-reasons)", "query-migrate blocked-reasons"),
    ("cpr-fails", "breaks", "nothing blocks the move, but it fails once under way: the new "
     "QEMU cannot take the device or its IOAS over (query-migrate status failed; the source "
     "QEMU keeps running)", "see the finding's source"),
    ("blocker-appears", "changes", "the destination QEMU registers a migration blocker for "
     "this mode: the VM runs, but cannot move on (or back) that way",
     "query-migrate blocked-reasons"),
    ("blocker-gone", "safe", "a migration blocker of the source is gone",
     "query-migrate blocked-reasons"),
    ("machine-change", "breaks", "a migration keeps the machine type: the destination refuses "
     "the stream", "migration/savevm.c configuration_post_load(): \"Machine type received is "
     "'%.*s' and local is '%s'\" (-EINVAL)"),
    ("cpr-host-change", "breaks", "cpr-transfer and cpr-exec hand the container/iommufd fds to "
     "the new QEMU on the same host: backend and kernel cannot change",
     "hw/vfio/cpr-legacy.c, hw/vfio/cpr-iommufd.c (cpr_find_fd)"),
    ("cpr-map-kind-changes", "breaks", "the new QEMU would map this section another way, but "
     "during CPR it keeps the old mapping (no remap): the new policy does not apply",
     "QEMU backends/iommufd.c iommufd_backend_map_file_dma()/iommufd_backend_unmap_dma() "
     "return 0 while cpr_is_incoming() (10.1); "
     "hw/vfio/cpr-legacy.c vfio_legacy_cpr_dma_map() (VFIO_DMA_MAP_FLAG_VADDR only)"),
    ("live-update-blocked", "breaks", "the iommufd cannot be preserved for a kernel live update",
     "iommu live update series v1 (not merged): iommufd_save_hwpts() -> "
     "check_iopt_pages_preserved()"),
    ("live-update-preserved", "changes", "every mapping is preserved; until the new kernel "
     "restores it the IOAS is immutable (map/unmap -> EBUSY)",
     "iommu live update series v1 (not merged): iopt_map_pages()/iopt_unmap_iova_range() "
     "-EBUSY once preserved"),
)


def _f(code: str, section: str, before: str, after: str, why: str = "") -> Finding:
    r = RULES[code]
    return Finding(code, r.verdict, section, before, after, why or r.why, r.source)


def _uncovered(mapped: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of RAMBlock range [lo, hi) that the sorted ``mapped`` ranges of the
    other side do not cover (it may split the block another way, e.g. another
    machine type's layout)."""
    gaps = []
    for a, b in mapped:
        if b <= lo:
            continue
        if a >= hi:
            break
        if a > lo:
            gaps.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        gaps.append((lo, hi))
    return gaps


def _gaps(rb: str, gaps) -> str:
    return "not mapped: " + ", ".join(f"{rb} offsets [0x{a:x}, 0x{b:x})" for a, b in gaps)


def _section_findings(a: SideRun, b: SideRun) -> list[Finding]:
    """Findings per section, in address order.  Sections whose SectionRun is equal
    on both sides give none (the rules below compare nothing else), so only the
    others are sorted and looked at."""
    sa, sb = a.sections, b.sections
    differ = [k for k, s in sa.items() if sb.get(k) != s]
    if len(sa) - sum(1 for k in differ if k not in sb) < len(sb):   # b has sections a lacks
        differ += [k for k in sb if k not in sa]
    mapped: dict[tuple, list[tuple[int, int]]] = {}   # (side, RAMBlock) -> its mapped ranges

    def uncovered(run: SideRun, key: tuple, x: SectionRun) -> list[tuple[int, int]]:
        ranges = mapped.get((id(run), x.ramblock))
        if ranges is None:
            ranges = mapped[id(run), x.ramblock] = sorted(
                y.region(k) for k, y in run.sections.items()
                if y.ramblock == x.ramblock and y.kind != "skip" and y.ret == 0)
        return _uncovered(ranges, *x.region(key))

    out = []
    for key in sorted(differ, key=lambda k: (k[1], k[2], k[0])):
        s, d = sa.get(key), sb.get(key)
        label = (s or d).label(key)
        if s is None or d is None or s.kind == "skip" or d.kind == "skip":
            was = s is not None and s.kind != "skip" and s.ret == 0
            now = d is not None and d.kind != "skip" and d.ret == 0
            if was and not now and (gaps := uncovered(b, key, s)):
                out.append(_f("section-lost", label, s.outcome,
                              d.outcome if d else _gaps(s.ramblock, gaps)))
            elif now and not was and (gaps := uncovered(a, key, d)):
                out.append(_f("section-new", label, s.outcome if s else _gaps(d.ramblock, gaps),
                              d.outcome))
            continue
        if s.ret == 0 and d.ret not in (0, None):
            code = ("bar-pfnmap-efault" if d.ram_device and d.ret == -errno.EFAULT
                    and d.kind == "va" else
                    "dma-entry-limit" if d.ret == -errno.ENOSPC else "section-fails")
            out.append(_f(code, label, s.outcome, d.outcome))
            continue
        if s.ret not in (0, None) and d.ret == 0:
            out.append(_f("section-works", label, s.outcome, d.outcome))
            continue
        if s.ret not in (0, None):
            if s.ret != d.ret:
                out.append(_f("errno-changes", label, s.outcome, d.outcome))
            continue
        if d.cow and not s.cow:
            out.append(_f("cow-divergence-appears", label, s.outcome, d.outcome,
                          f"{d.ramblock} is private (MAP_PRIVATE) file RAM mapped by file: "
                          + RULES["cow-divergence-appears"].why.split(": ", 1)[1]))
        elif s.cow and not d.cow:
            out.append(_f("cow-divergence-gone", label, s.outcome, d.outcome))
        elif s.kind != d.kind:
            out.append(_f(f"map-{s.kind}-to-{d.kind}", label, s.outcome, d.outcome))
        if s.readonly != d.readonly:
            out.append(_f("readonly-changes", label, s.outcome, d.outcome))
    return out


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"


_ATTACH_CALLS = ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "VFIO_DEVICE_BIND_IOMMUFD",
                 "VFIO_GROUP_SET_CONTAINER", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD")
_KIND_CODES = {"map-va-to-file", "map-file-to-va", "cow-divergence-appears", "cow-divergence-gone"}


IOMMUFD_NO_CPR_STATE = ("ERROR:hw/vfio/cpr-iommufd.c:220:vfio_cpr_load_device: assertion "
                        "failed: (ret)")
SRC_NO_CPR_STATE = ("hw/vfio/cpr-iommufd.c vfio_cpr_load_device(): g_assert(vfio_cpr_find_device()) "
                    "in the new QEMU (10.1+) when the old one (10.0) saved no VFIO devices in "
                    "its CPR state: QEMU aborts (line as QEMU 11.1.3 prints it)")


def _failures(a: SideRun, b: SideRun) -> list[tuple[str, str, str]]:
    """What fails once the move ``a`` -> ``b`` is under way.  The source QEMU's own
    (its IOMMU_IOAS_CHANGE_PROCESS at save); a destination without VFIO CPR opens
    the device itself (b's vfio-cpr); a destination with it, after a source
    without it, finds no device in the CPR state: a group is then opened (EBUSY),
    an iommufd device is an assertion failure."""
    out = [f for f in a.failures if f[0] != "vfio-cpr"]
    dst = [f for f in b.failures if f[0] == "vfio-cpr"]
    src = [f for f in a.failures if f[0] == "vfio-cpr"]
    if dst:
        out += dst
    elif src and not _legacy(b.side.backend):
        out.append(("vfio-cpr", IOMMUFD_NO_CPR_STATE, SRC_NO_CPR_STATE))
    else:
        out += src
    return out


def compare_runs(a: SideRun, b: SideRun, migrating: bool = False) -> list[Finding]:
    """Every finding of the move ``a`` -> ``b``.  ``migrating``: the move is a
    migration in ``b.side.mode`` (asked for explicitly), so the source QEMU's
    blockers for that mode stop it; otherwise the VM is restarted on the
    destination and only blockers that appear or go away are findings."""
    out: list[Finding] = []
    if b.rejected:
        return [_f("rejected", "VM", a.outcome, b.outcome)]
    if b.kernel_error:
        attach = any(call in b.kernel_error for call in _ATTACH_CALLS)
        return [_f("attach-fails" if attach else "backend-unavailable", "VM", a.outcome,
                   b.outcome)]
    if not b.starts:         # does not start there, whatever it did on the source
        code = ("iommufd-cpr-register-fails" if "iommufd_backend_connect" in b.realize_error
                else "realize-fails")
        out.append(_f(code, "VM", a.outcome, b.outcome))
    elif not a.starts:
        out.append(_f("realize-works", "VM", a.outcome, b.outcome))
    if b.aborted and not a.aborted:
        out.append(_f("aborts", "VM", a.outcome, b.outcome))
    mode = b.side.mode
    tag = f"mode {mode}"
    cpr = migrating and mode in ("cpr-transfer", "cpr-exec") and a.side.mode == mode
    same_host = (a.side.backend, a.side.kernel) == (b.side.backend, b.side.kernel)
    if a.starts and b.starts:
        sections = _section_findings(a, b)
        if cpr and same_host:   # the new QEMU inherits the mappings: its policy does not apply
            sections = [f for f in sections if f.code not in _KIND_CODES]
        out += sections
    elif a.starts:      # the destination does not start: only what fails there
        out += [f for f in _section_findings(a, b) if RULES[f.code].verdict == "breaks"
                and f.code != "section-lost"]
    if a.starts and b.starts:
        if (a.locked_bytes, a.locked_scope) != (b.locked_bytes, b.locked_scope):
            if b.locked_scope == "user->locked_vm" != a.locked_scope:
                why = ("now charged to user->locked_vm, which every process of the uid shares "
                       "(IOPT_PAGES_ACCOUNT_USER): VMs of one user that each fit RLIMIT_MEMLOCK "
                       "under type1 can fail ENOMEM together unless the VMM sets "
                       "IOMMU_OPTION_RLIMIT_MODE (libvirt does; needs CAP_SYS_RESOURCE)")
            elif a.locked_scope == "user->locked_vm" != b.locked_scope:
                why = ("now charged to the QEMU process (mm->locked_vm) per container: "
                       "RLIMIT_MEMLOCK of that process must cover it")
            else:
                why = (f"RLIMIT_MEMLOCK must allow {b.locked_bytes - a.locked_bytes:+d} bytes "
                       "compared with the source")
            out.append(_f("memlock-changes", "VM", f"{_mib(a.locked_bytes)} {a.locked_scope}",
                          f"{_mib(b.locked_bytes)} {b.locked_scope}", why))
        if a.dirty_tracking and not b.dirty_tracking:
            out.append(_f("dirty-tracking-lost", "VM", a.dirty_tracking, f"none ({b.dirty_why})"))
        elif b.dirty_tracking and not a.dirty_tracking:
            out.append(_f("dirty-tracking-gained", "VM", f"none ({a.dirty_why})", b.dirty_tracking))
    if migrating and a.side.machine != b.side.machine:
        out.append(_f("machine-change", "VM", a.side.machine, b.side.machine))
    if migrating and a.starts:
        for _, msg, src in a.blockers:
            out.append(Finding("migration-blocked", "breaks", tag, "source QEMU", msg,
                               RULES["migration-blocked"].why, src))
    fails = _failures(a, b) if migrating and a.starts and not a.blockers else []
    for _, msg, src in fails:
        out.append(_f("cpr-fails", tag, "migrate", msg).with_source(src))
    if a.starts and b.starts:
        src_kinds = {k for k, _, _ in a.blockers}
        dst_kinds = {k for k, _, _ in b.blockers}
        for kind, msg, src in b.blockers:
            if kind not in src_kinds:
                out.append(_f("blocker-appears", tag, "no such blocker", msg).with_source(src))
        for kind, msg, src in a.blockers:
            if kind not in dst_kinds:
                out.append(_f("blocker-gone", tag, msg, "no such blocker").with_source(src))
    if cpr:
        if not same_host:
            out.append(_f("cpr-host-change", tag, f"{a.side.backend} on {a.side.kernel}",
                          f"{b.side.backend} on {b.side.kernel}"))
        elif not any(k == "vfio-cpr" for k, _, _ in fails):   # nothing is handed over
            for key, s in a.sections.items():
                d = b.sections.get(key)
                if d and s.ret == 0 and d.ret == 0 and s.kind != d.kind:
                    out.append(_f("cpr-map-kind-changes", s.label(key), s.outcome, d.outcome))
    lu = b.live_update
    if lu is not None:
        if lu.rc:
            by_why: dict[str, list[str]] = {}
            for sec, w in lu.blocking:
                by_why.setdefault(w, []).append(sec)
            why = "; ".join(f"{w}: {', '.join(secs)}" for w, secs in by_why.items()) or RULES[
                "live-update-blocked"].why
            out.append(_f("live-update-blocked", "live update", "-",
                          f"preserve = {errno_name(lu.rc)}", why))
        else:
            why = RULES["live-update-preserved"].why
            if lu.iommufd_first:
                why += (f"; the memfds must be preserved first (the iommufd before them: "
                        f"{errno_name(lu.iommufd_first)})")
            out.append(_f("live-update-preserved", "live update", "-",
                          f"preserved; QEMU's next unmap = {errno_name(lu.after)}", why))
    return out


# --- the result ------------------------------------------------------------------------------

def _collapse(findings: list[Finding]) -> list[Finding]:
    """Consecutive findings of one rule over one RAMBlock with the same before and
    after (virtio-mem blocks, split RAM) as one line: "vmem0 [first, last) (N sections)"."""
    runs: list[list[Finding]] = []
    for f in findings:
        name, sep, _ = f.section.rpartition(" [")
        prev = runs[-1][-1] if runs else None
        if sep and prev and (prev.code, prev.section.rpartition(" [")[0], prev.before,
                             prev.after) == (f.code, name, f.before, f.after):
            runs[-1].append(f)
        else:
            runs.append([f])
    out = []
    for run in runs:
        f = run[0]
        if len(run) > 1:
            name, _, first = f.section.rpartition(" [")
            last = run[-1].section.rpartition(", ")[2]
            f = dataclasses.replace(f, section=f"{name} [{first.split(',')[0]}, {last} "
                                               f"({len(run)} sections)")
        out.append(f)
    return out


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="safe")


def section_json(key: tuple, x: SectionRun) -> dict:
    """One section of a side in ``MigrationCheck.to_json()``."""
    return {"section": x.label(key), "ramblock": x.ramblock, "kind": x.kind, "ioctl": x.ioctl,
            "readonly": x.readonly, "ret": x.ret, "errno": errno_name(x.ret) if x.ret else None,
            "cow": x.cow, "iova": key[1], "size": key[2], "offset": key[1] - x.delta,
            "backing": x.backing, "open_flags": x.open_flags, "shared": x.shared,
            "ram_readonly": x.ram_readonly, "seals": list(x.seals)}


@dataclass
class SectionsJSON:
    """A side's ``"sections"`` left for the writer: ``json.dumps(indent=1)`` is
    Python code (~100 us a section), so each section is one ``%`` of a template
    made once per SectionRun."""

    run: SideRun

    def items(self, indent: int) -> Iterator[str]:
        """Each section as ``json.dumps(section_json(...), indent=1)`` writes it,
        every line indented by ``indent`` spaces."""
        templates: dict[SectionRun, str] = {}
        for key, x in self.run.sections.items():
            t = templates.get(x)
            if t is None:
                t = templates[x] = _template(x, indent)
            lo = key[1]
            yield t % (lo, lo + key[2], lo, key[2], lo - x.delta)


def _template(x: SectionRun, indent: int) -> str:
    """section_json() of ``x`` with ``%`` holes for what differs per section: the
    label's start and end, iova, size, offset (in that order).  A hole replaces
    the text ``"name": "\\u0000"``: in JSON, only that key with that value."""
    d = {**section_json(("", 0, 0), x), "section": "\0", "iova": "\0", "size": "\0",
         "offset": "\0"}
    pad = " " * indent
    text = pad + json.dumps(d, indent=1).replace("%", "%%").replace("\n", "\n" + pad)
    label = json.dumps(x.ramblock)[:-1].replace("%", "%%") + ' [0x%x, 0x%x)"'
    for name, hole in (("section", label), ("iova", "%d"), ("size", "%d"), ("offset", "%d")):
        text = text.replace(f'"{name}": "\\u0000"', f'"{name}": {hole}')
    return text


@dataclass
class MigrationCheck:
    """The answer for one VM: ``verdict``, ``findings``, both sides' runs."""

    scenario: str
    source: SideRun
    destination: SideRun
    findings: list[Finding]

    @property
    def verdict(self) -> str:
        return worst(f.verdict for f in self.findings)

    def by_verdict(self, verdict: str) -> list[Finding]:
        return [f for f in self.findings if f.verdict == verdict]

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def expect(self, worst_allowed: str = "safe") -> "MigrationCheck":
        """Raise AssertionError (with the whole report) when the verdict is worse
        than ``worst_allowed`` (safe < changes < breaks); return self."""
        if worst_allowed not in VERDICTS:
            raise UsageError(f"unknown verdict {worst_allowed!r}", valid=", ".join(VERDICTS))
        if VERDICTS.index(self.verdict) > VERDICTS.index(worst_allowed):
            raise AssertionError(f"migration {self.verdict}, expected at most "
                                 f"{worst_allowed}:\n{self}")
        return self

    def __str__(self) -> str:
        a, b = self.source, self.destination
        lines = [f"== {self.scenario}: {self.verdict.upper()}",
                 f"   from {a.side}: {a.outcome}", f"   to   {b.side}: {b.outcome}"]
        for label, run in (("source", a), ("destination", b)):
            if run.starts:
                lines.append(f"   {label}: {run.mappings} mappings"
                             + (f" of type1's dma_entry_limit {run.dma_limit}"
                                if run.dma_limit is not None else "")
                             + f", memlock {_mib(run.locked_bytes)} ({run.locked_scope}), "
                             f"dirty tracking {run.dirty_tracking or 'none'}")
        same = [m for _, m, _ in a.blockers] == [m for _, m, _ in b.blockers]
        for label, run in (("both sides", a),) if same else (("source", a), ("destination", b)):
            for _, msg, _ in run.blockers:
                lines.append(f"   {label}: {run.side.mode} migration blocked: {msg}")
            for _, msg, _ in run.failures:
                lines.append(f"   {label}: {run.side.mode} migration fails: {msg}")
        for need in b.needs:
            lines.append(f"   the destination needs {need}")
        if not self.findings:
            lines.append("   no differences: safe")
        ordered = sorted(self.findings, key=lambda f: -VERDICTS.index(f.verdict))
        for f in _collapse(ordered):
            lines.append("   " + str(f).replace("\n", "\n   "))
        sources = {f.code: f.source for f in ordered}
        if sources:
            lines.append("   sources:")
            lines += [f"     {code}: {src}" for code, src in sources.items()]
        return "\n".join(lines)

    def to_json(self, lazy: bool = False) -> dict:
        """The JSON document of this check.  ``lazy``: each side's ``"sections"`` is a
        SectionsJSON for vmm_model.migrate_cli.write_json() to stream."""
        def side(r: SideRun) -> dict:
            return {**dataclasses.asdict(r.side), "outcome": r.outcome, "mappings": r.mappings,
                    "dma_entry_limit": r.dma_limit,
                    "memlock_bytes": r.locked_bytes, "memlock_scope": r.locked_scope,
                    "dirty_tracking": r.dirty_tracking, "probes": r.probes,
                    "blockers": [{"kind": k, "message": m, "source": s}
                                 for k, m, s in r.blockers],
                    "failures": [{"kind": k, "message": m, "source": s}
                                 for k, m, s in r.failures],
                    "needs": r.needs,
                    "sections": SectionsJSON(r) if lazy else [
                        section_json(k, x) for k, x in r.sections.items()],
                    "live_update": None if r.live_update is None else {
                        "rc": r.live_update.rc, "errno": errno_name(r.live_update.rc),
                        "blocking": [{"section": s, "why": w} for s, w in r.live_update.blocking],
                        "after": r.live_update.after,
                        "iommufd_first": r.live_update.iommufd_first}}
        return {"scenario": self.scenario, "verdict": self.verdict,
                "from": side(self.source), "to": side(self.destination),
                "findings": [dataclasses.asdict(f) for f in self.findings]}


def migrate_check(sc, source: str | dict = "", destination: str | dict = "",
                  mode: str | None = None) -> MigrationCheck:
    """Run ``sc`` (a Scenario, a gallery name or a .toml/.args path) on both
    sides and compare.  ``source``/``destination``: a ``key=value,...`` string
    or a dict of the keys in SIDE_KEYS; ``mode``: the migration mode for both
    sides (a side's own ``mode`` key wins), which makes the move a migration in
    that mode."""
    if isinstance(sc, (str, os.PathLike)):
        from vmm_model.migrate_cli import load_scenarios
        sc, = load_scenarios(str(sc), None)
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}", where="--mode", valid=", ".join(MODES))
    given_a = parse_side(source, "--from") if isinstance(source, str) else dict(source)
    given_b = parse_side(destination, "--to") if isinstance(destination, str) else dict(destination)
    modes = {m for m in (mode, given_a.get("mode"), given_b.get("mode")) if m}
    if len(modes) > 1:      # migrate-set-parameters mode=...: one mode for the whole move
        raise UsageError(f"one migration mode for both sides, not {', '.join(sorted(modes))}",
                         where="--mode", valid=", ".join(MODES))
    migrating = bool(modes)
    given_a.pop("mode", None)
    given_b.pop("mode", None)
    a = resolve_side(sc, given_a, "--from", next(iter(modes), None))
    b = Side(**{**dataclasses.asdict(a), **given_b})
    ra = run_side(sc, a)
    rb = run_side(sc, b, live_update=True)
    return MigrationCheck(sc.name, ra, rb, compare_runs(ra, rb, migrating))


def blockers_by_version(sc, side: Side) -> list[tuple[str, str, list, list]]:
    """The blockers of ``side.mode`` for this VM in every modelled QEMU version
    (same backend, kernel, machine), and what fails once the move is under way:
    [(version, outcome, blockers, failures)]."""
    out = []
    for name in QEMU_VERSIONS:
        run = run_side(sc, dataclasses.replace(side, qemu=name))
        out.append((name, run.outcome, run.blockers, run.failures))
    return out
