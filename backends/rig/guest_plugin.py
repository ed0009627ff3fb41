"""pytest plugin loaded in the rig guest (``-p backends.rig.guest_plugin``):
one JSON record per test, written to ``--rig-json FILE`` at session end.

Record: ``{"nodeid", "outcome": passed|failed|skipped|error, "duration",
"message"}``; ``error`` is a setup/teardown failure, ``message`` the skip
reason or the end of the failure's traceback.
"""

from __future__ import annotations

import json

MESSAGE_MAX = 3000


def pytest_addoption(parser):
    parser.getgroup("vfio-emu rig").addoption(
        "--rig-json", metavar="FILE", help="write one JSON record per test to FILE")


class _Recorder:
    def __init__(self, path: str):
        self.path = path
        self.tests: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report):
        t = self.tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                                  "duration": 0.0, "message": ""})
        t["duration"] = round(t["duration"] + report.duration, 3)
        if report.skipped and t["outcome"] == "passed":
            t["outcome"] = "skipped"
            lr = report.longrepr
            t["message"] = lr[2] if isinstance(lr, tuple) else str(lr)
        elif report.failed:
            t["outcome"] = "failed" if report.when == "call" else "error"
            t["message"] = report.longreprtext[-MESSAGE_MAX:]

    def pytest_collectreport(self, report):
        """A module that failed to import (error) or skipped itself whole (skipped)."""
        if report.failed or report.skipped:
            lr = report.longrepr
            self.tests[report.nodeid or "collection"] = {
                "nodeid": report.nodeid or "collection",
                "outcome": "error" if report.failed else "skipped", "duration": 0.0,
                "message": (lr[2] if isinstance(lr, tuple) else report.longreprtext)[-MESSAGE_MAX:]}

    def pytest_sessionfinish(self, session, exitstatus):
        with open(self.path, "w") as f:
            json.dump({"exitstatus": int(exitstatus), "tests": list(self.tests.values())}, f,
                      indent=1)


def pytest_configure(config):
    path = config.getoption("rig_json")
    if path:
        config.pluginmanager.register(_Recorder(path), "rig-json-recorder")
