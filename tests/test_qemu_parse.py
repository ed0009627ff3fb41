"""Parsers and recorded QMP transcripts (fixtures/qmp/): no QEMU needed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vmm_model.machine import build_machine
from vmm_model.plan import make_plan
from vmm_model.qemu import ReplayMonitor, introspect
from vmm_model.qemu.errors import QemuError, QmpCommandError, UnknownBackendError
from vmm_model.qemu.parse import (flatview_of, parse_gpa2hva, parse_hmp_qom_list,
                                  parse_hmp_version, parse_maps, parse_mtree_flat,
                                  parse_ramblock)
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import loads_toml, to_toml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "qmp"

# ``info mtree -f`` (mtree_print_flatview(), system/memory.c): kvm accel suffix, a ramd
# BAR, aliases resolved to @offset; the sample is from qemu-devel 2019-05-21,
# A. Kardashevskiy, "hmp: Print if memory section is registered with an accelerator"
MTREE_SAMPLE = """FlatView #0
 AS "memory", root: system
 AS "vfio-pci", root: bus master container
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): pc.ram kvm
  00000000000c0000-00000000000c0fff (prio 0, rom): pc.ram @00000000000c0000 kvm
  00000000000c1000-00000000000c3fff (prio 0, ram): pc.ram @00000000000c1000 kvm
  0000000000100000-00000000bfffffff (prio 0, ram): pc.ram @0000000000100000 kvm
  00000000febc0000-00000000febc0fff (prio 0, ramd): 0000:00:1a.0 BAR 0 mmaps[0] kvm
  00000000febc1000-00000000febc102f (prio 0, i/o): msix-table
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios kvm
  0000000100000000-000000013fffffff (prio 0, ram): pc.ram @00000000c0000000 kvm

FlatView #1
 AS "mch", root: bus master container
 Root memory region: (none)
  No rendered FlatView
"""

RAMBLOCK_10 = """              Block Name    PSize              Offset               Used              Total                HVA  RO
                  pc.ram    4 KiB  0x0000000000000000 0x0000000008000000 0x0000000008000000 0x00007f684fe00000  rw
   0000:00:02.0/vga.vram    4 KiB  0x0000000008080000 0x0000000001000000 0x0000000001000000 0x00007f684e800000  rw
    /rom@etc/acpi/tables    2 MiB  0x0000000009100000 0x0000000000020000 0x0000000000200000 0x00007f684dc00000  ro
"""

RAMBLOCK_72 = """              Block Name    PSize              Offset               Used              Total
                  pc.ram    4 KiB  0x0000000004000000 0x0000000008000000 0x0000000008000000
                            4 KiB  0x0000000000000000 0x0000000004000000 0x0000000004000000
