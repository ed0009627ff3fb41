"""drivers/iommu/iommufd/device.c + hw_pagetable.c: bound devices and HWPTs,
plus the proposed live-update preserve ioctl (liveupdate.c in later revisions).

A ``HwptPaging`` is an IOMMU domain of one ``IommuHw`` (iommu.py) filled from
its IOAS; it is the ``Translation`` (iommu.py) an attached device's DMA goes
through (``SimVfioDevice.domain``).  Devices come from vfio.py's hooks (cdev
BIND/ATTACH, or the group path through vfio_compat).  Read from torvalds/linux
at the 7.1 merge window ("T71"): device.c, hw_pagetable.c.
"""

from __future__ import annotations

import errno
import struct

from backends import uapi
from .io_pagetable import (iopt_remove_reserved_iova, iopt_table_add_domain,
                           iopt_table_enforce_dev_resv_regions, iopt_table_remove_domain)
from .ioas import Ioas, IommufdObject, respond
from .pages import IOPT_ADDRESS_FILE

_EINVAL, _ENOENT, _EOPNOTSUPP = -errno.EINVAL, -errno.ENOENT, -errno.EOPNOTSUPP
_HWPT_VALID_FLAGS = (uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                     | uapi.IOMMU_HWPT_FAULT_ID_VALID)


class HwptPaging(IommufdObject):
    """struct iommufd_hwpt_paging: a paging domain of ``hw`` on ``ioas``;
    ``auto_domain`` when made by an attach to an IOAS (destroyed with its last
    device); ``lu_token`` once preserved (live update v1)."""

    __slots__ = ("ioas", "hw", "auto_domain", "lu_token")
    kind = "HWPT_PAGING"

    def __init__(self, obj_id: int, ioas: Ioas, hw):
        super().__init__(obj_id)
        self.ioas, self.hw = ioas, hw
        self.auto_domain = False
        self.lu_token = None

    def iova_to_page(self, iova: int):
        """Translation: what iommu_iova_to_phys() of this domain gives."""
        ioas = self.ioas
        return None if ioas is None else ioas.iopt.iova_to_page(iova)

    def __repr__(self) -> str:
        return f"HwptPaging(id={self.id}, ioas={self.ioas.id if self.ioas else None})"


class IommufdDevice(IommufdObject):
    """struct iommufd_device: ``dev`` bound to the context; ``hwpt`` attached."""

    __slots__ = ("dev", "hwpt")
    kind = "DEVICE"

    def __init__(self, obj_id: int, dev):
        super().__init__(obj_id)
        self.dev, self.hwpt = dev, None


class IommufdGroup:
    """struct iommufd_group: per iommu_group, the HWPT the group is attached to."""

    __slots__ = ("hwpt", "devices")

    def __init__(self):
        self.hwpt = None
        self.devices: list[IommufdDevice] = []


def _igroup(ictx, idev: IommufdDevice) -> IommufdGroup:
    return ictx.igroups.setdefault(idev.dev.group, IommufdGroup())


def domain_compatible(hwpt: HwptPaging, dev) -> bool:
    """The driver's attach_dev(): a domain works for devices behind the same
    kind of IOMMU (equal ``IommuHw``); else -EINVAL."""
    return hwpt.hw == dev.hw


# ---- bind / unbind -------------------------------------------------------------

def iommufd_device_bind(ictx, dev) -> tuple[int, int]:
    """iommufd_device_bind(): iommu_device_claim_dma_owner() is -EBUSY when the
    device is owned by another context; the device holds a context reference
    (iommufd_ctx_get()) until unbind.  Returns (0, devid)."""
    owner = dev.__dict__.get("_iommufd_owner")
    if owner is not None and owner is not ictx:
        return -errno.EBUSY, 0
    idev = IommufdDevice(ictx.alloc_id(), dev)
    idev.users += 1                       # the calling driver is a user until unbind
    ictx.finalize(idev)
    dev.__dict__["_iommufd_owner"] = ictx
    dev.__dict__["_iommufd_binds"] = dev.__dict__.get("_iommufd_binds", 0) + 1
    ictx.file.refs += 1
    return 0, idev.id


