"""Where a MAP+UNMAP pair's time goes, layer by layer (issue 18 item 5).

The same pair through the real client (backends/type1.py, backends/iommufd.py)
is timed with the stack cut lower and lower; each layer's cost is the
difference between two cuts, in call-equivalents (CPU time / the cost of an
empty Python call):

  client      struct pack of the argument, result object   (host.ioctl answers at once)
  seam        SimHost.ioctl: fd table, the file's device    (the device answers at once)
  dispatch    the device's ioctl: request number, framing   (the handler answers at once)
  kernel      the rest: checks, IOVA tree, pinning, accounting (the full simulator),
              with the IOVA tree, the pinning (the fast paths' one-VMA GUP and
              unpin) and iommufd's accounting timed on their own

``iommufd-file`` is the plan's path for a memfd-backed RAMBlock on QEMU 10.1+
(IOMMU_IOAS_MAP_FILE of a memfd page, then IOMMU_IOAS_UNMAP).

The cuts replace one bound method on one object of this process (a benchmark,
not a test).  ``python benchmarks/hot_path.py [--pairs 100000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from backends.host import (MAP_ANONYMOUS, MAP_PRIVATE, MFD_CLOEXEC, PROT_READ,  # noqa: E402
                           PROT_WRITE)
from backends.iommufd import IommufdContainer  # noqa: E402
from backends.simulated import SimHost  # noqa: E402
from backends.simulated.gup import (gup_vma_range,  # noqa: E402
                                    unpin_user_page_range_dirty_lock)
from backends.simulated.iommufd.pages import (IOPT_PAGES_ACCOUNT_USER, IoptPages,  # noqa: E402
                                              do_update_pinned)
from backends.simulated.iommu import IovaTree  # noqa: E402
from backends.simulated.vfio import install  # noqa: E402
from backends.type1 import Type1Container  # noqa: E402

P = 4096


def call_ns() -> float:
    n = 1_000_000
    return min(timeit.repeat("f()", "def f(): pass", number=n, repeat=5,
                             timer=time.process_time)) / n * 1e9


def setup(backend: str):
    host = SimHost("7.2")
    install(host)
    if backend == "type1":
        c = Type1Container(host, 1)
    else:
        c = IommufdContainer(host)
        c.attach_device("/dev/vfio/devices/vfio0")
    if backend == "iommufd-file":                  # a memfd page, mapped by file
        fd = host.memfd_create("ram", MFD_CLOEXEC)
        host.ftruncate(fd, P)
        return host, c, fd
    va = host.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    return host, c, va


def pairs(c, va: int, n: int, by_file: bool = False) -> float:
    """CPU seconds of n MAP+UNMAP pairs (``by_file``: ``va`` is a memfd, MAP_FILE)."""
    dma_map, dma_unmap = (c.dma_map_file if by_file else c.dma_map), c.dma_unmap
    arg = 0 if by_file else va
    t = time.process_time()
    for i in range(n):
        iova = P + (i & 1023) * P
        if by_file:
            dma_map(iova, P, va, arg, False)
        else:
            dma_map(iova, P, va, False)
        dma_unmap(iova, P)
    return time.process_time() - t


def layers(backend: str, n: int) -> dict[str, float]:
    """CPU seconds per pair with the stack cut at each layer."""
    out = {}
    host, c, va = setup(backend)
    f = backend == "iommufd-file"
    out["full"] = pairs(c, va, n, f) / n
    dev = host.fds[c.fd].dev
    real_dev_ioctl = dev.ioctl
    if backend == "type1":
        iommu = dev.iommu
        iommu.vfio_iommu_type1_map_dma = lambda buf: 0
        iommu.vfio_iommu_type1_unmap_dma = lambda buf: (0, buf)
    else:
        dev.ops = {k: (lambda ictx, cmd, buf, size: (0, buf),) + v[1:] for k, v in dev.ops.items()}
    out["dispatch"] = pairs(c, va, n, f) / n
    dev.ioctl = lambda request, arg: (0, arg)
    out["seam"] = pairs(c, va, n, f) / n
    c._ioctl = lambda fd, request, arg: (0, arg)
    out["client"] = pairs(c, va, n, f) / n
    del real_dev_ioctl
    return out


def parts(n: int) -> dict[str, float]:
    """CPU seconds of the kernel's shared pieces, each on its own, per pair."""
    host, _, va = setup("type1")
    mm = host.mm

    class Node:
        __slots__ = ("iova", "last")

        def __init__(self, iova, last):
            self.iova, self.last = iova, last
    tree = IovaTree()
    for i in range(1000):
        tree.insert(Node((1 << 30) + i * P, (1 << 30) + i * P + P - 1))
    t = time.process_time()
    for i in range(n):
        iova = P + (i & 1023) * P
        tree.insert_free(Node(iova, iova + P - 1))
        tree.remove_exact(iova, iova + P - 1)
    tree_s = (time.process_time() - t) / n
    t = time.process_time()
    for i in range(n):
        unpin_user_page_range_dirty_lock(gup_vma_range(mm, va, 1, True))
    gup_s = (time.process_time() - t) / n
    pages = IoptPages(mm, va, 1, True, IOPT_PAGES_ACCOUNT_USER)
    t = time.process_time()
    for i in range(n):
        do_update_pinned(pages, 1, True, host)
        do_update_pinned(pages, 1, False, host)
    acct_s = (time.process_time() - t) / n
    return {"IOVA tree (insert_free + remove_exact)": tree_s,
            "pinning (gup_vma_range + unpin)": gup_s,
            "accounting (do_update_pinned +, -)": acct_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100_000)
    a = ap.parse_args()
    ns = call_ns() * 1e-9
    print(f"{a.pairs} MAP+UNMAP pairs per cut, 4 KiB, 1k live; {ns * 1e9:.1f} ns CPU per Python call")
    print(f"{'backend':13} {'layer':46} {'call-eq/pair':>12}")
    for backend in ("type1", "iommufd", "iommufd-file"):
        cut = layers(backend, a.pairs)
        rows = [("client: pack + result", cut["client"]),
                ("seam: SimHost.ioctl", cut["seam"] - cut["client"]),
                ("dispatch: device ioctl, framing", cut["dispatch"] - cut["seam"]),
                ("kernel: checks, tree, pinning, accounting", cut["full"] - cut["dispatch"])]
        for name, s in rows:
            print(f"{backend:13} {name:46} {s / ns:12.0f}")
        print(f"{backend:13} {'total':46} {cut['full'] / ns:12.0f}")
    for name, s in parts(a.pairs).items():
        print(f"{'all':13} {'  of which ' + name:48} {s / ns:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
