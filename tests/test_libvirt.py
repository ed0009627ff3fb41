"""libvirt domain XML: translated as libvirt's qemu_command.c does, checked
against real libvirt (virsh domxml-to-native) on a corpus of domain XMLs, per
libvirt release, parsed safely, and usable wherever a scenario is."""

import json
import re
from pathlib import Path

import pytest

import libvirt_real
from libvirt_cmp import memory_vfio_args
from vmm_model.cli import main
from vmm_model.libvirt import (LIBVIRT_VERSIONS, Config, domain_argv, from_domain_xml,
                               get_libvirt, parse_domain)
from vmm_model.plan import make_plan
from vmm_model.qemu.cmdline import from_qemu_args, split_command_line
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import load_scenario

CORPUS = sorted((Path(__file__).parent.parent / "fixtures" / "libvirt").glob("*.xml"))
LV = Path(__file__).parent.parent / "fixtures" / "libvirt"


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- against real libvirt ---------------------------------------------------------

@pytest.fixture(scope="module", params=["installed", "11.3"])
def real_libvirt(request):
    """The installed libvirt (Debian 12: 9.0) and 11.3 (bookworm-backports, unpacked
    by scripts/libvirt-prefix.sh), one session daemon each."""
    why = libvirt_real.available()
    if why:
        pytest.skip(f"real libvirt: {why} (scripts/test-all.sh installs it)")
    prefix = None
    if request.param != "installed":
        prefix = libvirt_real.prefix_for(request.param)
        if prefix is None:
            pytest.skip(f"libvirt {request.param} is not unpacked (sh scripts/libvirt-prefix.sh)")
    with libvirt_real.session(prefix) as s:
        yield s


def test_corpus_has_at_least_30_domains():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("xml", CORPUS, ids=lambda p: p.stem)
def test_memory_and_vfio_args_equal_real_libvirt(real_libvirt, xml):
    """libvirt's own command line and ours have the same -m, -machine
    memory-backend=/mem-merge=, -numa, memory-backend/iommufd -object and
    pc-dimm/nvdimm/virtio-mem/virtio-pmem/vfio-pci -device arguments; and the
    scenario built from libvirt's whole command line equals ours."""
    version = real_libvirt.version()
    major_minor = ".".join(version.split(".")[:2])
    assert major_minor in LIBVIRT_VERSIONS, version
    r = real_libvirt.qemu_argv(xml.read_text())
    assert r.returncode == 0, r.stderr
    real = split_command_line(r.stdout)
    cfg = Config(hugetlbfs=((str(real_libvirt.hugetlbfs), 2048),),
                 memory_backing_dir=str(real_libvirt.ram))
    v = get_libvirt(major_minor)
    ours = domain_argv(parse_domain(xml.read_text(), str(xml)), v, cfg)
    assert memory_vfio_args(ours) == memory_vfio_args(real)
    # libvirt's full argv (secrets, chardevs, pcie-root-ports, -sandbox, ...) imports
    sc_real = from_qemu_args(real, xml.stem)
    sc_ours = from_domain_xml(xml.read_text(), str(xml), xml.stem, major_minor, cfg)
    model = sc_ours.model()
    assert sc_real.model() == model
    assert any(n.startswith("-device pcie-root-port") or n.startswith("-object secret")
               for n in sc_real.not_modelled)


def test_real_libvirt_before_12_1_ignores_hostdev_iommufd(real_libvirt):
    """libvirt 9.0 and 11.3 have no iommufd: <driver iommufd='yes'/> gives a plain
    vfio-pci (the group/type1 path); our translation for those releases says so,
    12.1 adds -object iommufd and iommufd=."""
    release = ".".join(real_libvirt.version().split(".")[:2])
    assert release in ("9.0", "11.3")
    text = (LV / "vm-iommufd-hostdev.xml").read_text()
    real = split_command_line(real_libvirt.qemu_argv(text).stdout)
    devs = [a for a in real if '"driver":"vfio-pci"' in a]
    assert len(devs) == 1 and "iommufd" not in devs[0]
    assert not any('"qom-type":"iommufd"' in a for a in real)
    sc = from_domain_xml(text, "x.xml", "x", release)
    assert sc.backend is None
    assert any(f"libvirt {release} ignores it (added in 12.1.0)" in n for n in sc.not_modelled)
    sc = from_domain_xml(text, "x.xml", "x", "12.1")
    assert sc.backend == "iommufd" and sc.devices[0].props["iommufd"] == "iommufd0"


# --- release differences (qemu_command.c v9.0.0 vs v11.3.0, NEWS.rst) ----------------

