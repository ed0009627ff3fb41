"""``vfio-emu run``: a real, unmodified QEMU binary against the simulated kernel.

QEMU starts with the shim (backends/shim/vfio_shim.c) preloaded; its VFIO and
iommufd calls go to a ``ShimServer`` holding a simulated host of kernel K with
one vfio-pci function per ``-device vfio-pci,host=BDF`` (or ``sysfsdev=``).
QMP tells when the machine is created and reset; then QEMU optionally runs,
is asked to quit, and is killed if it does not.  The report lists every
request with the simulated kernel's answer, the DMA map/unmap events in the
shape of ``plan`` (vmm_model/report.py), QEMU's stderr verbatim and its exit
status.  ``compare_with_model()`` puts the model's plan for the same command
line beside it (``vfio-emu run --against-model``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from backends import uapi
from backends.base import errno_name, flag_names
from backends.errors import UsageError
from backends.shim.build import build_shim
from backends.shim.pci import PciShape
from backends.shim.server import Request, ShimServer
from vmm_model.qemu.errors import QemuError
from vmm_model.qemu.launcher import binary_version
from vmm_model.qemu.monitor import QmpMonitor
from vmm_model.scenario import split_qemu_opts

SCHEMA_VERSION = 1
MAP_IOCTLS = ("VFIO_IOMMU_MAP_DMA", "IOMMU_IOAS_MAP", "IOMMU_IOAS_MAP_FILE")
UNMAP_IOCTLS = ("VFIO_IOMMU_UNMAP_DMA", "IOMMU_IOAS_UNMAP")
RESET_IOCTLS = ("VFIO_DEVICE_RESET", "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO")
_WRITE = {"VFIO_IOMMU_MAP_DMA": uapi.VFIO_DMA_MAP_FLAG_WRITE,
          "IOMMU_IOAS_MAP": uapi.IOMMU_IOAS_MAP_WRITEABLE,
          "IOMMU_IOAS_MAP_FILE": uapi.IOMMU_IOAS_MAP_WRITEABLE}


def _bdf(value: str, where: str) -> str:
    """QEMU's PCIHostDeviceAddress: [domain:]bus:slot.function -> 0000:00:04.0."""
    try:
        parts = value.split(":")
        dom = int(parts[-3], 16) if len(parts) == 3 else 0
        bus, rest = int(parts[-2], 16), parts[-1]
        slot, fn = (int(x, 16) for x in rest.split("."))
    except (ValueError, IndexError):
        raise UsageError(f"bad PCI address {value!r}", where=where,
                         valid="[domain:]bus:slot.function, e.g. 0000:00:04.0") from None
    return f"{dom:04x}:{bus:02x}:{slot:02x}.{fn:x}"


def vfio_devices(argv: list[str]) -> list[str]:
    """The host PCI addresses the command line's vfio-pci devices name."""
    out = []
    for i, a in enumerate(argv[:-1]):
        if a.lstrip("-") != "device":
            continue
        where = f"argument {i + 2} (-device)"
        driver, props = split_qemu_opts(argv[i + 1], where)
        if (driver or props.get("driver")) != "vfio-pci":
            continue
        if "host" in props:
            out.append(_bdf(props["host"], where))
        elif "sysfsdev" in props:
            out.append(os.path.basename(props["sysfsdev"].rstrip("/")))
    return out


def _backend(argv: list[str]) -> str:
    return "iommufd" if any("iommufd=" in a for a in argv) else "type1"


def parse_until(value: str) -> str | float:
    if value in ("realize", "reset"):
        return value
    try:
        secs = float(value)
    except ValueError:
        secs = -1
    if secs < 0:
        raise UsageError(f"bad --until {value!r}", where="--until",
                         valid="realize, reset or a number of seconds")
    return secs


