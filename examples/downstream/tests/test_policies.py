"""ACME's policies, checked section by section on a simulated 7.2 kernel."""

import pytest

from acme_vmm.policies import bars_only_on_type1, never_map_file_private, refuse_unsealed_memfds
from acme_vmm.vms import vm


def test_qemu_10_1_maps_private_memfd_by_file_and_diverges(vfio_plan):
    plan = vfio_plan(vm("legacy"), qemu="10.1")
    assert plan.section("m0").ioctls == {"IOMMU_IOAS_MAP_FILE"}
    assert [code for _, code, _ in plan.hazards] == ["private-map-file"]
    assert not plan.ok


def test_never_map_file_private_maps_private_ram_by_va(vfio_plan):
    plan = vfio_plan(vm("legacy"), qemu="10.1", policy=never_map_file_private)
    assert plan.section("m0").ioctls == {"IOMMU_IOAS_MAP"}
    assert plan.ok, plan.problems


def test_never_map_file_private_keeps_shared_ram_by_file(vfio_plan):
    ram = vfio_plan(vm("small"), qemu="10.1", policy=never_map_file_private).section("m0")
    assert ram.by_file and ram.errnos == {"0"}


@pytest.mark.vfio_policy("acme_vmm.policies:never_map_file_private")
def test_policy_from_the_marker(vfio_plan):
    assert vfio_plan(vm("legacy"), qemu="10.1").section("m0").ioctls == {"IOMMU_IOAS_MAP"}


def test_bars_only_on_type1_leaves_iommufd_bars_unmapped(vfio_plan):
    plan = vfio_plan("s17-bar-va-map", backend="iommufd", policy=bars_only_on_type1)
    bar = plan.section("0000:01:00.0 BAR 0 mmaps[0]")
    assert bar.outcomes == ["map no ioctl = 0"] and bar.ioctls == set()
    assert plan.ok, plan.problems


def test_bars_only_on_type1_maps_bars_on_type1(vfio_plan):
    plan = vfio_plan("s17-bar-va-map", backend="type1", policy=bars_only_on_type1)
    bar = plan.section("0000:01:00.0 BAR 0 mmaps[0]")
    assert bar.ioctls == {"VFIO_IOMMU_MAP_DMA"} and bar.errnos == {"0"}


def test_refuse_unsealed_memfds_fails_realize(vfio_plan):
    plan = vfio_plan(vm("unsealed"), qemu="10.1", policy=refuse_unsealed_memfds)
    assert plan.section("m0").errnos == {"EPERM"}
    assert "memory listener initialization failed" in plan.realize_error
    assert not plan.ok


def test_refuse_unsealed_memfds_accepts_sealed_memfds(vfio_plan):
    plan = vfio_plan(vm("small"), qemu="10.1", policy=refuse_unsealed_memfds)
    assert plan.ok, plan.problems
