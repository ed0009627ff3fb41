"""Human tables and versioned JSON for plans.

Errors are printed the way QEMU prints them plus the symbolic errno, e.g.
``vfio_container_dma_map(0x..., 0x100000000, 0x40000000, 0x7f...) = -14 (Bad address) [EFAULT]``.
"""

from __future__ import annotations

from backends.base import errno_name
from vmm_model.container import Event, live_mappings
from vmm_model.plan import Plan, other_versions

SCHEMA_VERSION = 1
NOT_RUN = "not run"


def _gpa(ev: Event) -> str:
    s = ev.section
    if ev.kind in ("map", "unmap") and ev.path != "region_add":
        return f"[0x{ev.iova:x}, 0x{ev.iova + ev.size:x})"
    if s is None:
        return "-"
    return f"[0x{s.offset_within_address_space:x}, 0x{s.end:x})"


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


def event_json(ev: Event, others=None) -> dict:
    rb_name, fd, shared, ramd = _block(ev)
    req = ev.result.request if ev.result else None
    d = {"kind": ev.kind, "path": ev.path, "gpa": _gpa(ev), "ramblock": rb_name,
         "fd": None if fd == "-" else int(fd), "shared": shared == "yes",
         "ram_device": ramd == "yes", "readonly": ev.readonly,
         "iova": ev.iova, "size": ev.size, "vaddr": ev.vaddr,
         "ioctl": req.ioctl if req else None,
         "fields": dict(req.fields) if req else None,
         "flags": req.flag_names() if req else None,
         "ret": ev.result.ret if ev.result else None,
         "errno": errno_name(ev.result.ret) if ev.result else None,
         "kernel": ("not_run" if ev.result.ret is None else "ran") if ev.result else None,
         "note": ev.result.note if ev.result else "",
         "message": ev.message, "fatal": ev.fatal, "phase": ev.phase}
    if others is not None:
        d["other_qemu"] = [{"versions": v.split(","), "decision": dec} for v, dec in others]
    return d


def plan_json(plan: Plan, with_others: bool = True) -> dict:
    others = other_versions(plan.scenario, plan) if with_others and not plan.rejected else {}
    return {"scenario": plan.scenario.name, "title": plan.scenario.title,
            "upstream": plan.scenario.upstream, "source": plan.scenario.source,
            "qemu": plan.qemu.name, "backend": plan.backend, "policy": plan.policy,
            "kernel": plan.kernel, "kernel_error": plan.kernel_error,
            "rejected": plan.rejected, "failed": bool(plan.rejected or plan.realize_error),
            "realize_error": plan.realize_error,
            "aborted": plan.container.aborted if plan.container else None,
            "events": [event_json(ev, others.get(i, [])) for i, ev in enumerate(plan.events)],
            "live": [{"iova": ev.iova, "size": ev.size, "readonly": ev.readonly,
                      "ramblock": _block(ev)[0]}
                     for ev in (live_mappings(plan.container) if plan.container else [])],
            "hazards": [{"event": plan.events.index(ev), "code": code, "text": text}
                        for ev, code, text in plan.hazards]}


def document(plans: list[Plan], with_others: bool = True) -> dict:
    return {"schema_version": SCHEMA_VERSION, "tool": "vfio-emu",
            "plans": [plan_json(p, with_others) for p in plans]}


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render_plan(plan: Plan, with_others: bool = True) -> str:
    sc = plan.scenario
    head = f"== {sc.name}" + (f": {sc.title}" if sc.title else "")
    if sc.upstream:
        head += f"\n   upstream: {sc.upstream}"
    kernel = f"simulated kernel {plan.kernel}" if plan.kernel else "kernel not run"
    lines = [head, f"   QEMU {plan.qemu.name} · backend {plan.backend} · policy {plan.policy}"
                   f" · {kernel}"]
    if plan.rejected:
        lines.append(f"   {plan.rejected}")
        return "\n".join(lines)
    if plan.kernel_error:
        lines.append(f"   the {plan.backend} backend cannot start on kernel {plan.kernel}: "
                     f"{plan.kernel_error}")
        return "\n".join(lines)
    others = other_versions(sc, plan) if with_others else {}
    rows = [["when", "GPA range", "RAMBlock", "fd", "shared", "ramd", "action", "arguments", "flags",
             "kernel", "other QEMU versions"]]
    notes = []
    for i, ev in enumerate(plan.events):
        name, fd, shared, ramd = _block(ev)
        req = ev.result.request if ev.result else None
        if ev.kind in ("map", "unmap"):
            action = req.ioctl if req else "(no ioctl)"
            args = req.args() if req else ev.result.note
            flags = req.flag_names() if req else "-"
        else:
            action, args, flags = ev.kind, ev.message.split("\n")[0][:70], "-"
        other = "; ".join(f"{v}: {d}" for v, d in others.get(i, []))
        rows.append([ev.phase, _gpa(ev), name, fd, shared, ramd, action, args, flags,
                     outcome(ev) if ev.kind in ("map", "unmap") else "-", other or "-"])
        if ev.kind in ("map", "unmap") and ev.message:
            notes.append(ev.message)
        elif ev.kind in ("error", "warn"):
            notes.append(ev.message)
    lines += ["   " + line for line in _table(rows)]
    for n in notes:
        lines.append("   " + n.replace("\n", "\n   "))
    if plan.container and any(ev.phase != "realize" for ev in plan.events):
        live = live_mappings(plan.container)
        lines.append(f"   live at the end ({len(live)}): " + ", ".join(
            f"[0x{ev.iova:x}, 0x{ev.iova + ev.size:x}){' ro' if ev.readonly else ''}"
            for ev in live))
    if plan.realize_error:
        lines.append(f"   realize fails: {plan.realize_error}")
    if plan.container and plan.container.aborted:
        lines.append(f"   QEMU aborts: {plan.container.aborted}")
    for ev, code, text in plan.hazards:
        lines.append(f"   HAZARD [{code}] {_gpa(ev)}: {text}")
    return "\n".join(lines)
