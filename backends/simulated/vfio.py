"""VFIO core on SimHost: device nodes, groups and device fds
(drivers/vfio/vfio_main.c, group.c, device_cdev.c, pci/vfio_pci_core.c).

``install(host, devices)`` creates what a host with vfio-pci devices shows:

  /dev/vfio/vfio            type1 container   (vfio_container.py)
  /dev/vfio/<group>         one per IOMMU group (``VfioGroupFile`` here)
  /dev/vfio/devices/vfioN   VFIO cdev, profile.vfio_cdev (6.6+)
  /dev/iommu                iommufd, profile.iommufd (6.2+)   (iommufd/main.py)

The group and device files talk to the IOMMU side through small hooks, so
type1 and iommufd stay in their own modules:

  container (type1, /dev/vfio/vfio):  group_attach(group) / group_detach(group)
      -> 0 | -errno; device_open(dev) -> 0 | -errno (needs SET_IOMMU done)
  iommufd ctx (/dev/iommu):           compat_group_attach(group) -> 0 | -errno
      (iommufd_vfio_compat_ioas_create); compat_device_open(dev) -> 0 | -errno
      (bind + attach to the compat IOAS); compat_device_close(dev) (optional:
      vfio_df_iommufd_unbind()); bind(dev) -> (0, devid) | (-errno, 0);
      attach(devid, pt_id) -> (0, hwpt_id) | (-errno, 0); detach(devid); unbind(devid)

Each ``SimVfioDevice`` (iommu.py) is the physical function; its BARs are
mmap-able PFNMAP regions of the device fd (vfio_pci_core_mmap()).
"""

from __future__ import annotations

import errno

from backends import uapi
from backends.host import PAGE_SIZE, page_align
from .fs import CHARDEV, Page, PageStore, new_inode
from .iommu import SimVfioDevice
from .mmap import VM_DONTEXPAND, VM_IO, VM_PFNMAP

EBADFD = 77
VFIO_PCI_OFFSET_SHIFT = 40              # drivers/vfio/pci/vfio_pci_priv.h
PCI_CONFIG_SIZE = 4096                  # PCIe config space


def region_offset(index: int) -> int:
    """VFIO_PCI_INDEX_TO_OFFSET()."""
    return index << VFIO_PCI_OFFSET_SHIFT


class VfioGroup:
    """struct vfio_group: its devices and what it is attached to (a type1
    container or an iommufd ctx in compat mode), shared by every open."""

    def __init__(self, gid: int, devices: list[SimVfioDevice]):
        self.id = gid
        self.devices = devices
        self.container = None           # type1 container object
        self.iommufd = None              # iommufd ctx (compat)
        self.opened_devices = 0
        self.release_pending = False     # group fd closed while devices are open
        self.opened_file = False         # group->opened_file: the one open of /dev/vfio/N
        self.cdev_device_open_cnt = 0    # devices of the group bound through their cdev

    def open(self, host, file):
        """vfio_group_fops_open(): -EBUSY while a device of the group is bound
        through its cdev (cdev_device_open_cnt, 6.6+), then -EBUSY when the group
        is already open ("Do we need multiple instances of the group open?  Seems
        not."; the file stays open while a device fd holds it).  drivers/vfio/group.c;
        rig run iommufd-7.2 2026-11-23."""
        if self.cdev_device_open_cnt or self.opened_file:
            return -errno.EBUSY
        self.opened_file = True
        return VfioGroupFile(host, self)

    def release_container(self) -> None:
        """vfio_group_fops_release(): vfio_group_detach_container() (type1) or
        drop the iommufd reference (compat); the group can be opened again."""
        self.release_pending = False
        self.opened_file = False
        if self.container is not None:
            self.container.group_detach(self)
        self.container = self.iommufd = None


