"""The simulated kernel's MAP/UNMAP fast paths give the answers of its general
paths, for every kernel profile.

``SimHost(fast_paths=False)`` runs the general path everywhere (gup.py's
VMA-by-VMA walk, type1's vfio_pin_map_dma() and vfio_dma_do_unmap(),
iommufd's iopt_map_pages(), _pin_range() and iopt_unmap_iova()); the default
takes the one-step paths for the common case.  Each sequence below runs the
same random ioctls (type1 v1/v2, iommufd native, iommufd VFIO compat; maps of
anonymous, read-only, memfd, BAR and unmapped memory, MAP_FILE, exact,
partial, covering and ALL unmaps, VADDR updates, device attach and detach,
ENOMEM/ENOSPC limits; mprotect() of the anonymous memory between them, which
splits its VMAs) on both and compares, after every step, the return
value and the bytes written back, the accounting (locked_vm, pinned_vm,
user->locked_vm), every store's pinned pages (per-page pin counts), the
mappings, and what each device's IOMMU translates every IOVA of the grid to.

The sequences come from ``random.Random`` seeded by profile and index, so CI
runs the same 2,000 per profile every time; a failure prints the seed and the
steps.  Not timed: the run length is a CI budget, not an assertion.
"""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest

from backends import uapi
from backends.host import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, O_RDWR, PAGE_SIZE, PROT_READ,
                           PROT_WRITE)
from backends.simulated import SimHost
from backends.simulated.iommu import IommuHw, SimVfioDevice
from backends.kernel_profiles import PROFILES
from backends.simulated.vfio import install, region_offset

SEQUENCES = 2000            # per profile (issue 13: >= 2,000 in CI)
STEPS = 7
P = PAGE_SIZE
U64_MAX = (1 << 64) - 1
RW = PROT_READ | PROT_WRITE
R, W = uapi.VFIO_DMA_MAP_FLAG_READ, uapi.VFIO_DMA_MAP_FLAG_WRITE
VADDR = uapi.VFIO_DMA_MAP_FLAG_VADDR
UNMAP_ALL, UNMAP_VADDR = uapi.VFIO_DMA_UNMAP_FLAG_ALL, uapi.VFIO_DMA_UNMAP_FLAG_VADDR
FIXED, IW, IR = (uapi.IOMMU_IOAS_MAP_FIXED_IOVA, uapi.IOMMU_IOAS_MAP_WRITEABLE,
                 uapi.IOMMU_IOAS_MAP_READABLE)
DMA_MAP = uapi.codec("vfio_iommu_type1_dma_map")
DMA_UNMAP = uapi.codec("vfio_iommu_type1_dma_unmap")
IOAS_ALLOC = uapi.codec("iommu_ioas_alloc")
IOAS_MAP = uapi.codec("iommu_ioas_map")
IOAS_MAP_FILE = uapi.codec("iommu_ioas_map_file")
IOAS_UNMAP = uapi.codec("iommu_ioas_unmap")
BIND = uapi.codec("vfio_device_bind_iommufd")
ATTACH = uapi.codec("vfio_device_attach_iommufd_pt")
DETACH = uapi.codec("vfio_device_detach_iommufd_pt")

# Two IOMMUs: QEMU's VT-d (39-bit, MSI window) and a second, different one, so
# attaching the second device makes a second domain (vfio_iommu_replay()).
HW1 = IommuHw()
HW2 = IommuHw(aperture=(0, (1 << 48) - 1), pgsize_bitmap=P | (1 << 21))
# IOVAs in units of pages on a small grid (overlaps are frequent) plus the edges.
EDGES = [(1 << 39) - P, 1 << 39, 0xFEE00000, U64_MAX - P + 1, 0x800]
GRID = [k * P for k in range(0, 12, 2)] + [(1 << 39) - P, U64_MAX - P + 1]


