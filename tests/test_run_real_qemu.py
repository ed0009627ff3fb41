"""``vfio-emu run``: real, unmodified QEMU binaries (Debian's 7.2, 10.0.x and 11.1.x)
against the simulated kernel through the LD_PRELOAD shim (backends/shim/).

Everything here is real except the kernel's VFIO/iommufd, which is the
simulated one: the QEMU binaries, their address spaces (/proc/PID/smaps), the
memfds they pass, the sysfs lookups they make (redirected to a tree the
server writes).  Two tests use a small Python process instead of QEMU for calls
QEMU never makes (a writable MAP_FILE of a read-only fd or of a non-fd; VA and
MAP_FILE of the same private memory), and say so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from backends import uapi
from backends.shim.build import build_shim
from backends.shim.server import ShimServer
from vmm_model.qemu.launcher import find_qemu
from vmm_model.run import compare_with_model, final_maps, run

BASE = ["-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "128M"]
TYPE1 = ["-device", "vfio-pci,host=0000:00:04.0"]
IOMMUFD = ["-object", "iommufd,id=i0", "-device", "vfio-pci,host=0000:00:04.0,iommufd=i0"]
BAR0 = 0xFEA00000                      # where SeaBIOS puts the edu-like BAR0 on q35


def qemu(label: str) -> str:
    path, why = find_qemu(label)
    if path is None:
        pytest.skip(why)
    return path


def names(res) -> list[str]:
    return [r.name for r in res.requests if r.op in ("ioctl", "open")]


def one(res, name: str, **fields):
    hits = [r for r in res.requests if r.name == name and
            all(r.fields.get(k) == v for k, v in fields.items())]
    assert hits, f"no {name} {fields} in {names(res)}"
    return hits[0]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_qemu10_type1_realizes_and_resets():
    fds = _fds()
    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", until="reset")
    assert (res.reached, res.status, res.killed, res.stderr) == ("reset", 0, None, "")
    assert names(res)[:7] == ["/dev/vfio/1", "VFIO_GROUP_GET_STATUS", "/dev/vfio/vfio",
                              "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION",
                              "VFIO_GROUP_SET_CONTAINER", "VFIO_SET_IOMMU"]
    assert one(res, "VFIO_SET_IOMMU").fields == {"value": uapi.VFIO_TYPE1v2_IOMMU}
    assert one(res, "VFIO_GROUP_GET_DEVICE_FD").fields == {"name": "0000:00:04.0"}
    assert one(res, "VFIO_GROUP_GET_DEVICE_FD").ret >= 0
    # vfio_region_mmap() of BAR0 (1 MiB), a VM_PFNMAP VMA in the simulated kernel
    mm = [r for r in res.requests if r.op == "mmap"]
    assert [(r.fields["length"], r.fields["offset"], r.ret) for r in mm] == [(1 << 20, 0, 0)]
    # machine creation resets the device, system_reset does it again
    assert [r.ret for r in res.requests if r.name == "VFIO_DEVICE_RESET"] == [0, 0]
    live = final_maps(res.events())
    ram = live[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["flags"], ram["ret"]) == ("VFIO_IOMMU_MAP_DMA", "READ|WRITE", 0)
    assert ram["backing"]["kind"] == "anonymous"
    bios = live[(0xFFFC0000, 0x40000)]
    assert (bios["flags"], bios["readonly"], bios["ret"]) == ("READ", True, 0)
    assert res.tmpdir and not os.path.exists(res.tmpdir) and _fds() == fds        # nothing left behind


@pytest.mark.parametrize("kernel, argsz", [("6.1", 0x74), ("7.2", 0x78)])
def test_qemu72_type1_info_caps_per_kernel(kernel, argsz):
    """VFIO_IOMMU_GET_INFO's capability chain is packed before 6.6 (116 bytes)
    and 8-byte aligned from 6.6 (120): QEMU 7.2 sees the kernel's argsz."""
    res = run(qemu("7.2"), BASE + TYPE1, kernel=kernel)
    assert (res.reached, res.status) == ("realize", 0)
    first = one(res, "VFIO_IOMMU_GET_INFO")
    assert first.ret == 0 and first.out["argsz"] == argsz


@pytest.mark.parametrize("kernel", ["6.6", "7.2"])
def test_qemu10_iommufd_realizes(kernel):
    """From 6.6 (VFIO cdev, IOMMU_HWPT_ALLOC, IOMMU_GET_HW_INFO) QEMU 10.0's
    iommufd backend realizes; the requests are the same on 6.6 and 7.2."""
    res = run(qemu("10.0"), BASE + IOMMUFD, kernel=kernel)
    assert (res.reached, res.status, res.stderr) == ("realize", 0, "")
    assert names(res)[:9] == ["/dev/vfio/devices/vfio0", "/dev/iommu", "VFIO_DEVICE_BIND_IOMMUFD",
                              "IOMMU_GET_HW_INFO", "IOMMU_IOAS_ALLOC", "IOMMU_HWPT_ALLOC",
                              "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_IOAS_IOVA_RANGES",
                              "IOMMU_IOAS_IOVA_RANGES"]
    ranges = [r for r in res.requests if r.name == "IOMMU_IOAS_IOVA_RANGES"]
    # the first call asks the count (-EMSGSIZE, num_iovas written back), then the list;
    # the VT-d MSI window splits the aperture in two
    assert [r.ret for r in ranges] == [-90, 0] and ranges[1].fields["num_iovas"] == 2
    ram = final_maps(res.events())[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["readonly"], ram["ret"]) == ("IOMMU_IOAS_MAP", False, 0)


def test_iommufd_on_a_kernel_without_it_is_qemus_own_error():
    """6.1 has neither iommufd nor VFIO cdevs: QEMU 10.0 fails looking for
    vfio-dev/ in sysfs and says so itself; the model agrees (no map differs)."""
    args = BASE + IOMMUFD
    res = run(qemu("10.0"), args, kernel="6.1")
    assert (res.reached, res.status) == ("", 1)
    assert [r.op for r in res.requests if r.op != "sysfs"] == []
    lookup = [(r.fields["call"], r.name, r.ret) for r in res.requests][-1]
    assert lookup == ("opendir", "/sys/bus/pci/devices/0000:00:04.0/vfio-dev", -2)
    assert res.stderr.startswith("qemu-system-x86_64: -device vfio-pci,host=0000:00:04.0,"
                                 "iommufd=i0: vfio 0000:00:04.0: vfio /sys/bus/pci/devices/"
                                 "0000:00:04.0/vfio-dev: couldn't open directory")
    assert res.stderr.rstrip().endswith("No such file or directory")
    assert compare_with_model(res, args) == []


