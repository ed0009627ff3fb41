"""Real QEMU in the kernel rig against the model (docs/real-qemu-rig.md).

The rig's ``real-qemu`` set (backends/rig/guest/test_real_qemu.py) records
every VFIO/iommufd ioctl real QEMU binaries make on the guest kernel.  Here a
recording becomes a ``vmm_model.run.RunResult`` (the shape ``vfio-emu run``
produces for real QEMU on the simulated kernel), and ``compare_with_model()``
puts the model's plan for the same command line, QEMU version and kernel
profile beside it: outcome, and what is mapped once the machine is up (range,
ioctl = map kind, read-only, file offset, kernel answer).

``summarize(rig_json)`` turns one rig run's JSON into the committed artefact
(fixtures/rig/real-qemu-KERNEL.json); ``render(artefacts)`` is the page.
"""

from __future__ import annotations

from backends.errors import UsageError
from backends.shim.server import Request
from vmm_model.run import MAP_IOCTLS, RESET_IOCTLS, UNMAP_IOCTLS, RunResult, compare_with_model

SCHEMA = "vfio-emu-real-qemu-rig/1"
KEEP = MAP_IOCTLS + UNMAP_IOCTLS + RESET_IOCTLS

#: "config version backend" -> why real QEMU and the model differ there, with the
#: QEMU or kernel source line; every other difference fails the rig test.
EXPLAINED: dict[str, str] = {}


def unexplained(art: dict) -> list[str]:
    """The differences of an artefact that EXPLAINED does not explain, one line each."""
    return [f"{r['config']} {r['version']} {r['backend']}: {d['kind']} {d['range']} "
            f"{d['what']}: model {d['model']} | real {d['real']}"
            for r in art["runs"] for d in r.get("differences", ())
            if f"{r['config']} {r['version']} {r['backend']}" not in EXPLAINED]


def _request(d: dict) -> Request:
    return Request(d["seq"], d["op"], d["fd_kind"], d["name"], d.get("fields", {}), d["ret"],
                   d.get("out", {}), d.get("backing"))


def run_result(run: dict, profile: str) -> RunResult:
    """The RunResult of one recorded run, up to QMP's answer (``ready``): what
    QEMU mapped while realizing and resetting the machine."""
    reqs = [_request(r) for r in run["requests"]]
    ready = run.get("ready")
    res = RunResult(run["binary"], list(run["args"]), run["qemu"], profile, run["backend"],
                    requests=reqs if ready is None else reqs[:ready], stderr=run["stderr"],
                    status=run["exit_status"], reached=run["reached"], ready_seq=None)
    return res


def compare(run: dict, profile: str) -> list[dict]:
    """``compare_with_model()`` for one run; a command line the model cannot read
    is a difference too."""
    try:
        return compare_with_model(run_result(run, profile), run["args"])
    except UsageError as e:
        return [{"kind": "realize", "range": "-", "what": "model cannot plan",
                 "model": str(e), "real": run["reached"] or "fails"}]


def outcome(run: dict) -> str:
    if run["reached"]:
        return "realize"
    err = [ln for ln in run["stderr"].splitlines() if "qemu-system" in ln]
    return "fails: " + (err[-1].split(": ", 1)[-1] if err else f"exit {run['exit_status']}")


def summarize(rig: dict) -> dict:
    """The artefact from a vfio-emu-rig/1 document of the ``real-qemu`` set: per
    run the command line, outcome, the decoded map/unmap/reset requests and the
    differences with the model."""
    from backends.rig.real_qemu import decode
    (s,) = [s for s in rig["sets"] if s["name"] == "real-qemu"]
    art = s.get("artefact")
    if art is None:
        raise UsageError("the rig run has no real-qemu artefact", where="real-qemu set")
    profile = art["profile"]
    runs = []
    for r in art["runs"]:
        if r.get("missing"):
            runs.append({k: r[k] for k in ("config", "version", "backend", "binary")} |
                        {"missing": True})
            continue
        reqs, ready = decode(r["log"])
        keep = [q for q in reqs if q.op == "open" or q.name in KEEP]
        run = {"config": r["config"], "version": r["version"], "backend": r["backend"],
               "binary": r["binary"], "qemu": art["versions"][r["version"]], "args": r["args"],
               "reached": r["reached"], "exit_status": r["exit_status"], "stderr": r["stderr"],
               "seconds": r["seconds"],
               "ready": None if ready is None else sum(1 for q in keep if q.seq < ready),
               "requests": [q.json() for q in keep]}
        run["outcome"] = outcome(run)
        run["differences"] = compare(run, profile)
        runs.append(run)
    return {"schema": SCHEMA, "kernel": rig["kernel"]["name"], "release": art["release"],
            "profile": profile, "qemu_host": rig["qemu"], "versions": art["versions"],
            "set_seconds": s["seconds"], "boot_seconds": rig["timings"]["boot"], "runs": runs}


