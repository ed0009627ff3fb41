"""Memory of a file on a disk file system (set ``disk-fs``, stock kernels): an
ext4 image on the guest's tmpfs /tmp (mkfs.ext4 of the host root's e2fsprogs),
on a loop device, mounted at MNT; the real type1 client (VFIO_IOMMU_MAP_DMA
with edu's group attached, so the map pins at once) on the guest kernel and on
SimHost(its profile), step by step (test_differential.py's Runner).

Per mapping of the ext4 file: MAP_SHARED read-write mapped read-write (a
FOLL_LONGTERM|FOLL_WRITE pin: -EFAULT since 6.5, mm/gup.c check_vma_flags() ->
writable_file_mapping_allowed(), 8ac268436e6d; 6.1 pins it), MAP_PRIVATE
untouched and touched (anonymous COW pages: pinned on every version), and a
MAP_SHARED PROT_READ mapping of an O_RDONLY fd mapped READ-only (no FOLL_WRITE).
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from backends.host import MAP_PRIVATE, MAP_SHARED, O_CREAT, O_RDONLY, O_RDWR
from backends.rig.guest.rigutil import FEATURES
from backends.rig.guest.test_differential import (DR, RW, A, B, C, P, R, guest_edu,  # noqa: F401
                                                  make_sim, mirror, run_both, table, type1)
from backends.type1 import Type1Container

MNT = "/tmp/rig-ext4"
IMG = "/tmp/rig-ext4.img"
N = 4
D = 0x400000
SBIN = "/usr/sbin"          # the chroot's PATH has no sbin


@pytest.fixture(scope="module")
def ext4():
    if os.environ.get("RIG_GUEST") != "1":
        pytest.skip("a rig guest test: run it with vfio-emu rig run --set disk-fs")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True).stdout.strip()
    run("truncate", "-s", "96M", IMG)
    run(f"{SBIN}/mkfs.ext4", "-q", "-F", IMG)
    loop = run(f"{SBIN}/losetup", "-f", "--show", IMG)
    os.makedirs(MNT, exist_ok=True)
    run("mount", "-t", "ext4", loop, MNT)
    try:
        yield MNT
    finally:
        run("umount", MNT)
        run(f"{SBIN}/losetup", "-d", loop)
        os.unlink(IMG)


@pytest.fixture(autouse=True)
def sim_ext4(monkeypatch):
    """The mirror's SimHost mounts MNT as ext4 (a page-cache fs with writeback)."""
    from backends.simulated import syscalls
    from backends.simulated.fs import EXT4
    monkeypatch.setitem(syscalls.DEFAULT_MOUNTS, MNT, EXT4)


def _expected(profile) -> str | int:
    return "EFAULT" if profile.longterm_pin_refuses_writable_file else 0


def test_type1_maps_of_an_ext4_file(real, mirror, ext4):  # noqa: F811
    """Each map's errno, real == simulated == the version's expectation."""
    if "type1" not in FEATURES:
        pytest.fail("a stock kernel without type1")
    path = f"{ext4}/guest-ram"
    ops = type1() + [
        ("file", "f", path, N * P), ("file", "r", path, 0, O_RDONLY),
        ("mmap", "v", "f", N, RW, True),           # shared, writable
        ("mmap", "p", "f", N, RW, False),          # private, untouched
        ("mmap", "q", "f", N, RW, False), ("fill", "q", 0, N * P, 0x5a),   # private, touched
        ("mmap", "o", "r", N, R, True),            # shared, read-only
        ("map_dma", "c", "v", 0, A, N * P), ("map_dma", "c", "p", 0, B, N * P),
        ("map_dma", "c", "q", 0, C, N * P), ("map_dma", "c", "o", 0, D, N * P, DR),
        ("unmap_dma", "c", 0, 1 << 40)]
    out_r, out_s = run_both(real, mirror, ops)
    profile = mirror[0]
    print(f"disk-fs on {profile.name}:")
    for op, a, b in zip(ops, out_r, out_s):
        print(f"  {op!r:60} real={a!r} sim={b!r}")
    assert out_r == out_s, (f"the simulator ({profile.name}) differs from the guest kernel\n"
                            + table(ops, out_r, out_s))
    shared, private, touched, ro = out_r[-5:-1]
    assert (shared, private, touched, ro) == (_expected(profile), 0, 0, 0), out_r


