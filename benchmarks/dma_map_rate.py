"""MAP+UNMAP pairs per second through the public client API on SimHost, and
bytes of memory per live mapping.

For each backend and each number of live 4 KiB mappings (default 1k, 100k,
1M) the script fills the container with that many mappings (one anonymous
page mapped at distinct IOVAs, as a VMM with many small sections would), then
times MAP of a fresh IOVA + UNMAP of it through ``dma_map``/``dma_unmap`` of
the real clients (backends/type1.py, backends/iommufd.py) talking to the
simulated kernel.  Memory per mapping is the growth of the process RSS while
filling, divided by the count.

    python benchmarks/dma_map_rate.py [--live 1000,100000,1000000] [--pairs 200000]
                                      [--backends type1,iommufd,iommufd-noattach]

Targets (issue 4): >= 200k pairs/s at 1M live, >= 0.7x the 1k-live rate,
<= 400 bytes per live mapping.  Not a test: it prints figures and ratios.
The first line calibrates the machine (the cost of an empty Python function
call), so figures from different machines can be compared: a pair costs
about the same number of calls anywhere.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from backends.host import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE  # noqa: E402
from backends.iommufd import IommufdContainer  # noqa: E402
from backends.simulated import SimHost  # noqa: E402
from backends.simulated.vfio import install  # noqa: E402
from backends.type1 import Type1Container  # noqa: E402

P = 4096


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def client_for(host, backend: str):
    if backend == "type1":
        return Type1Container(host, 1)
    c = IommufdContainer(host)
    if backend == "iommufd":
        c.attach_device("/dev/vfio/devices/vfio0")
    return c


def run(backend: str, live: int, pairs: int, profile: str) -> dict:
    host = SimHost(profile)
    host.type1_dma_entry_limit = live + 16          # dma_entry_limit raised, as a VMM would
    install(host)
    c = client_for(host, backend)
    va = host.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    host.write_mem(va, b"x")
    gc.collect()
    before = rss()
    for i in range(live):
        r = c.dma_map((i + 1) * P, P, va, False)
        if r.ret:
            raise SystemExit(f"{backend}: filling failed at {i}: {r}")
    gc.collect()
    per_mapping = (rss() - before) / live
    gc.freeze()                                      # the live mappings are not garbage
    base = (live + 2) * P
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(pairs):
        iova = base + (i & 1023) * P
        if c.dma_map(iova, P, va, False).ret or c.dma_unmap(iova, P).ret:
            raise SystemExit(f"{backend}: MAP+UNMAP failed at pair {i}")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.unfreeze()
    c.close()
    host.close_all()
    return {"backend": backend, "live": live, "pairs_per_s": pairs / elapsed, "cpu": cpu,
            "bytes_per_mapping": per_mapping}


def call_ns() -> float:
    """Nanoseconds per empty Python function call (best of 5 timeit runs)."""
    import timeit
    n = 1_000_000
    return min(timeit.repeat("f()", "def f(): pass", number=n, repeat=5)) / n * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", default="1000,100000,1000000")
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--backends", default="type1,iommufd,iommufd-noattach")
    ap.add_argument("--kernel", default="7.2")
    a = ap.parse_args()
    lives = [int(x) for x in a.live.split(",")]
    ns = call_ns()
    print(f"SimHost profile {a.kernel}, {a.pairs} MAP+UNMAP pairs of 4 KiB per point; "
          f"machine: {ns:.0f} ns per Python call\n")
    print(f"{'backend':18} {'live':>9} {'pairs/s':>10} {'vs first':>9} {'calls/pair':>10} "
          f"{'B/mapping':>10}")
    for b in a.backends.split(","):
        first = None
        for n in lives:
            r = run(b, n, a.pairs, a.kernel)
            first = first or r["pairs_per_s"]
            print(f"{b:18} {n:>9} {r['pairs_per_s']:>10.0f} {r['pairs_per_s'] / first:>8.2f}x "
                  f"{1e9 / r['pairs_per_s'] / ns:>10.0f} {r['bytes_per_mapping']:>10.0f}", flush=True)
    print(f"\ntargets: >= 200000 pairs/s at 1M live (here: <= {1e9 / 200_000 / ns:.0f} calls/pair), "
          ">= 0.70x the first rate, <= 400 B/mapping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
