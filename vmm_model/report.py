"""Human tables and versioned JSON for plans.

Errors are printed the way QEMU prints them plus the symbolic errno, e.g.
``vfio_container_dma_map(0x..., 0x100000000, 0x40000000, 0x7f...) = -14 (Bad address) [EFAULT]``.

Text fits ``width`` columns (columns that do not fit are left out, and said
so); runs of identical, contiguous sections are one row unless ``all_rows``;
each plan ends with a summary line.  JSON is written as it is produced
(``write_json``): one event per line, so memory does not grow with the output;
``jsonl`` writes one JSON object per line instead of one document.
"""

from __future__ import annotations

import json
import textwrap

from backends.base import DmaRequest, errno_name, flag_names
from vmm_model.container import Event, live_mappings
from vmm_model.plan import Plan, decision_key, other_versions

SCHEMA_VERSION = 1
NOT_RUN = "not run"
SHORT_IOCTL = {"VFIO_IOMMU_MAP_DMA": "MAP_DMA", "VFIO_IOMMU_UNMAP_DMA": "UNMAP_DMA",
               "IOMMU_IOAS_MAP": "IOAS_MAP", "IOMMU_IOAS_MAP_FILE": "MAP_FILE",
               "IOMMU_IOAS_UNMAP": "IOAS_UNMAP"}
BY_FILE = "IOMMU_IOAS_MAP_FILE"
_FLAGS: dict[tuple[str, int], str] = {}


def _flag_names(ioctl: str, flags: int) -> str:
    """flag_names(), once per (ioctl, flags): a plan has a handful of distinct ones."""
    try:
        return _FLAGS[ioctl, flags]
    except KeyError:
        name = _FLAGS[ioctl, flags] = flag_names(ioctl, flags)
        return name


def _range(ev: Event) -> tuple[int, int] | None:
    s = ev.section
    if ev.kind in ("map", "unmap") and ev.path != "region_add":
        return ev.iova, ev.iova + ev.size
    if s is None:
        return None
    return s.offset_within_address_space, s.end


def _fmt_range(r) -> str:
    return "-" if r is None else f"[0x{r[0]:x}, 0x{r[1]:x})"


def _gpa(ev: Event) -> str:
    return _fmt_range(_range(ev))


def _block(ev: Event) -> tuple[str, str, str, str]:
    mr = ev.section.mr if ev.section else None
    rb = mr.ram_block if mr else None
    if rb is None:
        return (mr.name if mr else "-", "-", "-", "-")
    return (rb.idstr, str(rb.fd) if rb.fd >= 0 else "-",
            "yes" if rb.is_shared() else "no", "yes" if mr.ram_device else "no")


def outcome(ev: Event) -> str:
    if ev.kind == "map" or ev.kind == "unmap":
        r = ev.result
        if r.ret is None:
            return NOT_RUN
        if r.ret == 0:
            return "0" + (f" ({r.note})" if r.note else "")
        return f"{r.ret} [{errno_name(r.ret)}]"
    return ev.kind


# --- summary and --check ---------------------------------------------------------------

def summary(plan: Plan) -> dict:
    """Counts of one plan: map calls by VA / by file / without an ioctl, failed
    ones (the kernel said -errno), skipped sections, hazards, and the end result."""
    va = by_file = none = failed = skipped = 0
    for ev in plan.events:
        if ev.kind == "map":
            r = ev.result
            ioctl = r.ioctl
            if ioctl is None:
                none += 1
            elif ioctl == BY_FILE:
                by_file += 1
            else:
                va += 1
            if r.ret is not None and r.ret < 0:
                failed += 1
        elif ev.kind == "skip":
            skipped += 1
    return {"by_va": va, "by_file": by_file, "no_ioctl": none, "failed": failed,
            "skipped": skipped, "hazards": len(plan.hazards), "result": result(plan)}