@dataclass
class RunResult:
    binary: str
    argv: list[str]
    version: str | None
    kernel: str
    backend: str
    requests: list[Request] = field(default_factory=list)
    stderr: str = ""
    status: int | None = None                 # exit status (negative: killed by signal)
    reached: str = ""                         # realize, reset, ran N s; "" if not even QMP
    ready_seq: int | None = None              # requests[ready_seq:] came after QMP answered
    tmpdir: str = ""                          # the run's private directory (removed at the end)
    killed: str | None = None                 # why vfio-emu had to kill QEMU
    qmp_status: str | None = None

    def events(self) -> list[dict]:
        """Map/unmap events with their phase, as the model's (vmm_model/container.py
        Event.phase): realize until the first device reset of machine creation,
        then reset until QMP answered, then runtime."""
        out, phase = [], "realize"
        for r in self.requests:
            if self.ready_seq is not None and r.seq >= self.ready_seq:
                phase = "runtime"
            elif phase == "realize" and r.name in RESET_IOCTLS:
                phase = "reset"
            if r.op == "ioctl" and r.name in MAP_IOCTLS + UNMAP_IOCTLS:
                out.append(dict(map_event(r), phase=phase))
        return out

    def json(self) -> dict:
        return {"scenario": "run", "binary": self.binary, "argv": self.argv,
                "qemu": self.version, "backend": self.backend, "kernel": self.kernel,
                "reached": self.reached, "qmp_status": self.qmp_status,
                "exit_status": self.status, "killed": self.killed, "stderr": self.stderr,
                "events": self.events(),
                "live": [{"iova": k[0], "size": k[1], "readonly": e["readonly"], "ramblock": None}
                         for k, e in sorted(final_maps(self.events()).items()) if e["ret"] == 0],
                "requests": [r.json() for r in self.requests]}


def map_event(r: Request) -> dict:
    """A map/unmap request as a plan event (vmm_model/report.py event_json's keys)."""
    f = r.fields
    size = f.get("size") if r.name.startswith("VFIO") else f.get("length")
    iova = f.get("iova", 0)
    kind = "map" if r.name in MAP_IOCTLS else "unmap"
    flags = f.get("flags", 0)
    b = r.backing or {}
    return {"kind": kind, "path": "real", "gpa": f"[0x{iova:x}, 0x{iova + (size or 0):x})",
            "ramblock": None, "fd": f.get("fd") if r.name == "IOMMU_IOAS_MAP_FILE" else None,
            "shared": bool(b.get("shared")), "ram_device": b.get("kind") == "pfnmap",
            "readonly": kind == "map" and not flags & _WRITE.get(r.name, 0),
            "iova": iova, "size": size, "vaddr": f.get("vaddr", f.get("user_va")),
            "ioctl": r.name, "fields": f, "flags": flag_names(r.name, flags),
            "ret": r.ret, "errno": errno_name(r.ret) or None, "kernel": "ran", "note": "",
            "message": "", "fatal": False, "backing": r.backing}


