"""``vfio-emu probe``: what this host offers for VFIO DMA mapping.

    vfio-emu probe [--json] [--require type1,group,iommufd,compat,cdev,map_file]

Reports the kernel release and the matching simulator profile
(backends/kernel_profiles.py), /dev/vfio/vfio (API version, extensions), the
VFIO groups /dev/vfio/N (viable?), /dev/iommu (a scratch IOAS: IOVA ranges, the
VFIO compat layer), the VFIO cdevs /dev/vfio/devices/vfioN, whether
IOMMU_IOAS_MAP_FILE works (tried on the scratch IOAS with a scratch memfd),
the IOMMU units and RLIMIT_MEMLOCK.  Every piece that is missing gets one line
saying what would provide it: a module (vfio, vfio_iommu_type1, vfio-pci,
iommufd), a permission, a kernel option (CONFIG_VFIO, CONFIG_IOMMUFD,
CONFIG_VFIO_DEVICE_CDEV, ...) or a boot parameter (intel_iommu=on).  Facts come
through the Host seam, so a SimHost is probed the same way; the kernel config
(/proc/config.gz, /boot/config-<release>) and /sys are read when the host has them.

Exit status: 0 (a report), 1 when a piece named by ``--require`` is missing.
Wired into vfio-emu by ``register(subparsers)``; ``python -m backends.probe`` also works.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import json
import os
import sys

from backends import uapi
from backends.base import errno_name, strerror
from backends.errors import UsageError, VfioEmuError
from backends.host import MFD_CLOEXEC, O_CLOEXEC, O_RDONLY, LinuxHost, SimulatedHost
from backends.iommufd import IommufdContainer
from backends.type1 import (IOMMUFD_PATH, OPEN_FLAGS, VFIO_CDEV_DIR, VFIO_CONTAINER_PATH,
                            SetupError, describe, node_hint)

SCHEMA_VERSION = 1
PIECES = ("type1", "group", "iommufd", "compat", "cdev", "map_file")
CONFIG_KEYS = ("CONFIG_MODULES", "CONFIG_VFIO", "CONFIG_VFIO_GROUP", "CONFIG_VFIO_IOMMU_TYPE1",
               "CONFIG_VFIO_PCI", "CONFIG_VFIO_DEVICE_CDEV", "CONFIG_IOMMUFD",
               "CONFIG_IOMMUFD_VFIO_CONTAINER", "CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU")
EXTENSIONS = ("VFIO_TYPE1_IOMMU", "VFIO_TYPE1v2_IOMMU", "VFIO_UNMAP_ALL", "VFIO_UPDATE_VADDR",
              "VFIO_NOIOMMU_IOMMU")
IOMMU_ON = "the IOMMU enabled (intel_iommu=on or amd_iommu=on on the kernel command line)"


# --- reading the host through the seam ------------------------------------------------

def _err(ret: int) -> str:
    return f"{strerror(ret)} [{errno_name(ret)}]"


def read_file(host, path: str, limit: int = 1 << 24) -> bytes | None:
    fd = host.open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0:
        return None
    chunks, off = [], 0
    try:
        while off < limit:
            n, data = host.pread(fd, 1 << 16, off)
            if n <= 0:
                break
            chunks.append(data)
            off += n
    finally:
        host.close(fd)
    return b"".join(chunks)


def listdir(host, path: str) -> list[str] | None:
    """Names in directory ``path``, or None if it is not there.  (The Host seam has
    no getdents: LinuxHost lists the real directory, a SimulatedHost its node table.)"""
    if isinstance(host, SimulatedHost):
        return host.listdir(path)
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def exists(host, path: str) -> bool:
    fd = host.open(path, O_RDONLY | O_CLOEXEC)
    if fd >= 0:
        host.close(fd)
    return fd != -errno.ENOENT


def kernel_config(host) -> dict[str, str] | None:
    """The VFIO/IOMMU options of the running kernel's config, or None if unknown."""
    raw = read_file(host, "/proc/config.gz")
    if raw is not None:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            raw = None
    if raw is None:
        raw = read_file(host, f"/boot/config-{host.kernel_release}")
    if not raw:
        return None
    cfg = dict.fromkeys(CONFIG_KEYS)            # None: absent (its parent option is off)
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            key, val = line[2:-len(" is not set")], "n"
        else:
            key, _, val = line.partition("=")
        if key in cfg:
            cfg[key] = val
    return cfg


