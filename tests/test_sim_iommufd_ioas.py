"""drivers/iommu/iommufd/ioas.c on SimHost: the IOAS ioctls' own argument checks
and write-back (MAP, UNMAP, MAP_FILE, ALLOC, IOVA_RANGES, ALLOW_IOVAS, COPY,
OPTION, VFIO_IOAS, CHANGE_PROCESS)."""

from __future__ import annotations

import pytest

from backends import uapi

from iommufd_env import E, FIXED, P, R, U64_MAX, W, Env


# ============================================================================
# IOMMU_IOAS_MAP (ioas.c iommufd_ioas_map() -> io_pagetable.c iopt_map_user_pages())
# ============================================================================

def test_map_flag_and_reserved_checks(env):
    """iommufd_ioas_map(): EOPNOTSUPP (flag/__reserved) -> EOVERFLOW -> EINVAL no R/W."""
    ioas, va = env.ioas(), env.mem()
    assert env.call("IOMMU_IOAS_MAP", flags=R | 8, ioas_id=ioas, user_va=va, length=P)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_IOAS_MAP", flags=R, __reserved=1, ioas_id=ioas, user_va=va,
                    length=P)[0] == -E.EOPNOTSUPP
    assert env.map(ioas, va, U64_MAX, 0)[0] == -E.EOVERFLOW
    assert env.call("IOMMU_IOAS_MAP", flags=R | FIXED, ioas_id=ioas, user_va=va, length=P,
                    iova=U64_MAX)[0] == -E.EOVERFLOW
    assert env.map(ioas, va, P, 0, flags=0)[0] == -E.EINVAL
    # order: unknown flag beats the overflow and the missing R/W
    assert env.call("IOMMU_IOAS_MAP", flags=8, ioas_id=ioas, user_va=va, length=U64_MAX)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_IOAS_MAP", flags=0, ioas_id=99, user_va=va, length=U64_MAX)[0] == -E.EOVERFLOW


def test_map_iova_written_back_only_on_success(env):
    ioas, va = env.ioas(), env.mem()
    data = uapi.build("iommu_ioas_map", flags=R | W, ioas_id=ioas, user_va=va, length=P, iova=0x5555)
    ret, out = env.raw(uapi.IOMMU_IOAS_MAP, data)
    assert ret == 0 and uapi.parse("iommu_ioas_map", out).iova != 0x5555
    bad = uapi.build("iommu_ioas_map", flags=R | W, ioas_id=ioas, user_va=va, length=0, iova=0x5555)
    assert env.raw(uapi.IOMMU_IOAS_MAP, bad) == (-E.EINVAL, bad)


# ============================================================================
# IOMMU_IOAS_UNMAP (ioas.c iommufd_ioas_unmap() -> io_pagetable.c iopt_unmap_iova_range())
# ============================================================================

def test_unmap_checks(env):
    """iopt_unmap_iova(): length 0 EINVAL; wrap EOVERFLOW; iova/length >= ULONG_MAX EOVERFLOW."""
    ioas = env.ioas()
    assert env.unmap(ioas, 0x1000, 0)[0] == -E.EINVAL
    assert env.unmap(ioas, 1 << 63, 1 << 63)[0] == -E.ENOENT       # ends exactly at U64_MAX
    assert env.unmap(ioas, (1 << 63) + P, 1 << 63)[0] == -E.EOVERFLOW
    assert env.unmap(ioas, U64_MAX, 1)[0] == -E.EOVERFLOW
    assert env.unmap(ioas, 1, U64_MAX)[0] == -E.EOVERFLOW
    assert env.unmap(77, 0, U64_MAX)[0] == -E.ENOENT


def test_unmap_writes_back_length_only_on_success(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, 2 * P, 0x100000)[0] == 0
    bad = uapi.build("iommu_ioas_unmap", ioas_id=ioas, iova=0x100000, length=P)
    assert env.raw(uapi.IOMMU_IOAS_UNMAP, bad) == (-E.ENOENT, bad)
    ret, out = env.raw(uapi.IOMMU_IOAS_UNMAP, uapi.build("iommu_ioas_unmap", ioas_id=ioas,
                                                          iova=0x100000, length=2 * P))
    assert ret == 0 and uapi.parse("iommu_ioas_unmap", out).length == 2 * P


# ============================================================================
# IOMMU_IOAS_MAP_FILE (6.13+; ioas.c iommufd_ioas_map_file())
# ============================================================================