def run(binary: str, qemu_args: list[str], *, kernel: str = "7.2",
        until: str | float = "realize", timeout: float = 20.0,
        devices: dict[str, PciShape] | None = None, on_start=None,
        on_ready=None) -> RunResult:
    """Run ``binary qemu_args`` under the shim against simulated kernel ``kernel``.
    ``devices``: PCI address -> PciShape (default: an edu-like function for
    each vfio-pci device of the command line).  ``on_start(proc)`` is called
    once QEMU is started (tests use it to crash or stop QEMU); ``on_ready(server,
    monitor)`` once the target is reached, before quit (e.g. device DMA with
    ``server.dma()``, checked through QMP)."""
    from backends.kernel_profiles import get_profile
    profile = get_profile(kernel).name
    if devices is None:
        devices = {bdf: PciShape() for bdf in vfio_devices(qemu_args)}
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise UsageError(f"cannot run QEMU binary {binary}: not an executable file",
                         where="vfio-emu run")
    shim = build_shim()
    res = RunResult(binary, list(qemu_args), binary_version(binary), profile, _backend(qemu_args))
    tmp = res.tmpdir = tempfile.mkdtemp(prefix="vfio-emu-run-")
    server = ShimServer(profile, devices)
    proc = None
    try:
        root = os.path.join(tmp, "root")
        prefixes = server.sysfs(root)
        server.serve(os.path.join(tmp, "vfio.sock"))
        qmp = os.path.join(tmp, "qmp.sock")
        preload = " ".join(p for p in (shim, os.environ.get("LD_PRELOAD", "")) if p)
        env = dict(os.environ, LD_PRELOAD=preload, VFIO_EMU_SOCK=os.path.join(tmp, "vfio.sock"),
                   VFIO_EMU_ROOT=root, VFIO_EMU_REDIRECT="|".join(prefixes))
        argv = [binary, *qemu_args, "-qmp", f"unix:{qmp},server=on,wait=off"]
        err = open(os.path.join(tmp, "stderr"), "wb")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, env=env, start_new_session=True)
        finally:
            err.close()
        if on_start is not None:
            on_start(proc)
        _drive(proc, qmp, until, timeout, res, server,
               lambda mon: on_ready and on_ready(server, mon))
    finally:
        if proc is not None:
            _stop(proc, res)
        server.close()
        res.requests = list(server.log)
        try:
            with open(os.path.join(tmp, "stderr"), errors="replace") as f:
                res.stderr = f.read()
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _drive(proc, qmp: str, until, timeout: float, res: RunResult, server, ready) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(qmp):
        if proc.poll() is not None:
            return                           # QEMU exited first (e.g. realize failed)
        if time.monotonic() > deadline:
            res.killed = f"no QMP socket within {timeout:g}s"
            return
        time.sleep(0.02)
    try:
        mon = QmpMonitor(qmp, timeout=max(1.0, deadline - time.monotonic()))
    except QemuError as e:
        try:
            proc.wait(timeout=2)        # a QEMU that fails realize closes QMP while exiting
        except subprocess.TimeoutExpired:
            res.killed = f"QMP did not come up: {e}"
        return
    try:
        # QMP answers once qemu_init() is done: devices realized, machine reset.
        res.qmp_status = mon.execute("query-status").get("status")
        res.reached = "realize"
        with server.lock:
            res.ready_seq = len(server.log)
        if until == "reset":
            mon.execute("system_reset")
            for _ in range(2):          # the reset runs in the main loop before these
                mon.execute("query-status")
            res.reached = "reset"
        elif isinstance(until, float):
            mon.execute("cont")
            end = time.monotonic() + until
            while time.monotonic() < end and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is None:
                res.qmp_status = mon.execute("query-status").get("status")
                res.reached = f"ran {until:g}s"
        if proc.poll() is None:
            ready(mon)
        try:
            mon.execute("quit")
        except QemuError as e:
            if proc.poll() is None:
                res.killed = f"QEMU did not answer quit: {e}"
    except QemuError as e:
        if proc.poll() is None:
            res.killed = f"QEMU stopped answering QMP: {e}"
    finally:
        mon.close()


def _stop(proc, res: RunResult) -> None:
    """Wait for QEMU to exit after quit; SIGKILL its process group otherwise."""
    try:
        proc.wait(timeout=5 if res.killed is None else 0.1)
    except subprocess.TimeoutExpired:
        if res.killed is None:
            res.killed = "did not exit within 5s of quit"
    if proc.poll() is None or res.killed:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    res.status = proc.returncode


# ---- report -----------------------------------------------------------------------------