def result(plan: Plan) -> str:
    if plan.rejected:
        return plan.rejected            # "QEMU 7.2 rejects this command line: ..."
    if plan.kernel_error:
        return f"the {plan.backend} backend cannot start on kernel {plan.kernel}: " \
               f"{plan.kernel_error}"
    if plan.realize_error:
        return f"realize fails: {plan.realize_error}"
    if plan.container and plan.container.aborted:
        return f"QEMU aborts: {plan.container.aborted}"
    return "realize ok"


def summary_line(plan: Plan) -> str:
    if plan.rejected:
        return f"summary: QEMU {plan.qemu.name} rejects this command line"
    if plan.kernel_error:
        return "summary: " + result(plan).split(":")[0]
    s = summary(plan)
    maps = s["by_va"] + s["by_file"] + s["no_ioctl"]
    verb = "mapped" if plan.kernel else "planned (no kernel)"
    text = (f"summary: {maps} sections {verb}: {s['by_va']} by VA, {s['by_file']} by file"
            + (f", {s['no_ioctl']} without an ioctl" if s["no_ioctl"] else "")
            + f", {s['failed']} failed; {s['skipped']} skipped; {s['hazards']} hazard"
            + ("" if s["hazards"] == 1 else "s") + "; ")
    res = s["result"]
    return text + (res if res == "realize ok" else res.split(":")[0])


def check_reasons(plan: Plan) -> list[str]:
    """Why ``--check`` fails this plan, one reason per finding: a hazard, a map
    the kernel refused (even one QEMU only warns about), a realize failure, an
    abort, a backend that cannot start, a configuration QEMU rejects."""
    out = []
    if plan.rejected or plan.kernel_error:
        return [result(plan)]
    for ev in plan.events:
        if ev.kind == "map" and (ev.result.ret or 0) < 0:
            out.append(f"{ev.result.request.ioctl if ev.result.request else 'map'} of "
                       f"{_block(ev)[0]} {_gpa(ev)} = {ev.result.ret} "
                       f"[{errno_name(ev.result.ret)}]")
    for ev, code, text in plan.hazards:
        out.append(f"hazard [{code}] {_gpa(ev)}: {text}")
    if plan.realize_error or (plan.container and plan.container.aborted):
        out.append(result(plan))
    return out


# --- JSON --------------------------------------------------------------------------

_FIELDS: dict[str, tuple] = {}


def _fields_fmt(ioctl: str) -> tuple:
    """How an ioctl's argument struct becomes ``DmaRequest.fields`` in JSON:
    (bytes of its leading 32-bit members, a codec of the 64-bit members after
    them, their names).  The 32-bit members (argsz/size, flags, ioas_id, fd) are
    the same along a run of requests, so they are part of an event's shape; the
    64-bit ones (addresses, lengths) are formatted per event.  A struct of
    another layout: (0, None, None), its fields are JSON-dumped per event."""
    try:
        return _FIELDS[ioctl]
    except KeyError:
        import re
        import struct
        from backends import uapi
        c = uapi.codec(uapi.IOCTLS[ioctl].arg)
        m = re.fullmatch(r"<([Ii]*)(Q+)", c.format)
        f = _FIELDS[ioctl] = ((len(m[1]) * 4, struct.Struct("<" + m[2]), c.names[len(m[1]):])
                              if m else (0, None, None))
        return f


