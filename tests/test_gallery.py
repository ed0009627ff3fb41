"""Each gallery scenario: the exact ioctl, arguments and flags per QEMU version
(the scenario number is in each test name; docs/qemu-versions.md)."""

import pytest

from vmm_model import gallery
from vmm_model.plan import make_plan
from vmm_model.qemu_versions import get_qemu

R, W, F = "READABLE", "WRITEABLE", "FIXED_IOVA"
RWF = "FIXED_IOVA|WRITEABLE|READABLE"
RF = "FIXED_IOVA|READABLE"
GiB = 1 << 30


def plan(name, qemu=None, backend=None):
    sc = gallery.load(name)
    return make_plan(sc, get_qemu(qemu or sc.qemu), backend or sc.backend or "iommufd")


def maps(p):
    """(iova, size, ioctl, flags, fields) of every map request."""
    return [(e.iova, e.size, e.result.request.ioctl if e.result.request else None,
             e.result.request.flag_names() if e.result.request else None,
             e.result.request.fields if e.result.request else None)
            for e in p.events if e.kind == "map"]


def by_iova(p, iova):
    hits = [m for m in maps(p) if m[0] == iova]
    assert len(hits) == 1, maps(p)
    return hits[0]


def test_gallery_covers_every_in_scope_row_and_seed():
    names = gallery.names()
    rows = {int(n[1:3]) for n in names if n[:1] == "s" and n[1:3].isdigit()}
    assert rows == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 22, 23,
                    24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 38, 39}
    for n in names:     # every scenario names the upstream source it reproduces
        assert gallery.load(n).upstream, n


def test_01_qemu_10_0_maps_memfd_by_va():
    p = plan("s01")
    assert {m[2] for m in maps(p)} == {"IOMMU_IOAS_MAP"}
    iova, size, ioctl, flags, f = by_iova(p, 0x100000000)
    assert (size, flags) == (0x80000000, RWF)
    assert f["user_va"] == p.machine.regions["ram0"].ram_block.host + 0x80000000


def test_02_default_ram_has_no_fd():
    for q in ("10.1", "11.1"):
        p = plan("s02", q)
        rb = p.machine.regions["pc.ram"].ram_block
        assert rb.fd == -1 and not rb.is_shared()
        assert by_iova(p, 0x100000)[2:4] == ("IOMMU_IOAS_MAP", RWF)


@pytest.mark.parametrize("name,qemu", [("s03", "10.1"), ("s04", "11.1")])
def test_03_04_ram_share_on_is_a_memfd_mapped_by_file(name, qemu):
    p = plan(name, qemu)
    rb = p.machine.regions["ram0"].ram_block
    assert rb.backing.kind == "memfd" and rb.is_shared()
    iova, size, ioctl, flags, f = by_iova(p, 0x100000000)
    assert (ioctl, flags) == ("IOMMU_IOAS_MAP_FILE", RWF)
    assert (f["fd"], f["start"], f["length"]) == (rb.fd, 0x80000000, 0x80000000)
    assert f["size"] == 40 and f["ioas_id"] == 1


def test_05_ram_share_on_up_to_9_2_is_anonymous_shared():
    for backend in ("type1", "iommufd"):
        p = plan("s05", "9.2", backend)
        rb = p.machine.regions["ram0"].ram_block
        assert rb.fd == -1 and rb.is_shared()
        ioctl = "VFIO_IOMMU_MAP_DMA" if backend == "type1" else "IOMMU_IOAS_MAP"
        assert {m[2] for m in maps(p)} == {ioctl}
    # the same scenario from 10.0 on is a memfd: by file from 10.1
    assert by_iova(plan("s05", "10.1", "iommufd"), 0x100000000)[2] == "IOMMU_IOAS_MAP_FILE"


def test_06_07_mem_path_hugetlbfs_private_file():
    a = plan("s06")   # 10.1
    rb = a.machine.regions["pc.ram"].ram_block
    assert rb.backing.fs == "hugetlbfs" and rb.page_size == 2 << 20 and not rb.is_shared()
    iova, size, ioctl, flags, f = by_iova(a, 0x100000000)
    assert (ioctl, flags, f["start"], f["fd"]) == ("IOMMU_IOAS_MAP_FILE", RWF, 0x80000000, rb.fd)
    assert [h[1] for h in a.hazards] == ["private-map-file"]
    b = plan("s07")   # fixed
    iova, size, ioctl, flags, f = by_iova(b, 0x100000000)
    assert (ioctl, flags) == ("IOMMU_IOAS_MAP", RWF)
    assert f["user_va"] == b.machine.regions["pc.ram"].ram_block.host + 0x80000000
    assert b.hazards == []


