"""``vfio-emu``: the command line, and its one error boundary.

Exit status: 0 ok; 1 ``--check`` found something, or a QEMU version rejects the
command line (``plan``; each reason is printed);
2 bad input or an environment problem (one line ``vfio-emu: error: <where>:
<what is wrong> (valid: <what would be>)``; no traceback); 3 an internal
error (a bug: ``--debug`` shows the traceback); 130 interrupted (Ctrl-C);
141 standard output was closed early (as a process killed by SIGPIPE).
JSON on standard output is a complete document or nothing.

Subcommands are imported when they run: ``vfio-emu --help`` imports none of them.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

EXIT_OK, EXIT_CHECK, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_EPIPE = 0, 1, 2, 3, 130, 141

# name: ("module:register function", help).  A subcommand's module is imported
# only when that subcommand runs (or shows its --help).
COMMANDS = {
    "plan": ("vmm_model.cli:register_plan", "what QEMU maps, how, per section "
             "(default: the gallery)"),
    "compare": ("vmm_model.cli:register_compare", "kernel answers that differ between "
                "backends, kernels and QEMU versions"),
    "gallery": ("vmm_model.cli:register_gallery", "list the built-in scenarios"),
    "versions": ("vmm_model.cli:register_versions", "list the modelled QEMU versions and, "
                 "per rule, the release it appeared in"),
    "profiles": ("vmm_model.cli:register_profiles", "list the simulated kernel profiles and "
                 "their switches"),
    "inspect": ("vmm_model.qemu.cli:register", "the plan for a live QEMU (QMP socket, or HMP "
                "on stdio of a QEMU started for it)"),
    "probe": ("backends.probe:register", "what this host offers: /dev/vfio, groups, "
              "/dev/iommu, cdevs, MAP_FILE, RLIMIT_MEMLOCK"),
    "rig": ("backends.rig.cli:register", "real kernels under QEMU (vIOMMU + edu): build, run "
            "test sets in the guest"),
    "migrate-check": ("vmm_model.migrate_cli:register", "will this VM (or fleet) survive a "
                      "move of QEMU, backend, kernel or a migration"),
    "libvirt-argv": ("vmm_model.inputs_report:register", "the QEMU memory/VFIO arguments "
                     "libvirt generates for a domain XML"),
    "run": ("vmm_model.run:register", "run a real QEMU binary against the simulated kernel "
            "(LD_PRELOAD shim; give the binary and its arguments after --)"),
}

def examples(cmd: str | None) -> str | None:
    """The examples that end ``cmd``'s --help, with the newest modelled QEMU release
    (the top-level help names none, so that it imports nothing)."""
    if cmd is None:
        return """examples:
  vfio-emu plan s06 --backend iommufd        (the newest QEMU release by default)
  vfio-emu plan -- -m 4G -mem-path /dev/hugepages
  vfio-emu compare s17 --kernels 6.12,7.2
  vfio-emu inspect --qmp /run/qemu/vm1.qmp
  vfio-emu <command> --help"""
    from vmm_model.qemu_versions import DEFAULT_QEMU as NEWEST_QEMU
    return {
    "plan": f"""examples:
  vfio-emu plan                               every gallery scenario
  vfio-emu plan s06 --qemu {NEWEST_QEMU} --backend iommufd --check
  vfio-emu plan vm.toml --qemu all --json > plan.json
  vfio-emu plan --qemu {NEWEST_QEMU} -- -m 4G -object memory-backend-memfd,id=m0,size=4G \\
      -machine memory-backend=m0 -device vfio-pci,host=0000:01:00.0""",
    "compare": f"""examples:
  vfio-emu compare s17 --kernels 6.12,7.2,7.2+fix
  vfio-emu compare vm.toml --qemu 10.0,{NEWEST_QEMU} --backends type1,iommufd --json""",
    "gallery": """examples:
  vfio-emu gallery
  vfio-emu gallery --json""",
    "versions": f"""examples:
  vfio-emu versions
  vfio-emu plan s03 --qemu {NEWEST_QEMU}""",
    "profiles": """examples:
  vfio-emu profiles
  vfio-emu profiles --kernel host --json""",
    "inspect": f"""examples:
  vfio-emu inspect --qmp /run/qemu/vm1.qmp --backend iommufd
  vfio-emu inspect --qmp vm1.qmp --write-scenario vm1.toml && vfio-emu plan vm1.toml
  vfio-emu inspect --qmp vm1.qmp --qemu {NEWEST_QEMU} --kernel 7.2
  vfio-emu inspect --hmp-stdio -- qemu-system-x86_64 -m 2G -machine q35""",
    "probe": """examples:
  vfio-emu probe
  vfio-emu probe --require iommufd,map_file --json""",
    "rig": """examples:
  vfio-emu rig list
  vfio-emu rig run --kernel 7.2 --set probe""",
    "migrate-check": f"""examples:
  vfio-emu migrate-check s06 --from qemu=10.0,backend=type1 --to qemu={NEWEST_QEMU},backend=iommufd
  vfio-emu migrate-check vms/ --from backend=type1 --to backend=iommufd --jobs 2 --json
  vfio-emu migrate-check s34 --from qemu=10.2 --to qemu={NEWEST_QEMU} --mode cpr-transfer
  vfio-emu migrate-check seed001 --from kernel=7.2 --to kernel=7.2+lu
  vfio-emu migrate-check domain.xml --from qemu=10.0 --to qemu=10.1 --json""",
    "libvirt-argv": f"""examples:
  vfio-emu libvirt-argv /etc/libvirt/qemu/vm1.xml   the newest modelled libvirt
  vfio-emu libvirt-argv domain.xml --libvirt 9.0 --json
  vfio-emu plan domain.xml --libvirt 11.3 --backend iommufd
  vfio-emu plan /etc/libvirt/qemu/vm1.xml --qemu {NEWEST_QEMU}""",
    "run": """examples:
  vfio-emu run --kernel 7.2 -- qemu-system-x86_64 -m 1G -device vfio-pci,host=0000:01:00.0
  vfio-emu run --against-model -- qemu-system-x86_64 -m 1G -machine q35""",
    }.get(cmd)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        from backends.errors import UsageError
        raise UsageError(message, where=self.prog)


def _import(spec: str):
    import importlib
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"vfio-emu {version('vfio-emu')}"
    except Exception:
        return "vfio-emu (version unknown: not installed)"


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def build_parser(cmd: str | None = None) -> argparse.ArgumentParser:
    """The parser; only subcommand ``cmd`` gets its full parser (and its module imported)."""
    p = _Parser(prog="vfio-emu", description=(
        "Emulate QEMU's VFIO DMA-mapping decisions (vfio_container_dma_map) per QEMU "
        "version and IOMMU backend."), epilog=examples(None),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser, metavar="COMMAND")
    for name, (spec, help_) in COMMANDS.items():
        if name == cmd:
            _import(spec)(sub)
            sp = sub.choices[name]
            sp.epilog = examples(name)
            sp.formatter_class = argparse.RawDescriptionHelpFormatter
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return p


# --- plan, compare, gallery, versions, profiles --------------------------------------------

def _scenarios(args, qemu_argv):
    from pathlib import Path

    from backends.errors import UsageError
    from vmm_model import gallery
    from vmm_model.scenario import from_qemu_args, load_scenario
    libvirt = getattr(args, "libvirt", None)
    if qemu_argv is not None:
        if args.scenario:
            raise UsageError("give a scenario file or QEMU arguments after --, not both",
                             where=f"vfio-emu {args.cmd}")
        if not qemu_argv:
            raise UsageError("no QEMU arguments after --", where=f"vfio-emu {args.cmd}")
        if libvirt:
            raise UsageError("--libvirt applies to libvirt domain XML only",
                             where=f"vfio-emu {args.cmd}")
        return [from_qemu_args(qemu_argv)]
    if not args.scenario:
        return gallery.load_all()
    if Path(args.scenario).exists() or args.scenario.endswith((".toml", ".xml")):
        return [load_scenario(args.scenario, libvirt)]
    return [gallery.load(args.scenario, libvirt)]


def kernel_arg(value: str | None, where: str = "--kernel") -> str | None:
    """--kernel: a profile name, 'host' (this machine's kernel), or 'none'."""
    from backends.errors import UsageError
    from backends.kernel_profiles import get_profile, host_profile
    if value in (None, "none"):
        return None
    if value == "host":
        return host_profile().name
    try:
        return get_profile(value).name
    except UsageError as e:
        raise UsageError(e.message, where=where, valid=e.valid + ", host, none") from None


def _width(args) -> int | None:
    """Text width: None (full rows) with --wide; the terminal's; 80 when not a terminal."""
    if getattr(args, "wide", False):
        return None
    import shutil
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


class _DeferSigint:
    """Hold Ctrl-C while a JSON document is written, so stdout gets all of it
    (then exit 130); a no-op outside the main thread."""

    def __init__(self):
        self.hit = False
        self.old = None

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, lambda *_: setattr(self, "hit", True))
        except ValueError:
            self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        if self.hit and exc[0] is None:
            raise KeyboardInterrupt


