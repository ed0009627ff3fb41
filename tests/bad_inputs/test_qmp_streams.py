"""QMP streams that are truncated, garbled, slow, or closed mid-answer, served by
a FAKE QMP server on a unix socket in this test (a stand-in for a broken or
impostor peer; real QEMUs are used in tests/test_qemu_errors.py).  ``inspect``
must give one error line naming the socket or the QMP command, within
``--timeout`` (plus a margin), and leave no fd, thread or temporary file."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time

import pytest

from tests.bad_inputs.conftest import assert_error

GREETING = (json.dumps({"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10},
                                            "package": "fake"}, "capabilities": []}})
            + "\r\n").encode()
TIMEOUT = 0.5


def reply(req, **body):
    """A QMP answer to ``req`` (echoing its id when it has one)."""
    return (json.dumps({**body, **({"id": req["id"]} if "id" in req else {})}) + "\r\n").encode()


def ok(ret):
    return lambda req: reply(req, **{"return": ret})


class FakeQmp:
    """A FAKE QMP peer: sends ``greeting`` (bytes, or None for nothing), then
    answers each command with ``answers[cmd](request)``: bytes to send, None to
    stay silent, or "close" to hang up.  qmp_capabilities is answered {} unless
    given."""

    def __init__(self, greeting=GREETING, answers=None):
        self.dir = tempfile.mkdtemp(prefix="fake-qmp-")
        self.path = os.path.join(self.dir, "qmp.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.greeting = greeting
        self.answers = {"qmp_capabilities": ok({}), **(answers or {})}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.srv.settimeout(10)
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        with conn:
            if self.greeting is not None:
                conn.sendall(self.greeting)
            if self.greeting is None or not self.greeting.endswith(b"\n"):
                self.stop.wait(10)
                return
            buf = b""
            conn.settimeout(0.1)
            while not self.stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf or buf.strip().endswith(b"}"):
                    line, _, buf = buf.partition(b"\n") if b"\n" in buf else (buf, b"", b"")
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    answer = self.answers.get(req["execute"], lambda r: None)(req)
                    if answer == "close":
                        return
                    if answer is not None:
                        try:
                            conn.sendall(answer)
                        except OSError:
                            return

    def close(self):
        self.stop.set()
        self.srv.close()
        self.thread.join(5)
        os.unlink(self.path)
        os.rmdir(self.dir)


CASES = {
    # name: (greeting, answers, what the error line says)
    "silent": (None, {}, "sent no QMP greeting within 0.5s"),
    "greeting-garbage": (b"HTTP/1.1 400 Bad Request\r\n\r\n", {}, "does not speak QMP"),
    "greeting-not-utf8": (b"\xff\xfe\xfd\r\n", {}, "does not speak QMP"),
    "greeting-truncated": (GREETING[:30], {}, "sent no QMP greeting within 0.5s"),
    "greeting-wrong-json": (b'{"hello": 1}\r\n', {}, "does not speak QMP"),
    "greeting-then-close": (GREETING, {"qmp_capabilities": lambda r: "close"},
                            "does not speak QMP"),
    "capabilities-never-answered": (GREETING, {"qmp_capabilities": lambda r: None},
                                    "sent no QMP greeting within 0.5s"),
    "capabilities-garbage": (GREETING, {"qmp_capabilities": lambda r: b"garbage\r\n"},
                             "does not speak QMP"),
    "version-never-answered": (GREETING, {}, "no answer to query-version within 0.5s"),
    "version-slow": (GREETING, {"query-version": lambda r: (time.sleep(2 * TIMEOUT), None)[1]},
                     "no answer to query-version within 0.5s"),
    "version-closed-mid-answer": (GREETING, {"query-version": lambda r: "close"},
                                  "QEMU went away during query-version"),
    "version-truncated-then-silent": (
        GREETING, {"query-version": lambda r: b'{"return": {"qemu": {"maj'},
        "no answer to query-version within 0.5s"),
    "version-garbled": (GREETING, {"query-version": lambda r: b"\x00\x01garbage\r\n"},
                        "query-version"),
    "version-wrong-shape": (GREETING, {"query-version": ok(5)},
                            "unexpected answer to query-version"),
    "version-missing-keys": (GREETING, {"query-version": ok({"qemu": {}})},
                             "unexpected answer to query-version"),
    "version-error-reply": (GREETING, {"query-version": lambda r: reply(
        r, error={"class": "GenericError", "desc": "no"})},
        "query-version {} failed: GenericError: no"),
    "version-wrong-id": (GREETING, {"query-version": lambda r: (json.dumps(
        {"return": {}, "id": "other"}) + "\r\n").encode()}, "query-version"),
    "memdev-never-answered": (GREETING, {"query-version": ok(
        {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "fake"})},
        "no answer to query-memdev within 0.5s"),
    "qom-list-wrong-shape": (GREETING, {"query-version": ok(
        {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "fake"}),
        "query-memdev": ok([]), "qom-list": ok([1, 2, 3])}, "unexpected answer to qom-list"),
    "huge-line": (GREETING, {"query-version": lambda r: b'{"return": "' + b"x" * (8 << 20)},
                  "query-version"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_qmp_peer(vfio_emu, name):
    greeting, answers, says = CASES[name]
    srv = FakeQmp(greeting, answers)
    try:
        t0 = time.monotonic()
        r = vfio_emu("inspect", "--qmp", srv.path, "--timeout", TIMEOUT)
        took = time.monotonic() - t0
    finally:
        srv.close()
    line = assert_error(r, says)
    assert srv.path in line, line                    # the socket is named
    assert took < 4 * TIMEOUT + 3, took             # within --timeout (plus start-up)
    assert [t for t in threading.enumerate() if t is not threading.main_thread()
            and not t.daemon] == []
