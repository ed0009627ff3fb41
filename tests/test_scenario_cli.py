"""Scenario sources agree; bad input gets one clear line and exit status 2; user
policies plug in; JSON is versioned."""

import json
import shlex
from pathlib import Path

import pytest

from backends.errors import UsageError
from vmm_model import gallery
from vmm_model.cli import main
from vmm_model.plan import make_plan
from vmm_model.policy import POLICIES, register_policy
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import from_qemu_args, load_toml, loads_toml, parse_size, to_toml

FIX = Path(__file__).parent.parent / "fixtures" / "scenarios"


def test_toml_and_command_line_give_the_same_model():
    toml = load_toml(FIX / "vm-dimm-memfd.toml")
    argv = shlex.split((FIX / "vm-dimm-memfd.args").read_text())
    cmd = from_qemu_args(argv)
    assert cmd.model() == toml.model() | {"qemu": None}
    # and the same plan, request for request
    q = get_qemu("10.1")
    a, b = make_plan(toml, q, "iommufd"), make_plan(cmd, q, "iommufd")
    reqs = lambda p: [(e.iova, e.result.request) for e in p.events if e.kind == "map"]
    assert reqs(a) == reqs(b)
    dimm = [r for i, r in reqs(a) if i == 0x100000000 + (2 << 30)]
    assert dimm[0].ioctl == "IOMMU_IOAS_MAP_FILE" and dimm[0].fields["start"] == 0x200000


@pytest.mark.parametrize("name", gallery.names())
def test_to_toml_round_trips(name):
    sc = gallery.load(name)
    back = loads_toml(to_toml(sc), "roundtrip.toml", name)
    assert back.model() == sc.model()


@pytest.mark.parametrize("text,value", [("4G", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29),
                                        ("0x1000", 0x1000), ("4096", 4096), (7, 7)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_dash_m_default_suffix_is_mebibytes():
    assert from_qemu_args(["-m", "4096"]).memory["size"] == 4 << 30


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("fixture,where,field,valid", [
    ("malformed.toml", "malformed.toml:1", "malformed TOML", None),
    ("bad-size.toml", "bad-size.toml:4", "size", "a size, e.g. 4G"),
    ("unknown-type.toml", "unknown-type.toml:2", "qom-type", "memory-backend-file"),
    ("unknown-prop.toml", "unknown-prop.toml:8", "shared", "share"),
    ("unknown-qemu.toml", "unknown-qemu.toml:1", "unknown QEMU version '6.2'", "10.1"),
    # QEMU's own message since issue 19 (memory_device_get_free_addr())
    ("overlap.toml", "overlap.toml:21", "address range conflicts with memory device "
                                        "id='(unnamed)'", None),
    ("bad-offset.toml", "bad-offset.toml:1", "offset", "page size"),
])
def test_bad_scenario_files_one_line_exit_2(capsys, fixture, where, field, valid):
    rc, out, err = run(capsys, "plan", str(FIX / "bad" / fixture))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vfio-emu: error: ")
    assert where in err and field in err
    if valid:
        assert valid in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,expect", [
    (["plan", "--", "-m", "4G", "-object", "memory-backend-ram,id=m0,size=4Z"],
     "size: bad value '4Z' for memory-backend-ram (QEMU command line: argument 3 (-object))"),
    (["plan", "--", "-object", "memory-backend-foo,id=m0,size=1G"],
     "invalid object type: memory-backend-foo (did you mean 'memory-backend-file'?)"),
    (["plan", "--", "-m", "1G", "-bogus"], "-bogus: invalid option"),
    (["plan", "--", "-m"], "option -m needs an argument"),
    (["plan", "--", "-m", "1G", "-device", "pc-dimm,memdev=nope"],
     "no memory backend with id 'nope'"),
    (["plan", "s02", "--qemu", "5.0"], "unknown QEMU version '5.0'"),
    (["plan", "s02", "--backend", "vfio-user"], "unknown backend 'vfio-user'"),
    (["plan", "no-such-scenario"], "no scenario file or gallery scenario 'no-such-scenario'"),
    (["plan", "/nonexistent/x.toml"], "cannot read scenario"),
    (["plan", "--policy", "nope"], "unknown policy 'nope'"),
    (["plan", "--policy", "os.path:nothing"], "cannot load policy"),
    (["plan", "--bogus-flag"], "unrecognized arguments"),
])
def test_bad_arguments_one_line_exit_2(capsys, args, expect):
    rc, out, err = run(capsys, *args)
    assert rc == 2 and err.count("\n") == 1 and expect in err, err


