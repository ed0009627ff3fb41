"""The pytest plugin as a downstream VMM suite uses it: each test writes a
downstream test file and runs it in a separate pytest session (pytester) with
the installed ``vfio_emu`` entry point, then checks that session's outcomes and
messages."""

from __future__ import annotations

import pytest

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
    pytester.makepyfile(test_ds_downstream=DOWNSTREAM)
    r = pytester.runpytest("-p", "no:cacheprovider", "--vfio-kernel", "7.2")
    r.assert_outcomes(passed=3, skipped=1)
    r.stdout.fnmatch_lines(["vfio-emu: qemu=scenario or 11.1 backend=scenario or iommufd "
                            "kernel=7.2"])


# --- no vacuous passes -----------------------------------------------------------------

UNAVAILABLE = '''
import pytest

def test_iommufd_on_6_1(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", backend="iommufd", kernel="6.1")
    for ev in plan.events:          # would pass vacuously on an empty plan
        assert ev.result.ret == 0

def test_skip_when_asked(vfio_plan):
    vfio_plan("s08-memfd-share-off", backend="iommufd", kernel="6.1", unavailable="skip")

@pytest.mark.vfio_skip_unavailable
def test_skip_by_marker(vfio_plan):
    vfio_plan("s08-memfd-share-off", backend="iommufd", kernel="6.1")

def test_return_to_inspect(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", backend="iommufd", kernel="6.1",
                     unavailable="return")
    assert not plan.ok and "/dev/iommu" in plan.kernel_error

def test_rejected_by_that_qemu(vfio_plan):
    vfio_plan("s34-aux-ram-share", qemu="9.2")

def test_sim_unavailable(vfio_sim):
    vfio_sim("s08-memfd-share-off", backend="iommufd", kernel="6.1")
'''


def test_unusable_backend_fails_with_the_reason(pytester):
    pytester.makepyfile(test_ds_unavailable=UNAVAILABLE)
    r = pytester.runpytest("-p", "no:cacheprovider", "-rfs")
    r.assert_outcomes(failed=3, skipped=2, passed=1)
    r.stdout.fnmatch_lines([
        "*vfio_plan(s08-memfd-share-off qemu-10.1 iommufd/6.1): iommufd cannot start on "
        "kernel 6.1: /dev/iommu: open: No such file or directory [[]ENOENT[]]*",
        "*vfio_plan(s34-aux-ram-share qemu-9.2 iommufd/no kernel): QEMU 9.2 rejects this "
        "command line: qemu-system-x86_64: Property 'pc-q35-9.2-machine.aux-ram-share' not "
        "found",
        "*vfio_sim(s08-memfd-share-off qemu-10.1 iommufd/6.1): iommufd cannot start:*",
        "SKIPPED [[]2[]] *iommufd cannot start on kernel 6.1*",
    ])
    r.stdout.fnmatch_lines(["FAILED test_ds_unavailable.py::test_iommufd_on_6_1*",
                            "FAILED test_ds_unavailable.py::test_rejected_by_that_qemu*",
                            "FAILED test_ds_unavailable.py::test_sim_unavailable*"],
                           consecutive=False)


# --- fixture arguments -------------------------------------------------------------------

POLICIES = '''
from vmm_model import vfio_container_dma_map_va

def never_by_file(bcontainer, iova, size, vaddr, readonly, mr):
    """Map everything by VA, as QEMU 10.0 did."""
    return vfio_container_dma_map_va(bcontainer, iova, size, vaddr, readonly, mr)
'''

POLICY_TESTS = '''
import pytest
from acme_policies import never_by_file

def test_default_policy_maps_memfd_by_file(vfio_plan):
    assert vfio_plan("s08-memfd-share-off").section("ram0").ioctls == {"IOMMU_IOAS_MAP_FILE"}

def test_policy_argument(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", policy=never_by_file)
    assert plan.section("ram0").ioctls == {"IOMMU_IOAS_MAP"}
    assert plan.policy == "acme_policies:never_by_file"

@pytest.mark.vfio_policy("acme_policies:never_by_file")
def test_policy_marker(vfio_plan, vfio_sim):
    assert vfio_plan("s08-memfd-share-off").section("ram0").ioctls == {"IOMMU_IOAS_MAP"}
    sim = vfio_sim("s08-memfd-share-off")
    assert {ev.result.request.ioctl for ev in sim.container.events
            if ev.kind == "map" and ev.section.mr.name == "ram0"} == {"IOMMU_IOAS_MAP"}

@pytest.mark.vfio_policy("fd")
def test_argument_beats_marker(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", qemu="10.0", policy=never_by_file)
    assert plan.section("ram0").ioctls == {"IOMMU_IOAS_MAP"}
'''


