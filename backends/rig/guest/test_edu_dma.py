"""edu DMA through the emulated VT-d (backends/rig/edu.py, docs/kernel-model.md):
round trips with type1 (group device fd) and iommufd (cdev + IOAS, also a
MAP_FILE memfd), the bounce-page buffer helpers, writes to a read-only or
unmapped IOVA, which fault (DMAR) and change nothing, COW divergence of a
private mapping and an mmap of BAR0 with real pages.  The device write into a
read-only file (MAP_FILE without the write-access patch) is in test_probe_iommufd.py."""

from __future__ import annotations

import contextlib
import errno
import os
import time

import pytest
from backends.rig.guest.rigutil import need

from backends import uapi
from backends.errors import UsageError
from backends.host import O_RDWR
from backends.rig.edu import (EDU_BUFFER_SIZE, EDU_DMA_MASK, Edu, edu_devices,
                              group_device_fd, iommu_group)

PAGE = 0x1000
N = 0xFFF                                        # the most one edu transfer may move
PATTERN = (bytes(range(256)) * 16)[:N]


@contextlib.contextmanager
def kernel_log():
    """Collects the kernel log records that appear inside the block (/dev/kmsg,
    read from its end; DMAR faults are reported from an interrupt, so the
    block's end waits up to 2 s for one)."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    lines: list[str] = []
    try:
        yield lines
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any("DMAR" in ln for ln in lines):
            try:
                lines.append(os.read(fd, 8192).decode(errors="replace"))
            except BlockingIOError:
                time.sleep(0.05)
            except BrokenPipeError:
                continue                 # records overwritten; the next read goes on
    finally:
        os.close(fd)


@pytest.fixture
def type1_edu(raw, type1, edu_bdf):
    """An enabled Edu on the type1 container's group device fd."""
    container, group = type1
    dev = group_device_fd(raw.host, group, edu_bdf)
    assert dev >= 0, dev
    edu = Edu(raw.host, dev)
    edu.enable_bus_master()
    yield container, edu
    raw.host.close(dev)


@pytest.fixture
def iommufd_edu(raw, iommufd, ioas, attached):
    edu = Edu(raw.host, attached[0])
    edu.enable_bus_master()
    return iommufd, ioas, edu


def test_ident(type1_edu):
    assert type1_edu[1].ident() == 0x010000ED


def test_type1_round_trip(raw, type1_edu):
    container, edu = type1_edu
    src, dst = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(src, PATTERN)
    assert raw.dma_map(container, src, 0x100000, PAGE) == 0
    assert raw.dma_map(container, dst, 0x200000, PAGE) == 0
    edu.dma_to_device(0x100000, N)
    edu.dma_from_device(0x200000, N)
    assert raw.read(dst, N) == PATTERN


def test_type1_buffer_helpers_at_an_offset(raw, type1_edu):
    container, edu = type1_edu
    bounce = raw.anon(PAGE)
    assert raw.dma_map(container, bounce, 0x300000, PAGE) == 0
    edu.write_buffer(b"edu-buffer-at-0x800", iova=0x300000, vaddr=bounce, offset=0x800)
    raw.fill(bounce, bytes(PAGE))
    assert edu.read_buffer(19, iova=0x300000, vaddr=bounce, offset=0x800) == b"edu-buffer-at-0x800"


def test_type1_write_to_read_only_iova_faults(raw, type1_edu):
    container, edu = type1_edu
    bounce, target = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(target, b"A" * 64)
    assert raw.dma_map(container, bounce, 0x100000, PAGE) == 0
    assert raw.dma_map(container, target, 0x200000, PAGE, flags=uapi.VFIO_DMA_MAP_FLAG_READ) == 0
    edu.write_buffer(b"B" * 64, iova=0x100000, vaddr=bounce)
    with kernel_log() as log:
        edu.dma_from_device(0x200000, 64)
        edu.dma_from_device(0x400000, 64)                   # unmapped
    assert raw.read(target, 64) == b"A" * 64
    assert any("DMAR" in ln for ln in log), log