"""


def test_mtree_flat_sample_resolves_aliases_types_and_accel():
    views = parse_mtree_flat(MTREE_SAMPLE)
    assert [v.number for v in views] == [0, 1]
    v = flatview_of(views, "memory")
    assert v.address_spaces == ["memory", "vfio-pci"] and v.root == "system"
    assert views[1].root is None and views[1].ranges == []
    r = v.ranges
    assert (r[1].start, r[1].size, r[1].type, r[1].name, r[1].offset, r[1].readonly) == \
        (0xC0000, 0x1000, "rom", "pc.ram", 0xC0000, True)
    assert (r[4].type, r[4].name, r[4].accel) == ("ramd", "0000:00:1a.0 BAR 0 mmaps[0]", "kvm")
    assert (r[5].type, r[5].name, r[5].accel, r[5].size) == ("i/o", "msix-table", None, 0x30)
    assert (r[7].start, r[7].offset, r[7].size) == (1 << 32, 0xC0000000, 1 << 30)


def test_mtree_flat_unknown_line_and_missing_as_are_errors():
    with pytest.raises(QemuError, match=r"line 3: unrecognised line"):
        parse_mtree_flat('FlatView #0\n AS "memory", root: system\n  garbage here\n')
    with pytest.raises(QemuError, match=r"no address space 'memory'"):
        flatview_of(parse_mtree_flat(MTREE_SAMPLE.replace('"memory"', '"other"')))


def test_ramblock_10_with_hva_and_ro_columns():
    rows = parse_ramblock(RAMBLOCK_10)
    assert [r.name for r in rows] == ["pc.ram", "0000:00:02.0/vga.vram", "/rom@etc/acpi/tables"]
    assert rows[0].hva == 0x7F684FE00000 and rows[0].readonly is False
    assert rows[2].page_size == 2 << 20 and rows[2].used == 0x20000 and rows[2].total == 0x200000
    assert rows[2].readonly is True


def test_ramblock_72_without_hva_and_unnamed_block():
    rows = parse_ramblock(RAMBLOCK_72)
    assert [(r.name, r.hva, r.readonly, r.used) for r in rows] == [
        ("pc.ram", None, None, 0x8000000), ("", None, None, 0x4000000)]
    with pytest.raises(QemuError, match="no 'Block Name' header"):
        parse_ramblock("nonsense\n")


def test_maps_gpa2hva_and_hmp_outputs():
    vmas = parse_maps("7f0000000000-7f0010000000 rw-s 00200000 00:01 1234   "
                      "/memfd:memory-backend-memfd (deleted)\n"
                      "7f0010000000-7f0010001000 ---p 00000000 00:00 0 \n")
    assert vmas[0].shared and vmas[0].pgoff == 0x200000 and vmas[0].inode == 1234
    assert vmas[0].path == "/memfd:memory-backend-memfd (deleted)"
    assert not vmas[1].shared and vmas[1].path == "" and not vmas[1].writable
    assert parse_gpa2hva("Host virtual address for 0x100000000 (d1) is 0x7f0a3bfff000\r\n") \
        == ("d1", 0x7F0A3BFFF000)
    assert parse_gpa2hva("Memory at address 0x10 is not RAM") is None
    assert parse_hmp_qom_list("type (string)\nm2 (child<memory-backend-memfd>)\n") == [
        {"name": "type", "type": "string"}, {"name": "m2", "type": "child<memory-backend-memfd>"}]
    assert parse_hmp_version("10.0.2Debian 1:10.0.2+ds-2\n")["qemu"] == \
        {"major": 10, "minor": 0, "micro": 2}


# --- recorded transcripts ---------------------------------------------------------

MAIN = {  # config -> (block the guest RAM lives in, backend type or None for -m)
    "memfd-share-on-seal-on": ("mem0", "memory-backend-memfd"),
    "memfd-share-off": ("mem0", "memory-backend-memfd"),
    "file-share-on": ("mem0", "memory-backend-file"),
    "file-share-off": ("mem0", "memory-backend-file"),
    "ram-share-on": ("mem0", "memory-backend-ram"),
    "default-m": ("pc.ram", None),
    "pc-dimm": ("dimm0mem", "memory-backend-memfd"),
    "readonly-file": ("romem", "memory-backend-file"),
}
FIXTURE_FILES = sorted(FIXTURES.glob("qemu-*.json"))


def test_fixtures_cover_both_versions_and_all_configs():
    names = {p.stem for p in FIXTURE_FILES}
    assert names == {f"qemu-{v}-{c}" for v in ("7.2", "10.0") for c in MAIN}


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_scenario(path):
    doc = json.loads(path.read_text())
    vm = introspect(ReplayMonitor.load(path))
    sc = vm.scenario
    assert vm.version == doc["qemu"] and sc.qemu == doc["qemu"]
    assert vm.proc is False and vm.ramblocks[0].fd_present is None
    block, btype = MAIN[doc["config"]]
    ram_rows = [s for s in sc.sections if s["mr"] == block]
    assert ram_rows, f"no [[section]] for {block}"
    if btype is None:
        assert sc.memory["size"] == 128 << 20 and sc.objects == []
    else:
        assert sc.object(block).type == btype
        want = {"dimm0mem": 64 << 20, "romem": 32 << 20}.get(block, 256 << 20)
        assert sc.object(block).props["size"] == want
        if block == "mem0":
            assert sc.machine["memory-backend"] == "mem0" and sc.memory == {"size": want}
    if doc["config"] in ("pc-dimm", "readonly-file"):
        (dimm,) = sc.devices
        assert dimm.type == "pc-dimm" and dimm.props["memdev"] == block
        assert dimm.props["addr"] == 1 << 32 == ram_rows[0]["gpa"]
        assert sc.memory == {"size": 128 << 20, "slots": 2, "maxmem": 1 << 30}
    else:
        assert sc.devices == []
    if doc["config"] == "readonly-file":
        assert ram_rows[0]["type"] == "rom" and ram_rows[0]["readonly"] is True
        assert sc.object(block).props["readonly"] is True
        # 'rom' exists from 8.2 on only
        assert ("rom" in sc.object(block).props) == (doc["qemu"] != "7.2.22")
    # below 1 MiB: pc.rom and the isa-bios alias of pc.bios at offset 0x20000
    assert {"gpa": 0xE0000, "size": 0x20000, "mr": "pc.bios", "type": "rom",
            "offset": 0x20000, "readonly": True} in sc.sections
    # written as a scenario file and read back: the same VM
    again = loads_toml(to_toml(sc), "saved.toml", "saved")
    assert again.model() == sc.model()
    qemu = get_qemu(sc.qemu)
    assert qemu.name == doc["qemu"].rsplit(".", 1)[0]
    for backend in ("type1", "iommufd"):
        plan = make_plan(again, qemu, backend)
        if backend == "iommufd" and not qemu.iommufd_object:    # 7.2: no -object iommufd
            assert "does not accept value 'iommufd'" in plan.rejected
            continue
        maps = [ev for ev in plan.events if ev.kind == "map" and ev.section.mr.name == block]
        # 7.2 and 10.0 are va-only: every guest RAM map is by virtual address
        want = "VFIO_IOMMU_MAP_DMA" if backend == "type1" else "IOMMU_IOAS_MAP"
        assert maps and {ev.result.request.ioctl for ev in maps} == {want}


def test_fixture_ram_share_on_differs_between_versions():
    """memory-backend-ram,share=on: anonymous MAP_SHARED (fd -1) in 7.2, a memfd in
    10.0 (9fb40bb9621d) -- from the same kind of transcript."""
    facts = {}
    for v in ("7.2", "10.0"):
        vm = introspect(ReplayMonitor.load(FIXTURES / f"qemu-{v}-ram-share-on.json"))
        m = build_machine(vm.scenario, get_qemu(vm.scenario.qemu))
        rb = next(b for b in m.ramblocks if b.idstr == "mem0")
        facts[v] = (rb.fd >= 0, rb.is_shared())
    assert facts == {"7.2": (False, True), "10.0": (True, True)}


def _doc(name):
    return json.loads((FIXTURES / name).read_text())


def test_unknown_backend_type_is_a_usage_error():
    doc = _doc("qemu-10.0-pc-dimm.json")
    for ex in doc["exchanges"]:
        if ex["execute"] == "qom-list" and ex["arguments"] == {"path": "/objects"}:
            for e in ex["return"]:
                if e["name"] == "dimm0mem":
                    e["type"] = "child<memory-backend-foo>"
    with pytest.raises(UnknownBackendError) as ei:
        introspect(ReplayMonitor(doc["exchanges"], "edited transcript"))
    msg = str(ei.value)
    assert "'dimm0mem' has type memory-backend-foo" in msg and "\n" not in msg
    assert "memory-backend-memfd" in msg      # what is valid


def test_qmp_error_reply_is_raised_with_its_class():
    doc = _doc("qemu-7.2-default-m.json")
    ex = copy.deepcopy(doc["exchanges"])
    for e in ex:
        if e["execute"] == "qom-list" and e["arguments"] == {"path": "/objects"}:
            e.pop("return")
            e["error"] = {"class": "GenericError", "desc": "Device busy"}
    with pytest.raises(QmpCommandError) as ei:
        introspect(ReplayMonitor(ex, "edited transcript"))
    assert ei.value.error_class == "GenericError" and ei.value.command == "qom-list"
    assert "qom-list" in str(ei.value) and "Device busy" in str(ei.value)