def test_policy_per_test(pytester):
    pytester.makepyfile(acme_policies=POLICIES, test_ds_policies=POLICY_TESTS)
    pytester.syspathinsert()
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=4)


def test_policy_option(pytester):
    pytester.makepyfile(acme_policies=POLICIES, test_ds_opt='''
def test_option_policy(vfio_plan):
    assert vfio_plan("s08-memfd-share-off").policy == "acme_policies:never_by_file"
    assert vfio_plan("s08-memfd-share-off").section("ram0").ioctls == {"IOMMU_IOAS_MAP"}
''')
    pytester.syspathinsert()
    r = pytester.runpytest("-p", "no:cacheprovider", "--vfio-policy",
                           "acme_policies:never_by_file")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["vfio-emu: * policy=acme_policies:never_by_file"])


SCENARIO_FILE = '''
title = "a memfd VM on type1 with QEMU 10.0"
qemu = "10.0"
backend = "type1"
[machine]
type = "q35"
memory-backend = "m0"
[[object]]
qom-type = "memory-backend-memfd"
id = "m0"
size = "2G"
'''


def test_scenario_file_names_qemu_and_backend(pytester):
    pytester.makefile(".toml", team_vm=SCENARIO_FILE)
    pytester.makepyfile(test_ds_file='''
def test_scenario_wins_over_defaults(vfio_plan):
    plan = vfio_plan("team_vm.toml")
    assert (plan.qemu.name, plan.backend) == ("10.0", "type1")
    assert plan.section("m0").ioctls == {"VFIO_IOMMU_MAP_DMA"}

def test_argument_wins_over_scenario(vfio_plan):
    plan = vfio_plan("team_vm.toml", qemu="10.1", backend="iommufd")
    assert (plan.qemu.name, plan.backend) == ("10.1", "iommufd")
    assert plan.section("m0").ioctls == {"IOMMU_IOAS_MAP_FILE"}
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    r = pytester.runpytest("-p", "no:cacheprovider", "--vfio-qemu", "10.2", "-k", "scenario_wins")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*AssertionError*('10.2', 'type1') == ('10.0', 'type1')*"])


def test_kernel_none_and_host_as_keywords(pytester):
    pytester.makepyfile(test_ds_kernels='''
import platform
from vmm_model import get_profile

def test_none(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", kernel="none")
    assert plan.kernel is None
    assert plan.section("ram0").errnos == {"not run"}

def test_host(vfio_plan):
    plan = vfio_plan("s08-memfd-share-off", kernel="host")
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    have = tuple(int(x) for x in plan.kernel.split("-")[0].split("+")[0].split("."))
    assert have <= (major, minor) and get_profile(plan.kernel).iommufd
    assert plan.section("ram0").errnos == {"0"}
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)


@pytest.mark.parametrize("option, value, message", [
    ("--vfio-qemu", "3.1", "vfio-emu: --vfio-qemu: unknown QEMU version '3.1' (valid: 7.2, *"),
    ("--vfio-kernel", "5.99", "vfio-emu: --vfio-kernel: unknown kernel profile '5.99' *"),
    ("--vfio-policy", "nosuch.module:fn", "vfio-emu: --vfio-policy: cannot load policy "
                                          "'nosuch.module:fn'*"),
])
def test_bad_option_is_a_usage_error_at_start_up(pytester, option, value, message):
    pytester.makepyfile(test_ds_x="def test_x(vfio_plan):\n    pass\n")
    r = pytester.runpytest("-p", "no:cacheprovider", option, value)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: " + message])
    assert "collected" not in r.stdout.str()


def test_marker_knows_version_aliases(pytester):
    pytester.makepyfile(test_ds_alias='''
import pytest

@pytest.mark.vfio_qemu("10.0.2", "11.1")
def test_debian_packages(vfio_qemu):
    assert vfio_qemu.name in ("10.0", "11.1")
''')
    pytester.runpytest("-p", "no:cacheprovider", "--vfio-qemu", "10.0").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--vfio-qemu",
                       "1:11.1.3+ds-2~bpo13+1").assert_outcomes(passed=1)
    r = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--vfio-qemu", "9.2")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*vfio_qemu marker: needs QEMU 10.0.2, 11.1, selected 9.2*"])


