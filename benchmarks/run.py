"""Every issue-18 figure in one table: ``python benchmarks/run.py``.

Rows (each measured in a fresh child process, so RSS is its own):

  plan 1 TiB --json    ``vfio-emu plan --json`` of a 1 TiB virtio-mem guest,
                       2 MiB blocks, all plugged (524,288 sections)
  plan 64 GiB text, text --all, json
                       the same at 64 GiB (32,768 sections): text folds runs of
                       identical sections into one row, --all lists each one, as
                       JSON does; JSON's value is its CPU over both
  compare, migrate-check  over the largest guest planned (1 TiB; 64 GiB with
                       --quick): ``compare --backends iommufd --kernels 7.2,7.2+fix``
                       (two cells) and ``migrate-check --to kernel=7.2+fix`` (two
                       sides); value: CPU seconds over the same guest's JSON plan
  --help start         ``vfio-emu --help`` against bare ``python3 -c pass``
  load 20k objects     ``load_toml()`` of a scenario with 20,000 [[object]] tables
  map+unmap B/L        MAP+UNMAP pairs through the real client (backends/type1.py,
                       backends/iommufd.py) on SimHost with L live 4 KiB mappings,
                       per backend B; bytes of RSS per live mapping

Columns: CPU seconds of the work (the machine is shared: wall time is noise,
CPU time is not), the cost of one empty Python call measured around that row
(the mean of the calibrations just before and just after it: a shared VM's
speed drifts), call-equivalents per work unit (CPU seconds / (that call cost
x units): a figure that depends much less on the machine), peak RSS, the
target, and the ratio to the figure kept in benchmarks/baseline.json (< 1 is
better).  ``--save`` replaces the baseline
with this run.  Not a test: nothing here fails.

    python benchmarks/run.py [--quick] [--timeout 300] [--save]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("baseline.json")
BIN = Path(sys.executable).with_name("vfio-emu")

VIRTIO_MEM = """title = "{gib} GiB of virtio-mem in 2 MiB blocks, all plugged"
qemu = "10.1"
backend = "iommufd"
[memory]
size = "4G"
slots = 1
maxmem = "{maxmem}G"
[[object]]
qom-type = "memory-backend-memfd"
id = "vmem0"
size = "{gib}G"
[[device]]
driver = "virtio-mem-pci"
id = "vm0"
memdev = "vmem0"
block-size = "2M"
requested-size = "{gib}G"
x-populated = ["0-{last}"]
"""

# The child that times one load_toml() (CPU seconds on stdout).
LOAD = """import sys, time
from vmm_model.scenario import load_toml
t = time.process_time(); load_toml(sys.argv[1]); print(time.process_time() - t)"""

# The child that times MAP+UNMAP pairs (benchmarks/dma_map_rate.py run()).
PAIRS = """import json, sys
sys.path.insert(0, "benchmarks")
from dma_map_rate import run
print(json.dumps(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "7.2")))"""


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (how shared the machine was)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def call_ns() -> float:
    """CPU nanoseconds of one empty Python function call (best of 5)."""
    n = 1_000_000
    return min(timeit.repeat("f()", "def f(): pass", number=n, repeat=5,
                             timer=time.process_time)) / n * 1e9


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def child(argv: list[str], timeout: float, stdout=subprocess.PIPE) -> dict:
    """Run ``argv``: CPU seconds, wall seconds, peak RSS (MiB), stdout, and
    whether it finished within ``timeout`` CPU seconds (CPU, not wall: on a
    shared machine the wall clock says how busy the others are)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if cpu_of(p.pid) > timeout:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    out = p.stdout.read().decode() if p.stdout else ""
    err = p.stderr.read().decode()
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"cpu": ru.ru_utime + ru.ru_stime, "wall": wall, "rss": ru.ru_maxrss / 1024,
            "out": out, "err": err, "done": p.returncode == 0, "rc": p.returncode}


