"""``vfio-emu inspect``: the plan for a live QEMU.

    vfio-emu inspect --qmp SOCKET [--backend type1|iommufd|all] [--qemu V[,V..]]
                     [--kernel K] [--json] [--write-scenario FILE]
    vfio-emu inspect --hmp-stdio [--backend ...] -- [QEMU-BINARY] QEMU-ARGS...

``--qmp`` connects to a running QEMU (``-qmp unix:SOCKET,server=on,wait=off``);
``--hmp-stdio`` starts QEMU paused with ``-monitor stdio`` and reads the same
facts over HMP, then ends it.  The plan has the same columns as ``plan``, for
the live QEMU's version or those ``--qemu`` names, answered by the simulated
kernel ``--kernel`` (as ``plan``).  The observed table shows what the live QEMU
and /proc report; every fd and host address in the plan is the model's and is
labelled "simulated".  ``--write-scenario FILE`` (``--save``) writes the
reconstructed configuration as a scenario file that ``plan`` and
``migrate-check`` take.  Wired into vmm_model/cli.py by ``register(subparsers)``.
"""

from __future__ import annotations

import json
import os
import sys

from backends.errors import UsageError
from vmm_model.iommu_backends import backend_names, get_backend
from vmm_model.plan import make_plan
from vmm_model.qemu.introspect import LiveVM, compare_with_model, introspect
from vmm_model.qemu.monitor import DEFAULT_TIMEOUT, QmpMonitor
from vmm_model.qemu_versions import get_qemu
from vmm_model.report import document, render_plan
from vmm_model.scenario import to_toml


def read_live(args, qemu_argv) -> LiveVM:
    if bool(args.qmp) == bool(args.hmp_stdio):
        raise UsageError("give either --qmp SOCKET or --hmp-stdio -- QEMU-ARGS",
                         where="vfio-emu inspect")
    if args.qmp:
        if qemu_argv:
            raise UsageError("QEMU arguments after -- go with --hmp-stdio, not --qmp",
                             where="vfio-emu inspect")
        with QmpMonitor(args.qmp, timeout=args.timeout) as mon:
            return _introspect(mon, os.path.basename(args.qmp) or "live")
    if not qemu_argv:
        raise UsageError("--hmp-stdio needs QEMU arguments after --",
                         where="vfio-emu inspect",
                         valid="e.g. -- qemu-system-x86_64 -m 512M")
    from vmm_model.qemu.launcher import launch_hmp
    argv = list(qemu_argv)
    binary = argv.pop(0) if not argv[0].startswith("-") else \
        os.environ.get("VFIO_EMU_QEMU", "qemu-system-x86_64")
    with launch_hmp(binary, argv, timeout=args.timeout) as mon:
        return _introspect(mon, "hmp-stdio")


def _introspect(mon, name: str) -> LiveVM:
    """introspect(), with an answer of the wrong shape (a QMP peer that is not the
    QEMU it claims to be) reported as one line naming the last command."""
    try:
        return introspect(mon, name=name)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        from vmm_model.qemu.errors import QemuError
        last = mon.transcript[-1] if mon.transcript else {}
        cmd = last.get("execute", "?")
        if cmd == "human-monitor-command":
            cmd = f"human-monitor-command {last.get('arguments', {}).get('command-line', '')!r}"
        raise QemuError(f"{mon.source}: unexpected answer to {cmd} "
                        f"({type(e).__name__}: {e})",
                        valid="a QEMU 7.2 or newer QMP monitor") from e


