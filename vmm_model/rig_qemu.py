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

import errno

from backends.errors import UsageError
from backends.shim.server import Request
from vmm_model.run import MAP_IOCTLS, RESET_IOCTLS, UNMAP_IOCTLS, RunResult, compare_with_model

SCHEMA = "vfio-emu-real-qemu-rig/1"
KEEP = MAP_IOCTLS + UNMAP_IOCTLS + RESET_IOCTLS

#: "config version backend" -> why real QEMU and the model differ there, with the
#: QEMU or kernel source line; every other difference fails the rig test.
EXPLAINED: dict[str, str] = {}


#: What these recordings showed the model had wrong, and where it was fixed.
FIXED = (
    "A failed realize unmaps every section: vfio_listener_unregister() -> "
    "memory_listener_unregister() -> listener_del_address_space() (system/memory.c) sends "
    "region_del for the whole flat view, including the range whose map failed (type1 "
    "answers 0, iommufd -ENOENT).  vmm_model/container.py attach().",
    "mem-path=/dev/zero is a character device: QEMU's ftruncate() of it fails and is only "
    "reported, its MAP_SHARED mapping is shmem (drivers/char/mem.c mmap_zero() -> "
    "shmem_zero_setup()) and pins, and IOMMU_IOAS_MAP_FILE of the fd fails EINVAL "
    "(mm/gup.c memfd_pin_folios()).  The model had taken it for an ext4 file (VA pin "
    "EFAULT).  vmm_model/machine.py _fs_of(), vmm_model/simulate.py.",
    "-bios (the machine's firmware property) sizes pc.bios from the image "
    "(x86_bios_rom_init(): OVMF.fd is 2 MiB, mapped at 0xffe00000), not SeaBIOS's 256 KiB.  "
    "vmm_model/machine.py _bios_size().",
    "-drive if=pflash puts the firmware in a ROM device VFIO does not map, with no pc.bios; "
    "isa-bios is a read-only RAM copy up to 9.0 (mapped at 0xe0000) and an alias of the "
    "flash from 9.1 (not mapped): rule isa_bios_aliases_pflash, a44ea3fa7f2a.",
)


def unexplained(art: dict) -> list[str]:
    """The differences of an artefact that EXPLAINED does not explain, one line each."""
    out = []
    for r in art["runs"]:
        key = f"{r['config']} {r['version']} {r['backend']}"
        if key in EXPLAINED:
            continue
        out += [f"{key}: {d['kind']} {d['range']} {d['what']}: model {d['model']} | "
                f"real {d['real']}" for d in r.get("differences", ())]
        if r.get("sequence"):
            out.append(f"{key}: request sequence, {r['sequence']}")
    return out


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


def _step(e: dict) -> tuple:
    """A request as compared: the kernel's answer, also where QEMU overrides it
    (the model's iommufd client reports -ENOENT from IOMMU_IOAS_UNMAP as 0, as
    iommufd_backend_unmap_dma() does, and says so in the note)."""
    ret = -errno.ENOENT if e.get("note", "").startswith("ENOENT treated as success") else e["ret"]
    return (e["kind"], e["iova"], e["size"], e["ioctl"],
            e["readonly"] if e["kind"] == "map" else None, ret)


def sequence(run: dict, profile: str) -> str | None:
    """Where the ordered map/unmap requests of realize and reset first differ
    between the model and the recording (None: the same requests in the same
    order: range, ioctl, read-only, kernel answer)."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.report import event_json
    from vmm_model.run import model_version
    from vmm_model.scenario import from_qemu_args
    try:
        plan = make_plan(from_qemu_args(run["args"]), get_qemu(model_version(run["qemu"])),
                         run["backend"], kernel=profile)
    except UsageError as e:
        return f"model cannot plan: {e}"
    model = [_step(event_json(e)) for e in plan.events
             if e.kind in ("map", "unmap") and e.phase in ("realize", "reset")]
    real = [_step(e) for e in run_result(run, profile).events()]
    for i, (m, r) in enumerate(zip(model, real)):
        if m != r:
            return f"step {i}: model {m} | real {r}"
    if len(model) != len(real):
        i = min(len(model), len(real))
        return (f"step {i}: model {model[i] if i < len(model) else 'nothing'} | "
                f"real {real[i] if i < len(real) else 'nothing'}")
    return None


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
        run["sequence"] = sequence(run, profile)
        runs.append(run)
    return {"schema": SCHEMA, "kernel": rig["kernel"]["name"], "release": art["release"],
            "profile": profile, "qemu_host": rig["qemu"], "versions": art["versions"],
            "set_seconds": s["seconds"], "boot_seconds": rig["timings"]["boot"], "runs": runs,
            "fd_kinds": art.get("fd_kinds", [])}


def counts(art: dict) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(version, backend) -> (runs agreeing on outcome and mappings, runs agreeing
    on the whole request sequence too, runs)."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in art["runs"]:
        if r.get("missing"):
            continue
        c = out.setdefault((r["version"], r["backend"]), [0, 0, 0])
        c[0] += not r["differences"]
        c[1] += not r["differences"] and not r["sequence"]
        c[2] += 1
    return {k: tuple(v) for k, v in out.items()}


def _versions(art: dict) -> list[tuple[str, str]]:
    """(label, x.y.z) of the QEMUs the guest had, in backends/rig/real_qemu.py's order."""
    from backends.rig.real_qemu import QEMUS
    return [(v, art["versions"][v]) for v in QEMUS if v in art["versions"]]


