"""``vfio-emu probe`` (backends/probe.py): on this machine (no /dev/vfio, no
/dev/iommu) it prints one line per missing piece with what would provide it;
on a SimHost with the FakeKernel test double (tests/test_clients.py) it finds
everything and tries MAP_FILE on a scratch IOAS, leaving nothing behind."""

from __future__ import annotations

import argparse
import errno
import json
import os

import pytest

from backends import probe as probe_mod
from backends.probe import cmd_probe, missing_lines, probe, register, render
from backends.simulated import SimHost
from test_clients import CDEV, GROUP, _host

NO_VFIO = not os.path.exists("/dev/vfio") and not os.path.exists("/dev/iommu")


def lines_about(doc, prefix):
    return [m for m in doc["missing"] if m.startswith(prefix)]


# ---- this machine --------------------------------------------------------------------

@pytest.mark.skipif(not NO_VFIO, reason="this host has VFIO or iommufd")
def test_probe_this_machine_names_every_missing_piece(linux_hosts):
    doc = probe(linux_hosts())
    assert doc["available"] == dict.fromkeys(probe_mod.PIECES, False)
    assert doc["kernel"]["profile"] and doc["kernel"]["release"] == os.uname().release
    for prefix, provider in [("/dev/vfio/vfio: open: No such file or directory [ENOENT] -- ", "VFIO"),
                             ("VFIO groups (/dev/vfio/N): none -- ", "VFIO_PCI"),
                             ("/dev/iommu: open: No such file or directory [ENOENT] -- ", "IOMMUFD"),
                             ("VFIO cdevs (/dev/vfio/devices/vfioN): none -- ", "VFIO_DEVICE_CDEV"),
                             ("IOMMU_IOAS_MAP_FILE: not tried (no /dev/iommu) -- ", "6.13")]:
        (line,) = lines_about(doc, prefix)
        assert provider in line and "\n" not in line, line
    rl = doc["rlimit_memlock"]
    assert rl is not None and set(rl) == {"soft", "hard", "cap_ipc_lock"}


