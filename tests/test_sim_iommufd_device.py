"""drivers/iommu/iommufd/device.c + hw_pagetable.c on SimHost: cdev bind,
attach, replace, HWPT allocation, release; and the proposed live-update
preserve ioctl (profile 7.2+lu)."""

from __future__ import annotations

from backends import uapi
from backends.host import (F_ADD_SEALS, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK,
                           F_SEAL_WRITE, O_RDWR)
from backends.simulated.dma import dma_read
from backends.simulated.iommu import MOCK_IOMMU, IommuHw, SimVfioDevice

from iommufd_env import E, P, R, U64_MAX, Env


# ============================================================================
# attach and reserved regions (device.c iommufd_device_attach() ->
# io_pagetable.c iopt_table_enforce_dev_resv_regions())
# ============================================================================

def test_attach_reserved_region_hits_an_area_eaddrinuse(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, P, 0xFEE01000)[0] == 0
    assert env.attach(ioas)[0] == -E.EADDRINUSE           # iopt_reserve_iova()
    assert env.map(ioas, va, P, 1 << 40)[0] == 0


# ============================================================================
# devices: cdev bind/attach (device.c, hw_pagetable.c)
# ============================================================================

def test_attach_reuses_a_compatible_auto_hwpt_and_splits_incompatible():
    e = Env(devices=[SimVfioDevice(), SimVfioDevice(name="b", group=2, cdev=1),
                     SimVfioDevice(name="m", group=3, cdev=2, hw=MOCK_IOMMU)])
    ioas = e.ioas()
    r0, r1, r2 = e.attach(ioas, 0), e.attach(ioas, 1), e.attach(ioas, 2)
    assert r0[0] == r1[0] == r2[0] == 0
    assert r0[1] == r1[1] != r2[1]
    assert e.ranges(ioas)[2].out_iova_alignment == P               # max(4096, 2048)
    assert e.devs[0].domain is e.devs[1].domain


def test_attach_to_hwpt_id_and_hwpt_alloc(env):
    """IOMMU_HWPT_ALLOC: a manual HWPT on the IOAS (filled at once); attach by id."""
    ioas = env.ioas()
    _, devid = env.bind()
    va = env.mem(2)
    assert env.map(ioas, va, 2 * P, 0x100000)[0] == 0
    ret, out = env.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas)
    assert ret == 0
    hwpt = out.out_hwpt_id
    assert env.counters()[0] == 2                                  # the domain pinned it
    assert env.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=99)[0] == -E.EINVAL
    assert env.call("IOMMU_HWPT_ALLOC", dev_id=99, pt_id=ioas)[0] == -E.ENOENT
    assert env.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas, __reserved=1)[0] == -E.EOPNOTSUPP
    assert env.call("IOMMU_HWPT_ALLOC", dev_id=devid, pt_id=ioas, data_len=4)[0] == -E.EINVAL
    assert env.attach(hwpt) == (0, hwpt)
    assert env.close_dev() == 0
    assert env.destroy(ioas) == -E.EBUSY                           # the manual HWPT stays
    assert env.destroy(hwpt) == 0
    assert env.counters() == (0, 0, 0)
    assert env.destroy(ioas) == 0


def test_attach_replace_moves_the_device(env):
    a, b = env.ioas(), env.ioas()
    va = env.mem(1, fill=b"A")
    assert env.map(a, va, P, 0x100000)[0] == 0
    ret, h1 = env.attach(a)
    assert ret == 0
    ret, h2 = env.attach(b)                       # vfio: replace when attached
    assert ret == 0 and h2 != h1
    assert dma_read(env.devs[0], 0x100000, 1)[0] == -E.EFAULT
    assert env.destroy(h1) == -E.ENOENT           # the old auto domain is gone
    assert env.counters() == (0, 0, 0)


def test_attach_domain_with_large_min_page_is_einval():
    e = Env(devices=[SimVfioDevice(hw=IommuHw(pgsize_bitmap=0x2000 | 0x200000))])
    assert e.attach(e.ioas())[0] == -E.EINVAL         # iopt_table_add_domain(): > PAGE_SIZE


def test_bind_owned_by_another_iommufd_is_ebusy(env):
    assert env.bind()[0] == 0
    fd2 = env.h.open("/dev/iommu", O_RDWR)
    dfd = env.h.open("/dev/vfio/devices/vfio0", O_RDWR)
    ret, _ = env.raw(uapi.VFIO_DEVICE_BIND_IOMMUFD, uapi.build("vfio_device_bind_iommufd", iommufd=fd2), fd=dfd)
    assert ret == -E.EBUSY


def test_close_iommufd_while_bound_keeps_the_context(env):
    """The device holds a context reference (iommufd_ctx_get()): closing the
    /dev/iommu fd keeps DMA working until the device is closed."""
    ioas = env.ioas()
    va = env.mem(1, fill=b"keep")
    assert env.map(ioas, va, P, 0x100000)[0] == 0
    assert env.attach(ioas)[0] == 0
    assert env.h.close(env.fd) == 0
    assert dma_read(env.devs[0], 0x100000, 4) == (4, b"keep")
    assert env.counters()[0] == 1
    assert env.close_dev() == 0
    assert env.counters() == (0, 0, 0) and env.devs[0].domain is None


