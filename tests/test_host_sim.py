"""SimHost behaviour the running kernel cannot show: other kernel versions
(profiles.py), GUP pins, device nodes, 64 GiB sparse memory.  Each test cites
its source: the kernel function, and the commit and release where the
behaviour is version-dependent (backends/kernel_profiles.SOURCES)."""

from __future__ import annotations

import errno

import pytest

from backends.errors import UsageError
from backends.host import (F_ADD_SEALS, F_GET_SEALS, F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW,
                           F_SEAL_SHRINK, F_SEAL_WRITE, HPAGE_SIZE, MAP_ANONYMOUS, MAP_FIXED,
                           MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING, MFD_EXEC, MFD_HUGETLB,
                           MFD_NOEXEC_SEAL, O_RDONLY, O_RDWR, O_TMPFILE, PAGE_SIZE, PROT_READ,
                           PROT_WRITE)
from backends.simulated.gup import pages_of
from backends.kernel_profiles import (format_profiles, get_profile, host_profile, list_profiles,
                                      profiles_dict)
from backends.simulated import PfnmapDevice, SimHost

RW = PROT_READ | PROT_WRITE
GiB = 1 << 30


def sealed_memfd(h: SimHost, seals: int, size: int = PAGE_SIZE) -> int:
    fd = h.memfd_create("t", MFD_ALLOW_SEALING)
    assert h.ftruncate(fd, size) == 0
    assert h.fcntl(fd, F_ADD_SEALS, seals) == 0
    return fd


# ---- profiles ----------------------------------------------------------------

def test_profile_names_and_unknown_name():
    for name in ["6.1", "6.6", "6.7", "6.12", "6.12-regressed", "6.13", "6.18", "6.19",
                 "7.1", "7.2", "7.2+fix"]:
        assert name in list_profiles()
    with pytest.raises(UsageError) as e:
        get_profile("5.10")
    assert "6.12-regressed" in str(e.value) and "7.2+fix" in str(e.value)


@pytest.mark.parametrize("release,name", [("6.18.44-fc-v782", "6.18"), ("6.12.9", "6.12"),
                                          ("6.15.1", "6.13"), ("7.2.13-amd64", "7.2"),
                                          ("6.5.0", "6.1"), ("8.0", "7.2"),
                                          ("6.12.8-1-amd64", "6.12-regressed"),
                                          ("6.12", "6.12-regressed"), ("6.12.95", "6.12")])
def test_host_profile_nearest_lower(release, name):
    """6.12.0-6.12.8 carry 5de195060b2e without its fix 8ec396d05d1b (6.12.9)."""
    assert host_profile(release).name == name


def test_iommu_switches_match_research_timeline():
    """The version timeline of the iommufd/type1 switches (release and commit of
    each in backends/kernel_profiles.SOURCES)."""
    p = {n: get_profile(n) for n in list_profiles()}
    assert not p["6.1"].iommufd and p["6.6"].iommufd and p["6.6"].vfio_cdev
    assert not p["6.12"].map_file and p["6.13"].map_file and p["6.13"].change_process
    assert p["6.13"].map_file_fget_in_ioas and p["6.18"].map_file_fget_in_ioas
    assert not p["6.19"].map_file_fget_in_ioas and p["6.19"].map_file_dmabuf
    assert p["6.13"].type1_overflow_errno == errno.EINVAL
    assert p["6.18"].type1_overflow_errno == errno.EOVERFLOW
    assert not p["6.13"].compat_empty_unmap_ok and p["6.18"].compat_empty_unmap_ok
    assert [n for n in p if p[n].map_file_requires_fmode_write] == ["7.2+fix"]   # unmerged, not in 7.2.13
    assert all(x.iommufd_map_pfnmap_errno == errno.EFAULT for x in p.values())


def test_format_and_json():
    text = format_profiles()
    assert text.splitlines()[0].split()[:3] == ["switch", "6.1", "6.6"]
    assert "ro_shared_mmap_of_write_sealed" in text and "8ec396d05d1b" in text
    d = profiles_dict()
    assert d["profiles"]["7.2+fix"]["map_file_requires_fmode_write"] is True
    assert d["profiles"]["6.18"]["type1_overflow_errno"] == errno.EOVERFLOW
    assert set(d["switches"]) == set(d["profiles"]["6.1"]) - {"description"}


