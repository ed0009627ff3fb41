"""The gallery under real QEMU: every gallery scenario (vmm_model/gallery/) that
a QEMU command line can express, run by the real QEMU binaries on the simulated
kernel (``vfio-emu run``) with type1 and iommufd on several kernel profiles, and
compared with the model (``compare_with_model``).

``python -m vmm_model.run_sweep`` runs the whole grid (about 10 minutes on 2
cores) and writes ``docs/run-sweep.json`` and the table between the
``run-sweep`` markers of ``docs/run-real-qemu.md``; tests/test_run_sweep.py
checks that the table is generated from the JSON and re-runs a sample live.

``python -m vmm_model.run_sweep --rig fixtures/rig/real-qemu-*.json`` replays
the kernel rig's recordings of real QEMU on a real kernel on the simulated
kernel (``rig_replay()``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vmm_model.scenario import Scenario

SWEEP_VERSIONS = ("7.2", "10.0", "11.1")
SWEEP_BACKENDS = ("type1", "iommufd")
SWEEP_KERNELS = ("6.12", "7.2")
"""6.12: iommufd without IOMMU_IOAS_MAP_FILE; 7.2: with it (and dma-buf)."""
BASE_ARGS = ["-accel", "tcg", "-nodefaults", "-display", "none", "-S"]
DEFAULT_BDF = "0000:00:04.0"
ROOT = Path(__file__).resolve().parent.parent
JSON_PATH = ROOT / "docs" / "run-sweep.json"
DOC_PATH = ROOT / "docs" / "run-real-qemu.md"
BEGIN, END = "<!-- run-sweep: begin (generated) -->", "<!-- run-sweep: end -->"


class NotExpressible(Exception):
    """The scenario describes something a QEMU command line cannot (the reason)."""


def _size(n: int) -> str:
    """A size with QEMU's suffix (-m reads a bare number as MiB)."""
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return f"{n}B"


def _val(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, tuple):
        raise NotExpressible(f"a list-valued property ({v!r})")
    return str(v)


def _opts(head: str, props: dict) -> str:
    return ",".join([head] + [f"{k}={_val(v)}" for k, v in props.items()])


def not_expressible(sc: Scenario) -> str | None:
    """Why ``sc`` is not a QEMU command line (None when it is)."""
    if sc.sections:
        return "[[section]]: a memory map given section by section, not a VM QEMU builds"
    if sc.viommu_maps is not None:
        return "[viommu] map: vIOMMU mappings a guest driver would make"
    if sc.incoming:
        return f"incoming {sc.incoming} migration: needs a source QEMU"
    if sc.host:
        return "[host]: a host IOMMU model (QEMU cannot choose it)"
    for d in sc.devices:
        model_only = sorted(k for k in d.props if k.startswith("x-") and k != "x-use-canonical-path-for-ramblock-id")
        if model_only:
            return (f"-device {d.type} {model_only[0]}: the model's stand-in for what a guest "
                    "or the host decides")
    paths = [sc.memory.get("mem-path")] + [o.props.get("mem-path") for o in sc.objects]
    if any(p and p.startswith("/dev/hugepages") for p in paths):
        return "hugetlbfs mem-path: needs free huge pages (the recording machine has none)"
    return None


def scenario_argv(sc: Scenario, backend: str, shm_dir: str, disk_dir: str) -> list[str]:
    """QEMU arguments for ``sc`` with one vfio-pci device on ``backend``.  File
    paths move into ``shm_dir`` (``/dev/shm/...``: tmpfs) or ``disk_dir`` (any
    other path: a disk file system); read-only files are created at their size."""
    why = not_expressible(sc)
    if why:
        raise NotExpressible(why)

    def place(path: str, size: int, readonly: bool) -> str:
        new = os.path.join(shm_dir if path.startswith("/dev/shm/") else disk_dir,
                           os.path.basename(path.rstrip("/")) or "ram")
        if readonly and not os.path.exists(new):
            with open(new, "wb") as f:
                f.truncate(size)
        return new

    args = list(BASE_ARGS)
    machine = {k: v for k, v in sc.machine.items() if k != "vga"}
    args += ["-machine", _opts(f"type={machine.pop('type', 'q35')}", machine)]
    if "vga" in sc.machine:
        args += ["-vga", sc.machine["vga"]]
    mem = dict(sc.memory)
    if "size" not in mem and "memory-backend" in sc.machine:
        backend_obj = sc.object(sc.machine["memory-backend"])
        if backend_obj is not None and "size" in backend_obj.props:
            mem["size"] = backend_obj.props["size"]
    mem_path = mem.pop("mem-path", None)
    if mem:
        args += ["-m", _opts(_size(mem.pop("size", 128 << 20)),
                             {k: _size(v) if k == "maxmem" else v for k, v in mem.items()})]
    if mem_path:
        args += ["-mem-path", place(mem_path, 0, False)]
    for o in sc.objects:
        if o.type == "iommufd":
            continue                            # the backend decides (below)
        props = dict(o.props)
        if "mem-path" in props:
            props["mem-path"] = place(props["mem-path"], props.get("size", 0) + props.get("offset", 0),
                                      bool(props.get("readonly")))
        args += ["-object", _opts(o.type, {"id": props.pop("id"), **props})]
    for node in sc.numa:
        args += ["-numa", f"node,memdev={node}"]
    vfio = [d for d in sc.devices if d.type == "vfio-pci"] or [None]
    for d in sc.devices:
        if d.type != "vfio-pci":
            args += ["-device", _opts(d.type, d.props)]
    if backend == "iommufd":
        args += ["-object", "iommufd,id=iommufd0"]
    for d in vfio:
        props = {"host": DEFAULT_BDF} if d is None else \
            {k: v for k, v in d.props.items() if k != "iommufd"}
        if backend == "iommufd":
            props["iommufd"] = "iommufd0"
        args += ["-device", _opts("vfio-pci", props)]
    return args


