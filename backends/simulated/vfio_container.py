"""drivers/vfio/container.c on SimHost: an open /dev/vfio/vfio, its groups and
the IOMMU driver VFIO_SET_IOMMU binds to it (type1 only: vfio_iommu_type1.py).

``VfioContainer.factory(host, file)`` is what ``vfio.install()`` registers at
/dev/vfio/vfio.  VFIO group hooks: ``group_attach`` (vfio_container_attach_group),
``group_detach`` (vfio_group_detach_container), ``device_open``
(vfio_group_use_container).  ``dma_entry_limit`` (the type1 module param, default
profile.type1_dma_entry_limit, 65535) is read when the driver is opened
(VFIO_SET_IOMMU); override it per host with ``host.type1_dma_entry_limit = N`` or
globally with ``VfioContainer.dma_entry_limit = N``.
"""

from __future__ import annotations

import errno

from backends import uapi
from .vfio_iommu_type1 import (_DIRTY_MINSZ, _INFO_MINSZ, _MAP_DMA, _MAP_MINSZ, _UNMAP_DMA,
                               _UNMAP_MINSZ, U64_MAX, VFIO_API_VERSION, VFIO_TYPE1_IOMMU,
                               VFIO_TYPE1_NESTING_IOMMU, VFIO_TYPE1v2_IOMMU, VfioIommu,
                               vfio_iommu_type1_check_extension)


