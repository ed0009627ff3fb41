"""Plan: run a scenario through one QEMU version's container on one backend and
collect what QEMU would ask the kernel, section by section.

With ``kernel=None`` every ioctl is built exactly but not sent (``ret is
None``, "not run").  With a kernel profile the scenario is realized on
``SimHost(kernel)`` and the real client sends each request to the simulated
kernel (vmm_model/simulate.py), so every event carries the kernel's answer.
Static hazards that follow from the request alone are flagged with their source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backends.errors import UsageError
from backends.kernel_profiles import get_profile
from vmm_model.container import Event, VFIOContainer, attach, realize_error
from vmm_model.iommu_backends import get_backend
from vmm_model.machine import CommandLineRejected, Machine, build_machine
from vmm_model.policy import get_policy
from vmm_model.qemu_versions import DEFAULT_QEMU, QEMU_VERSIONS, QemuVersion, get_qemu
from vmm_model.scenario import Scenario

if TYPE_CHECKING:
    from vmm_model.plan_view import PlanDiff, PlanSection

DEFAULT_KERNEL = "7.2"


@dataclass
class Plan:
    scenario: Scenario
    qemu: QemuVersion
    backend: str
    policy: str
    machine: Machine | None = None
    container: VFIOContainer | None = None
    rejected: str | None = None          # QEMU refuses to start with this command line
    kernel: str | None = None            # simulated kernel profile, None: not run
    kernel_error: str | None = None      # the backend could not be set up on that kernel
    hazards: list[tuple[Event, str, str]] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return self.container.events if self.container else []

    @property
    def realize_error(self) -> str | None:
        return realize_error(self.machine, self.container) if self.container else None

    # --- for tests (vmm_model/plan_view.py) ---------------------------------------

    def section(self, name: str) -> PlanSection:
        """The events of the memory region (or RAMBlock) called ``name``; raises
        UsageError listing the valid names when there is none."""
        from vmm_model import plan_view
        return plan_view.section(self, name)

    @property
    def ok(self) -> bool:
        """QEMU runs this VM (not rejected, the backend starts, realize works, no
        abort), every map the kernel answered succeeded and no hazard was found.
        ``problems`` says why not."""
        return not self.problems

    @property
    def problems(self) -> list[str]:
        """Why ``ok`` is False, one line per problem."""
        from vmm_model import plan_view
        return plan_view.problems(self)

    def diff(self, other: Plan) -> PlanDiff:
        """Per-section differences from ``other`` (falsy when the plans are equal)."""
        from vmm_model import plan_view
        return plan_view.diff(self, other)

    def __eq__(self, other: object) -> bool:
        """Same decisions and kernel answers for every section (plan_view.py)."""
        if not isinstance(other, Plan):
            return NotImplemented
        from vmm_model import plan_view
        return plan_view.same(self, other)

    __hash__ = None        # type: ignore[assignment]

    def __repr__(self) -> str:
        from vmm_model import plan_view
        return plan_view.short(self)

    def __str__(self) -> str:
        from vmm_model import plan_view
        return plan_view.table(self)


def make_plan(sc: Scenario, qemu: QemuVersion, backend: str, policy: str | None = None,
              kernel: str | None = None) -> Plan:
    b = get_backend(backend, also=("all",))
    backend = b.name
    pname, pfn = get_policy(policy) if policy else (qemu.policy, None)
    plan = Plan(sc, qemu, backend, pname)
    try:
        plan.machine = build_machine(sc, qemu, backend=backend)
    except CommandLineRejected as e:
        plan.rejected = e.message      # "QEMU 7.2 rejects this command line: ..."
        return plan
    except UsageError as e:
        own = get_qemu(sc.qemu or DEFAULT_QEMU)
        if own.name == qemu.name:
            raise
        build_machine(sc, own)       # bad in every version: raises, it is bad input
        plan.rejected = f"QEMU {qemu.name} rejects this command line: {e}"
        return plan
    if kernel is not None:
        from vmm_model.simulate import simulate
        plan.kernel = get_profile(kernel).name
        with simulate(sc, qemu, backend, kernel, policy) as sim:
            plan.machine, plan.container, plan.kernel_error = sim.machine, sim.container, sim.error
    else:
        plan.container = attach(plan.machine, VFIOContainer(b.plan_client(), qemu,
                                                            policy_name=pname, policy=pfn))
    plan.hazards = find_hazards(plan)
    return plan


def decision(ev: Event) -> str:
    """What a map event decided, independent of addresses: ioctl and flags."""
    if ev.kind != "map" or ev.result is None:
        return ev.kind
    req = ev.result.request
    if req is None:
        return ev.result.note or "no ioctl"
    return f"{req.ioctl} {req.flag_names()}"


def other_versions(sc: Scenario, plan: Plan, versions=None) -> dict[int, list[tuple[str, str]]]:
    """For each event index of ``plan``: the other QEMU versions that decide
    differently for the same section and IOVA, grouped by their decision."""
    out: dict[int, dict[str, list[str]]] = {}
    mine = {(_key(ev)): (i, decision(ev)) for i, ev in enumerate(plan.events)}
    for q in versions or QEMU_VERSIONS.values():
        if q.name == plan.qemu.name:
            continue
        try:
            other = make_plan(sc, q, plan.backend, None if plan.policy == plan.qemu.policy
                              else plan.policy)
        except UsageError:
            continue
        if other.rejected:
            continue
        theirs = {_key(ev): decision(ev) for ev in other.events}
        for k, (i, d) in mine.items():
            td = theirs.get(k, "no event")
            if td != d:
                out.setdefault(i, {}).setdefault(td, []).append(q.name)
    return {i: [(",".join(vs), d) for d, vs in groups.items()] for i, groups in out.items()}


def _key(ev: Event):
    s = ev.section
    return (ev.kind if ev.kind in ("map", "unmap") else "other", ev.path,
            s.offset_within_address_space if s else None, ev.iova, ev.size)


# --- static hazards (no kernel needed) ---------------------------------------------

def find_hazards(plan: Plan) -> list[tuple[Event, str, str]]:
    """(event, code, explanation) for requests whose consequence follows from the
    request alone; once per RAMBlock and code (the first section that shows it)."""
    out, seen = [], set()

    def add(ev, code, text):
        key = (code, ev.section.mr.ram_block.idstr)
        if key not in seen:
            seen.add(key)
            out.append((ev, code, text))

    for ev in plan.events:
        req = ev.result.request if ev.result else None
        if req is None or req.ioctl != "IOMMU_IOAS_MAP_FILE":
            continue
        mr = ev.section.mr
        rb = mr.ram_block
        if not rb.is_shared() and not mr.ram_device:
            add(ev, "private-map-file", (
                f"{rb.idstr} is a private (MAP_PRIVATE) mapping of its file: MAP_FILE pins the "
                "file's page-cache pages while the guest runs on copy-on-write copies, so "
                "device DMA and the CPU see different memory (kernel bugzilla 220776; QEMU "
                "11.0.2 and 11.1 map it by VA: docs/qemu-versions.md)"))
        writable = not ev.readonly
        if writable and rb.backing.open_flags == "O_RDONLY":
            add(ev, "writable-map-file-rdonly-fd", (
                f"writable MAP_FILE of {rb.backing.path}, opened O_RDONLY: "
                "iommufd_ioas_map_file() does not check FMODE_WRITE, so the device can "
                "write into the file; with the proposed FMODE_WRITE check (kernel "
                "profile 7.2+fix) the map fails EPERM"))
        if rb.backing.kind == "file" and rb.backing.fs not in ("tmpfs", "hugetlbfs"):
            add(ev, "map-file-not-shmem", (
                f"{rb.backing.path} is on {rb.backing.fs}: memfd_pin_folios() pins only "
                "shmem/hugetlbfs files, so MAP_FILE fails EINVAL once pages are pinned "
                "(mm/gup.c: memfd_pin_folios(), derived from the source)"))
    return out