def _shape(ev: Event, others) -> tuple:
    """The JSON text of an event around what differs between the events of a run:
    (ASCII template with ``%`` slots for the gpa range (none when there is no range),
    iova, size, vaddr, the request's fields (its 64-bit members, one ``%d`` each
    in struct order, or one ``%s`` for the whole JSON object of another layout)
    and the message (none when it is empty); ``fields_of(data, offset)``, which
    gives those fields' values, or None when there is no request)."""
    s = ev.section
    mr = s.mr if s is not None else None
    rb = mr.ram_block if mr is not None else None
    r = ev.result
    req = r.request if r is not None else None
    ret = r.ret if r is not None else None
    fields = req.fields if req is not None else None
    tail = {"ramblock": rb.idstr if rb is not None else (mr.name if mr is not None else "-"),
            "fd": rb.fd if rb is not None and rb.fd >= 0 else None,
            "shared": rb.is_shared() if rb is not None else False,
            "ram_device": mr.ram_device if rb is not None else False,
            "readonly": ev.readonly, "ioctl": req.ioctl if req is not None else None,
            "flags": _flag_names(req.ioctl, fields.get("flags", 0)) if req is not None else None,
            "ret": ret, "errno": errno_name(ret) if r is not None else None,
            "kernel": ("not_run" if ret is None else "ran") if r is not None else None,
            "note": r.note if r is not None else "", "fatal": ev.fatal, "phase": ev.phase}
    if others is not None:
        tail["other_qemu"] = [{"versions": v.split(","), "decision": dec} for v, dec in others]
    head = json.dumps({"kind": ev.kind, "path": ev.path})[:-1].replace("%", "%%")
    gpa = '"[0x%x, 0x%x)"' if _range(ev) is not None else '"-"'
    msg = "%s" if ev.message else '""'
    text = f'{head}, "gpa": {gpa}, "iova": %d, "size": %d, "vaddr": %d, "fields": '
    rest = f', "message": {msg}, ' + json.dumps(tail)[1:].replace("%", "%%")
    if req is None:
        return (text + "null" + rest).encode(), None
    _, codec, names = _fields_fmt(req.ioctl)
    if codec is None:
        ioctl = req.ioctl
        return ((text + "%s" + rest).encode(),
                lambda data, _: (json.dumps(DmaRequest(ioctl, data).fields).encode(),))
    ffmt = json.dumps({n: 0 if n in names else v for n, v in fields.items()})
    for n in names:                        # the 64-bit members: slots, in struct order
        ffmt = ffmt.replace(f'"{n}": 0', f'"{n}": %d', 1)
    return (text + ffmt + rest).encode(), codec.unpack_from


def events_text(events, others: dict | None):
    """Each event as JSON text, in ASCII bytes (``bytes % args`` takes about
    two thirds of the time of ``str % args``).  What a run of events shares
    (region, decision, answer, the request's 32-bit members) is formatted once
    per shape and reused: the half a million virtio-mem blocks of a 1 TiB guest
    share a handful of shapes, so an event costs one unpack of its 64-bit
    members and one ``%`` (``others``: other_versions(), or None)."""
    shapes: dict[tuple, tuple] = {}
    dumps = json.dumps
    heads = {}
    last = None
    for ev in events:
        s = ev.section
        r = ev.result
        msg = ev.message
        ioctl = r.ioctl if r is not None else None   # OkResult: slots, no DmaRequest made
        if ioctl is not None:
            data = r.data
            hb = heads.get(ioctl)
            if hb is None:
                hb = heads[ioctl] = _fields_fmt(ioctl)[0]
            key = (ev.kind, ev.path, id(s.mr) if s is not None else None, ev.readonly,
                   r.ret, r.note, ev.fatal, ev.phase, ioctl, data[:hb], not msg)
        else:
            data = None
            key = (ev.kind, ev.path, id(s.mr) if s is not None else None, ev.readonly,
                   ev.fatal, ev.phase, r is None, r.ret if r is not None else None,
                   r.note if r is not None else None, not msg)
        if key != last:                     # a new run: hashing the key costs more
            last = key                      # than comparing it with the last one
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = _shape(ev, None if others is None
                                             else others.get(decision_key(ev), []))
            text, fields_of = shape
        if ev.kind in ("map", "unmap") and ev.path != "region_add":
            lo = ev.iova
            args = (lo, lo + ev.size, lo, ev.size, ev.vaddr)
        elif s is not None:
            lo = s.offset_within_address_space
            args = (lo, lo + s.size, ev.iova, ev.size, ev.vaddr)
        else:                               # no range: the gpa is "-"
            args = (ev.iova, ev.size, ev.vaddr)
        if fields_of is not None:
            args += fields_of(data, hb)
        yield text % (args + (dumps(msg).encode(),)) if msg else text % args