@pytest.mark.parametrize("label, kernel, backend, ioctl, ret, kind, dma_buf", [
    ("10.0", "7.2", IOMMUFD, "IOMMU_IOAS_MAP", -14, "pfnmap", []),
    ("10.0", "7.2", TYPE1, "VFIO_IOMMU_MAP_DMA", 0, "pfnmap", []),
    ("11.1", "6.18", IOMMUFD, "IOMMU_IOAS_MAP", -14, "pfnmap", [-25]),
    ("11.1", "7.2", IOMMUFD, "IOMMU_IOAS_MAP_FILE", 0, "dmabuf", ["fd"])])
def test_pfnmap_bar_dma_map(label, kernel, backend, ioctl, ret, kind, dma_buf):
    """Once SeaBIOS enables BAR0, QEMU maps its mmap (a ram_device region):
    iommufd cannot pin VM_PFNMAP (-EFAULT, QEMU warns and goes on), type1
    follows the PFNs (0).  QEMU 11.1 first asks for a dma-buf of each
    mmap-able BAR (hw/vfio/region.c vfio_region_create_dma_buf(), 11.0+): a
    kernel before 6.19 has no VFIO_DEVICE_FEATURE_DMA_BUF (-ENOTTY), so 11.1
    warns and maps the BAR by VA like 10.0; from 6.19 it gets a dma-buf fd and
    maps the BAR with IOMMU_IOAS_MAP_FILE of it (iommufd's IOPT_ADDRESS_DMABUF),
    which succeeds.  The guest runs until that map happened (at most 30 s)."""
    import time

    def bar_mapped(server, mon):
        mon.execute("cont")
        end = time.monotonic() + 30
        while time.monotonic() < end and not any(
                r.name == ioctl and r.fields.get("iova") == BAR0 for r in list(server.log)):
            time.sleep(0.05)

    res = run(qemu(label), BASE + backend, kernel=kernel, on_ready=bar_mapped, timeout=60)
    assert res.status == 0 and res.reached == "realize"
    feature = [r.ret for r in res.requests if r.name == "VFIO_DEVICE_FEATURE" and
               r.fields.get("flags") == uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF]
    assert [("fd" if r > 0 else r) for r in feature] == dma_buf
    assert ("warning: VFIO dma-buf not supported in kernel, using mmap fallback, P2P DMA will "
            "not work" in res.stderr) == (dma_buf == [-25])
    bar = [r for r in res.requests if r.name == ioctl and r.fields.get("iova") == BAR0]
    assert bar, "SeaBIOS did not enable BAR0 within 30 s"
    assert bar[0].ret == ret and bar[0].backing["kind"] == kind
    # the model, told where the firmware put the BAR (x-bars), predicts the same map
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.report import event_json
    from vmm_model.scenario import loads_toml
    sc = loads_toml('[memory]\nsize = "128M"\n[[device]]\ndriver = "vfio-pci"\n'
                    'host = "0000:00:04.0"\nx-bars = [{index = 0, size = "1M", gpa = "0xfea00000"}]\n',
                    "bar0", "bar0")
    plan = make_plan(sc, get_qemu(label), "iommufd" if backend == IOMMUFD else "type1", kernel=kernel)
    assert [(e["phase"], e["ioctl"], e["ret"]) for e in map(event_json, plan.events)
            if e["kind"] == "map" and e["iova"] == BAR0] == [("firmware", ioctl, ret)]
    if kind == "dmabuf":               # the whole BAR: one range, offset 0 of the dma-buf
        assert (bar[0].fields["start"], bar[0].fields["length"], bar[0].backing["size"]) == (
            0, 1 << 20, 1 << 20)
        assert res.stderr == ""
    if ret:
        assert "warning: IOMMU_IOAS_MAP failed: Bad address, PCI BAR?" in res.stderr
        assert (f"vfio_container_dma_map(" in res.stderr and
                f", 0x{BAR0:x}, 0x100000, " in res.stderr and "= -14 (Bad address)" in res.stderr)


@pytest.mark.parametrize("share, shared", [("on", True), ("off", False)])
def test_memfd_share_on_off(share, shared):
    """QEMU 10.0 maps guest RAM by VA on both settings; the simulated kernel
    sees QEMU's real memfd VMA (shared or private) and pins it.  The model
    agrees on what ends up mapped."""
    args = BASE + ["-object", f"memory-backend-memfd,id=m0,size=128M,share={share}",
                   "-numa", "node,memdev=m0"] + IOMMUFD
    res = run(qemu("10.0"), args, kernel="7.2")
    assert res.status == 0
    ram = final_maps(res.events())[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["ret"]) == ("IOMMU_IOAS_MAP", 0)
    b = ram["backing"]
    assert (b["kind"], b["shared"]) == ("shmem", shared)
    assert b["name"].startswith("/memfd:memory-backend-memfd")
    assert compare_with_model(res, args) == []


def test_crashed_qemu_is_reported_and_nothing_left():
    fds = _fds()
    pids = []

    def crash(proc):
        pids.append(proc.pid)
        threading.Timer(1.0, lambda: os.kill(proc.pid, signal.SIGSEGV)).start()

    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", until=30.0, on_start=crash)
    assert res.status == -signal.SIGSEGV and res.killed is None
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert res.tmpdir and not os.path.exists(res.tmpdir) and _fds() == fds


def test_hung_qemu_is_killed_and_nothing_left():
    """A QEMU that never answers (stopped before its QMP socket) is killed."""
    fds = _fds()
    pids = []

    def hang(proc):
        pids.append(proc.pid)
        os.kill(proc.pid, signal.SIGSTOP)

    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", timeout=1.0, on_start=hang)
    assert res.killed == "no QMP socket within 1s" and res.status == -signal.SIGKILL
    assert res.reached == ""
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert res.tmpdir and not os.path.exists(res.tmpdir) and _fds() == fds


