"""VFIO core on SimHost (backends/simulated/vfio.py): group and device-fd
errnos, each from the kernel function its docstring names
(drivers/vfio/group.c, vfio_main.c, device_cdev.c, pci/vfio_pci_core.c)."""

from __future__ import annotations

import errno

from backends import uapi
from backends.host import MAP_SHARED, O_RDWR, PROT_READ
from backends.simulated import SimHost
from backends.simulated.vfio import EBADFD, install, region_offset

S32 = lambda fd: fd.to_bytes(4, "little", signed=True)   # noqa: E731


def _host(profile="7.2"):
    h = SimHost(profile)
    install(h)
    return h


def test_group_get_status_and_set_container_errnos():
    """vfio_group_ioctl_get_status(): argsz < 8 -EINVAL; VIABLE, then
    CONTAINER_SET.  vfio_group_ioctl_set_container(): -EBADF, a file that is
    neither a container nor an iommufd -EBADFD, a second container -EINVAL."""
    with _host() as h:
        g = h.open("/dev/vfio/1", O_RDWR)
        assert h.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, uapi.build("vfio_group_status", argsz=4))[0] \
            == -errno.EINVAL
        ret, out = h.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, uapi.build("vfio_group_status"))
        assert (ret, uapi.parse("vfio_group_status", out).flags) == (0, uapi.VFIO_GROUP_FLAGS_VIABLE)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(99))[0] == -errno.EBADF
        memfd = h.memfd_create("x", 0)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(memfd))[0] == -EBADFD
        c = h.open("/dev/vfio/vfio", O_RDWR)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(c))[0] == 0
        ret, out = h.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, uapi.build("vfio_group_status"))
        assert uapi.parse("vfio_group_status", out).flags == (uapi.VFIO_GROUP_FLAGS_VIABLE
                                                              | uapi.VFIO_GROUP_FLAGS_CONTAINER_SET)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(c))[0] == -errno.EINVAL
        assert h.ioctl(g, uapi._IO(";", 99))[0] == -errno.ENOTTY


def test_group_get_device_fd_errnos():
    """vfio_group_ioctl_get_device_fd(): no container -EINVAL, type1 before
    SET_IOMMU -EINVAL (vfio_group_use_container()), unknown name -ENODEV."""
    with _host() as h:
        g = h.open("/dev/vfio/1", O_RDWR)
        assert h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, b"0000:00:01.0\0")[0] == -errno.EINVAL
        c = h.open("/dev/vfio/vfio", O_RDWR)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(c))[0] == 0
        assert h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, b"0000:00:01.0\0")[0] == -errno.EINVAL
        assert h.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
        assert h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, b"0000:99:00.0\0")[0] == -errno.ENODEV
        dfd = h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, b"0000:00:01.0\0")[0]
        assert dfd > 0
        assert h.ioctl(g, uapi.VFIO_GROUP_UNSET_CONTAINER)[0] == -errno.EBUSY   # device open


