"""vfio-emu's Python API for VMM test suites (re-exported by ``vmm_model``).

Every function takes plain values (version names, backend names, kernel profile
names) and returns the project's own objects; bad input raises
`vmm_model.UsageError` with what was wrong, where, and what is valid.

    from vmm_model import load_scenario, plan_scenario

    plan = plan_scenario(load_scenario("s08-memfd-share-off"), qemu="10.1",
                         backend="iommufd", kernel="7.2")
    assert plan.section("ram0").ioctls == {"IOMMU_IOAS_MAP_FILE"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    from vmm_model.plan import Plan
    from vmm_model.policy import Policy
    from vmm_model.qemu_versions import QemuVersion
    from vmm_model.scenario import Scenario
    from vmm_model.simulate import Simulation

ScenarioLike = Union["Scenario", str, Path]
"""A `Scenario`, a path to a ``.toml`` file, or a gallery name (``s08`` or
``s08-memfd-share-off``)."""
PolicyLike = Union[str, "Policy", None]
"""A registered policy name, ``"package.module:callable"``, a policy callable, or
None for the QEMU version's own ``vfio_container_dma_map``."""

DEFAULT_BACKEND = "iommufd"


def load_scenario(source: ScenarioLike, libvirt: str | None = None) -> Scenario:
    """A scenario from a `Scenario` (returned as is), a file (TOML, a libvirt domain
    XML, a captured QEMU command line; told apart by content) or a gallery name.
    ``libvirt``: the libvirt version whose translation of a domain XML is modelled
    (default: the newest; docs/inputs.md)."""
    from vmm_model import gallery
    from vmm_model.scenario import Scenario
    from vmm_model.scenario import load_scenario as load_file
    if isinstance(source, Scenario):
        return source
    text = str(source)
    if isinstance(source, Path) or text.endswith((".toml", ".xml", ".args")) \
            or Path(text).exists():
        return load_file(text, libvirt)
    return gallery.load(text, libvirt)


def load_command_line(args: str | Sequence[str], name: str = "command-line") -> Scenario:
    """A scenario from QEMU command-line arguments: a list, or a string split as a
    shell would (a whole captured command line, binary first, is accepted), e.g.
    ``load_command_line("-m 4G -object memory-backend-memfd,id=m0,size=4G
    -machine q35,memory-backend=m0")``."""
    from vmm_model.qemu.cmdline import loads_command_line
    from vmm_model.scenario import from_qemu_args
    if isinstance(args, str):
        return loads_command_line(args, "command line", name)
    return from_qemu_args(list(args), name)


def qemu_version(name: str | QemuVersion) -> QemuVersion:
    """A modelled QEMU version by line name or any release (``"11.1"``, ``"10.0.2"``,
    ``"master"``)."""
    from vmm_model.qemu_versions import QemuVersion, get_qemu
    return name if isinstance(name, QemuVersion) else get_qemu(name, where="qemu")


def kernel_profile_name(kernel: str | None) -> str | None:
    """A kernel argument as the API takes it: a profile name (``"7.2"``), ``"host"``
    (this machine's release), or ``"none"``/None (plan only: requests are built
    but no kernel answers them).  Returns the profile name or None."""
    from backends.kernel_profiles import get_profile, host_profile
    if kernel in (None, "none"):
        return None
    if kernel == "host":
        return host_profile().name
    return get_profile(kernel).name


def policy_name(policy: PolicyLike) -> str | None:
    """Resolve ``policy`` to a registered name (a callable is registered under
    ``module:qualname``); None means the QEMU version's own policy."""
    from vmm_model.policy import get_policy, register_policy
    if policy is None:
        return None
    if isinstance(policy, str):
        return get_policy(policy, where="policy")[0]
    name = f"{getattr(policy, '__module__', '?')}:{getattr(policy, '__qualname__', repr(policy))}"
    register_policy(name, policy)
    return name