def test_08_09_memfd_share_off():
    a = plan("s08")
    assert by_iova(a, 0x100000)[2] == "IOMMU_IOAS_MAP_FILE"
    assert [h[1] for h in a.hazards] == ["private-map-file"]
    b = plan("s09")
    assert by_iova(b, 0x100000)[2] == "IOMMU_IOAS_MAP"
    assert b.hazards == []


def test_10_file_offset_added_to_start():
    for q in ("10.1", "11.1"):
        iova, size, ioctl, flags, f = by_iova(plan("s10", q), 0x1000)
        assert (ioctl, size, f["start"]) == ("IOMMU_IOAS_MAP_FILE", 0x9F000, 0x1000 + 0x40000000)


def test_11_memfd_defaults():
    p = plan("s11")
    rb = p.machine.regions["ram0"].ram_block
    assert rb.backing.seals == ("F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK")
    assert by_iova(p, 0x100000)[4]["start"] == 0x100000


def test_12_readonly_sections_are_readable_only():
    p = plan("s12")
    # after machine reset the PAM windows show pc.rom and isa-bios (the last 128 KiB
    # of pc.bios), both read-only RAM without an fd: IOMMU_IOAS_MAP, R|F only
    iova, size, ioctl, flags, f = by_iova(p, 0xC0000)
    assert (ioctl, size, flags) == ("IOMMU_IOAS_MAP", 0x20000, RF)
    iova, size, ioctl, flags, f = by_iova(p, 0xE0000)
    assert (ioctl, size, flags) == ("IOMMU_IOAS_MAP", 0x20000, RF)
    assert f["user_va"] == p.machine.regions["pc.bios"].ram_block.host + 0x20000
    # rom=on file dimm at device memory base ROUND_UP(4G + 0, 1G) = 4G (2G guest: no RAM above 4G)
    iova, size, ioctl, flags, f = by_iova(p, 0x100000000)
    assert (ioctl, size, flags, f["start"]) == ("IOMMU_IOAS_MAP_FILE", 64 << 20, RF, 0)
    rb = p.machine.regions["romfile"].ram_block
    assert rb.backing.open_flags == "O_RDONLY"
    t = plan("s12", backend="type1")
    assert by_iova(t, 0x100000000)[3] == "READ"
    assert by_iova(t, 0x100000)[3] == "READ|WRITE"


def test_13_file_on_ext4_flags_pin_einval_hazard():
    p = plan("s13")
    assert by_iova(p, 0x100000)[2] == "IOMMU_IOAS_MAP_FILE"
    assert [h[1] for h in p.hazards] == ["map-file-not-shmem"]


def ram_maps(p, block):
    """The map requests of one RAMBlock's sections."""
    return [e.result.request for e in p.events
            if e.kind == "map" and e.section.mr.ram_block.idstr == block]


def test_14_map_file_is_issued_without_probing():
    # 10.1 issues IOMMU_IOAS_MAP_FILE without a capability check (hw/vfio/iommufd.c:
    # iommufd_cdev_map_file() calls iommufd_backend_map_file_dma() directly)
    assert {r.ioctl for r in ram_maps(plan("s14"), "ram0")} == {"IOMMU_IOAS_MAP_FILE"}


def test_15_legacy_type1():
    p = plan("s15")
    iova, size, ioctl, flags, f = by_iova(p, 0x100000000)
    assert (ioctl, flags) == ("VFIO_IOMMU_MAP_DMA", "READ|WRITE")
    assert f == {"argsz": 32, "flags": 3, "vaddr": p.machine.regions["ram0"].ram_block.host
                 + 0x80000000, "iova": 0x100000000, "size": 0x80000000}
    assert by_iova(p, 0xC0000)[3] == "READ"
    assert by_iova(p, 0xFFFC0000)[3] == "READ"     # pc.bios ROM


def test_17_bar_mapped_by_va_before_dmabuf():
    for backend, ioctl in (("type1", "VFIO_IOMMU_MAP_DMA"), ("iommufd", "IOMMU_IOAS_MAP")):
        p = plan("s17", "10.2", backend)
        bar0 = p.machine.regions["0000:01:00.0 BAR 0 mmaps[0]"]
        assert bar0.ram_device and bar0.ram_block.fd == -1
        iova, size, got, flags, f = by_iova(p, 0xE0000000)
        assert (got, size) == (ioctl, 16 << 20)
        assert by_iova(p, 0xE1004000)[1] == 0xC000   # sparse mmaps[1] at offset 0x4000


