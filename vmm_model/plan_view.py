"""Plans a test can assert on: one section's events (``plan.section("pc.ram")``),
whether the VM runs and maps everything (``plan.ok``), equality of what two
plans decide, and ``plan.diff(other)`` section by section.

Two plans are *equal* when they decide the same thing for every section: the
same listener outcome (map, skip, warn, error), by VA or by file, read-only or
not, with the same kernel answer (0, an errno, or "not run"), and the same
overall outcome.  Addresses in the process (vaddr, fds, pointers in QEMU's
messages) and which ioctl carries a VA map (type1's MAP_DMA, iommufd's
IOAS_MAP) are not part of it, so a type1 plan and an iommufd plan of the same VM
can be equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from backends.base import DmaResult
    from vmm_model.container import Event
    from vmm_model.plan import Plan

_FILE_IOCTLS = {"IOMMU_IOAS_MAP_FILE"}


def section_name(ev: Event) -> str:
    """The MemoryRegion name of an event's section ("pc.ram", "ram0",
    "0000:01:00.0 BAR 0 mmaps[0]"); "-" for events without a section."""
    return ev.section.mr.name if ev.section is not None else "-"


def gpa(ev: Event) -> tuple[int, int]:
    s = ev.section
    if s is None:
        return ev.iova, ev.iova + ev.size
    return s.offset_within_address_space, s.offset_within_address_space + s.size


def outcome(ev: Event) -> str:
    """What one event decided, without process addresses: ``map file rw = 0``,
    ``map va ro = EFAULT``, ``map va rw = not run``, ``map no ioctl = 0`` (a policy
    that answered itself), ``skip``, ``warn``, ``error``."""
    from backends.base import errno_name
    if ev.kind not in ("map", "unmap"):
        return ev.kind
    r = ev.result
    if r is None:
        return f"{ev.kind} no ioctl"
    answer = "not run" if r.ret is None else (errno_name(r.ret) or "0")
    if r.request is None:            # the policy answered without asking the kernel
        return f"{ev.kind} no ioctl = {answer}"
    how = "file" if r.request.ioctl in _FILE_IOCTLS else "va"
    ro = "ro" if ev.readonly else "rw"
    head = f"{ev.kind} {how} {ro}" if ev.kind == "map" else ev.kind
    return f"{head} = {answer}"


def status(plan: Plan) -> str:
    """One word for the whole plan: rejected (QEMU refuses the configuration),
    unavailable (the backend cannot start on that kernel), realize-fails,
    aborts, runs."""
    if plan.rejected:
        return "rejected"
    if plan.kernel_error:
        return "unavailable"
    if plan.realize_error:
        return "realize-fails"
    if plan.container is not None and plan.container.aborted:
        return "aborts"
    return "runs"


def problems(plan: Plan) -> list[str]:
    """Why ``plan.ok`` is False, one line each (empty when it is True)."""
    from backends.base import errno_name
    out: list[str] = []
    st = status(plan)
    if st == "rejected":
        rejected = plan.rejected or ""
        own = rejected.startswith(f"QEMU {plan.qemu.name} ")
        out.append(rejected if own else
                   f"QEMU {plan.qemu.name} rejects the configuration: {rejected}")
    elif st == "unavailable":
        out.append(f"{plan.backend} cannot start on kernel {plan.kernel}: {plan.kernel_error}")
    elif st == "realize-fails":
        out.append(f"realize fails: {plan.realize_error}")
    elif st == "aborts":
        out.append(f"QEMU aborts: {plan.container.aborted}")      # type: ignore[union-attr]
    for ev in plan.events:
        if ev.kind in ("map", "unmap") and ev.result is not None and (ev.result.ret or 0) < 0:
            lo, hi = gpa(ev)
            out.append(f"{section_name(ev)} [0x{lo:x}, 0x{hi:x}): "
                       f"{ev.result.request.ioctl if ev.result.request else ev.kind} "
                       f"{errno_name(ev.result.ret)}")
        elif ev.kind == "error":
            out.append(f"{section_name(ev)}: {ev.message}")
    for ev, code, _text in plan.hazards:
        out.append(f"hazard {code} on {section_name(ev)}")
    return out


def when(ev: Event) -> str:
    """Where an event comes from, when not the plain realize-time region_add:
    the phase (reset, firmware, hotplug) and the listener path (region_del, iommu, rdm)."""
    parts = [p for p in (ev.phase, ev.path)
             if p not in ("realize", "region_add")]
    return " ".join(parts)


def rows(plan: Plan) -> dict[tuple[str, str, int, int], list[str]]:
    """(when, section, gpa start, gpa end) -> the outcomes of its events, in order."""
    out: dict[tuple[str, str, int, int], list[str]] = {}
    for ev in plan.events:
        lo, hi = gpa(ev)
        out.setdefault((when(ev), section_name(ev), lo, hi), []).append(outcome(ev))
    return out


def same(a: Plan, b: Plan) -> bool:
    return status(a) == status(b) and rows(a) == rows(b) and \
        {c for _, c, _ in a.hazards} == {c for _, c, _ in b.hazards}


def label(plan: Plan) -> str:
    kernel = plan.kernel or "no kernel"
    return f"{plan.scenario.name} qemu-{plan.qemu.name} {plan.backend}/{kernel}"


def short(plan: Plan) -> str:
    """``<Plan s17-bar-va-map qemu-10.2 iommufd/7.2 runs: 7 maps, 3 failed (EFAULT)>``."""
    from backends.base import errno_name
    maps = [ev for ev in plan.events if ev.kind == "map"]
    failed = [ev for ev in maps if ev.result is not None and (ev.result.ret or 0) < 0]
    text = f"<Plan {label(plan)} {status(plan)}: {len(maps)} maps"
    if failed:
        names = sorted({errno_name(ev.result.ret) for ev in failed if ev.result is not None})
        text += f", {len(failed)} failed ({', '.join(names)})"
    if plan.hazards:
        text += f", hazards: {', '.join(sorted({c for _, c, _ in plan.hazards}))}"
    return text + ">"


def table(plan: Plan) -> str:
    """The plan in a few lines: a header, then one line per section event."""
    lines = [short(plan)]
    for (path, name, lo, hi), outs in rows(plan).items():
        where = f" ({path})" if path else ""
        lines.append(f"  {name} [0x{lo:x}, 0x{hi:x}){where}: {'; '.join(outs)}")
    lines += [f"  ! {p}" for p in problems(plan) if not p.startswith(("hazard",))
              and "[0x" not in p]
    lines += [f"  hazard {code}: {text}" for _, code, text in plan.hazards]
    return "\n".join(lines)


@dataclass(frozen=True)
class SectionDiff:
    """One section whose outcomes differ between two plans (``path``: `when` the
    events happen, "" for the realize-time region_add)."""

    path: str
    section: str
    gpa: tuple[int, int]
    left: tuple[str, ...]
    right: tuple[str, ...]

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        left = "; ".join(self.left) or "no event"
        right = "; ".join(self.right) or "no event"
        return (f"{self.section} [0x{self.gpa[0]:x}, 0x{self.gpa[1]:x}){where}: "
                f"{left}  !=  {right}")


@dataclass(frozen=True)
class PlanDiff:
    """What differs between two plans (``left.diff(right)``): the overall status
    and the sections.  Falsy when the plans are equal; ``str()`` is one line per
    difference."""

    left: str
    right: str
    status: tuple[str, str] | None
    sections: tuple[SectionDiff, ...]
    hazards: tuple[frozenset[str], frozenset[str]] | None = None

    def __bool__(self) -> bool:
        return bool(self.status or self.sections or self.hazards)

    def __iter__(self) -> Iterator[SectionDiff]:
        return iter(self.sections)

    def __len__(self) -> int:
        return len(self.sections)

    def lines(self) -> list[str]:
        out = [f"{self.left}  vs  {self.right}"]
        if self.status:
            out.append(f"outcome: {self.status[0]}  !=  {self.status[1]}")
        if self.hazards:
            out.append(f"hazards: {sorted(self.hazards[0]) or 'none'}  !=  "
                       f"{sorted(self.hazards[1]) or 'none'}")
        out += [str(s) for s in self.sections]
        if not self:
            out.append("no differences")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def diff(a: Plan, b: Plan) -> PlanDiff:
    ra, rb = rows(a), rows(b)
    sections = []
    for key in list(ra) + [k for k in rb if k not in ra]:
        la, lb = tuple(ra.get(key, ())), tuple(rb.get(key, ()))
        if la != lb:
            sections.append(SectionDiff(key[0], key[1], (key[2], key[3]), la, lb))
    sa, sb = status(a), status(b)
    ha, hb = frozenset(c for _, c, _ in a.hazards), frozenset(c for _, c, _ in b.hazards)
    return PlanDiff(label(a), label(b), None if sa == sb else (sa, sb), tuple(sections),
                    None if ha == hb else (ha, hb))


class PlanSection:
    """The events of one named memory region in a plan (``plan.section("pc.ram")``):
    a region split by the flat view (pc.ram below and above the PCI hole) has
    several.  Everything here is about that region only."""

    def __init__(self, plan: Plan, name: str, events: list[Event]):
        self.plan = plan
        self.name = name
        self.events = events

    @property
    def maps(self) -> list[Event]:
        """The map events (one per dma_map / dma_map_file call)."""
        return [ev for ev in self.events if ev.kind == "map"]

    @property
    def results(self) -> list[DmaResult]:
        """The DmaResult of every map and unmap, in order."""
        return [ev.result for ev in self.events
                if ev.kind in ("map", "unmap") and ev.result is not None]

    @property
    def ioctls(self) -> set[str]:
        """The ioctls sent for the section's maps, e.g. ``{"IOMMU_IOAS_MAP_FILE"}``."""
        return {ev.result.request.ioctl for ev in self.maps
                if ev.result is not None and ev.result.request is not None}

    @property
    def errnos(self) -> set[str]:
        """The kernel's answers to the maps by name: ``"0"`` for success, ``"EFAULT"``,
        ``"not run"`` when no kernel answered."""
        from backends.base import errno_name
        return {("not run" if r.ret is None else errno_name(r.ret) or "0")
                for r in (ev.result for ev in self.maps) if r is not None}

    @property
    def outcomes(self) -> list[str]:
        """Each event's outcome as `Plan` equality sees it (``map file rw = 0``)."""
        return [outcome(ev) for ev in self.events]

    @property
    def by_file(self) -> bool:
        """Every map of the section went by file (IOMMU_IOAS_MAP_FILE)."""
        return bool(self.maps) and self.ioctls <= _FILE_IOCTLS

    @property
    def ok(self) -> bool:
        """Every map and unmap of the section succeeded (or was not run)."""
        return all((r.ret or 0) >= 0 for r in self.results) and \
            not any(ev.kind == "error" for ev in self.events)

    def __repr__(self) -> str:
        return f"<PlanSection {self.name} of {label(self.plan)}: {'; '.join(self.outcomes)}>"


def section(plan: Plan, name: str) -> PlanSection:
    from backends.errors import UsageError
    if status(plan) in ("rejected", "unavailable"):
        raise UsageError(f"the plan has no sections: {problems(plan)[0]}",
                         where=f"plan.section({name!r})")
    events = [ev for ev in plan.events if ev.section is not None and (
        ev.section.mr.name == name
        or (ev.section.mr.ram_block is not None and ev.section.mr.ram_block.idstr == name))]
    if not events:
        names = sorted({section_name(ev) for ev in plan.events if ev.section is not None})
        raise UsageError(f"no section {name!r} in {label(plan)}",
                         where=f"plan.section({name!r})", valid=", ".join(names) or "none")
    return PlanSection(plan, name, events)
