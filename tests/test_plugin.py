"""The pytest plugin as a downstream VMM suite uses it (pytester runs a
separate test session with the installed ``vfio_emu`` entry point)."""

from __future__ import annotations

pytest_plugins = ["pytester"]

DOWNSTREAM = '''
import errno
import pytest
from backends.simulated.dma import dma_read

def test_plan_has_kernel_answers(vfio_plan):
    p = vfio_plan("s17-bar-va-map", qemu="10.2", backend="iommufd")
    bars = [ev for ev in p.events if ev.kind == "map" and ev.section.mr.ram_device]
    assert {ev.result.ret for ev in bars} == {-errno.EFAULT}

def test_plan_only(vfio_plan):
    p = vfio_plan("s17-bar-va-map", qemu="10.2", kernel=None)
    assert {ev.result.ret for ev in p.events if ev.kind == "map"} == {None}

def test_sim_dma(vfio_sim):
    sim = vfio_sim("s08-memfd-share-off", qemu="11.1")
    rb = sim.machine.ramblocks[0]
    sim.host.write_mem(rb.host + 0x200000, b"guest")
    assert dma_read(sim.device, 0x200000, 5) == (5, b"guest")

@pytest.mark.vfio_qemu("9.2")
def test_only_for_9_2(vfio_qemu):
    assert vfio_qemu.name == "9.2"
'''


def test_downstream_suite_uses_fixtures(pytester):
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    r = pytester.runpytest("-p", "no:cacheprovider", "--vfio-kernel", "7.2")
    r.assert_outcomes(passed=3, skipped=1)
    r.stdout.fnmatch_lines(["vfio-emu: qemu=11.1 backend=iommufd kernel=7.2"])   # the newest release


MIGRATION_SUITE = '''
def test_upgrade_keeps_hugepage_vm_safe(vfio_migrate_check):
    r = vfio_migrate_check("s06", "qemu=10.0,backend=type1", "qemu=11.1,backend=iommufd")
    r.expect("changes")
    assert r.verdict == "changes"

def test_upgrade_to_10_2_breaks(vfio_migrate_check):
    vfio_migrate_check("s06", "qemu=10.0,backend=type1", "qemu=10.2,backend=iommufd").expect()
'''


def test_vfio_migrate_check_fixture(pytester):
    pytester.makepyfile(test_migration_suite=MIGRATION_SUITE)
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines([
        "E * AssertionError: migration breaks, expected at most safe:",
        "E * == s06-mem-path-hugetlbfs: BREAKS",
        "E * BREAKS  [[]cow-divergence-appears] pc.ram [[]0x0, 0x180000000) (3 sections): VA map 0 -> "
        "MAP_FILE 0"])