def _observed_table(vm: LiveVM) -> str:
    head = ["RAMBlock", "size", "host", "fd", "shared", "backing", "fd_offset", "seals"]
    rows = [head]
    for b in vm.ramblocks:
        def yn(v):
            return "?" if v is None else ("yes" if v else "no")
        rows.append([b.name or "(unnamed)", f"0x{b.size:x}",
                     f"0x{b.host:x}" if b.host is not None else "?",
                     str(b.fd) if b.fd is not None else yn(b.fd_present),
                     yn(b.shared), b.backing if b.backing is not None else "?",
                     f"0x{b.fd_offset:x}" if b.fd_offset is not None else "-",
                     "|".join(b.seal_names) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# What the plan shows that comes from the model, not the live process
SIMULATED = ("fd", "user_va", "vaddr", "host address")
SIMULATED_NOTE = ("simulated: every fd number and host address in the plan below (fd, "
                  "user_va=, vaddr=) is the model's, not the live QEMU's; the table above "
                  "shows the live ones")


def cmd_inspect(args, qemu_argv) -> int:
    from vmm_model.cli import kernel_arg
    from vmm_model.qemu_versions import parse_qemu_list
    kernel = kernel_arg(args.kernel)
    qemus = parse_qemu_list(args.qemu) if args.qemu is not None else None
    if qemus == []:
        raise UsageError("no QEMU version given", where="--qemu",
                         valid="a version, a comma list, or all")
    backends = args.backend or "all"
    blist = (backend_names(in_all=True) if backends == "all"      # checked before QEMU
             else [get_backend(backends, also=("all",)).name])       # is touched
    vm = read_live(args, qemu_argv)
    sc = vm.scenario
    if qemus is None:
        qemus = [get_qemu(sc.qemu, where="live QEMU version")]
    plans = [make_plan(sc, q, b, None, kernel) for b in blist for q in qemus]
    diffs = compare_with_model(vm) if vm.proc else []
    if args.save:
        try:
            with open(args.save, "w") as f:
                f.write(to_toml(sc))
        except OSError as e:
            raise UsageError(f"cannot write scenario: {e.strerror}", where=args.save) from None
    with_others = not args.no_compare
    if args.json:
        doc = document(plans, with_others)
        doc["live"] = {"qemu_version": vm.version, "package": vm.package, "pid": vm.pid,
                       "proc": vm.proc, "ramblocks": [b.to_json() for b in vm.ramblocks],
                       "model_differences": diffs, "notes": vm.notes,
                       "simulated": list(SIMULATED)}
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(f"live QEMU {vm.version} ({vm.package}), pid {vm.pid or '?'}: modelled as "
              f"QEMU {', '.join(q.name for q in qemus)}\n")
        print(_observed_table(vm))
        if vm.proc:
            print("\nmodel vs /proc: " + ("agree (fd present, shared, size, fd_offset)"
                                          if not diffs else "; ".join(diffs)))
        for n in vm.notes:
            print(f"note: {n}")
        print(f"\n{SIMULATED_NOTE}\n")
        print("\n\n".join(render_plan(p, with_others) for p in plans))
        if args.save:
            print(f"\nscenario saved to {args.save}")
    return 1 if diffs else 0


def register(subparsers):
    """Add ``inspect`` to vfio-emu's subcommands (``func(args, qemu_argv)``)."""
    p = subparsers.add_parser("inspect", help="the plan for a live QEMU (QMP socket, or "
                              "HMP on stdio of a QEMU started for it)")
    p.add_argument("--qmp", metavar="SOCKET", help="QMP unix socket of a running QEMU")
    p.add_argument("--hmp-stdio", action="store_true",
                   help="start QEMU (arguments after --) with -monitor stdio and read it")
    p.add_argument("--backend", help=f"{', '.join(backend_names())} or all (default all: "
                   f"{', '.join(backend_names(in_all=True))})")
    p.add_argument("--json", action="store_true", help="versioned JSON, plus a 'live' key")
    p.add_argument("--write-scenario", "--save", dest="save", metavar="FILE",
                   help="write the reconstructed configuration as a scenario file (TOML) "
                        "that plan and migrate-check take")
    p.add_argument("--qemu", help="QEMU version(s) to plan with (default: the live one's)")
    from vmm_model.plan import DEFAULT_KERNEL
    p.add_argument("--kernel", default=DEFAULT_KERNEL,
                   help=f"simulated kernel profile that answers the ioctls (default "
                        f"{DEFAULT_KERNEL}; 'host'; 'none' = plan only)")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the other-QEMU-versions column")
    from backends.errors import seconds
    p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for each QEMU answer (default {DEFAULT_TIMEOUT:g})")
    p.set_defaults(func=cmd_inspect)
    return p
