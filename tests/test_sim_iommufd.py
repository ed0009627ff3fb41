"""The simulated /dev/iommu (backends/simulated/iommufd/ and its kernel-named
modules) driven with raw ioctls and uapi bytes through SimHost.

Every expected errno cites research kernel-iommu-errno.md ("§2.1" ...) or the
real 7.2.13 kernel of kernel-rig.md §4a/§4b ("rig"), and the kernel function
that decides it.  ``Env`` is the harness (also used by test_sim_selftests.py).
"""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends import uapi
from backends.host import (F_ADD_SEALS, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL,
                           F_SEAL_SHRINK, F_SEAL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
                           MFD_ALLOW_SEALING, O_CREAT, O_RDONLY, O_RDWR, PAGE_SIZE, PROT_READ,
                           PROT_WRITE)
from backends.simulated import SimHost
from backends.simulated.dma import dma_read, dma_write
from backends.simulated.iommu import MOCK_IOMMU, IommuHw, SimVfioDevice
from backends.simulated.vfio import install, region_offset

P = PAGE_SIZE
U64_MAX = (1 << 64) - 1
RW = PROT_READ | PROT_WRITE
FIXED, W, R = uapi.IOMMU_IOAS_MAP_FIXED_IOVA, uapi.IOMMU_IOAS_MAP_WRITEABLE, uapi.IOMMU_IOAS_MAP_READABLE
E = errno


class Env:
    """A SimHost with VFIO devices installed and /dev/iommu open.

    ``devices``: SimVfioDevice list (default one VT-d edu-like device, cdev 0).
    Every helper returns the kernel answer: (ret, parsed fields) or ret."""

    def __init__(self, profile: str = "7.2", devices=None, **host_kw):
        self.h = SimHost(profile, **host_kw)
        self.devs = install(self.h, devices if devices is not None else [SimVfioDevice()])
        self.fd = self.h.open("/dev/iommu", O_RDWR)
        assert self.fd >= 0
        self.cdevs: dict[int, int] = {}

    @property
    def ctx(self):
        return self.h.fds[self.fd].dev

    # raw
    def raw(self, request: int, arg, fd: int | None = None):
        return self.h.ioctl(self.fd if fd is None else fd, request, arg)

    def call(self, name: str, **fields):
        ioc = uapi.IOCTLS[name] if name in uapi.IOCTLS else None
        req = ioc.nr if ioc else uapi.IOMMU_HWPT_LU_SET_PRESERVE
        sname = ioc.arg if ioc else "iommu_hwpt_lu_set_preserve"
        ret, out = self.raw(req, uapi.build(sname, **fields))
        return ret, uapi.parse(sname, out)

    # objects
    def ioas(self) -> int:
        ret, out = self.call("IOMMU_IOAS_ALLOC")
        assert ret == 0
        return out.out_ioas_id

    def destroy(self, obj_id: int) -> int:
        return self.call("IOMMU_DESTROY", id=obj_id)[0]

    # memory
    def mem(self, npages: int = 16, prot: int = RW, fill: bytes | None = None) -> int:
        va = self.h.mmap(0, npages * P, prot, MAP_PRIVATE | MAP_ANONYMOUS)
        assert va > 0
        if fill is not None and prot & PROT_WRITE:
            assert self.h.write_mem(va, fill) == len(fill)
        return va

    def memfd(self, size: int = 16 * P, seals: int = 0, data: bytes | None = None) -> int:
        fd = self.h.memfd_create("guest", MFD_ALLOW_SEALING)
        assert self.h.ftruncate(fd, size) == 0
        if data:
            assert self.h.pwrite(fd, data, 0) == len(data)
        if seals:
            assert self.h.fcntl(fd, F_ADD_SEALS, seals) == 0
        return fd

    # map / unmap
    def map(self, ioas: int, va: int, length: int, iova: int | None = None, flags: int = R | W):
        fl = flags | (FIXED if iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_MAP", flags=fl, ioas_id=ioas, user_va=va, length=length,
                             iova=iova or 0)
        return ret, out.iova

    def map_file(self, ioas: int, fd: int, start: int, length: int, iova: int | None = None,
                 flags: int = R | W):
        fl = flags | (FIXED if iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_MAP_FILE", flags=fl, ioas_id=ioas, fd=fd, start=start,
                             length=length, iova=iova or 0)
        return ret, out.iova

    def unmap(self, ioas: int, iova: int, length: int):
        ret, out = self.call("IOMMU_IOAS_UNMAP", ioas_id=ioas, iova=iova, length=length)
        return ret, out.length

    def copy(self, dst: int, src: int, length: int, src_iova: int, dst_iova: int | None = None,
             flags: int = R | W):
        fl = flags | (FIXED if dst_iova is not None else 0)
        ret, out = self.call("IOMMU_IOAS_COPY", flags=fl, dst_ioas_id=dst, src_ioas_id=src,
                             length=length, dst_iova=dst_iova or 0, src_iova=src_iova)
        return ret, out.dst_iova

    def option(self, option_id: int, op: int, object_id: int = 0, val: int = 0):
        ret, out = self.call("IOMMU_OPTION", option_id=option_id, op=op, object_id=object_id,
                             val64=val)
        return ret, out.val64

    def huge_pages(self, ioas: int, val: int | None = None):
        if val is None:
            return self.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, ioas)
        return self.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, ioas, val)[0]

    def ranges(self, ioas: int, num: int = 16):
        buf = self.mem(1)
        ret, out = self.call("IOMMU_IOAS_IOVA_RANGES", ioas_id=ioas, num_iovas=num, allowed_iovas=buf)
        n = min(out.num_iovas, num)
        raw = self.h.read_mem(buf, 16 * n)[1] if n else b""
        return ret, [(r.start, r.last) for r in uapi.parse_array("iommu_iova_range", raw, n)], out

    def allow(self, ioas: int, ranges: list[tuple[int, int]]):
        buf = self.mem(1)
        raw = b"".join(struct.pack("<QQ", a, b) for a, b in ranges)
        if raw:
            assert self.h.write_mem(buf, raw) == len(raw)
        return self.call("IOMMU_IOAS_ALLOW_IOVAS", ioas_id=ioas, num_iovas=len(ranges),
                         allowed_iovas=buf)[0]

    # devices (VFIO cdev)
    def bind(self, idx: int = 0):
        dfd = self.h.open(f"/dev/vfio/devices/vfio{self.devs[idx].cdev}", O_RDWR)
        assert dfd >= 0
        self.cdevs[idx] = dfd
        ret, out = self.raw(uapi.VFIO_DEVICE_BIND_IOMMUFD,
                            uapi.build("vfio_device_bind_iommufd", iommufd=self.fd), fd=dfd)
        return ret, uapi.parse("vfio_device_bind_iommufd", out).out_devid

    def attach(self, pt_id: int, idx: int = 0):
        if idx not in self.cdevs:
            ret, _ = self.bind(idx)
            assert ret == 0
        ret, out = self.raw(uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                            uapi.build("vfio_device_attach_iommufd_pt", pt_id=pt_id), fd=self.cdevs[idx])
        return ret, uapi.parse("vfio_device_attach_iommufd_pt", out).pt_id

    def detach(self, idx: int = 0) -> int:
        return self.raw(uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT,
                        uapi.build("vfio_device_detach_iommufd_pt"), fd=self.cdevs[idx])[0]

    def close_dev(self, idx: int = 0) -> int:
        return self.h.close(self.cdevs.pop(idx))

    # compat
    def vfio(self, request: int, arg):
        return self.raw(request, arg)

    def counters(self):
        h = self.h
        return h.pinned_vm, h.user_locked_vm, h.locked_vm