def test_qemu_rejects_feature_of_a_newer_version(capsys):
    # aux-ram-share exists from 10.0 (91792807d11c): QEMU 9.2 refuses to start, with
    # its own message, and that cell is a failure (exit status 1, "failed" in JSON)
    rc, out, err = run(capsys, "plan", "s34", "--qemu", "9.2", "--backend", "iommufd")
    assert rc == 1
    assert ("QEMU 9.2 rejects this command line: qemu-system-x86_64: Property "
            "'pc-q35-9.2-machine.aux-ram-share' not found") in " ".join(out.split())
    # the reason is also the one line on stderr (issue 19: every failure is one line)
    assert err == ("vfio-emu: check: s34-aux-ram-share (QEMU 9.2, iommufd): QEMU 9.2 rejects "
                   "this command line: qemu-system-x86_64: Property "
                   "'pc-q35-9.2-machine.aux-ram-share' not found\n")
    rc, out, err = run(capsys, "plan", "s34", "--qemu", "9.2,10.0", "--backend", "iommufd",
                       "--json")
    plans = json.loads(out)["plans"]
    assert rc == 1 and [(p["qemu"], p["failed"]) for p in plans] == [("9.2", True),
                                                                      ("10.0", False)]
    assert plans[0]["events"] == [] and "aux-ram-share' not found" in plans[0]["rejected"]


@pytest.mark.parametrize("qemu_args, message", [
    (["-object", "iommufd,id=iommufd0"],
     "-object iommufd,id=iommufd0: Parameter 'qom-type' does not accept value 'iommufd'"),
    (["-object", "memory-backend-file,id=m0,size=64M,mem-path=/dev/shm/x,rom=on,readonly=on",
      "-machine", "memory-backend=m0", "-m", "64M"],
     "-object memory-backend-file,id=m0,rom=...: Invalid parameter 'rom'"),
    (["-object", "memory-backend-file,id=m0,size=64M,mem-path=/dev/shm/x,offset=0",
      "-machine", "memory-backend=m0", "-m", "64M"],
     "-object memory-backend-file,id=m0,offset=...: Invalid parameter 'offset'"),
    (["-object", "memory-backend-shm,id=m0,size=64M", "-machine", "memory-backend=m0",
      "-m", "64M"],
     "-object memory-backend-shm,id=m0: Parameter 'qom-type' does not accept value "
     "'memory-backend-shm'"),
    (["-machine", "q35,aux-ram-share=on"],
     "Property 'pc-q35-7.2-machine.aux-ram-share' not found"),
])
def test_qemu_7_2_rejects_options_it_does_not_have(capsys, qemu_args, message):
    """QEMU 7.2's own start-up errors (each checked against Debian's 7.2 binary in
    tests/test_qemu_rejections_real.py); the same command line plans on 11.1."""
    rc, out, err = run(capsys, "plan", "--qemu", "7.2,11.1", "--backend", "type1",
                       "--no-compare", "--", *qemu_args)
    assert rc == 1 and err == ("vfio-emu: check: command-line (QEMU 7.2, type1): QEMU 7.2 "
                               f"rejects this command line: qemu-system-x86_64: {message}\n")
    assert f"QEMU 7.2 rejects this command line: qemu-system-x86_64: {message}" in " ".join(
        out.split())
    assert "QEMU 11.1 rejects" not in out


def test_user_policy_plugs_in_and_its_name_shows(capsys):
    calls = []

    def never_by_file(bcontainer, iova, size, vaddr, readonly, mr):
        calls.append(iova)
        return bcontainer.dma_map(iova, size, vaddr, readonly, mr)

    register_policy("never-by-file", never_by_file)
    try:
        rc, out, err = run(capsys, "plan", "s11", "--policy", "never-by-file", "--no-compare")
        assert rc == 0
        assert "policy never-by-file" in out
        assert "IOMMU_IOAS_MAP_FILE" not in out and "IOMMU_IOAS_MAP " in out
        assert 0x100000 in calls
        rc, out, err = run(capsys, "plan", "s11", "--policy", "never-by-file", "--json")
        doc = json.loads(out)
        assert doc["plans"][0]["policy"] == "never-by-file"
    finally:
        POLICIES.pop("never-by-file")


