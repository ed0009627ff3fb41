"""Guest-side fixtures for the rig's test sets (backends/rig/sets.py).

These tests drive /dev/iommu, /dev/vfio and the edu device of a kernel booted
by ``vfio-emu rig run`` (backends/rig/boot.py sets RIG_GUEST=1 and friends).
On the host they are not collected (pyproject testpaths) or skipped:
tests/test_rig.py is the host side that boots the guests.

Environment from the rig: RIG_KERNEL (name), RIG_RELEASE, RIG_FEATURES
(``iommufd,type1,selftests,...`` from the kernel's config and patches),
RIG_SELFTESTS (directory of the kernel's selftest binaries).
"""

from __future__ import annotations

import os

import pytest

from backends.rig.guest.hosts import linux_hosts, real  # noqa: F401  (fixtures)
from backends.rig.guest.rigutil import Raw, need

from backends import uapi
from backends.host import O_RDWR

IN_GUEST = os.environ.get("RIG_GUEST") == "1"


def pytest_collection_modifyitems(config, items):
    """The host's test run never collects this package (testpaths = tests); a file
    named on the host's command line is collected anyway: skip it."""
    if IN_GUEST:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    skip = pytest.mark.skip(reason="a rig guest test: run it with vfio-emu rig run")
    for item in items:
        if os.path.dirname(str(item.path)) == here:
            item.add_marker(skip)


@pytest.fixture
def raw(real):
    """Raw ioctls on a LinuxHost; ``real`` (hosts.py) checks nothing leaks."""
    return Raw(real)


@pytest.fixture
def edu_bdf():
    from backends.rig.edu import edu_devices
    devs = edu_devices()
    if not devs:
        pytest.fail("no edu device in the guest (QEMU -device edu)")
    return devs[0]


@pytest.fixture
def iommufd(raw):
    need("iommufd", "/dev/iommu")
    fd = raw.host.open("/dev/iommu", O_RDWR)
    assert fd >= 0, fd
    return fd


@pytest.fixture
def ioas(raw, iommufd):
    return raw.ioas_alloc(iommufd)


@pytest.fixture
def attached(raw, iommufd, ioas, edu_bdf):
    """(cdev fd, devid, hwpt id): edu bound to the iommufd and attached to ``ioas``
    (a real VT-d domain: pinning is eager from here on)."""
    from backends.rig.edu import vfio_cdev
    cdev = raw.host.open(vfio_cdev(edu_bdf), O_RDWR)
    assert cdev >= 0, cdev
    devid, hwpt = raw.bind_attach(cdev, iommufd, ioas)
    return cdev, devid, hwpt


@pytest.fixture
def type1(raw, edu_bdf):
    """(container fd, group fd) of edu's group with VFIO_TYPE1v2_IOMMU set."""
    need("type1", "/dev/vfio/vfio")
    from backends.rig.edu import iommu_group
    container = raw.host.open("/dev/vfio/vfio", O_RDWR)
    group = raw.host.open(f"/dev/vfio/{iommu_group(edu_bdf)}", O_RDWR)
    assert container >= 0 and group >= 0, (container, group)
    ret, _ = raw.host.ioctl(group, uapi.VFIO_GROUP_SET_CONTAINER,
                            container.to_bytes(4, "little", signed=True))
    assert ret == 0, ret
    assert raw.host.ioctl(container, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    return container, group
