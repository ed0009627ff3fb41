"""The kernel's own iommufd selftests (tools/testing/selftests/iommu: iommufd,
iommufd_fail_nth), built from the same tree as the guest kernel
(backends/rig/kernels.py), as a health check: one pytest test per TAP line.

Each binary runs once, at collection (it is the test); its TAP output
(``ok N fixture.variant.test``, ``# SKIP``, ``not ok``) becomes the tests.
On iommufd-7.2: iommufd 241 pass / 5 skip in 17 s, iommufd_fail_nth 8/8 in 3 s.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

SELFTESTS = os.environ.get("RIG_SELFTESTS", "")
BINARIES = ("iommufd", "iommufd_fail_nth")
TIMEOUT = 900


def run_tap(binary: str) -> dict:
    """{"exit", "planned", "output", "tests": {name: (ok, skip_reason, detail)}}."""
    path = os.path.join(SELFTESTS, binary)
    try:
        r = subprocess.run([path], capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"exit": None, "planned": None, "output": str(e), "tests": {}}
    tests, detail, planned = {}, [], None
    for line in r.stdout.splitlines():
        m = re.match(r"(not ok|ok) \d+ (\S+)(?: # (SKIP|XFAIL)\s*(.*))?", line)
        if m:
            tests[m[2]] = (m[1] == "ok", m[4] if m[3] == "SKIP" else None, "\n".join(detail[-30:]))
            detail = []
        elif line.startswith("1.."):
            planned = int(line[3:])
        elif line.startswith("#"):
            detail.append(line)
    return {"exit": r.returncode, "planned": planned, "output": r.stdout[-3000:] + r.stderr[-2000:],
            "tests": tests}


RESULTS = {b: run_tap(b) for b in BINARIES} if SELFTESTS else {}
CASES = [(b, name) for b in BINARIES for name in RESULTS.get(b, {}).get("tests", {})]


@pytest.mark.parametrize("binary", BINARIES)
def test_binary_completed(binary):
    """Exit status 0 (kselftest: pass or skip only) and every planned test reported."""
    if not SELFTESTS:
        pytest.fail("RIG_SELFTESTS is not set: the kernel has no selftests")
    r = RESULTS[binary]
    assert r["exit"] == 0 and r["planned"] == len(r["tests"]), r["output"]


@pytest.mark.parametrize("binary,name", CASES, ids=[f"{b}:{n}" for b, n in CASES])
def test_case(binary, name):
    ok, skip, detail = RESULTS[binary]["tests"][name]
    if ok and skip is not None:
        pytest.skip(f"{binary}: {skip}")
    assert ok, detail