def test_iommufd_cdev_round_trip(raw, iommufd_edu):
    iommufd, ioas, edu = iommufd_edu
    src, dst = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(src, PATTERN)
    assert raw.ioas_map(iommufd, ioas, src, PAGE, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, dst, PAGE, iova=0x200000)[0] == 0
    edu.dma_to_device(0x100000, N)
    edu.dma_from_device(0x200000, N)
    assert raw.read(dst, N) == PATTERN


def test_iommufd_map_file_memfd_round_trip(raw, iommufd_edu):
    iommufd, ioas, edu = iommufd_edu
    fd = raw.memfd(2 * PAGE, PATTERN)
    assert raw.map_file(iommufd, ioas, fd, 0, 2 * PAGE, iova=0x100000)[0] == 0
    edu.dma_to_device(0x100000, N)
    edu.dma_from_device(0x101000, N)
    assert raw.host.pread(fd, N, PAGE) == (N, PATTERN)


def test_iommufd_write_to_read_only_iova_faults(raw, iommufd_edu):
    iommufd, ioas, edu = iommufd_edu
    bounce, target = raw.anon(PAGE), raw.anon(PAGE)
    raw.fill(target, b"A" * 64)
    assert raw.ioas_map(iommufd, ioas, bounce, PAGE, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, target, PAGE, iova=0x200000,
                        flags=uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA)[0] == 0
    edu.write_buffer(b"B" * 64, iova=0x100000, vaddr=bounce)
    with kernel_log() as log:
        edu.dma_from_device(0x200000, 64)
    assert raw.read(target, 64) == b"A" * 64
    assert any("DMAR" in ln for ln in log), log