def mock_env(profile: str = "7.2", n: int = 1, **kw) -> Env:
    return Env(profile, [SimVfioDevice(name=f"mock{i}", group=10 + i, cdev=i, hw=MOCK_IOMMU)
                         for i in range(n)], **kw)


@pytest.fixture
def env():
    return Env()


# ============================================================================
# §1.4 framing (iommufd_fops_ioctl(), main.c; the same since 6.2)
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


def test_not_modelled_table_entries_are_enotty(env):
    """GET_HW_INFO (0x8a) is in the 7.2 table but not simulated: ENOTTY (documented)."""
    assert env.call("IOMMU_GET_HW_INFO")[0] == -E.ENOTTY


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
# §2.1 MAP, native column (iommufd_ioas_map -> iopt_map_user_pages)
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


def test_map_length_zero_and_overflows(env):
    """iopt_alloc_user_pages(): uptr + length == 2^64 -> EOVERFLOW; length 0 ->
    EINVAL; iopt_check_iova(): iova + length - 1 wraps -> EOVERFLOW."""
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, 0, 0)[0] == -E.EINVAL
    assert env.map(ioas, (1 << 64) - P, P, 0)[0] == -E.EOVERFLOW
    assert env.map(ioas, va, 2 * P, (1 << 64) - P)[0] == -E.EOVERFLOW


def test_map_no_domain_accepts_any_alignment(env):
    """iova_alignment is 1 without a domain: unaligned iova, size, vaddr all map
    (rig §4a 'unaligned user_va (FIXED) OK'; selftest ioas_iova_alloc)."""
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va + 100, 3 * P + 7, 0x100123)[0] == 0
    assert env.map(ioas, va, 1, None)[0] == 0


def test_map_with_domain_alignment(env):
    """With a 4 KiB domain: iova (iopt_check_iova), size (iopt_alloc_area_pages),
    vaddr page offset (iopt_insert_area) misaligned -> EINVAL (rig §4b)."""
    ioas, va = env.ioas(), env.mem()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, va, P, 0x100800)[0] == -E.EINVAL
    assert env.map(ioas, va, P + 1, 0x100000)[0] == -E.EINVAL
    assert env.map(ioas, va + 100, P, 0x100000)[0] == -E.EINVAL
    assert env.map(ioas, va + 100, P, None)[0] == -E.EINVAL          # auto: alignment < 4096
    assert env.map(ioas, va, P, 0x100000)[0] == 0


def test_map_overlap_is_eexist_and_auto_finds_a_hole(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, 4 * P, 0x100000)[0] == 0
    assert env.map(ioas, va, 4 * P, 0x102000)[0] == -E.EEXIST
    assert env.map(ioas, va, P, 0x103000)[0] == -E.EEXIST
    ret, iova = env.map(ioas, va, 4 * P)
    assert ret == 0 and (iova + 4 * P <= 0x100000 or iova > 0x103FFF) and iova % (4 * P) == 0


def test_map_reserved_and_outside_aperture_is_einval(env):
    """reserved_itree (MSI window, aperture) -> EINVAL (rig §4b: 0xfee00000)."""
    ioas, va = env.ioas(), env.mem()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, va, P, 0xFEE00000)[0] == -E.EINVAL
    assert env.map(ioas, va, P, 1 << 39)[0] == -E.EINVAL
    assert env.map(ioas, va, P, (1 << 39) - P)[0] == 0


def test_map_fixed_ignores_allowed_ranges(env):
    """ALLOW_IOVAS only bounds automatic allocation (§2.1)."""
    ioas, va = env.ioas(), env.mem()
    assert env.allow(ioas, [(0x10000, 0x1FFFF)]) == 0
    assert env.map(ioas, va, P, 0x900000)[0] == 0
    ret, iova = env.map(ioas, va, P)
    assert ret == 0 and 0x10000 <= iova <= 0x1FFFF


def test_map_auto_enospc(env):
    ioas, va = env.ioas(), env.mem()
    assert env.allow(ioas, [(0x10000, 0x11FFF)]) == 0
    assert env.map(ioas, va, 2 * P)[0] == 0
    assert env.map(ioas, va, P)[0] == -E.ENOSPC


def test_map_unmapped_va_lazy_then_efault(env):
    """Lazy pinning (§7): no domain -> success, pinned at attach -> EFAULT
    (rig §4a/§4b); with a domain MAP itself is EFAULT."""
    ioas = env.ioas()
    bad = 0x10000000
    assert env.map(ioas, bad, P, 0x100000)[0] == 0
    assert env.counters() == (0, 0, 0)
    assert env.attach(ioas)[0] == -E.EFAULT
    assert env.unmap(ioas, 0x100000, P) == (0, P)
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, bad, P, 0x100000)[0] == -E.EFAULT


def test_map_half_unmapped_is_efault_and_undone(env):
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    va = env.mem(8)
    assert env.h.munmap(va + 4 * P, 4 * P) == 0
    assert env.map(ioas, va, 8 * P, 0x100000)[0] == -E.EFAULT
    assert env.counters() == (0, 0, 0)
    assert env.unmap(ioas, 0x100000, 8 * P)[0] == -E.ENOENT


def test_map_write_on_readonly_vma(env):
    """GUP check_vma_flags(): FOLL_WRITE on a read-only VMA -> EFAULT; READABLE
    only is fine (rig §4b)."""
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    va = env.mem(1, prot=PROT_READ)
    assert env.map(ioas, va, P, 0x100000)[0] == -E.EFAULT
    assert env.map(ioas, va, P, 0x100000, flags=R)[0] == 0


def test_map_writable_shared_ext4_file_is_efault(env):
    """writable_file_mapping_allowed(): FOLL_LONGTERM|FOLL_WRITE on a shared
    writable mapping of a writeback filesystem -> EFAULT."""
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    fd = env.h.open("/data.img", O_RDWR | O_CREAT)
    assert env.h.ftruncate(fd, P) == 0
    va = env.h.mmap(0, P, RW, MAP_SHARED, fd, 0)
    assert env.map(ioas, va, P, 0x100000)[0] == -E.EFAULT
    assert env.map(ioas, va, P, 0x100000, flags=R)[0] == 0


@pytest.mark.parametrize("profile", ["6.6", "7.2"])
def test_map_pfnmap_bar_is_efault(profile):
    """VM_PFNMAP|VM_IO (a VFIO BAR mmap): EFAULT from check_vma_flags() when
    pinned (profile.iommufd_map_pfnmap_errno; the 2025 EOPNOTSUPP patch was
    never merged); lazily fine without a domain."""
    e = Env(profile)
    ioas = e.ioas()
    _, devid = e.bind()
    bar = e.h.mmap(0, P, RW, MAP_SHARED, e.cdevs[0], region_offset(0))
    assert bar > 0
    assert e.map(ioas, bar, P, 0x100000)[0] == 0
    assert e.attach(ioas)[0] == -E.EFAULT
    assert e.unmap(ioas, 0x100000, P)[0] == 0
    assert e.attach(ioas)[0] == 0
    assert e.map(ioas, bar, P, 0x100000)[0] == -E.EFAULT