def test_policy_by_module_path(capsys):
    rc, out, err = run(capsys, "plan", "s06", "--policy",
                       "vmm_model.policy:vfio_container_dma_map_shared", "--no-compare",
                       "--wide")
    assert rc == 0 and "policy vmm_model.policy:vfio_container_dma_map_shared" in out
    table = [ln for ln in out.splitlines() if ln.startswith(("   realize", "   reset"))]
    assert table and not any("IOMMU_IOAS_MAP_FILE" in ln for ln in table)
    POLICIES.pop("vmm_model.policy:vfio_container_dma_map_shared")


def test_plan_json_schema(capsys):
    rc, out, err = run(capsys, "plan", "s06", "--json")
    doc = json.loads(out)
    assert doc["schema_version"] == 1
    p = doc["plans"][0]
    assert (p["qemu"], p["backend"], p["policy"]) == ("10.1", "iommufd", "fd")
    ev = next(e for e in p["events"] if e["iova"] == 0x100000000)
    assert ev["ioctl"] == "IOMMU_IOAS_MAP_FILE" and ev["kernel"] == "ran" and ev["ret"] == 0
    assert p["kernel"] == "7.2" and p["kernel_error"] is None
    assert ev["fields"]["start"] == 0x80000000
    # 7.2 and 8.2 have no -object iommufd: rejected, so not in the comparison
    assert {"versions": ["9.0", "9.1", "9.2", "10.0", "11.0.2", "11.1", "master"],
            "decision": "IOMMU_IOAS_MAP FIXED_IOVA|WRITEABLE|READABLE"} in ev["other_qemu"]
    assert [h["code"] for h in p["hazards"]] == ["private-map-file"]


def test_check_exit_status(capsys):
    assert run(capsys, "plan", "s06", "--check", "--no-compare")[0] == 1
    assert run(capsys, "plan", "s07", "--check", "--no-compare")[0] == 0


def test_plan_without_kernel_is_not_run(capsys):
    rc, out, err = run(capsys, "plan", "s06", "--json", "--kernel", "none", "--no-compare")
    ev = next(e for e in json.loads(out)["plans"][0]["events"] if e["iova"] == 0x100000000)
    assert (ev["kernel"], ev["ret"]) == ("not_run", None)


def test_plan_kernel_answers_differ_by_profile(capsys):
    """s38 (seed 000): MAP_FILE of the O_RDONLY fd works on 7.2.13, EPERM with the fix,
    ENOTTY before 6.13 (QEMU 10.1 has no fallback): realize fails."""
    for kernel, errno_, fails in (("7.2", None, False), ("7.2+fix", "EPERM", True),
                                  ("6.12", "ENOTTY", True)):
        doc = json.loads(run(capsys, "plan", "s38", "--json", "--kernel", kernel, "--no-compare")[1])
        p = doc["plans"][0]
        assert p["events"][0]["errno"] == (errno_ or "") and bool(p["realize_error"]) == fails


def test_plan_whole_gallery(capsys):
    rc, out, err = run(capsys, "plan", "--no-compare")
    assert rc == 0 and err == ""
    assert out.count("\n== ") + out.startswith("== ") >= len(gallery.names())


def test_command_line_fragment(capsys):
    rc, out, err = run(capsys, "plan", "--qemu", "10.1", "--backend", "iommufd", "--wide", "--",
                       "-m", "4G", "-mem-path", "/dev/hugepages")
    assert rc == 0
    assert "IOMMU_IOAS_MAP_FILE  iova=0x100000000 length=0x80000000 fd=3 start=0x80000000" in out
    assert "HAZARD [private-map-file]" in out


def test_usage_error_carries_where_field_valid():
    with pytest.raises(UsageError) as e:
        loads_toml('[memory]\nsize = "x"\n', "f.toml", "f")
    assert (e.value.where, e.value.field) == ("f.toml:2", "size")


def test_profiles_command(capsys):
    rc, out, err = run(capsys, "profiles", "--kernel", "7.2+fix", "--json")
    doc = json.loads(out)
    assert rc == 0 and list(doc["profiles"]) == ["7.2+fix"]
    assert doc["profiles"]["7.2+fix"]["map_file_requires_fmode_write"] is True
    rc, out, err = run(capsys, "profiles", "--kernel", "9.9")
    assert rc == 2 and "unknown kernel profile '9.9'" in err and "7.2+fix" in err