def _client_maps(host, group: int, path: str) -> list[int]:
    """Type1Container.dma_map() of each mapping kind (module doc): the ioctl returns."""
    with Type1Container(host, group) as c:
        fd = host.open(path, O_RDWR | O_CREAT)
        rfd = host.open(path, O_RDONLY)
        assert fd >= 0 and rfd >= 0 and host.ftruncate(fd, N * P) == 0
        v, p, q = (host.mmap(0, N * P, RW, f, fd, 0) for f in (MAP_SHARED, MAP_PRIVATE, MAP_PRIVATE))
        o = host.mmap(0, N * P, R, MAP_SHARED, rfd, 0)
        assert min(v, p, q, o) > 0 and host.write_mem(q, b"\x5a" * N * P) == N * P
        rets = [c.dma_map(A, N * P, v, False).ret, c.dma_map(B, N * P, p, False).ret,
                c.dma_map(C, N * P, q, False).ret, c.dma_map(D, N * P, o, True).ret]
        for iova, r in zip((A, B, C, D), rets):
            if r == 0:
                assert c.dma_unmap(iova, N * P).ret == 0
        for a in (v, p, q, o):
            host.munmap(a, N * P)
        host.close(fd)
        host.close(rfd)
    return rets


def test_type1_client_maps_of_an_ext4_file(real, mirror, ext4):  # noqa: F811
    """The same four maps through Type1Container: guest kernel == SimHost == expectation."""
    profile, dev = mirror
    sim, sdev = make_sim(profile, dev)
    path = f"{ext4}/client-ram"
    got = _client_maps(real, dev.group, path)
    want = _client_maps(sim, sdev.group, path)
    print(f"disk-fs client on {profile.name}: real={got} sim={want}")
    assert got == want
    efault = -errno.EFAULT if profile.longterm_pin_refuses_writable_file else 0
    assert got == [efault, 0, 0, 0]


@pytest.mark.parametrize("share", ("on", "off"))
@pytest.mark.parametrize("version", ("7.2", "10.0"))
def test_real_qemu_ram_on_ext4(mirror, ext4, version, share):  # noqa: F811
    """QEMU's guest RAM is a file on ext4: share=on pins the shared mapping
    (-EFAULT since 6.5), share=off its private COW pages (pinned)."""
    from backends.rig.guest.test_real_qemu import MAPS, run_qemu
    from backends.rig.real_qemu import BASE, QEMUS, backend_args, decode
    from backends.rig.edu import edu_devices
    binary, observer = QEMUS[version], os.environ.get("RIG_OBSERVER")
    if not os.path.exists(binary):
        pytest.fail(f"QEMU {version} is not installed at {binary} (scripts/install-qemu.sh)")
    assert observer and os.path.exists(observer), f"RIG_OBSERVER={observer!r}"
    path = f"{ext4}/m0"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    args = [*BASE, "-object", f"memory-backend-file,id=m0,size=64M,mem-path={path},share={share}",
            "-machine", "q35,memory-backend=m0", *backend_args("type1", edu_devices()[0])]
    try:
        res = run_qemu(binary, args, observer, "/tmp/disk-fs-qemu.log")
    finally:
        os.unlink(path)
    reqs, _ = decode(res["log"])
    ram0 = [r.ret for r in reqs if r.op == "ioctl" and r.name in MAPS and r.fields.get("iova") == 0]
    refused = share == "on" and mirror[0].longterm_pin_refuses_writable_file
    print(f"QEMU {version} share={share} on {mirror[0].name}: GPA 0 map {ram0}, "
          f"reached={res['reached']!r} exit={res['exit_status']} {res['stderr'][-200:]!r}")
    assert ram0 and ram0[0] == (-errno.EFAULT if refused else 0), (ram0, res["stderr"])
    if refused:
        assert not res["reached"] and res["exit_status"] not in (0, None), res
        assert "Bad address" in res["stderr"], res["stderr"]
    else:
        assert res["reached"] and res["exit_status"] == 0, res
