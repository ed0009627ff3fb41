"""pytest plugin (``pytest11`` entry point ``vfio_emu``) for VMM test suites.

Kept light in the style of Hypothesis's plugin: options in one group, markers
registered at start-up, a report header naming the active setup; vfio-emu itself
is imported when a fixture is first used.  Reference: docs/pytest-plugin.md.

Options (``--vfio-qemu``, ``--vfio-backend``, ``--vfio-kernel``, ``--vfio-policy``)
choose what ``vfio_plan`` and ``vfio_sim`` use when a test does not say; a bad
value is a usage error at start-up.  Precedence, highest first: the fixture's
keyword argument, the test's ``vfio_matrix`` combination or ``vfio_policy``
marker, the command-line option, what the scenario file names, the default
(the newest modelled QEMU release, iommufd, kernel 7.2, the QEMU version's own policy).

A plan that cannot run (the backend cannot start on that kernel, or that QEMU
version rejects the configuration) fails the test with the reason; it is
skipped instead only when the test asks (``unavailable="skip"``, the
``vfio_skip_unavailable`` marker, or ``vfio_matrix(..., unavailable="skip")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import pytest

if TYPE_CHECKING:
    from vmm_model.migration import MigrationCheck
    from vmm_model.plan import Plan
    from vmm_model.qemu_versions import QemuVersion
    from vmm_model.scenario import Scenario
    from vmm_model.simulate import Simulation

DEFAULT_KERNEL = "7.2"
_UNSET: Any = object()
_UNAVAILABLE = ("fail", "skip", "return")


class VfioCombo(NamedTuple):
    """One cell of a ``vfio_matrix``: QEMU version, backend, kernel profile (or None)."""

    qemu: str
    backend: str
    kernel: str | None

    @property
    def id(self) -> str:
        return f"qemu-{self.qemu}-{self.backend}-{self.kernel or 'nokernel'}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vfio-emu", "vfio-emu (VFIO DMA-mapping policy emulator)")
    group.addoption("--vfio-qemu", default=None,
                    help="QEMU version whose vfio_container_dma_map is emulated "
                         "(default: the scenario's, else the newest release)")
    group.addoption("--vfio-backend", default=None,
                    help="IOMMU backend for vfio_plan / vfio_sim: type1, iommufd, compat "
                         "(default: the scenario's, else iommufd)")
    group.addoption("--vfio-kernel", default=DEFAULT_KERNEL,
                    help="simulated kernel profile (see 'vfio-emu profiles'), 'host' "
                         "(this machine's release) or 'none' (plan only); default "
                         + DEFAULT_KERNEL)
    group.addoption("--vfio-policy", default=None,
                    help="vfio_container_dma_map policy: a registered name or "
                         "package.module:callable (default: the QEMU version's own)")


MARKERS = (
    "vfio_qemu(*versions): run only when the selected QEMU version (--vfio-qemu, or the "
    "test's vfio_matrix cell) is one of versions (aliases such as 10.0.2 accepted)",
    "vfio_matrix(qemu=..., backend=..., kernel=..., unavailable='fail'): run the test once "
    "per combination; vfio_plan, vfio_sim, vfio_qemu, vfio_backend, vfio_kernel and "
    "vfio_combo follow the combination",
    "vfio_policy(policy): the vfio_container_dma_map policy vfio_plan and vfio_sim use in "
    "this test (a registered name, package.module:callable, or a callable)",
    "vfio_skip_unavailable: skip (with the reason) instead of failing when a plan cannot "
    "run (backend missing on that kernel, configuration rejected by that QEMU)",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    # Validate only what was given: the defaults are valid, and importing vfio-emu
    # here would make start-up heavier for every run.
    checks = [("--vfio-qemu", None, "qemu_version"), ("--vfio-backend", None, "backend_name"),
              ("--vfio-kernel", DEFAULT_KERNEL, "kernel_profile_name"),
              ("--vfio-policy", None, "policy_name")]
    for option, default, fn in checks:
        value = config.getoption(option)
        if value == default:
            continue
        from backends.errors import VfioEmuError
        from vmm_model import api
        try:
            getattr(api, fn)(value)
        except VfioEmuError as e:
            valid = f" (valid: {e.valid})" if e.valid else ""
            raise pytest.UsageError(f"vfio-emu: {option}: {e.message}{valid}") from None


def pytest_report_header(config: pytest.Config) -> str:
    from vmm_model.qemu_versions import DEFAULT_QEMU
    q = config.getoption("--vfio-qemu")
    b = config.getoption("--vfio-backend")
    p = config.getoption("--vfio-policy")
    return (f"vfio-emu: qemu={q or 'scenario or ' + DEFAULT_QEMU} "
            f"backend={b or 'scenario or iommufd'} "
            f"kernel={config.getoption('--vfio-kernel')}" + (f" policy={p}" if p else ""))


def _as_list(value: Any, default: list) -> list:
    if value is None:
        return default
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _matrix(config: pytest.Config, mark: pytest.Mark) -> list[VfioCombo]:
    from vmm_model.api import backend_name, kernel_profile_name, qemu_version
    from vmm_model.qemu_versions import DEFAULT_QEMU, QEMU_VERSIONS
    unknown = set(mark.kwargs) - {"qemu", "backend", "kernel", "unavailable"}
    if mark.args or unknown:
        raise pytest.UsageError(
            "vfio-emu: vfio_matrix takes keyword arguments qemu=, backend=, kernel=, "
            f"unavailable= (got {list(mark.args) + sorted(unknown)})")
    qemus = _as_list(mark.kwargs.get("qemu"), [config.getoption("--vfio-qemu") or DEFAULT_QEMU])
    if qemus == ["all"]:
        qemus = list(QEMU_VERSIONS)
    backends = _as_list(mark.kwargs.get("backend"),
                        [config.getoption("--vfio-backend") or "iommufd"])
    kernels = _as_list(mark.kwargs.get("kernel"), [config.getoption("--vfio-kernel")])
    return [VfioCombo(qemu_version(q).name, backend_name(b), kernel_profile_name(k))
            for q in qemus for b in backends for k in kernels]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker("vfio_matrix")
    if mark is None or "vfio_combo" not in metafunc.fixturenames:
        return
    try:
        combos = _matrix(metafunc.config, mark)
    except pytest.UsageError:
        raise
    except Exception as e:
        raise pytest.UsageError(f"vfio-emu: vfio_matrix on {metafunc.definition.nodeid}: {e}")
    metafunc.parametrize("vfio_combo", combos, ids=[c.id for c in combos])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [(item, m) for item in items if (m := item.get_closest_marker("vfio_qemu"))]
    if not marked:
        return
    from backends.errors import VfioEmuError
    from vmm_model.api import qemu_version
    from vmm_model.qemu_versions import DEFAULT_QEMU
    option = config.getoption("--vfio-qemu") or DEFAULT_QEMU
    for item, m in marked:
        callspec = getattr(item, "callspec", None)
        combo = callspec.params.get("vfio_combo") if callspec is not None else None
        selected = qemu_version(combo.qemu if combo else option).name
        try:
            wanted = {qemu_version(v).name for v in m.args}
        except VfioEmuError as e:
            raise pytest.UsageError(f"vfio-emu: vfio_qemu marker on {item.nodeid}: {e}") from None
        if selected not in wanted:
            item.add_marker(pytest.mark.skip(
                reason=f"vfio_qemu marker: needs QEMU {', '.join(m.args)}, selected {selected}"))


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any,
                              right: Any) -> list[str] | None:
    """``assert plan_a == plan_b``: show the sections that differ."""
    if op != "==" or type(left).__name__ != "Plan" or type(right).__name__ != "Plan":
        return None
    from vmm_model.plan import Plan
    if not (isinstance(left, Plan) and isinstance(right, Plan)):
        return None
    d = left.diff(right)
    return [f"{left!r} == {right!r}", "plans differ:", *("  " + line for line in d.lines()[1:])]


# --- fixtures -----------------------------------------------------------------------

@pytest.fixture
def vfio_combo() -> VfioCombo | None:
    """The current ``vfio_matrix`` cell (a `VfioCombo`), None outside a matrix."""
    return None


@pytest.fixture
def vfio_qemu(request: pytest.FixtureRequest, vfio_combo: VfioCombo | None) -> QemuVersion:
    """The selected QemuVersion: the matrix cell's, ``--vfio-qemu``, else the newest release."""
    from vmm_model.api import qemu_version
    from vmm_model.qemu_versions import DEFAULT_QEMU
    return qemu_version(vfio_combo.qemu if vfio_combo else
                        request.config.getoption("--vfio-qemu") or DEFAULT_QEMU)


