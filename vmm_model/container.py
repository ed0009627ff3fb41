"""VFIOContainer: a QEMU version's policy over one backend, replaying a machine's
flat view through the VFIO listener (hw/vfio/container.c, listener.c).

Every listener decision is recorded as an ``Event`` so a plan can show, per
section, what was mapped, skipped, warned about, or failed — and what QEMU
itself would have printed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from operator import attrgetter

from backends.base import DmaResult, VFIOIOMMUClass
from backends.errors import UsageError, VfioEmuError
from vmm_model.gc_pause import gc_paused
from vmm_model.machine import Machine
from vmm_model.memory import MemoryRegion, MemoryRegionSection
from vmm_model.policy import POLICIES, Policy
from vmm_model.qemu_versions import QemuVersion


@dataclass(slots=True)
class Event:
    """One listener outcome (slots: a 1 TiB virtio-mem guest keeps half a million).

    kind: "map" (a dma_map/dma_map_file call), "unmap", "skip" (trace only),
    "error" (error_report / stored container error), "warn" (warn_report).
    """

    kind: str
    section: MemoryRegionSection | None
    path: str = "region_add"         # region_add | iommu | rdm | region_del
    iova: int = 0
    size: int = 0
    vaddr: int = 0
    readonly: bool = False
    result: DmaResult | None = None
    message: str = ""
    fatal: bool = False              # realize fails (init) or hw_error abort (runtime)
    phase: str = "realize"           # realize | reset | firmware (PCI BARs) | hotplug


@dataclass
class VFIOContainer:
    """QEMU's VFIOContainer: ``vfio_container_dma_map`` = the version's policy
    (or a user policy) applied to ``backend``'s hooks."""

    backend: VFIOIOMMUClass
    qemu: QemuVersion
    policy_name: str = ""
    policy: Policy | None = None
    initialized: bool = False
    error: str | None = None          # bcontainer->error: first init-time error
    connect_error: str | None = None  # the device could not attach (before any listener)
    aborted: str | None = None        # hw_error() message at runtime
    events: list[Event] = field(default_factory=list)
    warned_once: set = field(default_factory=set)
    ptr: int = 0x55D0C0A0B000         # %p of bcontainer in QEMU's messages
    dma_max_mappings: int = 0         # 0: the backend's (legacy 65535; iommufd 0, no limit)

    def __post_init__(self):
        if self.policy is None:
            self.policy_name = self.policy_name or self.qemu.policy
            self.policy = POLICIES[self.policy_name]
        if not self.dma_max_mappings:
            self.dma_max_mappings = self.backend.dma_max_mappings

    def dma_map(self, iova: int, size: int, vaddr: int, readonly: bool,
                mr: MemoryRegion) -> DmaResult:
        """``vfio_container_dma_map()``.  A user policy that raises or returns
        something else than a DmaResult is bad input naming the policy."""
        try:
            res = self.policy(self.backend, iova, size, vaddr, readonly, mr)
        except VfioEmuError:
            raise
        except Exception as e:
            raise UsageError(f"the policy raised {type(e).__name__}: {e}",
                             where=f"policy {self.policy_name}",
                             valid="policy(bcontainer, iova, size, vaddr, readonly, mr) "
                                   "returning bcontainer.dma_map(...) or dma_map_file(...)"
                             ) from e
        if not isinstance(res, DmaResult):
            raise UsageError(f"the policy returned {type(res).__name__}, not a DmaResult",
                             where=f"policy {self.policy_name}",
                             valid="the result of bcontainer.dma_map(...) or "
                                   "bcontainer.dma_map_file(...)")
        return res

    def region_mapper(self, mr: MemoryRegion, readonly: bool):
        """``map(iova, size, vaddr)``: vfio_container_dma_map() for every block of
        one region (policy.region_mapper(): decided once under a built-in policy;
        a user policy is asked per block, through dma_map())."""
        from vmm_model.policy import region_mapper
        m = region_mapper(self.policy, self.backend, mr, readonly)
        if m is None:
            dma_map = self.dma_map
            return lambda iova, size, vaddr: dma_map(iova, size, vaddr, readonly, mr)
        return m

    def dma_unmap(self, iova: int, size: int, unmap_all: bool = False) -> DmaResult:
        """``vfio_container_dma_unmap()``."""
        return self.backend.dma_unmap(iova, size, unmap_all)

    def map_error(self, iova: int, size: int, vaddr: int, ret: int) -> str:
        """QEMU's message: "vfio_container_dma_map(%p, 0x%iova, 0x%size, %p) = %d (%s)"
        (hw/vfio/listener.c; "vfio_dma_map" up to 8.2)."""
        from backends.base import strerror
        return (f"{self.qemu.dma_map_name}(0x{self.ptr:x}, 0x{iova:x}, 0x{size:x}, "
                f"0x{vaddr:x}) = {ret} ({strerror(ret)})")