def iommufd_device_unbind(ictx, idev: IommufdDevice) -> None:
    """iommufd_device_unbind() (vfio_iommufd_physical_unbind() detaches first)."""
    if idev.hwpt is not None:
        iommufd_device_detach(ictx, idev)
    ictx.objects.pop(idev.id, None)
    dev = idev.dev
    binds = dev.__dict__.get("_iommufd_binds", 1) - 1
    dev.__dict__["_iommufd_binds"] = binds
    if not binds:
        dev.__dict__.pop("_iommufd_owner", None)
    ictx.host._fput(ictx.file)


# ---- attach / detach / replace ---------------------------------------------------

def iommufd_hw_pagetable_attach(ictx, hwpt: HwptPaging, idev: IommufdDevice) -> int:
    """iommufd_hw_pagetable_attach(): -EINVAL the group is on another HWPT ->
    the device's reserved regions into the IOAS (-EADDRINUSE) -> the first device
    of a group attaches the group (iommu_attach_group(): -EINVAL incompatible)."""
    ig = _igroup(ictx, idev)
    if ig.hwpt is not None and ig.hwpt is not hwpt:
        return _EINVAL
    rc = iopt_table_enforce_dev_resv_regions(hwpt.ioas.iopt, idev)
    if rc:
        return rc
    if not ig.devices:
        if not domain_compatible(hwpt, idev.dev):
            iopt_remove_reserved_iova(hwpt.ioas.iopt, idev)
            return _EINVAL
        ig.hwpt = hwpt
    hwpt.users += 1
    ig.devices.append(idev)
    return 0


def iommufd_hw_pagetable_detach(ictx, idev: IommufdDevice) -> HwptPaging:
    ig = _igroup(ictx, idev)
    hwpt = ig.hwpt
    if idev in ig.devices:
        ig.devices.remove(idev)
    if not ig.devices:
        ig.hwpt = None
    if hwpt is not None and hwpt.ioas is not None:
        iopt_remove_reserved_iova(hwpt.ioas.iopt, idev)
    return hwpt


def iommufd_hw_pagetable_put(ictx, hwpt: HwptPaging) -> None:
    """iommufd_hw_pagetable_put(): an auto domain dies with its last device."""
    hwpt.users -= 1
    if hwpt.auto_domain and hwpt.users == 1:
        ictx.objects.pop(hwpt.id, None)
        iommufd_hwpt_paging_destroy(ictx, hwpt)


def iommufd_hwpt_paging_destroy(ictx, hwpt: HwptPaging) -> None:
    """iommufd_hwpt_paging_destroy(): leave the IOAS (the last domain unpins)."""
    ioas = hwpt.ioas
    if ioas is None:
        return
    if hwpt in ioas.hwpt_list:
        ioas.hwpt_list.remove(hwpt)
    iopt_table_remove_domain(ioas.iopt, hwpt)
    ioas.users -= 1
    hwpt.ioas = None


def iommufd_hwpt_paging_alloc(ictx, ioas: Ioas, idev: IommufdDevice, flags: int,
                              immediate_attach: bool):
    """iommufd_hwpt_paging_alloc(): -EOPNOTSUPP unknown flags, and
    DIRTY_TRACKING (no simulated IOMMU reports IOMMU_CAP_DIRTY_TRACKING;
    NEST_PARENT is accepted and changes nothing here) -> a domain of the
    device's IOMMU -> immediate attach (auto domains) -> iopt_table_add_domain()
    (EINVAL, EADDRINUSE, pinning errors); everything undone on failure."""
    if flags & ~_HWPT_VALID_FLAGS or flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING:
        return _EOPNOTSUPP
    hwpt = HwptPaging(ictx.alloc_id(), ioas, idev.dev.hw)
    ioas.users += 1
    if immediate_attach:
        rc = iommufd_hw_pagetable_attach(ictx, hwpt, idev)
        if rc:
            ioas.users -= 1
            ictx.abort_id(hwpt.id)
            return rc
    rc = iopt_table_add_domain(ioas.iopt, hwpt)
    if rc:
        if immediate_attach:
            iommufd_hw_pagetable_detach(ictx, idev)
        ioas.users -= 1
        ictx.abort_id(hwpt.id)
        return rc
    ioas.hwpt_list.append(hwpt)
    return hwpt