class World:
    """One SimHost with two VFIO devices, guest-like memory, and the backend open."""

    def __init__(self, profile: str, cfg: dict, fast: bool):
        self.kind = cfg["backend"]
        h = self.h = SimHost(profile, rlimit_memlock=cfg["memlock"], cap_ipc_lock=cfg["cap"],
                             fast_paths=fast)
        h.type1_dma_entry_limit = cfg["entries"]
        self.devs = install(h, [SimVfioDevice(group=1, cdev=0, hw=HW1, bars={0: 16 * P}),
                                SimVfioDevice(name="0000:00:02.0", group=2, cdev=1, hw=HW2)])
        # anon: 24 RW pages then 8 RO pages (two VMAs); a shared memfd mapping
        self.anon = h.mmap(0, 32 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        assert h.mprotect(self.anon + 24 * P, 8 * P, PROT_READ) == 0
        self.mfd = h.memfd_create("guest", 0)
        assert h.ftruncate(self.mfd, 16 * P) == 0
        self.shared = h.mmap(0, 16 * P, RW, MAP_SHARED, self.mfd, 0)
        self.hole = self.shared + 64 * P
        self.bar = self.hole
        self.groups: dict[int, int] = {}
        self.cdevs: dict[int, int] = {}
        if self.kind in ("type1", "type1v1", "compat", "compatv1"):
            self.c = h.open("/dev/iommu" if self.kind.startswith("compat") else "/dev/vfio/vfio",
                            O_RDWR)
            self.set_group(1, True)
            v1 = self.kind.endswith("v1")
            assert h.ioctl(self.c, uapi.VFIO_SET_IOMMU,
                           uapi.VFIO_TYPE1_IOMMU if v1 else uapi.VFIO_TYPE1v2_IOMMU)[0] == 0
            dfd = h.ioctl(self.groups[1], uapi.VFIO_GROUP_GET_DEVICE_FD,
                          self.devs[0].name.encode() + b"\0")[0]
            assert dfd >= 0
            self.bar = h.mmap(0, 16 * P, RW, MAP_SHARED, dfd, region_offset(0))
        else:
            self.c = h.open("/dev/iommu", O_RDWR)
            ret, out = h.ioctl(self.c, uapi.IOMMU_IOAS_ALLOC, IOAS_ALLOC.pack(12, 0, 0))
            assert ret == 0
            self.ioas = IOAS_ALLOC.unpack(out)[2]
            for i in (0, 1):
                self.cdevs[i] = fd = h.open(f"/dev/vfio/devices/vfio{i}", O_RDWR)
                ret, _ = h.ioctl(fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, BIND.pack(24, 0, self.c, 0, 0))
                assert ret == 0
            if cfg["attached"]:
                assert self.attach(0)[0] == 0
            self.bar = h.mmap(0, 16 * P, RW, MAP_SHARED, self.cdevs[0], region_offset(0))
        assert self.bar > 0
        self.stores = {"anon": h.mm.private, "memfd": h.file_of(self.mfd).inode.mapping}
        self.labels = {id(s): name for name, s in self.stores.items()}

    # ---- the operations ------------------------------------------------------------
    def set_group(self, gid: int, on: bool):
        h = self.h
        if on:
            if gid not in self.groups:
                self.groups[gid] = h.open(f"/dev/vfio/{gid}", O_RDWR)
            return h.ioctl(self.groups[gid], uapi.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", self.c))
        if gid not in self.groups:
            return "closed"
        return h.ioctl(self.groups[gid], uapi.VFIO_GROUP_UNSET_CONTAINER, 0)

    def attach(self, i: int):
        return self.h.ioctl(self.cdevs[i], uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                            ATTACH.pack(16, 0, self.ioas, 0))

    def vaddr(self, where: str, k: int) -> int:
        base = {"anon": self.anon, "shared": self.shared, "bar": self.bar, "hole": self.hole}
        return base[where.rstrip("+")] + k * P + (0x800 if where.endswith("+") else 0)

    def do(self, op: tuple):
        h, kind, c = self.h, op[0], self.c
        if kind == "map_dma":
            _, iova, size, where, k, flags = op
            return h.ioctl(c, uapi.VFIO_IOMMU_MAP_DMA,
                           DMA_MAP.pack(32, flags, self.vaddr(where, k), iova, size))
        if kind == "unmap_dma":
            _, iova, size, flags = op
            return h.ioctl(c, uapi.VFIO_IOMMU_UNMAP_DMA, DMA_UNMAP.pack(24, flags, iova, size))
        if kind == "group":
            return self.set_group(op[1], op[2])
        if kind == "ioas_map":
            _, iova, length, where, k, flags = op
            return h.ioctl(c, uapi.IOMMU_IOAS_MAP,
                           IOAS_MAP.pack(40, flags, self.ioas, 0, self.vaddr(where, k), length,
                                         iova))
        if kind == "ioas_map_file":
            _, iova, length, start, flags = op
            return h.ioctl(c, uapi.IOMMU_IOAS_MAP_FILE,
                           IOAS_MAP_FILE.pack(40, flags, self.ioas, self.mfd, start, length, iova))
        if kind == "ioas_unmap":
            _, iova, length = op
            return h.ioctl(c, uapi.IOMMU_IOAS_UNMAP, IOAS_UNMAP.pack(24, self.ioas, iova, length))
        if kind == "mprotect":                 # splits and merges VMAs (mm->vmacache)
            _, k, n, prot = op
            return h.mprotect(self.anon + k * P, n * P, prot)
        if kind == "attach":
            return self.attach(op[1])
        if kind == "detach":
            return h.ioctl(self.cdevs[op[1]], uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, DETACH.pack(12, 0, 0))
        raise AssertionError(op)

    # ---- what is compared ----------------------------------------------------------
    def state(self) -> tuple:
        h = self.h
        pinned = {}
        for name, store in self.stores.items():
            count: Counter = Counter()
            for pin in store.pins:
                count.update(range(pin.first, pin.first + pin.npages))
            pinned[name] = sorted(count.items()) if count else []
        seen = []
        for dev in self.devs:
            dom = dev.domain
            if dom is None:
                seen.append(None)
                continue
            for iova in GRID:
                hit = dom.iova_to_page(iova)
                if hit is not None:
                    pin, idx = hit[0], hit[1]
                    hit = (self.labels.get(id(pin.store), "bar"), pin.first + idx, hit[2],
                           hit[3] if len(hit) > 3 else 0)
                seen.append(hit)
        return (h.locked_vm, h.pinned_vm, h.user_locked_vm, pinned, seen, self.mappings())

    def mappings(self) -> list:
        file = self.h.fds.get(self.c)
        if file is None:
            return []
        dev = file.dev
        iommu = getattr(dev, "iommu", None)
        if iommu is not None:                                  # type1
            return [(d.iova, d.last, d.vaddr, d.state) for d in iommu.all_dmas()] + [
                iommu.dma_avail, iommu.vaddr_invalid_count]
        out = []
        for obj in sorted(getattr(dev, "objects", {}).values(), key=lambda o: o.id):
            iopt = getattr(obj, "iopt", None)
            if iopt is not None:
                out.append([(a.iova, a.last, a.start_byte, a.iommu_prot) for a in iopt.area_itree])
        return out


# ---- random sequences ---------------------------------------------------------------

def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.92:
        return rng.randint(1, 6) * P
    return rng.choice([0, 0x800, 3 * P + 0x800, 40 * P])


def _iova(rng: random.Random) -> int:
    return rng.randrange(12) * P if rng.random() < 0.9 else rng.choice(EDGES)


def _where(rng: random.Random) -> tuple[str, int]:
    where = rng.choices(["anon", "shared", "bar", "hole", "anon+"], [12, 4, 1, 1, 1])[0]
    hi = {"anon": 31, "anon+": 31, "shared": 15, "bar": 15, "hole": 4}[where]
    return where, rng.randint(0, hi)


def _unmap_range(rng: random.Random, maps: list) -> tuple[int, int]:
    r = rng.random()
    if maps and r < 0.55:                                 # exactly what was mapped
        return rng.choice(maps)
    if maps and r < 0.75:                                 # part of it, or across two
        iova, size = rng.choice(maps)
        return (iova + rng.choice([0, P])) & U64_MAX, max(0, size + rng.choice([-P, 0, P, 4 * P]))
    if r < 0.9:
        return 0, 12 * P                                  # the whole grid
    return _iova(rng), _size(rng)


def gen_sequence(profile: str, seed: str) -> tuple[dict, list]:
    rng = random.Random(seed)
    prof = PROFILES[profile]
    kinds = ["type1", "type1v1"] + (["iommufd", "iommufd", "compat", "compatv1"]
                                    if prof.iommufd and prof.vfio_cdev else [])
    cfg = {"backend": rng.choice(kinds), "memlock": rng.choice([1 << 64, 3 * P, 8 * P]),
           "cap": rng.random() < 0.2, "entries": rng.choice([65535, 65535, 3]),
           "attached": rng.random() < 0.8}
    ops: list = []
    maps: list = []
    type1_like = cfg["backend"].startswith(("type1", "compat"))
    for _ in range(STEPS):
        if rng.random() < 0.1:
            k = rng.randrange(32)
            ops.append(("mprotect", k, rng.randint(1, 32 - k), rng.choice([RW, PROT_READ])))
        r = rng.random()
        if type1_like:
            if r < 0.5:
                where, k = _where(rng)
                iova, size = _iova(rng), _size(rng)
                flags = rng.choices([R | W, R, W, 0, VADDR], [16, 2, 1, 1, 1])[0]
                if iova == U64_MAX - P + 1:
                    size = P
                ops.append(("map_dma", iova, size, where, k, flags))
                maps.append((iova, size))
            elif r < 0.85:
                iova, size = _unmap_range(rng, maps)
                flags = rng.choices([0, UNMAP_ALL, UNMAP_VADDR], [12, 1, 1])[0]
                ops.append(("unmap_dma", 0, 0, flags) if flags == UNMAP_ALL else
                           ("unmap_dma", iova, size, flags))
            else:
                ops.append(("group", rng.choice([1, 2, 2]), rng.random() < 0.6))
        else:
            if r < 0.4:
                where, k = _where(rng)
                iova, length = _iova(rng), _size(rng)
                if rng.random() < 0.1:
                    length = rng.choice([100, P + 100])
                flags = rng.choices([IW | IR, IR, IW, 0], [16, 2, 1, 1])[0]
                fixed = FIXED if rng.random() < 0.85 else 0
                ops.append(("ioas_map", iova, length, where, k, flags | fixed))
                maps.append((iova, length))
            elif r < 0.55:
                iova, length = _iova(rng), _size(rng)
                start = rng.choice([0, P, 4 * P, 100, 12 * P])
                ops.append(("ioas_map_file", iova, length, start, rng.choice([IW | IR, IR]) | FIXED))
                maps.append((iova, length))
            elif r < 0.85:
                iova, length = _unmap_range(rng, maps)
                if rng.random() < 0.08:
                    iova, length = 0, U64_MAX
                ops.append(("ioas_unmap", iova, length))
            else:
                ops.append((rng.choice(["attach", "detach"]), rng.choice([0, 0, 1])))
    return cfg, ops


def _fmt(cfg: dict, ops: list) -> str:
    def h(x):
        return hex(x) if isinstance(x, int) and x > 9 else repr(x)
    return f"{cfg}\n" + "\n".join(f"  {op[0]}({', '.join(h(x) for x in op[1:])})" for op in ops)


def check_sequence(profile: str, seed: str) -> None:
    cfg, ops = gen_sequence(profile, seed)
    fast, slow = World(profile, cfg, True), World(profile, cfg, False)
    assert fast.state() == slow.state(), f"setup differs\n{_fmt(cfg, ops)}"
    for i, op in enumerate(ops):
        a, b = fast.do(op), slow.do(op)
        sa, sb = fast.state(), slow.state()
        if a != b or sa != sb:
            detail = f"answer {a} != {b}" if a != b else f"state\n  fast {sa}\n  slow {sb}"
            raise AssertionError(f"profile {profile}, seed {seed!r}, step {i} {op}: {detail}\n"
                                 f"{_fmt(cfg, ops[:i + 1])}")
    fast.h.close_all()
    slow.h.close_all()
    assert fast.state()[:4] == slow.state()[:4] == (0, 0, 0, {"anon": [], "memfd": []}), \
        f"pins or charges left after close\n{_fmt(cfg, ops)}"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_fast_and_general_paths_agree(profile):
    for i in range(SEQUENCES):
        check_sequence(profile, f"{profile}/{i}")


def test_the_flag_selects_the_path():
    """fast_paths=False really takes the general path: an exact type1 unmap
    with fast_paths on never reaches vfio_dma_do_unmap()."""
    from backends.simulated.vfio_iommu_type1 import VfioIommu
    calls = []
    world = {}
    for fast in (True, False):
        w = world[fast] = World("7.2", {"backend": "type1", "memlock": 1 << 64, "cap": False,
                                        "entries": 65535, "attached": True}, fast)
        iommu = w.h.fds[w.c].dev.iommu
        assert isinstance(iommu, VfioIommu) and iommu.fast_unmap is fast
        general = iommu.vfio_dma_do_unmap
        iommu.vfio_dma_do_unmap = lambda *a, _g=general, _f=fast: calls.append(_f) or _g(*a)
        assert w.do(("map_dma", 0, P, "anon", 0, R | W)) == (0, DMA_MAP.pack(32, R | W, w.anon, 0, P))
        assert w.do(("unmap_dma", 0, P, 0))[0] == 0
    assert calls == [False]
