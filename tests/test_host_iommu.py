"""The simulated host's IOMMU is a choice (backends/simulated/iommu.py HOST_IOMMUS):
each one's aperture, page sizes and reserved regions as the kernel drivers give
them, what the type1 and iommufd kernels answer behind it, and how a plan names
a refusal caused by it (``--host-iommu``, ``[host] iommu``)."""

from __future__ import annotations

import errno
import json

import pytest

from backends import uapi
from backends.host import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from backends.iommufd import IommufdContainer
from backends.simulated import SimHost
from backends.simulated.iommu import (DEFAULT_HOST_IOMMU, HOST_IOMMUS, SimVfioDevice,
                                      get_host_iommu)
from backends.simulated.vfio import install
from backends.type1 import Type1Container
from vmm_model.cli import main
from vmm_model.scenario import loads_toml, to_toml

P = 4096
GIB = 1 << 30
MSI = (0xFEE00000, 0xFEEFFFFF)


def test_registry_values_from_the_drivers():
    """Apertures (intel paging_domain_alloc() __DOMAIN_MAX_ADDR(gaw); amd
    dma_max_address() ~0ULL for v1; smmu-v3 (1 << ias) - 1), page sizes (VT-d
    SZ_4K|2M|1G; AMD_IOMMU_PGSIZES without 512G) and reserved regions (the x86
    MSI window, AMD's HyperTransport range, the SMMU's MSI_IOVA_BASE window)."""
    table = {n: (hw.aperture[1], hw.pgsize_bitmap, hw.reserved) for n, (hw, _) in HOST_IOMMUS.items()}
    assert table == {
        "vtd-39": ((1 << 39) - 1, 0x40201000, (MSI,)),
        "vtd-48": ((1 << 48) - 1, 0x40201000, (MSI,)),
        "vtd-57": ((1 << 57) - 1, 0x40201000, (MSI,)),
        "amd-vi": ((1 << 64) - 1, 0xFFFFFF7FFFFFF000, (MSI, (0xFD00000000, 0xFFFFFFFFFF))),
        "smmu-v3": ((1 << 48) - 1, 0x40201000, ((0x8000000, 0x80FFFFF),)),
        "qemu-vtd": ((1 << 39) - 1, 0x40201000, (MSI,)),
    }
    assert DEFAULT_HOST_IOMMU == "vtd-48" and get_host_iommu() is HOST_IOMMUS["vtd-48"][0]
    assert SimVfioDevice().hw is HOST_IOMMUS["qemu-vtd"][0]       # the rig's, for kernel tests
    amd = get_host_iommu("amd-vi")
    assert amd.explain(0xFC00000000, 8 * GIB) == \
        "IOVA 0xfd00000000 is in the host IOMMU's reserved HyperTransport range (amd-vi)"
    assert amd.explain(0xFEF00000, P) is None
    assert get_host_iommu("vtd-39").explain(0, 1 << 40) == \
        "IOVA 0x8000000000 is beyond the host IOMMU's 39-bit aperture (vtd-39)"


def _host(name: str, profile: str = "7.2"):
    h = SimHost(profile)
    install(h, [SimVfioDevice(hw=get_host_iommu(name))])
    va = h.mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    return h, va


@pytest.mark.parametrize("name,iova,ret", [
    ("qemu-vtd", 1 << 39, -errno.EINVAL), ("vtd-48", 1 << 39, 0), ("vtd-48", 1 << 48, -errno.EINVAL),
    ("vtd-57", 1 << 48, 0), ("amd-vi", 0xFD00000000, -errno.EINVAL), ("amd-vi", 1 << 60, 0),
    ("smmu-v3", 0x8000000, -errno.EINVAL), ("smmu-v3", 0xFEE00000, 0), ("vtd-48", 0xFEE00000, -errno.EINVAL),
])
def test_type1_and_iommufd_answer_for_the_host_iommu(name, iova, ret):
    """type1: vfio_iommu_iova_dma_valid() over the aperture minus the reserved
    regions -> EINVAL; iommufd: the domain's aperture and the device's reserved
    regions are reserved IOVA (iopt_table_add_domain(), iopt_table_enforce_dev_resv_regions())
    -> iopt_check_iova() EINVAL.  Both backends, the same answer."""
    h, va = _host(name)
    with Type1Container(h, 1) as c:
        assert c.dma_map(iova, P, va, False).ret == ret
    h, va = _host(name)
    with IommufdContainer(h) as c:
        c.attach_device("/dev/vfio/devices/vfio0")
        assert c.dma_map(iova, P, va, False).ret == ret


