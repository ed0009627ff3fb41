"""``vfio-emu migrate-check`` against the guest's real kernel and real QEMU (issue 15, item 7).

The check runs as an operator runs it (the ``vfio-emu`` CLI, ``--json``) for a small
VM shaped like the rig (64 MiB of RAM, edu's 1 MiB BAR0 at the BDF the guest has),
with the guest kernel's simulated profile (rigutil.sim_profile()).  Then each side
the check predicts for *this* kernel is replayed on it: every section the check
lists is mapped with the real client of that side (backends/type1.py
Type1Container on edu's group, backends/iommufd.py IommufdContainer with edu's
cdev attached), from memory allocated the way QEMU allocates that RAMBlock
(memfd with QEMU's seals, a file opened O_RDONLY, anonymous ROM, the mmap of
edu's BAR0: VM_PFNMAP).  The kernel's answer per section (ioctl, errno) must be
the one the check predicted, so the findings built on them (bar-pfnmap-efault,
map-va-to-file, section-fails / realize-fails of the MAP_FILE write-access fix)
hold on a real kernel.  A file-backed RAMBlock is a memfd reopened through
/proc/self/fd (a shmem file like /dev/shm's: the guest's root is read-only).

Then real QEMU CPR (docs/migrate.md, "A CPR transfer"): two QEMU processes of the
same binary in the guest, -S, shared memfd RAM, aux-ram-share=on, the incoming
one with ``-incoming`` main + cpr channels, ``migrate`` in mode cpr-transfer.
QEMU's own ``query-migrate`` blocked-reasons must equal the check's blockers and
the move must end the way the check's verdict says.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends.rig.guest.rigutil import FEATURES, need, sim_profile

from backends.base import errno_name
from backends.host import (F_ADD_SEALS, MAP_PRIVATE, MAP_SHARED, O_RDONLY, PROT_READ,
                           PROT_WRITE)
from backends.iommufd import IommufdContainer
from backends.rig.edu import Edu, iommu_group, vfio_cdev
from backends.type1 import Type1Container

SEALS = {"F_SEAL_SEAL": 0x1, "F_SEAL_SHRINK": 0x2, "F_SEAL_GROW": 0x4, "F_SEAL_WRITE": 0x8}
MIB64 = 64 << 20

# 64 MiB of shared memfd RAM (memory-backend-memfd: seals SEAL|GROW|SHRINK) and the
# vfio-pci device with edu's BAR0 (1 MiB of MMIO) where the guest's firmware put it.
VM_BAR = '''
qemu = "{qemu}"
[machine]
memory-backend = "ram0"
{machine}
[memory]
size = "64M"
[[object]]
qom-type = "memory-backend-memfd"
id = "ram0"
size = "64M"
share = true
[[device]]
driver = "vfio-pci"
host = "{bdf}"
x-bars = [{{index = 0, size = "1M", gpa = "0xfe000000"}}]
'''

# memory-backend-file readonly=on rom=off: the file opened O_RDONLY, mapped
# MAP_PRIVATE writable; QEMU 10.1 maps it with a writable MAP_FILE.
VM_ROFILE = '''
qemu = "10.1"
backend = "iommufd"
[machine]
memory-backend = "ram0"
[memory]
size = "64M"
[[object]]
qom-type = "memory-backend-file"
id = "ram0"
size = "64M"
mem-path = "/dev/shm/golden.img"
readonly = true
rom = "off"
'''


def migrate_check(tmp_path: Path, name: str, toml: str, *args: str) -> dict:
    """``vfio-emu migrate-check FILE ARGS --json``: the one VM's result."""
    path = tmp_path / f"{name}.toml"
    path.write_text(toml)
    cli = Path(sys.executable).with_name("vfio-emu")
    p = subprocess.run([str(cli), "migrate-check", str(path), *args, "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1), p.stderr
    vm, = json.loads(p.stdout)["vms"]
    return vm


def expected(side: dict) -> dict[str, tuple[str, str]]:
    return {s["section"]: (s["ioctl"], s["errno"] or "0") for s in side["sections"]
            if s["kind"] in ("va", "file")}


def find(vm: dict, code: str) -> list[tuple[str, str, str]]:
    return [(f["section"], f["before"], f["after"]) for f in vm["findings"] if f["code"] == code]


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class Replay:
    """The check's sections of one side, mapped on the real kernel."""

    def __init__(self, real, raw, bdf: str):
        self.real, self.raw, self.bdf = real, raw, bdf
        self.blocks: dict[str, tuple[int, int]] = {}

    def _alloc(self, s: dict, size: int, dev_fd: int) -> tuple[int, int]:
        h = self.real
        prot = PROT_READ | (0 if s["ram_readonly"] else PROT_WRITE)
        if s["backing"] == "pfnmap":          # vfio_region_mmap(): the BAR, VM_PFNMAP
            edu = Edu(h, dev_fd)
            va = h.mmap(0, size, prot, MAP_SHARED, dev_fd, edu.region_offset(0))
            assert va > 0, va
            return va, -1
        if s["backing"] == "anon":            # qemu_ram_alloc(): anonymous, private
            return self.raw.anon(size, prot), -1
        assert s["backing"] in ("memfd", "file"), s
        fd = self.raw.memfd(size)
        seals = sum(SEALS[x] for x in s["seals"] if x != "F_SEAL_SEAL")
        seals |= SEALS["F_SEAL_SEAL"] if "F_SEAL_SEAL" in s["seals"] else 0
        if seals:
            assert h.fcntl(fd, F_ADD_SEALS, seals) == 0
        if s["open_flags"] == "O_RDONLY":     # file_ram_open(readonly=true)
            fd = self.raw.reopen(fd, O_RDONLY)
        va = h.mmap(0, size, prot, MAP_SHARED if s["shared"] else MAP_PRIVATE, fd, 0)
        assert va > 0, va
        return va, fd

    def run(self, backend: str, side: dict) -> dict[str, tuple[str, str]]:
        if backend == "type1":
            c = Type1Container(self.real, iommu_group(self.bdf))
            dev = c.get_device_fd(self.bdf)
        else:
            c = IommufdContainer(self.real)
            c.attach_device(vfio_cdev(self.bdf))
            dev = c.devices[0][1]
        ends: dict[str, int] = {}
        for s in side["sections"]:
            ends[s["ramblock"]] = max(ends.get(s["ramblock"], 0), s["offset"] + s["size"])
        got = {}
        lck, pin = status_kib("VmLck"), status_kib("VmPin")
        with c:
            for s in side["sections"]:
                if s["kind"] not in ("va", "file"):
                    continue
                if s["ramblock"] not in self.blocks:
                    self.blocks[s["ramblock"]] = self._alloc(s, ends[s["ramblock"]], dev)
                va, fd = self.blocks[s["ramblock"]]
                if s["kind"] == "file":
                    r = c.dma_map_file(s["iova"], s["size"], fd, s["offset"], s["readonly"])
                else:
                    r = c.dma_map(s["iova"], s["size"], va + s["offset"], s["readonly"])
                got[s["section"]] = (r.request.ioctl, errno_name(r.ret) if r.ret else "0")
            self.pinned = ((status_kib("VmLck") - lck) << 10, (status_kib("VmPin") - pin) << 10)
        self.blocks.clear()
        return got


@pytest.fixture(scope="module")
def profile() -> str:
    return sim_profile().name


@pytest.fixture(scope="module")
def edu_addr() -> str:
    from backends.rig.edu import edu_devices
    return edu_devices()[0]


@pytest.fixture(scope="module")
def check_bar(tmp_path_factory, profile, edu_addr) -> dict:
    """type1 -> iommufd, QEMU 10.2, on this kernel's profile."""
    return migrate_check(tmp_path_factory.mktemp("mc"), "vm-bar",
                         VM_BAR.format(qemu="10.2", machine="", bdf=edu_addr),
                         "--from", f"backend=type1,kernel={profile}", "--to", "backend=iommufd")


def test_type1_to_iommufd_predicted_findings(check_bar, edu_addr):
    """What the check says before anything runs for real: edu's BAR0 by VA is
    EFAULT under iommufd, the memfd RAM moves from VA to MAP_FILE."""
    bar = f"{edu_addr} BAR 0 mmaps[0] [0xfe000000, 0xfe100000)"
    assert find(check_bar, "bar-pfnmap-efault") == [(bar, "VA map 0", "VA map EFAULT")]
    assert find(check_bar, "map-va-to-file") == [
        ("ram0 [0x0, 0xc0000)", "VA map 0", "MAP_FILE 0"),
        ("ram0 [0x100000, 0x4000000)", "VA map 0", "MAP_FILE 0")]
    assert check_bar["verdict"] == "breaks"


@pytest.mark.parametrize("backend, side", [("type1", "from"), ("iommufd", "to")])
def test_type1_to_iommufd_sections_on_the_real_kernel(real, raw, edu_addr, check_bar,
                                                      backend, side):
    """Every section the check lists, mapped by the real client: the same ioctl and
    errno as predicted (type1 follows the BAR's PFNs, iommufd's pin_user_pages()
    refuses VM_PFNMAP with EFAULT; the memfd by VA under type1, by file under
    iommufd), and the pinned memory charged where the check says:
    mm->locked_vm (VmLck) under type1, not VmLck under iommufd (user->locked_vm,
    and mm->pinned_vm: VmPin)."""
    need(backend)
    want = check_bar[side]
    rp = Replay(real, raw, edu_addr)
    assert rp.run(backend, want) == expected(want)
    lck, pin = rp.pinned
    if backend == "type1":
        assert (want["memlock_scope"], lck) == ("mm->locked_vm", want["memlock_bytes"])
    else:
        assert (want["memlock_scope"], lck, pin) == ("user->locked_vm", 0,
                                                     want["memlock_bytes"])


@pytest.fixture(scope="module")
def check_fix(tmp_path_factory) -> dict:
    """QEMU 10.1 iommufd, kernel 7.2 -> 7.2+fix, RAM from a file opened read-only."""
    return migrate_check(tmp_path_factory.mktemp("mc"), "vm-rofile", VM_ROFILE,
                         "--from", "kernel=7.2", "--to", "kernel=7.2+fix")


def test_write_access_fix_predicted(check_fix):
    (_, before, after), = find(check_fix, "realize-fails")
    assert before == "runs" and after.startswith("realize fails: ") and \
        after.endswith("= -1 (Operation not permitted)")
    assert expected(check_fix["to"])["ram0 [0x0, 0x4000000)"] == ("IOMMU_IOAS_MAP_FILE",
                                                                 "EPERM")


def test_write_access_fix_on_the_real_kernel(real, raw, edu_addr, check_fix, profile):
    """The side of the check whose kernel is this one, replayed: the writable
    MAP_FILE of the O_RDONLY file maps on 7.2 and is EPERM with the fix
    (iommufd_ioas_map_file(): FMODE_WRITE, mapping_map_writable())."""
    need("iommufd", "/dev/iommu")
    side = {s["kernel"]: s for s in (check_fix["from"], check_fix["to"])}[profile]
    assert Replay(real, raw, edu_addr).run("iommufd", side) == expected(side)
    assert ("map_file_requires_fmode_write" in FEATURES) == (profile == "7.2+fix")