def attach(machine: Machine, container: VFIOContainer) -> VFIOContainer:
    """vfio_listener_register(): replay the flat view at device realize; then (if
    that worked) the first machine reset's flat-view change (region_del, then
    region_add), the PCI BARs firmware maps, and runtime hotplug sections.  Each
    event records its phase.

    The cyclic garbage collector is paused meanwhile (gc_pause.py): a replay
    makes a handful of long-lived objects per section (the event, its result,
    the simulated kernel's area and pages) and frees almost nothing, so each
    collection would walk a growing heap to find no garbage (a sixth of a 1 TiB
    plan's time; docs/performance.md)."""
    with gc_paused():
        return _replay(machine, container)


def _replay(machine: Machine, container: VFIOContainer) -> VFIOContainer:
    from vmm_model.listener import vfio_listener_region_add, vfio_listener_update

    # VFIO's CPR support (10.1): type1 maps VADDR-only (legacy_cpr_vaddr), iommufd
    # skips MAP_FILE and UNMAP (with dma_map_file); before it, ordinary maps.
    from vmm_model.iommu_backends import get_backend
    legacy = not get_backend(container.backend.name).iommufd_object
    q = container.qemu
    cpr = machine.cpr_incoming and (q.legacy_cpr_vaddr if legacy else q.dma_map_file)
    container.backend.cpr_incoming = cpr
    if machine.iommu_pgsizes:
        container.backend.pgsizes = machine.iommu_pgsizes
    # Legacy CPR incoming registers the listener in vfio_container_post_load()
    # (hw/vfio/cpr-legacy.c): after reset and the device state load, so it replays
    # the source's view (BARs included) once, with VADDR-only maps.
    legacy_cpr = cpr and legacy
    sections = machine.final_sections if legacy_cpr else machine.sections
    for section in sections:
        vfio_listener_region_add(container, machine, section)
    if container.error is not None:
        # realize fails: vfio_listener_unregister() -> memory_listener_unregister()
        # -> listener_del_address_space() (system/memory.c, softmmu/ before 8.1)
        # sends region_del for every section in flat-view order, so QEMU unmaps
        # even the range whose map failed (type1 answers 0; iommufd -ENOENT,
        # which iommufd_backend_unmap_dma() takes as success).  Seen in the rig
        # (docs/real-qemu-rig.md).
        from vmm_model.listener import vfio_listener_region_del
        for section in sections:
            vfio_listener_region_del(container, machine, section)
        return container
    container.initialized = True
    n = len(container.events)
    if machine.reset_sections is not None and not legacy_cpr:
        vfio_listener_update(container, machine, machine.sections, machine.reset_sections)
    for ev in container.events[n:]:
        ev.phase = "reset"
    n = len(container.events)
    for section in [] if legacy_cpr else machine.bar_sections:   # firmware maps the BARs
        if container.aborted:
            break
        vfio_listener_region_add(container, machine, section)
    for ev in container.events[n:]:
        ev.phase = "firmware"
    n = len(container.events)
    for section in machine.hotplug_sections:
        if container.aborted:
            break
        vfio_listener_region_add(container, machine, section)
    for ev in container.events[n:]:
        ev.phase = "hotplug"
    return container


def live_mappings(container: VFIOContainer) -> list[Event]:
    """The successful (or planned) map events whose IOVA range is still mapped at
    the end, in IOVA order: a later successful unmap of an intersecting range
    removes one.  Walked backwards with the union of the later unmaps (sorted,
    disjoint), so a plan with many unmaps costs n log n, not maps x unmaps."""
    live: list[Event] = []
    starts: list[int] = []              # the union of the later unmaps: [starts[k], ends[k])
    ends: list[int] = []
    for ev in reversed(container.events):
        kind, r = ev.kind, ev.result
        if r is None or r.ret:
            continue
        if kind == "map":
            if starts:
                lo = ev.iova
                k = bisect_right(starts, lo)
                if k and ends[k - 1] > lo or k < len(starts) and starts[k] < lo + ev.size:
                    continue
            live.append(ev)
        elif kind == "unmap" and ev.size > 0:
            lo, hi = ev.iova, ev.iova + ev.size
            i, j = bisect_left(ends, lo), bisect_right(starts, hi)
            if i < j:
                lo, hi = min(lo, starts[i]), max(hi, ends[j - 1])
            starts[i:j], ends[i:j] = [lo], [hi]
    live.reverse()
    live.sort(key=attrgetter("iova"))
    return live


def realize_error(machine: Machine, container: VFIOContainer) -> str | None:
    """The realize failure QEMU prints when the listener failed at init."""
    dev = machine.vfio_devices[0] if machine.vfio_devices else "vfio-pci"
    if container.connect_error is not None:
        return f"vfio {dev}: {container.connect_error}"
    if container.error is None:
        return None
    return f"vfio {dev}: memory listener initialization failed: {container.error}"


IOMMUFD_CPR_BLOCKER_BUG = (
    "iommufd_backend_connect() fails: vfio_iommufd_cpr_register_iommufd() returns "
    "migrate_add_blocker_modes()'s 0 as false on a kernel without "
    "IOMMU_IOAS_CHANGE_PROCESS, and QEMU prints no reason (hw/vfio/cpr-iommufd.c, "
    "3ca0a0ab05ca in 10.2.0; fixed by 0e387bd1dff4 in 11.0.0)")
