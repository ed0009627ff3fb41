"""Loading large scenarios: a TOML file with N ``[[object]]`` tables and a QEMU
command line with N ``-object`` arguments (issue 18 item 4: 20,000 tables in
<= 2 s, linear).  Prints wall and CPU seconds, call-equivalents per table (wall
seconds / (the machine's cost of an empty Python call x N), a figure that does
not depend on how fast or how loaded the machine is) and the ratio of the
per-table cost at N to that at N/10, which stays near 1 when loading is linear.  Not a test: it prints figures.

    python benchmarks/scenario_load.py [--tables 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vmm_model.qemu.cmdline import from_qemu_args  # noqa: E402
from vmm_model.scenario import loads_toml  # noqa: E402


def toml_text(n: int) -> str:
    parts = ['title = "many"\n[machine]\ntype = "q35"\n']
    parts += [f'[[object]]\nqom-type = "memory-backend-ram"\nid = "m{i}"\nsize = "1M"\n'
              for i in range(n)]
    return "\n".join(parts)


def argv(n: int) -> list[str]:
    out = ["-m", "1G"]
    for i in range(n):
        out += ["-object", f"memory-backend-ram,id=m{i},size=1M"]
    return out


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def call_ns() -> float:
    n = 1_000_000
    return min(timeit.repeat("f()", "def f(): pass", number=n, repeat=5)) / n * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", type=int, default=20000)
    n = ap.parse_args().tables
    ns = call_ns()
    print(f"python call: {ns:.1f} ns")
    for label, make, load in (
            ("TOML [[object]] tables", toml_text, lambda t: loads_toml(t, "b.toml", "b")),
            ("-object arguments", argv, from_qemu_args)):
        small, big = make(n // 10), make(n)
        ns = min(ns, call_ns())     # calibrate next to each run: load changes
        _w0, c0 = timed(lambda: load(small))
        w1, c1 = timed(lambda: load(big))
        print(f"{label:24} n={n}: wall {w1:.2f} s, cpu {c1:.2f} s, "
              f"{w1 / n * 1e9 / ns:,.0f} call-equivalents each "
              f"(= {w1 / n * 1e9 / ns * 25e-9 * n:.2f} s at 25 ns a call), "
              f"per-item cpu n/(n/10) = {(c1 / n) / (c0 / (n // 10)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
