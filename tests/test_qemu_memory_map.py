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
from qemu_testing import scratch_dir
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import from_qemu_args

MACHINES = {
    "q35-512M": ["-machine", "q35", "-m", "512M"],
    "q35-4G": ["-machine", "q35", "-m", "4G"],
    "pc-512M": ["-machine", "pc", "-m", "512M"],
    "pc-4G": ["-machine", "pc", "-m", "4G"],
    "q35-vga": ["-machine", "q35", "-m", "512M", "-vga", "std"],
    # no smram-region without SMM from 9.1 (b07bf7b73fd0): RAM in the VGA window
    "q35-vga-smm-off": ["-machine", "q35,smm=off", "-m", "512M", "-vga", "std"],
    "pc-vga-smm-off": ["-machine", "pc,smm=off", "-m", "512M", "-vga", "std"],   # i440fx: always
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
    assert model_ranges(m.after_reset) == after
    # the low 1 MiB after reset: RAM (up to the VGA window if there is a VGA),
    # then pc.rom and isa-bios read-only
    low_end = 0xA0000 if "-vga" in args and (version == "7.2" or args[1] != "q35,smm=off") \
        else 0xC0000
    assert after[:3] == [(0, low_end, "ram", after[0][3], 0),
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


# --- realize vs reset, observed through KVM's memory listener ----------------------------

KVM_MEM_READONLY = 2
MARKER = ["-m", "512M,slots=1,maxmem=1G", "-object", "memory-backend-ram,id=marker,size=64M",
          "-device", "pc-dimm,id=dimm0,memdev=marker"]
KVM_CASES = [(v, m) for v in ("7.2", "10.0") for m in ("q35", "pc", "q35-vga")]


def kvm_slot_events(binary: str, args: list[str]) -> list[tuple[int, int, int, bool]]:
    """(slot, gpa, size, readonly) of every KVM_SET_USER_MEMORY_REGION QEMU issues
    for address space 0 (trace event kvm_set_user_memory), start-up and one reset."""
    import re
    import subprocess
    p = subprocess.run([binary, "-accel", "kvm", "-nodefaults", "-S", "-display", "none",
                        *args, "-trace", "kvm_set_user_memory", "-qmp", "stdio"],
                       input='{"execute":"qmp_capabilities"}\n{"execute":"system_reset"}\n'
                             '{"execute":"quit"}\n', capture_output=True, text=True, timeout=60)
    out = []
    for ln in p.stderr.splitlines():
        m = re.search(r"kvm_set_user_memory (?:AddrSpace#(\d+) )?Slot#(\d+) flags=(0x[0-9a-f]+) "
                      r"gpa=(0x[0-9a-f]+) size=(0x[0-9a-f]+)", ln)
        if m and (m[1] or "0") == "0":
            out.append((int(m[2]), int(m[4], 16), int(m[5], 16),
                        bool(int(m[3], 16) & KVM_MEM_READONLY)))
    assert p.returncode == 0 and out, p.stderr[-500:]
    return out


@pytest.mark.parametrize("version,machine", KVM_CASES, ids=[f"{v}-{m}" for v, m in KVM_CASES])
def test_realize_and_reset_views_equal_what_kvm_is_told(version, machine):
    """KVM's memory listener follows the same flat view as VFIO's.  A pc-dimm on
    the command line is realized where a vfio-pci device would be, so the slots
    live when its slot appears are the view VFIO replays at realize; what follows
    is the first machine reset, which the model must reproduce as its
    region_del/region_add sequence (-S has run it; system_reset changes nothing)."""
    import os
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm: KVM's listener cannot be observed")
    # smm=off: KVM hosts differ in SMM support (smm=auto), the model needs to know
    args = ["-machine", "q35,smm=off" if machine == "q35-vga" else machine, *MARKER] + \
        (["-vga", "std"] if "vga" in machine else [])
    events = kvm_slot_events(binary, args)
    m = build_machine(from_qemu_args(args), get_qemu(version))
    dimm = next(s for s in m.sections if s.mr.name == "marker")
    live: dict[int, tuple] = {}
    at_realize, after = None, []
    for slot, gpa, size, ro in events:
        if at_realize is not None:
            after.append(("map" if size else "unmap", *(live[slot][:2] if not size
                                                           else (gpa, size))))
        if size:
            live[slot] = (gpa, size, ro)
        else:
            live.pop(slot)
        if at_realize is None and (gpa, size) == (dimm.offset_within_address_space, dimm.size):
            at_realize = sorted(live.values())
    ram = lambda view: sorted((s.offset_within_address_space, s.size, s.readonly)   # noqa: E731
                              for s in view if s.mr.ram)
    assert at_realize == ram(m.sections)
    assert sorted(live.values()) == ram(m.after_reset)
    from vmm_model.plan import make_plan
    p = make_plan(from_qemu_args(args), get_qemu(version), "type1")
    assert after == [(e.kind, e.iova, e.size) for e in p.events
                     if e.phase == "reset" and e.kind in ("map", "unmap")]
