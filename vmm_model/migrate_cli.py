"""``vfio-emu migrate-check``: one VM or a fleet (a directory of scenarios).

    vfio-emu migrate-check s06 --from qemu=10.0,backend=type1,kernel=6.12 \\
                               --to qemu=10.2,backend=iommufd,kernel=7.2
    vfio-emu migrate-check fleet/ --from backend=type1 --to backend=iommufd --jobs 2 --json
    vfio-emu migrate-check --from qemu=10.2 --to qemu=master --mode cpr-transfer -- -m 4G ...

A directory holds one VM per file: ``*.toml`` scenarios, ``*.xml`` libvirt
domains and ``*.args`` QEMU command lines.  Exit status: 0 nothing breaks,
1 something breaks (``--strict``: or changes), 2 bad input.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

from backends.errors import UsageError
from vmm_model.migration import (MODES, RULES, SCHEMA_VERSION, SIDE_KEYS, VERDICTS, MigrationCheck,
                                 SectionsJSON, migrate_check, parse_side, worst)
from vmm_model.scenario import Scenario, from_qemu_args

FLEET_SUFFIXES = (".toml", ".xml", ".args")
"""The files of a fleet directory: scenarios, libvirt domain XML, QEMU command lines
(each read by vmm_model.scenario.load_scenario, which tells them apart by content)."""


def load_file(path: Path, libvirt: str | None = None) -> Scenario:
    """One VM file: ``*.args`` is a QEMU command line (``#`` comment lines
    allowed) whatever its first line looks like; anything else is told apart by
    its content (load_scenario())."""
    from vmm_model.scenario import load_scenario
    if path.suffix == ".args":
        from vmm_model.qemu.cmdline import loads_command_line
        from vmm_model.scenario import read_scenario_text
        text = "\n".join(ln for ln in read_scenario_text(path).splitlines()
                         if not ln.lstrip().startswith("#"))
        return loads_command_line(text, str(path), path.stem)
    return load_scenario(path, libvirt)


def load_scenarios(target: str | None, qemu_argv: list[str] | None,
                   libvirt: str | None = None) -> list[Scenario]:
    """SCENARIO as for ``plan`` (gallery name, scenario file of any kind, QEMU
    arguments after ``--``), or a directory of them (every file is read before
    anything runs)."""
    from vmm_model import gallery
    if qemu_argv is not None:
        if target:
            raise UsageError("give a scenario or QEMU arguments after --, not both",
                             where="vfio-emu migrate-check")
        if not qemu_argv:
            raise UsageError("no QEMU arguments after --", where="vfio-emu migrate-check")
        return [from_qemu_args(qemu_argv)]
    if not target:
        raise UsageError("no scenario", where="vfio-emu migrate-check",
                         valid="a gallery name, a .toml or .args file, a directory, or QEMU "
                               "arguments after --")
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in FLEET_SUFFIXES and p.is_file())
        if not files:
            raise UsageError("no " + ", ".join(f"*{x}" for x in FLEET_SUFFIXES) + " files",
                             where=str(path))
        return [dataclasses.replace(load_file(p, libvirt), name=p.name) for p in files]
    if path.exists() or path.suffix in FLEET_SUFFIXES:
        if not path.exists():
            raise UsageError("no such file", where=str(path))
        return [load_file(path, libvirt)]
    return [gallery.load(target, libvirt)]


def _check(job) -> MigrationCheck:
    sc, src, dst, mode = job
    return migrate_check(sc, src, dst, mode)


def run_fleet(scenarios, src, dst, mode=None, jobs: int = 1, progress=None) -> list[MigrationCheck]:
    """``migrate_check`` over every scenario, ``jobs`` processes at a time
    (concurrent.futures), in the scenarios' order; ``progress(i, n, result)``
    after each one."""
    work = [(sc, src, dst, mode) for sc in scenarios]
    results: list[MigrationCheck] = []
    if jobs <= 1 or len(work) <= 1:
        it = map(_check, work)
    else:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(max_workers=jobs)
        it = pool.map(_check, work)
    try:
        for i, r in enumerate(it, 1):
            results.append(r)
            if progress:
                progress(i, len(work), r)
    finally:
        if jobs > 1 and len(work) > 1:
            pool.shutdown(cancel_futures=True)
    return results


def causes(results: list[MigrationCheck]) -> list[dict]:
    """Findings grouped by rule code: verdict, how many VMs, which ones, why."""
    groups: dict[str, dict] = {}
    for r in results:
        for f in r.findings:
            g = groups.setdefault(f.code, {"code": f.code, "verdict": f.verdict, "vms": [],
                                           "findings": 0, "why": RULES[f.code].why,
                                           "source": f.source})
            g["findings"] += 1
            if r.scenario not in g["vms"]:
                g["vms"].append(r.scenario)
    return sorted(groups.values(), key=lambda g: (-VERDICTS.index(g["verdict"]), -len(g["vms"]),
                                                  g["code"]))


def _order(results):
    return sorted(results, key=lambda r: (-VERDICTS.index(r.verdict),
                                          -len(r.by_verdict("breaks")),
                                          -len(r.by_verdict("changes")), r.scenario))


def summary(results: list[MigrationCheck]) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    lines = [f"{len(results)} VMs: " + ", ".join(f"{counts[v]} {v}" for v in reversed(VERDICTS))]
    rows = [["VM", "verdict", "breaks", "changes", "findings"]]
    for r in _order(results):
        codes = sorted({f.code for f in r.findings if f.verdict != "safe"})
        rows.append([r.scenario, r.verdict, str(len(r.by_verdict("breaks"))),
                     str(len(r.by_verdict("changes"))), ", ".join(codes) or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("findings by cause:")
    for g in causes(results):
        vms = ", ".join(g["vms"][:5]) + (f", +{len(g['vms']) - 5}" if len(g["vms"]) > 5 else "")
        lines.append(f"  {g['verdict'].upper():7} [{g['code']}] {len(g['vms'])} VM(s), "
                     f"{g['findings']} finding(s): {vms}")
        lines.append(f"          {g['why']}")
        lines.append(f"          source: {g['source']}")
    return "\n".join(lines)


def by_version(sc, side) -> str:
    """Blockers of ``side.mode`` in every QEMU version (the destination's backend and kernel)."""
    from vmm_model.migration import blockers_by_version
    lines = [f"{side.mode} blockers per QEMU version ({side.backend}, kernel {side.kernel}):"]
    for name, outcome, blockers, failures in blockers_by_version(sc, side):
        if outcome != "runs":
            lines.append(f"  {name:13} {outcome}")
        for _, msg, _ in blockers:
            lines.append(f"  {name:13} {msg}")
        for _, msg, _ in failures:
            lines.append(f"  {name:13} not blocked, fails: {msg}")
        if outcome == "runs" and not blockers and not failures:
            lines.append(f"  {name:13} none")
    return "\n".join(lines)


def write_json(doc: dict, out) -> None:
    """``json.dump(doc, out, indent=1)`` and a newline, the same bytes, with each
    side's sections (SectionsJSON) streamed in batches from their templates."""
    import itertools
    held: list[SectionsJSON] = []

    def hold(o):
        if not isinstance(o, SectionsJSON):
            return json.JSONEncoder().default(o)          # TypeError, as json.dump raises
        held.append(o)
        return f"\0{len(held) - 1}"

    # the key and the value together: no JSON string can hold this text
    parts = re.split(r'(?<="sections": )"\\u0000(\d+)"', json.dumps(doc, indent=1, default=hold))
    out.write(parts[0])
    for i in range(1, len(parts), 2):
        line = parts[i - 1].rpartition("\n")[2]
        indent = len(line) - len(line.lstrip(" "))
        items = held[int(parts[i])].items(indent + 1)
        first = list(itertools.islice(items, 1))
        if not first:
            out.write("[]")
        else:
            out.write("[\n" + first[0])
            while batch := list(itertools.islice(items, 4096)):
                out.write(",\n" + ",\n".join(batch))
            out.write("\n" + " " * indent + "]")
        out.write(parts[i + 1])
    out.write("\n")


def document(results: list[MigrationCheck], args) -> dict:
    return {"schema_version": SCHEMA_VERSION, "tool": "vfio-emu migrate-check",
            "from": args.src, "to": args.dst, "mode": args.mode,
            "verdict": worst(r.verdict for r in results),
            "summary": {v: sum(r.verdict == v for r in results) for v in VERDICTS},
            "vms": [r.to_json(lazy=True) for r in _order(results)],
            "causes": causes(results)}


def cmd_migrate_check(args, qemu_argv) -> int:
    parse_side(args.src, "--from")           # bad keys/values: exit 2 before anything runs
    parse_side(args.dst, "--to")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}", where="--jobs")
    scenarios = load_scenarios(args.scenario, qemu_argv, args.libvirt)
    fleet = len(scenarios) > 1

    def progress(i, n, r):
        print(f"migrate-check: [{i}/{n}] {r.scenario}: {r.verdict}", file=sys.stderr, flush=True)

    results = run_fleet(scenarios, args.src, args.dst, args.mode, args.jobs,
                        progress if fleet and not args.quiet else None)
    if args.json:
        doc = document(results, args)
        if args.mode and not fleet:
            from vmm_model.migration import blockers_by_version
            doc["blockers_by_version"] = [
                {"qemu": name, "outcome": outcome,
                 "blockers": [{"kind": k, "message": m, "source": src} for k, m, src in bl],
                 "failures": [{"kind": k, "message": m, "source": src} for k, m, src in fl]}
                for name, outcome, bl, fl in blockers_by_version(scenarios[0],
                                                             results[0].destination.side)]
        write_json(doc, sys.stdout)
    elif fleet:
        print(summary(results))
        if args.verbose:
            print("\n" + "\n\n".join(str(r) for r in _order(results)))
    else:
        print(results[0])
        if args.mode:
            print(by_version(scenarios[0], results[0].destination.side))
    verdict = worst(r.verdict for r in results)
    return 1 if verdict == "breaks" or (args.strict and verdict == "changes") else 0


