"""drivers/iommu/iommufd/main.c on SimHost: the ioctl framing of
iommufd_fops_ioctl(), the op table per kernel profile, object ids and
IOMMU_DESTROY, and random ioctl bytes that must never raise."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from backends import uapi
from backends.host import O_RDWR
from backends.simulated import SimHost
from backends.simulated.vfio import install

from iommufd_env import E, P, Env


# ============================================================================
# ioctl framing (drivers/iommu/iommufd/main.c iommufd_fops_ioctl(); the same since 6.2)
# ============================================================================

NATIVE = ["IOMMU_DESTROY", "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_ALLOW_IOVAS", "IOMMU_IOAS_COPY",
          "IOMMU_IOAS_IOVA_RANGES", "IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP", "IOMMU_OPTION",
          "IOMMU_VFIO_IOAS", "IOMMU_IOAS_MAP_FILE", "IOMMU_IOAS_CHANGE_PROCESS", "IOMMU_HWPT_ALLOC"]


def test_framing_efault_for_int_or_short_arg(env):
    """get_user(size) faults: a NULL/int argument or fewer than 4 bytes -> EFAULT."""
    for arg in (0, 12345, b"", b"\x08\x00"):
        assert env.raw(uapi.IOMMU_DESTROY, arg)[0] == -E.EFAULT


@pytest.mark.parametrize("name", NATIVE)
def test_framing_size_below_min_is_einval(env, name):
    ioc = uapi.IOCTLS[name]
    data = struct.pack("<I", ioc.min_size - 1) + bytes(ioc.size - 4)
    assert env.raw(ioc.nr, data)[0] == -E.EINVAL


@pytest.mark.parametrize("name", NATIVE)
def test_framing_trailing_bytes(env, name):
    """copy_struct_from_user(): a non-zero byte past sizeof -> E2BIG; zero
    bytes -> the same answer as size == sizeof."""
    ioc = uapi.IOCTLS[name]
    base = uapi.build(ioc.arg)
    big = struct.pack("<I", ioc.size + 1) + base[4:]
    assert env.raw(ioc.nr, big + b"\xff")[0] == -E.E2BIG
    r_exact = Env().raw(ioc.nr, base)[0]
    assert env.raw(ioc.nr, big + b"\x00")[0] == r_exact


def test_framing_buffer_shorter_than_size_is_efault(env):
    data = uapi.build("iommu_ioas_alloc")[:8]               # size says 12, 8 bytes given
    assert env.raw(uapi.IOMMU_IOAS_ALLOC, data)[0] == -E.EFAULT


def test_framing_short_size_is_zero_extended(env):
    """size between min_size and sizeof: the rest reads as zero."""
    data = struct.pack("<III", 12, 0, 0)
    assert env.raw(uapi.IOMMU_IOAS_ALLOC, data)[0] == 0


def test_framing_unknown_numbers_are_enotty(env):
    """nr < 0x80 or past the op table -> iommufd_vfio_ioctl() -> ENOTTY; a number
    in the table whose cmd differs (other dir/size bits) -> ENOTTY."""
    assert env.raw(uapi._IO(";", 0x7F), b"")[0] == -E.ENOTTY
    assert env.raw(uapi._IO(";", 0xA0), bytes(64))[0] == -E.ENOTTY
    assert env.raw(uapi._IOWR(";", 0x85, 40), uapi.build("iommu_ioas_map"))[0] == -E.ENOTTY
    assert env.raw(uapi._IO("x", 0x85), uapi.build("iommu_ioas_map"))[0] == -E.ENOTTY


@pytest.mark.parametrize("profile,map_file,null_arg", [
    ("6.12", -E.ENOTTY, -E.ENOTTY),      # 0x8f past the 6.12 table (0x8e): compat path
    ("6.13", 0, -E.EFAULT),              # in the table: get_user() faults first
    ("7.2", 0, -E.EFAULT)])
def test_map_file_and_change_process_exist_from_6_13(profile, map_file, null_arg):
    """IOMMU_IOAS_MAP_FILE / CHANGE_PROCESS: 6.13 (profile.map_file, change_process)."""
    e = Env(profile)
    ioas = e.ioas()
    fd = e.memfd()
    assert e.map_file(ioas, fd, 0, P)[0] == map_file
    assert e.raw(uapi.IOMMU_IOAS_MAP_FILE, 0)[0] == null_arg
    assert e.call("IOMMU_IOAS_CHANGE_PROCESS")[0] == (-E.ENOTTY if profile == "6.12" else 0)


def test_get_hw_info_answers_as_intel_vtd(env):
    """IOMMU_GET_HW_INFO (iommufd_get_hw_info(), 6.6+): -EOPNOTSUPP flags, -ENOENT
    an id that is not a bound device, then the VT-d info: data_len 24, type
    INTEL_VTD, the 24 bytes at data_uptr and the rest of the user's buffer zeroed."""
    assert env.call("IOMMU_GET_HW_INFO", flags=1)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_GET_HW_INFO", dev_id=1)[0] == -E.ENOENT
    ret, devid = env.bind()
    assert ret == 0
    va = env.mem(1, fill=b"\xff" * 32)
    ret, out = env.call("IOMMU_GET_HW_INFO", dev_id=devid, data_len=32, data_uptr=va)
    assert (ret, out.data_len, out.out_data_type) == (0, 24, uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD)
    cap = (38 << 16) | (0x2 << 8)
    assert env.h.read_mem(va, 32) == (32, bytes(8) + cap.to_bytes(8, "little") + bytes(16))