class VfioGroupFile:
    """An open /dev/vfio/<group> (vfio_group_fops_unl_ioctl())."""

    def __init__(self, host, group: VfioGroup):
        self.host, self.group = host, group

    def ioctl(self, request, arg):
        """vfio_group_fops_unl_ioctl(): GET_STATUS (-EINVAL argsz < minsz = 8,
        vfio_group_ioctl_get_status()), SET/UNSET_CONTAINER, GET_DEVICE_FD;
        anything else -ENOTTY."""
        g = self.group
        if request == uapi.VFIO_GROUP_GET_STATUS:
            buf = bytes(arg) if not isinstance(arg, int) else b""
            c = uapi.codec("vfio_group_status")
            if len(buf) < c.size:
                return -errno.EFAULT if isinstance(arg, int) else -errno.EINVAL, buf
            argsz, _ = c.unpack_from(buf)
            if argsz < c.size:                       # minsz = offsetofend(flags)
                return -errno.EINVAL, buf
            flags = uapi.VFIO_GROUP_FLAGS_VIABLE
            if g.container is not None or g.iommufd is not None:
                flags |= uapi.VFIO_GROUP_FLAGS_CONTAINER_SET
            return 0, c.pack(argsz, flags) + buf[c.size:]
        if request == uapi.VFIO_GROUP_SET_CONTAINER:
            return self._set_container(arg), (bytes(arg) if not isinstance(arg, int) else b"")
        if request == uapi.VFIO_GROUP_UNSET_CONTAINER:
            return self._unset_container(), (bytes(arg) if not isinstance(arg, int) else b"")
        if request == uapi.VFIO_GROUP_GET_DEVICE_FD:
            return self._get_device_fd(arg), (bytes(arg) if not isinstance(arg, int) else b"")
        return -errno.ENOTTY, (bytes(arg) if not isinstance(arg, int) else b"")

    def release(self):
        """Last close of the group fd.  Device fds hold the group file in the
        kernel, so with devices still open the release waits for them."""
        if self.group.opened_devices:
            self.group.release_pending = True
        else:
            self.group.release_container()

    def _set_container(self, arg) -> int:
        """vfio_group_ioctl_set_container(): -EFAULT (get_user), -EBADF, -EINVAL
        already attached, then a container file -> vfio_container_attach_group(),
        an iommufd file -> iommufd_vfio_compat_ioas_create(), else -EBADFD."""
        if isinstance(arg, int) or len(arg) < 4:
            return -errno.EFAULT
        fd = int.from_bytes(bytes(arg[:4]), "little", signed=True)
        file = self.host.file_of(fd)
        if file is None:
            return -errno.EBADF
        g = self.group
        if g.container is not None or g.iommufd is not None:
            return -errno.EINVAL
        dev = file.dev
        if hasattr(dev, "group_attach"):
            ret = dev.group_attach(g)
            if ret == 0:
                g.container = dev
            return ret
        if hasattr(dev, "compat_group_attach"):
            ret = dev.compat_group_attach(g)
            if ret == 0:
                g.iommufd = dev
            return ret
        return -EBADFD

    def _unset_container(self) -> int:
        """vfio_group_ioctl_unset_container(): -EINVAL if none; a type1 container
        -EBUSY with open devices (container_users != 1); an iommufd (compat) is
        just dropped, open device fds stay bound to it (no busy check; rig run
        iommufd-7.2 2026-11-23)."""
        g = self.group
        if g.container is None and g.iommufd is None:
            return -errno.EINVAL
        if g.container is not None and g.opened_devices:
            return -errno.EBUSY
        if g.container is not None:
            g.container.group_detach(g)
        g.container = g.iommufd = None
        return 0

    def _get_device_fd(self, arg) -> int:
        """vfio_group_ioctl_get_device_fd(): -EFAULT bad name buffer, -EINVAL no
        container/iommufd, -ENODEV unknown name; then vfio_df_open() through the
        container (type1 needs SET_IOMMU: -EINVAL) or the compat IOAS."""
        if isinstance(arg, int):
            return -errno.EFAULT
        name = bytes(arg).split(b"\0", 1)[0].decode(errors="replace")
        g = self.group
        if g.container is None and g.iommufd is None:
            return -errno.EINVAL
        dev = next((d for d in g.devices if d.name == name), None)
        if dev is None:
            return -errno.ENODEV
        opener = g.container.device_open if g.container is not None else g.iommufd.compat_device_open
        ret = opener(dev)
        if ret:
            return ret
        g.opened_devices += 1
        df = VfioDeviceFile(self.host, dev, group=g)
        df.compat_ictx = g.iommufd            # df->iommufd = group->iommufd (vfio_df_group_open())
        return self.host.anon_inode_getfd(f"[vfio-device]", df)