def backend_name(backend: str) -> str:
    """A registered IOMMU backend's name (``"type1"``, ``"iommufd"``, ``"compat"``, or an
    alias of one); bad input otherwise."""
    from vmm_model.iommu_backends import get_backend
    return get_backend(backend, where="backend").name


def plan_scenario(scenario: ScenarioLike, *, qemu: str | QemuVersion | None = None,
                  backend: str | None = None, kernel: str | None = "7.2",
                  policy: PolicyLike = None) -> Plan:
    """Plan ``scenario`` as QEMU ``qemu`` would on ``backend`` over a simulated
    ``kernel``: every section's listener outcome with the kernel's answer.

    ``qemu`` and ``backend`` default to the ones the scenario names, else the
    newest modelled release and iommufd.  The plan is returned even when it could not run (check
    `Plan.ok`, `Plan.kernel_error`, `Plan.rejected`); the
    pytest fixture ``vfio_plan`` fails the test instead."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import DEFAULT_QEMU
    sc = load_scenario(scenario)
    q = qemu_version(qemu or sc.qemu or DEFAULT_QEMU)
    return make_plan(sc, q, backend_name(backend or sc.backend or DEFAULT_BACKEND),
                     policy_name(policy), kernel_profile_name(kernel))


@dataclass
class Comparison:
    """One scenario run under several (QEMU, backend, kernel) columns:
    ``plans`` one per column, ``differences`` the rows whose answers differ
    (``{"path", "gpa", "cells"}``, one cell per column); ``str()`` is the table
    ``vfio-emu compare`` prints."""

    scenario: Scenario
    plans: list[Plan]
    differences: list[dict] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        from vmm_model.compare import column_name
        return [column_name(p) for p in self.plans]

    def __str__(self) -> str:
        from vmm_model.compare import render
        return render(self.scenario, self.plans, self.differences)


def compare_scenario(scenario: ScenarioLike, *, qemu: Sequence[str] | str | None = None,
                     backends: Sequence[str] | None = None,
                     kernels: Sequence[str] = ("6.12", "7.2", "7.2+fix"),
                     policy: PolicyLike = None) -> Comparison:
    """``vfio-emu compare`` as a function: every combination of ``qemu`` (default:
    the scenario's version, else the newest release), ``backends`` (default: every
    registered backend) and ``kernels`` (simulated profiles or ``"host"``)."""
    from backends.errors import UsageError
    from vmm_model import compare
    from vmm_model.iommu_backends import backend_names
    from vmm_model.qemu_versions import DEFAULT_QEMU
    sc = load_scenario(scenario)
    names = [qemu] if isinstance(qemu, str) else list(qemu or [sc.qemu or DEFAULT_QEMU])
    ks = [kernel_profile_name(k) for k in kernels]
    if not ks or None in ks:
        raise UsageError("compare needs simulated kernels", where="kernels")
    plans, diffs = compare.compare(sc, [qemu_version(n) for n in names],
                                   [backend_name(b) for b in backends or backend_names()], ks,
                                   policy_name(policy))
    return Comparison(sc, plans, diffs)


def simulate_scenario(scenario: ScenarioLike, *, qemu: str | QemuVersion | None = None,
                      backend: str | None = None, kernel: str = "7.2",
                      policy: PolicyLike = None) -> Simulation:
    """Realize ``scenario`` on a simulated kernel (``SimHost``) with a vfio-pci
    device attached: ``sim.host`` (write guest memory with ``write_mem``),
    ``sim.device`` (DMA with `dma_read` / `dma_write`),
    ``sim.machine``, ``sim.container``.  Use it as a context manager, or call
    ``close()``."""
    from backends.errors import UsageError
    from vmm_model.qemu_versions import DEFAULT_QEMU
    from vmm_model.simulate import simulate
    sc = load_scenario(scenario)
    k = kernel_profile_name(kernel)
    if k is None:
        raise UsageError("a simulation needs a kernel profile", where="kernel")
    return simulate(sc, qemu_version(qemu or sc.qemu or DEFAULT_QEMU),
                    backend_name(backend or sc.backend or DEFAULT_BACKEND), k, policy_name(policy))
