"""backends/uapi.py against the kernel's own UAPI headers, compiled with gcc.

The headers come from Debian sid's ``linux-libc-dev`` (scripts/fetch_uapi_headers.sh,
private apt state, cached under ~/.cache/vfio-emu/uapi/<version>/), or from
``$VFIO_EMU_UAPI_INCLUDE``.  The C probe is generated from uapi.py's registries
(tests/uapi_probe/probe.py), so every struct, member, ioctl and constant defined
there is checked; nothing is listed here by hand.  The header version checked is
printed at the end of the run ("uapi header check") and recorded as a junit
property.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "uapi_probe"))
import probe as uprobe  # noqa: E402

from backends import uapi  # noqa: E402


class _Summary:
    """Adds the checked header version to pytest's terminal summary."""

    def __init__(self, res: uprobe.ProbeResult):
        self.res = res

    def pytest_terminal_summary(self, terminalreporter):
        r = self.res
        terminalreporter.write_sep("-", "uapi header check")
        terminalreporter.write_line(
            f"{r.headers.package}: LINUX_VERSION_CODE {r.kernel_str}, {r.headers.include}; "
            f"{len(r.structs)} structs, {len(r.members)} members, {len(r.numbers)} ioctls+constants "
            f"compiled; {len(r.missing)} absent from these headers")


@pytest.fixture(scope="module")
def kernel(request) -> uprobe.ProbeResult:
    try:
        headers = uprobe.fetch_headers()
    except uprobe.ProbeError as e:
        if "not found" in str(e):
            pytest.skip(f"no Debian apt here and VFIO_EMU_UAPI_INCLUDE unset: {e}")
        pytest.fail(str(e), pytrace=False)
    try:
        res = uprobe.run(headers)
    except uprobe.ProbeError as e:
        pytest.fail(str(e), pytrace=False)
    pm = request.config.pluginmanager
    if not pm.has_plugin("vfio-emu-uapi-summary"):
        pm.register(_Summary(res), "vfio-emu-uapi-summary")
    return res


def _newer(since, res: uprobe.ProbeResult) -> bool:
    return since is not None and tuple(since) > res.kernel[:2]


def _v(since) -> str:
    return "%d.%d" % tuple(since)


def _where(res: uprobe.ProbeResult) -> str:
    return f"{res.headers.package}, LINUX_VERSION_CODE {res.kernel_str}"


def test_header_version_recorded(kernel, record_property, record_testsuite_property):
    """The headers really are the ones fetched (not the host's /usr/include)."""
    record_property("uapi_headers", f"{kernel.headers.package} ({kernel.kernel_str})")
    record_testsuite_property("uapi_headers", f"{kernel.headers.package} ({kernel.kernel_str})")
    assert kernel.version_code > 0
    pkg = kernel.headers.package
    if pkg.startswith("linux-libc-dev "):
        debian_version = pkg.split()[1]                   # "7.2.13-1", "6.13~rc4-1"
        assert uapi.kernel_version(debian_version) == kernel.kernel[:2], (pkg, kernel.kernel_str)


def test_probe_covers_every_registry_entry(kernel):
    items = [i for i, _ in uprobe.items_and_fields()]
    n_members = sum(1 for i in items if i.kind == "F")
    assert len(kernel.structs) + sum(1 for i in kernel.missing if i.kind == "S") == len(uapi.STRUCTS)
    assert len(kernel.members) + sum(1 for i in kernel.missing if i.kind == "F") == n_members
    assert len(kernel.numbers) + sum(1 for i in kernel.missing if i.kind in "IC") \
        == len(uapi.IOCTLS) + len(uapi.CONSTANTS)


@pytest.mark.parametrize("name", list(uapi.STRUCTS))
def test_struct_layout(kernel, name):
    """sizeof, alignment, and every member's offset, size and signedness."""
    sd = uapi.STRUCTS[name]
    struct_item = uprobe.Item("S", name)
    if struct_item in kernel.missing:
        if _newer(sd.since, kernel):
            pytest.skip(f"struct {name} is new in Linux {_v(sd.since)}; not in {_where(kernel)}")
        pytest.fail(f"struct {name} does not exist in {_where(kernel)} "
                    f"(uapi.py says since {_v(sd.since) if sd.since else 'forever'}): "
                    f"{kernel.missing[struct_item]}", pytrace=False)
    errors, newer = [], []
    for path, f, off, since in uprobe.member_paths(sd):
        item = uprobe.Item("F", name, path)
        if item in kernel.missing:
            if _newer(since, kernel):
                newer.append(f"{path} (new in {_v(since)})")
            else:
                errors.append(f"member {path} missing ({kernel.missing[item]})")
            continue
        k_off, k_size, k_signed = kernel.members[(name, path)]
        if k_off != off:
            errors.append(f"member {path}: offset {off} in uapi.py, {k_off} in the headers")
        if not f.flexible and k_size != f.size:
            errors.append(f"member {path}: size {f.size} in uapi.py, {k_size} in the headers")
        if k_signed != -1 and bool(k_signed) != f.signed:
            errors.append(f"member {path}: {'signed' if f.signed else 'unsigned'} in uapi.py, "
                          f"{'signed' if k_signed else 'unsigned'} in the headers")
    k_size, k_align = kernel.structs[name]
    if newer:
        # the struct is older in these headers: its size is theirs, not ours
        warnings.warn(f"struct {name}: {', '.join(newer)} not in {_where(kernel)}; sizeof not compared")
    else:
        if k_size != sd.size:
            errors.append(f"sizeof {sd.size} in uapi.py, {k_size} in the headers")
        if k_align != sd.align:
            errors.append(f"alignment {sd.align} in uapi.py, {k_align} in the headers")
    if errors:
        pytest.fail(f"struct {name} ({sd.header}) differs from {_where(kernel)}:\n  "
                    + "\n  ".join(errors), pytrace=False)


@pytest.mark.parametrize("name", list(uapi.IOCTLS))
def test_ioctl_number(kernel, name):
    ioc = uapi.IOCTLS[name]
    item = uprobe.Item("I", name)
    if item in kernel.missing:
        if _newer(ioc.since, kernel):
            pytest.skip(f"ioctl {name} is new in Linux {_v(ioc.since)}; not in {_where(kernel)}")
        pytest.fail(f"ioctl {name} does not exist in {_where(kernel)}: {kernel.missing[item]}",
                    pytrace=False)
    if kernel.numbers[name] != ioc.nr:
        pytest.fail(f"ioctl {name}: {ioc.nr:#x} in uapi.py, {kernel.numbers[name]:#x} in {_where(kernel)}",
                    pytrace=False)


@pytest.mark.parametrize("name", list(uapi.CONSTANTS))
def test_constant(kernel, name):
    value, header, since = uapi.CONSTANTS[name]
    item = uprobe.Item("C", name)
    if item in kernel.missing:
        if _newer(since, kernel):
            pytest.skip(f"{name} is new in Linux {_v(since)}; not in {_where(kernel)}")
        pytest.fail(f"constant {name} ({header}) does not exist in {_where(kernel)}: "
                    f"{kernel.missing[item]}", pytrace=False)
    if kernel.numbers[name] != value:
        pytest.fail(f"constant {name} ({header}): {value:#x} in uapi.py, {kernel.numbers[name]:#x} "
                    f"in {_where(kernel)}", pytrace=False)
