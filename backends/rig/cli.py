"""``vfio-emu rig``: real kernels under QEMU with an emulated VT-d and edu devices.

    vfio-emu rig list [--json]
    vfio-emu rig build KERNEL... | --all [--offline]
    vfio-emu rig run --kernel KERNEL --set SET [--set SET...] [--accel tcg|kvm|auto]
                     [--edu N] [--timeout S] [--qemu BINARY] [--json] [-v] [-- PYTEST-ARGS]

``run`` builds or fetches the kernel when the cache lacks it, boots it, runs
the sets and prints one line per set (``--json``: the vfio-emu-rig/1
document).  Exit status 0 when every test passed, 1 when a test failed or the
guest timed out or crashed (the console tail is shown), 2 on bad arguments.
Wired into vmm_model/cli.py by ``register(subparsers)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backends.errors import UsageError, seconds
from backends.rig import kernels
from backends.rig.boot import ACCELS, DEFAULT_TIMEOUT, RunResult, check_sets, guest_python, run
from backends.rig.sets import GUEST_DIR, SETS, get_set


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _get_kernel(name: str, offline: bool = False) -> kernels.Kernel:
    try:
        return kernels.get(name, progress=_progress, offline=offline)
    except kernels.BuildError as e:
        print(e.tail, file=sys.stderr)
        raise


def cmd_list(args, extra) -> int:
    root = kernels.cache_root()
    rows = []
    for k in kernels.KERNELS.values():
        cached = sorted(p.parent.name for p in (root / "kernels" / k.name).glob("*/kernel.json"))
        rows.append({"kernel": k.name, "source": f"{k.package} ({k.suite})",
                     "patches": list(k.patches), "cached": cached, "doc": k.doc})
    sets = [{"set": s.name, "files": list(s.files), "kernels": list(s.kernels), "doc": s.doc}
            for s in SETS.values()]
    if args.json:
        json.dump({"cache": str(root), "kernels": rows, "guest_dir": str(GUEST_DIR), "sets": sets},
                  sys.stdout, indent=1)
        print()
        return 0
    print(f"kernels (cache {root}):")
    for r in rows:
        print(f"  {r['kernel']:<17} {r['source']:<40} cached: {', '.join(r['cached']) or '-'}")
    print(f"test sets (in {GUEST_DIR}):")
    for s in sets:
        files = " ".join(s["files"]) or "(no test files yet)"
        print(f"  {s['set']:<13} {files}\n  {'':<13} kernels: {', '.join(s['kernels'])}")
    return 0


def cmd_build(args, extra) -> int:
    names = list(kernels.KERNELS) if args.all else args.kernels
    if not names:
        raise UsageError("name a kernel or give --all", where="vfio-emu rig build",
                         valid=", ".join(kernels.KERNELS))
    for n in names:
        kernels.spec(n)
    for n in names:
        k = _get_kernel(n, args.offline)
        print(f"{k.name}: {k.package} {k.version} (uname -r {k.release}), config "
              f"{k.config_hash}, features {','.join(k.features)} -> {k.dir}")
    return 0


def describe(r: RunResult) -> str:
    """One line per set, then the failures, then the error and console tail if any."""
    k = r.kernel
    patches = ", ".join(p["file"] for p in k["patches"]) or "no patches"
    out = [f"kernel {k['name']} ({k['package']} {k['version']}, config {k['config_hash']}, "
           f"{patches}); QEMU {r.qemu.removeprefix('QEMU emulator version ')} {r.accel}; "
           f"boot {r.boot_seconds} s, total {r.seconds} s"]
    for s in r.sets:
        c = s.counts
        out.append(f"  {s.name}: {c['passed']} passed, {c['failed']} failed, "
                   f"{c['skipped']} skipped, {c['error']} errors in {s.seconds} s "
                   f"(pytest exit {s.exit_status})")
        for t in s.failures():
            last = (t["message"].strip().splitlines() or [""])[-1]
            out.append(f"    {t['outcome'].upper()} {t['nodeid']}: {last}")
    if r.error or r.exit_status != 0:
        out.append(f"  guest exit status {r.exit_status}; {r.error or 'tests failed'}")
        if r.error:
            out.append("  console tail:")
            out += ["    " + ln for ln in r.console_tail.splitlines()]
    return "\n".join(out)


def cmd_run(args, extra) -> int:
    sets = [get_set(s) for s in args.set]
    kernels.spec(args.kernel)
    check_sets(args.kernel, sets)        # bad arguments before any build
    guest_python()                       # and a Python that can run the sets
    k = _get_kernel(args.kernel, args.offline)
    echo = (lambda ln: print(ln, file=sys.stderr, flush=True)) if args.verbose else None
    r = run(k, sets, qemu=args.qemu, accel=args.accel, timeout=args.timeout, edu=args.edu,
            pytest_args=extra or (), echo=echo, console_log=args.console)
    if args.json:
        json.dump(r.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(describe(r))
    return 0 if r.ok else 1


def register(subparsers):
    """Add ``rig`` to vfio-emu's subcommands (``func(args, extra_argv)``)."""
    p = subparsers.add_parser("rig", help="real kernels under QEMU (vIOMMU + edu): build, run "
                              "test sets in the guest")
    sub = p.add_subparsers(dest="rig_cmd", required=True, metavar="{list,build,run}",
                           parser_class=type(p))
    ls = sub.add_parser("list", help="the kernels (and what is cached) and the test sets")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    b = sub.add_parser("build", help="fetch or build kernels into the cache")
    b.add_argument("kernels", nargs="*", metavar="KERNEL", help=", ".join(kernels.KERNELS))
    b.add_argument("--all", action="store_true", help="every kernel")
    b.add_argument("--offline", action="store_true", help="use the cache, not the mirror")
    b.set_defaults(func=cmd_build)
    r = sub.add_parser("run", help="boot a kernel and run test sets in the guest "
                       "(pytest arguments after --)")
    r.add_argument("--kernel", required=True, help=", ".join(kernels.KERNELS))
    r.add_argument("--set", action="append", required=True, help=", ".join(SETS))
    r.add_argument("--accel", default="tcg", help=f"{', '.join(ACCELS)} (default tcg)")
    r.add_argument("--edu", type=int, default=1, help="edu devices (default 1)")
    r.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                   help=f"seconds before the guest is killed (default {DEFAULT_TIMEOUT:g})")
    r.add_argument("--qemu", help="QEMU binary (default $VFIO_EMU_QEMU or qemu-system-x86_64)")
    r.add_argument("--offline", action="store_true", help="use the cached kernel, not the mirror")
    r.add_argument("--json", action="store_true", help="the vfio-emu-rig/1 result document")
    r.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    r.add_argument("--console", type=Path, metavar="FILE", help="keep the whole console in FILE")
    r.set_defaults(func=cmd_run)
    return p
