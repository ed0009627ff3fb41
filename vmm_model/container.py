"""VFIOContainer: a QEMU version's policy over one backend, replaying a machine's
flat view through the VFIO listener (hw/vfio/container.c, listener.c).

Every listener decision is recorded as an ``Event`` so a plan can show, per
section, what was mapped, skipped, warned about, or failed — and what QEMU
itself would have printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.base import DmaResult, VFIOIOMMUClass
from backends.errors import UsageError, VfioEmuError
from vmm_model.machine import Machine
from vmm_model.memory import MemoryRegion, MemoryRegionSection
from vmm_model.policy import POLICIES, Policy
from vmm_model.qemu_versions import QemuVersion


@dataclass
class Event:
    """One listener outcome.

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
    aborted: str | None = None        # hw_error() message at runtime
    events: list[Event] = field(default_factory=list)
    warned_once: set = field(default_factory=set)
    ptr: int = 0x55D0C0A0B000         # %p of bcontainer in QEMU's messages
    dma_max_mappings: int = 0         # legacy: DMA_AVAIL (65535); iommufd: 0 (no limit)

    def __post_init__(self):
        if self.policy is None:
            self.policy_name = self.policy_name or self.qemu.policy
            self.policy = POLICIES[self.policy_name]
        if self.backend.name in ("type1", "compat") and not self.dma_max_mappings:
            self.dma_max_mappings = 65535   # VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL default (U16_MAX)

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
    """vfio_listener_register(): replay the flat view at device realize, then
    (if that worked) apply runtime hotplug sections."""
    from vmm_model.listener import vfio_listener_region_add

    container.backend.cpr_incoming = machine.cpr_incoming
    if machine.iommu_pgsizes:
        container.backend.pgsizes = machine.iommu_pgsizes
    for section in machine.sections:
        vfio_listener_region_add(container, machine, section)
    if container.error is None:
        container.initialized = True
        for section in machine.hotplug_sections:
            if container.aborted:
                break
            vfio_listener_region_add(container, machine, section)
    return container


def realize_error(machine: Machine, container: VFIOContainer) -> str | None:
    """The realize failure QEMU prints when the listener failed at init."""
    if container.error is None:
        return None
    dev = machine.vfio_devices[0] if machine.vfio_devices else "vfio-pci"
    return f"vfio {dev}: memory listener initialization failed: {container.error}"
