"""type1 vs iommufd and QEMU upgrades, compared section by section."""

from vmm_model import compare_scenario, plan_scenario

from acme_vmm.vms import vm


def test_bars_fail_only_on_iommufd():
    cmp = compare_scenario("s17-bar-va-map", backends=["type1", "iommufd"], kernels=["7.2"])
    bar_rows = [d for d in cmp.differences if "BAR" in d["path"] or d["gpa"][0] >= 0xe0000000]
    assert [d["cells"] for d in bar_rows][0] == ["MAP_DMA 0", "IOAS_MAP EFAULT"]
    assert cmp.columns == ["type1/7.2/qemu-10.2", "iommufd/7.2/qemu-10.2"]


def test_upgrade_10_0_to_10_1_moves_ram_to_map_file():
    old = plan_scenario(vm("small"), qemu="10.0", backend="iommufd")
    new = plan_scenario(vm("small"), qemu="10.1", backend="iommufd")
    diff = old.diff(new)
    assert {d.section for d in diff} == {"m0"}
    assert all(d.left[0].startswith("map va") and d.right[0].startswith("map file")
               for d in diff)


def test_map_file_needs_a_6_13_kernel(vfio_plan):
    old_kernel = vfio_plan(vm("small"), qemu="10.1", kernel="6.12")
    assert old_kernel.section("m0").errnos == {"ENOTTY"}
    assert old_kernel.realize_error
    assert vfio_plan(vm("small"), qemu="10.1", kernel="7.2").ok


def test_type1_and_compat_decide_alike(vfio_plan):
    assert vfio_plan(vm("small"), backend="type1") == vfio_plan(vm("small"), backend="compat")


def test_scenario_file_names_its_qemu_and_backend(vfio_plan, pytestconfig):
    plan = vfio_plan(pytestconfig.rootpath / "scenarios" / "acme-db.toml")
    assert (plan.qemu.name, plan.backend) == ("10.0", "type1")
    assert plan.section("m0").ioctls == {"VFIO_IOMMU_MAP_DMA"} and plan.ok