def test_map_rlimit_memlock_user_mode():
    """incr_user_locked_vm(): user->locked_vm vs RLIMIT_MEMLOCK -> ENOMEM at pin
    time only (at MAP with a domain, else at attach); CAP_IPC_LOCK -> not charged."""
    e = Env(rlimit_memlock=4 * P)
    ioas = e.ioas()
    va = e.mem(16)
    assert e.map(ioas, va, 8 * P, 0x100000)[0] == 0          # lazy: no charge
    assert e.attach(ioas)[0] == -E.ENOMEM
    assert e.counters() == (0, 0, 0)
    assert e.unmap(ioas, 0x100000, 8 * P)[0] == 0
    assert e.attach(ioas)[0] == 0
    assert e.map(ioas, va, 4 * P, 0x100000)[0] == 0
    assert e.counters() == (4, 4, 0)
    assert e.map(ioas, va, P, 0x200000)[0] == -E.ENOMEM
    e2 = Env(rlimit_memlock=0, cap_ipc_lock=True)
    ioas = e2.ioas()
    assert e2.attach(ioas)[0] == 0
    assert e2.map(ioas, e2.mem(), 8 * P, 0x100000)[0] == 0
    assert e2.counters() == (8, 0, 0)                          # pinned_vm always moves


def test_map_rlimit_mode_mm_charges_locked_vm(env):
    """IOMMU_OPTION RLIMIT_MODE=1: __account_locked_vm() on mm->locked_vm."""
    assert env.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, 0, 1)[0] == 0
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, env.mem(), 3 * P, 0x100000)[0] == 0
    assert env.counters() == (3, 0, 3)
    assert env.unmap(ioas, 0, U64_MAX) == (0, 3 * P)
    assert env.counters() == (0, 0, 0)


def test_map_source_mm_gone_efault_at_attach(env):
    """pfn_reader_user_pin(): mmget_not_zero(source_mm) fails -> EFAULT (the
    selftest fork_gone: the mapping process exited before a domain came)."""
    from backends.simulated.mmap import MM
    h = env.h
    ioas = env.ioas()
    parent = h.mm
    child = h.mm = MM(h.profile)
    va = env.mem(4)
    assert env.map(ioas, va, 4 * P, 0x100000)[0] == 0
    h.mm = parent
    child.mm_users = 0
    assert env.attach(ioas)[0] == -E.EFAULT


def test_map_iova_written_back_only_on_success(env):
    ioas, va = env.ioas(), env.mem()
    data = uapi.build("iommu_ioas_map", flags=R | W, ioas_id=ioas, user_va=va, length=P, iova=0x5555)
    ret, out = env.raw(uapi.IOMMU_IOAS_MAP, data)
    assert ret == 0 and uapi.parse("iommu_ioas_map", out).iova != 0x5555
    bad = uapi.build("iommu_ioas_map", flags=R | W, ioas_id=ioas, user_va=va, length=0, iova=0x5555)
    assert env.raw(uapi.IOMMU_IOAS_MAP, bad) == (-E.EINVAL, bad)


# ============================================================================
# §2.2 UNMAP, native column (iommufd_ioas_unmap -> iopt_unmap_iova_range)
# ============================================================================

@pytest.mark.parametrize("profile", ["6.13", "6.18", "7.2"])
def test_unmap_empty_range_is_enoent_every_version(profile):
    """<6.18 from iopt_unmap_iova_range()'s rc init, >=6.18 from 'if (!unmapped)'."""
    e = Env(profile)
    ioas = e.ioas()
    assert e.unmap(ioas, 0x100000, P) == (-E.ENOENT, P)           # length not written back
    assert e.unmap(ioas, 0, U64_MAX) == (0, 0)          # unmap-all on an empty IOAS


def test_unmap_straddle_enoent_earlier_areas_gone(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, P, 0x100000)[0] == 0
    assert env.map(ioas, va, 2 * P, 0x101000)[0] == 0
    assert env.unmap(ioas, 0x100000, 2 * P)[0] == -E.ENOENT
    assert env.unmap(ioas, 0x100000, P)[0] == -E.ENOENT           # the first one is gone
    assert env.unmap(ioas, 0x101000, 2 * P) == (0, 2 * P)


def test_unmap_no_alignment_check_sums_whole_areas(env):
    ioas, va = env.ioas(), env.mem()
    for i in range(3):
        assert env.map(ioas, va, P, 0x100000 + 2 * i * P)[0] == 0
    assert env.unmap(ioas, 0x100000 - 5, 6 * P) == (0, 3 * P)


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
# §2.3 IOMMU_IOAS_MAP_FILE
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
    """profile.map_file_fget_in_ioas (§2.3; the leak is a code-read, UNVERIFIED)."""
    e = Env(profile)
    ioas = e.ioas()
    assert e.map_file(ioas, 555, 0, 0, 0)[0] == length0_badfd
    assert e.map_file(ioas, 555, 0, P, 0)[0] == -E.EBADF
    assert e.destroy(ioas) == destroy_after_ebadf


def test_map_file_regular_file_lazy_then_einval():
    """No file-type check at map time; memfd_pin_folios() -> EINVAL when pinned
    (rig §4a 'regular 9p file OK', §4b 'EINVAL')."""
    e = Env()
    ioas = e.ioas()
    fd = e.h.open("/disk.img", O_RDWR | O_CREAT)
    assert e.h.ftruncate(fd, 4 * P) == 0
    assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
    assert e.attach(ioas)[0] == -E.EINVAL
    assert e.unmap(ioas, 0, U64_MAX)[0] == 0
    assert e.attach(ioas)[0] == 0
    assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == -E.EINVAL
    tmp = e.h.open("/dev/shm", 0o20200000 | O_RDWR)              # O_TMPFILE on tmpfs: shmem
    assert e.h.ftruncate(tmp, P) == 0
    assert e.map_file(ioas, tmp, 0, P, 0x100000)[0] == 0


def test_map_file_past_eof_and_unaligned_start():
    e = Env()
    ioas = e.ioas()
    fd = e.memfd(4 * P)
    assert e.map_file(ioas, fd, 0, 4 * P + 1, 0x100000)[0] == 0        # lazy
    assert e.attach(ioas)[0] == -E.EADDRINUSE                          # length misaligned first
    assert e.unmap(ioas, 0, U64_MAX)[0] == 0
    assert e.map_file(ioas, fd, 0, 8 * P, 0x100000)[0] == 0            # lazy
    assert e.attach(ioas)[0] == -E.EINVAL                              # memfd_pin_folios()
    assert e.unmap(ioas, 0, U64_MAX)[0] == 0
    assert e.map_file(ioas, fd, 100, P, 0x200000)[0] == 0              # lazy, page_offset 100
    assert e.attach(ioas)[0] == -E.EADDRINUSE                          # iopt_check_iova_alignment()
    assert e.unmap(ioas, 0, U64_MAX)[0] == 0
    assert e.attach(ioas)[0] == 0
    assert e.map_file(ioas, fd, 0, 4 * P + 1, 0x100000)[0] == -E.EINVAL
    assert e.map_file(ioas, fd, 8 * P, P, 0x100000)[0] == -E.EINVAL
    assert e.map_file(ioas, fd, 100, P, 0x100000)[0] == -E.EINVAL      # iova_alignment 4096
    assert e.map_file(ioas, fd, 100, P, 0x100064)[0] == -E.EINVAL
    assert e.h.ftruncate(fd, 0) == 0
    assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == -E.EINVAL