def rlimit_memlock(host) -> dict | None:
    """RLIMIT_MEMLOCK in bytes (None = unlimited) and CAP_IPC_LOCK; None when the
    host does not say (SimHost: its ``rlimit_memlock`` / ``cap_ipc_lock``)."""
    if isinstance(host, LinuxHost):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        unl = resource.RLIM_INFINITY
        return {"soft": None if soft == unl else soft, "hard": None if hard == unl else hard,
                "cap_ipc_lock": cap_ipc_lock(host)}
    limit = getattr(host, "rlimit_memlock", None)
    if limit is None:
        return None
    limit = None if limit >= (1 << 64) - 1 else limit          # RLIM_INFINITY
    return {"soft": limit, "hard": limit, "cap_ipc_lock": getattr(host, "cap_ipc_lock", None)}


def cap_ipc_lock(host) -> bool | None:
    """CAP_IPC_LOCK (bit 14) in CapEff of /proc/self/status: pins are then not charged."""
    raw = read_file(host, "/proc/self/status")
    for line in (raw or b"").decode(errors="replace").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 14 & 1)
    return None


# --- the pieces -------------------------------------------------------------------------

def probe_type1(host, path: str = VFIO_CONTAINER_PATH) -> dict:
    out = {"path": path, "ok": False, "error": None, "api_version": None, "extensions": {}}
    fd = host.open(path, OPEN_FLAGS)
    if fd < 0:
        out["error"], out["errno"] = f"open: {_err(fd)}", errno_name(fd)
        return out
    try:
        out["api_version"], _ = host.ioctl(fd, uapi.VFIO_GET_API_VERSION, 0)
        for name in EXTENSIONS:
            out["extensions"][name], _ = host.ioctl(fd, uapi.VFIO_CHECK_EXTENSION,
                                                    getattr(uapi, name))
    finally:
        host.close(fd)
    ext = out["extensions"]
    out["ok"] = out["api_version"] == uapi.VFIO_API_VERSION and \
        (ext["VFIO_TYPE1v2_IOMMU"] > 0 or ext["VFIO_TYPE1_IOMMU"] > 0)
    if not out["ok"]:
        out["error"] = f"API version {out['api_version']}, no type1 IOMMU extension"
    return out


def probe_groups(host) -> list[dict]:
    groups = []
    for name in sorted((n for n in listdir(host, "/dev/vfio") or [] if n.isdigit()), key=int):
        path = f"/dev/vfio/{name}"
        g = {"group": int(name), "path": path, "viable": None, "error": None}
        fd = host.open(path, OPEN_FLAGS)
        if fd < 0:
            g["error"] = _err(fd)
        else:
            try:
                ret, data = host.ioctl(fd, uapi.VFIO_GROUP_GET_STATUS,
                                       uapi.build("vfio_group_status"))
            finally:
                host.close(fd)
            if ret:
                g["error"] = f"VFIO_GROUP_GET_STATUS: {_err(ret)}"
            else:
                g["viable"] = bool(uapi.parse("vfio_group_status", data).flags
                                   & uapi.VFIO_GROUP_FLAGS_VIABLE)
        groups.append(g)
    return groups


def probe_iommufd(host) -> dict:
    """A scratch IOAS: its IOVA ranges, the VFIO compat layer's API version, and
    IOMMU_IOAS_MAP_FILE of a scratch memfd page.  Everything is released."""
    out = {"path": IOMMUFD_PATH, "ok": False, "error": None, "iova_ranges": None,
           "out_iova_alignment": None, "compat_api_version": None,
           "map_file": {"ok": None, "detail": f"not tried (no {IOMMUFD_PATH})"}}
    try:
        c = IommufdContainer(host)
    except SetupError as e:
        out["error"] = f"{e.call}: {e.detail}"
        out["errno"] = errno_name(e.ret) if e.ret else None
        return out
    with c:
        out.update(ok=True, iova_ranges=[list(r) for r in c.iova_ranges],
                   out_iova_alignment=c.out_iova_alignment, warnings=c.warnings)
        out["compat_api_version"], _ = host.ioctl(c.fd, uapi.VFIO_GET_API_VERSION, 0)
        out["map_file"] = probe_map_file(host, c)
    return out