@contextmanager
def scratch():
    """(tmpfs dir, disk dir), both removed afterwards."""
    from backends.shim.build import cache_dir
    disk_base = cache_dir()
    disk_base.mkdir(parents=True, exist_ok=True)
    shm = tempfile.mkdtemp(prefix="vfio-emu-sweep-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    disk = tempfile.mkdtemp(prefix="sweep-", dir=disk_base)
    try:
        yield shm, disk
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)


_SHORT = {"VFIO_IOMMU_MAP_DMA": "MAP_DMA", "IOMMU_IOAS_MAP": "IOAS_MAP",
          "IOMMU_IOAS_MAP_FILE": "MAP_FILE"}


def outcome(res) -> str:
    """The cell of the table: what real QEMU did with guest RAM."""
    from vmm_model.run import final_maps
    if not res.reached:
        refused = next((e for e in res.events() if e["kind"] == "map" and e["ret"]), None)
        return f"fails: {_SHORT[refused['ioctl']]} {refused['errno']}" if refused else "QEMU error"
    live = [e for e in final_maps(res.events()).values() if e["ret"] == 0]
    kinds = sorted({"FILE" if e["ioctl"] == "IOMMU_IOAS_MAP_FILE" else "VA" for e in live})
    return "+".join(kinds) or "nothing mapped"


def run_row(name: str, label: str, backend: str, kernel: str, binary: str) -> dict:
    """One cell: ``name`` run by QEMU ``label`` (at ``binary``) on ``backend``/``kernel``."""
    from vmm_model import gallery
    from vmm_model.run import compare_with_model, run
    sc = gallery.load(name)
    with scratch() as (shm, disk):
        args = scenario_argv(sc, backend, shm, disk)
        res = run(binary, args, kernel=kernel, timeout=30)
        diffs = compare_with_model(res, args)
        last = (res.stderr.strip().splitlines() or [""])[-1]
        for d in (shm, disk):
            last = last.replace(d, "DIR")
    return {"scenario": name, "qemu": label, "version": res.version, "backend": backend,
            "kernel": kernel, "outcome": outcome(res),
            "error": "" if res.reached else re.sub(r"0x[0-9a-f]{11,}", "0x…", last),   # pointers
            "killed": res.killed, "diffs": diffs, "agree": not diffs and not res.killed}


RIG_NOT_HERE = ("/dev/hugepages", "/dev/ramfs", "hugetlb=on")
"""Rig configurations this host cannot run: hugetlbfs (no huge pages) and ramfs mounts."""


def rig_replay(rec: dict, profile: str, binary: str) -> list[dict] | None:
    """One recording of the rig's real-qemu set (fixtures/rig/real-qemu-*.json:
    real QEMU on a real kernel, QEMU's edu bound to vfio-pci) run again with the
    same binary and command line under the shim on the kernel's simulated
    profile, with an edu-like function that has no reset method, as the rig's
    edu (PciShape reset_works=False).  Where the DMA map/unmap requests made
    until QMP answered, and their answers, differ (run.same_requests()); None
    when this host cannot run the configuration (RIG_NOT_HERE)."""
    from backends.shim.pci import PciShape
    from vmm_model.rig_qemu import run_result
    from vmm_model.run import MAP_IOCTLS, UNMAP_IOCTLS, run, same_requests, vfio_devices
    if any(p in a for a in rec["args"] for p in RIG_NOT_HERE):
        return None
    with scratch() as (shm, _disk):
        args = [a.replace("/dev/shm/", shm + "/") for a in rec["args"]]
        from backends.rig.real_qemu import CONFIGS
        for path, size in next(c for c in CONFIGS if c.name == rec["config"]).files:
            with open(path.replace("/dev/shm/", shm + "/"), "wb") as f:
                f.truncate(size)
        sim = run(binary, args, kernel=profile, timeout=30,
                  devices={bdf: PciShape(reset_works=False) for bdf in vfio_devices(args)})
    sim.requests = sim.requests[:sim.ready_seq]
    return same_requests(run_result(rec, profile), sim, MAP_IOCTLS + UNMAP_IOCTLS)


