"""ACME's policy over the QEMU versions, backends and kernels it supports."""

import pytest

from acme_vmm.vms import vm


@pytest.mark.vfio_matrix(qemu=["10.0", "10.1", "11.1"], backend=["type1", "iommufd"],
                         kernel=["6.18", "7.2"])
@pytest.mark.vfio_policy("acme_vmm.policies:never_map_file_private")
def test_small_vm_maps_everywhere(vfio_plan, vfio_combo):
    plan = vfio_plan(vm("small"))
    assert plan.ok, plan.problems
    assert plan.section("m0").by_file == (vfio_combo.backend == "iommufd")


@pytest.mark.vfio_matrix(backend=["type1", "iommufd"], kernel=["6.1", "6.12"],
                         unavailable="skip")
def test_old_kernels_where_the_backend_exists(vfio_plan, vfio_combo):
    plan = vfio_plan(vm("small"), qemu="10.0")
    assert plan.section("m0").ioctls == (
        {"VFIO_IOMMU_MAP_DMA"} if vfio_combo.backend == "type1" else {"IOMMU_IOAS_MAP"})
