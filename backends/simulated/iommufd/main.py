"""drivers/iommu/iommufd/main.c: /dev/iommu on SimHost.

``IommufdCtx`` is one open /dev/iommu (``struct iommufd_ctx``), registered by
``vfio.install()`` as ``IommufdCtx.factory`` when ``profile.iommufd`` (6.2+):

    ioctl(request, arg) -> (ret, out)   iommufd_fops_ioctl()
    release()                           iommufd_fops_release(): destroy every
                                        object, unpin, uncharge, detach devices

and the hooks vfio.py calls (docstring of vfio.py): ``compat_group_attach(group)``,
``compat_device_open(dev)``,
``compat_device_close(dev)``, ``bind(dev)``, ``attach(devid, pt_id)``,
``detach(devid)``, ``unbind(devid)``.

The modules keep the kernel's file names: ``ioas`` (ioas.c), ``io_pagetable``,
``pages``, ``device`` (device.c + hw_pagetable.c), ``vfio_compat``.

Framing (main.c ``iommufd_fops_ioctl()``, the same since 6.2): _IOC_NR below 0x80 or past the op table
(profile.iommufd_last_cmd_nr) -> the VFIO compat layer (ENOTTY when unknown);
then get_user(size) (-EFAULT: an int argument or fewer than 4 bytes) -> -ENOTTY
the number is not the registered command (also for a command the profile's
kernel lacks, and for a number inside the table that the simulator does not
model: dirty tracking, HWPT_INVALIDATE, fault queues, vIOMMU,
vDEVICE, vEVENTQ, HW queues) -> -EINVAL size < min_size -> copy_struct_from_user():
-EFAULT the buffer is shorter than ``size``, -E2BIG a non-zero byte past the
kernel's struct.  Object ids come from one xarray, lowest free from 1
(XA_FLAGS_ALLOC1); an unknown id or one of another type is -ENOENT.
"""

from __future__ import annotations

import errno

from backends import uapi
from .device import (HwptPaging, IommufdDevice, iommufd_device_attach, iommufd_device_bind,
                     iommufd_device_detach, iommufd_device_unbind, iommufd_get_hw_info,
                     iommufd_hwpt_alloc,
                     iommufd_hwpt_lu_set_preserve, iommufd_hwpt_paging_destroy,
                     iommufd_save_hwpts)
from .io_pagetable import iopt_unmap_all
from .ioas import (Ioas, iommufd_ioas_alloc_ioctl, iommufd_ioas_allow_iovas,
                   iommufd_ioas_change_process, iommufd_ioas_copy, iommufd_ioas_iova_ranges,
                   iommufd_ioas_map, iommufd_ioas_map_file, iommufd_ioas_unmap, iommufd_option)
from .pages import IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_USER
from .vfio_compat import (get_compat_ioas, iommufd_vfio_compat_ioas_create, iommufd_vfio_ioas,
                          iommufd_vfio_ioctl)

IOMMUFD_CMD_BASE = uapi.IOMMUFD_CMD_BASE
_EFAULT, _ENOTTY, _EINVAL, _E2BIG = -errno.EFAULT, -errno.ENOTTY, -errno.EINVAL, -errno.E2BIG


def iommufd_destroy(ictx, cmd, buf, size):
    """iommufd_destroy() -> iommufd_object_remove(): -ENOENT unknown id, -EBUSY
    while anything else holds the object (an IOAS with a HWPT, a HWPT with a
    device, a bound device)."""
    obj_id = int.from_bytes(cmd[4:8], "little")
    return ictx.object_remove(obj_id), buf


def _op_table(profile) -> dict[int, tuple]:
    """iommufd_ioctl_ops[] for ``profile``: request -> (handler, sizeof, min_size)."""
    want = [("IOMMU_DESTROY", iommufd_destroy), ("IOMMU_IOAS_ALLOC", iommufd_ioas_alloc_ioctl),
            ("IOMMU_IOAS_ALLOW_IOVAS", iommufd_ioas_allow_iovas),
            ("IOMMU_IOAS_COPY", iommufd_ioas_copy),
            ("IOMMU_IOAS_IOVA_RANGES", iommufd_ioas_iova_ranges),
            ("IOMMU_IOAS_MAP", iommufd_ioas_map), ("IOMMU_IOAS_UNMAP", iommufd_ioas_unmap),
            ("IOMMU_OPTION", iommufd_option), ("IOMMU_VFIO_IOAS", iommufd_vfio_ioas)]
    if profile.vfio_cdev:                   # HWPT_ALLOC, GET_HW_INFO came with VFIO cdev (6.6)
        want += [("IOMMU_HWPT_ALLOC", iommufd_hwpt_alloc), ("IOMMU_GET_HW_INFO", iommufd_get_hw_info)]
    if profile.map_file:
        want.append(("IOMMU_IOAS_MAP_FILE", iommufd_ioas_map_file))
    if profile.change_process:
        want.append(("IOMMU_IOAS_CHANGE_PROCESS", iommufd_ioas_change_process))
    ops = {}
    for name, fn in want:
        ioc = uapi.IOCTLS[name]
        ops[ioc.nr] = (fn, ioc.size, ioc.min_size, ioc.size.to_bytes(4, "little"))
    if profile.iommufd_liveupdate:
        sd = uapi.PROPOSED_STRUCTS["iommu_hwpt_lu_set_preserve"]
        ops[uapi.IOMMU_HWPT_LU_SET_PRESERVE] = (iommufd_hwpt_lu_set_preserve, sd.size,
                                                uapi.offsetofend(sd.name, "hwpt_token"),
                                                sd.size.to_bytes(4, "little"))
    assert all(r & 0xFF <= profile.iommufd_last_cmd_nr for r in ops)
    return ops