# ---- memfd seals and mmap (mm/memfd.c, mm/mmap.c) on other kernel versions -----

@pytest.mark.parametrize("profile,expect", [
    ("6.6", -errno.EPERM),                                        # <6.7: mapping_map_writable() on VM_SHARED
    ("6.1", "ok"),                      # the 2025-07 6.1.y backport (Debian 6.1.176, rig run 2026-11-23)
    ("6.7", "ok"), ("6.12", "ok"), ("6.13", "ok"), ("7.2", "ok"),  # 158978945f31 (6.7)
    ("6.12-regressed", -errno.EPERM),                             # 5de195060b2e..8ec396d05d1b window
])
def test_ro_shared_mmap_of_write_sealed_memfd(profile, expect):
    """mmap MAP_SHARED PROT_READ of an FMODE_WRITE fd with F_SEAL_WRITE
    (memfd_check_seals_mmap(), mmap_region(): profile.ro_shared_mmap_of_write_sealed)."""
    h = SimHost(profile)
    fd = sealed_memfd(h, F_SEAL_WRITE)
    r = h.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, fd)
    assert (r if r < 0 else "ok") == expect
    if r > 0:
        assert h.mprotect(r, PAGE_SIZE, RW) == -errno.EACCES          # VM_MAYWRITE cleared


@pytest.mark.parametrize("profile", ["6.1", "6.6", "6.12-regressed", "7.2"])
def test_ro_shared_mmap_of_rdonly_fd_always_allowed(profile):
    """do_mmap(): a shared mapping of an O_RDONLY fd loses VM_SHARED|VM_MAYWRITE, all versions."""
    h = SimHost(profile)
    fd = sealed_memfd(h, F_SEAL_WRITE)
    ro = h.open(f"/proc/self/fd/{fd}", O_RDONLY)
    assert h.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, ro) > 0
    assert h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, ro) == -errno.EACCES


@pytest.mark.parametrize("profile,expect", [("6.6", -errno.EBUSY), ("6.7", 0), ("7.2", 0)])
def test_future_write_ro_shared_mapping_counts_before_6_7(profile, expect):
    """'mm: drop the assumption that VM_SHARED always implies writable' (6.7,
    the 2023 "permit write-sealed memfd read-only shared mappings" series):
    before it every VM_SHARED VMA held i_mmap_writable, so
    F_SEAL_WRITE fails EBUSY while a FUTURE_WRITE read-only shared mapping exists."""
    h = SimHost(profile)
    fd = sealed_memfd(h, F_SEAL_FUTURE_WRITE)
    assert h.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, fd) > 0
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == expect


@pytest.mark.parametrize("profile,left", [("6.6", "hole"), ("6.12", "old")])
def test_failed_map_fixed_keeps_old_mapping_from_6_12(profile, left):
    """5de195060b2e: before it, mmap_region() unmapped the MAP_FIXED range first."""
    h = SimHost(profile)
    fd = sealed_memfd(h, F_SEAL_WRITE)
    a = h.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert h.write_mem(a, b"x") == 1
    assert h.mmap(a, PAGE_SIZE, RW, MAP_SHARED | MAP_FIXED, fd) == -errno.EPERM
    assert h.read_mem(a, 1) == ((1, b"x") if left == "old" else (-errno.EFAULT, b""))


@pytest.mark.parametrize("profile,seal_ret,seals", [
    ("6.6", 0, F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE),
    ("6.13", 0, F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE),
    ("6.18", -errno.EBUSY, 0), ("7.2", -errno.EBUSY, 0)])
def test_seal_exec_implied_write_quirk(profile, seal_ret, seals):
    """memfd_add_seals(): F_SEAL_EXEC implies WRITE without mapping_deny_writable();
    fixed by 3b041514cb6e (observed on 6.18.44)."""
    h = SimHost(profile)
    fd = h.memfd_create("x", MFD_ALLOW_SEALING | MFD_EXEC)
    h.ftruncate(fd, PAGE_SIZE)
    a = h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC) == seal_ret
    assert h.fcntl(fd, F_GET_SEALS) == seals
    if seal_ret == 0:   # the quirk: the shared writable mapping still writes the sealed file
        assert h.write_mem(a, b"w") == 1 and h.pread(fd, 1, 0) == (1, b"w")