@pytest.fixture
def vfio_backend(request: pytest.FixtureRequest, vfio_combo: VfioCombo | None) -> str:
    """The selected backend name: the matrix cell's, ``--vfio-backend``, else iommufd."""
    return vfio_combo.backend if vfio_combo else \
        request.config.getoption("--vfio-backend") or "iommufd"


@pytest.fixture
def vfio_kernel(request: pytest.FixtureRequest, vfio_combo: VfioCombo | None) -> str | None:
    """The selected kernel profile name (None: plan only)."""
    from vmm_model.api import kernel_profile_name
    return vfio_combo.kernel if vfio_combo else \
        kernel_profile_name(request.config.getoption("--vfio-kernel"))


@pytest.fixture
def vfio_policy(request: pytest.FixtureRequest) -> Any:
    """The test's policy: its ``vfio_policy`` marker, else ``--vfio-policy``, else None
    (the QEMU version's own)."""
    m = request.node.get_closest_marker("vfio_policy")
    if m is not None:
        if len(m.args) != 1:
            raise pytest.UsageError(f"vfio-emu: vfio_policy on {request.node.nodeid} takes one "
                                    "policy (a name, module:callable or a callable)")
        return m.args[0]
    return request.config.getoption("--vfio-policy")


class _Setup(NamedTuple):
    request: Any
    combo: VfioCombo | None
    policy: Any