@pytest.mark.parametrize("profile,expect", [("7.2", 0), ("7.2+fix", -E.EPERM)])
def test_map_file_rdonly_fd_writeable(profile, expect):
    """Seed 000: O_RDONLY fd + WRITEABLE: 7.2.13 succeeds (rig §4b), the fix -> EPERM
    (iopt_alloc_file_pages(): !(f_mode & FMODE_WRITE)); READABLE only always works."""
    e = Env(profile)
    ioas = e.ioas()
    rw = e.memfd(P)
    ro = e.h.open(f"/proc/self/fd/{rw}", O_RDONLY)
    assert e.map_file(ioas, ro, 0, P, 0x100000)[0] == expect
    assert e.map_file(ioas, ro, 0, P, 0x200000, flags=R)[0] == 0


@pytest.mark.parametrize("profile,write_sealed", [("7.2", 0), ("7.2+fix", -E.EPERM)])
def test_map_file_sealed_memfd(profile, write_sealed):
    """F_SEAL_WRITE + WRITEABLE: mapping_map_writable() -> EPERM after the fix;
    FUTURE_WRITE passes both (the fix does not check it); READABLE always."""
    e = Env(profile)
    ioas = e.ioas()
    assert e.map_file(ioas, e.memfd(P, F_SEAL_WRITE), 0, P, 0x100000)[0] == write_sealed
    assert e.map_file(ioas, e.memfd(P, F_SEAL_WRITE), 0, P, 0x200000, flags=R)[0] == 0
    assert e.map_file(ioas, e.memfd(P, F_SEAL_FUTURE_WRITE), 0, P, 0x300000)[0] == 0


def test_seal_write_vs_writable_map_file_7_2_vs_fix():
    """7.2: F_SEAL_WRITE succeeds while a writable MAP_FILE exists and nothing is
    pinned (rig §4a), EBUSY once pinned (memfd_wait_for_pins, rig §4b).  With the
    fix: EBUSY while the writable MAP_FILE exists (i_mmap_writable), 0 after unmap."""
    e = Env("7.2")
    ioas = e.ioas()
    fd = e.memfd(P)
    assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
    assert e.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
    e = Env("7.2")
    ioas = e.ioas()
    assert e.attach(ioas)[0] == 0
    fd = e.memfd(P)
    assert e.map_file(ioas, fd, 0, P, 0x100000, flags=R)[0] == 0
    assert e.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -E.EBUSY      # pinned, even READABLE only
    assert e.unmap(ioas, 0x100000, P)[0] == 0
    assert e.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
    f = Env("7.2+fix")
    ioas = f.ioas()
    fd = f.memfd(P)
    assert f.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
    assert f.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -E.EBUSY
    assert f.unmap(ioas, 0x100000, P)[0] == 0
    assert f.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
    fd2 = f.memfd(P)
    assert f.map_file(ioas, fd2, 0, P, 0x100000, flags=R)[0] == 0
    assert f.h.fcntl(fd2, F_ADD_SEALS, F_SEAL_WRITE) == 0            # READABLE: not counted


def test_seed_000_device_write_lands_in_rdonly_and_sealed_file():
    """Seed 000 / rig §4b: on 7.2 the device really writes an O_RDONLY file and a
    F_SEAL_WRITE memfd (pread sees it, write(2) cannot); on 7.2+fix the maps fail."""
    for profile in ("7.2", "7.2+fix"):
        e = Env(profile)
        ioas = e.ioas()
        assert e.attach(ioas)[0] == 0
        rw = e.memfd(P, data=b"original-content!")
        ro = e.h.open(f"/proc/self/fd/{rw}", O_RDONLY)
        e.h.close(rw)
        sealed = e.memfd(P, F_SEAL_WRITE, data=b"sealed-content!!!")
        r1 = e.map_file(ioas, ro, 0, P, 0x100000)[0]
        r2 = e.map_file(ioas, sealed, 0, P, 0x200000)[0]
        if profile == "7.2":
            assert (r1, r2) == (0, 0)
            assert dma_write(e.devs[0], 0x100000, b"DEVICE-WROTE-THIS") == 17
            assert e.h.pread(ro, 17, 0) == (17, b"DEVICE-WROTE-THIS")
            assert e.h.pwrite(ro, b"x", 0) == -E.EBADF
            assert dma_write(e.devs[0], 0x200000, b"DEVICE-WROTE-THIS") == 17
            assert e.h.pread(sealed, 17, 0) == (17, b"DEVICE-WROTE-THIS")
            assert e.h.pwrite(sealed, b"x", 0) == -E.EPERM
        else:
            assert (r1, r2) == (-E.EPERM, -E.EPERM)


def test_dma_through_map_file_reads_and_writes_file_pages():
    """The device translates to the page-cache pages (MAP_FILE): pread/pwrite and
    DMA see each other; READABLE-only faults on write (DMAR fault, rig §4b)."""
    e = Env()
    ioas = e.ioas()
    fd = e.memfd(4 * P, data=b"A" * P + b"B" * P)
    assert e.map_file(ioas, fd, P, 2 * P, 0x100000)[0] == 0
    assert e.map_file(ioas, fd, 0, P, 0x200000, flags=R)[0] == 0
    assert e.attach(ioas)[0] == 0
    dev = e.devs[0]
    assert dma_read(dev, 0x100000, 4) == (4, b"BBBB")
    assert dma_write(dev, 0x100000 + P - 2, b"xyzw") == 4            # crosses a page
    assert e.h.pread(fd, 4, 2 * P - 2) == (4, b"xyzw")
    assert e.h.pwrite(fd, b"hello", 2 * P + 10) == 5
    assert dma_read(dev, 0x100000 + P + 10, 5) == (5, b"hello")
    assert dma_write(dev, 0x200000, b"no") == -E.EFAULT
    assert dev.faults[-1][2] == "no permission"
    assert dma_read(dev, 0x300000, 1) == (-E.EFAULT, b"")


def test_dma_through_va_map_reads_process_pages(env):
    ioas = env.ioas()
    va = env.mem(4, fill=b"guest-ram")
    assert env.map(ioas, va, 4 * P, 0x100000)[0] == 0
    assert env.attach(ioas)[0] == 0
    dev = env.devs[0]
    assert dma_read(dev, 0x100000, 9) == (9, b"guest-ram")
    assert dma_write(dev, 0x100000 + 3 * P, b"from-device") == 11
    assert env.h.read_mem(va + 3 * P, 11) == (11, b"from-device")
    assert env.detach() == 0
    assert dev.domain is None and dma_read(dev, 0x100000, 1)[0] == -E.EFAULT


def test_dma_mock_domain_sub_page_offset():
    """With the 2048-byte mock domain an area may start mid-page; the device
    sees the bytes at the area's page_offset (batch_to_domain())."""
    e = mock_env()
    ioas = e.ioas()
    assert e.attach(ioas)[0] == 0
    fd = e.memfd(2 * P, data=b"a" * 2048 + b"HALF" + b"b" * 2044)
    assert e.map_file(ioas, fd, 2048, 2048, (1 << 24) + 2 * P)[0] == 0
    assert dma_read(e.devs[0], (1 << 24) + 2 * P, 4) == (4, b"HALF")


@pytest.mark.parametrize("profile", ["6.19", "7.2"])
def test_map_file_dmabuf(profile):
    """IOPT_ADDRESS_DMABUF (6.19+): EINVAL length 0 / past the size; ENODEV
    revoked; EOPNOTSUPP not a vfio exporter; never charged (§2.3)."""
    e = Env(profile)
    ioas = e.ioas()
    dfd = e.h.dmabuf_export(4 * P)
    assert e.map_file(ioas, dfd, 0, 0, 0)[0] == -E.EINVAL
    assert e.map_file(ioas, dfd, 4 * P, 4 * P, 0)[0] == -E.EINVAL
    assert e.map_file(ioas, dfd, 0, 4 * P + 1, 0)[0] == -E.EINVAL
    assert e.attach(ioas)[0] == 0
    assert e.map_file(ioas, dfd, 0, 4 * P, 0x100000)[0] == 0
    assert e.counters() == (0, 0, 0)
    inode = e.h.fds[dfd].inode
    inode.revoked = True
    assert e.map_file(ioas, dfd, 0, P, 0x200000)[0] == -E.ENODEV
    inode.revoked, inode.exporter = False, "udmabuf"
    assert e.map_file(ioas, dfd, 0, P, 0x200000)[0] == -E.EOPNOTSUPP