def argv_of(name, version, **cfg):
    return domain_argv(parse_domain((LV / name).read_text(), name), get_libvirt(version),
                       Config(**cfg))


def test_dash_m_is_mib_in_9_0_and_kib_in_11_3():
    a = argv_of("vm-memfd-shared.xml", "9.0")
    b = argv_of("vm-memfd-shared.xml", "11.3")
    assert a[a.index("-m") + 1] == "4096"
    assert b[b.index("-m") + 1] == "size=4194304k"
    # with hotplug both give KiB with slots and maxmem
    c = argv_of("vm-dimm.xml", "9.0")
    d = argv_of("vm-dimm.xml", "11.3")
    assert c[c.index("-m") + 1] == d[d.index("-m") + 1] == \
        "size=4194304k,slots=4,maxmem=16777216k"


def test_hostdev_iommufd_per_release():
    text = (LV / "vm-iommufd-domain.xml").read_text()
    for v, first in (("9.0", None), ("11.3", None), ("12.1", None), ("12.2", "iommufd0")):
        sc = from_domain_xml(text, "d.xml", "d", v)
        hd = {d.props["host"]: d.props.get("iommufd") for d in sc.devices}
        # <iommufd enabled='yes'/> (12.2) applies to every hostdev but the one with
        # <driver iommufd='no'/>
        assert hd == {"0000:3b:00.0": first, "0000:5e:00.1": None}, v
        assert (sc.object("iommufd0") is not None) == (first is not None)


def test_virtio_mem_memaddr_from_9_4_on():
    xml = (LV / "vm-virtio-mem.xml").read_text().replace(
        "<block unit='MiB'>2</block>",
        "<block unit='MiB'>2</block><address base='0x180000000'/>")
    d = parse_domain(xml, "x.xml")
    old = [a for a in domain_argv(d, get_libvirt("9.0")) if "virtio-mem-pci" in a][0]
    new = [a for a in domain_argv(d, get_libvirt("11.3")) if "virtio-mem-pci" in a][0]
    assert "memaddr" not in json.loads(old)
    assert json.loads(new)["memaddr"] == 0x180000000


def test_default_hugepages_are_private_file_backed_and_map_file_on_10_1_iommufd():
    """<hugepages/> without <access>: memory-backend-file on hugetlbfs, no share
    (MAP_PRIVATE), prealloc; QEMU 10.1 with iommufd maps it by file."""
    sc = load_scenario(LV / "vm-hugepages-default.xml")
    ram = sc.object("pc.ram")
    assert ram.type == "memory-backend-file" and "share" not in ram.props
    assert ram.props["mem-path"] == "/dev/hugepages/libvirt/qemu/-1-hp-default"
    assert ram.props["prealloc"] is True
    assert ram.props["x-use-canonical-path-for-ramblock-id"] is False
    plan = make_plan(sc, get_qemu("10.1"), "iommufd")
    maps = [e.result.request for e in plan.events if e.kind == "map" and e.result]
    assert {r.ioctl for r in maps if r.fields.get("length", 0) >= 1 << 30} == \
        {"IOMMU_IOAS_MAP_FILE"}


def test_page_sizes_pick_their_hugetlbfs_mount(capsys, tmp_path):
    xml = (LV / "vm-file-private-hugepages.xml").read_text()
    sc = loads_domain(xml.replace("<page size='2' unit='MiB'/>", "<page size='1' unit='GiB'/>"))
    assert sc.object("pc.ram").props["mem-path"] == \
        "/dev/hugepages1G/libvirt/qemu/-1-file-private-hp"
    f = tmp_path / "d.xml"
    f.write_text(xml.replace("<page size='2' unit='MiB'/>", "<page size='16' unit='MiB'/>"))
    rc, out, err = run(capsys, "plan", str(f))
    assert rc == 2 and "Unable to find any usable hugetlbfs mount for 16384 KiB" in err


def loads_domain(text):
    return from_domain_xml(text, "d.xml", "d")


def test_memfd_shared_main_ram():
    sc = load_scenario(LV / "vm-memfd-shared.xml", "11.3")
    ram = sc.object("pc.ram")
    assert (ram.type, ram.props["share"]) == ("memory-backend-memfd", True)
    assert sc.machine["memory-backend"] == "pc.ram"
    assert "<currentMemory> (the balloon target; guest RAM is <memory>)" in sc.not_modelled


