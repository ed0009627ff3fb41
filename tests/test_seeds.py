"""Five upstream patches and threads end to end: QEMU's policy + listener + a
real client on the simulated kernel (vmm_model/simulate.py), then a simulated
device's DMA (backends/simulated/dma.py) or the host's own calls show the
consequence.  The test names keep the project's numbering (seed000 .. seed004):

000  "[PATCH] iommu/iommufd: Require write access for writable MAP_FILE
     mappings" (2026-06-07, not merged; profile 7.2+fix; docs/kernel-model.md,
     "Unmerged patches"): writable MAP_FILE of read-only files.
001  the iommufd live update series (v1 2026-02-03, not merged; profile 7.2+lu):
     seals are required at map time.
002  "vfio/container: Restrict dma_map_file() to shared RAM or RAM devices"
     (QEMU 11.0.2, 11.1; docs/qemu-versions.md): private file-backed RAM mapped
     by file.
003  "[PATCH v2 0/3] permit write-sealed memfd read-only shared mappings"
     (158978945f31, 6.7): RO shared mmap of a write-sealed memfd.
004  "[PATCH] iommu: iommufd: Explicitly check for VM_PFNMAP in
     iommufd_ioas_map" (2025-10, not merged): VM_PFNMAP BARs.
"""

from __future__ import annotations

import errno

import pytest

from backends.host import (F_ADD_SEALS, F_SEAL_WRITE, MAP_SHARED, MFD_ALLOW_SEALING, PROT_READ,
                           PROT_WRITE)
from backends.simulated.dma import dma_read, dma_write
from vmm_model import gallery
from vmm_model.qemu_versions import get_qemu
from vmm_model.simulate import simulate


def _map_event(sim, gpa: int):
    """The successful map event covering guest address ``gpa`` (iova == gpa without a vIOMMU)."""
    for ev in sim.container.events:
        if ev.kind == "map" and ev.iova <= gpa < ev.iova + ev.size:
            return ev
    raise AssertionError(f"no map event covers 0x{gpa:x}")


GPA = 0x200000          # in ram-below-4g


def _write_file(host, rb, off: int, data: bytes) -> None:
    """Write the backing file through a shared mapping (hugetlbfs has no write())."""
    base = off - off % rb.page_size
    va = host.mmap(0, rb.page_size, PROT_READ | PROT_WRITE, MAP_SHARED, rb.fd, base)
    assert va > 0 and host.write_mem(va + off - base, data) == len(data)
    host.munmap(va, rb.page_size)


# --- 002: private file-backed RAM (QEMU "Restrict dma_map_file() to shared RAM") ----

@pytest.mark.parametrize("qemu, backend, device_sees", [
    ("10.1", "iommufd", b"FILE"),    # MAP_FILE of the private memfd: the page cache, stale
    ("11.0.0", "iommufd", b"FILE"),
    ("11.0.2", "iommufd", b"GUES"),  # shared-only MAP_FILE (stable): private RAM mapped by VA
    ("11.1", "iommufd", b"GUES"),
    ("master", "iommufd", b"GUES"),
    ("10.0", "iommufd", b"GUES"),    # before MAP_FILE existed in QEMU
    ("10.1", "type1", b"GUES"),      # type1 has no dma_map_file
    ("10.1", "compat", b"GUES"),
])
@pytest.mark.parametrize("scenario", ["s08-memfd-share-off", "s06-mem-path-hugetlbfs"])
def test_seed002_private_file_ram_cow_divergence(scenario, qemu, backend, device_sees):
    """Private (MAP_PRIVATE) file-backed guest RAM: the guest's write goes to a
    COW copy; a device behind MAP_FILE reads the file's page instead."""
    sc = gallery.load(scenario)
    with simulate(sc, get_qemu(qemu), backend, "7.2") as sim:
        assert sim.container.error is None
        ev = _map_event(sim, GPA)
        assert ev.result.ret == 0
        rb = ev.section.mr.ram_block
        off = ev.vaddr + (GPA - ev.iova) - rb.host
        _write_file(sim.host, rb, off, b"FILE")                # what the file held
        assert sim.host.write_mem(rb.host + off, b"GUEST") == 5  # the guest writes its RAM
        assert dma_read(sim.device, GPA, 4) == (4, device_sees)
        want_ioctl = "IOMMU_IOAS_MAP_FILE" if device_sees == b"FILE" else None
        if want_ioctl:
            assert ev.result.request.ioctl == want_ioctl


