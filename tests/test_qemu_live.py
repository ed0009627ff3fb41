"""Real QEMU binaries (Debian 7.2 and bookworm-backports 10.0.2): introspection
over QMP and HMP, checked against /proc of the QEMU process and against the
model (build_machine) for that QEMU version.  Skips with the reason when a
binary is missing (scripts/install-qemu.sh; VFIO_EMU_QEMU_7_2 / _10_0)."""

from __future__ import annotations

import json
import os

import pytest

from vmm_model import cli
from vmm_model.plan import make_plan
from vmm_model.qemu import ReplayMonitor, compare_with_model, find_qemu, introspect
from vmm_model.qemu.launcher import launch_hmp
from qemu_testing import CONFIGS, children, config_args, launched, scratch_dir
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import load_toml

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "qmp")
SEAL_SEAL, SEAL_SHRINK, SEAL_GROW = 1, 2, 4


def need(version):
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    return binary




def maps_line(pid, addr):
    """The /proc/PID/maps line covering addr, read independently of vmm_model."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.split(None, 5)
    raise AssertionError(f"no mapping at {addr:#x}")


# (config, version) -> facts of the guest-RAM block: (name, size, fd?, shared?,
# backing (prefix, {d} = scratch dir), seals or None, writable mapping)
MEMFD = "/memfd:memory-backend-memfd (deleted)"
EXPECT = {
    "memfd-share-on-seal-on": ("mem0", 256, True, True, MEMFD,
                               SEAL_SEAL | SEAL_SHRINK | SEAL_GROW, True),
    # share=off: a private mapping of a memfd; seal=on is the default
    "memfd-share-off": ("mem0", 256, True, False, MEMFD, SEAL_SEAL | SEAL_SHRINK | SEAL_GROW,
                        True),
    "file-share-on": ("mem0", 256, True, True, "{d}/guest.ram", None, True),
    "file-share-off": ("mem0", 256, True, False, "{d}/guest.ram", None, True),
    "default-m": ("pc.ram", 128, False, False, "", None, True),
    "pc-dimm": ("dimm0mem", 64, True, True, MEMFD, SEAL_SEAL | SEAL_SHRINK | SEAL_GROW, True),
    "readonly-file": ("romem", 32, True, False, "{d}/ro.img", None, False),
    ("ram-share-on", "7.2"): ("mem0", 256, False, True, "/dev/zero (deleted)", None, True),
    # 10.0: qemu_ram_get_shared_fd() -> memfd named after the block, no MFD_ALLOW_SEALING
    ("ram-share-on", "10.0"): ("mem0", 256, True, True, "/memfd:mem0 (deleted)", SEAL_SEAL,
                               True),
}
CASES = [(v, c) for v in ("7.2", "10.0") for c in CONFIGS]


@pytest.mark.parametrize("version,config", CASES, ids=[f"{v}-{c}" for v, c in CASES])
def test_live_ramblocks_match_proc_and_model(version, config):
    need(version)
    with launched(version, config) as (q, mon, d):
        assert mon.pid == q.pid             # SO_PEERCRED on the QMP socket
        vm = introspect(mon)
        assert vm.proc and vm.version.startswith(version + ".")
        name, mib, fd, shared, backing, seals, writable = \
            EXPECT.get(config) or EXPECT[(config, version)]
        b = vm.block(name)
        assert (b.size, b.fd_present, b.shared, b.backing, b.writable) == \
            (mib << 20, fd, shared, backing.replace("{d}", d), writable)
        if fd:
            assert b.fd_offset == 0 and b.fd >= 0
            assert os.path.samefile(f"/proc/{q.pid}/fd/{b.fd}",
                                    f"/proc/{q.pid}/map_files/"
                                    f"{maps_line(q.pid, b.host)[0]}")
        if seals is not None:
            assert b.seals == seals
        # /proc read directly: the s/p flag and the path at rb->host
        line = maps_line(q.pid, b.host)
        assert line[1][3] == ("s" if shared else "p")
        assert (line[5].strip() if len(line) > 5 else "") == backing.replace("{d}", d)
        # every RAMBlock the guest sees has a host address and /proc facts
        seen = {s["mr"] for s in vm.scenario.sections if s["type"] in ("ram", "rom")}
        for s in seen:
            ob = vm.block(s)
            assert ob.host is not None and ob.fd_present is not None, s
        # the model for this QEMU version reconstructs the same fd/shared/size/offset
        assert compare_with_model(vm) == []
        qemu = get_qemu(vm.version)
        assert qemu.name == version and qemu.policy == "va-only"
        for backend in ("type1", "iommufd"):
            plan = make_plan(vm.scenario, qemu, backend)
            if backend == "iommufd" and not qemu.iommufd_object:    # 7.2: no -object iommufd
                assert "does not accept value 'iommufd'" in plan.rejected
                continue
            assert plan.rejected is None and plan.realize_error is None
            maps = [ev for ev in plan.events if ev.kind == "map"
                    and ev.section.mr.name == name]
            want = "VFIO_IOMMU_MAP_DMA" if backend == "type1" else "IOMMU_IOAS_MAP"
            assert maps and {ev.result.request.ioctl for ev in maps} == {want}
            rb = maps[0].section.mr.ram_block
            assert (rb.fd >= 0, rb.is_shared(), rb.used_length) == (fd, shared, mib << 20)
            assert all(ev.readonly == (config == "readonly-file") for ev in maps)
    assert q.pid not in children() and not os.path.exists(q.tmpdir)


def _cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# 7.2 has no -object iommufd (6e6d8ac62b5b, 9.0): its live VM is planned on type1
BACKEND = {"7.2": ("type1", "VFIO_IOMMU_MAP_DMA "), "10.0": ("iommufd", "IOMMU_IOAS_MAP ")}


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_cli_inspect_qmp_save_and_plan_reads_it_back(version, capsys, tmp_path):
    need(version)
    backend, ioctl = BACKEND[version]
    saved = tmp_path / "live.toml"
    with launched(version, "file-share-off") as (q, mon, d):
        mon.close()          # the QMP monitor takes one client: hand it to the CLI
        code, out, err = _cli(["inspect", "--qmp", q.socket_path, "--backend", backend,
                               "--save", str(saved), "--no-compare"], capsys)
        assert code == 0, err
        assert f"live QEMU {version}." in out and "model vs /proc: agree" in out
        assert ioctl in out and "mem0" in out and f"backend {backend}" in out
        code, out, err = _cli(["inspect", "--qmp", q.socket_path, "--json",
                               "--no-compare"], capsys)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["schema_version"] == 1
        assert [p["backend"] for p in doc["plans"]] == ["type1", "iommufd"]
        assert doc["live"]["pid"] == q.pid and doc["live"]["model_differences"] == []
        mem0 = next(b for b in doc["live"]["ramblocks"] if b["name"] == "mem0")
        assert (mem0["fd_present"], mem0["shared"], mem0["backing"]) == \
            (True, False, f"{d}/guest.ram")
    sc = load_toml(saved)
    assert sc.qemu.startswith(version + ".") and sc.object("mem0").props["share"] is False
    assert sc.object("mem0").props["x-fs"] == "tmpfs"
    code, out, err = _cli(["plan", str(saved), "--backend", backend, "--no-compare"], capsys)
    assert code == 0, err
    assert f"QEMU {version}" in out and ioctl in out and "mem0" in out


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_hmp_stdio_reads_the_same_vm_as_qmp(version):
    """pexpect on -monitor stdio: the same scenario as the recorded QMP transcript
    of the same configuration, and the same /proc facts."""
    binary = need(version)
    mon = launch_hmp(binary, config_args("pc-dimm", "/unused"))
    pid = mon.pid
    try:
        vm = introspect(mon)
    finally:
        mon.close()
    assert pid not in children()
    recorded = introspect(ReplayMonitor.load(
        os.path.join(FIXTURES, f"qemu-{version}-pc-dimm.json")))
    assert vm.scenario.model() == recorded.scenario.model()
    assert vm.memdev is None and vm.proc
    b = vm.block("dimm0mem")
    assert (b.fd_present, b.shared, b.seals, b.size) == (True, True, 7, 64 << 20)
    assert compare_with_model(vm) == []


def test_cli_inspect_hmp_stdio(capsys, tmp_path):
    binary = need("10.0")
    saved = tmp_path / "hmp.toml"
    with scratch_dir() as d:
        args = config_args("memfd-share-off", d)
        code, out, err = _cli(["inspect", "--hmp-stdio", "--backend", "type1", "--save",
                               str(saved), "--no-compare", "--", binary, *args], capsys)
    assert code == 0, err
    assert "live QEMU 10.0.2" in out and "VFIO_IOMMU_MAP_DMA" in out
    assert "model vs /proc: agree" in out
    sc = load_toml(saved)
    assert sc.object("mem0").type == "memory-backend-memfd"
    assert sc.object("mem0").props["share"] is False
    assert children() == []


def test_cli_inspect_qemu_kernel_simulated_labels_and_write_scenario(capsys, tmp_path):
    """--qemu/--kernel as plan; fds and addresses in the plan are labelled
    simulated; --write-scenario gives a file plan reads back to the same model."""
    need("7.2")
    saved = tmp_path / "live.toml"
    with launched("7.2", "file-share-off") as (q, mon, d):
        mon.close()
        code, out, err = _cli(["inspect", "--qmp", q.socket_path, "--backend", "iommufd",
                               "--qemu", "10.1", "--kernel", "7.2", "--no-compare",
                               "--write-scenario", str(saved)], capsys)
        assert code == 0, err
        assert "modelled as QEMU 10.1" in out
        assert "simulated: every fd number and host address in the plan below" in out
        assert "QEMU 10.1 · backend iommufd" in out and "simulated kernel 7.2" in out
        assert "IOMMU_IOAS_MAP_FILE" in out      # 10.1 maps fd-backed mem0 by file
        code, out, err = _cli(["inspect", "--qmp", q.socket_path, "--json", "--kernel", "none",
                               "--no-compare"], capsys)
        assert code == 0, err
        assert json.loads(out)["live"]["simulated"] == ["fd", "user_va", "vaddr",
                                                        "host address"]
    sc = load_toml(saved)
    code, out, err = _cli(["plan", str(saved), "--backend", "iommufd", "--qemu", "10.1",
                           "--no-compare"], capsys)
    assert code == 0, err
    assert "QEMU 10.1" in out and "mem0" in out
    from vmm_model.scenario import load_scenario
    assert load_scenario(saved).model() == sc.model()