def test_numa_cell_memaccess_and_dimm_access():
    sc = load_scenario(LV / "vm-dimm.xml")
    assert sc.numa == ["ram-node0"]
    node, dimm = sc.object("ram-node0"), sc.object("memdimm0")
    assert node.props["share"] is True and dimm.props["share"] is False
    assert node.props["mem-path"] == "/var/lib/libvirt/qemu/ram/libvirt/qemu/-1-dimm/ram-node0"
    assert dimm.props["mem-path"] == "/var/lib/libvirt/qemu/ram/libvirt/qemu/-1-dimm/dimm0"
    assert [(d.type, d.props["slot"]) for d in sc.devices if d.type == "pc-dimm"] == \
        [("pc-dimm", 0)]


# --- safe parsing ------------------------------------------------------------------

@pytest.mark.parametrize("text,message,line", [
    ('<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY a "aaaa">]>\n<domain>&a;</domain>',
     "DOCTYPE and entity declarations are not accepted in domain XML", 2),
    ('<!DOCTYPE domain SYSTEM "file:///etc/passwd">\n<domain/>',
     "DOCTYPE and entity declarations are not accepted in domain XML", 1),
    ("<domain>" + "<a>" * 70 + "</a>" * 70 + "</domain>",
     "domain XML deeper than 64 levels or more than 100000 elements", 1),
    ("<domain><name>x</name>", "malformed XML: no element found", 1),
    ("<notadomain/>", "not a libvirt domain (the root element is not <domain>)", None),
    ("<domain><memory unit='MiB'>lots</memory></domain>", "bad size 'lots' MiB", 1),
    ("<domain>\n<memory>1048576</memory>\n<devices><memory model='dimm'><target>\n"
     "<size>524288</size><node>zero</node></target></memory></devices></domain>",
     "bad node 'zero'", 4),
    ("<domain><memory>1048576</memory><devices><memory model='dimm'><target>"
     "<size>524288</size></target><address type='dimm' slot='first'/></memory></devices>"
     "</domain>", "bad slot 'first'", 1),
    ("<domain><memory>1048576</memory><devices><memory model='sgx-epc'/></devices>"
     "</domain>", "memory device model 'sgx-epc' is not modelled", 1),
    ("<domain><memory>1048576</memory><devices><hostdev mode='subsystem' type='pci'>"
     "<driver name='kvm'/><source><address bus='0x3b'/></source></hostdev></devices>"
     "</domain>", "PCI passthrough driver 'kvm' is not supported by QEMU", 1),
])
def test_bad_domain_xml_one_line_exit_2(capsys, tmp_path, text, message, line):
    f = tmp_path / "d.xml"
    f.write_text(text)
    rc, out, err = run(capsys, "plan", str(f))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vfio-emu: error: ") and message in err, err
    assert (f"{f}:{line}" if line else str(f)) in err


def test_oversized_domain_xml_refused(capsys, tmp_path):
    f = tmp_path / "big.xml"
    f.write_text("<domain>" + " " * (5 << 20) + "</domain>")
    rc, _out, err = run(capsys, "libvirt-argv", str(f))
    assert rc == 2 and "domain XML larger than 4 MiB" in err


# --- the CLI -------------------------------------------------------------------------

def test_libvirt_argv_view(capsys):
    rc, out, err = run(capsys, "libvirt-argv", str(LV / "vm-iommufd-hostdev.xml"),
                       "--libvirt", "12.1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# libvirt 12.1")
    assert "-object '{\"qom-type\":\"iommufd\",\"id\":\"iommufd0\"}'" in lines
    assert "-device '{\"driver\":\"vfio-pci\",\"host\":\"0000:3b:00.0\",\"id\":\"hostdev0\"," \
           "\"iommufd\":\"iommufd0\"}'" in lines
    assert lines[-1] == ("# not modelled: <features>; <os firmware='efi'> (pflash blockdevs); "
                         "-overcommit mem-lock=off")


def test_plan_of_a_domain_shows_the_translation_and_the_plan(capsys):
    rc, out, err = run(capsys, "plan", str(LV / "vm-file-private-hugepages.xml"),
                       "--libvirt", "9.0", "--qemu", "10.1", "--backend", "iommufd",
                       "--no-compare", "--wide")
    assert rc == 0, err
    head = out.split("\n\n")[0].splitlines()
    assert head[0] == "vm-file-private-hugepages: QEMU arguments from the libvirt 9.0 " \
                      "domain XML:"
    assert head[1:3] == ["  -machine pc-i440fx-7.2,memory-backend=pc.ram", "  -m 2048"]
    assert '"share":false' in head[3] and '"prealloc-threads":2' in head[3]
    assert head[-1] == "vm-file-private-hugepages: not modelled: -overcommit mem-lock=off"
    assert "== vm-file-private-hugepages" in out and "IOMMU_IOAS_MAP_FILE" in out


