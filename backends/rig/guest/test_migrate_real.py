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
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends.rig.guest.rigutil import FEATURES, need, sim_profile

from backends import uapi
from backends.base import errno_name
from backends.host import (F_ADD_SEALS, MAP_PRIVATE, MAP_SHARED, O_RDONLY, PROT_READ,
                           PROT_WRITE)
from backends.iommufd import IommufdContainer
from backends.rig.edu import Edu, iommu_group, vfio_cdev
from backends.type1 import Type1Container

VFIO_DEVICE_FEATURE_MIGRATION = 1                 # include/uapi/linux/vfio.h
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

    def _probe(self, c, backend: str, dev: int) -> dict[str, int]:
        """The capability ioctls the check asks its simulated kernel (its ``probes``),
        asked of this one, with the sections mapped."""
        h, out = self.real, {}
        if backend == "type1":
            for name in ("VFIO_UPDATE_VADDR", "VFIO_UNMAP_ALL"):
                out[name] = h.ioctl(c.fd, uapi.VFIO_CHECK_EXTENSION, getattr(uapi, name))[0]
        else:
            cp = uapi.codec("iommu_ioas_change_process")
            out["IOMMU_IOAS_CHANGE_PROCESS"] = h.ioctl(
                c.fd, uapi.IOMMU_IOAS_CHANGE_PROCESS, cp.pack(cp.size, 0))[0]
            (_, _, devid, _), = c.devices
            req = uapi.build("iommu_hwpt_alloc", flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                             dev_id=devid, pt_id=c.ioas_id)
            out["IOMMU_HWPT_ALLOC(DIRTY_TRACKING)"] = h.ioctl(c.fd, uapi.IOMMU_HWPT_ALLOC, req)[0]
        feat = uapi.build("vfio_device_feature", argsz=16,
                          flags=uapi.VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION)
        out["VFIO_DEVICE_FEATURE(MIGRATION)"] = h.ioctl(dev, uapi.VFIO_DEVICE_FEATURE,
                                                        feat.ljust(16, b"\0"))[0]
        return out

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
            self.probes = self._probe(c, backend, dev)
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
    iommufd), the pinned memory charged where the check says:
    mm->locked_vm (VmLck) under type1, not VmLck under iommufd (user->locked_vm,
    and mm->pinned_vm: VmPin), and the capability probes behind its CPR, dirty
    tracking and device-migration verdicts answered alike (VFIO_UPDATE_VADDR,
    VFIO_UNMAP_ALL; IOMMU_IOAS_CHANGE_PROCESS EINVAL with VA areas, no dirty
    tracking on the emulated VT-d; edu has no VFIO migration: ENOTTY)."""
    need(backend)
    want = check_bar[side]
    rp = Replay(real, raw, edu_addr)
    assert rp.run(backend, want) == expected(want)
    probes = {k: v for k, v in want["probes"].items() if not k.endswith(" fd")}
    assert rp.probes == probes
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


# ----------------------------------------------------------------------- real QEMU CPR

# scripts/install-qemu.sh's binaries (vmm_model/qemu/launcher.py QEMU_BINARIES: the same
# variables and defaults; the guest sees the host's root)
QEMUS = {v: os.environ.get(f"VFIO_EMU_QEMU_{v.replace('.', '_')}",
                           f"/opt/qemu-{v}/bin/qemu-system-x86_64") for v in ("10.0", "11.1")}
TERMINAL = ("completed", "failed", "cancelled")


def _chan(kind: str, path: Path) -> dict:
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix",
                                           "path": str(path)}}


def qemu_argv(binary: str, backend: str, bdf: str, qmp: Path) -> list[str]:
    """The rig VM (VM_BAR with aux-ram-share=on) as a QEMU command line, stopped (-S)."""
    argv = [binary, "-S", "-nodefaults", "-display", "none", "-accel", "tcg",
            "-machine", "q35,memory-backend=ram0,aux-ram-share=on", "-m", "64M",
            "-object", "memory-backend-memfd,id=ram0,size=64M,share=on",
            "-qmp", f"unix:{qmp},server=on,wait=off"]
    if backend == "iommufd":
        return argv + ["-object", "iommufd,id=iommufd0",
                       "-device", f"vfio-pci,host={bdf},iommufd=iommufd0"]
    return argv + ["-device", f"vfio-pci,host={bdf}"]


class Qmp:
    """A QMP client on a unix socket (the capabilities handshake, one command at a time)."""

    def __init__(self, path: Path, proc: subprocess.Popen, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"QEMU exited {proc.returncode}")
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())                       # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args) -> dict:
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "return" in msg or "error" in msg:
                return msg

    def close(self) -> None:
        with contextlib.suppress(OSError):        # QEMU may have gone away
            self.file.close()
        self.sock.close()


def cpr_transfer(binary: str, backend: str, bdf: str, tmp: Path, timeout: float = 240,
                 incoming: str | None = None) -> dict:
    """Source QEMU, ``migrate-set-parameters mode=cpr-transfer``, ``query-migrate``
    (blocked-reasons), the destination QEMU with -incoming main + cpr, ``migrate``,
    then how both ended: {blocked, migrate, status, error, dst_rc, dst_status, dst_stderr}."""
    main, cpr = tmp / "main.sock", tmp / "cpr.sock"
    out: dict = {}
    procs = []
    with contextlib.ExitStack() as stack:
        def start(argv):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            procs.append(p)
            stack.callback(lambda: (p.poll() is None and p.kill(), p.wait()))
            return p
        src = start(qemu_argv(binary, backend, bdf, tmp / "src.qmp"))
        q = Qmp(tmp / "src.qmp", src, timeout)
        stack.callback(q.close)
        out["blocked_normal"] = q.cmd("query-migrate")["return"].get("blocked-reasons", [])
        out["set"] = q.cmd("migrate-set-parameters", mode="cpr-transfer")
        out["blocked"] = q.cmd("query-migrate")["return"].get("blocked-reasons", [])
        dst = start(qemu_argv(incoming or binary, backend, bdf, tmp / "dst.qmp") + [
            "-incoming", json.dumps(_chan("main", main)),
            "-incoming", json.dumps(_chan("cpr", cpr))])
        deadline = time.monotonic() + timeout
        while not cpr.exists() and dst.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        out["migrate"] = q.cmd("migrate", channels=[_chan("main", main), _chan("cpr", cpr)])
        info: dict = {}
        try:
            while time.monotonic() < deadline:
                info = q.cmd("query-migrate")["return"]
                if info.get("status") in TERMINAL:
                    break
                time.sleep(0.5)
        except (OSError, ValueError) as e:
            out["src_qmp"] = f"{type(e).__name__}: {e}"
        out["status"], out["error"] = info.get("status"), info.get("error-desc")
        if dst.poll() is None:
            with contextlib.suppress(Exception):
                d = Qmp(tmp / "dst.qmp", dst, 30)
                out["dst_status"] = d.cmd("query-status")["return"]["status"]
                d.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
        out["dst_rc"] = dst.wait()
        out["src_rc"] = src.wait()
        out["dst_stderr"] = dst.stderr.read().strip()
        out["src_stderr"] = src.stderr.read().strip()
    return out


def cpr_reboot(binary: str, bdf: str, tmp: Path, timeout: float = 240) -> dict:
    """One QEMU (type1), ``migrate-set-parameters mode=cpr-reboot``, ``migrate`` to a
    file: {blocked, status, error}."""
    out: dict = {}
    src = subprocess.Popen(qemu_argv(binary, "type1", bdf, tmp / "src.qmp"),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        q = Qmp(tmp / "src.qmp", src, timeout)
        q.cmd("migrate-set-parameters", mode="cpr-reboot")
        out["blocked"] = q.cmd("query-migrate")["return"].get("blocked-reasons", [])
        out["migrate"] = q.cmd("migrate", uri=f"file:{tmp / 'vm.state'}")
        deadline = time.monotonic() + timeout
        info: dict = {}
        while time.monotonic() < deadline:
            info = q.cmd("query-migrate")["return"]
            if info.get("status") in TERMINAL:
                break
            time.sleep(0.5)
        out["status"], out["error"] = info.get("status"), info.get("error-desc")
        q.close()
    finally:
        src.kill()
        src.wait()
        src.stderr.close()
    return out


VM_CPR = VM_BAR.replace("""x-bars = [{{index = 0, size = "1M", gpa = "0xfe000000"}}]\n""", "")
SIGSEGV = -11


def cpr_check(tmp_path: Path, version: str, backend: str, profile: str, bdf: str,
              mode: str) -> dict:
    """The check for the rig VM in ``mode`` between two QEMU ``version``s.  The BAR is
    left out of its scenario: the rig's kernels are built without CONFIG_PCI_P2PDMA,
    so vfio-pci exports no dma-buf (QEMU 11.1: "VFIO dma-buf not supported in
    kernel") and the BAR is mapped by VA, type1 maps it and iommufd refuses it
    (EFAULT, no IOAS area): nothing a CPR outcome depends on, and not what the 7.2
    profile (dma-buf from 6.19) says."""
    return migrate_check(tmp_path, "vm-cpr", VM_CPR.format(qemu=version, bdf=bdf,
                                                            machine="aux-ram-share = true"),
                         "--from", f"qemu={version},backend={backend},kernel={profile}",
                         "--to", f"qemu={version}", "--mode", mode)


@pytest.fixture(scope="module")
def normal_blockers(tmp_path_factory, profile, edu_addr) -> dict[str, list[str]]:
    """The check's normal-mode blockers of the rig VM per QEMU version (its
    ``blockers_by_version``)."""
    vm_file = tmp_path_factory.mktemp("mc") / "vm-normal.toml"
    vm_file.write_text(VM_CPR.format(qemu="11.1", bdf=edu_addr, machine="aux-ram-share = true"))
    cli = Path(sys.executable).with_name("vfio-emu")
    p = subprocess.run([str(cli), "migrate-check", str(vm_file), "--from",
                        f"backend=type1,kernel={profile}", "--mode", "normal", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1), p.stderr
    return {v["qemu"]: [b["message"] for b in v["blockers"]]
            for v in json.loads(p.stdout)["blockers_by_version"]}


def digits(text: str) -> str:
    """fd numbers differ between processes: compare messages with digits masked."""
    return re.sub(r"\d+", "N", text)


def installed(version: str) -> str:
    binary = QEMUS[version]
    if not os.path.exists(binary):
        pytest.skip(f"QEMU {version} is not installed ({binary}: scripts/install-qemu.sh)")
    if "map_file_requires_fmode_write" in FEATURES:
        pytest.skip("real QEMU CPR does not depend on the write-access patch: iommufd-7.2 runs it")
    return binary


@pytest.mark.parametrize("incoming", ["10.0", "11.1"])
@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_cpr_transfer_from_qemu_10_0(tmp_path, edu_addr, profile, backend, incoming,
                                     normal_blockers):
    """QEMU 10.0 has cpr-transfer but no VFIO CPR: query-migrate lists no blocker
    (VFIO blocks normal mode only), the migration starts and hands no device over.
    A new 10.0 opens the device the old one holds (the group: EBUSY; the cdev: bind
    EINVAL); a new 11.1 opens the group (EBUSY) or, for iommufd, finds no device in
    the CPR state and aborts.  It exits, the old QEMU reports the migration failed:
    the check's verdict (breaks, cpr-fails with the new QEMU's message)."""
    binary = installed("10.0")
    need(backend)
    real = cpr_transfer(binary, backend, edu_addr, tmp_path, incoming=installed(incoming))
    vm = migrate_check(tmp_path, "vm-cpr", VM_CPR.format(qemu="10.0", bdf=edu_addr,
                                                          machine="aux-ram-share = true"),
                       "--from", f"qemu=10.0,backend={backend},kernel={profile}",
                       "--to", f"qemu={incoming}", "--mode", "cpr-transfer")
    assert real["blocked"] == [b["message"] for b in vm["from"]["blockers"]] == []
    assert real["blocked_normal"] == normal_blockers["10.0"]
    (_, before, after), = find(vm, "cpr-fails")
    assert (vm["verdict"], before) == ("breaks", "migrate")
    assert (real["migrate"], real["status"]) == ({"return": {}}, "failed")
    assert real["dst_rc"] != 0 and digits(after) in digits(real["dst_stderr"])


@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_cpr_transfer_qemu_11_1(tmp_path, edu_addr, profile, backend, normal_blockers):
    """QEMU 11.1 takes VFIO devices through cpr-transfer (type1: VFIO_UPDATE_VADDR;
    iommufd: IOMMU_IOAS_CHANGE_PROCESS, which the 7.2 kernels have): no blocker,
    nothing that fails, verdict safe, and a need for KVM.  The rig's guest has no KVM
    (QEMU runs under TCG twice over): there the source QEMU dies with SIGSEGV once
    the migration starts (hw/vfio/cpr.c vfio_cpr_set_msi_virq() calls
    kvm_irqchip_*_irqfd_notifier_gsi() with no KVM state), which is that need."""
    binary = installed("11.1")
    need(backend)
    real = cpr_transfer(binary, backend, edu_addr, tmp_path)
    vm = cpr_check(tmp_path, "11.1", backend, profile, edu_addr, "cpr-transfer")
    assert real["blocked"] == [b["message"] for b in vm["from"]["blockers"]] == []
    assert (vm["verdict"], vm["findings"], vm["from"]["failures"]) == ("safe", [], [])
    assert real["blocked_normal"] == normal_blockers["11.1"]
    assert "VFIO dma-buf not supported in kernel" in real["src_stderr"]
    assert any(n.startswith("KVM (accel=kvm)") and "SIGSEGV" in n for n in vm["to"]["needs"])
    assert (real["migrate"], real["src_rc"]) == ({"return": {}}, SIGSEGV)


@pytest.mark.parametrize("version", list(QEMUS))
def test_cpr_reboot_needs_a_suspended_guest(tmp_path, edu_addr, profile, version):
    """cpr-reboot with a VFIO device (9.0+): no blocker; QEMU refuses it at setup
    unless the guest is suspended (vfio_cpr_reboot_notifier()), the need the check
    states with QEMU's own message.  The VM here is stopped (-S), not suspended."""
    binary = installed(version)
    need("type1")
    real = cpr_reboot(binary, edu_addr, tmp_path)
    vm = cpr_check(tmp_path, version, "type1", profile, edu_addr, "cpr-reboot")
    assert real["blocked"] == [b["message"] for b in vm["from"]["blockers"]] == []
    assert real["status"] == "failed" and real["error"]
    assert any(f'"{real["error"]}"' in n for n in vm["from"]["needs"]), (real, vm["from"]["needs"])