def test_release_unpins_and_uncharges_everything(env):
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, env.mem(8), 8 * P, 0x100000)[0] == 0
    assert env.map_file(ioas, env.memfd(4 * P), 0, 4 * P, 0x200000)[0] == 0
    assert env.counters() == (12, 12, 0)
    env.h.close_all()
    assert env.counters() == (0, 0, 0)
    assert env.devs[0].domain is None


# ============================================================================
# Live update v1 (posted to the iommu list, NOT merged; docs/kernel-model.md), profile 7.2+lu.
# 10/14: IOMMU_HWPT_LU_SET_PRESERVE only marks; 11/14: preserving the iommufd fd
# in the LUO session (iommufd_save_hwpts()) checks every marked HWPT.
# ============================================================================

LU_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK


def _lu_env():
    e = Env("7.2+lu", devices=[SimVfioDevice(), SimVfioDevice(name="b", group=2, cdev=1)])
    ioas = e.ioas()
    ret, hwpt = e.attach(ioas)
    assert ret == 0
    return e, ioas, hwpt


def _mark(e: Env, hwpt: int, token: int = 1) -> int:
    return e.call("IOMMU_HWPT_LU_SET_PRESERVE", hwpt_id=hwpt, hwpt_token=token)[0]


def _preserve(e: Env, hwpt: int, token: int = 1) -> int:
    """Mark the HWPT, then preserve the iommufd fd: what iommufd_save_hwpts() says."""
    assert _mark(e, hwpt, token) == 0
    return e.h.luo_preserve(e.fd)


def test_lu_only_on_the_lu_profile():
    e = Env("7.2")
    ioas = e.ioas()
    _, hwpt = e.attach(ioas)
    assert _mark(e, hwpt) == -E.ENOTTY


def test_lu_seal_after_map_is_einval_seal_before_is_preserved():
    """Seals are cached at MAP_FILE time; sealing later does not count (v1 11/14
    check_iopt_pages_preserved(); kept in the v2 13/16 review, 2026-05-22)."""
    e, ioas, hwpt = _lu_env()
    fd = e.memfd(4 * P)
    assert e.map_file(ioas, fd, 0, 4 * P, 0x100000)[0] == 0
    assert e.h.fcntl(fd, F_ADD_SEALS, LU_SEALS) == 0
    assert e.h.luo_preserve(fd) == 0
    assert _preserve(e, hwpt) == -E.EINVAL
    e, ioas, hwpt = _lu_env()
    fd = e.memfd(4 * P, LU_SEALS)
    assert e.map_file(ioas, fd, 0, 4 * P, 0x100000)[0] == 0
    assert _preserve(e, hwpt) == -E.ENOENT        # the file is not in the session yet
    assert e.h.luo_preserve(fd) == 0
    assert e.h.luo_preserve(e.fd) == 0


def test_lu_va_area_and_missing_seals_are_einval():
    e, ioas, hwpt = _lu_env()
    assert e.map(ioas, e.mem(), P, 0x100000)[0] == 0
    assert _preserve(e, hwpt) == -E.EINVAL
    e, ioas, hwpt = _lu_env()
    fd = e.memfd(P, F_SEAL_SEAL | F_SEAL_GROW)          # no SHRINK
    e.h.luo_preserve(fd)
    assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
    assert _preserve(e, hwpt) == -E.EINVAL


def test_lu_a_failed_preserve_leaves_the_ioas_mutable_an_unmarked_hwpt_is_not_checked():
    e, ioas, hwpt = _lu_env()
    assert e.map(ioas, e.mem(), P, 0x100000)[0] == 0
    assert e.h.luo_preserve(e.fd) == 0                  # nothing marked: nothing checked
    assert _preserve(e, hwpt) == -E.EINVAL
    assert e.unmap(ioas, 0x100000, P)[0] == 0           # iommufd_set_ioas_mutable()
    assert e.h.luo_preserve(e.fd) == 0                  # an empty IOAS passes


def test_lu_after_preserve_map_unmap_copy_ebusy_token_reuse_eaddrinuse():
    e, ioas, hwpt = _lu_env()
    fd = e.memfd(4 * P, LU_SEALS | F_SEAL_WRITE)
    assert e.map_file(ioas, fd, 0, 4 * P, 0x100000, flags=R)[0] == 0
    e.h.luo_preserve(fd)
    assert _preserve(e, hwpt, 7) == 0
    assert e.map_file(ioas, fd, 0, P, 0x900000, flags=R)[0] == -E.EBUSY
    assert e.map(ioas, e.mem(), P, 0x900000)[0] == -E.EBUSY
    assert e.unmap(ioas, 0x100000, 4 * P)[0] == -E.EBUSY
    assert e.unmap(ioas, 0, U64_MAX)[0] == -E.EBUSY
    assert e.copy(ioas, ioas, P, 0x100000, 0x900000, flags=R)[0] == -E.EBUSY
    assert _mark(e, hwpt, 7) == 0                       # re-marking the same HWPT
    other = e.ioas()
    ret, hwpt2 = e.attach(other, 1)
    assert ret == 0
    assert _mark(e, hwpt2, 7) == -E.EADDRINUSE
    assert _mark(e, 999, 8) == -E.ENOENT
    assert _mark(e, ioas, 8) == -E.ENOENT               # an IOAS is not an HWPT