def probe_map_file(host, c: IommufdContainer) -> dict:
    size = host.page_size
    mfd = host.memfd_create("vfio-emu-probe", MFD_CLOEXEC)
    if mfd < 0:
        return {"ok": None, "detail": f"not tried (memfd_create: {_err(mfd)})"}
    try:
        if host.ftruncate(mfd, size):
            return {"ok": None, "detail": "not tried (ftruncate of the scratch memfd failed)"}
        align = max(c.out_iova_alignment or 1, size)
        start = c.iova_ranges[0][0] if c.iova_ranges else 0
        iova = (start + align - 1) // align * align
        r = c.dma_map_file(iova, size, mfd, 0, False)
        if r.ret == 0:
            c.dma_unmap(iova, size)
            return {"ok": True, "detail": "IOMMU_IOAS_MAP_FILE of a memfd page accepted"}
        if r.ret == -errno.ENOTTY:
            return {"ok": False, "errno": "ENOTTY",
                    "detail": "IOMMU_IOAS_MAP_FILE unknown (ENOTTY): needs kernel 6.13+"}
        return {"ok": False, "errno": r.errno_name, "detail": describe(r)}
    finally:
        host.close(mfd)


def probe(host) -> dict:
    """What ``host`` offers (a JSON-able dict, schema ``SCHEMA_VERSION``)."""
    cdevs = [n for n in listdir(host, VFIO_CDEV_DIR) or [] if n.startswith("vfio")]
    units = listdir(host, "/sys/class/iommu")
    modules = {m: exists(host, f"/sys/module/{m}") for m in
               ("vfio", "vfio_iommu_type1", "vfio_pci", "iommufd")} \
        if exists(host, "/sys/module") else None
    doc = {
        "schema_version": SCHEMA_VERSION,
        "host": type(host).__name__,
        "kernel": {"release": host.kernel_release, "profile": host.profile.name,
                   "config": kernel_config(host), "modules": modules},
        "type1": probe_type1(host),
        "groups": probe_groups(host),
        "iommufd": probe_iommufd(host),
        "cdevs": [VFIO_CDEV_DIR + n for n in cdevs],
        "iommu_units": units,
        "rlimit_memlock": rlimit_memlock(host),
    }
    doc["available"] = available(doc)
    doc["missing"] = missing_lines(doc)
    return doc


def available(doc: dict) -> dict[str, bool]:
    io = doc["iommufd"]
    return {"type1": doc["type1"]["ok"],
            "group": any(g["viable"] for g in doc["groups"]),
            "iommufd": io["ok"],
            "compat": io["ok"] and io["compat_api_version"] == uapi.VFIO_API_VERSION,
            "cdev": bool(doc["cdevs"]),
            "map_file": bool(io["map_file"]["ok"])}


# --- what would provide a missing piece --------------------------------------------------

def _provide(doc: dict, options: list[str], module: str | None, fallback: str) -> str:
    """From the kernel config when it is known: a missing option, or a module to load."""
    cfg, mods = doc["kernel"]["config"], doc["kernel"]["modules"]
    if cfg is None:
        return fallback
    lacking = [o for o in options if cfg.get(o) not in ("y", "m")]
    if lacking:
        text = "kernel built without " + ", ".join(lacking)
        if cfg.get("CONFIG_MODULES") != "y":
            text += " (and without module support)"
        return text + ": a kernel with " + ", ".join(o + "=y" for o in lacking) + " would provide it"
    if module and mods is not None and not mods.get(module.replace("-", "_"), True):
        return f"load the module: modprobe {module}"
    return fallback