class VfioDeviceFile:
    """An open device: from VFIO_GROUP_GET_DEVICE_FD (``group`` set, usable at
    once) or /dev/vfio/devices/vfioN (usable after VFIO_DEVICE_BIND_IOMMUFD)."""

    def __init__(self, host, dev: SimVfioDevice, group: VfioGroup | None = None,
                 vfio_group: VfioGroup | None = None):
        self.host, self.dev, self.group = host, dev, group
        self.vfio_group = vfio_group if vfio_group is not None else group   # device->group
        self.ictx = None                 # cdev: the iommufd ctx bound to
        self.devid = 0
        self.compat_ictx = None          # group-opened on an iommufd group: df->iommufd

    @classmethod
    def cdev_factory(cls, dev: SimVfioDevice, vfio_group: VfioGroup | None = None):
        return lambda host, file: cls(host, dev, vfio_group=vfio_group)

    @property
    def access_granted(self) -> bool:
        return self.group is not None or self.ictx is not None

    def ioctl(self, request, arg):
        """vfio_device_fops_unl_ioctl() (6.6+ cdev rules): BIND first; any other
        ioctl on an unbound cdev -EINVAL; unknown -ENOTTY."""
        buf = bytes(arg) if not isinstance(arg, int) else b""
        if request == uapi.VFIO_DEVICE_BIND_IOMMUFD:
            return self._bind(buf)
        # vfio_device_fops_unl_ioctl(): a cdev not yet bound only takes BIND.
        if not self.access_granted:
            return -errno.EINVAL, buf
        if request == uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT:
            return self._attach(buf)
        if request == uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT:
            return self._detach(buf)
        if request == uapi.VFIO_DEVICE_GET_INFO:
            return self._get_info(buf)
        if request == uapi.VFIO_DEVICE_GET_REGION_INFO:
            return self._get_region_info(buf)
        return -errno.ENOTTY, buf

    def _minsz(self, name: str, min_field: str, buf: bytes) -> int | None:
        """The argsz rule of every VFIO ioctl: argsz < minsz -> -EINVAL."""
        minsz = uapi.offsetofend(name, min_field)
        if len(buf) < minsz or int.from_bytes(buf[:4], "little") < minsz:
            return None
        return minsz

    def _bind(self, buf: bytes):
        """vfio_df_ioctl_bind_iommufd(): -EINVAL argsz, iommufd < 0, flags or a
        group-opened device fd -> vfio_device_block_group(): -EBUSY while the group is open
        (group->opened_file; rig run iommufd-7.2 2026-11-23) -> -EINVAL already
        bound -> -EBADF bad fd, -EBADFD not an iommufd -> iommufd_device_bind().
        On failure the group is unblocked again."""
        minsz = self._minsz("vfio_device_bind_iommufd", "out_devid", buf)
        if minsz is None:
            return -errno.EINVAL, buf
        c = uapi.codec("vfio_device_bind_iommufd")
        argsz, flags, fd, _devid, _tok = c.unpack_from(buf + bytes(max(0, c.size - len(buf))))
        if fd < 0 or flags or self.group is not None:
            return -errno.EINVAL, buf
        vg = self.vfio_group
        if vg is not None and vg.opened_file:
            return -errno.EBUSY, buf
        if self.ictx is not None:
            return -errno.EINVAL, buf
        file = self.host.file_of(fd)
        if file is None:
            return -errno.EBADF, buf
        if not hasattr(file.dev, "bind"):
            return -EBADFD, buf
        ret, devid = file.dev.bind(self.dev)
        if ret:
            return ret, buf
        self.ictx, self.devid = file.dev, devid
        if vg is not None:
            vg.cdev_device_open_cnt += 1
        out = bytearray(buf)
        out[12:16] = devid.to_bytes(4, "little")          # out_devid
        return 0, bytes(out)

    def _attach(self, buf: bytes):
        """vfio_df_ioctl_attach_pt(): -EINVAL argsz/flags/not a cdev bind, then
        iommufd_device_attach(); pt_id is written back (the HWPT id for an IOAS)."""
        if self._minsz("vfio_device_attach_iommufd_pt", "pt_id", buf) is None or self.ictx is None:
            return -errno.EINVAL, buf
        flags, pt_id = int.from_bytes(buf[4:8], "little"), int.from_bytes(buf[8:12], "little")
        if flags:
            return -errno.EINVAL, buf
        ret, hwpt_id = self.ictx.attach(self.devid, pt_id)
        if ret:
            return ret, buf
        out = bytearray(buf)
        out[8:12] = hwpt_id.to_bytes(4, "little")
        return 0, bytes(out)

    def _detach(self, buf: bytes):
        """vfio_df_ioctl_detach_pt(): -EINVAL argsz < offsetofend(flags), flags
        set, or not bound through the cdev; then iommufd_device_detach()."""
        if self._minsz("vfio_device_detach_iommufd_pt", "flags", buf) is None or self.ictx is None:
            return -errno.EINVAL, buf
        if int.from_bytes(buf[4:8], "little"):
            return -errno.EINVAL, buf
        self.ictx.detach(self.devid)
        return 0, buf

    def _get_info(self, buf: bytes):
        """vfio_pci_ioctl_get_info(): minsz offsetofend(num_irqs)."""
        c = uapi.codec("vfio_device_info")
        if self._minsz("vfio_device_info", "num_irqs", buf) is None:
            return -errno.EINVAL, buf
        minsz = uapi.offsetofend("vfio_device_info", "num_irqs")
        argsz = int.from_bytes(buf[:4], "little")
        full = c.pack(argsz, uapi.VFIO_DEVICE_FLAGS_PCI | uapi.VFIO_DEVICE_FLAGS_RESET,
                      uapi.VFIO_PCI_NUM_REGIONS, 5, 0, 0)
        return 0, full[:minsz] + buf[minsz:]

    def region_size(self, index: int) -> int:
        if index == uapi.VFIO_PCI_CONFIG_REGION_INDEX:
            return PCI_CONFIG_SIZE
        return self.dev.bars.get(index, 0)

    def _get_region_info(self, buf: bytes):
        """vfio_pci_ioctl_get_region_info(): -EINVAL argsz or index >= num_regions;
        BARs are READ|WRITE|MMAP (page-aligned BARs), config READ|WRITE."""
        if self._minsz("vfio_region_info", "offset", buf) is None:
            return -errno.EINVAL, buf
        c = uapi.codec("vfio_region_info")
        argsz, _, index, _, _, _ = c.unpack_from(buf)
        if index >= uapi.VFIO_PCI_NUM_REGIONS:
            return -errno.EINVAL, buf
        size = self.region_size(index)
        flags = 0
        if size:
            flags = uapi.VFIO_REGION_INFO_FLAG_READ | uapi.VFIO_REGION_INFO_FLAG_WRITE
            if index <= uapi.VFIO_PCI_BAR5_REGION_INDEX and size % PAGE_SIZE == 0:
                flags |= uapi.VFIO_REGION_INFO_FLAG_MMAP
        return 0, c.pack(argsz, flags, index, 0, size, region_offset(index)) + buf[c.size:]

    def mmap(self, file, vma):
        """vfio_pci_core_mmap(): a BAR region as VM_IO|VM_PFNMAP; -EINVAL for
        other regions or beyond the BAR."""
        index = vma.pgoff >> (VFIO_PCI_OFFSET_SHIFT - 12)
        if index > uapi.VFIO_PCI_BAR5_REGION_INDEX or not self.dev.bars.get(index):
            return -errno.EINVAL
        pgoff = vma.pgoff - (region_offset(index) >> 12)
        if (pgoff << 12) + (vma.end - vma.start) > page_align(self.dev.bars[index]):
            return -errno.EINVAL
        store = bar_store(self.dev, index)
        vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND
        vma.pfn_store = store
        vma.pgoff = pgoff                 # the BAR page index (pfn offset) of vma.start
        return 0

    def release(self):
        if self.group is not None:
            ictx = self.compat_ictx
            if ictx is not None and hasattr(ictx, "compat_device_close"):
                ictx.compat_device_close(self.dev)     # vfio_df_iommufd_unbind()
            self.group.opened_devices -= 1
            if self.group.release_pending and not self.group.opened_devices:
                self.group.release_container()
        if self.ictx is not None:
            self.ictx.unbind(self.devid)
            self.ictx = None
            if self.vfio_group is not None:               # vfio_device_unblock_group()
                self.vfio_group.cdev_device_open_cnt -= 1


