"""vfio-emu: QEMU's VFIO DMA-mapping decisions over type1, iommufd and a
simulated Linux kernel, as a library for VMM test suites.

The names below are the public API; they are stable across minor releases.
Every other module (``vmm_model.*``, ``backends.*``) is internal and may move.
Names are imported on first use, so ``import vmm_model`` stays cheap (the
pytest plugin loads it at start-up).

Loading:     `load_scenario`, `load_command_line`, `Scenario`
Planning:    `plan_scenario`, `Plan`, `PlanSection`,
             `PlanDiff`, `Event`
Comparing:   `compare_scenario`, `Comparison`
Migrating:   `migrate_check`, `MigrationCheck`, `Finding` (docs/migrate.md)
Simulating:  `simulate_scenario`, `Simulation`, `SimHost`,
             `SimVfioDevice`, `dma_read`, `dma_write`
Versions:    `qemu_version`, `QemuVersion`, `QEMU_VERSIONS`,
             `get_profile`, `list_profiles`, `KernelProfile`
Policies:    `Policy`, `register_policy`, `get_policy`,
             `vfio_container_dma_map_va`, `vfio_container_dma_map_fd`,
             `vfio_container_dma_map_shared`,
             `vfio_container_can_dma_map_file`, and what a policy sees:
             `VFIOIOMMUClass`, `MemoryRegion`, `RAMBlock`,
             `DmaResult`, `DmaRequest`
Errors:      `VfioEmuError` (root), `UsageError`,
             `HostError`, `PolicyError`, `QemuError`
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from vmm_model import _imports

_imports.install()


def _version() -> str:
    """The installed distribution's version (read on first use of ``__version__``:
    importlib.metadata costs more than Python's own start-up)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vfio-emu")
    except PackageNotFoundError:        # a checkout that was never installed
        return "0+unknown"


if TYPE_CHECKING:
    __version__: str

_EXPORTS = {
    "vmm_model.api": ("load_scenario", "load_command_line", "plan_scenario", "backend_name",
                      "compare_scenario", "simulate_scenario", "qemu_version",
                      "Comparison", "ScenarioLike", "PolicyLike"),
    "vmm_model.scenario": ("Scenario",),
    "vmm_model.plan": ("Plan",),
    "vmm_model.plan_view": ("PlanSection", "PlanDiff", "SectionDiff"),
    "vmm_model.container": ("Event",),
    "vmm_model.simulate": ("Simulation",),
    "vmm_model.migration": ("migrate_check", "MigrationCheck", "Finding"),
    "vmm_model.qemu_versions": ("QemuVersion", "QEMU_VERSIONS"),
    "vmm_model.policy": ("Policy", "POLICIES", "register_policy", "get_policy",
                         "vfio_container_dma_map_va", "vfio_container_dma_map_fd",
                         "vfio_container_dma_map_shared", "vfio_container_can_dma_map_file"),
    "vmm_model.policy_check": ("PolicyError",),
    "vmm_model.memory": ("MemoryRegion", "RAMBlock"),
    "vmm_model.qemu.errors": ("QemuError",),
    "backends.base": ("VFIOIOMMUClass", "DmaResult", "DmaRequest"),
    "backends.errors": ("VfioEmuError", "UsageError", "HostError"),
    "backends.simulated": ("SimHost",),
    "backends.simulated.iommu": ("SimVfioDevice",),
    "backends.simulated.dma": ("dma_read", "dma_write"),
    "backends.kernel_profiles": ("KernelProfile", "get_profile", "list_profiles"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'vmm_model' has no attribute {name!r}")
    _imports.check()
    value = getattr(import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from backends.base import DmaRequest, DmaResult, VFIOIOMMUClass
    from backends.errors import HostError, UsageError, VfioEmuError
    from backends.simulated import SimHost
    from backends.simulated.dma import dma_read, dma_write
    from backends.simulated.iommu import SimVfioDevice
    from backends.kernel_profiles import KernelProfile, get_profile, list_profiles
    from vmm_model.api import (Comparison, PolicyLike, ScenarioLike, backend_name,
                               compare_scenario, load_command_line, load_scenario, plan_scenario, qemu_version,
                               simulate_scenario)
    from vmm_model.container import Event
    from vmm_model.memory import MemoryRegion, RAMBlock
    from vmm_model.migration import Finding, MigrationCheck, migrate_check
    from vmm_model.plan import Plan
    from vmm_model.plan_view import PlanDiff, PlanSection, SectionDiff
    from vmm_model.policy import (POLICIES, Policy, get_policy, register_policy,
                                  vfio_container_can_dma_map_file, vfio_container_dma_map_fd,
                                  vfio_container_dma_map_shared, vfio_container_dma_map_va)
    from vmm_model.policy_check import PolicyError
    from vmm_model.qemu.errors import QemuError
    from vmm_model.qemu_versions import QEMU_VERSIONS, QemuVersion
    from vmm_model.scenario import Scenario
    from vmm_model.simulate import Simulation