def counts(art: dict) -> dict[tuple[str, str], tuple[int, int]]:
    """(version, backend) -> (agreeing runs, runs)."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in art["runs"]:
        if r.get("missing"):
            continue
        c = out.setdefault((r["version"], r["backend"]), [0, 0])
        c[0] += not r["differences"]
        c[1] += 1
    return {k: (a, n) for k, (a, n) in out.items()}


def render(arts: list[dict]) -> str:
    """docs/real-qemu-rig.md from the committed artefacts."""
    from backends.rig.real_qemu import CONFIGS
    lines = ["# Real QEMU in the kernel rig vs the model", "",
             "<!-- generated by scripts/real_qemu_doc.py from fixtures/rig/real-qemu-*.json; "
             "do not edit -->", "",
             "The rig's `real-qemu` set (`vfio-emu rig run --kernel K --set real-qemu`) runs "
             "real QEMU binaries inside the rig guest against QEMU's `edu` device bound to "
             "vfio-pci, with an `LD_PRELOAD` observer (`backends/rig/vfio_observe.c`) that "
             "records every VFIO and iommufd ioctl: request, argument bytes in and out, "
             "return value.  QEMU starts paused (`-S`); once QMP answers, the devices are "
             "realized and the machine reset, and QEMU is told to `quit`.  On the host each "
             "recording becomes the event list `vfio-emu run` produces for real QEMU on the "
             "simulated kernel (docs/run-real-qemu.md), and `vfio-emu plan` for the same "
             "command line, QEMU version and the guest kernel's profile is compared with "
             "it: realize outcome, then every mapping in effect once the machine is up "
             "(range, ioctl = map kind, read-only flag, file offset of IOMMU_IOAS_MAP_FILE, "
             "kernel answer).", "",
             f"{len(CONFIGS)} configurations (`backends/rig/real_qemu.py`, the one list the "
             "guest runner and this comparison share) × QEMU releases × type1/iommufd.", ""]
    lines += ["## Agreement", "", "| kernel (profile) | QEMU | type1 | iommufd |",
              "|---|---|---|---|"]
    for art in arts:
        c = counts(art)
        for v, full in art["versions"].items():
            cells = []
            for b in ("type1", "iommufd"):
                a, n = c.get((v, b), (0, 0))
                cells.append(f"{a}/{n} ({100 * a // n if n else 0} %)" if n else "not run")
            lines.append(f"| {art['kernel']} ({art['profile']}) | {full} | {' | '.join(cells)} |")
    lines += ["", "## Timing", ""]
    for art in arts:
        runs = [r for r in art["runs"] if not r.get("missing")]
        lines.append(f"- {art['kernel']}: {len(runs)} QEMU runs in {art['set_seconds']:.0f} s "
                     f"(guest boot {art['boot_seconds']:.0f} s)")
    lines += ["", "## Outcomes per configuration", "",
              "`realize`: QMP answered with the device realized; `fails`: QEMU's own last "
              "error line.  A cell marked **≠** disagrees with the model (listed below).", ""]
    for art in arts:
        lines += [f"### {art['kernel']}", "", "| configuration | " +
                  " | ".join(f"{v} {b}" for v in art["versions"] for b in ("type1", "iommufd")) +
                  " |", "|---|" + "---|" * (2 * len(art["versions"]))]
        by = {(r["config"], r["version"], r["backend"]): r for r in art["runs"]}
        for cfg in CONFIGS:
            cells = []
            for v in art["versions"]:
                for b in ("type1", "iommufd"):
                    r = by.get((cfg.name, v, b))
                    if r is None or r.get("missing"):
                        cells.append("not run")
                        continue
                    o = "realize" if r["reached"] else "fails"
                    cells.append(o + (" **≠**" if r["differences"] else ""))
            lines.append(f"| `{cfg.name}` | {' | '.join(cells)} |")
        lines.append("")
    lines += ["## Disagreements", ""]
    any_diff = False
    for art in arts:
        for r in art["runs"]:
            for d in r.get("differences", ()):
                any_diff = True
                key = f"{r['config']} {r['version']} {r['backend']}"
                lines.append(f"- {art['kernel']} `{key}`: {d['kind']} {d['range']} "
                             f"{d['what']}: model {d['model']} | real {d['real']}")
                why = EXPLAINED.get(key)
                if why:
                    lines.append(f"  - {why}")
    if not any_diff:
        lines.append("None.")
    lines += ["", "## The configurations", ""]
    for cfg in CONFIGS:
        lines.append(f"- `{cfg.name}`: {cfg.doc}; `{' '.join(cfg.args) or '(base only)'}`")
    return "\n".join(lines) + "\n"