def cmd_plan(args, qemu_argv) -> int:
    if args.against_binary is not None:        # vfio-emu run (imported only then)
        from vmm_model.run import plan_against_binary
        return plan_against_binary(args, qemu_argv)
    from vmm_model.iommu_backends import backend_names, get_backend
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import DEFAULT_QEMU
    from vmm_model import report
    from vmm_model.inputs_report import inputs_json, render_inputs
    kernel = kernel_arg(args.kernel)
    _no_empty(args, "qemu", "backend", "policy", "host_iommu")
    jobs = []
    for sc in _scenarios(args, qemu_argv):
        qemus = _qemus(args.qemu or sc.qemu or DEFAULT_QEMU)
        backends = args.backend or sc.backend or "all"
        for b in (backend_names(in_all=True) if backends == "all"
                  else [get_backend(backends, also=("all",)).name]):
            jobs += [(sc, q, b) for q in qemus]
    with_others = not args.no_compare
    out = sys.stdout
    plans = []
    if args.json or args.jsonl:
        # every plan first (errors and Ctrl-C leave stdout empty), then the document
        plans = [make_plan(sc, q, b, args.policy, kernel, args.host_iommu)
                 for sc, q, b in jobs]
        inputs = inputs_json([sc for sc, _, _ in jobs])
        with _DeferSigint():
            report.write_json(plans, out, with_others, jsonl=args.jsonl,
                              top={"inputs": inputs} if inputs else None)
            out.flush()
    else:
        width = _width(args)
        for n, (sc, q, b) in enumerate(jobs):
            p = make_plan(sc, q, b, args.policy, kernel, args.host_iommu)
            if n:
                out.write("\n")
            else:                         # once the first plan stands (errors leave no text)
                text = render_inputs([sc for sc, _, _ in jobs], width)
                if text:
                    out.write(text + "\n\n")
            if n == 0 and kernel is None:
                out.write(f"kernel column: '{report.NOT_RUN}' = the request is exact but no "
                          "kernel answered it (--kernel none)\n\n")
            for line in report.render_lines(p, with_others, width, args.all):
                out.write(line + "\n")
            plans.append(_Done(p, report))
        if len(plans) > 1:
            ok = sum(d.ok for d in plans)
            out.write(f"\n{len(plans)} plans: {ok} realize ok, {len(plans) - ok} not; "
                      f"{sum(d.hazards for d in plans)} hazards\n")
    reasons = [(p, r) for p in plans for r in (p.reasons if isinstance(p, _Done)
                                               else report.check_reasons(p))]
    # a QEMU that refuses the command line is a failed cell, reported with or without --check
    shown = [(p, r) for p, r in reasons if args.check or p.rejected]
    out.flush()
    for p, r in shown:
        print(f"vfio-emu: check: {p.scenario.name} (QEMU {p.qemu.name}, {p.backend}): {r}",
              file=sys.stderr)
    return EXIT_CHECK if shown else EXIT_OK


