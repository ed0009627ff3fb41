"""ACME's own top-level ``backends`` package and vfio-emu's, side by side."""

from pathlib import Path

import backends
from backends import qcow2

import vmm_model


def test_backends_is_ours(cluster_size):
    assert backends.NAMES == ("qcow2", "raw")
    assert qcow2.clusters(3 * cluster_size + 1) == 4


def test_vfio_emu_still_finds_its_own(vfio_plan):
    plan = vfio_plan("s02", backend="type1")
    assert plan.ok
    assert vmm_model.DmaResult.__module__ == "backends.base"
    theirs = Path(backends.__file__).parent
    assert Path(vmm_model.DmaResult.__init__.__code__.co_filename).parent != theirs


def test_public_api_is_versioned():
    assert vmm_model.__version__[0].isdigit()
    assert {"plan_scenario", "Plan", "PolicyError"} <= set(vmm_model.__all__)