def sweep(binaries: dict[str, str]) -> dict:
    """The whole grid for the QEMU binaries given (label -> path)."""
    import sys
    import time
    from vmm_model import gallery
    rows, skipped = [], {}
    t0 = time.monotonic()
    for name in gallery.names():
        why = not_expressible(gallery.load(name))
        if why:
            skipped[name] = why
            continue
        for label, binary in binaries.items():
            for backend in SWEEP_BACKENDS:
                for kernel in SWEEP_KERNELS:
                    rows.append(run_row(name, label, backend, kernel, binary))
                    r = rows[-1]
                    print(f"{len(rows):4} {name} {label} {backend} {kernel}: {r['outcome']} "
                          f"{'=' if r['agree'] else r['diffs']}", file=sys.stderr, flush=True)
    return {"schema_version": 1, "versions": {k: rows_version(rows, k) for k in binaries},
            "backends": list(SWEEP_BACKENDS), "kernels": list(SWEEP_KERNELS),
            "seconds": round(time.monotonic() - t0), "rows": rows, "not_run": skipped}


def rows_version(rows: list[dict], label: str) -> str | None:
    return next((r["version"] for r in rows if r["qemu"] == label), None)


def render_table(doc: dict) -> str:
    """Markdown: a summary (agreed/total per QEMU × backend × kernel), the grid
    (one line per scenario and QEMU, one cell per backend × kernel), then the
    scenarios not run and why."""
    cols = [(b, k) for b in doc["backends"] for k in doc["kernels"]]
    agreed = sum(r["agree"] for r in doc["rows"])
    out = [f"{len(doc['rows'])} configurations (one QEMU run each, {doc['seconds'] // 60} min "
           f"{doc['seconds'] % 60} s in all); the model agrees on {agreed}.", "",
           "| QEMU | " + " | ".join(f"{b} / {k}" for b, k in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for label, version in doc["versions"].items():
        cells = []
        for b, k in cols:
            sel = [r for r in doc["rows"] if (r["qemu"], r["backend"], r["kernel"]) == (label, b, k)]
            cells.append(f"{sum(r['agree'] for r in sel)}/{len(sel)}")
        out.append(f"| {version or label} | " + " | ".join(cells) + " |")
    out += ["", "Per scenario (`=`: the model predicts the same; `≠`: it does not):", "",
            "| scenario | QEMU | " + " | ".join(f"{b} / {k}" for b, k in cols) + " |",
            "|---|---|" + "---|" * len(cols)]
    by = {(r["scenario"], r["qemu"], r["backend"], r["kernel"]): r for r in doc["rows"]}
    for name in dict.fromkeys(r["scenario"] for r in doc["rows"]):
        for label in doc["versions"]:
            cells = []
            for b, k in cols:
                r = by.get((name, label, b, k))
                cells.append("-" if r is None else f"{r['outcome']} {'=' if r['agree'] else '≠'}")
            out.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    out += ["", "Not run (a command line cannot express them):", ""]
    out += [f"* {name}: {why}" for name, why in doc["not_run"].items()]
    return "\n".join(out)


def write_docs(doc: dict) -> None:
    JSON_PATH.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    text = DOC_PATH.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC_PATH.write_text(f"{head}{BEGIN}\n{render_table(doc)}\n{END}{tail}")


def rig_main(paths: list[str]) -> int:
    """``python -m vmm_model.run_sweep --rig ARTEFACT...``: every recording of
    the artefacts replayed on the simulated kernel (rig_replay()); one line each."""
    from vmm_model.qemu.launcher import find_qemu
    bad = 0
    for path in paths:
        art = json.loads(Path(path).read_text())
        same = ran = skipped = 0
        for rec in art["runs"]:
            binary = None if rec.get("missing") else find_qemu(rec["version"])[0]
            diffs = None if binary is None else rig_replay(rec, art["profile"], binary)
            if diffs is None:
                skipped += 1
                continue
            ran += 1
            same += not diffs
            print(f"{rec['config']} {rec['version']} {rec['backend']}: "
                  f"{'same' if not diffs else diffs}", flush=True)
        print(f"{path}: {same}/{ran} the same on simulated {art['profile']}; "
              f"{skipped} not run here")
        bad += ran - same
    return 1 if bad else 0


def main() -> int:
    import sys
    if sys.argv[1:2] == ["--rig"]:
        return rig_main(sys.argv[2:])
    from vmm_model.qemu.launcher import find_qemu
    binaries = {}
    for label in SWEEP_VERSIONS:
        path, why = find_qemu(label)
        if path is None:
            print(f"run_sweep: {why}")
            return 1
        binaries[label] = path
    doc = sweep(binaries)
    write_docs(doc)
    agreed = sum(r["agree"] for r in doc["rows"])
    print(f"{agreed}/{len(doc['rows'])} configurations agree; wrote {JSON_PATH} and {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