# --- 000: writable MAP_FILE of read-only files (the unmerged write-access patch) ------

def test_seed000_device_writes_into_readonly_file_before_fix():
    """Gallery scenario s38 on 7.2.13 (as on the rig: backends/rig/guest/test_probe_iommufd.py
    test_4b_writeable_map_file_then_device_writes_the_file): writable MAP_FILE of
    the O_RDONLY fd succeeds and the device's DMA write lands in the read-only file."""
    sc = gallery.load("s38-readonly-file-rom-off")
    with simulate(sc, get_qemu("10.1"), "iommufd", "7.2") as sim:
        ev = _map_event(sim, GPA)
        assert (ev.result.ret, ev.result.request.ioctl) == (0, "IOMMU_IOAS_MAP_FILE")
        assert ev.result.request.flag_names() == "FIXED_IOVA|WRITEABLE|READABLE"
        assert dma_write(sim.device, GPA, b"DEVICE") == 6
        rb = ev.section.mr.ram_block
        assert sim.host.pread(rb.fd, 6, GPA - ev.iova + ev.vaddr - rb.host) == (6, b"DEVICE")


def test_seed000_map_file_eperm_and_realize_fails_after_fix():
    sc = gallery.load("s38-readonly-file-rom-off")
    with simulate(sc, get_qemu("10.1"), "iommufd", "7.2+fix") as sim:
        first = next(ev for ev in sim.container.events if ev.kind == "map")
        assert first.result.ret == -errno.EPERM
        assert sim.container.error is not None
        assert "= -1 (Operation not permitted)" in sim.container.error
        assert sim.container.error.startswith("Region ")


def test_seed000_fixed_policy_maps_by_va_and_file_stays_intact():
    sc = gallery.load("s38-readonly-file-rom-off")
    with simulate(sc, get_qemu("11.1"), "iommufd", "7.2+fix") as sim:
        ev = _map_event(sim, GPA)
        assert (ev.result.ret, ev.result.request.ioctl) == (0, "IOMMU_IOAS_MAP")
        assert dma_write(sim.device, GPA, b"DEVICE") == 6
        rb = ev.section.mr.ram_block
        off = GPA - ev.iova + ev.vaddr - rb.host
        assert sim.host.read_mem(rb.host + off, 6) == (6, b"DEVICE")   # the guest's COW page
        assert sim.host.pread(rb.fd, 6, off) == (6, bytes(6))          # the file is untouched


@pytest.mark.parametrize("kernel, sealed_while_mapped", [("7.2", 0), ("7.2+fix", -errno.EBUSY)])
def test_seed000_seal_write_vs_writable_map_file(kernel, sealed_while_mapped):
    """With no device attached (nothing pinned), only the fix's
    mapping_map_writable() makes F_ADD_SEALS(F_SEAL_WRITE) EBUSY while a
    writable MAP_FILE exists; after the unmap the seal succeeds."""
    from backends.iommufd import IommufdContainer
    from backends.simulated import SimHost
    from backends.simulated.vfio import install
    with SimHost(kernel) as h:
        install(h)
        fd = h.memfd_create("guest", MFD_ALLOW_SEALING)
        h.ftruncate(fd, 1 << 20)
        with IommufdContainer(h) as c:
            assert c.dma_map_file(0x100000, 1 << 20, fd, 0, readonly=False).ret == 0
            assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == sealed_while_mapped
            assert c.dma_unmap(0x100000, 1 << 20).ret == 0
            assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0


def test_seed000_pinned_pages_make_seal_ebusy_in_every_version():
    """With a device attached the pages are pinned: EBUSY even for a READABLE-only
    MAP_FILE (mm/memfd.c memfd_wait_for_pins(); as on the rig:
    test_probe_iommufd.py test_4b_seal_write_while_pinned_ebusy)."""
    from backends.iommufd import IommufdContainer
    from backends.simulated import SimHost
    from backends.simulated.vfio import install
    with SimHost("7.2") as h:
        install(h)
        fd = h.memfd_create("guest", MFD_ALLOW_SEALING)
        h.ftruncate(fd, 1 << 20)
        with IommufdContainer(h) as c:
            c.attach_device("/dev/vfio/devices/vfio0")
            assert c.dma_map_file(0x100000, 1 << 20, fd, 0, readonly=True).ret == 0
            assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == -errno.EBUSY
            assert c.dma_unmap(0x100000, 1 << 20).ret == 0
            assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0