def missing_lines(doc: dict) -> list[str]:
    out = []
    t1, io, av = doc["type1"], doc["iommufd"], doc["available"]
    version = uapi.kernel_version(doc["kernel"]["release"])
    if not t1["ok"]:
        hint = node_hint(t1["path"], -errno.EACCES) if t1.get("errno") in ("EACCES", "EPERM") else \
            _provide(doc, ["CONFIG_VFIO", "CONFIG_VFIO_IOMMU_TYPE1"], "vfio_iommu_type1",
                     node_hint(t1["path"], -errno.ENOENT))
        out.append(f"{t1['path']}: {t1['error']} -- {hint}")
    if not doc["groups"]:
        group_opts = ["CONFIG_VFIO"] + (["CONFIG_VFIO_GROUP"] if version >= (6, 6) else [])
        out.append("VFIO groups (/dev/vfio/N): none -- " + _provide(
            doc, group_opts + ["CONFIG_VFIO_PCI"], "vfio-pci",
            f"bind a device to vfio-pci (modprobe vfio-pci; CONFIG_VFIO_PCI) with {IOMMU_ON}"))
    for g in doc["groups"]:
        if g["error"]:
            e = g["error"]
            out.append(f"{g['path']}: {e} -- " + (
                node_hint(g["path"], -errno.EBUSY) if "EBUSY" in e else
                node_hint(g["path"], -errno.EACCES) if "EACCES" in e or "EPERM" in e else
                "cannot query the group"))
        elif not g["viable"]:
            out.append(f"{g['path']}: group {g['group']} is not viable -- bind every device "
                       "of the IOMMU group to vfio-pci (or unbind it from its driver)")
    units = doc["iommu_units"]
    if units is not None and not units:
        cfg = doc["kernel"]["config"] or {}
        no_drv = doc["kernel"]["config"] is not None and not any(
            cfg.get(o) in ("y", "m") for o in ("CONFIG_INTEL_IOMMU", "CONFIG_AMD_IOMMU"))
        out.append("IOMMU units (/sys/class/iommu): none -- " + (
            "kernel built without CONFIG_INTEL_IOMMU and CONFIG_AMD_IOMMU" if no_drv else
            "boot with intel_iommu=on or amd_iommu=on") + "; VFIO needs an IOMMU "
            "(or vfio's unsafe no-IOMMU mode)")
    if not io["ok"]:
        if io.get("errno") in ("EACCES", "EPERM"):
            hint = node_hint(IOMMUFD_PATH, -errno.EACCES)
        elif version < (6, 2):
            hint = f"iommufd needs kernel 6.2+ (this is {doc['kernel']['release']})"
        else:
            hint = _provide(doc, ["CONFIG_IOMMUFD"], "iommufd", node_hint(IOMMUFD_PATH, -errno.ENOENT))
        out.append(f"{IOMMUFD_PATH}: {io['error']} -- {hint}")
    elif not av["compat"]:
        out.append(f"{IOMMUFD_PATH}: the VFIO compat layer does not answer "
                   f"(VFIO_GET_API_VERSION = {io['compat_api_version']})")
    if not doc["cdevs"]:
        out.append(f"VFIO cdevs ({VFIO_CDEV_DIR}vfioN): none -- " + (
            f"VFIO cdevs need kernel 6.6+ (this is {doc['kernel']['release']})"
            if version < (6, 6) else _provide(
                doc, ["CONFIG_VFIO", "CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV"], "vfio-pci",
                "bind a device to vfio-pci; needs CONFIG_VFIO_DEVICE_CDEV=y (6.6+)")))
    mf = io["map_file"]
    if mf["ok"] is None:
        out.append(f"IOMMU_IOAS_MAP_FILE: {mf['detail']} -- needs /dev/iommu on kernel 6.13+")
    elif not mf["ok"]:
        out.append(f"IOMMU_IOAS_MAP_FILE: {mf['detail']}")
    return out


# --- output ------------------------------------------------------------------------------