def test_f_seal_exec_unknown_before_6_3():
    """F_SEAL_EXEC, MFD_EXEC and MFD_NOEXEC_SEAL arrived in 6.3 ('mm/memfd: add
    F_SEAL_EXEC', mm/memfd.c; profile.f_seal_exec)."""
    h = SimHost("6.1")
    assert h.memfd_create("x", MFD_NOEXEC_SEAL) == -errno.EINVAL
    fd = h.memfd_create("x", MFD_ALLOW_SEALING)
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC) == -errno.EINVAL
    assert SimHost("6.6").memfd_create("x", MFD_EXEC | MFD_NOEXEC_SEAL) == -errno.EINVAL


# ---- pins: memfd_wait_for_pins, check_vma_flags ----------------------------------

def test_pinned_pages_make_seal_write_ebusy():
    """mm/memfd.c memfd_wait_for_pins(): -EBUSY after its ~150 ms of rescans,
    i_mmap_writable restored (as on the rig: backends/rig/guest/
    test_probe_iommufd.py test_4b_seal_write_while_pinned_ebusy)."""
    h = SimHost("7.2")
    fd = h.memfd_create("x", MFD_ALLOW_SEALING)
    h.ftruncate(fd, 2 * PAGE_SIZE)
    a = h.mmap(0, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, fd)
    ro = h.open(f"/proc/self/fd/{fd}", O_RDONLY)
    b = h.mmap(0, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, ro)
    h.munmap(a, 2 * PAGE_SIZE)
    n, pages = h.pin_user_pages(b, 2, write=False)
    assert n == 2
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -errno.EBUSY
    assert h.file_of(fd).inode.mapping.i_mmap_writable == 0
    h.unpin_user_pages(pages)
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0


def test_memfd_pin_folios():
    """mm/gup.c memfd_pin_folios(): -EINVAL unless shmem/hugetlbfs, -EINVAL when
    end >= i_size; pinned pages are the page cache (what IOMMU_IOAS_MAP_FILE pins)."""
    h = SimHost("7.2")
    fd = h.memfd_create("x", MFD_ALLOW_SEALING)
    h.ftruncate(fd, 4 * PAGE_SIZE)
    assert h.memfd_pin_folios(fd, 0, 4 * PAGE_SIZE)[0] == -errno.EINVAL
    n, pins = h.memfd_pin_folios(fd, PAGE_SIZE, 3 * PAGE_SIZE - 1)
    assert n == 2
    pages_of(pins)[1].data[:3] = b"dma"                       # a device writes the page cache
    assert h.pread(fd, 3, 2 * PAGE_SIZE) == (3, b"dma")
    assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -errno.EBUSY
    ext4 = h.open("/tmp", O_TMPFILE | O_RDWR)
    h.ftruncate(ext4, PAGE_SIZE)
    assert h.memfd_pin_folios(ext4, 0, 0)[0] == -errno.EINVAL


def test_pin_user_pages_check_vma_flags():
    """check_vma_flags(): -EFAULT for unmapped, write to !VM_WRITE, VM_PFNMAP,
    FOLL_LONGTERM write of a writeback-fs shared mapping
    (writable_file_mapping_allowed())."""
    h = SimHost("7.2")
    anon = h.mmap(0, 2 * PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    assert h.pin_user_pages(anon, 1, write=True) == (-errno.EFAULT, [])
    assert h.pin_user_pages(anon, 1, write=False)[0] == 1
    assert h.pin_user_pages(anon + 64 * PAGE_SIZE, 1, write=False) == (-errno.EFAULT, [])
    h.munmap(anon + PAGE_SIZE, PAGE_SIZE)
    n, pages = h.pin_user_pages(anon, 2, write=False)            # partial, like __get_user_pages()
    assert n == 1 and len(pages) == 1
    ext4 = h.open("/tmp", O_TMPFILE | O_RDWR)
    h.ftruncate(ext4, PAGE_SIZE)
    m = h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, ext4)
    assert h.pin_user_pages(m, 1, write=True, longterm=True) == (-errno.EFAULT, [])
    assert h.pin_user_pages(m, 1, write=True, longterm=False)[0] == 1
    assert h.pin_user_pages(m, 1, write=False, longterm=True)[0] == 1
    shm = h.memfd_create("x", 0)
    h.ftruncate(shm, PAGE_SIZE)
    s = h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, shm)
    assert h.pin_user_pages(s, 1, write=True, longterm=True)[0] == 1   # shmem is fine
    beyond = h.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, shm)
    assert h.pin_user_pages(beyond + PAGE_SIZE, 1, write=True) == (-errno.EFAULT, [])  # SIGBUS