class VfioContainer:
    """An open /dev/vfio/vfio (drivers/vfio/container.c): the groups set on it
    and the IOMMU driver VFIO_SET_IOMMU bound (``iommu``, type1 only)."""

    #: module param dma_entry_limit (None: profile.type1_dma_entry_limit);
    #: ``host.type1_dma_entry_limit`` overrides it for one SimHost.
    dma_entry_limit: int | None = None

    def __init__(self, host, file=None):
        self.host = host
        self.groups: list = []
        self.iommu: VfioIommu | None = None
        self.closed = False

    @classmethod
    def factory(cls, host, file):
        """vfio_fops_open(): a new, empty container per open()."""
        return cls(host, file)

    # ---- the group hooks (vfio.py) ---------------------------------------------------
    def group_attach(self, group) -> int:
        """vfio_container_attach_group(): with a driver set, the driver's
        attach_group() first (its errno fails VFIO_GROUP_SET_CONTAINER)."""
        if self.iommu is not None:
            ret = self.iommu.attach_group(group)
            if ret:
                return ret
        self.groups.append(group)
        return 0

    def group_detach(self, group) -> None:
        """vfio_group_detach_container(): the driver's detach_group(); the last
        group leaving releases the driver (vfio_iommu_type1_release()) and the
        container is back to "no IOMMU set"."""
        if self.iommu is not None:
            self.iommu.detach_group(group)
        if group in self.groups:
            self.groups.remove(group)
        if self.iommu is not None and not self.groups:
            self.iommu.release()
            self.iommu = None

    def device_open(self, dev) -> int:
        """vfio_group_use_container(): -EINVAL before VFIO_SET_IOMMU."""
        return 0 if self.iommu is not None else -errno.EINVAL

    def release(self) -> None:
        """vfio_fops_release(): drops the file's reference only; groups keep the
        container (and its mappings) until they leave it."""
        self.closed = True

    # ---- ioctls ----------------------------------------------------------------------
    def _dma_entry_limit(self) -> int:
        for v in (getattr(self.host, "type1_dma_entry_limit", None), type(self).dma_entry_limit):
            if v is not None:
                return v
        return self.host.profile.type1_dma_entry_limit

    def vfio_ioctl_set_iommu(self, arg: int) -> int:
        """vfio_ioctl_set_iommu(): -EINVAL with no group or a driver already
        set; -ENODEV when no driver reports the extension (type1 only is
        registered: SPAPR, NOIOMMU... -> ENODEV); vfio_iommu_type1_open()
        -EINVAL for an extension that is not an IOMMU type (VFIO_UNMAP_ALL);
        then every group is attached (first failure: detach, release, its
        errno)."""
        if not self.groups or self.iommu is not None:
            return -errno.EINVAL
        profile = self.host.profile
        if vfio_iommu_type1_check_extension(None, arg, profile) <= 0:
            return -errno.ENODEV
        if arg == VFIO_TYPE1_IOMMU:
            v2 = nesting = False
        elif arg == VFIO_TYPE1v2_IOMMU:
            v2, nesting = True, False
        elif arg == VFIO_TYPE1_NESTING_IOMMU:
            v2, nesting = True, True
        else:
            return -errno.EINVAL
        iommu = VfioIommu(self.host, v2, nesting, self._dma_entry_limit())
        done = []
        for group in self.groups:               # __vfio_container_attach_groups()
            ret = iommu.attach_group(group)
            if ret:
                for g in reversed(done):
                    iommu.detach_group(g)
                iommu.release()
                return ret
            done.append(group)
        self.iommu = iommu
        return 0

    def ioctl(self, request: int, arg):
        """vfio_fops_unl_ioctl(): GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU
        here; everything else goes to the driver (vfio_iommu_type1_ioctl():
        unknown -> ENOTTY), or -EINVAL with no driver set."""
        iommu = self.iommu
        if iommu is not None and type(arg) is bytes:           # the hot path
            if request == _MAP_DMA:
                return iommu.vfio_iommu_type1_map_dma(arg), arg
            if request == _UNMAP_DMA:
                return iommu.vfio_iommu_type1_unmap_dma(arg)
        return self._other(request, arg)

    def _other(self, request: int, arg):
        out = b"" if isinstance(arg, int) else bytes(arg)
        iommu = self.iommu
        if request == uapi.VFIO_GET_API_VERSION:
            return VFIO_API_VERSION, out
        if request == uapi.VFIO_CHECK_EXTENSION:
            return vfio_iommu_type1_check_extension(iommu, _ulong(arg), self.host.profile), out
        if request == uapi.VFIO_SET_IOMMU:
            return self.vfio_ioctl_set_iommu(_ulong(arg)), out
        if iommu is None:
            return -errno.EINVAL, out
        if request not in (uapi.VFIO_IOMMU_GET_INFO, uapi.VFIO_IOMMU_MAP_DMA,
                           uapi.VFIO_IOMMU_UNMAP_DMA, uapi.VFIO_IOMMU_DIRTY_PAGES):
            return -errno.ENOTTY, out
        if isinstance(arg, int):
            return self._user_ptr(request, arg)
        if request == uapi.VFIO_IOMMU_GET_INFO:
            return iommu.vfio_iommu_type1_get_info(arg)
        if request == uapi.VFIO_IOMMU_DIRTY_PAGES:
            return iommu.vfio_iommu_type1_dirty_pages(arg), out
        if request == uapi.VFIO_IOMMU_MAP_DMA:
            return iommu.vfio_iommu_type1_map_dma(arg), out
        return iommu.vfio_iommu_type1_unmap_dma(arg)

    def _user_ptr(self, request: int, addr: int):
        """An integer argument is a pointer into the process: copy_from_user()
        of the struct (-EFAULT when unmapped), the call, copy_to_user() back."""
        size = {uapi.VFIO_IOMMU_GET_INFO: _INFO_MINSZ, uapi.VFIO_IOMMU_MAP_DMA: _MAP_MINSZ,
                uapi.VFIO_IOMMU_UNMAP_DMA: _UNMAP_MINSZ, uapi.VFIO_IOMMU_DIRTY_PAGES: _DIRTY_MINSZ}
        host = self.host
        n, data = host.read_mem(addr, size[request]) if addr > 0 else (-errno.EFAULT, b"")
        if n != size[request]:
            return -errno.EFAULT, b""
        argsz = min(int.from_bytes(data[:4], "little"), 1 << 16)
        if argsz > len(data):
            n, more = host.read_mem(addr, argsz)
            data = more if n == argsz else data
        ret, out = self._other(request, data)
        if ret == 0 and out != data:
            host.write_mem(addr, out)
        return ret, b""


def _ulong(arg) -> int:
    """The ioctl's ``unsigned long arg`` (a buffer stands for its address: no
    extension or IOMMU type has such a number)."""
    return arg & U64_MAX if isinstance(arg, int) else 1 << 63