def _req_line(r: Request) -> str:
    hide = ("argsz",) if r.name.startswith("VFIO") else ("size",)
    args = " ".join(f"{k}={v:#x}" if isinstance(v, int) and k != "value" else f"{k}={v}"
                    for k, v in r.fields.items() if k not in hide or r.op != "ioctl")
    out = " ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in r.out.items())
    ret = f"{r.ret}" + (f" [{r.errno}]" if r.errno else "")
    line = f"{r.seq:4} {r.op:6} {r.fd_kind or '-':9} {r.name} {args}".rstrip() + f" = {ret}"
    if out:
        line += f"  -> {out}"
    b = r.backing
    if b and b["what"] == "fd":
        line += (f"  (fd is {b['name']}: {b['kind']}, size 0x{b['size']:x}, "
                 f"seals 0x{b['seals'] or 0:x}, f_flags 0o{b['f_flags']:o})")
    elif b:
        line += (f"  (vaddr in {'shared' if b['shared'] else 'private'} {b['kind']}"
                 + (f" {b['name']}" if b["name"] else "") + ")")
    return line


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render(res: RunResult, all_requests: bool = True) -> str:
    head = [f"== run: {os.path.basename(res.binary)} (QEMU {res.version or '?'}) "
            f"· backend {res.backend} · simulated kernel {res.kernel}",
            f"   {res.binary} {' '.join(res.argv)}"]
    rows = [["when", "GPA range", "action", "arguments", "flags", "kernel"]]
    for ev in res.events():
        f = ev["fields"]
        args = " ".join(f"{k}=0x{v:x}" for k, v in f.items()
                        if isinstance(v, int) and k not in ("argsz", "size", "flags")
                        or k == "size" and ev["ioctl"].startswith("VFIO"))
        kern = "0" if ev["ret"] == 0 else f"{ev['ret']} [{ev['errno']}]"
        rows.append([ev["phase"], ev["gpa"], ev["ioctl"], args, ev["flags"], kern])
    lines = head
    if len(rows) > 1:
        lines += ["   " + ln for ln in _table(rows)]
    else:
        lines.append("   (no DMA map or unmap request)")
    if all_requests:
        lines.append("   every VFIO/iommufd request, with the simulated kernel's answer:")
        lines += ["   " + _req_line(r) for r in res.requests] or ["   (none)"]
    lines.append("   QEMU stderr:" + ("" if res.stderr.strip() else " (empty)"))
    lines += ["   | " + ln for ln in res.stderr.rstrip("\n").splitlines()]
    state = f"reached {res.reached}" if res.reached else "never answered QMP"
    lines.append(f"   QEMU {state}; exit status {res.status}"
                 + (f"; killed: {res.killed}" if res.killed else ""))
    return "\n".join(lines)


def document(results: list[RunResult], diffs: list[list[dict]] | None = None) -> dict:
    plans = [r.json() for r in results]
    if diffs is not None:
        for p, d in zip(plans, diffs):
            p["model_differences"] = d
    return {"schema_version": SCHEMA_VERSION, "tool": "vfio-emu", "plans": plans}


# ---- model vs real -----------------------------------------------------------------------

def model_version(version: str | None) -> str:
    """The modelled QEMU version for a binary's ``x.y.z``."""
    from vmm_model.qemu_versions import QEMU_VERSIONS
    if version:
        for name in (version, ".".join(version.split(".")[:2])):
            if name in QEMU_VERSIONS:
                return name
    raise UsageError(f"no QEMU model for version {version or 'unknown'}", where="--against-model",
                     valid=", ".join(QEMU_VERSIONS))


def final_maps(events: list[dict]) -> dict[tuple[int, int], dict]:
    """The mappings in effect after ``events`` in order (a map adds its range,
    a successful unmap removes the mappings inside its range)."""
    live: dict[tuple[int, int], dict] = {}
    for e in events:
        iova, size = e["iova"] or 0, e["size"] or 0
        if e["kind"] == "map":
            if e["ret"] in (0, None):
                live[(iova, size)] = e
            else:
                live.setdefault((iova, size), e)       # a refused map is still a difference
        elif e["ret"] in (0, None):
            end = (1 << 64) if size >= (1 << 64) - 1 or e["fields"].get("flags", 0) & \
                uapi.VFIO_DMA_UNMAP_FLAG_ALL and e["ioctl"] == "VFIO_IOMMU_UNMAP_DMA" else iova + size
            for k in [k for k in live if iova <= k[0] and k[0] + k[1] <= end]:
                del live[k]
    return live


def _first_failure(events: list[dict]) -> dict | None:
    return next((e for e in events if e["kind"] == "map" and e["ret"] not in (0, None)), None)