def test_plan_text_fits_the_width(capsys):
    rc, out, err = run(capsys, "plan", "lv03", "--kernel", "none")
    assert rc == 0, err
    head = out.split("\n\n")[0].splitlines()
    assert max(len(ln) for ln in head) == 80
    assert head[3].startswith("  -object '{\"qom-type\":\"memory-backend-file\"") and \
        head[3].endswith("…")


def test_plan_json_carries_the_translation(capsys):
    rc, out, _ = run(capsys, "plan", str(LV / "vm-virtio-mem.xml"), "--json", "--qemu",
                     "10.1", "--backend", "type1", "--kernel", "none")
    doc = json.loads(out)
    (inp,) = doc["inputs"]
    assert inp["origin"] == "libvirt 12.2 domain XML"
    assert '{"qom-type":"memory-backend-memfd","id":"memvirtiomem0","share":true,' \
           '"reserve":false,"size":4294967296}' in inp["qemu_argv"]


def test_libvirt_flag_only_for_domains(capsys):
    rc, _out, err = run(capsys, "plan", "s02", "--libvirt", "9.0")
    assert rc == 2 and "--libvirt applies to libvirt domain XML only" in err
    rc, _out, err = run(capsys, "plan", str(LV / "vm-plain.xml"), "--libvirt", "8.0")
    assert rc == 2 and "unknown libvirt version '8.0'" in err and "9.0, 11.3, 12.1, 12.2" in err


def test_compare_takes_a_domain(capsys):
    rc, out, err = run(capsys, "compare", str(LV / "vm-hugepages-default.xml"),
                       "--backends", "type1,iommufd", "--kernels", "7.2", "--qemu", "10.1")
    assert rc == 0, err
    assert out.startswith("vm-hugepages-default: QEMU arguments from the libvirt 12.2 domain "
                          "XML:\n  -machine pc-q35-7.2,memory-backend=pc.ram\n"
                          "  -m size=4194304k\n")


def test_gallery_libvirt_examples_load():
    from vmm_model import gallery
    names = [n for n in gallery.names() if n.startswith("lv")]
    assert len(names) >= 6
    for n in names:
        sc = gallery.load(n)
        assert sc.origin.startswith("libvirt ") and sc.argv
        assert any(d.type == "vfio-pci" for d in sc.devices)


def test_pid_alias_and_mach_version_kept():
    sc = load_scenario(LV / "vm-plain.xml")
    assert sc.machine == {"type": "pc", "memory-backend": "pc.ram"}
    assert sc.machine_version == "7.2"
    assert re.search(r"<devices><serial>", "; ".join(sc.not_modelled))


def test_near_misses_of_memory_elements_are_pointed_out():
    xml = (LV / "vm-hugepages-default.xml").read_text().replace("<hugepages/>", "<hugepage/>")
    xml = xml.replace("<vcpu>", "<memoryBaking/><vcpu>")
    sc = loads_domain(xml)
    assert sc.object("pc.ram").type == "memory-backend-ram"     # as libvirt: no hugepages
    assert "<memoryBacking><hugepage> (libvirt ignores unknown elements: did you mean " \
           "<hugepages>?)" in sc.not_modelled
    assert "<memoryBaking> (libvirt ignores unknown elements: did you mean " \
           "<memoryBacking>?)" in sc.not_modelled


def test_libvirt_argv_json(capsys):
    rc, out, err = run(capsys, "libvirt-argv", str(LV / "vm-dimm.xml"), "--libvirt", "9.0",
                       "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert (doc["schema_version"], doc["libvirt"], doc["origin"]) == \
        (1, "9.0", "libvirt 9.0 domain XML")
    i = doc["qemu_argv"].index("-m")
    assert doc["qemu_argv"][i + 1] == "size=4194304k,slots=4,maxmem=16777216k"
    assert '{"driver":"pc-dimm","node":0,"memdev":"memdimm0","id":"dimm0","slot":0}' in \
        doc["qemu_argv"]


def test_migrate_check_takes_a_domain(capsys):
    """libvirt's default <hugepages/> (private hugetlbfs file): moving from type1 on
    QEMU 10.0 to iommufd on 10.1 breaks (MAP_FILE of private file RAM)."""
    rc, out, err = run(capsys, "migrate-check", str(LV / "vm-hugepages-default.xml"),
                       "--from", "qemu=10.0,backend=type1", "--to", "qemu=10.1,backend=iommufd")
    assert rc == 1, err
    assert out.startswith("== vm-hugepages-default: BREAKS")
    assert "BREAKS  [cow-divergence-appears] pc.ram [0x0, 0x180000000)" in out