def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def render(doc: dict) -> str:
    k, t1, io = doc["kernel"], doc["type1"], doc["iommufd"]
    rows = [("piece", "status", "detail"),
            ("kernel", k["release"], f"simulator profile {k['profile']}; host {doc['host']}")]
    if t1["ok"]:
        exts = ",".join(n[len("VFIO_"):] for n, v in t1["extensions"].items() if v > 0)
        rows.append(("type1 " + t1["path"], "ok", f"API {t1['api_version']}; extensions {exts}"))
    else:
        rows.append(("type1 " + t1["path"], "missing", t1["error"]))
    for g in doc["groups"]:
        rows.append((f"group {g['path']}", "viable" if g["viable"] else "not viable"
                     if g["viable"] is False else "error", g["error"] or ""))
    if not doc["groups"]:
        rows.append(("groups /dev/vfio/N", "none", ""))
    if io["ok"]:
        rng = ", ".join(f"[{a:#x}, {b:#x}]" for a, b in io["iova_ranges"])
        rows.append(("iommufd " + io["path"], "ok", f"IOVA {rng}; alignment "
                     f"{io['out_iova_alignment']}; VFIO compat API {io['compat_api_version']}"))
    else:
        rows.append(("iommufd " + io["path"], "missing", io["error"]))
    rows.append(("cdevs " + VFIO_CDEV_DIR, str(len(doc["cdevs"])) if doc["cdevs"] else "none",
                 " ".join(doc["cdevs"])))
    mf = io["map_file"]
    rows.append(("IOMMU_IOAS_MAP_FILE", {True: "ok", False: "refused", None: "not tried"}[mf["ok"]],
                 mf["detail"]))
    units = doc["iommu_units"]
    rows.append(("IOMMU units", "unknown" if units is None else str(len(units)) if units else "none",
                 " ".join(units or [])))
    rl = doc["rlimit_memlock"]
    if rl is None:
        rows.append(("RLIMIT_MEMLOCK", "unknown", ""))
    else:
        cap = {True: "CAP_IPC_LOCK held: pins are not charged",
               False: "no CAP_IPC_LOCK: pinned guest RAM is charged to it",
               None: "pinned guest RAM is charged to it unless CAP_IPC_LOCK"}[rl.get("cap_ipc_lock")]
        rows.append(("RLIMIT_MEMLOCK", _size(rl["soft"]), f"hard {_size(rl['hard'])}; {cap}"))
    w = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:{w[0]}}  {b:{w[1]}}  {c}".rstrip() for a, b, c in rows]
    lines += [""] + [f"missing: {m}" for m in doc["missing"]] if doc["missing"] else []
    return "\n".join(lines) + "\n"


def parse_require(text: str | None) -> list[str]:
    if text is None:
        return []
    want = [p.strip() for p in text.split(",")]
    bad = [p for p in want if p not in PIECES]
    if bad:
        raise UsageError(f"unknown piece {bad[0]!r}", where="--require", valid=", ".join(PIECES))
    return want


def cmd_probe(args, _qemu_argv=None, host=None) -> int:
    want = parse_require(args.require)
    own = host is None
    host = LinuxHost() if own else host
    try:
        doc = probe(host)
    finally:
        if own:
            host.close_all()
    lacking = [p for p in want if not doc["available"][p]]
    if args.json:
        doc["required_missing"] = lacking
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        sys.stdout.write(render(doc))
        if lacking:
            print(f"required but missing: {', '.join(lacking)}")
    return 1 if lacking else 0


def register(subparsers):
    """Add ``probe`` to vfio-emu's subcommands (``func(args, qemu_argv)``)."""
    p = subparsers.add_parser("probe", help="what this host offers: /dev/vfio, groups, "
                              "/dev/iommu, cdevs, MAP_FILE, RLIMIT_MEMLOCK")
    p.add_argument("--json", action="store_true", help=f"JSON (schema_version {SCHEMA_VERSION})")
    p.add_argument("--require", metavar="PIECES",
                   help="exit 1 unless these are available: " + ",".join(PIECES))
    p.set_defaults(func=cmd_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfio-emu")
    register(parser.add_subparsers(dest="cmd", required=True))
    try:
        args = parser.parse_args(["probe", *(sys.argv[1:] if argv is None else argv)])
        return args.func(args, None)
    except VfioEmuError as e:
        print(f"vfio-emu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
