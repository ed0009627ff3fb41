"""``vfio-emu compare``: one scenario under several backends x kernels x QEMU
versions, showing only the sections whose kernel answer differs.

Each column is one (QEMU, backend, kernel) run on the simulated kernel.  A row
is one listener event (path + guest range); a cell is ``IOCTL errno`` (``0``
for success, ``skip``/``warn``/``error`` for listener outcomes without an
ioctl).  Rows where every column has the same errno are left out; the footer
says what each column's QEMU did in the end (realize failure, abort).
"""

from __future__ import annotations

from backends.base import errno_name
from vmm_model.gc_pause import gc_paused
from vmm_model.plan import Plan, make_plan
from vmm_model.report import SHORT_IOCTL as _SHORT
from vmm_model.scenario import Scenario

SCHEMA_VERSION = 1


_ROW_KINDS = frozenset(("map", "unmap", "error", "warn"))
_PART_PATHS = ("rdm", "iommu")     # listener paths that map parts of a section


def _row_key(ev) -> tuple:
    """(listener path, [gpa, end)) of an event's row: a map or unmap that covers
    part of a section (a virtio-mem block, an IOMMU mapping) has its own row;
    anything else is the section's."""
    s = ev.section
    if s is None or (ev.path in _PART_PATHS and (ev.kind == "map" or ev.kind == "unmap")):
        return ev.path, (ev.iova, ev.iova + ev.size)
    lo = s.offset_within_address_space
    return ev.path, (lo, lo + s.size)        # s.end without a property call


_CELLS: dict[tuple, tuple[str, int | None]] = {}


def _cell(ev) -> tuple[str, int | None]:
    """(text, ret) of one event: ret None for events without a kernel answer
    (made once per (ioctl, ret): a 1 TiB guest has half a million alike)."""
    if ev.kind in ("map", "unmap") and ev.result is not None:
        r = ev.result
        key = (r.ioctl, r.ret)
        cell = _CELLS.get(key)
        if cell is None:
            ioctl, ret = key
            name = _SHORT.get(ioctl, ioctl) if ioctl else "no ioctl"
            cell = _CELLS[key] = ((f"{name} not run", None) if ret is None else
                                  (f"{name} 0" if ret == 0 else f"{name} {errno_name(ret)}", ret))
        return cell
    return ev.kind, None


def column_name(p: Plan) -> str:
    return f"{p.backend}/{p.kernel}/qemu-{p.qemu.name}"


def run_outcome(rejected: str | None, kernel_error: str | None, realize_error: str | None,
                aborted: str | None) -> str:
    """What QEMU did in the end, in one line (compare's footer, migrate-check's sides)."""
    if rejected:
        return f"rejected: {rejected}"
    if kernel_error:
        return f"cannot start: {kernel_error}"
    if realize_error:
        return f"realize fails: {realize_error}"
    if aborted:
        return f"aborts: {aborted}"
    return "runs"


def outcome(p: Plan) -> str:
    return run_outcome(p.rejected, p.kernel_error, p.realize_error,
                       p.container.aborted if p.container else None)


def compare(sc: Scenario, qemus, backends, kernels, policy=None,
            host_iommu=None, keep_events: bool = True) -> tuple[list[Plan], list[dict]]:
    """Run every combination; return the plans and the differing rows
    ({"path", "gpa", "sections", "cells": [text per column]}: one row per
    section, or per block or IOMMU mapping on the rdm and iommu paths, where
    contiguous ones with the same cells are one row and ``sections`` counts
    them).  ``keep_events=False`` (the command line): a plan's events are
    dropped once its cells are taken, so memory holds the rows and one plan's
    events, not every column's (the plans keep their outcome).  The cyclic GC
    stays paused: the rows live until the diff is made, so a collection would
    walk them all and find no garbage."""
    columns = [(q, b, k) for q in qemus for b in backends for k in kernels]
    with gc_paused():
        plans: list[Plan] = []
        rows: dict[tuple, list] = {}
        for i, (q, b, k) in enumerate(columns):
            p = make_plan(sc, q, b, policy, k, host_iommu)
            plans.append(p)
            for ev in p.events:
                if ev.kind in _ROW_KINDS:
                    key = _row_key(ev)
                    cells = rows.get(key)
                    if cells is None:
                        cells = rows[key] = [None] * len(columns)
                    cells[i] = _cell(ev)
            if not keep_events and p.container is not None:
                p.container.events, p.hazards = [], []
        diffs: list[dict] = []
        last = None         # a run of contiguous blocks with the same cells is one difference
        for (path, gpa), cells in rows.items():
            first = cells[0]
            if first is not None and cells.count(first) == len(cells):
                continue        # one cell object (_CELLS) in every column: nothing differs
            values = {"absent" if c is None else c[1] if c[1] is not None else c[0]
                      for c in cells}
            if len(values) > 1:
                texts = [c[0] if c else "-" for c in cells]
                if last is not None and last["path"] == path and last["gpa"][1] == gpa[0] \
                        and last["cells"] == texts and path in _PART_PATHS:
                    last["gpa"][1] = gpa[1]
                    last["sections"] += 1
                    continue
                last = {"path": path, "gpa": [gpa[0], gpa[1]], "sections": 1, "cells": texts}
                diffs.append(last)
    return plans, diffs


def render(sc: Scenario, plans: list[Plan], diffs: list[dict]) -> str:
    cols = [column_name(p) for p in plans]
    lines = [f"== {sc.name}" + (f": {sc.title}" if sc.title else "")]
    if not diffs:
        lines.append("   every column gives the same kernel answers")
    else:
        rows = [["section", *cols]]
        for d in diffs:
            n = d["sections"]
            rows.append([f"{d['path']} [0x{d['gpa'][0]:x}, 0x{d['gpa'][1]:x})"
                         + (f" ×{n}" if n > 1 else ""), *d["cells"]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["   " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("   outcome:")
    lines += [f"     {c}: {outcome(p)}" for c, p in zip(cols, plans)]
    return "\n".join(lines)


def document(sc: Scenario, plans: list[Plan], diffs: list[dict]) -> dict:
    return {"schema_version": SCHEMA_VERSION, "tool": "vfio-emu compare", "scenario": sc.name,
            "columns": [{"name": column_name(p), "qemu": p.qemu.name, "backend": p.backend,
                         "kernel": p.kernel, "outcome": outcome(p)} for p in plans],
            "differences": diffs}