# --- 001: iommufd live update --------------------------------------------------------
# Live update v1 (NOT merged; docs/kernel-model.md "Unmerged patches", profile
# 7.2+lu): the VMM preserves the
# RAM files in the LUO session, marks the HWPT (IOMMU_HWPT_LU_SET_PRESERVE), then
# preserves the iommufd fd, whose iommufd_save_hwpts() runs
# check_iopt_pages_preserved(): every area a file with SEAL|GROW|SHRINK cached at
# MAP_FILE time.

LU_SEALS = {"F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK"}


def _lu_mark(sim, token: int = 1) -> int:
    """IOMMU_HWPT_LU_SET_PRESERVE on the device's HWPT."""
    from backends import uapi
    (_, _, _, hwpt), = sim.client.devices
    c = uapi.codec("iommu_hwpt_lu_set_preserve")
    return sim.host.ioctl(sim.client.fd, uapi.IOMMU_HWPT_LU_SET_PRESERVE,
                          c.pack(c.size, hwpt, token))[0]


def _lu_preserve(sim) -> int:
    """Preserve every mapped RAMBlock fd, mark the HWPT, preserve the iommufd fd:
    the last step's answer."""
    for ev in sim.container.events:
        rb = ev.section.mr.ram_block if ev.kind == "map" else None
        if rb is not None and rb.fd >= 0:
            assert sim.host.luo_preserve(rb.fd) == 0
    assert _lu_mark(sim) == 0
    return sim.host.luo_preserve(sim.client.fd)


def test_seed001_qemu_aux_memfd_rom_blocks_preserve_until_it_is_gone():
    """QEMU 10.2, aux-ram-share, sealed memfd RAM: every section is MAP_FILE,
    but the aux memfds of pc.bios and pc.rom (qemu_memfd_create(name, 0, 0, ...):
    no MFD_ALLOW_SEALING) have only F_SEAL_SEAL, so the HWPT cannot be preserved
    (EINVAL; the IOAS stays mutable).  Without those areas (pc.bios at 4 GiB -
    256 KiB and as isa-bios at 0xe0000, pc.rom at 0xc0000 after reset) it is, and
    the IOAS is then immutable: QEMU's own map/unmap get EBUSY."""
    from vmm_model.container import live_mappings
    sc = gallery.load("seed001-live-update-memfd")
    with simulate(sc, get_qemu("10.2"), "iommufd", "7.2+lu") as sim:
        maps = [ev for ev in sim.container.events if ev.kind == "map"]
        assert {(ev.result.ret, ev.result.request.ioctl) for ev in maps} == {(0, "IOMMU_IOAS_MAP_FILE")}
        assert set(sim.block("ram0").backing.seals) >= LU_SEALS
        assert sim.block("pc.bios").backing.seals == ("F_SEAL_SEAL",)
        assert sim.block("pc.rom").backing.seals == ("F_SEAL_SEAL",)
        assert _lu_preserve(sim) == -errno.EINVAL
        aux = [ev for ev in live_mappings(sim.container)
               if ev.section.mr.ram_block.idstr in ("pc.bios", "pc.rom")]
        assert sorted((ev.iova, ev.size) for ev in aux) == [
            (0xC0000, 0x20000), (0xE0000, 0x20000), (0xFFFC0000, 0x40000)]
        for ev in aux:
            assert sim.container.dma_unmap(ev.iova, ev.size).ret == 0
        assert _lu_preserve(sim) == 0
        low = next(ev for ev in maps if ev.iova == 0x100000)             # ram0
        assert sim.container.dma_unmap(low.iova, low.size).ret == -errno.EBUSY
        bios = aux[-1]
        r = sim.container.dma_map(bios.iova, bios.size, bios.vaddr, True, bios.section.mr)
        assert (r.ret, r.request.ioctl) == (-errno.EBUSY, "IOMMU_IOAS_MAP_FILE")


@pytest.mark.parametrize("qemu, scenario", [("10.0", "seed001-live-update-memfd"),
                                            ("10.2", "s02-default-ram")])
def test_seed001_va_mapped_ram_cannot_be_preserved(qemu, scenario):
    """RAM mapped by VA (QEMU before MAP_FILE, or anonymous RAM) is an
    IOPT_ADDRESS_USER area: EINVAL, whatever the seals."""
    sc = gallery.load(scenario)
    with simulate(sc, get_qemu(qemu), "iommufd", "7.2+lu") as sim:
        ram = [ev for ev in sim.container.events
               if ev.kind == "map" and ev.section.mr.ram_block.idstr in ("ram0", "pc.ram")]
        assert ram and {ev.result.request.ioctl for ev in ram} == {"IOMMU_IOAS_MAP"}
        assert _lu_preserve(sim) == -errno.EINVAL