def register(sub) -> None:
    m = sub.add_parser("migrate-check", help="will this VM (or fleet) survive a move of QEMU, "
                       "backend, kernel or migration mode?")
    from vmm_model.qemu_versions import DEFAULT_QEMU
    m.add_argument("scenario", nargs="?", help="a gallery name, a scenario file (TOML, "
                   "libvirt domain XML, QEMU command line), a directory of them (*.toml, "
                   "*.xml, *.args), or QEMU arguments after --")
    keys = ", ".join(SIDE_KEYS)
    m.add_argument("--from", dest="src", default="", metavar="K=V,...",
                   help=f"the source: any of {keys}; kernel= also takes a release such as "
                        f"6.12.5 (unset: the scenario's, then QEMU {DEFAULT_QEMU}, iommufd, "
                        "kernel 7.2, mode normal)")
    m.add_argument("--to", dest="dst", default="", metavar="K=V,...",
                   help=f"the destination: any of {keys} (unset: the same as the source)")
    m.add_argument("--mode", choices=MODES, help="migration mode for both sides (default normal)")
    m.add_argument("--libvirt", metavar="X.Y", help="libvirt version that translates domain "
                   "XML (default: the newest modelled)")
    m.add_argument("--json", action="store_true", help="versioned JSON")
    m.add_argument("--strict", action="store_true", help="exit 1 also when something changes")
    m.add_argument("--jobs", type=int, default=1, help="processes for a fleet (default 1)")
    m.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    m.add_argument("-v", "--verbose", action="store_true",
                   help="fleet: every VM's findings after the summary")
    m.set_defaults(func=cmd_migrate_check)