@pytest.mark.skipif(not NO_VFIO, reason="this host has VFIO or iommufd")
def test_probe_cli_on_this_machine(capsys):
    assert probe_mod.main([]) == 0
    out = capsys.readouterr().out
    assert "type1 /dev/vfio/vfio" in out and "missing: /dev/iommu: " in out
    assert probe_mod.main(["--require", "type1,iommufd"]) == 1
    assert "required but missing: type1, iommufd" in capsys.readouterr().out
    assert probe_mod.main(["--json", "--require", "map_file"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["required_missing"] == ["map_file"]
    assert doc["missing"] and doc["type1"]["errno"] == "ENOENT"


def test_require_unknown_piece_is_bad_input(capsys):
    assert probe_mod.main(["--require", "type1,bogus"]) == 2
    assert "--require: unknown piece 'bogus' (valid: type1, group, iommufd, compat, cdev, " \
           "map_file)" in capsys.readouterr().err


def test_register_adds_the_subcommand():
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["probe", "--json", "--require", "group"])
    assert (args.func, args.json, args.require) == (cmd_probe, True, "group")


# ---- a simulated host -------------------------------------------------------------------

@pytest.fixture
def sim():
    host = _host("double")
    yield host
    assert not host.fds and not host.mm.vmas, "probe left an fd or a mapping behind"


@pytest.fixture(params=["double", "sim"])
def kernel(request):
    host = _host(request.param)
    yield host
    assert not host.fds and not host.mm.vmas, "probe left an fd or a mapping behind"


def test_probe_sim_finds_everything_and_tries_map_file(kernel):
    sim = kernel
    doc = probe(sim)
    assert doc["available"] == dict.fromkeys(probe_mod.PIECES, True)
    assert doc["missing"] == []
    assert doc["type1"]["extensions"]["VFIO_TYPE1v2_IOMMU"] == 1
    assert doc["type1"]["extensions"]["VFIO_UPDATE_VADDR"] == 0
    assert doc["groups"] == [{"group": 1, "path": GROUP, "viable": True, "error": None}]
    assert doc["cdevs"] == [CDEV]
    assert doc["iommufd"]["map_file"]["ok"] is True
    assert doc["kernel"] == {"release": "7.2.0-sim", "profile": "7.2", "config": None, "modules": None}
    assert doc["rlimit_memlock"] == {"soft": None, "hard": None, "cap_ipc_lock": False}
    if sim.kernel:
        assert doc["iommufd"]["iova_ranges"] == [[0, 0xFEDFFFFF], [0xFEF00000, 0x7FFFFFFFFF]]
    names = sim.trace.names()
    i = names.index("IOMMU_IOAS_MAP_FILE")
    assert names[i:] == ["IOMMU_IOAS_MAP_FILE", "IOMMU_IOAS_UNMAP", "IOMMU_IOAS_UNMAP", "IOMMU_DESTROY"]
    text = render(doc)
    assert "IOMMU_IOAS_MAP_FILE       ok" in text and "missing:" not in text


@pytest.mark.parametrize("err,detail", [
    (errno.ENOTTY, "IOMMU_IOAS_MAP_FILE unknown (ENOTTY): needs kernel 6.13+"),
    (errno.EFAULT, "IOMMU_IOAS_MAP_FILE failed: Bad address [EFAULT] (IOMMU_IOAS_MAP_FILE ")])
def test_probe_sim_map_file_refused(sim, err, detail):
    sim.kernel.fail("IOMMU_IOAS_MAP_FILE", -err)
    doc = probe(sim)
    assert doc["available"]["map_file"] is False and doc["available"]["iommufd"] is True
    (line,) = lines_about(doc, "IOMMU_IOAS_MAP_FILE: ")
    assert line.startswith("IOMMU_IOAS_MAP_FILE: " + detail)


def test_probe_sim_group_not_viable_or_busy(sim):
    from backends import uapi
    sim.kernel.fail("VFIO_GROUP_GET_STATUS", (0, uapi.build("vfio_group_status", flags=0)))
    doc = probe(sim)
    assert doc["available"]["group"] is False
    assert lines_about(doc, GROUP) == [f"{GROUP}: group 1 is not viable -- bind every device of the "
                                       "IOMMU group to vfio-pci (or unbind it from its driver)"]
    real_open = sim.open
    sim.open = lambda path, *a: -errno.EBUSY if path == GROUP else real_open(path, *a)
    (line,) = lines_about(probe(sim), GROUP)
    assert "Device or resource busy [EBUSY] -- the group is already open" in line


def test_probe_permission_line(sim):
    real_open = sim.open
    sim.open = lambda path, *a: -errno.EACCES if path in ("/dev/vfio/vfio", "/dev/iommu") \
        else real_open(path, *a)
    doc = probe(sim)
    for path in ("/dev/vfio/vfio", "/dev/iommu"):
        (line,) = lines_about(doc, path + ": ")
        assert "[EACCES] -- permission: run as root, or give this user read-write access" in line


@pytest.mark.parametrize("profile,iommufd,cdev", [
    ("7.2", "load the iommufd module (modprobe iommufd; kernel 6.2+ with CONFIG_IOMMUFD)",
     "bind a device to vfio-pci; needs CONFIG_VFIO_DEVICE_CDEV=y (6.6+)"),
    ("6.1", "iommufd needs kernel 6.2+ (this is 6.1.0-sim)", "VFIO cdevs need kernel 6.6+")])
def test_probe_bare_sim_without_kernel_config(profile, iommufd, cdev):
    host = SimHost(profile)
    doc = probe(host)
    assert not any(doc["available"].values())
    assert lines_about(doc, "/dev/vfio/vfio: ")[0].endswith(
        "-- load the vfio and vfio_iommu_type1 modules (modprobe vfio_iommu_type1; "
        "kernel CONFIG_VFIO, CONFIG_VFIO_IOMMU_TYPE1)")
    assert lines_about(doc, "/dev/iommu: ")[0].endswith(iommufd)
    assert cdev in lines_about(doc, "VFIO cdevs")[0]
    assert not lines_about(doc, "IOMMU units")           # /sys is not simulated: unknown
    assert not host.fds and not host.mm.vmas


def test_missing_lines_follow_the_kernel_config():
    """A config with the options as modules that are not loaded: modprobe lines."""
    doc = probe(SimHost("7.2"))
    doc["kernel"]["config"] = dict.fromkeys(probe_mod.CONFIG_KEYS, "m") | {"CONFIG_MODULES": "y"}
    doc["kernel"]["modules"] = {"vfio": True, "vfio_iommu_type1": False, "vfio_pci": False,
                                "iommufd": False}
    doc["iommu_units"] = []
    lines = missing_lines(doc)
    assert lines_about({"missing": lines}, "/dev/vfio/vfio: ")[0].endswith(
        "-- load the module: modprobe vfio_iommu_type1")
    assert lines_about({"missing": lines}, "/dev/iommu: ")[0].endswith("modprobe iommufd")
    assert lines_about({"missing": lines}, "VFIO groups")[0].endswith("modprobe vfio-pci")
    assert lines_about({"missing": lines}, "IOMMU units")[0].startswith(
        "IOMMU units (/sys/class/iommu): none -- boot with intel_iommu=on or amd_iommu=on")


def test_cmd_probe_on_a_given_host(sim, capsys):
    args = argparse.Namespace(json=False, require="type1,group,iommufd,compat,cdev,map_file")
    assert cmd_probe(args, None, host=sim) == 0
    out = capsys.readouterr().out
    assert f"group {GROUP}" in out and "viable" in out and "required but missing" not in out