def _do_attach(ictx, idev, hwpt) -> int:
    return iommufd_hw_pagetable_attach(ictx, hwpt, idev)


def _do_replace(ictx, idev, hwpt) -> int:
    """iommufd_device_do_replace(): -EINVAL if not attached; the device's
    reserved regions move to the new IOAS (-EADDRINUSE); the group follows."""
    ig = _igroup(ictx, idev)
    old = ig.hwpt
    if old is None:
        return _EINVAL
    if hwpt is old:
        return 0
    if old.ioas is not hwpt.ioas:
        for d in ig.devices:
            rc = iopt_table_enforce_dev_resv_regions(hwpt.ioas.iopt, d)
            if rc:
                for d2 in ig.devices:
                    iopt_remove_reserved_iova(hwpt.ioas.iopt, d2)
                return rc
    if not domain_compatible(hwpt, idev.dev):
        if old.ioas is not hwpt.ioas:
            for d in ig.devices:
                iopt_remove_reserved_iova(hwpt.ioas.iopt, d)
        return _EINVAL
    if old.ioas is not hwpt.ioas:
        for d in ig.devices:
            iopt_remove_reserved_iova(old.ioas.iopt, d)
    ig.hwpt = hwpt
    n = len(ig.devices)
    hwpt.users += n
    for d in ig.devices:
        d.hwpt = hwpt
        d.dev.domain = hwpt
    old.users -= n - 1
    iommufd_hw_pagetable_put(ictx, old)
    return 0


def iommufd_device_auto_get_domain(ictx, idev, ioas: Ioas, do_attach):
    """iommufd_device_auto_get_domain(): reuse an auto domain of the IOAS that
    accepts the device (-EINVAL means incompatible: try the next), else make one."""
    for hwpt in list(ioas.hwpt_list):
        if not hwpt.auto_domain:
            continue
        rc = do_attach(ictx, idev, hwpt)
        if rc == _EINVAL:
            continue
        if rc:
            return rc
        return hwpt
    hwpt = iommufd_hwpt_paging_alloc(ictx, ioas, idev, 0, do_attach is _do_attach)
    if type(hwpt) is int:
        return hwpt
    if do_attach is not _do_attach:
        rc = do_attach(ictx, idev, hwpt)
        if rc:
            ictx.objects.pop(hwpt.id, None)
            iommufd_hwpt_paging_destroy(ictx, hwpt)
            ictx.abort_id(hwpt.id)
            return rc
    hwpt.auto_domain = True
    ictx.finalize(hwpt)
    return hwpt


def iommufd_device_change_pt(ictx, idev: IommufdDevice, pt_id: int, replace: bool):
    """iommufd_device_change_pt(): -ENOENT unknown id; an HWPT is attached to
    as is; an IOAS gets an automatic domain; anything else -EINVAL."""
    do = _do_replace if replace else _do_attach
    obj = ictx.objects.get(pt_id)
    if obj is None:
        return _ENOENT
    if type(obj) is HwptPaging:
        if obj.ioas is None:
            return _ENOENT
        if replace:
            rc = do(ictx, idev, obj)
        else:
            rc = iommufd_hw_pagetable_attach(ictx, obj, idev)
        return rc if rc else obj
    if type(obj) is Ioas:
        return iommufd_device_auto_get_domain(ictx, idev, obj, do)
    return _EINVAL


def iommufd_device_attach(ictx, idev: IommufdDevice, pt_id: int) -> tuple[int, int]:
    """iommufd_device_attach() / iommufd_device_replace() (VFIO cdev
    vfio_iommufd_physical_attach_ioas() replaces when already attached).  The
    device's DMA then translates through the HWPT.  Returns (0, hwpt_id)."""
    replace = idev.hwpt is not None
    hwpt = iommufd_device_change_pt(ictx, idev, pt_id, replace)
    if type(hwpt) is int:
        return hwpt, 0
    if not replace:
        idev.users += 1
    idev.hwpt = hwpt
    idev.dev.domain = hwpt
    return 0, hwpt.id


def iommufd_device_detach(ictx, idev: IommufdDevice) -> None:
    """iommufd_device_detach(): DMA is blocked again (domain None)."""
    if idev.hwpt is None:
        return
    hwpt = iommufd_hw_pagetable_detach(ictx, idev)
    idev.hwpt = None
    idev.dev.domain = None
    idev.users -= 1
    if hwpt is not None:
        iommufd_hw_pagetable_put(ictx, hwpt)