def _resolve(setup: _Setup, scenario: Any, qemu: Any, backend: Any, kernel: Any,
             policy: Any) -> tuple[Scenario, QemuVersion, str, str | None, str | None]:
    """(scenario, QemuVersion, backend, kernel profile or None, policy name or None)
    with the plugin's precedence."""
    from vmm_model.api import (DEFAULT_BACKEND, kernel_profile_name, load_scenario,
                               policy_name, qemu_version)
    from vmm_model.qemu_versions import DEFAULT_QEMU
    opt = setup.request.config.getoption
    c = setup.combo
    sc = load_scenario(scenario)
    q = qemu or (c.qemu if c else None) or opt("--vfio-qemu") or sc.qemu or DEFAULT_QEMU
    b = backend or (c.backend if c else None) or opt("--vfio-backend") or sc.backend \
        or DEFAULT_BACKEND
    if kernel is _UNSET:
        k = c.kernel if c else kernel_profile_name(opt("--vfio-kernel"))
    else:
        k = kernel_profile_name(kernel)
    p = setup.policy if policy is _UNSET else policy
    return sc, qemu_version(q), b, k, policy_name(p)


def _unavailable_mode(setup: _Setup, unavailable: str | None) -> str:
    if unavailable is None:
        node = setup.request.node
        m = node.get_closest_marker("vfio_matrix")
        if m is not None and "unavailable" in m.kwargs:
            unavailable = m.kwargs["unavailable"]
        elif node.get_closest_marker("vfio_skip_unavailable") is not None:
            unavailable = "skip"
        else:
            unavailable = "fail"
    if unavailable not in _UNAVAILABLE:
        raise pytest.UsageError(f"vfio-emu: unavailable={unavailable!r} "
                                f"(valid: {', '.join(_UNAVAILABLE)})")
    return unavailable


