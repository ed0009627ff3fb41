"""``vfio-emu``: the command line.

Exit status: 0 ok; 1 a check found a hazard (``--check``) or a QEMU version
rejects the command line (``plan``); 2 bad input (one
line naming the file/argument, the field and what would be valid; no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backends.errors import UsageError, VfioEmuError
from vmm_model import gallery
from vmm_model.iommu_backends import backend_names, get_backend
from vmm_model.plan import DEFAULT_KERNEL, make_plan
from vmm_model.qemu_versions import (DEFAULT_QEMU, QEMU_VERSIONS, parse_qemu_list,
                                     versions_dict, versions_table)
from vmm_model.report import NOT_RUN, document, render_plan
from vmm_model.scenario import from_qemu_args, load_toml


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message, where=self.prog)


def _scenarios(args, qemu_argv):
    if qemu_argv is not None:
        if args.scenario:
            raise UsageError("give a scenario file or QEMU arguments after --, not both",
                             where="vfio-emu plan")
        if not qemu_argv:
            raise UsageError("no QEMU arguments after --", where="vfio-emu plan")
        return [from_qemu_args(qemu_argv)]
    if not args.scenario:
        return gallery.load_all()
    if Path(args.scenario).exists() or args.scenario.endswith(".toml"):
        return [load_toml(args.scenario)]
    return [gallery.load(args.scenario)]


def kernel_arg(value: str | None) -> str | None:
    """--kernel: a profile name, 'host' (this machine's kernel), or 'none'."""
    from backends.kernel_profiles import get_profile, host_profile
    if value in (None, "none"):
        return None
    if value == "host":
        return host_profile().name
    return get_profile(value).name


def cmd_plan(args, qemu_argv) -> int:
    plans = []
    kernel = kernel_arg(args.kernel)
    for sc in _scenarios(args, qemu_argv):
        qemus = parse_qemu_list(args.qemu or sc.qemu or DEFAULT_QEMU)
        backends = args.backend or sc.backend or "all"
        blist = (backend_names(in_all=True) if backends == "all"
                 else [get_backend(backends, also=("all",)).name])
        for b in blist:
            for q in qemus:
                plans.append(make_plan(sc, q, b, args.policy, kernel))
    with_others = not args.no_compare
    if args.json:
        json.dump(document(plans, with_others), sys.stdout, indent=1)
        print()
    else:
        if kernel is None:
            print(f"kernel column: '{NOT_RUN}' = the request is exact but no kernel answered "
                  "it (--kernel none)\n")
        print("\n\n".join(render_plan(p, with_others) for p in plans))
    if any(p.rejected for p in plans):
        return 1            # a QEMU that refuses the command line is a failed cell
    if args.check and any(p.hazards or p.realize_error or (p.container and p.container.aborted)
                          for p in plans):
        return 1
    return 0


def cmd_compare(args, qemu_argv) -> int:
    from vmm_model import compare
    from backends.kernel_profiles import list_profiles
    scs = _scenarios(args, qemu_argv)
    if len(scs) != 1:
        raise UsageError("compare takes one scenario (a .toml file, a gallery name, or QEMU "
                         "arguments after --)", where="vfio-emu compare")
    sc = scs[0]
    qemus = parse_qemu_list(args.qemu or sc.qemu or DEFAULT_QEMU)
    backends = [get_backend(b.strip(), where="--backends").name
                for b in args.backends.split(",") if b.strip()]
    kernels = [kernel_arg(k.strip()) for k in args.kernels.split(",") if k.strip()]
    if None in kernels or not kernels:
        raise UsageError("compare needs simulated kernels", where="--kernels",
                         valid=", ".join(list_profiles()) + ", host")
    plans, diffs = compare.compare(sc, qemus, backends, kernels, args.policy)
    if args.json:
        json.dump(compare.document(sc, plans, diffs), sys.stdout, indent=1)
        print()
    else:
        print(compare.render(sc, plans, diffs))
    return 0


def cmd_gallery(args, _qemu_argv) -> int:
    rows = [(sc.name, sc.qemu or "-", sc.backend or "all", sc.upstream, sc.title)
            for sc in gallery.load_all()]
    if args.json:
        json.dump({"schema_version": 1, "scenarios": [
            dict(zip(("name", "qemu", "backend", "upstream", "title"), r)) for r in rows]},
            sys.stdout, indent=1)
        print()
        return 0
    for r in rows:
        print(f"{r[0]:34} qemu {r[1]:7} {r[2]:8} {r[4]}\n{'':34} upstream: {r[3]}")
    return 0


def cmd_versions(args, _qemu_argv) -> int:
    if args.json:
        json.dump(versions_dict(), sys.stdout, indent=1)
        print()
    else:
        print(versions_table())
    return 0


def cmd_profiles(args, _qemu_argv) -> int:
    from backends.kernel_profiles import (format_profiles, get_profile, host_profile,
                                             profiles_dict)
    names = None
    if args.kernel:
        names = [(host_profile() if args.kernel == "host" else get_profile(args.kernel)).name]
    if args.json:
        doc = profiles_dict()
        if names:
            doc["profiles"] = {k: v for k, v in doc["profiles"].items() if k in names}
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(format_profiles(names) if names else format_profiles())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vfio-emu", description=(
        "Emulate QEMU's VFIO DMA-mapping decisions (vfio_container_dma_map) per QEMU "
        "version and IOMMU backend."))
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    pl = sub.add_parser("plan", help="what QEMU maps, how, per section (default: the gallery)")
    pl.add_argument("scenario", nargs="?", help="a scenario .toml file or a gallery name; "
                    "or give QEMU arguments after --")
    pl.add_argument("--qemu", help="QEMU version(s), comma list: " + ", ".join(QEMU_VERSIONS)
                    + ", a release such as 11.0.1, or all (default: the scenario's, else "
                    + DEFAULT_QEMU + ")")
    pl.add_argument("--backend", help=f"{', '.join(backend_names())} or all (= "
                    f"{' and '.join(backend_names(in_all=True))})")
    pl.add_argument("--kernel", default=DEFAULT_KERNEL,
                    help=f"simulated kernel profile that answers the ioctls (default "
                         f"{DEFAULT_KERNEL}; 'host' = this machine's version; 'none' = plan only)")
    pl.add_argument("--policy", help="a registered policy name or module:callable")
    pl.add_argument("--json", action="store_true", help="versioned JSON")
    pl.add_argument("--check", action="store_true",
                    help="exit 1 when a hazard, a realize failure or an abort is found")
    pl.add_argument("--no-compare", action="store_true",
                    help="skip the other-QEMU-versions column")
    pl.set_defaults(func=cmd_plan)
    c = sub.add_parser("compare", help="kernel answers that differ between backends, "
                       "kernels and QEMU versions")
    c.add_argument("scenario", nargs="?", help="a scenario .toml file or a gallery name; "
                   "or give QEMU arguments after --")
    c.add_argument("--backends", default=",".join(backend_names()),
                   help=f"comma list of {', '.join(backend_names())} (default: all of them)")
    c.add_argument("--kernels", default="6.12,7.2,7.2+fix",
                   help="comma list of kernel profiles (default 6.12,7.2,7.2+fix; see 'profiles')")
    c.add_argument("--qemu", help="QEMU version(s), comma list (default: the scenario's or "
                   + DEFAULT_QEMU + ")")
    c.add_argument("--policy", help="a registered policy name or module:callable")
    c.add_argument("--json", action="store_true", help="versioned JSON")
    c.set_defaults(func=cmd_compare)
    g = sub.add_parser("gallery", help="list the built-in scenarios")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gallery)
    v = sub.add_parser("versions", help="list the modelled QEMU versions and, per rule, the "
                       "release it appeared in")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_versions)
    pr = sub.add_parser("profiles", help="list the simulated kernel profiles and their switches")
    pr.add_argument("--kernel", help="one profile: a name or 'host' (the running kernel)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_profiles)
    from backends.probe import register as register_probe
    from backends.rig.cli import register as register_rig
    from vmm_model.qemu.cli import register
    from vmm_model.run import register as register_run
    register(sub)
    register_run(sub)
    register_probe(sub)
    register_rig(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    qemu_argv = None
    if "--" in argv:
        i = argv.index("--")
        argv, qemu_argv = argv[:i], argv[i + 1:]
    try:
        args = build_parser().parse_args(argv)
        if args.cmd is None:
            build_parser().print_help()
            return 2
        return args.func(args, qemu_argv)
    except VfioEmuError as e:
        print(f"vfio-emu: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
