"""LinuxHost fixtures that prove nothing leaked: the rig guest's tests use them
(conftest.py here) and so do the host's (tests/conftest.py).  ``real`` is one
LinuxHost; ``linux_hosts()`` makes more."""

import os

import pytest

from backends.host import LinuxHost


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _maps() -> list[tuple[int, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split(" ", 1)[0].split("-"))
            out.append((lo, hi, line.rstrip()))
    return out


@pytest.fixture
def linux_hosts():
    """Make LinuxHosts with ``linux_hosts()``; at teardown every one is closed
    and /proc/self/fd and /proc/self/maps must show nothing any of them made."""
    made: list[LinuxHost] = []
    fds_before, maps_before = _fds(), {m[2] for m in _maps()}

    def make() -> LinuxHost:
        made.append(LinuxHost())
        return made[-1]

    yield make
    for h in made:
        h.close_all()
    assert _fds() == fds_before, "LinuxHost leaked file descriptors"
    created = [r for h in made for r in h.history]
    # a mapping left inside a range a LinuxHost created (Python may reuse the
    # address space later, but not with a mapping contained in ours)
    leaked = [line for lo, hi, line in _maps() if line not in maps_before and
              any(a <= lo and hi <= b for a, b in created)]
    leaked += [line for _, _, line in _maps()
               if line not in maps_before and ("memfd:" in line or "/dev/shm/" in line)]
    assert not leaked, f"LinuxHost leaked mappings: {leaked}"


@pytest.fixture
def real(linux_hosts):
    return linux_hosts()