def test_write_pin_of_private_mapping_breaks_cow():
    """FOLL_WRITE (and a R/O FOLL_LONGTERM pin, gup_must_unshare()) on a private
    file mapping pins a private copy: device writes stay out of the file."""
    h = SimHost("7.2")
    fd = h.memfd_create("x", 0)
    h.pwrite(fd, b"A" * PAGE_SIZE, 0)
    p = h.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE, fd)
    n, pins = h.pin_user_pages(p, 1, write=True)
    page = pins[0].page(0)
    page.data[:2] = b"zz"
    assert h.read_mem(p, 3) == (3, b"zzA")
    assert h.pread(fd, 3, 0) == (3, b"AAA")
    q = h.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd)
    ro_page = pages_of(h.pin_user_pages(q, 1, write=False, longterm=True)[1])[0]
    h.pwrite(fd, b"B", 0)
    assert ro_page.data[:1] == b"A" and h.read_mem(q, 1) == (1, b"A")
    short = pages_of(h.pin_user_pages(q, 1, write=False, longterm=False)[1])[0]   # q now has its own copy
    assert short is ro_page


def test_shared_pin_sees_process_writes():
    h = SimHost("7.2")
    fd = h.memfd_create("x", 0)
    h.ftruncate(fd, PAGE_SIZE)
    a = h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
    page = pages_of(h.pin_user_pages(a, 1, write=True)[1])[0]
    h.write_mem(a + 10, b"cpu")
    assert bytes(page.data[10:13]) == b"cpu"
    page.data[0:3] = b"dev"
    assert h.read_mem(a, 3) == (3, b"dev") and h.pread(fd, 3, 0) == (3, b"dev")


# ---- devices -------------------------------------------------------------------

class FakeIommu:
    """A stand-in for the /dev/iommu model of a later issue."""
    opened = 0

    def __init__(self, host, file):
        FakeIommu.opened += 1
        self.released = False

    def ioctl(self, request, arg):
        if request == 0x3B81:
            return 0, bytes(arg[:8]) + (1).to_bytes(4, "little")
        return -errno.ENOTTY, bytes(arg)

    def release(self):
        self.released = True


def test_register_chardev_ioctl_and_release():
    h = SimHost("6.13")
    h.register_chardev("/dev/iommu", FakeIommu)
    fd = h.open("/dev/iommu", O_RDWR)
    dev = h.file_of(fd).dev
    assert h.ioctl(fd, 0x3B81, bytes(12)) == (0, bytes(8) + b"\x01\0\0\0")
    assert h.ioctl(fd, 0x3B99, b"ab") == (-errno.ENOTTY, b"ab")
    assert h.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, fd) == -errno.ENODEV
    memfd = h.memfd_create("x", 0)
    assert h.ioctl(memfd, 0x3B81, bytes(12))[0] == -errno.ENOTTY
    assert h.ioctl(99, 0x3B81, b"")[0] == -errno.EBADF
    assert h.close(fd) == 0 and dev.released
    assert h.open("/dev/vfio/vfio", O_RDWR) == -errno.ENOENT