def event_json(ev: Event, others=None) -> dict:
    return json.loads(next(events_text([ev], None if others is None else
                                       {decision_key(ev): others})))


def plan_head(plan: Plan) -> dict:
    sc = plan.scenario
    return {"scenario": sc.name, "title": sc.title, "upstream": sc.upstream,
            "source": sc.source, "qemu": plan.qemu.name, "backend": plan.backend,
            "policy": plan.policy, "kernel": plan.kernel, "kernel_error": plan.kernel_error,
            "rejected": plan.rejected, "failed": bool(plan.rejected or plan.realize_error),
            "realize_error": plan.realize_error,
            "aborted": plan.container.aborted if plan.container else None}


def _plan_parts(plan: Plan, with_others: bool):
    """(head, events, live mappings (iterators of JSON text), hazards, summary)
    of one plan's JSON."""
    others = other_versions(plan.scenario, plan) if with_others and not plan.rejected else None
    index = {id(h[0]): None for h in plan.hazards}
    if index:
        for i, ev in enumerate(plan.events):
            if id(ev) in index and index[id(ev)] is None:
                index[id(ev)] = i
    hazards = [{"event": index[id(ev)], "code": code, "text": text}
               for ev, code, text in plan.hazards]
    events = events_text(plan.events, others)
    live = _live_text(live_mappings(plan.container) if plan.container else ())
    return (plan_head(plan), events, live, hazards,
            {**summary(plan), "check": check_reasons(plan)})


def _live_text(events):
    """Each live mapping as JSON text, ASCII bytes (the RAMBlock name's JSON and
    the readonly bit once per region and mode)."""
    tails: dict[tuple, bytes] = {}
    mr = readonly = None
    for ev in events:
        if ev.section.mr is not mr or ev.readonly != readonly:     # a new run
            mr, readonly = ev.section.mr, ev.readonly
            tail = tails.get((id(mr), readonly))
            if tail is None:
                tail = tails[id(mr), readonly] = (', "readonly": %s, "ramblock": %s}' % (
                    "true" if readonly else "false", json.dumps(_block(ev)[0]))).encode()
        yield b'{"iova": %d, "size": %d%s' % (ev.iova, ev.size, tail)


def plan_json(plan: Plan, with_others: bool = True) -> dict:
    head, events, live, hazards, summ = _plan_parts(plan, with_others)
    return {**head, "events": [json.loads(e) for e in events],
            "live": [json.loads(x) for x in live], "hazards": hazards, "summary": summ}


def document(plans: list[Plan], with_others: bool = True) -> dict:
    return {"schema_version": SCHEMA_VERSION, "tool": "vfio-emu",
            "plans": [plan_json(p, with_others) for p in plans]}


_BATCH = 4096


def _batches(it):
    """Lists of up to _BATCH items: one write per batch, memory bounded by a batch."""
    import itertools
    while batch := list(itertools.islice(it, _BATCH)):
        yield batch


def _ascii_sink(out):
    """``write(bytes)`` onto text stream ``out``: straight to its binary buffer
    when it has one (after flushing what the text layer holds), else decoded.
    Everything write_json() writes is ASCII (json.dumps escapes the rest)."""
    buf = getattr(out, "buffer", None)
    if buf is None or "{".encode(getattr(out, "encoding", None) or "ascii") != b"{":
        return lambda b: out.write(b.decode())     # no buffer, or not ASCII-compatible
    out.flush()
    return buf.write