class _Done:
    """What is kept of a plan once its text is written (so a long run keeps no events)."""

    def __init__(self, p, report):
        self.scenario, self.qemu, self.backend = p.scenario, p.qemu, p.backend
        self.rejected, self.rejected_error = p.rejected, p.rejected_error
        self.reasons = report.check_reasons(p)
        self.ok = report.result(p) == "realize ok"
        self.hazards = len(p.hazards)


def register_plan(sub):
    from vmm_model.iommu_backends import backend_names
    from vmm_model.plan import DEFAULT_KERNEL
    from vmm_model.qemu_versions import DEFAULT_QEMU, QEMU_VERSIONS
    pl = sub.add_parser("plan", help=COMMANDS["plan"][1])
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
    _host_iommu_option(pl)
    pl.add_argument("--libvirt", help="translate a libvirt domain XML as this libvirt "
                    "release would (default: the newest modelled; see libvirt-argv)")
    fmt = pl.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="versioned JSON, written as produced")
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    pl.add_argument("--check", action="store_true",
                    help="exit 1 when a hazard, a failed map, a realize failure or an abort "
                         "is found, and print each reason")
    pl.add_argument("--no-compare", action="store_true",
                    help="skip the other-QEMU-versions column")
    pl.add_argument("--wide", action="store_true",
                    help="full rows (default: fit the terminal, 80 columns when not one)")
    pl.add_argument("--all", action="store_true",
                    help="one row per section (default: runs of identical sections are one row)")
    pl.add_argument("--against-binary", metavar="QEMU_BINARY",
                    help="run this real QEMU binary on the simulated kernel (vfio-emu run) "
                         "and show where it and the model differ")
    pl.set_defaults(func=cmd_plan)
    return pl


