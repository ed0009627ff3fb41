"""The bad-input corpus (issue 19 item 3): every case runs ``vfio-emu`` in this
process (``main(argv)``, output captured) unless it needs a real process
(stdout closed or full, encoding, Ctrl-C: test_subprocess.py).

Every case asserts: no traceback, the documented exit status, one error line
that names the place, no hang (a per-case timer), nothing left behind (file
descriptors, temporary files, child processes)."""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest

from vmm_model.cli import main

CASE_TIMEOUT = 60.0      # seconds: a case that takes longer is a hang
ERROR_LINE = re.compile(r"vfio-emu: error: [^\n]+\n\Z")


class Hang(BaseException):
    """Raised by the per-case timer (not an Exception: the CLI must not catch it)."""


@dataclass
class Result:
    rc: int
    out: str
    err: str


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def children() -> set[str]:
    """This process's child pids (/proc/PID/task/TID/children: no scan of /proc)."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            out |= set(f.read().split())
    return out


@pytest.fixture
def vfio_emu(tmp_path, monkeypatch):
    """``vfio_emu(*argv) -> Result``; at teardown: no fd, temporary file or child
    process was left behind by any call."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    fds, kids = _fds(), children()

    def run(*argv) -> Result:
        out, err = io.StringIO(), io.StringIO()

        def hang(*_):
            raise Hang(f"vfio-emu {' '.join(map(str, argv))} took more than {CASE_TIMEOUT}s")
        old = signal.signal(signal.SIGALRM, hang)
        signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                rc = main([str(a) for a in argv])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        r = Result(rc, out.getvalue(), err.getvalue())
        assert "Traceback" not in r.err and "Traceback" not in r.out, r.err
        assert r.rc in (0, 1, 2), r        # 3 would be an internal error: a bug
        return r

    yield run
    assert _fds() <= fds, "file descriptors left open"
    assert children() <= kids, "child processes left behind"
    assert list(scratch.iterdir()) == [], "temporary files left behind"


def assert_error(r: Result, *where: str, rc: int = 2) -> str:
    """Exit ``rc``, nothing on stdout, one ``vfio-emu: error:`` line naming each
    of ``where``; returns the line."""
    assert r.rc == rc, r
    assert r.out == "", r.out[:500]
    assert ERROR_LINE.fullmatch(r.err), r.err
    for w in where:
        assert w in r.err, (w, r.err)
    return r.err
