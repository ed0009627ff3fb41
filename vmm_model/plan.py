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
    rejected_error: UsageError | None = None   # ... with this error (where, field)
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
              kernel: str | None = None, host_iommu: str | None = None) -> Plan:
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
        try:
            build_machine(sc, own)
        except UsageError:           # bad for its own QEMU too: bad input, in this QEMU's words
            raise e from None
        plan.rejected = f"QEMU {qemu.name} rejects this command line: {e.message}"
        plan.rejected_error = e
        return plan
    if kernel is not None:
        from vmm_model.simulate import simulate
        plan.kernel = get_profile(kernel).name
        with simulate(sc, qemu, backend, kernel, policy, host_iommu=host_iommu) as sim:
            plan.machine, plan.container, plan.kernel_error = sim.machine, sim.container, sim.error
    else:
        plan.container = attach(plan.machine, VFIOContainer(b.plan_client(), qemu,
                                                            policy_name=pname, policy=pfn))
    plan.hazards = find_hazards(plan)
    return plan


def decision(ev: Event) -> str:
    """What an event decided, independent of addresses: ioctl and flags for a
    map, the kind (skip, error, warn, unmap) otherwise."""
    if ev.kind != "map" or ev.result is None:
        return ev.kind
    req = ev.result.request
    if req is None:
        return ev.result.note or "no ioctl"
    return f"{req.ioctl} {req.flag_names()}"


def decision_key(ev: Event) -> tuple:
    """What a decision is shared by: every section of one MemoryRegion (so one
    RAMBlock) on one listener path with one access mode decides alike under a
    built-in policy (vfio_container_dma_map() reads only the RAMBlock's fd and
    flags and the region's ram_device bit, and the flags only ``readonly``)."""
    s = ev.section
    return (ev.kind, ev.path, s.mr.name if s is not None else None, ev.readonly)


def _decisions(sc: Scenario, q: QemuVersion, backend: str, policy: str | None
               ) -> dict[tuple, str] | None:
    """QEMU ``q``'s decision per decision_key() for ``sc``, from one listener run
    over its machine with every virtio-mem region cut to its first populated
    block (the RamDiscardManager path decides once per region, so the other
    blocks would repeat it).  None when ``q`` refuses the configuration."""
    try:
        m = build_machine(sc, q, backend=backend)
    except UsageError:               # CommandLineRejected too
        return None
    for mr in m.regions.values():
        if len(mr.rdm_populated) > 1 or (mr.rdm_populated and mr.rdm_populated[0][1]
                                         - mr.rdm_populated[0][0] > mr.rdm_granularity):
            a = mr.rdm_populated[0][0]
            mr.rdm_populated = ((a, a + mr.rdm_granularity),)
    pname, pfn = get_policy(policy) if policy else (q.policy, None)
    c = attach(m, VFIOContainer(get_backend(backend).plan_client(), q, policy_name=pname,
                                policy=pfn))
    return {decision_key(ev): decision(ev) for ev in c.events}


def other_versions(sc: Scenario, plan: Plan, versions=None) -> dict[tuple, list[tuple[str, str]]]:
    """For each decision_key() of ``plan``'s events: the other QEMU versions that
    decide differently, grouped by their decision ("no event" when that version
    does not reach the listener call at all).  Each version is run once per
    RAMBlock, not once per section: the cost does not grow with the sections."""
    mine: dict[tuple, str] = {}
    last = (None,) * 4
    for ev in plan.events:
        # a run of one section's blocks has one key: compare, do not hash
        if ev.section is last[0] and ev.kind == last[1] and ev.path == last[2] \
                and ev.readonly == last[3]:
            continue
        last = (ev.section, ev.kind, ev.path, ev.readonly)
        k = decision_key(ev)
        if k not in mine:
            mine[k] = decision(ev)
    policy = None if plan.policy == plan.qemu.policy else plan.policy
    theirs = []
    for q in versions or QEMU_VERSIONS.values():
        if q.name != plan.qemu.name:
            d = _decisions(sc, q, plan.backend, policy)
            if d is not None:
                theirs.append((q.name, d))
    out = {}
    for k, d in mine.items():
        groups: dict[str, list[str]] = {}
        for qname, dec in theirs:
            td = dec.get(k, "no event")
            if td != d:
                groups.setdefault(td, []).append(qname)
        if groups:
            out[k] = [(",".join(vs), td) for td, vs in groups.items()]
    return out


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

    checked = set()              # (region, readonly): its sections all decide alike
    last = (None, None)          # the last of them checked (a run: compare, do not hash)
    for ev in plan.events:
        if ev.kind != "map" or ev.result is None:
            continue
        mr = ev.section.mr
        if mr is last[0] and ev.readonly == last[1]:
            continue
        if (id(mr), ev.readonly) in checked:
            last = (mr, ev.readonly)
            continue
        if ev.result.ioctl != "IOMMU_IOAS_MAP_FILE":
            continue
        checked.add((id(mr), ev.readonly))
        last = (mr, ev.readonly)
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
