"""pytest plugin (``pytest11`` entry point ``vfio_emu``) for VMM test suites.

Kept light in the style of Hypothesis's plugin: options in one group, markers
registered at start-up, a report header naming the active setup; heavy imports
happen inside fixtures.

Fixtures:
  ``vfio_qemu``     the QemuVersion selected with ``--vfio-qemu`` (default: the newest release, vmm_model.qemu_versions.DEFAULT_QEMU)
  ``vfio_backend``  the backend name selected with ``--vfio-backend`` (default iommufd)
  ``vfio_kernel``   the simulated kernel profile selected with ``--vfio-kernel``
                    (default 7.2; ``none`` = plan only, ``host`` = this machine's version)
  ``vfio_plan``     ``vfio_plan(scenario_or_path_or_gallery_name, qemu=None, backend=None,
                    kernel=...)`` returns a vmm_model.plan.Plan (events carry the
                    simulated kernel's answers)
  ``vfio_sim``      ``vfio_sim(scenario, qemu=None, backend=None, kernel=None)``: a live
                    vmm_model.simulate.Simulation (host, machine, container, device for
                    DMA), closed at teardown
  ``vfio_migrate_check``  ``vfio_migrate_check(scenario, source="qemu=10.0,backend=type1",
                    destination="qemu=10.2,backend=iommufd", mode=None)`` returns a
                    vmm_model.migration.MigrationCheck (``.verdict``, ``.findings``);
                    ``.expect("changes")`` fails the test with the whole report
Markers:
  ``vfio_qemu(*versions)``  run the test only for those ``--vfio-qemu`` versions
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("vfio-emu", "vfio-emu (VFIO DMA-mapping policy emulator)")
    from vmm_model.qemu_versions import DEFAULT_QEMU
    group.addoption("--vfio-qemu", default=DEFAULT_QEMU,
                    help="QEMU version whose vfio_container_dma_map is emulated")
    group.addoption("--vfio-backend", default="iommufd",
                    help="IOMMU backend for vfio_plan / vfio_sim (vfio-emu plan --help lists them)")
    group.addoption("--vfio-kernel", default="7.2",
                    help="simulated kernel profile (vfio-emu profiles), 'host' or 'none'")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vfio_qemu(*versions): run only when --vfio-qemu is one of versions")


def pytest_report_header(config):
    return (f"vfio-emu: qemu={config.getoption('--vfio-qemu')} "
            f"backend={config.getoption('--vfio-backend')} "
            f"kernel={config.getoption('--vfio-kernel')}")


def pytest_collection_modifyitems(config, items):
    qemu = config.getoption("--vfio-qemu")
    for item in items:
        m = item.get_closest_marker("vfio_qemu")
        if m and qemu not in m.args:
            item.add_marker(pytest.mark.skip(
                reason=f"vfio_qemu marker: needs --vfio-qemu in {list(m.args)}, got {qemu}"))


@pytest.fixture
def vfio_qemu(request):
    from vmm_model.qemu_versions import get_qemu
    return get_qemu(request.config.getoption("--vfio-qemu"), where="--vfio-qemu")


@pytest.fixture
def vfio_backend(request):
    from vmm_model.iommu_backends import get_backend
    return get_backend(request.config.getoption("--vfio-backend"), where="--vfio-backend").name


@pytest.fixture
def vfio_kernel(request):
    from vmm_model.cli import kernel_arg
    return kernel_arg(request.config.getoption("--vfio-kernel"))


def _scenario(scenario):
    from pathlib import Path

    from vmm_model import gallery
    from vmm_model.scenario import Scenario, load_scenario
    if isinstance(scenario, Scenario):
        return scenario
    if Path(str(scenario)).exists():     # TOML, libvirt domain XML or a command line
        return load_scenario(scenario)
    return gallery.load(str(scenario))


_UNSET = object()


@pytest.fixture
def vfio_plan(vfio_qemu, vfio_backend, vfio_kernel):
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu

    def plan(scenario, qemu=None, backend=None, kernel=_UNSET):
        return make_plan(_scenario(scenario), get_qemu(qemu) if qemu else vfio_qemu,
                         backend or vfio_backend, None,
                         vfio_kernel if kernel is _UNSET else kernel)

    return plan


@pytest.fixture
def vfio_sim(vfio_qemu, vfio_backend, vfio_kernel):
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.simulate import simulate
    sims = []

    def sim(scenario, qemu=None, backend=None, kernel=None, **host_options):
        s = simulate(_scenario(scenario), get_qemu(qemu) if qemu else vfio_qemu,
                     backend or vfio_backend, kernel or vfio_kernel or "7.2", **host_options)
        sims.append(s)
        return s

    yield sim
    for s in sims:
        s.close()


@pytest.fixture
def vfio_migrate_check():
    from vmm_model.migration import migrate_check

    def check(scenario, source="", destination="", mode=None):
        return migrate_check(_scenario(scenario), source, destination, mode)

    return check
