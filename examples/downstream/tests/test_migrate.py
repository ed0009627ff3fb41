"""ACME's planned move from type1 on QEMU 10.0 to iommufd on QEMU 11.1, checked
per VM shape with vfio-emu's migrate-check."""

import pytest

from vmm_model import migrate_check

from acme_vmm.vms import vm

SOURCE = "qemu=10.0,backend=type1,kernel=6.12"
DESTINATION = "qemu=11.1,backend=iommufd,kernel=7.2"


def test_small_vm_changes_but_survives(vfio_migrate_check):
    r = vfio_migrate_check(vm("small"), SOURCE, DESTINATION)
    r.expect("changes")
    assert r.codes() == {"map-va-to-file", "memlock-changes", "dirty-tracking-lost"}


def test_legacy_vm_breaks_on_10_1(vfio_migrate_check):
    r = vfio_migrate_check(vm("legacy"), SOURCE, "qemu=10.1,backend=iommufd,kernel=7.2")
    assert r.verdict == "breaks" and "cow-divergence-appears" in r.codes()
    with pytest.raises(AssertionError, match="migration breaks, expected at most changes"):
        r.expect("changes")


def test_legacy_vm_is_safe_to_move_to_11_1():
    r = migrate_check(vm("legacy"), SOURCE, DESTINATION)
    assert "cow-divergence-appears" not in r.codes() and r.verdict != "breaks"
