"""The cases that need a real process: standard output closed early (EPIPE),
full (ENOSPC on /dev/full), closed, or not UTF-8; Ctrl-C (SIGINT) during a run;
--debug.  Each asserts the exit status and the exact stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIG = """title = "long run"
qemu = "10.1"
[memory]
size = "4G"
maxmem = "2T"
[[object]]
qom-type = "memory-backend-memfd"
id = "vmem0"
size = "1T"
[[device]]
driver = "virtio-mem-pci"
memdev = "vmem0"
block-size = "2M"
x-populated = ["0-524287"]
"""


def vfio_emu(*argv, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "vmm_model.cli", *map(str, argv)],
                            cwd=ROOT, env={**os.environ, **(env or {})}, **kw)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def test_stdout_closed_early_epipe():
    p = vfio_emu("plan", "--no-compare", "--kernel", "none", stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    p.stdout.read(100)
    p.stdout.close()             # the reader goes away, as `| head -c 100` does
    err = p.stderr.read()
    p.wait(120)
    assert (p.returncode, err) == (141, b"")


def test_stdout_full_enospc():
    with open("/dev/full", "w") as full:
        rc, _, err = finish(vfio_emu("plan", "s06", "--no-compare", stdout=full,
                                     stderr=subprocess.PIPE))
    assert (rc, err) == (2, b"vfio-emu: error: cannot write standard output: "
                            b"No space left on device\n")


def test_stdout_closed():
    rc, _, err = finish(vfio_emu("versions", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 pass_fds=(), close_fds=True,
                                 preexec_fn=lambda: os.close(1)))
    assert (rc, err) == (2, b"vfio-emu: error: standard output is closed\n")


def test_ascii_output_encoding():
    rc, out, err = finish(vfio_emu("plan", "s06", "--no-compare",
                                   env={"PYTHONIOENCODING": "ascii"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert (rc, err) == (0, b"")
    out.decode("ascii")
    assert b"QEMU 10.1 \\xb7 backend iommufd" in out and b"   summary: " in out


def test_ascii_error_line(tmp_path):
    bad = tmp_path / "caf\u00e9.toml"
    bad.write_text('[memory]\nsize = "4\u00d7G"\n')
    rc, out, err = finish(vfio_emu("plan", bad, env={"PYTHONIOENCODING": "ascii"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert rc == 2 and out == b""
    assert err == ("vfio-emu: error: size: bad value '4\\xd7G' for memory (-m) "
                   f"({str(bad).replace(chr(0xe9), chr(92) + 'xe9')}:2); valid: a size, e.g. "
                   "4G, 512M, 0x1000\n").encode()


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "text"])
def test_ctrl_c_mid_run(tmp_path, fmt):
    """SIGINT while the 524,288 blocks are mapped: exit 130 with one line.  JSON is
    never partial: stdout is empty (interrupted while planning, the usual case: the
    plan takes far longer than 5 s) or, if the signal came while the document was
    being written, the whole document (the write holds Ctrl-C until it ends)."""
    path = tmp_path / "big.toml"
    path.write_text(BIG)
    p = vfio_emu("plan", path, "--backend", "iommufd", *([fmt] if fmt != "text" else []),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(5)                      # start-up and scenario load are done by then
    assert p.poll() is None, "finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    rc, out, err = finish(p)
    assert (rc, err) == (130, b"vfio-emu: interrupted\n")
    if fmt == "--json" and out:
        assert len(json.loads(out)["plans"][0]["events"]) > 524288
    elif fmt == "--jsonl" and out:
        records = [json.loads(line) for line in out.splitlines()]
        assert sum(r["record"] == "event" for r in records) > 524288


def test_debug_shows_the_traceback():
    rc, out, err = finish(vfio_emu("plan", "--debug", "--", "-m", "4Z",
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert rc == 2 and out == b""
    lines = err.decode().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == ("vfio-emu: error: size: bad value '4Z' for -m (QEMU command line: "
                         "argument 1 (-m)); valid: a size, e.g. 4G, 512M, 0x1000")