def _comma_list(text: str, where: str) -> list[str]:
    from backends.errors import UsageError
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise UsageError(f"empty element in {text!r}", where=where,
                         valid="a comma-separated list without empty elements")
    return items


def _no_empty(args, *names) -> None:
    """An option given with an empty value is an error, not its default."""
    from backends.errors import UsageError
    for n in names:
        if getattr(args, n) is not None and not getattr(args, n).strip():
            raise UsageError("empty value", where="--" + n.replace("_", "-"))


def _qemus(text: str):
    """--qemu: 'all' or a comma list of versions, no empty elements."""
    from vmm_model.qemu_versions import parse_qemu_list
    return parse_qemu_list(text if text == "all" else ",".join(_comma_list(text, "--qemu")))


def _host_iommu_option(p) -> None:
    p.add_argument("--host-iommu", metavar="NAME",
                   help="the simulated host's IOMMU (default: the scenario's [host] iommu, "
                        "else vtd-48; 'vfio-emu profiles --host-iommus' lists them)")


def cmd_compare(args, qemu_argv) -> int:
    import json

    from backends.errors import UsageError
    from backends.kernel_profiles import list_profiles
    from vmm_model import compare
    from vmm_model.iommu_backends import get_backend
    from vmm_model.qemu_versions import DEFAULT_QEMU
    scs = _scenarios(args, qemu_argv)
    if len(scs) != 1:
        raise UsageError("compare takes one scenario (a .toml file, a gallery name, or QEMU "
                         "arguments after --)", where="vfio-emu compare")
    sc = scs[0]
    _no_empty(args, "qemu", "policy")
    qemus = _qemus(args.qemu or sc.qemu or DEFAULT_QEMU)
    backends = [get_backend(b, where="--backends").name
                for b in _comma_list(args.backends, "--backends")]
    kernels = [kernel_arg(k, "--kernels") for k in _comma_list(args.kernels, "--kernels")]
    if None in kernels:
        raise UsageError("compare needs simulated kernels", where="--kernels",
                         valid=", ".join(list_profiles()) + ", host")
    plans, diffs = compare.compare(sc, qemus, backends, kernels, args.policy, args.host_iommu,
                                   keep_events=False)
    from vmm_model.inputs_report import inputs_json, render_inputs
    if args.json:
        doc = compare.document(sc, plans, diffs)
        inputs = inputs_json([sc])
        if inputs:
            doc["inputs"] = inputs
        text = json.dumps(doc, indent=1)
        with _DeferSigint():
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
    else:
        text = render_inputs([sc])
        print((text + "\n\n" if text else "") + compare.render(sc, plans, diffs))
    return EXIT_OK


