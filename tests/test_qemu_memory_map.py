"""The memory map the model builds for pc and q35 against real QEMU binaries
(Debian's 7.2 and bookworm-backports' 10.0): ``info mtree -f`` of address space
"memory" on a paused machine (``-nodefaults -S``, TCG), before and after
``system_reset``, compared range by range with the model's flat view after
machine reset: start, end, kind (ram / rom = read-only RAM / ramd), region name
and offset within the region -- what ``vfio_listener_region_add`` receives.
Skips with the reason when a binary is missing (scripts/install-qemu.sh)."""

from __future__ import annotations

import pytest

from vmm_model.machine import build_machine
from vmm_model.qemu import find_qemu
from vmm_model.qemu.launcher import QemuProcess
from vmm_model.qemu.parse import flatview_of, parse_mtree_flat
from vmm_model.qemu.testing import scratch_dir
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import from_qemu_args

MACHINES = {
    "q35-512M": ["-machine", "q35", "-m", "512M"],
    "q35-4G": ["-machine", "q35", "-m", "4G"],
    "pc-512M": ["-machine", "pc", "-m", "512M"],
    "pc-4G": ["-machine", "pc", "-m", "4G"],
    "q35-memfd-dimm": ["-machine", "q35,memory-backend=mem0", "-m", "256M,slots=2,maxmem=1G",
                       "-object", "memory-backend-memfd,id=mem0,size=256M,share=off",
                       "-object", "memory-backend-memfd,id=dimm0mem,size=64M",
                       "-device", "pc-dimm,id=dimm0,memdev=dimm0mem"],
    "pc-readonly-file-dimm": ["-machine", "pc", "-m", "128M,slots=2,maxmem=1G",
                              "-object", "memory-backend-file,id=romem,size=32M,"
                              "mem-path={d}/ro.img,readonly=on",
                              "-device", "pc-dimm,id=rodimm,memdev=romem"],
}
CASES = [(v, m) for v in ("7.2", "10.0") for m in MACHINES]


def real_ranges(mon) -> list[tuple]:
    view = flatview_of(parse_mtree_flat(mon.hmp("info mtree -f")), "memory")
    return [(r.start, r.end + 1, r.type, r.name, r.offset) for r in view.ranges
            if r.type in ("ram", "rom", "ramd")]


def model_ranges(sections) -> list[tuple]:
    return [(s.offset_within_address_space, s.end,
             "rom" if s.readonly else ("ramd" if s.mr.ram_device else "ram"),
             s.mr.name, s.offset_within_region) for s in sections if s.mr.ram]


@pytest.mark.parametrize("version,machine", CASES, ids=[f"{v}-{m}" for v, m in CASES])
def test_model_flat_view_equals_real_qemu(version, machine):
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    with scratch_dir() as d:
        args = [a.replace("{d}", d) for a in MACHINES[machine]]
        if "{d}/ro.img" in " ".join(MACHINES[machine]):
            with open(f"{d}/ro.img", "wb") as f:
                f.truncate(32 << 20)
        with QemuProcess(binary, args) as q, q.monitor() as mon:
            before = real_ranges(mon)
            mon.execute("system_reset")
            after = real_ranges(mon)
        m = build_machine(from_qemu_args(args), get_qemu(version))
    assert before == after                       # -S has already run the first reset
    assert model_ranges(m.final_sections) == after
    # the low 1 MiB after reset: RAM, then pc.rom and isa-bios read-only
    assert after[:3] == [(0, 0xC0000, "ram", after[0][3], 0),
                         (0xC0000, 0xE0000, "rom", "pc.rom", 0),
                         (0xE0000, 0x100000, "rom", "pc.bios", 0x20000)]


def test_q35_realize_maps_low_ram_whole_and_reset_splits_it():
    """At vfio-pci realize q35's PAM aliases are disabled (mch_realize() ->
    init_pam()), so the listener maps ram-below-4g as one range; the first
    machine reset (mch_reset() -> mch_update_pam()) unmaps it and maps the split
    view.  pc (i440fx_update_memory_mappings() at realize) has no such step."""
    from vmm_model.plan import make_plan
    sc = from_qemu_args(["-machine", "q35", "-m", "512M"])
    p = make_plan(sc, get_qemu("11.1"), "type1")
    seq = [(ev.phase, ev.kind, ev.iova, ev.size, ev.readonly) for ev in p.events
           if ev.kind in ("map", "unmap")]
    assert seq == [
        ("realize", "map", 0x0, 0x20000000, False),
        ("realize", "map", 0xFFFC0000, 0x40000, True),
        ("reset", "unmap", 0x0, 0x20000000, False),
        ("reset", "map", 0x0, 0xC0000, False),
        ("reset", "map", 0xC0000, 0x20000, True),
        ("reset", "map", 0xE0000, 0x20000, True),
        ("reset", "map", 0x100000, 0x1FF00000, False)]
    assert [e.result.request.ioctl for e in p.events if e.kind != "skip"][2] == \
        "VFIO_IOMMU_UNMAP_DMA"
    from vmm_model.container import live_mappings
    assert [(e.iova, e.size) for e in live_mappings(p.container)] == [
        (0x0, 0xC0000), (0xC0000, 0x20000), (0xE0000, 0x20000), (0x100000, 0x1FF00000),
        (0xFFFC0000, 0x40000)]
    pc = make_plan(from_qemu_args(["-machine", "pc", "-m", "512M"]), get_qemu("11.1"), "type1")
    assert {ev.phase for ev in pc.events} == {"realize"}
    assert [(e.iova, e.size) for e in live_mappings(pc.container)] == \
        [(e.iova, e.size) for e in live_mappings(p.container)]


def test_aux_ram_share_makes_pc_rom_and_pc_bios_shared_memfds_in_10_0():
    """-machine aux-ram-share=on (91792807d11c, 10.0): memory_region_init_ram()
    RAM -- pc.bios, pc.rom -- is RAM_SHARED from a memfd (/proc shows the fd and a
    MAP_SHARED mapping), as the model says; so 10.1+ maps both by file."""
    from vmm_model.qemu import introspect
    binary, why = find_qemu("10.0")
    if binary is None:
        pytest.skip(why)
    args = ["-machine", "q35,aux-ram-share=on", "-m", "256M"]
    with QemuProcess(binary, args) as q, q.monitor() as mon:
        vm = introspect(mon)
    m = build_machine(from_qemu_args(args), get_qemu("10.0"))
    for name in ("pc.bios", "pc.rom"):
        live, rb = vm.block(name), m.regions[name].ram_block
        assert (live.fd_present, live.shared) == (True, True) == (rb.fd >= 0, rb.is_shared())
    from vmm_model.plan import make_plan
    p = make_plan(from_qemu_args(args), get_qemu("11.1"), "iommufd")
    roms = {(e.iova, e.result.request.ioctl, e.readonly) for e in p.events
            if e.kind == "map" and e.phase == "reset" and e.section.mr.name != "pc.ram"}
    assert roms == {(0xC0000, "IOMMU_IOAS_MAP_FILE", True), (0xE0000, "IOMMU_IOAS_MAP_FILE", True)}
