"""``vfio_container_dma_map()`` as each QEMU version implements it, and user policies.

A policy is a callable with QEMU's signature
``policy(bcontainer, iova, size, vaddr, readonly, mr) -> DmaResult`` that calls
``bcontainer.dma_map(...)`` or ``bcontainer.dma_map_file(...)`` — exactly what
QEMU's function does with ``vioc->dma_map`` / ``vioc->dma_map_file``.
Which version uses which: vmm_model.qemu_versions (rules ``dma_map_file`` and
``dma_map_file_shared_only``) and docs/qemu-versions.md.
"""

from __future__ import annotations

import importlib
from typing import Callable

from backends.base import DmaResult, VFIOIOMMUClass
from backends.errors import UsageError
from vmm_model.memory import MemoryRegion

Policy = Callable[[VFIOIOMMUClass, int, int, int, bool, MemoryRegion], DmaResult]


def vfio_container_dma_map_va(bcontainer: VFIOIOMMUClass, iova: int, size: int,
                              vaddr: int, readonly: bool, mr: MemoryRegion) -> DmaResult:
    """QEMU up to 10.0 (hw/vfio/container-base.c @ v10.0.0; hw/vfio/common.c
    before 9.0): always by VA, ``vioc->dma_map(bcontainer, iova, size, vaddr, readonly)``."""
    return bcontainer.dma_map(iova, size, vaddr, readonly, mr)


def _dma_map_file(bcontainer, iova, size, vaddr, readonly, mr) -> DmaResult:
    """The file branch shared by 10.1+ and 11.0.2+:
    ``start = vaddr - qemu_ram_get_host_addr(rb)``, ``offset = qemu_ram_get_fd_offset(rb)``,
    ``return vioc->dma_map_file(bcontainer, iova, size, mfd, start + offset, readonly)``."""
    rb = mr.ram_block
    start = vaddr - rb.host
    return bcontainer.dma_map_file(iova, size, rb.fd, start + rb.fd_offset, readonly)


def vfio_container_dma_map_fd(bcontainer: VFIOIOMMUClass, iova: int, size: int,
                              vaddr: int, readonly: bool, mr: MemoryRegion) -> DmaResult:
    """QEMU 10.1.0 – 11.0.1 (fb32965b6dd8 "vfio/iommufd: use IOMMU_IOAS_MAP_FILE",
    10.1.0): by file whenever the RAMBlock has an fd and the backend implements
    dma_map_file; its result is returned as is (no fallback to VA)."""
    if _has_fd(bcontainer, mr):
        return _dma_map_file(bcontainer, iova, size, vaddr, readonly, mr)
    return bcontainer.dma_map(iova, size, vaddr, readonly, mr)


def _has_fd(bcontainer: VFIOIOMMUClass, mr: MemoryRegion) -> bool:
    """10.1.0 – 11.0.1's test: ``mfd >= 0 && vioc->dma_map_file``."""
    rb = mr.ram_block
    return rb is not None and rb.fd >= 0 and bcontainer.dma_map_file is not None


def vfio_container_can_dma_map_file(bcontainer: VFIOIOMMUClass, mr: MemoryRegion) -> bool:
    """"vfio/container: Restrict dma_map_file() to shared RAM or RAM devices"
    (Chenyi Qiang, 2026-05, Fixes: fb32965b6dd8; qemu-stable 11.0.2, and 11.1.0):
    the backend has dma_map_file, the RAMBlock has an fd, and it is RAM_SHARED or
    a ram_device.  A private mapping of a file is copy-on-write: pinning the
    file's pages would let the device and the guest see different memory."""
    rb = mr.ram_block
    if bcontainer.dma_map_file is None or rb is None:
        return False
    if rb.fd < 0:
        return False
    return rb.is_shared() or mr.ram_device


def vfio_container_dma_map_shared(bcontainer: VFIOIOMMUClass, iova: int, size: int,
                                 vaddr: int, readonly: bool, mr: MemoryRegion) -> DmaResult:
    """QEMU 11.0.2+ and 11.1 (hw/vfio/container.c: vfio_container_dma_map(); in 11.1
    the same test sits in iommufd's .dma_map() after 877da3831355 "vfio/iommufd:
    Merge .dma_map_file() into .dma_map()").  MAP_FILE failure fails the map: no VA
    fallback."""
    if vfio_container_can_dma_map_file(bcontainer, mr):
        return _dma_map_file(bcontainer, iova, size, vaddr, readonly, mr)
    return bcontainer.dma_map(iova, size, vaddr, readonly, mr)


def region_mapper(policy: Policy, bcontainer: VFIOIOMMUClass, mr: MemoryRegion,
                  readonly: bool) -> Callable[[int, int, int], DmaResult] | None:
    """``policy`` for every block of one region, as ``map(iova, size, vaddr)``,
    or None for a user policy.  A built-in policy reads only the RAMBlock (fd,
    shared) and the region's ram_device bit, so it decides once per region and
    the mapper calls the backend hook directly: a 1 TiB virtio-mem region's half
    a million blocks share one decision (the ioctl is still one per block)."""
    by_file = _BY_FILE.get(policy, False)
    if by_file is False:
        return None
    if by_file is not None and by_file(bcontainer, mr):
        rb = mr.ram_block
        fd, base, map_file = rb.fd, rb.host - rb.fd_offset, bcontainer.dma_map_file
        return lambda iova, size, vaddr: map_file(iova, size, fd, vaddr - base, readonly)
    dma_map = bcontainer.dma_map
    return lambda iova, size, vaddr: dma_map(iova, size, vaddr, readonly, mr)


POLICIES: dict[str, Policy] = {
    "va-only": vfio_container_dma_map_va,
    "fd": vfio_container_dma_map_fd,
    "fd-shared-or-ram-device": vfio_container_dma_map_shared,
}

# Each built-in policy's "map by file?" test (None: never), for region_mapper().
_BY_FILE = {vfio_container_dma_map_va: None, vfio_container_dma_map_fd: _has_fd,
            vfio_container_dma_map_shared: vfio_container_can_dma_map_file}


def register_policy(name: str, fn: Policy) -> None:
    """Make a user policy available under ``name`` (``--policy NAME``)."""
    if not callable(fn):
        raise UsageError(f"policy {name!r} is not callable", where="register_policy")
    from vmm_model.policy_check import checked
    POLICIES[name] = checked(name, fn)      # a user policy's errors name it (policy_check.py)


def get_policy(spec: str, where: str = "--policy") -> tuple[str, Policy]:
    """A policy by registered name, or ``package.module:callable`` (imported and
    registered under that spec)."""
    if spec in POLICIES:
        return spec, POLICIES[spec]
    if ":" in spec:
        modname, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(modname), attr)
        except Exception as e:       # ImportError, AttributeError, or the module's own error
            raise UsageError(f"cannot load policy {spec!r}: {type(e).__name__}: {e}", where=where,
                             valid="a registered name or module:callable") from None
        register_policy(spec, fn)
        return spec, fn
    raise UsageError(f"unknown policy {spec!r}", where=where,
                     valid=", ".join(POLICIES) + ", or module:callable")