def test_every_edu_device_round_trips_with_type1(raw, edu_bdf):
    """Each edu (QEMU -device edu, N times) in its own group and container."""
    need("type1", "/dev/vfio/vfio")
    devs = edu_devices()
    assert edu_bdf in devs
    for i, bdf in enumerate(devs):
        c = raw.host.open("/dev/vfio/vfio", O_RDWR)
        g = raw.host.open(f"/dev/vfio/{iommu_group(bdf)}", O_RDWR)
        assert raw.host.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, c.to_bytes(4, "little"))[0] == 0
        assert raw.host.ioctl(c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
        dev = group_device_fd(raw.host, g, bdf)
        assert dev >= 0, (bdf, dev)
        try:
            edu = Edu(raw.host, dev)
            edu.enable_bus_master()
            src, dst = raw.anon(PAGE), raw.anon(PAGE)
            data = f"edu #{i} at {bdf}".encode()
            raw.fill(src, data)
            assert raw.dma_map(c, src, 0x100000, PAGE) == 0
            assert raw.dma_map(c, dst, 0x200000, PAGE) == 0
            edu.dma_to_device(0x100000, len(data))
            edu.dma_from_device(0x200000, len(data))
            assert raw.read(dst, len(data)) == data
        finally:
            raw.host.close(dev)
            raw.host.close(g)
            raw.host.close(c)


def test_helper_refuses_iovas_beyond_the_dma_mask_and_buffer(raw, type1_edu):
    edu = type1_edu[1]
    with pytest.raises(UsageError, match="28-bit"):
        edu.dma_to_device(EDU_DMA_MASK + 1, 16)
    with pytest.raises(UsageError, match="buffer"):
        edu.dma_from_device(0x100000, 16, offset=EDU_BUFFER_SIZE - 8)
    with pytest.raises(UsageError, match="buffer"):
        edu.dma_to_device(0x100000, EDU_BUFFER_SIZE)


# --- the seeds with real pages ------------------------------------------------------

def test_seed002_private_file_ram_cow_divergence(raw, iommufd_edu):
    """Seed 002: private (MAP_PRIVATE) file-backed guest RAM mapped for DMA both
    by file and by VA, then the guest writes.  The write goes to the process's
    COW copy: the device reads the file's stale page through MAP_FILE and the
    guest's bytes through the VA map (the write pin broke COW at MAP time)."""
    from backends.host import MAP_PRIVATE, PROT_READ, PROT_WRITE
    iommufd, ioas, edu = iommufd_edu
    fd = raw.memfd(PAGE, b"FILE" * 16)
    ram = raw.host.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
    assert ram > 0, ram
    bounce = raw.anon(PAGE)
    assert raw.map_file(iommufd, ioas, fd, 0, PAGE, iova=0x100000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, ram, PAGE, iova=0x200000)[0] == 0
    assert raw.ioas_map(iommufd, ioas, bounce, PAGE, iova=0x300000)[0] == 0
    raw.fill(ram, b"GUEST" * 12)                                # the guest writes its RAM
    edu.dma_to_device(0x100000, 60)
    assert edu.read_buffer(60, iova=0x300000, vaddr=bounce) == b"FILE" * 15
    edu.dma_to_device(0x200000, 60)
    assert edu.read_buffer(60, iova=0x300000, vaddr=bounce) == b"GUEST" * 12
    assert raw.host.pread(fd, 60, 0) == (60, b"FILE" * 15)      # the file never changed


def test_seed002_type1_maps_by_va_and_reads_the_guests_bytes(raw, type1_edu):
    """Seed 002's other half: type1 has no MAP_FILE, so private file-backed RAM
    is mapped by VA and the device reads what the guest wrote (every kernel)."""
    from backends.host import MAP_PRIVATE, PROT_READ, PROT_WRITE
    container, edu = type1_edu
    fd = raw.memfd(PAGE, b"FILE" * 16)
    ram = raw.host.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
    assert ram > 0, ram
    bounce = raw.anon(PAGE)
    assert raw.dma_map(container, ram, 0x200000, PAGE) == 0
    assert raw.dma_map(container, bounce, 0x300000, PAGE) == 0
    raw.fill(ram, b"GUEST" * 12)
    edu.dma_to_device(0x200000, 60)
    assert edu.read_buffer(60, iova=0x300000, vaddr=bounce) == b"GUEST" * 12
    assert raw.host.pread(fd, 60, 0) == (60, b"FILE" * 15)


def _bar0(raw, device_fd: int) -> tuple[int, int]:
    """(vaddr, size) of an mmap of edu's BAR0 (1 MiB of MMIO: VM_PFNMAP)."""
    from backends.host import MAP_SHARED, PROT_READ, PROT_WRITE
    edu = Edu(raw.host, device_fd)
    size = 1 << 20
    va = raw.host.mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, device_fd, edu.region_offset(0))
    assert va > 0, va
    return va, size


def test_seed004_type1_maps_an_mmap_of_bar0(raw, type1, edu_bdf):
    """Seed 004: type1 follows the VM_PFNMAP pfns (vaddr_get_pfn -> follow_fault_pfn)."""
    container, group = type1
    dev = group_device_fd(raw.host, group, edu_bdf)
    assert dev >= 0, dev
    try:
        va, size = _bar0(raw, dev)
        assert raw.dma_map(container, va, 0x400000, size) == 0
        assert raw.dma_unmap(container, 0x400000, size)[0] == 0
        raw.host.munmap(va, size)
    finally:
        raw.host.close(dev)


def test_seed004_iommufd_refuses_an_mmap_of_bar0_efault(raw, iommufd_edu, attached):
    """Seed 004: iommufd pins with pin_user_pages(): a VM_PFNMAP VMA is EFAULT."""
    iommufd, ioas, _ = iommufd_edu
    va, size = _bar0(raw, attached[0])
    assert raw.ioas_map(iommufd, ioas, va, size, iova=0x400000)[0] == -errno.EFAULT
    raw.host.munmap(va, size)
