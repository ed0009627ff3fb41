"""drivers/iommu/iommufd/pages.c (with mm/gup.c) on SimHost: what gets pinned
and charged and when, how a failing source is refused, and what a device then
reads and writes through VA, MAP_FILE and dma-buf mappings."""

from __future__ import annotations

import pytest

from backends import uapi
from backends.host import (F_ADD_SEALS, F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, MAP_SHARED,
                           O_CREAT, O_RDONLY, O_RDWR, PROT_READ)
from backends.simulated.dma import dma_read, dma_write
from backends.simulated.iommu import SimVfioDevice
from backends.simulated.vfio import region_offset

from iommufd_env import E, P, R, RW, U64_MAX, Env, mock_env


# ============================================================================
# IOMMU_IOAS_MAP (ioas.c iommufd_ioas_map() -> io_pagetable.c iopt_map_user_pages());
# "the rig" below is backends/rig/guest/test_probe_iommufd.py on Debian 7.2.13
# ============================================================================

def test_map_unmapped_va_lazy_then_efault(env):
    """Lazy pinning (nothing is pinned until an area sits in an IOAS with a domain,
    iopt_area_fill_domain()): no domain -> success, pinned at attach -> EFAULT
    (the rig: test_4a_map_unmapped_user_va_ok_lazy); with a domain MAP itself is
    EFAULT (test_4b_map_unmapped_user_va_efault)."""
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
    only is fine (the rig: test_4b_map_read_only_page)."""
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


# ============================================================================
# IOMMU_IOAS_MAP_FILE (6.13+; pages.c iopt_alloc_file_pages(), mm/gup.c memfd_pin_folios())
# ============================================================================

def test_map_file_regular_file_lazy_then_einval():
    """No file-type check at map time; memfd_pin_folios() -> EINVAL when pinned
    (the rig: test_4a_map_file_regular_9p_file_lazy, test_4b_map_file_regular_9p_file_einval)."""
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
    """The write-access patch (docs/kernel-model.md, "Unmerged patches"): O_RDONLY
    fd + WRITEABLE: 7.2.13 succeeds (the rig: test_4a_map_file_rdonly_fd_writeable), the fix -> EPERM
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
    pinned (the rig: test_4a_seal_write_after_writeable_map_file_nothing_pinned),
    EBUSY once pinned (memfd_wait_for_pins; test_4b_seal_write_while_pinned_ebusy).  With the
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
    """The write-access patch / the rig's test_4b_writeable_map_file_then_device_writes_the_file:
    on 7.2 the device really writes an O_RDONLY file and a
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
    DMA see each other; READABLE-only faults on write (a DMAR fault on the rig:
    backends/rig/guest/test_edu_dma.py test_iommufd_write_to_read_only_iova_faults)."""
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


def test_pages_hold_their_one_pin_and_keep_munmapped_pages(env):
    """A MAP of a fresh range with a domain pins all of it once: the iopt_pages
    stand in the store's pins for that pin (no separate Pin object per mapping).
    munmap under the pin leaves the device the pinned pages (the pinned folio
    outlives the mm's mapping); UNMAP drops the pin and what it kept."""
    ioas = env.ioas()
    assert env.attach(ioas)[0] == 0
    va = env.mem(2, fill=b"pinned-data")
    assert env.map(ioas, va, 2 * P, 0x100000)[0] == 0
    store = env.h.mm.private
    (pages,) = store.pins
    assert (type(pages).__name__, pages.pins is pages, pages.first, pages.npages) == \
        ("IoptPages", True, va // P, 2)
    assert env.h.munmap(va, 2 * P) == 0
    assert list(store.held) == [pages] and store.held[pages].ranges == [(va // P, va // P + 2)]
    dev = env.devs[0]
    assert dma_read(dev, 0x100000, 11) == (11, b"pinned-data")
    assert dma_write(dev, 0x100000 + P, b"second") == 6
    assert dma_read(dev, 0x100000 + P, 6) == (6, b"second")
    assert env.unmap(ioas, 0x100000, 2 * P) == (0, 2 * P)
    assert (store.pins, store.held, env.counters()) == (set(), {}, (0, 0, 0))


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
    revoked; EOPNOTSUPP not a vfio exporter; never charged (pages.c
    iopt_alloc_dmabuf_pages())."""
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
# IOMMU_IOAS_COPY (ioas.c iommufd_ioas_copy(): the source's iopt_pages are shared)
# ============================================================================

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
