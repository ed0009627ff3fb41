"""Where a scenario came from, for plan output and ``vfio-emu libvirt-argv``:
the QEMU arguments it was built from (for a libvirt domain: the arguments the
chosen libvirt release generates) and what they hold that vfio-emu does not
model, listed once."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap

from vmm_model.scenario import Scenario


def argv_lines(argv: list[str]) -> list[str]:
    """One shell-quoted option (with its argument) per line."""
    out, i = [], 0
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out.append(shlex.join(argv[i:i + 2]))
            i += 2
        else:
            out.append(shlex.quote(argv[i]))
            i += 1
    return out


def _unique(scenarios: list[Scenario]) -> list[Scenario]:
    return list({id(sc): sc for sc in scenarios}.values())


def render_inputs(scenarios: list[Scenario], width: int | None = None) -> str:
    """Text: for each scenario built from QEMU arguments, its arguments (libvirt
    translations; lines cut at ``width``, ``libvirt-argv`` shows them whole) and
    the "not modelled" list (wrapped at ``width``)."""
    def cut(line: str) -> str:
        return line if width is None or len(line) <= width else line[:width - 1] + "…"

    out = []
    for sc in _unique(scenarios):
        lines = []
        if sc.origin and sc.argv is not None:
            lines.append(cut(f"{sc.name}: QEMU arguments from the {sc.origin}:"))
            lines.extend(cut("  " + line) for line in argv_lines(sc.argv))
        if sc.not_modelled:
            text = f"{sc.name}: not modelled: " + "; ".join(sc.not_modelled)
            lines.append(textwrap.fill(text, width, subsequent_indent="  ",
                                       break_on_hyphens=False, break_long_words=True)
                         if width else text)
        if lines:
            out.append("\n".join(lines))
    return "\n".join(out)


def inputs_json(scenarios: list[Scenario]) -> list[dict]:
    return [{"scenario": sc.name, "origin": sc.origin or None, "qemu_argv": sc.argv,
             "not_modelled": sc.not_modelled, "machine_version": sc.machine_version}
            for sc in _unique(scenarios) if sc.argv is not None or sc.not_modelled]


def cmd_libvirt_argv(args, _qemu_argv) -> int:
    from vmm_model.libvirt import from_domain_xml, get_libvirt
    from pathlib import Path
    from vmm_model.scenario import read_scenario_text
    v = get_libvirt(args.libvirt)
    text = read_scenario_text(args.domain, "domain XML")
    sc = from_domain_xml(text, args.domain, Path(args.domain).stem, v.name)
    if args.json:
        json.dump({"schema_version": 1, "libvirt": v.name, **inputs_json([sc])[0]},
                  sys.stdout, indent=1)
        print()
        return 0
    print(f"# libvirt {v.name} ({v.title}): memory and VFIO arguments for {args.domain}")
    print("\n".join(argv_lines(sc.argv)))
    if sc.not_modelled:
        print("# not modelled: " + "; ".join(sc.not_modelled))
    return 0


def register(subparsers):
    """``vfio-emu libvirt-argv DOMAIN.xml [--libvirt X.Y] [--json]``."""
    from vmm_model.libvirt import DEFAULT_LIBVIRT, LIBVIRT_VERSIONS
    p = subparsers.add_parser("libvirt-argv", help="the QEMU memory/VFIO arguments libvirt "
                              "generates for a domain XML")
    p.add_argument("domain", help="a libvirt domain XML file")
    p.add_argument("--libvirt", default=DEFAULT_LIBVIRT,
                   help=f"libvirt release: {', '.join(LIBVIRT_VERSIONS)} "
                        f"(default {DEFAULT_LIBVIRT})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_libvirt_argv)
    return p