def test_pfnmap_bar_mapping():
    """A BAR mmap is VM_IO|VM_PFNMAP: GUP (and process_vm_readv) -EFAULT,
    vfio type1's follow_pfnmap() reaches the BAR page (vaddr_get_pfns() ->
    follow_fault_pfn() in drivers/vfio/vfio_iommu_type1.c)."""
    from backends.simulated.gup import follow_pfnmap
    h = SimHost("7.2")
    h.register_chardev("/dev/vfio/devices/vfio0", PfnmapDevice.factory(4 * PAGE_SIZE))
    fd = h.open("/dev/vfio/devices/vfio0", O_RDWR)
    bar = h.mmap(0, 4 * PAGE_SIZE, RW, MAP_SHARED, fd)
    assert bar > 0
    assert h.read_mem(bar, 4) == (-errno.EFAULT, b"")
    assert h.pin_user_pages(bar, 1, write=False) == (-errno.EFAULT, [])
    n, pins = follow_pfnmap(h.mm, bar + PAGE_SIZE, 3, write=True)
    assert n == 3 and pins[0].first == 1 and pins[0] not in pins[0].store.pins   # not refcounted
    page = pins[0].page(0)
    page.data[:2] = b"hi"
    assert h.file_of(fd).dev.bar.pages[1] is page
    assert h.mmap(0, 8 * PAGE_SIZE, RW, MAP_SHARED, fd) == -errno.EINVAL


def test_dmabuf_placeholder():
    h = SimHost("6.19")
    fd = h.dmabuf_export(8 * PAGE_SIZE)
    assert h.file_of(fd).inode.kind == "dmabuf"
    assert h.fcntl(fd, F_GET_SEALS) == -errno.EINVAL
    assert h.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, fd) == -errno.EINVAL


# ---- hugetlbfs and sparse memory ---------------------------------------------------

def test_hugetlb_memfd():
    """hugetlbfs_setattr() -EINVAL for unaligned sizes; no write_iter -> pwrite
    -EINVAL; no free huge pages -> mmap -ENOMEM (observed on this machine)."""
    h = SimHost("7.2", hugetlb_pages=0)
    fd = h.memfd_create("h", MFD_HUGETLB | MFD_ALLOW_SEALING)
    assert h.ftruncate(fd, PAGE_SIZE) == -errno.EINVAL
    assert h.ftruncate(fd, HPAGE_SIZE) == 0
    assert h.pwrite(fd, b"x", 0) == -errno.EINVAL
    assert h.mmap(0, HPAGE_SIZE, RW, MAP_SHARED, fd) == -errno.ENOMEM
    h = SimHost("7.2", hugetlb_pages=4)
    fd = h.memfd_create("h", MFD_HUGETLB)
    h.ftruncate(fd, 4 * HPAGE_SIZE)
    a = h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)               # length rounded up to 2 MiB
    assert a % HPAGE_SIZE == 0 and h.write_mem(a + HPAGE_SIZE - 1, b"x") == 1
    assert h.write_mem(a + HPAGE_SIZE, b"x") == -errno.EFAULT
    assert h.mmap(0, 4 * HPAGE_SIZE, RW, MAP_SHARED, fd) == -errno.ENOMEM


def test_64gib_guest_is_sparse():
    """A 64 GiB memfd-backed guest costs only the pages written."""
    h = SimHost("7.2")
    fd = h.memfd_create("guest", MFD_ALLOW_SEALING)
    assert h.ftruncate(fd, 64 * GiB) == 0
    a = h.mmap(0, 64 * GiB, RW, MAP_SHARED, fd)
    assert a > 0
    p = h.mmap(0, 64 * GiB, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for off in (0, 5 * GiB + 123, 64 * GiB - 2):
        assert h.write_mem(a + off, b"ok") == 2
    assert h.write_mem(p + 32 * GiB, b"anon") == 4
    assert h.read_mem(a + 40 * GiB, 4) == (4, bytes(4))        # unwritten: zeros, no page
    assert h.pread(fd, 2, 5 * GiB + 123) == (2, b"ok")
    assert h.page_count() == 3 + 1                               # 3 shared pages, 1 anon
    assert h.fallocate(fd, 0, 0, 64 * GiB) == 0 and h.page_count() == 4
    assert h.ftruncate(fd, GiB) == 0 and h.page_count() == 2
    assert h.read_mem(a + 5 * GiB, 1) == (-errno.EFAULT, b"")     # beyond EOF: SIGBUS -> EFAULT


def test_close_all_releases_everything():
    h = SimHost("7.2")
    fd = h.memfd_create("x", MFD_ALLOW_SEALING)
    h.ftruncate(fd, PAGE_SIZE)
    h.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
    inode = h.file_of(fd).inode
    with h:
        pass
    assert h.fds == {} and h.mm.vmas == [] and inode.mapping.i_mmap_writable == 0