def test_cdev_bind_rules_and_device_info():
    """Unbound cdev: only BIND (else -EINVAL).  vfio_df_ioctl_bind_iommufd():
    -EBADF, -EBADFD for a non-iommufd fd, out_devid written.  Device info and
    region info (BAR0 READ|WRITE|MMAP at VFIO_PCI_INDEX_TO_OFFSET(0)); index
    >= VFIO_PCI_NUM_REGIONS -EINVAL; a BAR mmap is VM_PFNMAP."""
    with _host() as h:
        d = h.open("/dev/vfio/devices/vfio0", O_RDWR)
        info = uapi.build("vfio_device_info")
        assert h.ioctl(d, uapi.VFIO_DEVICE_GET_INFO, info)[0] == -errno.EINVAL
        bind = lambda fd: uapi.build("vfio_device_bind_iommufd", iommufd=fd)  # noqa: E731
        assert h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind(99))[0] == -errno.EBADF
        assert h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind(h.memfd_create("x", 0)))[0] == -EBADFD
        ictx = h.open("/dev/iommu", O_RDWR)
        ret, out = h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind(ictx))
        assert ret == 0 and uapi.parse("vfio_device_bind_iommufd", out).out_devid > 0
        assert h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind(ictx))[0] == -errno.EINVAL
        ret, out = h.ioctl(d, uapi.VFIO_DEVICE_GET_INFO, info)
        di = uapi.parse("vfio_device_info", out)
        assert (ret, di.num_regions) == (0, uapi.VFIO_PCI_NUM_REGIONS)
        ret, out = h.ioctl(d, uapi.VFIO_DEVICE_GET_REGION_INFO, uapi.build("vfio_region_info", index=0))
        ri = uapi.parse("vfio_region_info", out)
        assert (ri.size, ri.offset) == (1 << 20, region_offset(0))
        assert ri.flags == (uapi.VFIO_REGION_INFO_FLAG_READ | uapi.VFIO_REGION_INFO_FLAG_WRITE
                            | uapi.VFIO_REGION_INFO_FLAG_MMAP)
        bad = uapi.build("vfio_region_info", index=uapi.VFIO_PCI_NUM_REGIONS)
        assert h.ioctl(d, uapi.VFIO_DEVICE_GET_REGION_INFO, bad)[0] == -errno.EINVAL
        bar = h.mmap(0, 1 << 20, PROT_READ, MAP_SHARED, d, 0)
        assert bar > 0 and h.pin_user_pages(bar, 1, write=False) == (-errno.EFAULT, [])
        detach = uapi.build("vfio_device_detach_iommufd_pt", flags=1)
        assert h.ioctl(d, uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, detach)[0] == -errno.EINVAL


def test_group_and_cdev_exclude_each_other():
    """device_cdev.c vfio_df_ioctl_bind_iommufd() -> vfio_device_block_group():
    -EBUSY while the group is open; group.c vfio_group_fops_open(): -EBUSY for a
    second open and while a cdev is bound (rig run iommufd-7.2 2026-11-23)."""
    with _host() as h:
        g = h.open("/dev/vfio/1", O_RDWR)
        assert g >= 0 and h.open("/dev/vfio/1", O_RDWR) == -errno.EBUSY
        d = h.open("/dev/vfio/devices/vfio0", O_RDWR)
        ictx = h.open("/dev/iommu", O_RDWR)
        bind = uapi.build("vfio_device_bind_iommufd", iommufd=ictx)
        assert h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind)[0] == -errno.EBUSY
        assert h.close(g) == 0
        assert h.ioctl(d, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind)[0] == 0
        assert h.open("/dev/vfio/1", O_RDWR) == -errno.EBUSY
        assert h.close(d) == 0                                   # unbind unblocks the group
        assert h.open("/dev/vfio/1", O_RDWR) >= 0


def test_type1_get_info_caps_packed_before_6_6():
    """vfio_info_cap_add() aligns each cap to 8 bytes from a881b496941f (6.6):
    VFIO_IOMMU_GET_INFO asks for 120 bytes; 6.1 packs them: 116 (rig run
    debian-6.1 2026-11-23)."""
    for profile, want in (("6.1", 116), ("6.6", 120), ("7.2", 120)):
        with _host(profile) as h:
            g = h.open("/dev/vfio/1", O_RDWR)
            c = h.open("/dev/vfio/vfio", O_RDWR)
            assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(c))[0] == 0
            assert h.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
            ret, out = h.ioctl(c, uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info"))
            assert (ret, uapi.parse("vfio_iommu_type1_info", out).argsz) == (0, want), profile


def test_compat_unset_container_with_a_device_fd_open():
    """group.c vfio_group_ioctl_unset_container(): container_users is checked
    for a type1 container only (-EBUSY above); an iommufd is dropped: 0, then
    -EINVAL (no container) (rig run iommufd-7.2 2026-11-23)."""
    with _host() as h:
        g = h.open("/dev/vfio/1", O_RDWR)
        i = h.open("/dev/iommu", O_RDWR)
        assert h.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, S32(i))[0] == 0
        assert h.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD, b"0000:00:01.0\0")[0] > 0
        assert h.ioctl(g, uapi.VFIO_GROUP_UNSET_CONTAINER)[0] == 0
        assert h.ioctl(g, uapi.VFIO_GROUP_UNSET_CONTAINER)[0] == -errno.EINVAL