def test_memfd_seal_off_still_has_f_seal_seal():
    sc = loads_toml('[machine]\nmemory-backend = "m"\n[[object]]\nqom-type = '
                    '"memory-backend-memfd"\nid = "m"\nsize = "1G"\nseal = false\n', "x.toml", "x")
    m = make_plan(sc, get_qemu("10.1"), "iommufd").machine
    assert m.regions["m"].ram_block.backing.seals == ("F_SEAL_SEAL",)


def test_compare_prints_only_differences(capsys):
    rc, out, err = run(capsys, "compare", "s17-bar-va-map", "--kernels", "7.2", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["schema_version"] == 1
    assert [c["name"] for c in doc["columns"]] == ["type1/7.2/qemu-10.2", "iommufd/7.2/qemu-10.2",
                                                  "compat/7.2/qemu-10.2"]
    assert [d["cells"] for d in doc["differences"]] == [["MAP_DMA 0", "IOAS_MAP EFAULT",
                                                          "MAP_DMA EFAULT"]] * 3
    assert all(d["gpa"][0] >= 0xE0000000 for d in doc["differences"])   # RAM rows agree: hidden
    rc, out, err = run(capsys, "compare", "s17-bar-va-map", "--kernels", "7.2", "--backends", "type1")
    assert "every column gives the same kernel answers" in out


@pytest.mark.parametrize("args, expect", [
    (["compare", "s17-bar-va-map", "--kernels", "none"], "--kernels"),
    (["compare", "s17-bar-va-map", "--kernels", "5.4"], "unknown kernel profile"),
    (["compare", "s17-bar-va-map", "--backends", "vfio-user"], "--backends"),
    (["compare"], "compare takes one scenario"),
])
def test_compare_bad_arguments(capsys, args, expect):
    rc, out, err = run(capsys, *args)
    assert rc == 2 and expect in err and err.count("\n") == 1


def test_versions_lists_every_line_and_each_rule_with_its_release(capsys):
    rc, out, err = run(capsys, "versions")
    assert rc == 0 and "(default 11.1)" in out
    for name in ("7.2", "8.2", "9.0", "9.2", "10.0", "10.1", "10.2", "11.0.0", "11.0.2", "11.1",
                 "master"):
        assert f"\n  {name} " in out
    assert "master@b2e5620b4f5d" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("dma_map_file_shared_only"))
    assert "11.1.0 / 11.0.2 (stable)" in line and "Restrict dma_map_file()" in line
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("iommufd_cpr_blocker_bug"))
    assert "10.2.0" in line and "until 11.0.0 (0e387bd1dff4)" in line
    rc, out, err = run(capsys, "versions", "--json")
    doc = json.loads(out)
    assert doc["default"] == "11.1"
    assert (doc["versions"]["11.0.0"]["policy"], doc["versions"]["11.0.2"]["policy"]) == \
        ("fd", "fd-shared-or-ram-device")
    assert {r["switch"]: r["since"] for r in doc["rules"]}["bar_dmabuf"] == "11.0.0"
    assert not doc["versions"]["7.2"]["iommufd_object"] and doc["versions"]["9.0"]["iommufd_object"]


@pytest.mark.parametrize("given,line", [("11.0.1", "11.0.0"), ("11.0.7", "11.0.2"),
                                        ("1:11.1.3+ds-2~bpo13+1", "11.1"), ("10.0.2", "10.0"),
                                        ("9.1.3", "9.1"), ("7.2.22", "7.2")])
def test_any_release_maps_to_its_line(given, line):
    assert get_qemu(given).name == line


@pytest.mark.parametrize("given,expect", [
    ("fixed", "QEMU 'fixed' is retired: the shared-or-ram-device MAP_FILE rule it stood for "
              "shipped in QEMU 11.0.2 (stable) and 11.1"),
    ("fixed+dmabuf", "is retired"), ("12.0", "unknown QEMU version '12.0'"),
    ("6.2", "unknown QEMU version '6.2'"), ("latest", "unknown QEMU version 'latest'")])