def bar_store(dev: SimVfioDevice, index: int) -> PageStore:
    """The BAR's pages (MMIO behind VM_PFNMAP), created on first mmap."""
    stores = dev.__dict__.setdefault("_bar_stores", {})
    if index not in stores:
        store = stores[index] = PageStore()
        store.pages.update((i, Page()) for i in range(page_align(dev.bars[index]) // PAGE_SIZE))
    return stores[index]


def install(host, devices: list[SimVfioDevice] | None = None) -> list[SimVfioDevice]:
    """Register the VFIO / iommufd nodes of ``devices`` (default: one edu-like
    function in group 1) on ``host``, as the profile's kernel would have them."""
    from .iommufd.main import IommufdCtx
    from .vfio_container import VfioContainer

    devices = devices if devices is not None else [SimVfioDevice()]
    host.add_dir("/dev/vfio")
    host.register_chardev("/dev/vfio/vfio", VfioContainer.factory)
    groups: dict[int, VfioGroup] = {}
    for d in devices:
        groups.setdefault(d.group, VfioGroup(d.group, [])).devices.append(d)
    for gid, g in groups.items():
        host.register_chardev(f"/dev/vfio/{gid}", g.open)
    if host.profile.vfio_cdev:
        host.add_dir("/dev/vfio/devices")
        for d in devices:
            host.register_chardev(f"/dev/vfio/devices/vfio{d.cdev}",
                                  VfioDeviceFile.cdev_factory(d, groups[d.group]))
    if host.profile.iommufd:
        host.register_chardev("/dev/iommu", IommufdCtx.factory)
    host.vfio_devices = devices
    return devices