def test_map_file_argument_checks(env):
    ioas, fd = env.ioas(), env.memfd()
    assert env.map_file(ioas, fd, 0, P, 0, flags=R | 8)[0] == -E.EOPNOTSUPP
    assert env.map_file(ioas, fd, 0, U64_MAX, 0)[0] == -E.EOVERFLOW
    assert env.map_file(ioas, fd, 0, P, 0, flags=0)[0] == -E.EINVAL
    assert env.map_file(99, fd, 0, P, 0)[0] == -E.ENOENT
    assert env.map_file(ioas, -1, 0, P, 0)[0] == -E.EBADF
    assert env.map_file(ioas, fd, 0, 0, 0)[0] == -E.EINVAL
    assert env.map_file(ioas, fd, U64_MAX - 10, 100, 0)[0] == -E.EOVERFLOW


@pytest.mark.parametrize("profile,length0_badfd,destroy_after_ebadf", [
    ("6.13", -E.EBADF, -E.EBUSY),     # fget() in ioas.c first; EBADF leaks the IOAS ref
    ("6.18", -E.EBADF, -E.EBUSY),
    ("6.19", -E.EINVAL, 0),           # length checks before the fd (iopt_map_file_pages)
    ("7.2", -E.EINVAL, 0)])
def test_map_file_fget_order_and_ioas_leak(profile, length0_badfd, destroy_after_ebadf):
    """profile.map_file_fget_in_ioas (6.13-6.18: fget() in iommufd_ioas_map_file();
    the leak is a code-read, UNVERIFIED; backends/kernel_profiles.SOURCES)."""
    e = Env(profile)
    ioas = e.ioas()
    assert e.map_file(ioas, 555, 0, 0, 0)[0] == length0_badfd
    assert e.map_file(ioas, 555, 0, P, 0)[0] == -E.EBADF
    assert e.destroy(ioas) == destroy_after_ebadf


# ============================================================================
# the other IOAS ioctls: ALLOC, IOVA_RANGES, ALLOW_IOVAS, COPY, CHANGE_PROCESS
# (ioas.c), OPTION (main.c iommufd_option()), VFIO_IOAS (vfio_compat.c)
# ============================================================================

def test_ioas_alloc_flags_and_destroy(env):
    assert env.call("IOMMU_IOAS_ALLOC", flags=1)[0] == -E.EOPNOTSUPP
    ioas = env.ioas()
    assert env.destroy(ioas) == 0
    assert env.destroy(ioas) == -E.ENOENT


def test_iova_ranges(env):
    """iommufd_ioas_iova_ranges(): holes of reserved_itree; EMSGSIZE writes back
    num_iovas and out_iova_alignment, only the first num entries written."""
    ioas = env.ioas()
    assert env.ranges(ioas)[:2] == (0, [(0, U64_MAX)])
    assert env.ranges(ioas)[2].out_iova_alignment == 1
    assert env.attach(ioas)[0] == 0
    ret, ranges, out = env.ranges(ioas)
    assert (ret, ranges, out.out_iova_alignment) == (0, [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)], P)
    ret, ranges, out = env.ranges(ioas, 1)
    assert (ret, out.num_iovas, ranges) == (-E.EMSGSIZE, 2, [(0, 0xFEDFFFFF)])
    assert env.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, __reserved=1)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=9)[0] == -E.ENOENT
    assert env.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=2,
                    allowed_iovas=0x1000)[0] == -E.EFAULT
    ret, out = env.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=0, allowed_iovas=0)
    assert (ret, out.num_iovas) == (-E.EMSGSIZE, 2)


def test_allow_iovas(env):
    """iommufd_ioas_load_iovas() EINVAL start >= last / overlaps; EFAULT;
    iopt_set_allow_iova() EADDRINUSE on reserved; 0 clears; reserving later over
    an allowed range -> EADDRINUSE (attach)."""
    ioas = env.ioas()
    assert env.allow(ioas, [(0x1000, 0x1000)]) == -E.EINVAL
    assert env.allow(ioas, [(0x1000, 0x5000), (0x5000, 0x9000)]) == -E.EINVAL
    assert env.call("IOMMU_IOAS_ALLOW_IOVAS", ioas_id=ioas, num_iovas=1, allowed_iovas=8)[0] == -E.EFAULT
    assert env.call("IOMMU_IOAS_ALLOW_IOVAS", ioas_id=ioas, __reserved=1)[0] == -E.EOPNOTSUPP
    assert env.allow(ioas, [(0xFEE00000, 0xFEE0FFFF)]) == 0
    assert env.attach(ioas)[0] == -E.EADDRINUSE            # the MSI window hits an allowed range
    assert env.allow(ioas, []) == 0
    assert env.attach(ioas)[0] == 0
    assert env.allow(ioas, [(0xFEE00000, 0xFEE0FFFF)]) == -E.EADDRINUSE
    assert env.allow(ioas, [(0x100000, 0x1FFFFF)]) == 0