def test_retired_and_unknown_versions_are_one_line_errors(capsys, given, expect):
    rc, out, err = run(capsys, "plan", "s02", "--qemu", given)
    assert rc == 2 and err.count("\n") == 1 and expect in err


def test_docs_qemu_versions_names_every_rule_and_line():
    from vmm_model.qemu_versions import QEMU_VERSIONS, RULES
    text = (Path(__file__).parent.parent / "docs" / "qemu-versions.md").read_text()
    for r in RULES:
        assert f"`{r.field}`" in text and r.since.rsplit(".0", 1)[0] in text, r.field
        if r.commit:
            assert r.commit in text, r.field
    for name in QEMU_VERSIONS:
        assert f"`{name}`" in text, name


def test_plan_json_has_phases_and_the_live_set(capsys):
    rc, out, err = run(capsys, "plan", "s02", "--qemu", "11.1", "--backend", "type1",
                       "--json", "--no-compare")
    p = json.loads(out)["plans"][0]
    assert rc == 0 and p["failed"] is False
    assert [(e["phase"], e["kind"], e["iova"]) for e in p["events"] if e["phase"] == "reset"] == [
        ("reset", "unmap", 0x0), ("reset", "map", 0x0), ("reset", "map", 0xC0000),
        ("reset", "map", 0xE0000), ("reset", "map", 0x100000)]
    assert [(m["iova"], m["size"], m["readonly"], m["ramblock"]) for m in p["live"]] == [
        (0x0, 0xC0000, False, "pc.ram"), (0xC0000, 0x20000, True, "pc.rom"),
        (0xE0000, 0x20000, True, "pc.bios"), (0x100000, 0x7FF00000, False, "pc.ram"),
        (0xFFFC0000, 0x40000, True, "pc.bios"), (0x100000000, 0x80000000, False, "pc.ram")]


def test_compare_has_a_row_per_virtio_mem_block_and_folds_runs(capsys, tmp_path):
    """Each virtio-mem block is its own row (block 0's MAP_FILE ENOTTY on 6.12 used
    to be hidden under the section's last block); contiguous blocks with the same
    cells are one row with their count."""
    vm = tmp_path / "vm.toml"
    vm.write_text('qemu = "10.1"\n[memory]\nsize = "4G"\nslots = 1\nmaxmem = "5G"\n'
                  '[[object]]\nqom-type = "memory-backend-memfd"\nid = "vmem0"\nsize = "1G"\n'
                  '[[device]]\ndriver = "virtio-mem-pci"\nid = "vm0"\nmemdev = "vmem0"\n'
                  'block-size = "2M"\nrequested-size = "1G"\nx-populated = ["0-511"]\n')
    rc, out, err = run(capsys, "compare", str(vm), "--backends", "iommufd",
                       "--kernels", "6.12,7.2", "--json")
    rdm = [d for d in json.loads(out)["differences"] if d["path"] == "rdm"]
    base = rdm[0]["gpa"][0]
    assert [(d["gpa"][0] - base, d["gpa"][1] - base, d["sections"], d["cells"]) for d in rdm] == [
        (0, 0x200000, 1, ["MAP_FILE ENOTTY", "MAP_FILE 0"]),
        (0, 0x40000000, 1, ["error", "-"]),              # the section: realize fails
        (0x200000, 0x40000000, 511, ["-", "MAP_FILE 0"])]
    rc, out, err = run(capsys, "compare", str(vm), "--backends", "iommufd", "--kernels", "6.12,7.2")
    assert f"rdm [0x{base + 0x200000:x}, 0x{base + 0x40000000:x}) ×511" in out


def test_compare_without_events_keeps_the_differences_and_outcomes():
    """keep_events=False (what the command line asks for) drops each column's
    events once its cells are taken: the same differences and outcomes, and no
    plan holds its events any more (memory: one column's events at a time)."""
    from vmm_model import compare, gallery
    from vmm_model.qemu_versions import get_qemu
    sc = gallery.load("s27")
    args = (sc, [get_qemu("10.2")], ["iommufd", "type1"], ["6.12", "7.2"])
    kept, kept_diffs = compare.compare(*args)
    plans, diffs = compare.compare(*args, keep_events=False)
    assert diffs == kept_diffs and diffs
    assert [compare.outcome(p) for p in plans] == [compare.outcome(p) for p in kept]
    assert sum(len(p.events) for p in kept) > 0 and not any(p.events for p in plans)