def register_compare(sub):
    from vmm_model.iommu_backends import backend_names
    c = sub.add_parser("compare", help=COMMANDS["compare"][1])
    c.add_argument("scenario", nargs="?", help="a scenario .toml file or a gallery name; "
                   "or give QEMU arguments after --")
    c.add_argument("--backends", default=",".join(backend_names()),
                   help=f"comma list of {', '.join(backend_names())} (default: all of them)")
    c.add_argument("--kernels", default="6.12,7.2,7.2+fix",
                   help="comma list of kernel profiles (default 6.12,7.2,7.2+fix; see 'profiles')")
    c.add_argument("--qemu", help="QEMU version(s), comma list (default: the scenario's)")
    c.add_argument("--policy", help="a registered policy name or module:callable")
    _host_iommu_option(c)
    c.add_argument("--libvirt", help="libvirt release for a domain XML (see libvirt-argv)")
    c.add_argument("--json", action="store_true", help="versioned JSON")
    c.set_defaults(func=cmd_compare)
    return c


def _dump(doc) -> None:
    import json
    text = json.dumps(doc, indent=1)
    with _DeferSigint():
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def cmd_gallery(args, _qemu_argv) -> int:
    from vmm_model import gallery
    rows = [(sc.name, sc.qemu or "-", sc.backend or "all", sc.upstream, sc.title)
            for sc in gallery.load_all()]
    if args.json:
        _dump({"schema_version": 1, "scenarios": [
            dict(zip(("name", "qemu", "backend", "upstream", "title"), r)) for r in rows]})
        return EXIT_OK
    width = _width(args)

    def clip(line):
        return line if width is None or len(line) <= width else line[:width - 1] + "…"
    for r in rows:
        print(clip(f"{r[0]:34} qemu {r[1]:6} {r[2]:8} {r[4]}"))
        if r[3]:
            print(clip(f"{'':34} upstream: {r[3]}"))
    return EXIT_OK


def register_gallery(sub):
    g = sub.add_parser("gallery", help=COMMANDS["gallery"][1])
    g.add_argument("--json", action="store_true")
    g.add_argument("--wide", action="store_true", help="do not cut titles at the terminal width")
    g.set_defaults(func=cmd_gallery)
    return g


def cmd_versions(args, _qemu_argv) -> int:
    from vmm_model.qemu_versions import versions_dict, versions_table
    if args.json:
        _dump(versions_dict())
    else:
        print(versions_table())
    return EXIT_OK


def register_versions(sub):
    v = sub.add_parser("versions", help=COMMANDS["versions"][1])
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_versions)
    return v


def cmd_profiles(args, _qemu_argv) -> int:
    from backends.kernel_profiles import format_profiles, profiles_dict
    if args.host_iommus:
        from backends.simulated.iommu import format_host_iommus, host_iommus_dict
        if args.json:
            _dump(host_iommus_dict())
        else:
            print(format_host_iommus(), end="")
        return EXIT_OK
    names = None
    if args.kernel is not None:
        name = kernel_arg(args.kernel)
        if name is None:
            from backends.errors import UsageError
            raise UsageError("'none' is not a profile", where="--kernel",
                             valid="a profile name or host")
        names = [name]
    if args.json:
        doc = profiles_dict()
        if names:
            doc["profiles"] = {k: v for k, v in doc["profiles"].items() if k in names}
        _dump(doc)
    else:
        print(format_profiles(names) if names else format_profiles())
    return EXIT_OK


