"""Bad input for the live-QEMU layer: a clear one-line error, no hang, nothing
left behind (no QEMU child process, no socket directory)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest

from vmm_model import cli
from vmm_model.qemu import (QemuGoneError, QemuLaunchError, QmpCommandError,
                            QmpConnectError, QemuProcess, QmpMonitor, find_qemu, introspect,
                            launch_hmp)
from qemu_testing import children, launched
from backends.errors import HostError, VfioEmuError




def need(version):
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    return binary


def run_cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


class FakeServer:
    """A listening unix socket that sends ``payload`` (or nothing) and holds on."""

    def __init__(self, payload: bytes | None):
        self.dir = tempfile.mkdtemp(prefix="vfio-emu-fake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.payload = payload
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.conns.append(conn)
        if self.payload is not None:
            conn.sendall(self.payload)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()
        self.thread.join(5)
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_socket_missing(capsys):
    with pytest.raises(QmpConnectError, match=r"no such socket: /nonexistent/q\.sock"):
        QmpMonitor("/nonexistent/q.sock")
    code, out, err = run_cli(["inspect", "--qmp", "/nonexistent/q.sock"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("vfio-emu: error: no such socket: /nonexistent/q.sock")
    assert err.count("\n") == 1 and "-qmp unix:PATH,server=on,wait=off" in err


def test_stale_socket_nobody_listens():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    try:
        with pytest.raises(QmpConnectError, match="cannot connect to .*stale.sock: "
                                                  "Connection refused"):
            QmpMonitor(path, timeout=2)
    finally:
        os.unlink(path)
        os.rmdir(d)


def test_socket_that_sends_garbage():
    srv = FakeServer(b"HTTP/1.0 200 OK\r\n\r\nhello\n")
    try:
        t0 = time.monotonic()
        with pytest.raises(QmpConnectError, match="does not speak QMP") as ei:
            QmpMonitor(srv.path, timeout=3)
        assert time.monotonic() - t0 < 3
        assert isinstance(ei.value, HostError) and "\n" not in str(ei.value)
    finally:
        srv.close()


def test_socket_that_sends_nothing_times_out(capsys):
    srv = FakeServer(None)
    try:
        t0 = time.monotonic()
        with pytest.raises(QmpConnectError, match=r"sent no QMP greeting within 1s"):
            QmpMonitor(srv.path, timeout=1)
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()
    srv = FakeServer(None)
    try:
        code, out, err = run_cli(["inspect", "--qmp", srv.path, "--timeout", "0.5"], capsys)
        assert code == 2 and "sent no QMP greeting within 0.5s" in err
    finally:
        srv.close()


def test_qemu_exits_in_the_middle_of_a_query():
    need("7.2")
    with launched("7.2", "default-m") as (q, mon, d):
        assert mon.execute("query-version")["qemu"]["major"] == 7
        q.kill()
        t0 = time.monotonic()
        with pytest.raises(QemuGoneError, match="QEMU went away during") as ei:
            introspect(mon)
        assert time.monotonic() - t0 < 10 and isinstance(ei.value, VfioEmuError)
    assert q.proc.poll() is not None and not os.path.exists(q.tmpdir)
    assert q.pid not in children()


def test_qmp_error_reply_from_real_qemu():
    need("10.0")
    with launched("10.0", "default-m") as (q, mon, d):
        with pytest.raises(QmpCommandError) as ei:
            mon.execute("qom-get", path="/objects/nope", property="size")
        assert ei.value.error_class == "DeviceNotFound"
        assert "qom-get" in str(ei.value) and "/objects/nope" in str(ei.value)
        # the session is still usable after an error reply
        assert mon.execute("query-version")["qemu"]["major"] == 10
    assert not os.path.exists(q.tmpdir) and q.pid not in children()


def test_qemu_binary_missing(capsys):
    q = QemuProcess("/nonexistent/qemu-system-x86_64", ["-m", "128M"])
    with pytest.raises(QemuLaunchError, match="cannot run QEMU binary "
                                              "/nonexistent/qemu-system-x86_64"):
        q.start()
    assert not os.path.exists(q.tmpdir)
    with pytest.raises(QemuLaunchError, match="not found"):
        launch_hmp("/nonexistent/qemu-system-x86_64", [])
    code, out, err = run_cli(["inspect", "--hmp-stdio", "--", "/nonexistent/qemu", "-m",
                              "128M"], capsys)
    assert code == 2 and err.startswith("vfio-emu: error: cannot run QEMU binary "
                                        "/nonexistent/qemu")
    assert children() == []


def test_find_qemu_reports_why(monkeypatch):
    monkeypatch.setenv("VFIO_EMU_QEMU_10_0", "/nonexistent/qemu")
    path, why = find_qemu("10.0")
    assert path is None
    assert why == ("QEMU 10.0 not found at /nonexistent/qemu (set VFIO_EMU_QEMU_10_0, or "
                   "run scripts/install-qemu.sh)")
    if os.path.exists("/usr/bin/qemu-system-x86_64"):
        monkeypatch.setenv("VFIO_EMU_QEMU_10_0", "/usr/bin/qemu-system-x86_64")
        path, why = find_qemu("10.0")
        assert path is None and "not 10.0" in why


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_qemu_rejects_its_arguments(version):
    binary = need(version)
    q = QemuProcess(binary, ["-object", "memory-backend-foo,id=x,size=1M"])
    with pytest.raises(QemuLaunchError, match=r"QEMU exited with status 1 before its QMP "
                                              r"socket appeared: .*memory-backend-foo"):
        q.start()
    assert not os.path.exists(q.tmpdir) and children() == []
    with pytest.raises(QemuLaunchError, match="memory-backend-foo"):
        launch_hmp(binary, ["-object", "memory-backend-foo,id=x,size=1M"])
    assert children() == []


def test_arguments_must_be_an_argv_list():
    with pytest.raises(TypeError, match="argv list"):
        QemuProcess("qemu-system-x86_64", "-m 128M")


def test_inspect_usage_errors(capsys):
    code, out, err = run_cli(["inspect"], capsys)
    assert code == 2 and "give either --qmp SOCKET or --hmp-stdio" in err
    code, out, err = run_cli(["inspect", "--hmp-stdio"], capsys)
    assert code == 2 and "--hmp-stdio needs QEMU arguments after --" in err