def best_start(argv: list[str], n: int = 7) -> float:
    """Best wall seconds of ``n`` runs of a short command."""
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="skip the 1 TiB plan and the 1M-live pairs")
    ap.add_argument("--timeout", type=float, default=300,
                    help="CPU seconds per row (default 300; the 20k-object load: at most 60)")
    ap.add_argument("--pairs", type=int, default=50_000, help="MAP+UNMAP pairs per point")
    ap.add_argument("--save", action="store_true", help="write this run as the new baseline")
    a = ap.parse_args()
    # An installed vfio-emu has its bytecode compiled (pip does it); a checkout run
    # with PYTHONDONTWRITEBYTECODE=1 would compile every module at every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "vmm_model", "backends"],
                   cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    ns = call_ns()
    base = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="vfio-emu-bench-"))

    calib = [ns]                          # the call cost measured since the last row

    def row(key, label, r, units, target, value=None):
        # the machine's speed drifts (a shared VM): each row is priced at the mean
        # of the call costs measured just before and just after it
        after = call_ns()
        rns = (calib[0] + after) / 2
        calib[0] = after
        ce = r["cpu"] / (rns * 1e-9 * units) if r.get("done") and units else None
        rows.append({"key": key, "label": label, "cpu": r["cpu"], "wall": r.get("wall"), "ns": rns,
                     "call_eq": ce, "rss": r.get("rss"), "target": target, "value": value,
                     "done": r.get("done", True)})
        print(f"  {label}: {r['cpu']:.1f} s cpu" + ("" if r.get("done", True) else
              f" (stopped: {'timeout' if r.get('rc') in (-9, None) else r.get('err', '')[-200:]})"),
              file=sys.stderr, flush=True)

    load0 = loadavg()
    print(f"calibration: {ns:.1f} ns of CPU per Python call; load average {load0}",
          file=sys.stderr)
    # text folds runs of identical sections into one row; text --all lists every
    # section, as JSON does (and as text did when the figures were taken)
    plans = [(64, 32768, "text"), (64, 32768, "text --all"), (64, 32768, "json")]
    if not a.quick:
        plans.append((1024, 524288, "json"))
    for gib, blocks, fmt in plans:
        path = tmp / f"vm{gib}.toml"
        path.write_text(VIRTIO_MEM.format(gib=gib, maxmem=gib + 4, last=blocks - 1))
        argv = [str(BIN), "plan", str(path), "--no-compare"] + {
            "text": [], "text --all": ["--all"], "json": ["--json"]}[fmt]
        with open(os.devnull, "wb") as null:
            r = child(argv, a.timeout, stdout=null)
        label = f"plan {gib if gib < 1024 else 1} {'GiB' if gib < 1024 else 'TiB'} {fmt}"
        text = {rw["key"]: rw["cpu"] for rw in rows if rw["key"].startswith("plan-64g-text")}
        row(f"plan-{gib}g-{fmt.replace(' --', '-')}", label, r, blocks,
            "<= 400 ce/section, RSS <= 1 GiB" if gib == 1024 else "json <= text",
            value=r["cpu"] / text["plan-64g-text"] if gib == 64 and fmt == "json" else None)
        if gib == 64 and fmt == "json":
            rows[-1]["vs_all"] = r["cpu"] / text["plan-64g-text-all"]
    gib, blocks, _ = plans[-1]
    path, plan_cpu = tmp / f"vm{gib}.toml", rows[-1]["cpu"]
    size = f"{gib if gib < 1024 else 1} {'GiB' if gib < 1024 else 'TiB'}"
    for key, argv in (("compare", ["compare", str(path), "--backends", "iommufd",
                                   "--kernels", "7.2,7.2+fix"]),
                      ("migrate-check", ["migrate-check", str(path), "--to", "kernel=7.2+fix"])):
        with open(os.devnull, "wb") as null:
            r = child([str(BIN)] + argv, a.timeout, stdout=null)
        row(f"{key}-{gib}g", f"{key} {size}", r, blocks, "<= 2x plan",
            value=r["cpu"] / plan_cpu if r["done"] and plan_cpu else None)

    bare = best_start([sys.executable, "-c", "pass"])
    helps = best_start([str(BIN), "--help"])
    row("help-start", "--help start (wall, best of 7)", {"cpu": helps, "done": True}, 0,
        "<= 3x python3 -c pass", value=helps / bare)

    objs = tmp / "objects.toml"
    with open(objs, "w") as f:
        f.write('title = "20,000 objects"\n[memory]\nsize = "4G"\n')
        for i in range(20000):
            f.write(f'[[object]]\nqom-type = "memory-backend-ram"\nid = "m{i}"\nsize = "1G"\n')
    r = child([sys.executable, "-c", LOAD, str(objs)], min(a.timeout, 60))
    if r["done"]:
        r["cpu"] = float(r["out"].strip())
    row("load-20k-objects", "load 20k objects", r, 20000, "<= 2 s, linear")

    lives = [1000, 100_000] + ([] if a.quick else [1_000_000])
    for backend in ("type1", "iommufd", "iommufd-noattach"):
        for live in lives:
            r = child([sys.executable, "-c", PAIRS, backend, str(live), str(a.pairs)], a.timeout)
            res = json.loads(r["out"]) if r["done"] else {}
            pr = {"cpu": res.get("cpu", r["cpu"]), "wall": r["wall"], "rss": r["rss"],
                  "done": r["done"], "rc": r["rc"], "err": r["err"]}
            row(f"pairs-{backend}-{live}", f"map+unmap {backend} {live // 1000}k live", pr, a.pairs,
                "<= 160 ce/pair, flat, <= 400 B", value=res.get("bytes_per_mapping"))

    # ---- the table -------------------------------------------------------------------
    load = f"load average {load0} at the start, {loadavg()} at the end"
    print(f"\nvfio-emu benchmarks · Python call cost measured around each row · {load} · "
          f"ratios to benchmarks/baseline.json\n")
    head = ["figure", "cpu s", "ns/call", "call-eq/unit", "RSS MiB", "value", "vs baseline", "target"]
    lines = [head]
    flat: dict[str, float] = {}
    for rw in rows:
        ce = rw["call_eq"]
        b = base.get(rw["key"], {})
        now = ce if ce is not None and "call_eq" in b else rw["value"] if "value" in b else rw["cpu"]
        was = b.get("call_eq", b.get("value", b.get("cpu")))
        ratio = f"{now / was:.2f}x" if was and now is not None and rw["done"] else "-"
        value = "-" if rw["value"] is None else (
            f"{rw['value']:.0f} B/map" if rw["key"].startswith("pairs") else
            f"{rw['value']:.2f}x plan" if rw["key"].startswith(("compare", "migrate")) else
            f"{rw['value']:.2f}x text, {rw['vs_all']:.2f}x --all" if "vs_all" in rw else
            f"{rw['value']:.2f}x")
        if rw["key"].startswith("pairs") and ce is not None:
            first = flat.setdefault(rw["key"].rsplit("-", 1)[0], ce)
            value += f", {first / ce:.2f}x of 1k"
        lines.append([rw["label"], f"{rw['cpu']:.2f}" + ("" if rw["done"] else " (stopped)"),
                      f"{rw['ns']:.1f}", "-" if ce is None else f"{ce:.0f}",
                      "-" if rw["rss"] is None else f"{rw['rss']:.0f}", value, ratio, rw["target"]])
    ws = [max(len(str(r[i])) for r in lines) for i in range(len(head))]
    for r in lines:
        print("  ".join(str(c).ljust(w) if i == 0 or i == len(head) - 1 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, ws))))
    if a.save:
        BASELINE.write_text(json.dumps({"_about": f"benchmarks/run.py --save, {time.strftime('%Y-%m-%d')}, "
                                                  f"{ns:.1f} ns per call, {load}"} | {
            rw["key"]: {k: round(v, 3) for k, v in (
            ("cpu", rw["cpu"]), ("call_eq", rw["call_eq"]), ("rss", rw["rss"]),
            ("value", rw["value"])) if v is not None} for rw in rows if rw["done"]},
            indent=1) + "\n")
        print(f"\nbaseline written: {BASELINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