def test_type1_iova_ranges_follow_the_host_iommu():
    """VFIO_IOMMU_GET_INFO's IOVA_RANGE capability: the aperture minus the
    reserved regions (vfio_iommu_aper_resize() + vfio_iommu_resv_exclude())."""
    h, _ = _host("amd-vi")
    with Type1Container(h, 1) as c:
        info = uapi.build("vfio_iommu_type1_info", argsz=256).ljust(256, b"\0")
        ret, out = h.ioctl(c.fd, uapi.VFIO_IOMMU_GET_INFO, info)
        caps = uapi.parse_cap_chain(out, uapi.parse("vfio_iommu_type1_info", out).cap_offset)
        ranges = [(r.start, r.end) for cap in caps if cap.header.id == 1 for r in cap.iova_ranges]
    assert ret == 0
    assert ranges == [(0, 0xFEDFFFFF), (0xFEF00000, 0xFCFFFFFFFF), (1 << 40, (1 << 64) - 1)]


BIG = """title = "a 640 GiB guest"
qemu = "10.0"
backend = "type1"
{host}
[machine]
memory-backend = "ram0"
[[object]]
qom-type = "memory-backend-memfd"
id = "ram0"
size = "640G"
"""


def _plan(tmp_path, capsys, host: str, *argv):
    path = tmp_path / "big.toml"
    path.write_text(BIG.format(host=host))
    rc = main(["plan", str(path), "--no-compare", "--json", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _above_4g(doc):
    (plan,) = doc["plans"]
    return next(e for e in plan["events"] if e["kind"] == "map" and e["iova"] == 1 << 32)


def test_plan_says_when_the_iova_is_beyond_the_aperture(tmp_path, capsys):
    """640 GiB of RAM reaches IOVA 0xa080000000: past QEMU's 39-bit VT-d, inside
    a server's 48-bit one (the default)."""
    rc, out, _ = _plan(tmp_path, capsys, "", "--host-iommu", "qemu-vtd")
    ev = _above_4g(json.loads(out))
    assert rc == 0 and ev["errno"] == "EINVAL"
    assert ev["message"].endswith(
        "IOVA 0x8000000000 is beyond the host IOMMU's 39-bit aperture (qemu-vtd)")
    rc, out, _ = _plan(tmp_path, capsys, "")
    ev = _above_4g(json.loads(out))
    assert (ev["ret"], ev["size"]) == (0, 638 * GIB)


def test_scenario_host_table_and_the_option_over_it(tmp_path, capsys):
    """[host] iommu picks the IOMMU; --host-iommu overrides it; to_toml keeps it."""
    _, out, _ = _plan(tmp_path, capsys, '[host]\niommu = "vtd-39"')
    assert "(vtd-39)" in _above_4g(json.loads(out))["message"]
    _, out, _ = _plan(tmp_path, capsys, '[host]\niommu = "vtd-39"', "--host-iommu", "vtd-57")
    assert _above_4g(json.loads(out))["ret"] == 0
    sc = loads_toml(BIG.format(host='[host]\niommu = "amd-vi"'), "big.toml", "big")
    assert loads_toml(to_toml(sc), "rt.toml", "big").host == {"iommu": "amd-vi"}


def test_unknown_host_iommu_is_bad_input(tmp_path, capsys):
    rc, out, err = _plan(tmp_path, capsys, '[host]\niommu = "vtd-99"')
    assert (rc, out) == (2, "")
    assert err.startswith("vfio-emu: error:") and "unknown host IOMMU 'vtd-99'" in err
    assert "big.toml:5" in err and err.count("\n") == 1
    rc, out, err = _plan(tmp_path, capsys, "", "--host-iommu", "nope")
    assert (rc, out) == (2, "") and "unknown host IOMMU 'nope'" in err and "--host-iommu" in err


def test_profiles_lists_the_host_iommus(capsys):
    assert main(["profiles", "--host-iommus"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:7]] == list(HOST_IOMMUS)
    assert "vtd-48 *" in out
    assert main(["profiles", "--host-iommus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["default"] == "vtd-48" and doc["host_iommus"]["amd-vi"]["address_width"] == 64