def test_map_file_dmabuf_before_6_19_is_a_plain_file():
    e = Env("6.18")
    ioas = e.ioas()
    dfd = e.h.dmabuf_export(4 * P)
    assert e.map_file(ioas, dfd, 0, 4 * P, 0x100000)[0] == 0
    assert e.attach(ioas)[0] == -E.EINVAL


# ============================================================================
# §2.4 other ioctls
# ============================================================================

def test_ioas_alloc_flags_and_destroy(env):
    assert env.call("IOMMU_IOAS_ALLOC", flags=1)[0] == -E.EOPNOTSUPP
    ioas = env.ioas()
    assert env.destroy(ioas) == 0
    assert env.destroy(ioas) == -E.ENOENT


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


def test_attach_reserved_region_hits_an_area_eaddrinuse(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, P, 0xFEE01000)[0] == 0
    assert env.attach(ioas)[0] == -E.EADDRINUSE           # iopt_reserve_iova()
    assert env.map(ioas, va, P, 1 << 40)[0] == 0


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


def test_copy_shares_pins_between_ioases():
    """The copied pages are pinned once (domains_itree): charges do not double."""
    e = Env(devices=[SimVfioDevice(), SimVfioDevice(name="b", group=2, cdev=1)])
    a, b = e.ioas(), e.ioas()
    assert e.attach(a, 0)[0] == 0 and e.attach(b, 1)[0] == 0
    va = e.mem(4, fill=b"shared")
    assert e.map(a, va, 4 * P, 0x100000)[0] == 0
    assert e.copy(b, a, 4 * P, 0x100000, 0x900000)[0] == 0
    assert e.counters() == (4, 4, 0)
    assert dma_read(e.devs[1], 0x900000, 6) == (6, b"shared")
    assert e.unmap(a, 0, U64_MAX) == (0, 4 * P)
    assert e.counters() == (4, 4, 0)
    assert e.unmap(b, 0, U64_MAX) == (0, 4 * P)
    assert e.counters() == (0, 0, 0)


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
# §2.5 + compat columns of §2.1/§2.2 (vfio_compat.c)
# ============================================================================

def _dma_map(flags=3, vaddr=0, iova=0, size=P, argsz=32):
    return uapi.build("vfio_iommu_type1_dma_map", argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size)


def _dma_unmap(iova=0, size=P, flags=0, argsz=24):
    return uapi.build("vfio_iommu_type1_dma_unmap", argsz=argsz, flags=flags, iova=iova, size=size)


def _compat(profile="7.2", set_iommu=uapi.VFIO_TYPE1v2_IOMMU):
    e = Env(profile)
    ioas = e.ioas()
    assert e.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert e.attach(ioas)[0] == 0
    if set_iommu:
        assert e.vfio(uapi.VFIO_SET_IOMMU, set_iommu)[0] == 0
    return e, ioas


def test_compat_container_calls(env):
    """§2.5: API 0; CHECK_EXTENSION; SET_IOMMU type check before ENODEV; ENOTTY."""
    assert env.vfio(uapi.VFIO_GET_API_VERSION, 0)[0] == 0
    for ext, want in [(1, 1), (3, 1), (9, 1), (10, 0), (6, 0), (8, 0), (2, 0)]:
        assert env.vfio(uapi.VFIO_CHECK_EXTENSION, ext)[0] == want, ext
    assert env.vfio(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_DMA_CC_IOMMU)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_SET_IOMMU, 2)[0] == -E.EINVAL
    assert env.vfio(uapi.VFIO_SET_IOMMU, 3)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_SET_IOMMU, 1)[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_IOMMU_DIRTY_PAGES, bytes(8))[0] == -E.ENOTTY
    assert env.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map())[0] == -E.ENODEV
    assert env.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap())[0] == -E.ENODEV
    ioas = env.ioas()
    assert env.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)[0] == 0
    assert env.vfio(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_DMA_CC_IOMMU)[0] == 1


def test_compat_map_dma():
    """iommufd_vfio_map_dma(): EINVAL argsz/flags (VADDR too); no R/W: accepted by
    the compat layer, refused by the VT-d domain's map (EINVAL, rig run iommufd-7.2
    2026-11-23); EEXIST; EOVERFLOW; EFAULT with a domain; alignment EINVAL."""
    e, ioas = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(argsz=31, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=7, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=1 << 31, vaddr=va))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(flags=0, vaddr=va, iova=0x100000))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == -E.EEXIST
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, size=0, iova=0x200000))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x200800))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=(1 << 64) - P,
                                                    size=2 * P))[0] == -E.EOVERFLOW
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=0x10000, iova=0x300000))[0] == -E.EFAULT
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, bytes(16))[0] == -E.EFAULT
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, 0)[0] == -E.EFAULT


def _compat_map_row(row: str):
    """One compat MAP_DMA row of §2.1 (VT-d domain attached, TYPE1v2)."""
    e, ioas = _compat()
    va = e.mem(8)

    def m(**kw):
        return e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(**kw))[0]
    if row == "size not aligned":
        return m(vaddr=va, iova=0x100000, size=P + 1)
    if row == "vaddr not aligned":
        return m(vaddr=va + 8, iova=0x100000)
    if row == "vaddr+size overflows":
        return m(vaddr=(1 << 64) - P, iova=0x100000, size=P)
    if row == "reserved region / outside aperture":
        return m(vaddr=va, iova=0xFEE00000), m(vaddr=va, iova=1 << 39)
    if row == "half unmapped":
        assert e.h.munmap(va + 4 * P, 4 * P) == 0
        return m(vaddr=va, iova=0x100000, size=8 * P)
    if row == "write on a read-only vma / read only":
        ro = e.mem(1, prot=PROT_READ)
        return m(vaddr=ro, iova=0x100000), m(flags=1, vaddr=ro, iova=0x100000)
    if row == "pfnmap bar":
        bar = e.h.mmap(0, P, RW, MAP_SHARED, e.cdevs[0], region_offset(0))
        return m(vaddr=bar, iova=0x100000)
    if row == "rlimit memlock":
        e.h.rlimit_memlock = 2 * P
        return m(vaddr=va, iova=0x100000, size=4 * P)
    if row == "no per-container count limit (66000 maps)":
        c = uapi.codec("vfio_iommu_type1_dma_map")
        return max(e.vfio(uapi.VFIO_IOMMU_MAP_DMA, c.pack(32, 3, va, (i + 1) * P, P))[0]
                   for i in range(66000))
    raise AssertionError(row)


COMPAT_MAP_ROWS = [("size not aligned", -E.EINVAL), ("vaddr not aligned", -E.EINVAL),
                   ("vaddr+size overflows", -E.EOVERFLOW),
                   ("reserved region / outside aperture", (-E.EINVAL, -E.EINVAL)),
                   ("half unmapped", -E.EFAULT), ("write on a read-only vma / read only", (-E.EFAULT, 0)),
                   ("pfnmap bar", -E.EFAULT), ("rlimit memlock", -E.ENOMEM),
                   ("no per-container count limit (66000 maps)", 0)]