@pytest.mark.parametrize("name", ["s18", "s19"])
def test_18_19_bar_dmabuf_map_file(name):
    p = plan(name)
    rb = p.machine.regions["0000:01:00.0 BAR 0 mmaps[0]"].ram_block
    iova, size, ioctl, flags, f = by_iova(p, 0xE0000000)
    assert (ioctl, f["fd"], f["start"], flags) == ("IOMMU_IOAS_MAP_FILE", rb.fd, 0, RWF)
    assert not [h for h in p.hazards if h[1] == "private-map-file"]


def test_18_sparse_bar_start_is_mmap_offset():
    iova, size, ioctl, flags, f = by_iova(plan("s18"), 0xE1004000)
    assert (ioctl, f["start"], size) == ("IOMMU_IOAS_MAP_FILE", 0x4000, 0xC000)


def test_22_ram_device_unaligned_to_iommu_page_is_skipped():
    p = plan("s22")
    skips = [e for e in p.events if e.kind == "skip" and e.section.mr.ram_device]
    assert [(e.section.offset_within_address_space, e.section.size) for e in skips] == [
        (0xE1000000, 0x3000), (0xE1004000, 0xC000)]
    assert by_iova(p, 0xE2000000)[1] == 16 << 20   # the 64K-aligned BAR 0 is mapped


def test_23_sub_page_section_not_mapped():
    p = plan("s23")
    assert [m[0] for m in maps(p) if m[0] < 0x100000] == [0]
    skip = [e for e in p.events if e.kind == "skip" and e.section.offset_within_address_space == 0xA1800]
    assert skip and "smaller than a host page" in skip[0].message


def test_24_unaligned_region_error():
    p = plan("s24")
    err = [e for e in p.events if e.kind == "error"]
    assert err[0].message == ("vfio_listener_region_add received unaligned region pc.ram "
                              "iova=0x100000 offset_within_region=0x100800 "
                              "qemu_real_host_page_size=0x1000")
    assert maps(p) == [] and p.realize_error is None


def test_25_skipped_sections():
    p = plan("s25")
    skips = {e.section.mr.name: e.message for e in p.events if e.kind == "skip"}
    assert "not RAM (i/o)" in skips["msix-table"]
    assert "not RAM (romd)" in skips["system.flash0"]
    assert "RAM_PROTECTED" in skips["epc0"]
    assert "bit 63" in skips["pc.ram"]
    assert [m[0] for m in maps(p)] == [0]


def test_26_bypass_ro_only_on_master():
    master = plan("s26")
    assert {m[3] for m in maps(master)} == {RWF}          # readonly sections skipped
    assert any("bypass_ro" in e.message for e in master.events if e.kind == "skip")
    ten2 = plan("s26", "10.2")
    assert RF in {m[3] for m in maps(ten2)}


def test_27_virtio_mem_one_map_per_populated_block():
    p = plan("s27")
    rdm = [(e.iova, e.size, e.vaddr) for e in p.events if e.path == "rdm" and e.kind == "map"]
    base = 0x100000000     # device memory: ROUND_UP(4G + 0, 1G); 2G guest has no RAM above 4G
    host = p.machine.regions["vmem0"].ram_block.host
    MB2 = 2 << 20
    assert rdm == [(base, MB2, host), (base + MB2, MB2, host + MB2),
                   (base + 5 * MB2, MB2, host + 5 * MB2)]
    assert {e.result.request.ioctl for e in p.events if e.path == "rdm"} == {"IOMMU_IOAS_MAP_FILE"}


def test_28_rdm_budget_warning_before_10_2_error_after():
    err = plan("s28", "10.2")
    assert err.realize_error.startswith(
        "vfio vfio-pci: memory listener initialization failed: Region vmem0: "
        "vfio_ram_discard_register_listener: possibly running out of DMA mappings.")
    warn = plan("s28", "10.1")
    assert warn.realize_error is None
    assert any(e.kind == "warn" and "Maximum possible DMA mappings: 65535" in e.message
               for e in warn.events)
    assert plan("s28", "10.2", "iommufd").realize_error is None   # no budget on iommufd


