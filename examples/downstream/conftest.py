"""ACME's conftest: the team's own ``backends`` package is imported first (as
most suites do), then vfio-emu's fixtures are used next to it."""

import pytest

from backends import qcow2          # ACME's own backends package, not vfio-emu's


@pytest.fixture
def cluster_size() -> int:
    return qcow2.CLUSTER_SIZE