@pytest.mark.parametrize("row,expect", COMPAT_MAP_ROWS, ids=[r for r, _ in COMPAT_MAP_ROWS])
def test_compat_map_dma_rows(row, expect):
    """§2.1 compat column: the same iopt_map_user_pages() as native, fixed IOVA."""
    assert _compat_map_row(row) == expect


def test_compat_unmap_rows():
    """§2.2 compat column: no alignment check in v2 (whole areas), overflow,
    several whole areas summed."""
    e, _ = _compat()
    va = e.mem(8)
    for i in range(3):
        assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000 + 2 * i * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000 - 5, size=6 * P))
    assert (ret, uapi.parse("vfio_iommu_type1_dma_unmap", out).size) == (0, 3 * P)
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=(1 << 64) - P, size=2 * P))[0] == -E.EOVERFLOW


def test_compat_set_iommu_type1_with_mappings_is_einval():
    """iopt_disable_large_pages(): domains already hold mappings -> EINVAL."""
    e, _ = _compat(set_iommu=0)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=e.mem(1), iova=0x100000))[0] == 0
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0


def test_compat_v1_cannot_split_a_dmabuf_area():
    """iopt_area_split(): dma-buf areas cannot be split (6.19+) -> EOPNOTSUPP."""
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    dfd = e.h.dmabuf_export(4 * P)
    assert e.map_file(ioas, dfd, 0, 4 * P, 0x100000)[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=P))[0] == -E.EOPNOTSUPP


def test_native_no_mapping_count_limit(env):
    """No per-IOAS count limit (type1's dma_entry_limit is 65535)."""
    ioas, va = env.ioas(), env.mem(1)
    c = uapi.codec("iommu_ioas_map")
    assert max(env.raw(uapi.IOMMU_IOAS_MAP, c.pack(40, FIXED | R | W, ioas, 0, va, P, (i + 1) * P))[0]
               for i in range(66000)) == 0


@pytest.mark.parametrize("profile,empty", [("6.13", -E.ENOENT), ("6.18", 0), ("7.2", 0)])
def test_compat_unmap_empty_range(profile, empty):
    """afb47765f923 (6.18, profile.compat_empty_unmap_ok): empty range -> 0, else
    ENOENT; size (0) is written back either way."""
    e, _ = _compat(profile)
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000, size=P))
    assert ret == empty and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 0


def test_compat_unmap_v2_bisect_enoent_size_written_back():
    e, _ = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=P))[0] == 0
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x101000, size=2 * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100000, size=2 * P))
    assert ret == -E.ENOENT and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == P
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=0))
    assert ret == -E.EINVAL and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 0


def test_compat_unmap_v1_splits():
    """SET_IOMMU(TYPE1): HUGE_PAGES off, unmap cuts areas (iopt_cut_iova())."""
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    assert e.huge_pages(ioas) == (0, 0)
    va = e.mem(4, fill=b"0123")
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=4 * P))[0] == 0
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x101000, size=P))
    assert ret == 0 and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == P
    assert e.counters() == (3, 3, 0)
    assert dma_read(e.devs[0], 0x100000, 4) == (4, b"0123")
    assert dma_read(e.devs[0], 0x101000, 1)[0] == -E.EFAULT
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=0x100800, size=P))
    assert ret == -E.EINVAL                                      # cut not page aligned


def test_compat_unmap_all_and_flags():
    e, _ = _compat()
    va = e.mem(4)
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000, size=4 * P))[0] == 0
    ALL = uapi.VFIO_DMA_UNMAP_FLAG_ALL
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=ALL, iova=0x100000, size=0))[0] == -E.EINVAL
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=1))[0] == -E.EINVAL        # GET_DIRTY_BITMAP
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=4))[0] == -E.EINVAL        # VADDR
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(argsz=8))[0] == -E.EINVAL
    ret, out = e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=ALL, size=0))
    assert ret == 0 and uapi.parse("vfio_iommu_type1_dma_unmap", out).size == 4 * P


def test_compat_get_info():
    """iommufd_vfio_iommu_get_info(): EINVAL argsz < 16; PGSIZES|CAPS; caps
    DMA_AVAIL (U32_MAX) then IOVA_RANGE; argsz grows when caps do not fit."""
    e = Env()
    assert e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=24))[0] == -E.ENODEV
    e, _ = _compat()
    assert e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=15))[0] == -E.EINVAL
    ret, out = e.vfio(uapi.VFIO_IOMMU_GET_INFO, uapi.build("vfio_iommu_type1_info", argsz=24))
    info = uapi.parse("vfio_iommu_type1_info", out)
    assert ret == 0 and info.cap_offset == 0 and info.argsz == 24 + 16 + 48
    assert info.flags == uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS
    assert info.iova_pgsizes == 0x40201000
    full = uapi.build("vfio_iommu_type1_info", argsz=info.argsz) + bytes(info.argsz - 24)
    ret, out = e.vfio(uapi.VFIO_IOMMU_GET_INFO, full)
    info = uapi.parse("vfio_iommu_type1_info", out)
    caps = uapi.parse_cap_chain(out, info.cap_offset)
    assert [c.header.id for c in caps] == [3, 1]
    assert caps[0].avail == 0xFFFFFFFF
    assert [(r.start, r.end) for r in caps[1].iova_ranges] == [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)]


def test_compat_group_path_creates_the_ioas_and_attaches():
    """VFIO_GROUP_SET_CONTAINER(iommufd fd) -> iommufd_vfio_compat_ioas_create();
    GET_DEVICE_FD binds + attaches the device to the compat IOAS; closing it unbinds."""
    e = Env()
    g = e.h.open("/dev/vfio/1", O_RDWR)
    assert e.raw(uapi.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", e.fd), fd=g)[0] == 0
    ret, out = e.call("IOMMU_VFIO_IOAS", op=uapi.IOMMU_VFIO_IOAS_GET)
    assert (ret, out.ioas_id) == (0, 1)
    assert e.vfio(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
    dfd, _ = e.raw(uapi.VFIO_GROUP_GET_DEVICE_FD, e.devs[0].name.encode() + b"\0", fd=g)
    assert dfd >= 0
    va = e.mem(1, fill=b"compat")
    assert e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va, iova=0x100000))[0] == 0
    assert dma_read(e.devs[0], 0x100000, 6) == (6, b"compat")
    assert e.counters()[0] == 1
    assert e.destroy(1) == -E.EBUSY
    assert e.h.close(dfd) == 0
    assert e.devs[0].domain is None and e.counters() == (0, 0, 0)


# ============================================================================
# kernel-rig.md §4a/§4b: what the real Debian 7.2.13 kernel answered
# ============================================================================

