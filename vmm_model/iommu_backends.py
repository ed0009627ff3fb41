"""The IOMMU backends: one registry, one class per backend.

QEMU picks a VFIOIOMMUClass per vfio-pci device (TYPE_VFIO_IOMMU_LEGACY for a
group, TYPE_VFIO_IOMMU_IOMMUFD with ``iommufd=``; hw/vfio/device.c
vfio_device_attach()), each class registered by the file that implements it.
Here each backend is an ``IOMMUBackend`` subclass, registered with
``@register`` in the module of the QEMU file it mirrors
(vmm_model/container_legacy.py, vmm_model/iommufd.py); ``_BUILTIN`` names those
modules.  Everything that needs to know the backends asks this module: the
CLI, the scenario loader, the pytest plugin, planning and simulation.

A backend says:

  ``name``, ``aliases``   what ``--backend``, scenarios and ``--vfio-backend`` accept
  ``in_all``              planned by ``--backend all``
  ``capabilities``        a subset of ``CAPABILITIES`` (what QEMU and a kernel recent
                          enough can do with it; versions are the QEMU records' and
                          kernel profiles' business)
  ``plan_client()``       QEMU's container hooks, planned only: the exact
                          requests, not sent (``ret is None``)
  ``open_client(host, dev)``  the real client (backends/type1.py, backends/iommufd.py)
                          with ``dev`` attached, on a LinuxHost or a SimHost
  ``iommufd_object``      the device reaches the kernel through an ``-object iommufd``
                          (iommufd_backend_connect(), backends/iommufd.c), so that
                          object's own failures apply
  ``cpr_unmap_vaddr_all`` what the outgoing QEMU does to the container before a CPR
                          transfer (None: nothing the incoming one must redo)

Adding a backend: one module defining the class with ``@register``, listed in
``_BUILTIN`` (or imported by whoever uses it, e.g. a test), plus its tests.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from backends.base import VFIOIOMMUClass
from backends.errors import UsageError

#: What a backend may declare it can do.
CAPABILITIES = {
    "map_file": "maps a RAMBlock by fd + offset (IOMMU_IOAS_MAP_FILE, QEMU 10.1+, kernel 6.13+)",
    "cdev": "attaches the device through its VFIO cdev (/dev/vfio/devices/vfioN, kernel 6.6+)",
    "dirty_tracking": "reads dirty pages for migration (VFIO_IOMMU_DIRTY_PAGES or "
                      "IOMMU_HWPT_GET_DIRTY_BITMAP)",
    "live_update": "keeps DMA mappings across a CPR transfer (hw/vfio/cpr-legacy.c, "
                   "cpr-iommufd.c, QEMU 10.1+)",
}

_BUILTIN = ("vmm_model.container_legacy", "vmm_model.iommufd")
_REGISTRY: dict[str, IOMMUBackend] = {}
_ALIASES: dict[str, str] = {}


class VfioDeviceAddress(Protocol):
    """Where a vfio-pci device is: its IOMMU group (number or /dev/vfio path),
    its name for VFIO_GROUP_GET_DEVICE_FD, and N of /dev/vfio/devices/vfioN."""

    group: int | str
    name: str
    cdev: int


class IOMMUBackend:
    name = "abstract"
    aliases: tuple[str, ...] = ()
    in_all = True
    capabilities: frozenset[str] = frozenset()
    description = ""
    iommufd_object = False
    cpr_unmap_vaddr_all = None

    def plan_client(self) -> VFIOIOMMUClass:
        raise NotImplementedError

    def open_client(self, host, dev: VfioDeviceAddress):
        raise NotImplementedError


def register(cls: type[IOMMUBackend]) -> type[IOMMUBackend]:
    """Class decorator: make ``cls`` known under its name and aliases."""
    unknown = set(cls.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"backend {cls.name}: unknown capabilities {sorted(unknown)}")
    for key in (cls.name, *cls.aliases):
        owner = _ALIASES.get(key)
        if owner is not None and owner != cls.name:
            raise ValueError(f"backend name {key!r} is already {owner!r}'s")
    _REGISTRY[cls.name] = cls()
    _ALIASES.update({key: cls.name for key in (cls.name, *cls.aliases)})
    return cls


def unregister(name: str) -> None:
    """Forget a backend (for tests that register their own)."""
    b = _REGISTRY.pop(name)
    for key in (b.name, *b.aliases):
        _ALIASES.pop(key, None)


def _load() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def backend_names(in_all: bool = False) -> tuple[str, ...]:
    """The registered backends' names, those ``--backend all`` plans first (only
    those, with ``in_all``)."""
    _load()
    return (tuple(n for n, b in _REGISTRY.items() if b.in_all)
            + (() if in_all else tuple(n for n, b in _REGISTRY.items() if not b.in_all)))


def get_backend(name: str, where: str = "--backend", also: tuple[str, ...] = ()) -> IOMMUBackend:
    """The backend called ``name`` (or one of its aliases); bad input otherwise
    (``also``: other words the caller accepts there, for the message)."""
    _load()
    key = _ALIASES.get(name)
    if key is None:
        raise UsageError(f"unknown backend {name!r}", where=where,
                         valid=", ".join((*backend_names(), *also)))
    return _REGISTRY[key]


def open_attached(client, attach, *args):
    """Run ``attach(*args)`` on a freshly set-up ``client``; close it if that fails."""
    try:
        attach(*args)
    except BaseException:
        client.close()
        raise
    return client