def test_cli_run_json_text_and_bad_input(capsys):
    from vmm_model.cli import main
    q = qemu("10.0")
    out = subprocess.run([sys.executable, "-m", "vmm_model.cli", "run", "--json", "--",
                          q, *BASE, *TYPE1], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    plan = doc["plans"][0]
    assert (doc["schema_version"], plan["backend"], plan["kernel"], plan["exit_status"]) == \
        (1, "type1", "7.2", 0)
    assert {e["kind"] for e in plan["events"]} == {"map", "unmap"}
    capsys.readouterr()
    assert main(["plan", "--against-binary", q, "--", *BASE, *TYPE1]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == "== run: qemu-system-x86_64 (QEMU 10.0.2) · backend type1 · simulated kernel 7.2"
    assert "   reset    [0x100000, 0x8000000)      VFIO_IOMMU_MAP_DMA    vaddr=" in "\n".join(text)
    assert text[-3:] == ["   QEMU stderr: (empty)", "   QEMU reached realize; exit status 0",
                         "   model and real QEMU agree (outcome; what ends up mapped: range, "
                         "ioctl, readonly, result; or the first refused map)"]
    assert main(["run", "--"]) == 2
    assert main(["run", "--until", "soon", "--", q]) == 2
    assert main(["run", "--timeout", "0", "--", q]) == 2
    assert main(["run", "--kernel", "9.9", "--", q]) == 2
    assert main(["run", "--", "/nonexistent/qemu-system-x86_64"]) == 2


# ---- the shim with a process other than QEMU --------------------------------------

CHILD = r"""
import fcntl, os, struct, sys
from backends import uapi
fd = os.open("/dev/iommu", os.O_RDWR)
buf = bytearray(struct.pack("<III", 12, 0, 0))
fcntl.ioctl(fd, uapi.IOMMU_IOAS_ALLOC, buf)
ioas = struct.unpack_from("<I", buf, 8)[0]
m = os.memfd_create("guest-ram", os.MFD_ALLOW_SEALING)
os.ftruncate(m, 2 << 20)
fcntl.fcntl(m, uapi.F_ADD_SEALS, uapi.F_SEAL_GROW | uapi.F_SEAL_SHRINK)
use = os.open(f"/proc/self/fd/{m}", os.O_RDONLY) if sys.argv[1] == "ro" else m
use = 999 if sys.argv[1] == "badfd" else use
flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
req = bytearray(struct.pack("<IIIiQQQ", 40, flags, ioas, use, 0, 2 << 20, 1 << 30))
try:
    fcntl.ioctl(fd, uapi.IOMMU_IOAS_MAP_FILE, req)
    print(0, struct.unpack_from("<i", req, 12)[0] == use)
except OSError as e:
    print(-e.errno, True)
"""


@pytest.mark.parametrize("kernel, mode, ret", [
    ("7.2", "rw", 0),
    ("7.2", "ro", 0),            # the bug: a writable map of an O_RDONLY fd is accepted
    ("7.2+fix", "ro", -1),       # iopt_alloc_file_pages() with the fix: -EPERM
    ("6.12", "rw", -25),         # no IOMMU_IOAS_MAP_FILE before 6.13: -ENOTTY
    ("7.2", "badfd", -9),        # not an open fd: fget() fails, -EBADF
])
def test_map_file_passes_the_real_fd(tmp_path, kernel, mode, ret):
    """A Python process (not QEMU: QEMU never passes a read-only fd or a non-fd
    for a writable MAP_FILE; QEMU 11.1's own MAP_FILE calls are tested below)
    under the shim maps a real memfd by file; the server receives the fd by
    SCM_RIGHTS and sees what it really is; the fd is closed with the server."""
    fds = _fds()
    server = ShimServer(kernel, {})
    try:
        sock = str(tmp_path / "vfio.sock")
        server.serve(sock)
        env = dict(os.environ, LD_PRELOAD=build_shim(), VFIO_EMU_SOCK=sock,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        server.close()
    assert _fds() == fds
    assert out.returncode == 0, out.stderr
    got, fd_restored = out.stdout.split()
    assert (int(got), fd_restored) == (ret, "True")
    mf = [r for r in server.log if r.name == "IOMMU_IOAS_MAP_FILE"]
    assert len(mf) == 1 and mf[0].ret == ret
    if ret not in (-25, -9):
        b = mf[0].backing
        assert (b["kind"], b["size"], b["name"]) == ("shmem", 2 << 20, "/memfd:guest-ram (deleted)")
        assert b["seals"] == uapi.F_SEAL_GROW | uapi.F_SEAL_SHRINK
        assert b["f_flags"] & os.O_ACCMODE == (os.O_RDONLY if mode == "ro" else os.O_RDWR)


def test_shim_leaves_everything_else_alone(tmp_path):
    """Without a server, VFIO opens fail (EIO) instead of reaching the host's
    nodes; redirected sysfs paths read the server's tree; other files, stat
    and ioctls are the real kernel's."""
    root = tmp_path / "root"
    dev = root / "sys/devices/pci0000:00/0000:00:04.0"
    dev.mkdir(parents=True)
    os.symlink("../../../kernel/iommu_groups/7", dev / "iommu_group")
    child = r"""
import errno, fcntl, os, struct, termios
try:
    os.open("/dev/vfio/vfio", os.O_RDWR); print("opened")
except OSError as e:
    print(errno.errorcode[e.errno])
print(os.readlink("/sys/devices/pci0000:00/0000:00:04.0/iommu_group"))
print(os.path.realpath("/sys/devices/pci0000:00/0000:00:04.0"))
print(open(os.environ["PLAIN"]).read())
r, w = os.pipe(); os.write(w, b"abc")
print(struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))[0])
"""
    (tmp_path / "plain.txt").write_text("plain")
    env = dict(os.environ, LD_PRELOAD=build_shim(), VFIO_EMU_SOCK=str(tmp_path / "none.sock"),
               PLAIN=str(tmp_path / "plain.txt"),
               VFIO_EMU_ROOT=str(root), VFIO_EMU_REDIRECT="/sys/devices/pci0000:00/0000:00:04.0")
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["EIO", "../../../kernel/iommu_groups/7",
                                          "/sys/devices/pci0000:00/0000:00:04.0", "plain", "3"]


@pytest.mark.parametrize("backend", [TYPE1, IOMMUFD], ids=["type1", "iommufd"])
def test_device_dma_reaches_qemus_guest_ram(backend):
    """The simulated device writes guest RAM through the simulated IOMMU into
    QEMU's real memory (QEMU's own 'xp' sees it), reads it back, and faults
    where the IOMMU says no: the read-only BIOS, an unmapped IOVA."""
    got = {}

    def ready(server, mon):
        bdf = "0000:00:04.0"
        got["write"] = server.dma(bdf, 0x100000, data=b"vfio-emu")
        got["read"] = server.dma(bdf, 0x100000, 8)
        got["xp"] = mon.hmp("xp /8bx 0x100000")
        got["rom"] = server.dma(bdf, 0xFFFC0000, data=b"x")
        got["hole"] = server.dma(bdf, 0x9000000, 4)
        got["faults"] = list(server.devices[0].faults)

    res = run(qemu("10.0"), BASE + backend, kernel="7.2", on_ready=ready)
    assert res.status == 0
    assert got["write"] == (8, b"") and got["read"] == (8, b"vfio-emu")
    assert "0x76 0x66 0x69 0x6f 0x2d 0x65 0x6d 0x75" in got["xp"]
    assert got["rom"] == (-14, b"") and got["hole"] == (-14, b"")
    assert got["faults"] == [(0xFFFC0000, "write", "no permission"),
                             (0x9000000, "read", "not mapped")]
    assert [(r.name, r.ret) for r in res.requests if r.op == "dma"] == [
        ("0000:00:04.0 write", 8), ("0000:00:04.0 read", 8), ("0000:00:04.0 write", -14),
        ("0000:00:04.0 read", -14)]


NIC = """
vendor = 0x8086
device = 0x10d3
class_code = 0x020000
rom = "256K"
msix_vectors = 5
msix_bar = 3
msix_pba_offset = 0x2000
pcie = true
[bars.0]
size = "128K"
[bars.2]
size = 32
io = true
[bars.3]
size = "16K"
mem64 = true
prefetch = true
sparse = [[0x2000, 0x2000]]
"""


def test_configured_shape_msix_sparse_rom(tmp_path):
    """A NIC-like shape from TOML: QEMU 10.0 mmaps only the sparse area of the
    MSI-X BAR, asks the PCIe-only ERR irq, sizes the ROM through config space."""
    from vmm_model.run import load_shape
    (tmp_path / "nic.toml").write_text(NIC)
    shape = load_shape(str(tmp_path / "nic.toml"))
    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", devices={"0000:00:04.0": shape})
    assert (res.reached, res.status, res.stderr) == ("realize", 0, "")
    mm = sorted((r.fields["offset"], r.fields["length"]) for r in res.requests if r.op == "mmap")
    assert mm == [(0, 128 << 10), ((3 << 40) + 0x2000, 0x2000)]
    irq = {r.fields["index"]: r.ret for r in res.requests if r.name == "VFIO_DEVICE_GET_IRQ_INFO"}
    assert irq[3] == 0 and irq[2] == 0                 # ERR (PCIe) and MSI-X
    cfg = one(res, "VFIO_DEVICE_GET_REGION_INFO", index=7)
    assert cfg.out["size"] == 0x1000
    rom = [r for r in res.requests if r.op == "pwrite" and r.name == "region 7 +0x30"]
    assert rom and rom[0].fields["data"] == "00f8ffff"    # vfio_pci_size_rom() sizing


@pytest.mark.parametrize("text, field", [
    ('rom = "3K"', "rom"),
    ("[bars.0]\nsize = 1000", "bars.0.size"),
    ("[bars.0]\nsize = 4096\nmem64 = true\n[bars.1]\nsize = 4096", "bars"),
    ("msix_vectors = 64\n[bars.0]\nsize = 256", "msix_bar"),
    ("colour = 1", "colour"),
    ("vendor = [", "-"),
])
def test_bad_shape_is_one_line_exit_2(tmp_path, capsys, text, field):
    from vmm_model.cli import main
    p = tmp_path / "s.toml"
    p.write_text(text)
    assert main(["run", "--shape", str(p), "--", qemu("10.0")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vfio-emu: error: ") and err.count("\n") == 1 and str(p) in err
    if field != "-":
        assert f"({p} [{field}])" in err


# ---- the recorded real-QEMU configurations (fixtures/qmp), each with a vfio-pci device ----

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "qmp")


def fixture_args(config: str, d) -> list[str]:
    with open(os.path.join(FIXTURES, f"qemu-10.0-{config}.json")) as f:
        argv = json.load(f)["argv"]
    with open(os.path.join(d, "ro.img"), "wb") as f:
        f.truncate(32 << 20)
    return [a.replace("{d}", str(d)) for a in argv if a != "-qmp"]


@pytest.mark.parametrize("config, label, backend", [
    ("default-m", "10.0", IOMMUFD), ("pc-dimm", "10.0", TYPE1), ("readonly-file", "10.0", IOMMUFD),
    ("memfd-share-on-seal-on", "7.2", TYPE1), ("ram-share-on", "10.0", IOMMUFD),
    ("file-share-off", "7.2", TYPE1)])
def test_fixture_configs_realize_and_the_model_agrees(tmp_path, config, label, backend):
    args = fixture_args(config, tmp_path) + backend
    res = run(qemu(label), args, kernel="7.2")
    assert (res.reached, res.status, res.stderr) == ("realize", 0, "")
    live = final_maps(res.events())
    assert live and all(e["ret"] == 0 for e in live.values())
    if config == "readonly-file":                 # the read-only DIMM: READABLE only
        dimm = live[(0x100000000, 32 << 20)]
        assert (dimm["readonly"], dimm["flags"]) == (True, "FIXED_IOVA|READABLE")
    if config == "pc-dimm":
        assert live[(0x100000000, 64 << 20)]["backing"]["kind"] == "shmem"
    assert compare_with_model(res, args) == []


@pytest.mark.parametrize("label, backend, ioctl, message", [
    ("7.2", TYPE1, "VFIO_IOMMU_MAP_DMA", "VFIO_MAP_DMA failed: Bad address"),
    ("10.0", IOMMUFD, "IOMMU_IOAS_MAP", "warning: IOMMU_IOAS_MAP failed: Bad address, PCI BAR?")])
def test_shared_file_on_disk_fails_realize(tmp_path, label, backend, ioctl, message):
    """memory-backend-file,share=on on a disk file system: a long-term writable
    pin of a shared file mapping is refused (check_vma_flags() ->
    writable_file_mapping_allowed(): -EFAULT); QEMU's realize fails with its
    own words; the model predicts a failure too."""
    args = fixture_args("file-share-on", tmp_path) + backend
    res = run(qemu(label), args, kernel="7.2")
    assert (res.reached, res.status) == ("", 1)
    first = next(e for e in res.events() if e["ret"])
    assert (first["ioctl"], first["iova"], first["ret"]) == (ioctl, 0, -14)
    assert (first["backing"]["kind"], first["backing"]["shared"]) == ("ext4", True)
    assert message in res.stderr
    assert compare_with_model(res, args) == []


def test_run_events_have_the_plan_event_keys():
    """run's events carry every key of plan's (vmm_model/report.py event_json),
    so the two documents diff field by field."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.report import event_json
    from vmm_model.scenario import from_qemu_args
    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2")
    plan = make_plan(from_qemu_args(BASE + TYPE1), get_qemu("10.0"), "type1", kernel="7.2")
    model_keys = set(event_json(plan.events[0]))
    assert all(model_keys <= set(e) for e in res.events())
    # the phases line up too: QEMU maps RAM whole at realize, re-maps it PAM-split at reset
    assert [(e["phase"], e["kind"], e["iova"]) for e in res.events()] == [
        (e.phase, e.kind, e.iova) for e in plan.events if e.kind in ("map", "unmap")]


COW_CHILD = r"""
import ctypes, fcntl, mmap, os, struct, sys
from backends import uapi
RW = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
ictx = os.open("/dev/iommu", os.O_RDWR)
buf = bytearray(struct.pack("<III", 12, 0, 0))
fcntl.ioctl(ictx, uapi.IOMMU_IOAS_ALLOC, buf)
ioas = struct.unpack_from("<I", buf, 8)[0]
dev = os.open("/dev/vfio/devices/vfio0", os.O_RDWR)
bind = bytearray(struct.pack("<IIiI", 16, 0, ictx, 0))
fcntl.ioctl(dev, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind)
fcntl.ioctl(dev, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, bytearray(struct.pack("<III", 12, 0, ioas)))
ram = os.memfd_create("guest-ram")                     # guest RAM, share=off
os.write(ram, b"FILE" * 4096)
m = mmap.mmap(ram, 16384, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:5] = b"GUEST"                                      # the guest writes: a private COW copy
va = ctypes.addressof(ctypes.c_char.from_buffer(m))
fcntl.ioctl(ictx, uapi.IOMMU_IOAS_MAP, bytearray(struct.pack("<IIIIQQQ", 40, RW, ioas, 0, va, 16384, 1 << 30)))
fcntl.ioctl(ictx, uapi.IOMMU_IOAS_MAP_FILE, bytearray(struct.pack("<IIIiQQQ", 40, RW, ioas, ram, 0, 16384, 2 << 30)))
print("ready", flush=True)
sys.stdin.readline()
print(bytes(m[0:5]).decode(), os.pread(ram, 5, 0).decode(), flush=True)
"""


def test_cow_divergence_of_private_ram_with_real_pages(tmp_path):
    """The COW divergence of private fd-backed RAM, with a real process (QEMU
    10.0 maps by VA only, 11.1 maps private RAM by VA, so no QEMU maps it by
    file; docs/policies.md): private memfd RAM the guest wrote.  Through the VA map the device
    reads the guest's write (the pinned COW copy); through MAP_FILE it reads
    the file.  A device write through each lands in the process's copy and in
    the file respectively."""
    from backends.shim.pci import PciShape
    server = ShimServer("7.2", {"0000:00:04.0": PciShape()})
    sock = str(tmp_path / "vfio.sock")
    server.serve(sock)
    env = dict(os.environ, LD_PRELOAD=build_shim(), VFIO_EMU_SOCK=sock,
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", COW_CHILD], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        bdf = "0000:00:04.0"
        assert server.dma(bdf, 1 << 30, 5) == (5, b"GUEST")
        assert server.dma(bdf, 2 << 30, 5) == (5, b"FILEF")
        assert server.dma(bdf, (1 << 30) + 1, data=b"va") == (2, b"")
        assert server.dma(bdf, (2 << 30) + 1, data=b"fd") == (2, b"")
        out, err = child.communicate("go\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        server.close()
    assert child.returncode == 0, err
    assert out.split() == ["GvaST", "FfdEF"]


def test_device_without_reset_gets_qemus_warning():
    """reset_works=False: no VFIO_DEVICE_FLAGS_RESET; QEMU tries a hot reset
    (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: -ENODEV, alone on its bus) and warns
    at every reset, here at machine creation and at system_reset."""
    from backends.shim.pci import PciShape
    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", until="reset",
              devices={"0000:00:04.0": PciShape(reset_works=False)})
    assert (res.reached, res.status) == ("reset", 0)
    assert one(res, "VFIO_DEVICE_GET_INFO").out["flags"] == uapi.VFIO_DEVICE_FLAGS_PCI
    assert not [r for r in res.requests if r.name == "VFIO_DEVICE_RESET"]
    hot = {r.ret for r in res.requests if r.name == "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"}
    assert hot == {-19}
    warn = "qemu-system-x86_64: vfio: Cannot reset device 0000:00:04.0, no available reset mechanism."
    lines = res.stderr.splitlines()
    assert len(lines) >= 2 and set(lines) == {warn}


def test_qemu72_has_no_iommufd_and_the_model_agrees():
    args = BASE + IOMMUFD
    res = run(qemu("7.2"), args, kernel="7.2")
    assert (res.reached, res.status, [r for r in res.requests if r.op != "sysfs"]) == ("", 1, [])
    assert res.stderr == ("qemu-system-x86_64: -object iommufd,id=i0: Parameter 'qom-type' "
                          "does not accept value 'iommufd'\n")
    assert compare_with_model(res, args) == []


def test_other_devices_and_files_are_the_real_kernels(tmp_path):
    """QEMU's emulated edu, a virtio-blk disk on a real file and the vfio-pci
    device side by side: only the VFIO paths reach the simulated kernel."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (1 << 20))
    res = run(qemu("10.0"), BASE + ["-device", "edu", "-drive", f"if=none,id=d0,file={disk},"
                                    "format=raw", "-device", "virtio-blk-pci,drive=d0"] + TYPE1,
              kernel="7.2")
    assert (res.reached, res.status, res.stderr) == ("realize", 0, "")
    opened = sorted({r.name for r in res.requests if r.op == "open"})
    assert opened == ["/dev/vfio/1", "/dev/vfio/vfio"]
    assert {r.name for r in res.requests if r.op == "sysfs"} <= {
        "/sys/bus/pci/devices/0000:00:04.0", "/sys/bus/pci/devices/0000:00:04.0/iommu_group",
        "/sys/bus/pci/devices/0000:00:04.0/subsystem"}
    assert [r.name for r in res.requests if r.name == "VFIO_GROUP_GET_DEVICE_FD"] == \
        ["VFIO_GROUP_GET_DEVICE_FD"]


def test_prochost_sees_this_process(tmp_path):
    """The adapter on a real process (this one): VMAs from /proc/PID/smaps with
    the file behind each, and a passed fd examined as the kernel sees it."""
    import ctypes
    import fcntl
    import mmap
    from backends.shim.prochost import ProcHost
    from backends.simulated.mmap import VM_MAYWRITE, VM_SHARED

    def addr(m):
        return ctypes.addressof(ctypes.c_char.from_buffer(m))

    mfd = os.memfd_create("probe", os.MFD_ALLOW_SEALING)
    os.ftruncate(mfd, 1 << 20)
    shared = mmap.mmap(mfd, 1 << 20, mmap.MAP_SHARED)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    ffd = os.open(path, os.O_RDWR)
    private = mmap.mmap(ffd, 8192, mmap.MAP_PRIVATE)
    anon = mmap.mmap(-1, 1 << 16, mmap.MAP_PRIVATE)
    host = ProcHost("7.2")
    try:
        host.attach(os.getpid())
        host.sync_maps()
        v = host.mm.find_vma(addr(shared))
        assert (v.file.inode.kind, v.end - v.start, bool(v.vm_flags & VM_SHARED)) == \
            ("shmem", 1 << 20, True)
        assert v.file.inode.name == "/memfd:probe (deleted)" and v.vm_flags & VM_MAYWRITE
        assert v.file.inode.mapping.i_mmap_writable == 1      # the shared writable VMA
        p = host.mm.find_vma(addr(private))
        assert (p.file.inode.kind, bool(p.vm_flags & VM_SHARED), p.file.inode.name) == \
            ("ext4", False, str(path))
        assert host.mm.find_vma(addr(anon)).file is None
        seals = uapi.F_SEAL_GROW | uapi.F_SEAL_SHRINK
        fcntl.fcntl(mfd, uapi.F_ADD_SEALS, seals)
        f = host.file_of(host.install_real_fd(os.dup(mfd)))
        assert f.inode is v.file.inode                 # one inode for the fd and the VMA
        assert (f.inode.seals, f.inode.i_size, f.f_flags & os.O_ACCMODE) == (seals, 1 << 20, os.O_RDWR)
        anon[0:4] = b"real"
        assert host.read_mem(addr(anon), 4) == (4, b"real")
        assert host.write_mem(addr(anon), b"sim!") == 4 and anon[0:4] == b"sim!"
    finally:
        host.close_all()
        for m in (shared, private, anon):
            m.close()
        os.close(mfd)
        os.close(ffd)


def test_qemu_hung_after_realize_is_killed():
    """QEMU stops answering after realize (stopped): the quit times out, QEMU is
    killed and the report keeps what it did before."""
    fds = _fds()
    res = run(qemu("10.0"), BASE + TYPE1, kernel="7.2", timeout=6.0,
              on_ready=lambda server, mon: os.kill(server.pids[0], signal.SIGSTOP))
    assert res.reached == "realize" and res.status == -signal.SIGKILL
    assert res.killed.startswith("QEMU did not answer quit: ")
    assert one(res, "VFIO_GROUP_GET_DEVICE_FD").ret >= 0
    assert not os.path.exists(res.tmpdir) and _fds() == fds


DUP_CHILD = r"""
import fcntl, os, struct
from backends import uapi

def alloc(fd):
    buf = bytearray(struct.pack("<III", 12, 0, 0))
    fcntl.ioctl(fd, uapi.IOMMU_IOAS_ALLOC, buf)
    return struct.unpack_from("<I", buf, 8)[0]

fd = os.open("/dev/iommu", os.O_RDWR)
a = alloc(fd)
d = os.dup(fd)                  # fcntl(F_DUPFD_CLOEXEC)
b = alloc(d)
os.close(fd)
c = alloc(d)                    # the dup keeps the iommufd context alive
os.dup2(d, 50)
e = alloc(50)
print(a, b, c, e)
"""


def test_dup_of_a_vfio_fd_is_the_same_open_file(tmp_path):
    """A dup of a VFIO/iommufd fd (not QEMU: a process under the shim) is a dup
    of the simulated fd: one iommufd context, alive until the last close."""
    server = ShimServer("7.2", {})
    try:
        sock = str(tmp_path / "vfio.sock")
        server.serve(sock)
        env = dict(os.environ, LD_PRELOAD=build_shim(), VFIO_EMU_SOCK=sock,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run([sys.executable, "-c", DUP_CHILD], env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2", "3", "4"]       # object ids of one context
    assert [r.op for r in server.log if r.op in ("dup", "close")][:2] == ["dup", "close"]


def _ev(kind, iova, size, ret=0, ioctl="VFIO_IOMMU_MAP_DMA", flags=0):
    return {"kind": kind, "iova": iova, "size": size, "ret": ret, "ioctl": ioctl,
            "fields": {"flags": flags}, "readonly": False}


def test_final_maps_replays_maps_and_unmaps():
    live = final_maps([
        _ev("map", 0, 0x8000000), _ev("map", 0xFFFC0000, 0x40000),
        _ev("unmap", 0, 0x8000000),                          # removes what lies inside
        _ev("map", 0, 0xC0000), _ev("map", 0x100000, 0x7F00000),
        _ev("unmap", 0x100000, 0x1000, ret=-22),             # a refused unmap removes nothing
        _ev("map", 0x9000000, 0x1000, ret=-14)])             # a refused map stays visible
    assert sorted(live) == [(0, 0xC0000), (0x100000, 0x7F00000), (0x9000000, 0x1000),
                            (0xFFFC0000, 0x40000)]
    assert live[(0x9000000, 0x1000)]["ret"] == -14
    everything = final_maps([_ev("map", 0, 0x1000), _ev("map", 1 << 32, 0x1000),
                             _ev("unmap", 0, 0, ioctl="VFIO_IOMMU_UNMAP_DMA",
                                 flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL)])
    assert everything == {}
    ioas_all = final_maps([_ev("map", 1 << 32, 0x1000, ioctl="IOMMU_IOAS_MAP"),
                           _ev("unmap", 0, (1 << 64) - 1, ioctl="IOMMU_IOAS_UNMAP")])
    assert ioas_all == {}


def test_two_devices_share_the_container_or_the_hwpt():
    """Two vfio-pci functions, each its own group: type1 puts the second group in
    the first container (one /dev/vfio/vfio); iommufd attaches the second device
    to the HWPT QEMU allocated for the first."""
    two = ["-device", "vfio-pci,host=0000:00:04.0", "-device", "vfio-pci,host=0000:00:05.0"]
    res = run(qemu("10.0"), BASE + two, kernel="7.2")
    assert (res.reached, res.status) == ("realize", 0)
    assert [r.name for r in res.requests if r.op == "open"] == \
        ["/dev/vfio/1", "/dev/vfio/vfio", "/dev/vfio/2"]
    assert [r.ret for r in res.requests if r.name == "VFIO_GROUP_SET_CONTAINER"] == [0, 0]
    res = run(qemu("10.0"), BASE + ["-object", "iommufd,id=i0"] +
              [a + ",iommufd=i0" if a.startswith("vfio-pci") else a for a in two], kernel="7.2")
    assert (res.reached, res.status) == ("realize", 0)
    hwpt = one(res, "IOMMU_HWPT_ALLOC").out["out_hwpt_id"]
    assert [r.fields["pt_id"] for r in res.requests if r.name == "VFIO_DEVICE_ATTACH_IOMMUFD_PT"] \
        == [hwpt, hwpt]
    assert len([r for r in res.requests if r.name == "IOMMU_HWPT_ALLOC"]) == 1


# ---- QEMU 11.1 (trixie-backports, run through trixie's loader: scripts/install-qemu.sh) ----

def test_qemu111_runs_on_its_own_trixie_libraries_under_the_shim():
    """The 11.1 wrapper runs the binary through trixie's ld.so without chroot:
    every shared object in QEMU's address space comes from /opt/qemu-11.1/root
    except the shim itself; guest RAM is still mapped by VA on type1 and the
    model agrees."""
    binary = qemu("11.1")
    procs, objs = [], set()

    def read_maps(server, mon):
        with open(f"/proc/{procs[0].pid}/maps") as f:
            objs.update(ln.split()[-1] for ln in f if ".so" in ln.split()[-1])

    res = run(binary, BASE + TYPE1, kernel="7.2", on_start=procs.append, on_ready=read_maps)
    assert (res.reached, res.status, res.version.split(".")[:2]) == ("realize", 0, ["11", "1"])
    root = os.path.dirname(os.path.dirname(os.path.realpath(binary))) + "/root/"
    foreign = [o for o in objs if not o.startswith(root) and o != build_shim()]
    assert objs and foreign == [], foreign
    assert any(o.endswith("/libc.so.6") for o in objs)
    ram = final_maps(res.events())[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["ret"]) == ("VFIO_IOMMU_MAP_DMA", 0)
    assert compare_with_model(res, BASE + TYPE1) == []


def test_qemu111_iommufd_checks_dev_iommu_before_opening_it():
    """QEMU 11.1 looks for /dev/iommu with access(F_OK) before it opens it; on
    a kernel without iommufd (6.1) the simulated /dev has no such node and QEMU
    says so in its own words; the model predicts a failure too."""
    args = BASE + IOMMUFD
    res = run(qemu("11.1"), args, kernel="6.1")
    assert (res.reached, res.status) == ("", 1)
    assert [(r.fields["call"], r.name, r.ret) for r in res.requests
            if r.name == "/dev/iommu"] == [("access", "/dev/iommu", -2)]
    assert [r for r in res.requests if r.op in ("open", "ioctl")] == []
    assert res.stderr == ("qemu-system-x86_64: /dev/iommu does not exist "
                          "(is your kernel config missing CONFIG_IOMMUFD?)\n")
    assert compare_with_model(res, args) == []


def _memdev(kind: str, share: str, d) -> list[str]:
    if kind == "memfd":
        obj = f"memory-backend-memfd,id=m0,size=128M,share={share}"
    else:                                        # a file on tmpfs (/dev/shm)
        obj = f"memory-backend-file,id=m0,size=128M,share={share},mem-path={d}/ram"
    return ["-object", obj, "-numa", "node,memdev=m0"]


@pytest.fixture
def shm_dir():
    from tests.qemu_testing import scratch_dir
    with scratch_dir() as d:
        yield d


@pytest.mark.parametrize("kind, seals", [("memfd", 0x7), ("file", 0x1)])
def test_qemu111_maps_shared_fd_ram_with_map_file_of_its_own_fd(kind, seals, shm_dir):
    """QEMU 11.1, iommufd, shared fd-backed RAM: IOMMU_IOAS_MAP_FILE with
    QEMU's real fd (passed with SCM_RIGHTS and examined as the kernel sees it:
    tmpfs, O_RDWR, the memfd's F_SEAL_GROW|SHRINK|SEAL from seal=on, a tmpfs
    file's F_SEAL_SEAL); start is the offset into the fd.  The BIOS stays a VA
    map (anonymous, not shared).  The model predicts the same mappings."""
    args = BASE + _memdev(kind, "on", shm_dir) + IOMMUFD
    res = run(qemu("11.1"), args, kernel="7.2")
    assert (res.reached, res.status) == ("realize", 0)
    live = final_maps(res.events())
    ram = live[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["flags"], ram["ret"]) == (
        "IOMMU_IOAS_MAP_FILE", "FIXED_IOVA|WRITEABLE|READABLE", 0)
    assert ram["fields"]["start"] == 0x100000
    b = ram["backing"]
    assert (b["what"], b["kind"], b["f_flags"] & 0o3, b["seals"], b["size"]) == (
        "fd", "shmem", os.O_RDWR, seals, 128 << 20)
    assert live[(0xFFFC0000, 0x40000)]["ioctl"] == "IOMMU_IOAS_MAP"
    assert compare_with_model(res, args) == []


@pytest.mark.parametrize("kind", ["memfd", "file"])
def test_qemu111_maps_private_fd_ram_by_va(kind, shm_dir):
    """Private fd-backed RAM (share=off): QEMU 11.1 maps it by VA
    (vfio_container_dma_map(): MAP_FILE only for RAM_SHARED or ram_device),
    so the device sees the process's COW copy, not the file; the model agrees."""
    args = BASE + _memdev(kind, "off", shm_dir) + IOMMUFD
    res = run(qemu("11.1"), args, kernel="7.2")
    assert (res.reached, res.status) == ("realize", 0)
    assert "IOMMU_IOAS_MAP_FILE" not in names(res)
    ram = final_maps(res.events())[(0x100000, 0x7F00000)]
    assert (ram["ioctl"], ram["ret"], ram["backing"]["shared"]) == ("IOMMU_IOAS_MAP", 0, False)
    assert compare_with_model(res, args) == []


@pytest.mark.parametrize("kernel", ["6.6", "6.12"])
def test_qemu111_map_file_refused_fails_realize_without_va_fallback(kernel, shm_dir):
    """A kernel without IOMMU_IOAS_MAP_FILE (before 6.13) answers -ENOTTY;
    QEMU 11.1 does not retry by VA: the memory listener fails and realize with
    it, in QEMU's own words.  The model predicts the same first refused map."""
    args = BASE + _memdev("memfd", "on", shm_dir) + IOMMUFD
    res = run(qemu("11.1"), args, kernel=kernel)
    assert (res.reached, res.status) == ("", 1)
    maps = [(e["ioctl"], e["iova"], e["size"], e["ret"]) for e in res.events() if e["kind"] == "map"]
    # the RAM: one MAP_FILE, refused, no VA retry; the listener still maps the BIOS by VA
    assert maps == [("IOMMU_IOAS_MAP_FILE", 0, 128 << 20, -25),
                    ("IOMMU_IOAS_MAP", 0xFFFC0000, 0x40000, 0)]
    assert re.fullmatch(r"qemu-system-x86_64: -device vfio-pci,host=0000:00:04.0,iommufd=i0: "
                        r"vfio 0000:00:04.0: memory listener initialization failed: Region m0: "
                        r"vfio_container_dma_map\(0x[0-9a-f]+, 0x0, 0x8000000, 0x[0-9a-f]+\) = "
                        r"-25 \(Inappropriate ioctl for device\)", res.stderr.splitlines()[-1])
    assert compare_with_model(res, args) == []


@pytest.mark.parametrize("config", ["memfd", "ro-dimm"])
def test_qemu111_map_file_same_on_72_and_72_with_the_write_access_fix(config, shm_dir):
    """The unmerged 'Require write access for writable MAP_FILE mappings' fix
    (profile 7.2+fix: -EPERM for WRITEABLE without FMODE_WRITE, write seals
    respected) changes nothing for what QEMU itself passes: its memfd is
    O_RDWR without a write seal, and a readonly=on file is opened O_RDONLY and
    mapped READABLE only.  Same requests, same answers on both profiles."""
    if config == "memfd":
        args = BASE + _memdev("memfd", "on", shm_dir) + IOMMUFD
    else:
        with open(os.path.join(shm_dir, "ro.img"), "wb") as f:
            f.truncate(32 << 20)
        args = BASE[:-2] + ["-m", "128M,slots=2,maxmem=1G", "-object",
                            f"memory-backend-file,id=romem,size=32M,mem-path={shm_dir}/ro.img,"
                            "readonly=on,share=on", "-device", "pc-dimm,id=rodimm,memdev=romem"] + IOMMUFD

    def answers(res):
        return [(e["ioctl"], e["iova"], e["size"], e["flags"], e["ret"],
                 e["backing"] and (e["backing"].get("f_flags"), e["backing"].get("seals")))
                for e in res.events()]

    runs = {k: run(qemu("11.1"), args, kernel=k) for k in ("7.2", "7.2+fix")}
    assert answers(runs["7.2"]) == answers(runs["7.2+fix"])
    for res in runs.values():
        assert (res.reached, res.status) == ("realize", 0)
        assert compare_with_model(res, args) == []
    files = [e for e in runs["7.2+fix"].events() if e["ioctl"] == "IOMMU_IOAS_MAP_FILE"]
    assert files
    if config == "ro-dimm":
        assert [(e["iova"], e["flags"], e["backing"]["f_flags"] & 0o3) for e in files] == [
            (0x100000000, "FIXED_IOVA|READABLE", os.O_RDONLY)]
    else:
        assert {(e["flags"], e["backing"]["f_flags"] & 0o3, e["backing"]["seals"])
                for e in files} == {("FIXED_IOVA|WRITEABLE|READABLE", os.O_RDWR, 0x7)}


def test_same_requests_finds_a_changed_answer():
    """same_requests() (the check between the rig's recording on a real kernel
    and a run on the simulated one): two runs of one QEMU and command line
    make the same container/IOAS requests with the same answers; a changed
    answer, or a missing request, is reported where it happens."""
    import copy
    from vmm_model.run import same_requests
    a = run(qemu("10.0"), BASE + IOMMUFD, kernel="7.2")
    b = run(qemu("10.0"), BASE + IOMMUFD, kernel="7.2")
    assert a.reached == b.reached == "realize"
    assert same_requests(a, b) == []
    c = copy.deepcopy(b)
    i = next(i for i, r in enumerate(c.requests) if r.name == "IOMMU_IOAS_MAP")
    c.requests[i].ret = -14
    del c.requests[next(i for i, r in enumerate(c.requests) if r.name == "IOMMU_HWPT_ALLOC")]
    diffs = same_requests(a, c)
    assert [d["what"] for d in diffs] == ["delete", "replace"]
    assert diffs[0]["a"][0][0] == "IOMMU_HWPT_ALLOC" and diffs[0]["b"] == []
    assert diffs[1]["a"][0][0] == diffs[1]["b"][0][0] == "IOMMU_IOAS_MAP"
    assert (diffs[1]["a"][0][2], diffs[1]["b"][0][2]) == (0, -14)


@pytest.mark.parametrize("ops, index, ranges, argsz, want", [
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [(0, 1 << 20)], None, "fd"),
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [(0, 0x1000), (0x2000, 0x3000)], None, "fd"),
    (uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_GET, 0, [], None, 0),
    (uapi.VFIO_DEVICE_FEATURE_SET, 0, [(0, 0x1000)], None, -22),
    (uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_SET, 0, [(0, 0x1000)], None, -22),
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [], None, -22),                  # nr_ranges 0
    (uapi.VFIO_DEVICE_FEATURE_GET, 6, [(0, 0x1000)], None, -19),       # the ROM: not a BAR
    (uapi.VFIO_DEVICE_FEATURE_GET, 1, [(0, 0x1000)], None, -22),       # no BAR1
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [(0x800, 0x1000)], None, -22),   # not page-aligned
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [(0xff000, 0x2000)], None, -22),  # past the BAR
    (uapi.VFIO_DEVICE_FEATURE_GET, 0, [(0, 0x1000)], 12, -22)])        # argsz < 16
def test_dma_buf_feature(ops, index, ranges, argsz, want):
    """vfio_pci_core_feature_dma_buf() on the edu-like function (1 MiB BAR0):
    the dma-buf's size is the sum of the ranges; the errnos of
    vfio_ioctl_device_feature(), vfio_check_feature() and validate_dmabuf_input()."""
    import struct as st
    from backends.shim.pci import PciFunction, PciShape, vfio_pci_core_feature_dma_buf
    from backends.simulated.iommu import SimVfioDevice
    from backends.simulated.syscalls import SimHost
    host = SimHost("7.2")
    fn = PciFunction(SimVfioDevice(), PciShape())
    body = st.pack("<IIII", index, os.O_RDWR, 0, len(ranges)) + b"".join(
        st.pack("<QQ", o, n) for o, n in ranges)
    buf = st.pack("<II", argsz or 8 + len(body), ops | uapi.VFIO_DEVICE_FEATURE_DMA_BUF) + body
    ret, _ = vfio_pci_core_feature_dma_buf(host, fn, buf)
    if want == "fd":
        assert ret >= 0 and host.file_of(ret).inode.i_size == sum(n for _, n in ranges)
        assert host.file_of(ret).inode.kind == "dmabuf"
    else:
        assert ret == want


def test_model_firmware_maps_count_only_when_the_guest_ran():
    """-vga std: the model maps vga.vram where SeaBIOS puts the VGA BAR
    (0xfd000000) in its firmware phase; QEMU stopped at realize (-S) has not
    mapped it, and compare_with_model does not count it as a difference."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.scenario import from_qemu_args
    args = BASE + ["-vga", "std"] + TYPE1
    plan = make_plan(from_qemu_args(args), get_qemu("10.0"), "type1", kernel="7.2")
    assert [(e.phase, e.iova, e.size) for e in plan.events if e.phase == "firmware"] == [
        ("firmware", 0xFD000000, 16 << 20)]
    res = run(qemu("10.0"), args, kernel="7.2")
    assert res.reached == "realize"
    assert 0xFD000000 not in {e["iova"] for e in res.events()}
    assert compare_with_model(res, args) == []