def write_json(plans, out, with_others: bool = True, jsonl: bool = False,
               top: dict | None = None) -> None:
    """``document(plans)`` written to ``out`` as it is produced: the same JSON
    value, one event per line.  ``jsonl``: one object per line instead, each with
    ``"record"``: ``plan`` (head, hazards, summary), then its ``event`` lines, then
    its ``live`` lines (the mappings still in place at the end).  ``top``: more
    top-level keys (``jsonl``: one ``{"record": key, key: value}`` line each, first)."""
    def dumps(v) -> bytes:
        return json.dumps(v).encode()
    parts = [_plan_parts(p, with_others) for p in plans]   # whatever can fail, before output
    w = _ascii_sink(out)
    extra = b"".join(b"%s: %s, " % (dumps(k), dumps(v)) for k, v in (top or {}).items())
    if not jsonl:
        w(b'{"schema_version": %d, "tool": "vfio-emu", %s"plans": [' % (SCHEMA_VERSION, extra))
    else:
        for k, v in (top or {}).items():
            w(dumps({"record": k, k: v}) + b"\n")
    for n, (head, events, live, hazards, summ) in enumerate(parts):
        if jsonl:
            w(dumps({"record": "plan", "plan": n, **head, "hazards": hazards,
                     "summary": summ}) + b"\n")
            pre = b'{"record": "event", "plan": %d, "index": ' % n
            for i, batch in enumerate(_batches(events)):
                w(b"".join([b"%s%d, %s\n" % (pre, i * _BATCH + k, ev[1:])
                            for k, ev in enumerate(batch)]))
            pre = b'{"record": "live", "plan": %d, ' % n
            for batch in _batches(live):
                w(b"".join([pre + x[1:] + b"\n" for x in batch]))
            continue
        w((b"," if n else b"") + b"\n" + dumps(head)[:-1] + b', "events": [')
        for i, batch in enumerate(_batches(events)):
            w(b"\n" if i == 0 else b",\n")
            w(b",\n".join(batch))
        w(b'], "live": [')
        for i, batch in enumerate(_batches(live)):
            if i:
                w(b", ")
            w(b", ".join(batch))
        w(b'], "hazards": %s, "summary": %s}' % (dumps(hazards), dumps(summ)))
    if not jsonl:
        w(b"\n]}\n")


# --- text --------------------------------------------------------------------------

COLUMNS = ("GPA range", "RAMBlock", "fd", "shared", "ramd", "action", "arguments", "flags",
           "kernel", "other QEMU versions", "when")
# left out first when the table is wider than the terminal
_DROP_ORDER = ("arguments", "other QEMU versions", "flags", "ramd", "shared", "fd")


def _args_cell(r) -> str:
    """The arguments cell of a map or unmap (a request made for the purpose:
    reading ``r.request`` would keep one on every OkResult)."""
    return DmaRequest(r.ioctl, r.data).args() if r.ioctl is not None else r.note


def _cells(ev: Event, others) -> list[str]:
    name, fd, shared, ramd = _block(ev)
    req = ev.result.request if ev.result else None
    if ev.kind in ("map", "unmap"):
        action = req.ioctl if req else "(no ioctl)"
        args = _args_cell(ev.result)
        flags = _flag_names(req.ioctl, req.fields.get("flags", 0)) if req else "-"
        kernel = outcome(ev)
    else:
        action, args, flags, kernel = ev.kind, ev.message.split("\n")[0][:70], "-", "-"
    other = "; ".join(f"{v}: {d}" for v, d in others) if others else "-"
    return [_gpa(ev), name, fd, shared, ramd, action, args, flags, kernel, other, ev.phase]