def _cannot_run(mode: str, what: str, reason: str) -> None:
    text = f"{what}: {reason}"
    if mode == "skip":
        pytest.skip(text)
    pytest.fail(f"{text}\n(vfio-emu: a plan that cannot run fails the test; pass "
                "unavailable='skip' or mark the test vfio_skip_unavailable to skip it)",
                pytrace=False)


@pytest.fixture
def vfio_plan(request: pytest.FixtureRequest, vfio_combo: VfioCombo | None,
              vfio_policy: Any) -> Callable[..., Plan]:
    """``vfio_plan(scenario, qemu=None, backend=None, kernel=..., policy=...,
    unavailable=None)`` -> `vmm_model.Plan`.

    ``scenario``: a Scenario, a ``.toml`` path or a gallery name.  ``kernel``: a
    profile name, ``"host"``, or ``"none"``/None (plan only).  A plan that cannot
    run fails the test with the reason (``unavailable="skip"`` skips it,
    ``"return"`` returns it for the test to inspect)."""
    setup = _Setup(request, vfio_combo, vfio_policy)

    def plan(scenario: Any, qemu: Any = None, backend: str | None = None,
             kernel: Any = _UNSET, policy: Any = _UNSET, unavailable: str | None = None) -> Plan:
        from vmm_model.plan import make_plan
        from vmm_model.plan_view import label, problems, status
        mode = _unavailable_mode(setup, unavailable)
        sc, q, b, k, p = _resolve(setup, scenario, qemu, backend, kernel, policy)
        result = make_plan(sc, q, b, p, k)
        if mode != "return" and status(result) in ("rejected", "unavailable"):
            _cannot_run(mode, f"vfio_plan({label(result)})", problems(result)[0])
        return result

    return plan


@pytest.fixture
def vfio_sim(request: pytest.FixtureRequest, vfio_combo: VfioCombo | None,
             vfio_policy: Any) -> Iterator[Callable[..., Simulation]]:
    """``vfio_sim(scenario, qemu=None, backend=None, kernel=..., policy=...,
    unavailable=None, **host_options)``: a live `vmm_model.Simulation` on
    a simulated kernel (host, machine, container, ``device`` for DMA), closed at
    teardown.  A backend that cannot start fails the test as in ``vfio_plan``."""
    setup = _Setup(request, vfio_combo, vfio_policy)
    sims: list[Simulation] = []

    def sim(scenario: Any, qemu: Any = None, backend: str | None = None, kernel: Any = _UNSET,
            policy: Any = _UNSET, unavailable: str | None = None,
            **host_options: Any) -> Simulation:
        from vmm_model.simulate import simulate
        mode = _unavailable_mode(setup, unavailable)
        sc, q, b, k, p = _resolve(setup, scenario, qemu, backend, kernel, policy)
        if k is None and kernel is not _UNSET:
            raise pytest.UsageError("vfio-emu: vfio_sim needs a kernel profile, not "
                                    f"kernel={kernel!r}")
        s = simulate(sc, q, b, k or DEFAULT_KERNEL, p, **host_options)
        sims.append(s)
        if s.error and mode != "return":
            _cannot_run(mode, f"vfio_sim({sc.name} qemu-{q.name} {b}/{k or DEFAULT_KERNEL})",
                        f"{b} cannot start: {s.error}")
        return s

    yield sim
    for s in sims:
        s.close()


@pytest.fixture
def vfio_migrate_check() -> Callable[..., MigrationCheck]:
    """``vfio_migrate_check(scenario, source="qemu=10.0,backend=type1",
    destination="qemu=11.1,backend=iommufd", mode=None)`` -> a
    `vmm_model.MigrationCheck` (``.verdict``, ``.findings``);
    ``.expect("changes")`` fails the test with the whole report (docs/migrate.md)."""

    def check(scenario: Any, source: str | dict = "", destination: str | dict = "",
              mode: str | None = None) -> MigrationCheck:
        from vmm_model.api import load_scenario
        from vmm_model.migration import migrate_check
        return migrate_check(load_scenario(scenario), source, destination, mode)

    return check