def _rig_4a(e: Env, step: str):
    """Each step of rig §4a (empty IOAS, lazy pinning) -> (ret, extra)."""
    ioas = e.ioas()
    va = e.mem(16)
    fd = e.memfd(4 * P)
    if step == "alloc+ranges":
        return e.ranges(ioas)[1], e.ranges(ioas)[2].out_iova_alignment
    if step == "auto 16K":
        return e.map(ioas, 0x7F00002000, 4 * P)        # an 8K-aligned VA gives iova 0x2000
    if step == "fixed / overlap":
        return e.map(ioas, va, 4 * P, 0x100000)[0], e.map(ioas, va, 4 * P, 0x102000)[0]
    if step == "length 0":
        return e.map(ioas, va, 0, 0x100000)[0]
    if step == "unaligned user_va fixed":
        return e.map(ioas, va + 100, P, 0x100000)[0]
    if step == "unmapped user va":
        return e.map(ioas, 0x10000000, P, 0x100000)[0]
    if step == "map_file rw / r / start 100 / past eof":
        return (e.map_file(ioas, fd, 0, P, 0x100000)[0], e.map_file(ioas, fd, 0, P, 0x200000, flags=R)[0],
                e.map_file(ioas, fd, 100, P, 0x300000)[0], e.map_file(ioas, fd, 0, 8 * P, 0x400000)[0])
    if step == "rdonly reopen rw / r":
        ro = e.h.open(f"/proc/self/fd/{fd}", O_RDONLY)
        return e.map_file(ioas, ro, 0, P, 0x100000)[0], e.map_file(ioas, ro, 0, P, 0x200000, flags=R)[0]
    if step == "sealed rw / r, seal after map":
        s = e.memfd(P, F_SEAL_WRITE)
        r = (e.map_file(ioas, s, 0, P, 0x100000)[0], e.map_file(ioas, s, 0, P, 0x200000, flags=R)[0])
        f2 = e.memfd(P)
        assert e.map_file(ioas, f2, 0, P, 0x300000)[0] == 0
        return r + (e.h.fcntl(f2, F_ADD_SEALS, F_SEAL_WRITE),)
    if step == "regular file":
        reg = e.h.open("/img", O_RDWR | O_CREAT)
        e.h.ftruncate(reg, P)
        return e.map_file(ioas, reg, 0, P, 0x100000)[0]
    if step == "unmap nothing / split / exact / all / all empty":
        assert e.map(ioas, va, 4 * P, 0x100000)[0] == 0
        assert e.map(ioas, va, 10 * P, 0x200000)[0] == 0
        assert e.map(ioas, va, 16 * P, 0x300000)[0] == 0
        return (e.unmap(ioas, 0x900000, P)[0], e.unmap(ioas, 0x100000, P)[0],
                e.unmap(ioas, 0x100000, 4 * P), e.unmap(ioas, 0, U64_MAX), e.unmap(ioas, 0, U64_MAX))
    if step == "destroy bogus":
        return e.destroy(1234)
    raise AssertionError(step)


RIG_4A = [
    ("alloc+ranges", ([(0, U64_MAX)], 1)),
    ("auto 16K", (0, 0x2000)),
    ("fixed / overlap", (0, -E.EEXIST)),
    ("length 0", -E.EINVAL),
    ("unaligned user_va fixed", 0),
    ("unmapped user va", 0),
    ("map_file rw / r / start 100 / past eof", (0, 0, 0, 0)),
    ("rdonly reopen rw / r", (0, 0)),
    ("sealed rw / r, seal after map", (0, 0, 0)),
    ("regular file", 0),
    ("unmap nothing / split / exact / all / all empty",
     (-E.ENOENT, -E.ENOENT, (0, 0x4000), (0, 0x1A000), (0, 0))),
    ("destroy bogus", -E.ENOENT),
]


@pytest.mark.parametrize("step,expect", RIG_4A, ids=[s for s, _ in RIG_4A])
def test_rig_4a_empty_ioas(step, expect):
    """kernel-rig.md §4a (7.2.13, nothing attached).  The auto-IOVA row needs an
    8 KiB-aligned VA to land at 0x2000 as on the rig."""
    e = Env("7.2")
    if step == "auto 16K":
        assert e.h.mmap(0x7F00002000, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x10) == 0x7F00002000
    assert _rig_4a(e, step) == expect


def _rig_4b(e: Env, step: str):
    ioas = e.ioas()
    ret, devid = e.bind()
    ret2, hwpt = e.attach(ioas)
    va = e.mem(16)
    fd = e.memfd(4 * P)
    if step == "bind/attach ids":
        return (ret, devid, ret2, hwpt)
    if step == "ranges":
        return e.ranges(ioas)[1]
    if step == "msi window":
        return e.map(ioas, va, P, 0xFEE00000)[0]
    if step == "unmapped va":
        return e.map(ioas, 0x10000000, P, 0x100000)[0]
    if step == "prot_read page W / R":
        ro = e.mem(1, prot=PROT_READ)
        return e.map(ioas, ro, P, 0x100000)[0], e.map(ioas, ro, P, 0x100000, flags=R)[0]
    if step == "unaligned va / iova":
        return e.map(ioas, va + 8, P, 0x200000)[0], e.map(ioas, va, P, 0x200008)[0]
    if step == "regular file / tmpfs O_TMPFILE":
        reg = e.h.open("/img", O_RDWR | O_CREAT)
        e.h.ftruncate(reg, P)
        tmp = e.h.open("/dev/shm", 0o20200000 | O_RDWR)
        e.h.ftruncate(tmp, P)
        return e.map_file(ioas, reg, 0, P, 0x100000)[0], e.map_file(ioas, tmp, 0, P, 0x100000)[0]
    if step == "past eof / start past eof":
        return e.map_file(ioas, fd, 0, 5 * P, 0x100000)[0], e.map_file(ioas, fd, 8 * P, P, 0x100000)[0]
    if step == "start 100 (iova aligned / iova%4096==100)":
        return e.map_file(ioas, fd, 100, P, 0x100000)[0], e.map_file(ioas, fd, 100, P, 0x100064)[0]
    if step == "fd -1 / flags 0 / unknown flag":
        return (e.map_file(ioas, -1, 0, P, 0x100000)[0], e.map_file(ioas, fd, 0, P, 0x100000, flags=0)[0],
                e.map_file(ioas, fd, 0, P, 0x100000, flags=R | W | 64)[0])
    if step == "__reserved / size 8 / bogus ioas":
        return (e.call("IOMMU_IOAS_MAP", flags=R | FIXED, __reserved=1, ioas_id=ioas, user_va=va,
                       length=P, iova=0x100000)[0],
                e.raw(uapi.IOMMU_IOAS_MAP, struct.pack("<I", 8) + bytes(36))[0],
                e.map(999, va, P, 0x100000)[0])
    if step == "unmap length 0":
        return e.unmap(ioas, 0x100000, 0)[0]
    if step == "rdonly W, device write lands":
        rw = e.memfd(P, data=b"original-content!")
        ro = e.h.open(f"/proc/self/fd/{rw}", O_RDONLY)
        e.h.close(rw)
        r = e.map_file(ioas, ro, 0, P, 0x100000)[0]
        dma_write(e.devs[0], 0x100000, b"DEVICE-WROTE-THIS")
        return r, e.h.pread(ro, 17, 0)[1], e.h.pwrite(ro, b"x", 0)
    if step == "sealed W, device write lands":
        s = e.memfd(P, F_SEAL_WRITE, data=b"sealed")
        r = e.map_file(ioas, s, 0, P, 0x100000)[0]
        dma_write(e.devs[0], 0x100000, b"DEVICE")
        return r, e.h.pread(s, 6, 0)[1], e.h.pwrite(s, b"x", 0)
    if step == "seal write while pinned":
        assert e.map_file(ioas, fd, 0, P, 0x100000)[0] == 0
        return e.h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)
    if step == "future_write W":
        return e.map_file(ioas, e.memfd(P, F_SEAL_FUTURE_WRITE), 0, P, 0x100000)[0]
    if step == "dma to R-only / unmapped iova":
        src = e.mem(1, fill=b"ram")
        assert e.map(ioas, src, P, 0x100000, flags=R)[0] == 0
        return dma_write(e.devs[0], 0x100000, b"x"), dma_write(e.devs[0], 0x500000, b"x")
    if step == "dma round trip":
        src = e.mem(1, fill=b"round-trip")
        assert e.map(ioas, src, P, 0x100000)[0] == 0
        n, data = dma_read(e.devs[0], 0x100000, 10)
        return dma_write(e.devs[0], 0x100800, data), e.h.read_mem(src + 0x800, 10)[1]
    raise AssertionError(step)