def _rows(plan: Plan, others: dict, all_rows: bool):
    """(cells, notes) per table row: a run of contiguous events that differ only in
    their addresses is one row (its notes: the first one and a count) unless all_rows."""
    run: list = []          # [first_ev, last_range, count, sig, note, notes_count]
    shown: dict[tuple, list[str]] = {}     # sig: the cells of its first row

    def flush():
        ev, rng, count, sig, note, nnotes = run
        cells = shown.get(sig) if sig is not None else None
        if cells is None:
            cells = _cells(ev, others.get(decision_key(ev)) if others else None)
            if sig is not None:
                shown[sig] = cells
        else:               # the same but for the range and the arguments (--all)
            cells = [_gpa(ev), *cells[1:6], _args_cell(ev.result), *cells[7:]]
        if count > 1:
            lo = _range(ev)[0]
            cells = [f"{_fmt_range((lo, rng[1]))} ×{count}", *cells[1:6],
                     f"{count} sections, first: {cells[6]}", *cells[7:]]
        notes = []
        if note:
            notes.append(note + (f"\n(and {nnotes - 1} more like it)" if nnotes > 1 else ""))
        return cells, notes

    for ev in plan.events:
        note = ev.message if ev.kind in ("map", "unmap", "error", "warn") and ev.message else ""
        rng = _range(ev)
        if run and not all_rows and ev.kind in ("map", "unmap"):
            r = ev.result
            data = r.data
            # what the row shows besides addresses: region, decision, answer
            sig = (ev.kind, ev.path, id(ev.section.mr) if ev.section else None, ev.readonly,
                   r.ioctl, data[4:8] if data is not None else None,
                   r.ret, r.note, bool(note), ev.phase)
            if sig == run[3] and rng is not None and run[1] is not None and rng[0] == run[1][1]:
                run[1] = rng
                run[2] += 1
                run[5] += bool(note)
                continue
        else:
            sig = None
        if run:
            yield flush()
        if sig is None and ev.kind in ("map", "unmap"):
            r = ev.result
            data = r.data
            sig = (ev.kind, ev.path, id(ev.section.mr) if ev.section else None, ev.readonly,
                   r.ioctl, data[4:8] if data is not None else None,
                   r.ret, r.note, bool(note), ev.phase)
        run = [ev, rng, 1, sig, note, 1 if note else 0]
    if run:
        yield flush()


def _fit(widths: list[int], cols: list[str], width: int | None, hidden=()) -> list[int]:
    """Indexes of the columns to show within ``width`` (all when width is None)."""
    keep = [i for i in range(len(cols)) if cols[i] not in hidden]
    if width is None:
        return keep

    def total():
        return 3 + sum(widths[i] for i in keep) + 2 * (len(keep) - 1)
    for name in _DROP_ORDER:
        if total() <= width:
            break
        if cols.index(name) in keep:
            keep.remove(cols.index(name))
    over = total() - width
    if over > 0:            # then cut the RAMBlock names (the cells end in "…")
        i = cols.index("RAMBlock")
        widths[i] = max(len(cols[i]), widths[i] - over)
    return keep


def _cut(cell: str, w: int) -> str:
    return cell if len(cell) <= w else cell[:w - 1] + "…"


def clip(line: str, width: int | None) -> str:
    """``line`` cut to ``width`` columns (ending in "…"); whole when width is None."""
    if width is None or len(line) <= width:
        return line
    return line[:width - 1] + "…"


