"""The backend registry (vmm_model/iommu_backends.py): one registration point.

A made-up backend, the type1 container with the v1 IOMMU type (QEMU's
vfio_get_iommu_type() falls back to VFIO_TYPE1_IOMMU when v2 is missing), is
written once below (``MADE_UP``) and registered by running that text: then the
CLI and the pytest fixtures plan with it without another edit anywhere.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from backends import uapi
from backends.errors import UsageError
from backends.type1 import SetupError
from vmm_model import iommu_backends
from vmm_model.cli import main
from vmm_model.container_legacy import Legacy
from vmm_model.iommu_backends import IOMMUBackend, backend_names, get_backend, register

pytest_plugins = ["pytester"]

MADE_UP = '''
from backends import uapi
from backends.type1 import Type1Container
from vmm_model.container_legacy import Legacy
from vmm_model.iommu_backends import register, unregister


@register
class Type1v1(Legacy):
    """The legacy container with VFIO_SET_IOMMU(VFIO_TYPE1_IOMMU)."""

    name = "type1v1"
    aliases = ("vfio-type1-v1",)
    in_all = False
    capabilities = frozenset({"dirty_tracking"})

    def _container(self, host, dev):
        return Type1Container(host, dev.group, iommu_type=uapi.VFIO_TYPE1_IOMMU)


def pytest_unconfigure(config):
    unregister("type1v1")
'''


@pytest.fixture
def made_up():
    ns: dict = {}
    exec(compile(MADE_UP, "made_up_backend.py", "exec"), ns)
    yield ns["Type1v1"]
    iommu_backends.unregister("type1v1")


def test_builtin_backends_names_aliases_and_all():
    assert backend_names() == ("type1", "iommufd", "compat")
    assert backend_names(in_all=True) == ("type1", "iommufd")
    assert get_backend("legacy").name == "type1"
    assert get_backend("iommufd-compat").name == "compat"
    assert get_backend("iommufd").capabilities >= {"map_file", "cdev"}
    assert "map_file" not in get_backend("type1").capabilities


def test_unknown_backend_is_bad_input():
    with pytest.raises(UsageError) as e:
        get_backend("vfio-user", where="--backend", also=("all",))
    assert str(e.value) == ("--backend: unknown backend 'vfio-user' (valid: type1, iommufd, "
                            "compat, all)")


def test_registration_refuses_a_taken_name_and_unknown_capabilities():
    class Thief(IOMMUBackend):
        name = "thief"
        aliases = ("legacy",)
    with pytest.raises(ValueError, match="'legacy' is already 'type1'"):
        register(Thief)

    class Typo(IOMMUBackend):
        name = "typo"
        capabilities = frozenset({"mapfile"})
    with pytest.raises(ValueError, match=r"unknown capabilities \['mapfile'\]"):
        register(Typo)
    assert "thief" not in backend_names() and "typo" not in backend_names()


def test_made_up_backend_plans_through_the_cli(made_up, capsys):
    assert issubclass(made_up, Legacy) and backend_names()[-1] == "type1v1"
    assert main(["plan", "s02", "--backend", "vfio-type1-v1", "--qemu", "10.1",
                 "--kernel", "7.2", "--json", "--no-compare"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (plan,) = doc["plans"]
    assert plan["backend"] == "type1v1" and plan["kernel"] == "7.2"
    maps = [ev for ev in plan["events"] if ev["kind"] == "map"]
    assert maps and {(ev["ioctl"], ev["ret"]) for ev in maps} == {("VFIO_IOMMU_MAP_DMA", 0)}
    # not part of "all" (s05 names no backend)
    assert main(["plan", "s05", "--qemu", "10.1", "--kernel", "none", "--json",
                 "--no-compare"]) == 0
    assert [p["backend"] for p in json.loads(capsys.readouterr().out)["plans"]] == [
        "type1", "iommufd"]


def test_made_up_backend_sets_the_v1_iommu_type_on_the_simulated_kernel(made_up):
    from vmm_model import gallery
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.simulate import simulate
    with simulate(gallery.load("s02"), get_qemu("10.1"), "type1v1", "7.2") as sim:
        assert sim.error is None and sim.client.iommu_type == uapi.VFIO_TYPE1_IOMMU
        assert sim.client.name == "type1"
        assert sim.container.dma_max_mappings == 65535


PLUGIN_USER = '''
def test_plan_with_made_up_backend(vfio_plan, vfio_backend):
    assert vfio_backend == "type1v1"
    p = vfio_plan("s02", qemu="10.1")
    maps = [ev for ev in p.events if ev.kind == "map"]
    assert p.backend == "type1v1" and p.kernel == "7.2"
    assert maps and {(ev.result.request.ioctl, ev.result.ret) for ev in maps} == {
        ("VFIO_IOMMU_MAP_DMA", 0)}
'''


def test_made_up_backend_plans_through_the_pytest_fixture(pytester):
    pytester.makeconftest(MADE_UP)
    pytester.makepyfile(test_user=PLUGIN_USER)
    r = pytester.runpytest("-p", "no:cacheprovider", "--vfio-backend", "type1v1",
                           "--vfio-kernel", "7.2")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["vfio-emu: qemu=* backend=type1v1 kernel=7.2"])
    assert "type1v1" not in backend_names()


class Device:
    """Where a vfio-pci device would be (VfioDeviceAddress)."""
    group, name, cdev = 1, "0000:00:03.0", 0


@pytest.mark.skipif(os.path.exists("/dev/vfio/vfio") or os.path.exists("/dev/iommu"),
                    reason="this host has VFIO or iommufd")
@pytest.mark.parametrize("backend,node", [("type1", "/dev/vfio/vfio"), ("iommufd", "/dev/iommu"),
                                          ("compat", "/dev/iommu")])
def test_open_client_on_this_real_host_names_the_missing_node(linux_hosts, backend, node):
    """open_client() on a LinuxHost without VFIO: the client's one-line setup
    error for the first node it opens, and nothing left open or mapped."""
    host = linux_hosts()
    with pytest.raises(SetupError) as e:
        get_backend(backend).open_client(host, Device())
    assert (e.value.call, e.value.path, e.value.ret) == ("open", node, -errno.ENOENT)


def test_legacy_cpr_unmaps_every_vaddr_and_keeps_the_mappings():
    """What the type1 backend's cpr_unmap_vaddr_all() sends: UNMAP_DMA with
    FLAG_VADDR|FLAG_ALL over iova = size = 0 (vfio_dma_unmap_vaddr_all())."""
    from backends.base import vfio_dma_unmap_request
    req = vfio_dma_unmap_request(0x1000, 0x1000, unmap_all=True, vaddr_only=True)
    assert req.ioctl == "VFIO_IOMMU_UNMAP_DMA" and req.flag_names() == "ALL|VADDR"
    assert req.fields == {"argsz": 24, "flags": uapi.VFIO_DMA_UNMAP_FLAG_ALL
                          | uapi.VFIO_DMA_UNMAP_FLAG_VADDR, "iova": 0, "size": 0}
    assert get_backend("type1").cpr_unmap_vaddr_all is not None
    assert get_backend("iommufd").cpr_unmap_vaddr_all is None