# ---- IOMMU_HWPT_ALLOC -----------------------------------------------------------

_HWPT_ALLOC = uapi.codec("iommu_hwpt_alloc")


def iommufd_hwpt_alloc(ictx, cmd, buf, size):
    """iommufd_hwpt_alloc() (6.6+): -EOPNOTSUPP __reserved -> -EINVAL data_len
    inconsistent with data_type -> -ENOENT dev_id -> -EINVAL pt_id unknown ->
    IOAS: a manual paging HWPT, filled at once (not attached); FAULT_ID_VALID
    -ENOENT (no fault objects are simulated); an HWPT (nesting) or driver
    data: -EOPNOTSUPP (not simulated)."""
    (sz, flags, dev_id, pt_id, _out, reserved, data_type, data_len, data_uptr,
     fault_id, reserved2) = _HWPT_ALLOC.unpack(cmd)
    if reserved:
        return _EOPNOTSUPP, buf
    if (data_type == uapi.IOMMU_HWPT_DATA_NONE and data_len) or \
            (data_type != uapi.IOMMU_HWPT_DATA_NONE and not data_len):
        return _EINVAL, buf
    idev = ictx.objects.get(dev_id)
    if type(idev) is not IommufdDevice:
        return _ENOENT, buf
    pt = ictx.objects.get(pt_id)
    if pt is None:
        return _EINVAL, buf
    if type(pt) is not Ioas:
        return (_EOPNOTSUPP if type(pt) is HwptPaging else _EINVAL), buf
    if data_len:
        return _EOPNOTSUPP, buf
    hwpt = iommufd_hwpt_paging_alloc(ictx, pt, idev, flags, False)
    if type(hwpt) is int:
        return hwpt, buf
    if flags & uapi.IOMMU_HWPT_FAULT_ID_VALID:          # iommufd_get_fault(): no fault objects
        iommufd_hwpt_paging_destroy(ictx, hwpt)
        ictx.abort_id(hwpt.id)
        return _ENOENT, buf
    ictx.finalize(hwpt)
    return 0, respond(buf, size, _HWPT_ALLOC.pack(sz, flags, dev_id, pt_id, hwpt.id, reserved,
                                                  data_type, data_len, data_uptr, fault_id,
                                                  reserved2))


# ---- IOMMU_GET_HW_INFO (6.6) ------------------------------------------------------
_HW_INFO = uapi.codec("iommu_hw_info")
# struct iommu_hw_info_vtd {u32 flags; u32 __reserved; u64 cap_reg; u64 ecap_reg}: MGAW
# (cap_reg bits 21:16) = 38 for the 39-bit aperture of IommuHw(); SAGAW 39-bit.
VTD_CAP_REG = (38 << 16) | (0x2 << 8)
VTD_ECAP_REG = 0


def iommufd_get_hw_info(ictx, cmd, buf, size):
    """iommufd_get_hw_info() (device.c, 6.6+; QEMU 9.0+ asks it at every iommufd
    attach, iommufd_backend_get_device_info(), and fails realize without it):
    -EOPNOTSUPP flags or __reserved set -> -ENOENT dev_id not a bound device ->
    ops->hw_info(): intel_iommu_hw_info() (the VT-d the simulated devices sit
    behind, iommu.py IommuHw), struct iommu_hw_info_vtd, 24 bytes -> copy
    min(data_len, 24) to data_uptr and zero the rest of the user's data_len
    (-EFAULT) -> data_len = 24, out_data_type INTEL_VTD, out_capabilities 0
    (6.7+: no simulated IOMMU reports IOMMU_CAP_DIRTY_TRACKING)."""
    f = dict(zip(_HW_INFO.names, _HW_INFO.unpack(cmd)))
    if f["flags"] or any(f["__reserved"]):
        return _EOPNOTSUPP, buf
    if type(ictx.objects.get(f["dev_id"])) is not IommufdDevice:
        return _ENOENT, buf
    data = struct.pack("<IIQQ", 0, 0, VTD_CAP_REG, VTD_ECAP_REG)
    want = f["data_len"]
    if want:
        blob = data[:want] + bytes(max(0, want - len(data)))
        if ictx.host.write_mem(f["data_uptr"], blob) != len(blob):
            return -errno.EFAULT, buf
    f.update(data_len=len(data), out_data_type=uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD,
             out_capabilities=0)
    return 0, respond(buf, size, _HW_INFO.pack(*(f[n] for n in _HW_INFO.names)))