MATRIX = '''
import pytest

@pytest.mark.vfio_matrix(qemu=["10.0", "10.1"], backend=["type1", "iommufd"],
                         kernel=["6.12", "7.2"])
def test_memfd_ram(vfio_plan, vfio_combo):
    ram = vfio_plan("s08-memfd-share-off").section("ram0")
    by_file = vfio_combo.backend == "iommufd" and vfio_combo.qemu == "10.1"
    assert ram.by_file == by_file
    assert ram.errnos == ({"0"} if vfio_combo.kernel == "7.2" or not by_file else {"ENOTTY"})

@pytest.mark.vfio_matrix(backend="type1,iommufd", kernel=["6.1", "7.2"], unavailable="skip")
def test_skips_missing_backends(vfio_plan, vfio_backend, vfio_kernel):
    assert vfio_plan("s02").ok
    assert (vfio_backend, vfio_kernel) != ("iommufd", "6.1")

@pytest.mark.vfio_matrix(qemu="9.2,10.0")
@pytest.mark.vfio_qemu("10.0")
def test_marker_filters_cells(vfio_qemu):
    assert vfio_qemu.name == "10.0"
'''


def test_matrix_over_versions_backends_kernels(pytester):
    pytester.makepyfile(test_ds_matrix=MATRIX)
    r = pytester.runpytest("-p", "no:cacheprovider", "-v")
    r.assert_outcomes(passed=8 + 3 + 1, skipped=1 + 1)
    r.stdout.fnmatch_lines([
        "*test_memfd_ram[[]qemu-10.0-type1-6.12[]] PASSED*",
        "*test_memfd_ram[[]qemu-10.1-iommufd-7.2[]] PASSED*",
        "*test_skips_missing_backends[[]qemu-11.1-iommufd-6.1[]] SKIPPED*",
    ], consecutive=False)


def test_matrix_with_a_bad_value_is_a_usage_error(pytester):
    pytester.makepyfile(test_ds_bad='''
import pytest

@pytest.mark.vfio_matrix(qemu=["10.1", "4.0"])
def test_x(vfio_plan):
    pass
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    assert r.ret != 0
    r.stdout.fnmatch_lines(["*vfio-emu: vfio_matrix on test_ds_bad.py::test_x: "
                            "qemu: unknown QEMU version '4.0'*"])


def test_assertion_message_shows_the_differing_sections(pytester):
    pytester.makepyfile(test_ds_cmp='''
def test_type1_like_iommufd(vfio_plan):
    assert vfio_plan("s17-bar-va-map", backend="type1") == vfio_plan("s17-bar-va-map")

def test_equal_plans(vfio_plan):
    a = vfio_plan("s02", backend="type1")
    b = vfio_plan("s02", backend="iommufd")
    assert a == b and not a.diff(b)
''')
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, passed=1)
    r.stdout.fnmatch_lines([
        "E*assert <Plan s17-bar-va-map qemu-10.2 type1/7.2 runs: 9 maps> == "
        "<Plan s17-bar-va-map qemu-10.2 iommufd/7.2 runs: 9 maps, 3 failed (EFAULT)>",
        "E*plans differ:",
        "E*0000:01:00.0 BAR 0 mmaps[[]0[]] [[]0xe0000000, 0xe1000000) (firmware): map va rw = 0  !=  "
        "map va rw = EFAULT",
    ])


MIGRATION_SUITE = '''
def test_upgrade_keeps_hugepage_vm_safe(vfio_migrate_check):
    r = vfio_migrate_check("s06", "qemu=10.0,backend=type1", "qemu=11.1,backend=iommufd")
    r.expect("changes")
    assert r.verdict == "changes"

def test_upgrade_to_10_2_breaks(vfio_migrate_check):
    vfio_migrate_check("s06", "qemu=10.0,backend=type1", "qemu=10.2,backend=iommufd").expect()
'''


def test_vfio_migrate_check_fixture(pytester):
    pytester.makepyfile(test_ds_migration_suite=MIGRATION_SUITE)
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines([
        "E * AssertionError: migration breaks, expected at most safe:",
        "E * == s06-mem-path-hugetlbfs: BREAKS",
        "E * BREAKS  [[]cow-divergence-appears] pc.ram [[]0x0, 0x180000000) (3 sections): VA map 0 -> "
        "MAP_FILE 0"])