# The disk-fs set on the stock kernels (backends/rig/guest/test_disk_fs.py asserts it there).
DISK_FS = """## Guest RAM on a disk file system (set `disk-fs`, stock kernels)

`vfio-emu rig run --kernel debian-6.1 --set disk-fs` (and debian-6.12, debian-7.2):
the stock kernels' initramfs carries ext4 and loop (`backends/rig/kernels.py`
`STOCK_MODULES`); `backends/rig/guest/test_disk_fs.py` makes an ext4 image on the
guest's /tmp, mounts it on a loop device and maps a file on it with type1
(VFIO_IOMMU_MAP_DMA, edu attached), on the guest kernel and on SimHost(its profile):

| mapping of the ext4 file | DMA map | 6.1 | 6.12, 7.2 |
|---|---|---|---|
| MAP_SHARED, PROT_READ\\|WRITE | READ\\|WRITE | 0 | -EFAULT |
| MAP_PRIVATE, untouched / touched | READ\\|WRITE | 0 | 0 |
| MAP_SHARED, PROT_READ (O_RDONLY fd) | READ | 0 | 0 |

Real and simulated answers agree on all three kernels.  The -EFAULT is mm/gup.c
check_vma_flags() -> writable_file_mapping_allowed() (8ac268436e6d "mm/gup: disallow
FOLL_LONGTERM GUP-nonfast writing to file-backed mappings", 6.5; profile switch
`longterm_pin_refuses_writable_file`).  Real QEMU 7.2 and 10.0 with
`-object memory-backend-file,mem-path=<ext4 file>,share=on` fail realize with
"Bad address" on 6.12 and 7.2 and realize on 6.1; `share=off` realizes everywhere.
"""


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
             "guest runner and this comparison share) × QEMU releases × type1/iommufd.  On "
             "iommufd-7.2+fix only QEMU 11.1 with iommufd runs: the fix changes only "
             "iommufd_ioas_map_file(), and 11.1 is the only release here that issues "
             "IOMMU_IOAS_MAP_FILE.", "",
             "Reproduce (the rig test `tests/test_rig.py::test_kernel_set[iommufd-7.2:real-qemu]` "
             "does the same and fails on a difference not explained below):", "",
             "```console",
             "$ vfio-emu rig run --kernel iommufd-7.2 --set real-qemu --json > rig.json",
             "$ python scripts/real_qemu_doc.py rig.json   # fixtures/rig/real-qemu-iommufd-7.2.json "
             "and this page",
             "```", "",
             "Each run in `fixtures/rig/real-qemu-KERNEL.json` keeps the decoded requests in the "
             "form `vfio-emu run --json` reports them (`plans[].requests`), so a run of the same "
             "binary and command line on the simulated kernel (`vfio-emu run --kernel PROFILE "
             "-- BINARY ARGS`) compares request by request; `vmm_model.rig_qemu.run_result(run, "
             "profile).json()` is the recording as that document's plan.  "
             "`tests/test_rig_real_qemu.py` does that for six of the recorded runs: real QEMU "
             "under the shim on the simulated kernel issues the same map and unmap requests "
             "and gets the same answers as in the rig.", ""]
    lines += ["## Agreement", "",
              "Each cell: runs where model and real QEMU agree on the outcome and on every "
              "mapping in effect once the machine is up / runs where, in addition, the "
              "whole ordered sequence of map and unmap requests of realize and reset is the "
              "same (range, ioctl, read-only, kernel answer) / runs.", "",
              "| kernel (profile) | QEMU | type1 | iommufd |", "|---|---|---|---|"]
    for art in arts:
        c = counts(art)
        for v, full in _versions(art):
            cells = []
            for b in ("type1", "iommufd"):
                a, q, n = c.get((v, b), (0, 0, 0))
                cells.append(f"{a} / {q} / {n} ({100 * a // n} %)" if n else "not run")
            lines.append(f"| {art['kernel']} ({art['profile']}) | {full} | {' | '.join(cells)} |")
    lines += ["", "## Timing", "", "Wall clock of the set on the host that recorded it "
              "(the guest runs under TCG; the host's two cores were shared with other runs).",
              ""]
    for art in arts:
        runs = [r for r in art["runs"] if not r.get("missing")]
        lines.append(f"- {art['kernel']}: {len(runs)} QEMU runs in {art['set_seconds']:.0f} s "
                     f"(guest boot {art['boot_seconds']:.0f} s)")
    lines += ["", "## Outcomes per configuration", "",
              "`realize`: QMP answered with the device realized; `fails`: QEMU's own last "
              "error line.  A cell marked **≠** disagrees with the model (listed below).", ""]
    for art in arts:
        lines += [f"### {art['kernel']}", "", "| configuration | " +
                  " | ".join(f"{v} {b}" for v, _ in _versions(art) for b in ("type1", "iommufd")) +
                  " |", "|---|" + "---|" * (2 * len(art["versions"]))]
        by = {(r["config"], r["version"], r["backend"]): r for r in art["runs"]}
        for cfg in CONFIGS:
            cells = []
            for v, _ in _versions(art):
                for b in ("type1", "iommufd"):
                    r = by.get((cfg.name, v, b))
                    if r is None or r.get("missing"):
                        cells.append("not run")
                        continue
                    o = "realize" if r["reached"] else "fails"
                    cells.append(o + (" **≠**" if r["differences"] or r["sequence"] else ""))
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
            if r.get("sequence"):
                any_diff = True
                lines.append(f"- {art['kernel']} `{r['config']} {r['version']} {r['backend']}`: "
                             f"request sequence, {r['sequence']}")
    if not any_diff:
        lines.append("None.")
    lines += ["", "Fixed in the model after earlier runs of this set:", ""]
    lines += [f"- {f}" for f in FIXED]
    lines += ["", "## What the memory fd is: the VA path and the MAP_FILE path", "",
              "`backends/rig/guest/test_fd_kinds.py` (same boot): for each kind of memory a "
              "backend hands to VFIO, the real clients' ioctls on the guest kernel and on the "
              "simulated kernel of its profile, step by step, with edu attached (pinning at "
              "map time).  `v`: the fd mapped MAP_SHARED, `p`: MAP_PRIVATE; answers are the "
              "guest kernel's (`same` when the simulated kernel answered the same at every "
              "step).  The simulated answers come from mm/gup.c check_vma_flags() / "
              "writable_file_mapping_allowed() (VA path) and mm/gup.c memfd_pin_folios() "
              "(MAP_FILE: shmem and hugetlbfs files only); see docs/kernel-model.md.  "
              "/dev/zero has no node in the simulated kernel; on the guest kernel "
              "`test_dev_zero_on_the_guest_kernel` asserts what QEMU's mem-path=/dev/zero "
              "gets: its shared and private mappings pin (drivers/char/mem.c mmap_zero(): "
              "shmem_zero_setup(), or anonymous), MAP_FILE of the fd fails EINVAL.", ""]
    maps = ("ioas_map", "map_file", "map_dma")
    for art in arts:
        if not art.get("fd_kinds"):
            continue
        lines += [f"### {art['kernel']}", "", "| kind | backend | requests: guest kernel | "
                  "simulated kernel |", "|---|---|---|---|"]
        for t in art["fd_kinds"]:
            steps = [f"{op[0]}({op[2] if op[0] == 'map_dma' else op[3]}"
                     f"{', ro' if op[0] == 'map_file' and len(op) > 7 else ''}) = {ans}"
                     for op, ans in zip(t["ops"], t["real"]) if op[0] in maps]
            same = "same" if t["real"] == t["sim"] else "**differs**"
            lines.append(f"| {t['kind']} | {t['backend']} | {'; '.join(steps)} | {same} |")
        lines.append("")
    lines += ["", DISK_FS]
    from backends.rig.real_qemu import BASE, backend_args
    lines += ["", "## The configurations", "",
              f"Each runs as `QEMU {' '.join(BASE)} ARGS` plus, for type1, "
              f"`{' '.join(backend_args('type1', 'BDF'))}`, for iommufd "
              f"`{' '.join(backend_args('iommufd', 'BDF'))}` (BDF: the guest's edu), and "
              "`-qmp stdio`.  The guest mounts tmpfs on /dev/shm, hugetlbfs on "
              "/dev/hugepages and ramfs on /dev/ramfs first.", "",
              "Not covered in this set: a disk file system (the iommufd kernels have neither "
              "loop nor ext4, and the 9p run directory refuses shared writable mmaps without "
              "cache=mmap; the disk-fs set above covers ext4 on the stock kernels), "
              "memory-backend-epc (the guest has no SGX), KVM-only behaviour (the nested QEMU "
              "runs TCG), and what happens once firmware runs (QEMU stays paused).", ""]
    for cfg in CONFIGS:
        lines.append(f"- `{cfg.name}`: {cfg.doc}; `{' '.join(cfg.args) or '(base only)'}`")
    return "\n".join(lines) + "\n"