# ---- live update v1 (NOT merged) ------------------------------------------------
# "[PATCH 00/14] iommu: Add live update state preservation" (S. Khawaja, 2026-02-03,
# 20260203220948.2176157-1-skhawaja@google.com; docs/kernel-model.md).  Patch 10/14's ioctl
# only marks an HWPT; patch 11/14's iommufd_save_hwpts() checks the marked HWPTs
# when the iommufd fd itself is preserved in the LUO session (its .preserve).

_LU = uapi.codec("iommu_hwpt_lu_set_preserve")
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = uapi.F_SEAL_SEAL, uapi.F_SEAL_SHRINK, uapi.F_SEAL_GROW
LU_REQUIRED_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK


def check_iopt_pages_preserved(ictx, hwpt: HwptPaging) -> int:
    """check_iopt_pages_preserved() (11/14): every area of the IOAS must be a
    MAP_FILE area (user VA or dma-buf -> -EINVAL) whose seals *cached at map
    time* hold SEAL|GROW|SHRINK (-EINVAL), and whose file is already preserved
    in the session: liveupdate_get_token_outgoing()'s error as is, -ENOENT
    ("-ENOENT if the file is not preserved in this session", luo_file.c)."""
    preserved = ictx.host.luo_files
    for area in hwpt.ioas.iopt.area_itree:
        pages = area.pages
        if pages.type != IOPT_ADDRESS_FILE:
            return _EINVAL
        if pages.seals & LU_REQUIRED_SEALS != LU_REQUIRED_SEALS:
            return _EINVAL
        if pages.source not in preserved:
            return _ENOENT
    return 0


def iommufd_hwpt_lu_set_preserve(ictx, cmd, buf, size):
    """IOMMU_HWPT_LU_SET_PRESERVE (0x95, 10/14, profile.iommufd_liveupdate):
    iommufd_get_hwpt_paging() -ENOENT -> another marked HWPT of this iommufd
    holds the token -EADDRINUSE (re-marking the same HWPT is fine) -> marked.
    Nothing else is checked here (iommufd_save_hwpts())."""
    _, hwpt_id, token = _LU.unpack(cmd)
    hwpt = ictx.objects.get(hwpt_id)
    if type(hwpt) is not HwptPaging:
        return _ENOENT, buf
    for other in ictx.objects.values():
        if type(other) is HwptPaging and other is not hwpt and other.lu_token == token:
            return -errno.EADDRINUSE, buf
    hwpt.lu_token = token
    return 0, buf


def iommufd_save_hwpts(ictx) -> int:
    """iommufd_save_hwpts() (11/14), from the iommufd fd's live-update .preserve:
    for each marked HWPT its IOAS becomes immutable first (map/copy/unmap
    -EBUSY), then no domain -EINVAL -> check_iopt_pages_preserved();
    iommu_domain_preserve() (VT-d only in phase 1) always succeeds here.  On an
    error every IOAS is made mutable again (iommufd_set_ioas_mutable())."""
    for hwpt in [o for o in ictx.objects.values() if type(o) is HwptPaging]:
        if hwpt.lu_token is None or hwpt.ioas is None:
            continue
        hwpt.ioas.iopt.lu_immutable = True
        rc = _EINVAL if hwpt.hw is None else check_iopt_pages_preserved(ictx, hwpt)
        if rc:
            for obj in ictx.objects.values():
                if type(obj) is Ioas:
                    obj.iopt.lu_immutable = False
            return rc
    return 0


__all__ = ["HwptPaging", "IommufdDevice", "IommufdGroup", "iommufd_device_bind",
           "iommufd_device_unbind", "iommufd_device_attach", "iommufd_device_detach",
           "iommufd_hwpt_alloc", "iommufd_hwpt_lu_set_preserve", "iommufd_hwpt_paging_destroy",
           "iommufd_save_hwpts"]