def register_profiles(sub):
    pr = sub.add_parser("profiles", help=COMMANDS["profiles"][1])
    pr.add_argument("--kernel", help="one profile: a name or 'host' (the running kernel)")
    pr.add_argument("--host-iommus", action="store_true",
                    help="list the host IOMMUs --host-iommu can choose instead")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_profiles)
    return pr


# --- the error boundary ----------------------------------------------------------------

def error_line(e: BaseException) -> str:
    """``vfio-emu: error: <what is wrong> (<where>); valid: <what would be>`` on one line."""
    from backends.errors import VfioEmuError
    if isinstance(e, VfioEmuError):
        text = e.message
        if e.field and e.field not in text:
            text = f"{e.field}: {text}"
        if e.where:
            text += f" ({e.where})"
        if e.valid:
            text += f"; valid: {e.valid}"
    else:
        text = str(e)
    text = " ".join(text.split())
    while text.startswith("vfio-emu: "):        # a message that carries the prefix itself
        text = text.removeprefix("vfio-emu: ").removeprefix("error: ")
    return f"vfio-emu: error: {text}"


def _stdout_error(e: OSError) -> bool:
    """An error writing standard output (ENOSPC on /dev/full, EIO, ...)."""
    return e.filename is None and e.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT,
                                              errno.EFBIG, errno.EBADF)


def _silence_stdout() -> None:
    """After EPIPE/ENOSPC: point fd 1 at /dev/null so the interpreter's final
    flush does not print 'Exception ignored'."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _utf8_or_escape() -> None:
    """An output encoding that is not UTF-8 (PYTHONIOENCODING=ascii, LANG=C on an
    old Python) gets \\u escapes instead of a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if enc != "utf8" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _split(argv: list[str]) -> tuple[list[str], list[str] | None, bool, str | None]:
    """(our arguments, QEMU's after --, --debug, the subcommand name)."""
    qemu_argv = None
    if "--" in argv:
        i = argv.index("--")
        argv, qemu_argv = argv[:i], argv[i + 1:]
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    cmd = next((a for a in argv if not a.startswith("-")), None)
    return argv, qemu_argv, debug, cmd if cmd in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]   # PathLike too
    argv, qemu_argv, debug, cmd = _split(argv)
    if sys.stdout is None or sys.stderr is None:     # started with fd 1 or 2 closed
        if sys.stderr is not None:
            sys.stderr.write("vfio-emu: error: standard output is closed\n")
        return EXIT_USAGE
    _utf8_or_escape()
    from backends.errors import VfioEmuError
    try:
        try:
            parser = build_parser(cmd)
            args = parser.parse_args(argv)
            if args.cmd is None:
                parser.print_help()
                return EXIT_USAGE
            rc = args.func(args, qemu_argv)
            sys.stdout.flush()
            return rc
        except SystemExit as e:          # --help, --version
            sys.stdout.flush()
            return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        print("vfio-emu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_EPIPE
    except VfioEmuError as e:
        return _fail(error_line(e), EXIT_USAGE, debug)
    except MemoryError:
        return _fail("vfio-emu: error: out of memory: a size in the input is too large to "
                     "model (check sizes, maxmem and virtio-mem block-size)", EXIT_USAGE, debug)
    except RecursionError:
        return _fail("vfio-emu: error: input nested too deeply", EXIT_USAGE, debug)
    except OSError as e:
        if _stdout_error(e):
            _silence_stdout()
            return _fail(f"vfio-emu: error: cannot write standard output: "
                         f"{e.strerror or e}", EXIT_USAGE, debug)
        where = f" ({e.filename})" if e.filename else ""
        return _fail(f"vfio-emu: error: {e.strerror or e}{where}", EXIT_USAGE, debug)
    except Exception as e:               # a bug: one line, the traceback with --debug
        return _fail(f"vfio-emu: error: internal error: {type(e).__name__}: "
                     f"{' '.join(str(e).split())} (run with --debug for the traceback, and "
                     "please report it)", EXIT_INTERNAL, debug)


def _fail(line: str, code: int, debug: bool) -> int:
    if debug:
        import traceback
        traceback.print_exc()
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