def test_29_viommu_map_permissions():
    p = plan("s29")
    ev = [e for e in p.events if e.path == "iommu"]
    ro = ev[0]
    assert (ro.kind, ro.iova, ro.size, ro.readonly) == ("map", 0x100000, 0x1000, True)
    assert ro.result.request.flag_names() == RF
    assert ro.result.request.fields["start"] == 0x200000
    rw = ev[1]
    assert (rw.iova, rw.size, rw.result.request.flag_names()) == (0x200000, 0x200000, RWF)
    assert ev[2].kind == "error" and ev[2].message == "iommu map to non memory area fed00000"
    assert [e for e in p.events if e.path == "region_add" and e.kind == "map"] == []


def test_30_viommu_map_to_discarded_memory():
    p = plan("s30")
    ev = [e for e in p.events if e.path == "iommu"]
    assert ev[0].kind == "warn" and "coordinated discarding of RAM" in ev[0].message
    assert ev[1].kind == "map" and ev[1].iova == 0x1000000
    assert ev[2].message == ("iommu map to discarded memory (e.g., unplugged via virtio-mem): "
                             "100400000")


def test_31_32_33_cpr_incoming():
    fd = plan("s31")
    assert ram_maps(fd, "ram0") and set(ram_maps(fd, "ram0")) == {None}
    assert all(e.result.ret == 0 for e in fd.events if e.kind == "map" and not e.result.request)
    anon = plan("s32")
    assert {m[2] for m in maps(anon)} == {"IOMMU_IOAS_MAP"}
    legacy = plan("s33")
    assert {(m[2], m[3]) for m in maps(legacy)} == {("VFIO_IOMMU_MAP_DMA", "VADDR")}


def test_34_aux_ram_share_makes_implicit_ram_memfd():
    p = plan("s34")
    bios = p.machine.regions["pc.bios"].ram_block
    assert bios.backing.kind == "memfd" and bios.is_shared() and bios.fd >= 0
    assert by_iova(p, 0xFFFC0000)[2:4] == ("IOMMU_IOAS_MAP_FILE", RF)
    assert by_iova(p, 0xFD000000)[2:4] == ("IOMMU_IOAS_MAP_FILE", RWF)     # vga.vram
    # vga.vram is a PCI BAR: mapped once firmware assigns it, after reset
    assert [e.phase for e in p.events if e.kind == "map" and e.iova == 0xFD000000] == ["firmware"]
    assert plan("s34", "10.0").machine.regions["pc.bios"].ram_block.fd >= 0   # memfd, VA map
    assert by_iova(plan("s34", "10.0"), 0xFFFC0000)[2] == "IOMMU_IOAS_MAP"


def test_38_39_readonly_file_rom_off():
    a = plan("s38")
    rb = a.machine.regions["ram0"].ram_block
    assert rb.backing.open_flags == "O_RDONLY" and not rb.mr_readonly and not rb.is_shared()
    iova, size, ioctl, flags, f = by_iova(a, 0x100000)
    assert (ioctl, flags, f["fd"]) == ("IOMMU_IOAS_MAP_FILE", RWF, rb.fd)
    assert sorted(h[1] for h in a.hazards) == ["private-map-file", "writable-map-file-rdonly-fd"]
    b = plan("s39")
    assert by_iova(b, 0x100000)[2:4] == ("IOMMU_IOAS_MAP", RWF) and b.hazards == []


def test_seed001_live_update_memfd_seals_at_map_time():
    p = plan("seed001-live-update-memfd")
    rb = p.machine.regions["ram0"].ram_block
    assert set(rb.backing.seals) >= {"F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK"}
    assert {m[2] for m in maps(p)} == {"IOMMU_IOAS_MAP_FILE"}
    # aux-ram-share memfds (qemu_memfd_create(name, 0, 0, ...)) carry no GROW/SHRINK seal
    assert p.machine.regions["pc.bios"].ram_block.backing.seals == ("F_SEAL_SEAL",)


@pytest.mark.parametrize("name", gallery.names())
def test_every_gallery_scenario_plans_on_every_version_and_backend(name):
    sc = gallery.load(name)
    for backend in ("type1", "iommufd"):
        p = make_plan(sc, get_qemu(sc.qemu), backend)
        assert p.rejected is None
        for ev in p.events:
            if ev.kind == "map" and ev.result.request:
                assert ev.result.ret is None            # planned, not run: nothing invented
                if backend == "type1":
                    assert ev.result.request.ioctl == "VFIO_IOMMU_MAP_DMA"