def test_no_iommufd_node_before_6_2_profiles():
    h = SimHost("6.1")
    install(h)
    assert h.open("/dev/iommu", O_RDWR) == -E.ENOENT


def test_ids_from_1_lowest_free_shared_by_types(env):
    """XA_FLAGS_ALLOC1: 1, 2, 3...; a destroyed id is reused; devices and HWPTs
    share the space (rig: IOAS 1, devid 2, hwpt 3)."""
    assert [env.ioas(), env.ioas(), env.ioas()] == [1, 2, 3]
    assert env.destroy(2) == 0
    assert env.ioas() == 2
    ret, devid = env.bind()
    assert (ret, devid) == (0, 4)
    assert env.attach(1) == (0, 5)


def test_unknown_or_wrong_type_id_is_enoent(env):
    ioas = env.ioas()
    _, devid = env.bind()
    va = env.mem()
    assert env.map(99, va, P, 0)[0] == -E.ENOENT
    assert env.map(devid, va, P, 0)[0] == -E.ENOENT              # a device, not an IOAS
    assert env.destroy(0) == -E.ENOENT
    assert env.map(ioas, va, P, 0)[0] == 0


# ============================================================================
# IOMMU_DESTROY (main.c iommufd_destroy() -> iommufd_object_remove())
# ============================================================================

def test_destroy_in_use_is_ebusy_until_detached(env):
    """iommufd_object_remove(): users != 1 -> EBUSY (IOAS with a HWPT, HWPT with a
    device, a bound device)."""
    ioas = env.ioas()
    ret, hwpt = env.attach(ioas)
    assert ret == 0
    assert env.destroy(ioas) == -E.EBUSY
    assert env.destroy(hwpt) == -E.EBUSY
    devid = next(i for i, o in env.ctx.objects.items() if o.kind == "DEVICE")
    assert env.destroy(devid) == -E.EBUSY
    assert env.close_dev() == 0
    assert env.destroy(hwpt) == -E.ENOENT          # the auto domain died with the device
    assert env.destroy(ioas) == 0


# ============================================================================
# properties (hypothesis)
# ============================================================================

REQUESTS = [ioc.nr for ioc in uapi.IOCTLS.values() if ioc.fd in ("iommufd", "container")] + \
    [uapi.IOMMU_HWPT_LU_SET_PRESERVE, uapi._IO(";", 0x7F), uapi._IO(";", 0x90)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REQUESTS), st.one_of(st.binary(max_size=80), st.integers(-2, 2 ** 64)),
       st.sampled_from(["6.6", "6.13", "7.2", "7.2+lu"]))
def test_property_random_ioctl_bytes_never_raise(request_nr, arg, profile):
    e = Env(profile)
    e.ioas()
    e.attach(1)
    ret, out = e.raw(request_nr, arg)
    assert isinstance(ret, int) and isinstance(out, bytes)
    if isinstance(arg, bytes):
        assert len(out) == len(arg)