def test_seed001_needs_the_lu_kernel():
    """Without the (unmerged) series the ioctl does not exist: ENOTTY."""
    sc = gallery.load("seed001-live-update-memfd")
    with simulate(sc, get_qemu("10.2"), "iommufd", "7.2") as sim:
        assert _lu_mark(sim) == -errno.ENOTTY


# --- 003: RO shared mmap of a write-sealed memfd (158978945f31, 6.7) ------------------

@pytest.mark.parametrize("kernel, mmap_ok", [("6.6", False), ("6.7", True),
                                             ("6.12-regressed", False), ("6.12", True),
                                             ("7.2", True)])
@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_seed003_ro_shared_mmap_of_write_sealed_memfd(kernel, mmap_ok, backend):
    """A write-sealed memfd mapped MAP_SHARED PROT_READ (e.g. a sealed ROM image):
    refused (EPERM) before 6.7 and in the 6.12 regression window; once mapped,
    a READ-only DMA map of it works and the device reads the sealed bytes."""
    from backends.iommufd import IommufdContainer
    from backends.simulated import SimHost
    from backends.simulated.vfio import install
    from backends.type1 import Type1Container
    with SimHost(kernel) as h:
        install(h)
        fd = h.memfd_create("rom", MFD_ALLOW_SEALING)
        h.pwrite(fd, b"SEALED-ROM", 0)
        h.ftruncate(fd, 1 << 16)
        assert h.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0
        va = h.mmap(0, 1 << 16, PROT_READ, MAP_SHARED, fd)
        if not mmap_ok:
            assert va == -errno.EPERM
            return
        assert va > 0
        c = Type1Container(h, 1) if backend == "type1" else IommufdContainer(h)
        with c:
            if backend == "iommufd":
                c.attach_device("/dev/vfio/devices/vfio0")
            assert c.dma_map(0x100000, 1 << 16, va, readonly=True).ret == 0
            dev = h.vfio_devices[0]
            assert dma_read(dev, 0x100000, 10) == (10, b"SEALED-ROM")
            assert dma_write(dev, 0x100000, b"x") == -errno.EFAULT      # IOMMU READ only
            assert c.dma_map(0x200000, 1 << 16, va, readonly=False).ret == -errno.EFAULT


# --- 004: VM_PFNMAP BARs (mm/gup.c check_vma_flags(): EFAULT for iommufd) ------------

@pytest.mark.parametrize("backend, bar_ret", [("type1", 0), ("iommufd", -errno.EFAULT),
                                              ("compat", -errno.EFAULT)])
def test_seed004_bar_pfnmap(backend, bar_ret):
    """A BAR (ram_device, VM_PFNMAP) mapped by VA: type1 follows the PFNs,
    iommufd and compat refuse with EFAULT; QEMU warns once and continues."""
    sc = gallery.load("s17-bar-va-map")
    with simulate(sc, get_qemu("10.2"), backend, "7.2") as sim:
        bars = [ev for ev in sim.container.events if ev.kind == "map" and ev.section.mr.ram_device]
        assert bars and {ev.result.ret for ev in bars} == {bar_ret}
        assert sim.container.error is None and sim.container.aborted is None
        ram = [ev for ev in sim.container.events if ev.kind == "map" and not ev.section.mr.ram_device]
        assert {ev.result.ret for ev in ram} == {0}
        if bar_ret:
            # warn_report_once + the P2P hint (aaec00422ba6, 10.0+), then silence
            assert bars[0].message.startswith("warning: vfio_container_dma_map(")
            assert "= -14 (Bad address)" in bars[0].message and "peer-to-peer" in bars[0].message
            assert all(ev.message.startswith("(warned once already)") for ev in bars[1:])
            if backend == "iommufd":     # iommufd_backend_map_dma(): "PCI BAR?" on EFAULT
                assert bars[0].result.warnings == ["IOMMU_IOAS_MAP failed: Bad address, PCI BAR?"]
        else:
            bar = bars[0]
            assert dma_write(sim.device, bar.iova, b"p2p") == 3               # peer-to-peer
            vma = sim.host.mm.find_vma(bar.vaddr)
            assert bytes(vma.pfn_store.pages[vma.pgoff_of(bar.vaddr)].data[:3]) == b"p2p"
