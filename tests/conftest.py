"""Shared fixtures: a LinuxHost factory that proves nothing leaked
(backends/rig/guest/hosts.py), and ``env`` for the simulated /dev/iommu tests."""

import pytest

from backends.rig.guest.hosts import linux_hosts, real  # noqa: F401  (fixtures)


@pytest.fixture
def env():
    """``Env()`` of tests/iommufd_env.py: a SimHost (7.2) with one edu-like VFIO
    device and /dev/iommu open."""
    from iommufd_env import Env
    return Env()