RIG_4B = [
    ("bind/attach ids", (0, 2, 0, 3)),
    ("ranges", [(0, 0xFEDFFFFF), (0xFEF00000, 0x7FFFFFFFFF)]),
    ("msi window", -E.EINVAL),
    ("unmapped va", -E.EFAULT),
    ("prot_read page W / R", (-E.EFAULT, 0)),
    ("unaligned va / iova", (-E.EINVAL, -E.EINVAL)),
    ("regular file / tmpfs O_TMPFILE", (-E.EINVAL, 0)),
    ("past eof / start past eof", (-E.EINVAL, -E.EINVAL)),
    ("start 100 (iova aligned / iova%4096==100)", (-E.EINVAL, -E.EINVAL)),
    ("fd -1 / flags 0 / unknown flag", (-E.EBADF, -E.EINVAL, -E.EOPNOTSUPP)),
    ("__reserved / size 8 / bogus ioas", (-E.EOPNOTSUPP, -E.EINVAL, -E.ENOENT)),
    ("unmap length 0", -E.EINVAL),
    ("rdonly W, device write lands", (0, b"DEVICE-WROTE-THIS", -E.EBADF)),
    ("sealed W, device write lands", (0, b"DEVICE", -E.EPERM)),
    ("seal write while pinned", -E.EBUSY),
    ("future_write W", 0),
    ("dma to R-only / unmapped iova", (-E.EFAULT, -E.EFAULT)),
    ("dma round trip", (10, b"round-trip")),
]


@pytest.mark.parametrize("step,expect", RIG_4B, ids=[s for s, _ in RIG_4B])
def test_rig_4b_edu_attached(step, expect):
    """kernel-rig.md §4b (7.2.13, edu bound + attached first: eager pinning)."""
    assert _rig_4b(Env("7.2"), step) == expect


# ============================================================================
# seed 001 / research §5: live update v1 (NOT merged), profile 7.2+lu.
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
    """Seed 001: seals are cached at MAP_FILE time; sealing later does not count."""
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


# ============================================================================
# properties (hypothesis)
# ============================================================================

OPS = st.lists(st.one_of(
    st.tuples(st.just("map"), st.integers(0, 31), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("map_file"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("unmap"), st.integers(0, 31), st.integers(1, 8), st.just(0)),
    st.tuples(st.just("copy"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 31)),
    st.tuples(st.just("attach"), st.integers(0, 1), st.just(0), st.just(0)),
    st.tuples(st.just("detach"), st.just(0), st.just(0), st.just(0))), max_size=40)


def _check_invariants(e: Env, ioas_ids):
    ctx = e.ctx
    for i in ioas_ids:
        areas = list(ctx.get_ioas(i).iopt.area_itree)
        for a, b in zip(areas, areas[1:]):
            assert a.last < b.iova                                   # no overlapping areas
    pinned = sum(pin.npages for store in {id(s): s for s in _stores(e)}.values() for pin in store.pins)
    assert e.h.pinned_vm == pinned == e.h.user_locked_vm


def _stores(e: Env):
    yield e.h.mm.private
    for f in list(e.h.fds.values()):
        yield f.inode.mapping


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from(["6.13", "7.2"]))
def test_property_random_sequences(ops, profile):
    """Random MAP / MAP_FILE / UNMAP / COPY / attach / detach: areas never
    overlap, an unmap reports the bytes mapped, pins and charges always match
    the areas of IOASes with a domain, and everything returns to zero after
    unmap-all and close."""
    e = Env(profile, devices=[SimVfioDevice(), SimVfioDevice(name="b", group=2, cdev=1)])
    a, b = e.ioas(), e.ioas()
    va = e.mem(64, fill=b"x" * 64)
    fd = e.memfd(32 * P)
    mapped: dict[int, int] = {}                 # iova -> length, of IOAS a
    for op, x, n, y in ops:
        if op == "map":
            ret, iova = e.map(a, va + x * P, n * P, 0x100000 + x * P if y else None)
            if ret == 0:
                mapped[iova] = n * P
        elif op == "map_file":
            ret, iova = e.map_file(a, fd, y * P, n * P, 0x100000 + x * P)
            if ret == 0:
                mapped[iova] = n * P
        elif op == "unmap":
            start = 0x100000 + x * P
            ret, length = e.unmap(a, start, n * P)
            inside = {i: L for i, L in mapped.items() if i >= start and i + L <= start + n * P}
            if ret == 0:
                assert length == sum(inside.values())
                for i in inside:
                    del mapped[i]
            else:
                # earlier whole areas may be gone (iopt_unmap_iova_range()); resync
                live = {ar.iova: ar.last - ar.iova + 1 for ar in e.ctx.get_ioas(a).iopt.area_itree}
                mapped = live
        elif op == "copy":
            e.copy(b, a, n * P, 0x100000 + x * P, 0x800000 + y * P)
        elif op == "attach":
            e.attach([a, b][x], x)
        elif op == "detach" and 0 in e.cdevs:
            e.detach(0)
        _check_invariants(e, [a, b])
    assert sum(mapped.values()) == sum(ar.last - ar.iova + 1 for ar in e.ctx.get_ioas(a).iopt.area_itree)
    assert e.unmap(a, 0, U64_MAX)[0] == 0 and e.unmap(b, 0, U64_MAX)[0] == 0
    assert e.counters() == (0, 0, 0)
    e.h.close_all()
    assert e.counters() == (0, 0, 0)
    assert all(d.domain is None for d in e.devs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15), st.integers(1, 6)), max_size=30))
def test_property_compat_v1_splits_keep_pins_exact(ops):
    """VFIO TYPE1 (v1) compat: random MAP_DMA / sub-range UNMAP_DMA.  Split areas
    share their iopt_pages; a page stays pinned exactly while some area covers it,
    and every remaining byte still DMAs to the process page it was mapped from."""
    from backends.simulated.iommufd.io_pagetable import iopt_pages_of
    from backends.simulated.iommufd.pages import area_index, npinned
    e, ioas = _compat(set_iommu=uapi.VFIO_TYPE1_IOMMU)
    va = e.mem(32, fill=bytes(range(256)) * 512)
    iopt = e.ctx.get_ioas(ioas).iopt
    for is_map, x, n in ops:
        iova = 0x100000 + x * P
        if is_map:
            e.vfio(uapi.VFIO_IOMMU_MAP_DMA, _dma_map(vaddr=va + x * P, iova=iova, size=n * P))
        else:
            e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(iova=iova, size=n * P))
        want = 0
        for pages in iopt_pages_of(iopt):
            idx = set()
            for a in iopt.area_itree:
                if a.pages is pages:
                    lo, hi = area_index(a)
                    idx.update(range(lo, hi + 1))
            assert npinned(pages) == len(idx)
            want += len(idx)
        assert e.counters()[:2] == (want, want)
        for a in iopt.area_itree:
            off = a.iova - 0x100000
            assert dma_read(e.devs[0], a.iova, 8) == (8, e.h.read_mem(va + off, 8)[1])
    assert e.vfio(uapi.VFIO_IOMMU_UNMAP_DMA, _dma_unmap(flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL, size=0))[0] == 0
    assert e.counters() == (0, 0, 0)


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