def test_copy(env):
    """iommufd_ioas_copy(): EOPNOTSUPP flags; EOVERFLOW; EINVAL no R/W; ENOENT
    not covered; sub-ranges fine; EPERM WRITEABLE from a read-only source."""
    src, dst = env.ioas(), env.ioas()
    va = env.mem(8)
    assert env.map(src, va, 4 * P, 0x100000)[0] == 0
    assert env.map(src, va, 4 * P, 0x104000, flags=R)[0] == 0
    assert env.copy(dst, src, P, 0x100000, 0, flags=R | 16)[0] == -E.EOPNOTSUPP
    assert env.copy(dst, src, U64_MAX, 0x100000, 0)[0] == -E.EOVERFLOW
    assert env.copy(dst, src, P, 0x100000, 0, flags=0)[0] == -E.EINVAL
    assert env.copy(dst, src, P, 0x200000, 0)[0] == -E.ENOENT
    assert env.copy(dst, src, 0, 0x100000, 0)[0] == -E.EINVAL
    assert env.copy(dst, src, 9 * P, 0x100000, 0)[0] == -E.ENOENT
    assert env.copy(dst, src, 2 * P, 0x101000, 0x500000)[0] == 0       # a sub-range
    assert env.copy(dst, src, 8 * P, 0x100000, 0x600000)[0] == -E.EPERM
    assert env.copy(dst, src, 8 * P, 0x100000, 0x600000, flags=R)[0] == 0
    assert env.copy(99, src, P, 0x100000, 0)[0] == -E.ENOENT


def test_option_rlimit_mode(env):
    """iommufd_option_rlimit_mode(): EOPNOTSUPP object_id/op; EPERM without
    CAP_SYS_RESOURCE; EBUSY with objects; EINVAL bad value."""
    RL, SET, GET = uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET
    assert env.option(RL, GET) == (0, 0)
    assert env.option(RL, GET, 5)[0] == -E.EOPNOTSUPP
    assert env.option(RL, 7)[0] == -E.EOPNOTSUPP
    assert env.option(RL, SET, 0, 2)[0] == -E.EINVAL
    assert env.option(RL, SET, 0, 1)[0] == 0
    assert env.option(RL, GET) == (0, 1)
    assert env.option(9, GET)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_OPTION", option_id=RL, op=GET, __reserved=1)[0] == -E.EOPNOTSUPP
    env.ioas()
    assert env.option(RL, SET, 0, 0)[0] == -E.EBUSY
    e = Env()
    e.h.cap_sys_resource = False
    assert e.option(RL, SET, 0, 1)[0] == -E.EPERM


def test_option_huge_pages(env):
    """iommufd_ioas_option(): ENOENT not an IOAS; EINVAL bad value; SET 0 with a
    domain and areas -> EINVAL; areas misaligned to PAGE_SIZE -> EADDRINUSE."""
    ioas, va = env.ioas(), env.mem()
    assert env.huge_pages(0)[0] == -E.ENOENT
    assert env.huge_pages(ioas) == (0, 1)
    assert env.huge_pages(ioas, 2) == -E.EINVAL
    assert env.map(ioas, va + 8, P, 0x100008)[0] == 0
    assert env.huge_pages(ioas, 0) == -E.EADDRINUSE
    assert env.unmap(ioas, 0, U64_MAX)[0] == 0
    assert env.huge_pages(ioas, 0) == 0
    assert env.ranges(ioas)[2].out_iova_alignment == P
    assert env.huge_pages(ioas, 1) == 0
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, va, P, 0x100000)[0] == 0
    assert env.huge_pages(ioas, 0) == -E.EINVAL


def test_vfio_ioas(env):
    """iommufd_vfio_ioas(): GET ENODEV; SET ENOENT; bad op/__reserved EOPNOTSUPP."""
    V = uapi
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_GET)[0] == -E.ENODEV
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_SET, ioas_id=0)[0] == -E.ENOENT
    ioas = env.ioas()
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_GET) == (0, uapi.parse(
        "iommu_vfio_ioas", uapi.build("iommu_vfio_ioas", ioas_id=ioas, op=0)))
    assert env.call("IOMMU_VFIO_IOAS", op=7)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_VFIO_IOAS", op=0, __reserved=1)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_CLEAR)[0] == 0
    assert env.call("IOMMU_VFIO_IOAS", op=V.IOMMU_VFIO_IOAS_GET)[0] == -E.ENODEV


def test_change_process(env):
    """iommufd_ioas_change_process(): EINVAL with a user-VA area; 0 with file areas only."""
    ioas = env.ioas()
    assert env.map_file(ioas, env.memfd(P), 0, P, 0x100000)[0] == 0
    assert env.call("IOMMU_IOAS_CHANGE_PROCESS")[0] == 0
    assert env.call("IOMMU_IOAS_CHANGE_PROCESS", __reserved=1)[0] == -E.EOPNOTSUPP
    assert env.map(ioas, env.mem(), P, 0x200000)[0] == 0
    assert env.call("IOMMU_IOAS_CHANGE_PROCESS")[0] == -E.EINVAL