def render_lines(plan: Plan, with_others: bool = True, width: int | None = 80,
                 all_rows: bool = False):
    """The text of one plan, line by line; ``width`` None: full rows."""
    sc = plan.scenario
    yield clip(f"== {sc.name}" + (f": {sc.title}" if sc.title else ""), width)
    if sc.upstream:
        yield from _wrap(f"upstream: {sc.upstream}", width)
    kernel = f"simulated kernel {plan.kernel}" if plan.kernel else "kernel not run"
    yield f"   QEMU {plan.qemu.name} · backend {plan.backend} · policy {plan.policy} · {kernel}"
    if plan.rejected or plan.kernel_error:
        yield from _wrap(result(plan), width)
        yield from _wrap(summary_line(plan), width)
        return
    others = other_versions(sc, plan) if with_others else {}
    widths = [len(c) for c in COLUMNS]
    short_action = len("action")          # the action column with short ioctl names
    # runs make few rows: keep them; every row (all_rows): two passes, nothing kept
    rows = None if all_rows else list(_rows(plan, others, all_rows))
    for cells, _ in rows if rows is not None else _rows(plan, others, all_rows):
        for i, c in enumerate(cells):
            if len(c) > widths[i]:
                widths[i] = len(c)
        short_action = max(short_action, len(SHORT_IOCTL.get(cells[5], cells[5])))
    phases = any(ev.phase != "realize" for ev in plan.events)
    hidden = {"other QEMU versions"} if not with_others else set()
    if not phases:                        # every event at realize: no "when" column
        hidden.add("when")
    full = widths[:]
    keep = [i for i in _fit(widths, list(COLUMNS), width, hidden) if COLUMNS[i] not in hidden]
    keep.sort(key=lambda i: COLUMNS[i] != "when")      # "when" (the phase) comes first
    short = width is not None and 1 + sum(widths[i] + 2 for i in keep) > width
    if short:                     # still too wide: MAP_FILE for IOMMU_IOAS_MAP_FILE, ...
        widths[5] = short_action
    narrowed = [i for i in keep if widths[i] < full[i]]     # their cells may need cutting
    fmt = "   " + "  ".join(f"{{{i}:<{widths[i]}}}" for i in keep)   # one format per line

    def line(cells):
        if narrowed:
            cells = list(cells)
            if short:
                cells[5] = SHORT_IOCTL.get(cells[5], cells[5])
            for i in narrowed:
                cells[i] = _cut(cells[i], widths[i])
        return clip(fmt.format(*cells).rstrip(), width)
    yield line(list(COLUMNS))
    notes = []
    for cells, ns in rows if rows is not None else _rows(plan, others, all_rows):
        yield line(cells)
        notes += ns
    dropped = [COLUMNS[i] for i in range(len(COLUMNS)) if i not in keep
               and COLUMNS[i] not in hidden]
    if dropped:
        yield from _wrap(f"({', '.join(dropped)} left out to fit {width} columns: --wide "
                         "shows them)", width)
    if "other QEMU versions" in dropped and others:
        yield "   other QEMU versions decide differently:"
        for (kind, path, mr, ro), groups in others.items():
            for v, d in groups:
                yield from _wrap(f"{mr} ({kind} {path}{', readonly' if ro else ''}): {v}: {d}",
                                 width, "     ")
    for n in notes:
        for part in n.split("\n"):
            yield from _wrap(part, width)
    if phases and plan.container:
        live = live_mappings(plan.container)
        shown = live if all_rows or len(live) <= 8 else live[:8]
        yield from _wrap(f"live at the end ({len(live)}): " + ", ".join(
            f"[0x{ev.iova:x}, 0x{ev.iova + ev.size:x}){' ro' if ev.readonly else ''}"
            for ev in shown) + (", … (--all lists them)" if len(shown) < len(live) else ""),
            width)
    if plan.realize_error:
        yield from _wrap(f"realize fails: {plan.realize_error}", width)
    if plan.container and plan.container.aborted:
        yield from _wrap(f"QEMU aborts: {plan.container.aborted}", width)
    for ev, code, text in plan.hazards:
        yield from _wrap(f"HAZARD [{code}] {_gpa(ev)}: {text}", width)
    yield from _wrap(summary_line(plan), width)


def _wrap(text: str, width: int | None, indent: str = "   "):
    if width is None:
        yield indent + text
        return
    yield from textwrap.wrap(text, width, initial_indent=indent,
                             subsequent_indent=indent + "  ", break_on_hyphens=False) or [indent]


def render_plan(plan: Plan, with_others: bool = True, width: int | None = None,
                all_rows: bool = False) -> str:
    return "\n".join(render_lines(plan, with_others, width, all_rows))