def compare_with_model(res: RunResult, qemu_args: list[str]) -> list[dict]:
    """Where the model's plan (same command line, same kernel) and the real run
    differ.  ``res`` may come from any source that fills a RunResult (version,
    backend, kernel profile, requests, stderr, reached): ``run()`` here, or a
    recording of real QEMU on a real kernel (vmm_model/rig_qemu.py).  The
    model's firmware-phase maps (BARs) count only when the guest ran.  Both realize: the mappings in effect at the end (range, ioctl,
    readonly, outcome).  Both fail: the first refused map.  One fails: the
    outcome."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.report import event_json
    from vmm_model.scenario import from_qemu_args
    sc = from_qemu_args(qemu_args)
    plan = make_plan(sc, get_qemu(model_version(res.version)), res.backend, kernel=res.kernel)
    # The model's firmware phase (PCI BARs mapped once the guest's firmware enables
    # them, vmm_model/container.py) happened only if the guest ran ("ran N s").
    phases = ("realize", "reset", "firmware") if res.reached.startswith("ran") else ("realize", "reset")
    model_events = [event_json(e) for e in plan.events if e.kind in ("map", "unmap")
                    and e.phase in phases]
    model_error = plan.rejected or plan.kernel_error or plan.realize_error
    real_error = (res.stderr.strip().splitlines() or ["no QMP"])[-1] if not res.reached else None
    if model_error and real_error:
        m, r = _first_failure(model_events), _first_failure(res.events())
        same = (m is None and r is None) or (m is not None and r is not None and all(
            m[k] == r[k] for k in ("iova", "size", "ioctl", "readonly", "ret")))
        return [] if same else [{"kind": "realize", "range": "-", "what": "first refused map",
                                 "model": m and f"{m['gpa']} {_brief(m)}",
                                 "real": r and f"{r['gpa']} {_brief(r)}"}]
    if model_error or real_error:
        return [{"kind": "realize", "range": "-", "what": "outcome",
                 "model": model_error or "realizes",
                 "real": real_error or f"reached {res.reached}"}]
    mk, rk = final_maps(model_events), final_maps(res.events())
    diffs = []
    for k in sorted(set(mk) | set(rk)):
        m, r = mk.get(k), rk.get(k)
        rng = f"[0x{k[0]:x}, 0x{k[0] + k[1]:x})"
        if m is None or r is None:
            diffs.append({"kind": "map", "range": rng, "what": "only in the " +
                          ("real run" if m is None else "model"),
                          "model": _brief(m), "real": _brief(r)})
            continue
        for what in ("ioctl", "readonly", "ret"):
            if m[what] != r[what]:
                diffs.append({"kind": "map", "range": rng, "what": what,
                              "model": m[what], "real": r[what]})
        if m["ioctl"] == r["ioctl"] == "IOMMU_IOAS_MAP_FILE" and \
                m["fields"].get("start") != r["fields"].get("start"):
            diffs.append({"kind": "map", "range": rng, "what": "file offset",
                          "model": m["fields"].get("start"), "real": r["fields"].get("start")})
    return diffs


# The requests two kernels must answer alike for the same QEMU and command line: the
# container/IOMMU side (the device's own config space and regions differ between the
# rig's edu and the simulated function), by name, the fields that are not addresses or
# fd numbers, and the answer.
SAME_FIELDS = ("flags", "iova", "size", "length", "start", "ioas_id", "num_iovas", "value")


def request_key(r: Request) -> tuple:
    return (r.name, tuple((k, r.fields[k]) for k in SAME_FIELDS if k in r.fields), r.ret)


def same_requests(a: RunResult, b: RunResult, names: tuple[str, ...] | None = None) -> list[dict]:
    """Where two runs of one QEMU binary and command line differ in the
    container/iommufd requests they made (only ``names`` when given) and the
    answers they got, in order: e.g. the rig's recording on a real kernel
    (vmm_model/rig_qemu.py run_result()) and ``run()`` on that kernel's
    simulated profile.  [] when the same."""
    import difflib
    ka, kb = ([request_key(r) for r in res.requests if r.op == "ioctl" and
               r.fd_kind in ("container", "iommufd") and (names is None or r.name in names)]
              for res in (a, b))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ka, b=kb, autojunk=False).get_opcodes():
        if op != "equal":
            out.append({"at": i1, "what": op, "a": ka[i1:i2], "b": kb[j1:j2]})
    return out


def _brief(e: dict | None) -> str | None:
    if e is None:
        return None
    ret = "0" if e["ret"] == 0 else f"{e['ret']} [{e['errno']}]"
    return f"{e['ioctl']} {'ro' if e['readonly'] else 'rw'} = {ret}"


def render_diffs(diffs: list[dict]) -> str:
    if not diffs:
        return ("   model and real QEMU agree (outcome; what ends up mapped: range, ioctl, "
                "readonly, result; or the first refused map)")
    out = ["   model vs real QEMU:"]
    for d in diffs:
        out.append(f"   DIFF {d['kind']} {d['range']} {d['what']}: model {d['model']} "
                   f"| real {d['real']}")
    return "\n".join(out)


# ---- a device shape from a TOML file (--shape FILE) ------------------------------------

_INTS = ("vendor", "device", "subsystem_vendor", "subsystem", "revision", "class_code",
         "msi_vectors", "msix_vectors", "msix_bar", "msix_table_offset", "msix_pba_offset",
         "intx_pin")
_BOOLS = ("pcie", "reset_works")
MAX_SHAPE_FILE = 64 << 10


def _pow2(n: int, least: int) -> bool:
    return n >= least and n & (n - 1) == 0


def load_shape(path: str) -> PciShape:
    """PciShape from TOML: the fields of PciShape (ints; ``rom`` a size like
    "64K") and ``[bars.N]`` tables with ``size``, ``mem64``, ``prefetch``,
    ``io``, ``sparse = [[offset, size], ...]``.  Bad input: UsageError naming
    the file and the field."""
    import tomllib

    from backends.shim.pci import Bar
    from vmm_model.scenario import parse_size

    def bad(msg: str, fld: str, valid: str):
        raise UsageError(msg, where=f"{path} [{fld}]", field=fld, valid=valid)

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SHAPE_FILE + 1)
        if len(raw) > MAX_SHAPE_FILE:
            bad("shape file too large", "-", f"at most {MAX_SHAPE_FILE} bytes")
        doc = tomllib.loads(raw.decode())
    except OSError as e:
        raise UsageError(f"cannot read device shape: {e.strerror}", where=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"not TOML: {e}", where=path) from None

    def size(value, fld):
        try:
            return parse_size(value)
        except ValueError as e:
            bad(f"bad size {value!r}", fld, str(e))

    kw: dict = {}
    for key, value in doc.items():
        if key in _INTS:
            if type(value) is not int or value < 0:
                bad(f"{key} must be a non-negative integer", key, "e.g. 0x8086")
            kw[key] = value
        elif key in _BOOLS:
            if type(value) is not bool:
                bad(f"{key} must be true or false", key, "true, false")
            kw[key] = value
        elif key == "rom":
            kw["rom"] = size(value, key)
            if kw["rom"] and not _pow2(kw["rom"], 2048):
                bad("rom must be 0 or a power of two >= 2K", key, "e.g. 64K")
        elif key == "bars":
            if not isinstance(value, dict):
                bad("bars must be a table of [bars.N]", key, "[bars.0] size = \"1M\"")
            bars = {}
            for n, b in value.items():
                fld = f"bars.{n}"
                if not n.isdigit() or int(n) > 5 or not isinstance(b, dict):
                    bad("a BAR is [bars.0] .. [bars.5]", fld, "0..5")
                extra = set(b) - {"size", "mem64", "prefetch", "io", "sparse"}
                if extra:
                    bad(f"unknown BAR key {sorted(extra)[0]!r}", fld,
                        "size, mem64, prefetch, io, sparse")
                bsize = size(b.get("size", 0), fld + ".size")
                io = b.get("io", False) is True
                if not _pow2(bsize, 4 if io else 16):
                    bad("a BAR size is a power of two (>= 16, I/O >= 4)", fld + ".size", "e.g. 1M")
                sparse = b.get("sparse")
                if sparse is not None:
                    if not isinstance(sparse, list) or not all(
                            isinstance(a, list) and len(a) == 2 and all(type(x) is int for x in a)
                            and a[0] + a[1] <= bsize for a in sparse):
                        bad("sparse is a list of [offset, size] inside the BAR", fld + ".sparse",
                            "e.g. [[0x2000, 0x2000]]")
                    sparse = tuple(tuple(a) for a in sparse)
                bars[int(n)] = Bar(bsize, mem64=b.get("mem64", False) is True,
                                   prefetch=b.get("prefetch", False) is True, io=io, sparse=sparse)
            if any(b.mem64 and i + 1 in bars for i, b in bars.items()):
                bad("a 64-bit BAR uses the next BAR slot too", "bars", "leave BAR N+1 empty")
            kw["bars"] = bars
        else:
            bad(f"unknown key {key!r}", key, ", ".join(_INTS + _BOOLS + ("rom", "bars")))
    shape = PciShape(**kw)
    if shape.msix_vectors:
        bar = shape.bars.get(shape.msix_bar)
        if bar is None or bar.io or max(shape.msix_table_offset + 16 * shape.msix_vectors,
                                        shape.msix_pba_offset + 8) > bar.size:
            bad("the MSI-X table and PBA must fit in a memory BAR", "msix_bar",
                "a BAR that holds 16 bytes per vector and the PBA")
    return shape


# ---- command line -------------------------------------------------------------------------

def cmd_run(args, qemu_argv) -> int:
    """vfio-emu run: exit 0 when QEMU reached the target and exited 0 (and, with
    --against-model, the model agrees); 1 otherwise; 2 bad input."""
    import json
    import sys
    from vmm_model.cli import kernel_arg
    if not qemu_argv:
        raise UsageError("no QEMU binary after --", where="vfio-emu run",
                         valid="vfio-emu run [options] -- QEMU_BINARY ARGS...")
    if not args.timeout > 0:
        raise UsageError(f"bad --timeout {args.timeout:g}", where="--timeout",
                         valid="a number of seconds > 0")
    kernel = kernel_arg(args.kernel)
    if kernel is None:
        raise UsageError("run needs a simulated kernel", where="--kernel")
    binary = shutil.which(qemu_argv[0]) or qemu_argv[0]
    devices = None
    if getattr(args, "shape", None):
        shape = load_shape(args.shape)
        devices = {bdf: shape for bdf in vfio_devices(qemu_argv[1:])}
    res = run(binary, qemu_argv[1:], kernel=kernel, until=parse_until(args.until),
              timeout=args.timeout, devices=devices)
    diffs = compare_with_model(res, qemu_argv[1:]) if args.against_model else None
    if args.json:
        json.dump(document([res], None if diffs is None else [diffs]), sys.stdout, indent=1)
        print()
    else:
        print(render(res, all_requests=not args.brief))
        if diffs is not None:
            print(render_diffs(diffs))
    ok = res.reached and res.status == 0 and not res.killed and not diffs
    return 0 if ok else 1


def register(sub) -> None:
    from vmm_model.plan import DEFAULT_KERNEL
    r = sub.add_parser("run", help="run a real QEMU binary against the simulated kernel "
                       "(LD_PRELOAD shim; give the binary and its arguments after --)")
    r.add_argument("--kernel", default=DEFAULT_KERNEL,
                   help=f"simulated kernel profile (default {DEFAULT_KERNEL}, as plan's; "
                        "'host' = this machine's version; see 'profiles')")
    r.add_argument("--until", default="realize",
                   help="realize (machine created and reset), reset (then a system_reset), "
                        "or SECONDS of running after 'cont' (default realize)")
    from backends.errors import seconds
    r.add_argument("--timeout", type=seconds, default=20.0,
                   help="seconds QEMU gets to answer QMP before it is killed (default 20)")
    r.add_argument("--against-model", action="store_true",
                   help="also plan the same command line with the QEMU model of the binary's "
                        "version and show where model and real QEMU differ")
    r.add_argument("--shape", metavar="FILE",
                   help="TOML device shape for every vfio-pci device (BARs, ROM, MSI-X, PCIe; "
                        "default: like QEMU's edu; see docs/run-real-qemu.md)")
    r.add_argument("--brief", action="store_true", help="only the map/unmap table, stderr, status")
    r.add_argument("--json", action="store_true", help="versioned JSON (the plan document shape)")
    r.set_defaults(func=cmd_run)


def plan_against_binary(args, qemu_argv) -> int:
    """``vfio-emu plan --against-binary B -- ARGS`` (vmm_model/cli.py cmd_plan) = ``run
    --against-model --brief -- B ARGS``."""
    if qemu_argv is None or args.scenario:
        raise UsageError("--against-binary takes QEMU arguments after --, not a scenario",
                         where="vfio-emu plan --against-binary")
    args.until, args.timeout, args.against_model, args.brief = "realize", 20.0, True, True
    args.shape = None
    return cmd_run(args, [args.against_binary, *qemu_argv])