_OPS_CACHE: dict = {}


class IommufdCtx:
    """struct iommufd_ctx: one open of /dev/iommu (see the module docstring)."""

    def __init__(self, host, file):
        self.host, self.file = host, file
        self.profile = profile = host.profile
        ops = _OPS_CACHE.get(profile)
        if ops is None:
            ops = _OPS_CACHE[profile] = _op_table(profile)
        self.ops = ops
        self.last_nr = profile.iommufd_last_cmd_nr
        self.objects: dict[int, object] = {}
        self.reserved_ids: set[int] = set()          # XA_ZERO_ENTRY: allocated, not finalized
        # iommufd_fops_open(): USER accounting; MM when opened as /dev/vfio/vfio
        # (CONFIG_IOMMUFD_VFIO_CONTAINER, not modelled: vfio.py puts type1 there).
        self.account_mode = IOPT_PAGES_ACCOUNT_USER
        self.vfio_ioas: Ioas | None = None
        self.no_iommu_mode = False
        self.igroups: dict = {}
        self.compat_devs: dict[int, IommufdDevice] = {}
        self.released = False

    @classmethod
    def factory(cls, host, file) -> "IommufdCtx":
        """iommufd_fops_open()."""
        return cls(host, file)

    # ---- objects -------------------------------------------------------------------
    def alloc_id(self) -> int:
        """xa_alloc() with XA_FLAGS_ALLOC1: the lowest free id from 1."""
        i = 1
        objects, reserved = self.objects, self.reserved_ids
        while i in objects or i in reserved:
            i += 1
        reserved.add(i)
        return i

    def finalize(self, obj) -> None:
        """iommufd_object_finalize(): the object becomes visible to lookups."""
        self.reserved_ids.discard(obj.id)
        self.objects[obj.id] = obj

    def abort_id(self, obj_id: int) -> None:
        """iommufd_object_abort(): the id is free again."""
        self.reserved_ids.discard(obj_id)

    def get_ioas(self, obj_id: int) -> Ioas | None:
        """iommufd_get_ioas(): None (-ENOENT) unless ``obj_id`` is an IOAS."""
        obj = self.objects.get(obj_id)
        return obj if type(obj) is Ioas else None

    def object_remove(self, obj_id: int) -> int:
        """iommufd_object_remove(ictx, NULL, id): -ENOENT, -EBUSY (users != 1)."""
        obj = self.objects.get(obj_id)
        if obj is None:
            return -errno.ENOENT
        if obj.users != 1:
            return -errno.EBUSY
        del self.objects[obj_id]
        if self.vfio_ioas is obj:
            self.vfio_ioas = None
        self._destroy(obj)
        return 0

    def _destroy(self, obj) -> None:
        """iommufd_object_ops[type].destroy."""
        if type(obj) is Ioas:
            obj.iopt.lu_immutable = False
            iopt_unmap_all(obj.iopt)                 # iommufd_ioas_destroy()
        elif type(obj) is HwptPaging:
            iommufd_hwpt_paging_destroy(self, obj)

    # ---- the ioctl ---------------------------------------------------------------------
    def ioctl(self, request: int, arg):
        """iommufd_fops_ioctl(); see the module docstring for the framing."""
        op = self.ops.get(request)
        if op is not None and type(arg) is bytes and len(arg) == op[1] and arg[:4] == op[3]:
            return op[0](self, arg, arg, op[1])     # the common case: size == sizeof == buffer
        nr = request & 0xFF
        if nr < IOMMUFD_CMD_BASE or nr > self.last_nr:
            return iommufd_vfio_ioctl(self, request, arg)
        if type(arg) is bytes:
            buf = arg
        elif isinstance(arg, int):
            return _EFAULT, b""
        else:
            buf = bytes(arg)
        n = len(buf)
        if n < 4:
            return _EFAULT, buf
        if op is None:
            return _ENOTTY, buf
        handler, ksize, min_size, _ = op
        size = buf[0] | buf[1] << 8 | buf[2] << 16 | buf[3] << 24
        if size < min_size:
            return _EINVAL, buf
        if size == ksize:
            if n == ksize:
                return handler(self, buf, buf, size)
            if n < size:
                return _EFAULT, buf
            return handler(self, buf[:ksize], buf, size)
        if n < size:
            return _EFAULT, buf
        if size > ksize:
            if any(buf[ksize:size]):
                return _E2BIG, buf
            return handler(self, buf[:ksize], buf, size)
        return handler(self, buf[:size] + bytes(ksize - size), buf, size)

    # ---- vfio.py hooks -------------------------------------------------------------------
    def liveupdate_preserve(self) -> int:
        """The iommufd fd's live-update .preserve (v1 11/14): iommufd_save_hwpts()."""
        return iommufd_save_hwpts(self)

    def bind(self, dev) -> tuple[int, int]:
        """VFIO_DEVICE_BIND_IOMMUFD -> iommufd_device_bind(): (0, devid)."""
        return iommufd_device_bind(self, dev)

    def _idev(self, devid: int) -> IommufdDevice | None:
        obj = self.objects.get(devid)
        return obj if type(obj) is IommufdDevice else None

    def attach(self, devid: int, pt_id: int) -> tuple[int, int]:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT -> iommufd_device_attach() (or _replace()
        when attached): pt_id an IOAS gets an automatic HWPT_PAGING (an existing
        compatible one is reused), an HWPT is used as is.  (0, hwpt_id)."""
        idev = self._idev(devid)
        if idev is None:
            return -errno.ENOENT, 0
        return iommufd_device_attach(self, idev, pt_id)

    def detach(self, devid: int) -> None:
        """VFIO_DEVICE_DETACH_IOMMUFD_PT -> iommufd_device_detach()."""
        idev = self._idev(devid)
        if idev is not None:
            iommufd_device_detach(self, idev)

    def unbind(self, devid: int) -> None:
        """Closing the cdev -> vfio_iommufd_physical_unbind(): detach, unbind,
        drop the context reference (the last one releases the context)."""
        idev = self._idev(devid)
        if idev is not None:
            iommufd_device_unbind(self, idev)

    def compat_group_attach(self, group) -> int:
        """VFIO_GROUP_SET_CONTAINER with an iommufd -> iommufd_vfio_compat_ioas_create()."""
        return iommufd_vfio_compat_ioas_create(self)

    def compat_device_open(self, dev) -> int:
        """VFIO_GROUP_GET_DEVICE_FD on an iommufd group: vfio_df_iommufd_bind()
        (iommufd_device_bind()) + vfio_iommufd_compat_attach_ioas() (-ENODEV
        without a compat IOAS) on the compat IOAS; undone on failure."""
        rc, devid = iommufd_device_bind(self, dev)
        if rc:
            return rc
        idev = self.objects[devid]
        ioas = get_compat_ioas(self)
        rc = -errno.ENODEV if ioas is None else iommufd_device_attach(self, idev, ioas.id)[0]
        if rc:
            iommufd_device_unbind(self, idev)
            return rc
        self.compat_devs[id(dev)] = idev
        return 0

    def compat_device_close(self, dev) -> None:
        """Closing a group-opened device fd: vfio_df_iommufd_unbind()."""
        idev = self.compat_devs.pop(id(dev), None)
        if idev is not None and self.objects.get(idev.id) is idev:
            iommufd_device_unbind(self, idev)

    # ---- release ---------------------------------------------------------------------------
    def release(self) -> None:
        """iommufd_fops_release(): destroy every object, leaves first (devices,
        HWPTs, then IOASes), so every pin and charge is dropped and every
        attached device's DMA is blocked."""
        if self.released:
            return
        self.released = True
        objs = list(self.objects.values())
        for obj in objs:
            if type(obj) is IommufdDevice:
                iommufd_device_detach(self, obj)
                dev = obj.dev
                binds = dev.__dict__.get("_iommufd_binds", 1) - 1
                dev.__dict__["_iommufd_binds"] = binds
                if not binds:
                    dev.__dict__.pop("_iommufd_owner", None)
        for obj in objs:
            if type(obj) is HwptPaging:
                self._destroy(obj)
        for obj in objs:
            if type(obj) is Ioas:
                self._destroy(obj)
        self.objects.clear()
        self.reserved_ids.clear()
        self.compat_devs.clear()
        self.vfio_ioas = None

    # ---- introspection (tests, reports) --------------------------------------------------
    def ioas(self, ioas_id: int) -> Ioas | None:
        return self.get_ioas(ioas_id)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{i}:{o.kind}" for i, o in sorted(self.objects.items()))
        return f"IommufdCtx({self.profile.name}, objects={{{kinds}}})"


__all__ = ["IommufdCtx", "IOPT_PAGES_ACCOUNT_MM", "IOPT_PAGES_ACCOUNT_USER"]
