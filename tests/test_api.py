"""The public API (vmm_model/__init__.py): every exported name resolves, the
version is pyproject's, and importing vmm_model stays light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import vmm_model

REPO = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves():
    for name in vmm_model.__all__:
        assert getattr(vmm_model, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'make_plan'"):
        vmm_model.make_plan          # internal: vmm_model.plan.make_plan


def test_version_is_single_sourced():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert vmm_model.__version__ == version("vfio-emu") == project["version"]


def test_import_is_light():
    code = "import sys, vmm_model; print(sorted(m for m in sys.modules if m.startswith(" \
           "('backends', 'vmm_model.'))))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "['vmm_model._imports']", r.stderr


def test_plan_scenario_follows_the_scenario_then_defaults():
    plan = vmm_model.plan_scenario("s17-bar-va-map")          # names qemu 10.2, no backend
    assert (plan.qemu.name, plan.backend, plan.kernel) == ("10.2", "iommufd", "7.2")
    plan = vmm_model.plan_scenario("s17-bar-va-map", qemu="10.0.2", backend="type1",
                                   kernel="none")
    assert (plan.qemu.name, plan.backend, plan.kernel) == ("10.0", "type1", None)
    with pytest.raises(vmm_model.UsageError, match="backend: unknown backend 'vfio'"):
        vmm_model.plan_scenario("s02", backend="vfio")


def test_section_of_an_unknown_region_lists_the_valid_ones():
    plan = vmm_model.plan_scenario("s02", kernel="none")
    with pytest.raises(vmm_model.UsageError) as e:
        plan.section("ram0")
    assert str(e.value) == ("plan.section('ram0'): no section 'ram0' in s02-default-ram "
                            "qemu-10.1 iommufd/no kernel (valid: pc.bios, pc.ram, pc.rom)")


def test_plan_diff_and_equality_ignore_addresses_not_decisions():
    a = vmm_model.plan_scenario("s08", qemu="10.1")
    b = vmm_model.plan_scenario("s08", qemu="10.1")
    assert a == b and not a.diff(b) and str(a.diff(b)).endswith("no differences")
    fixed = vmm_model.plan_scenario("s08", qemu="11.1")
    d = a.diff(fixed)
    assert a != fixed and d.hazards == (frozenset({"private-map-file"}), frozenset())
    assert {(s.section, s.left, s.right) for s in d} == {
        ("ram0", ("map file rw = 0",), ("map va rw = 0",))}
    assert [s.gpa for s in d] == [(0, 0x80000000), (0x100000000, 0x180000000), (0, 0xc0000),
                                  (0x100000, 0x80000000)]
