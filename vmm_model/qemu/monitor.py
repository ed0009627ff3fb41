"""Monitors: one small interface over QMP (qemu.qmp), HMP on stdio (pexpect) and
recorded transcripts, so introspection code is written once.

    mon.execute("qom-get", path="/objects/m0", property="size")   # QMP-shaped result
    mon.hmp("info mtree -f")                                        # HMP text
    mon.pid                                                         # QEMU's pid, if known

Every wait has a timeout.  QMP uses ``qemu.qmp.QMPClient`` on a private event
loop (never the caller's), over a unix socket this module connects itself so
that the peer's pid can be read with SO_PEERCRED.  Errors: ``vmm_model.qemu.errors``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import struct
import time

from vmm_model.qemu.errors import (QemuError, QemuGoneError, QmpCommandError,
                                   QmpConnectError)
from vmm_model.qemu.parse import parse_hmp_qom_list, parse_hmp_version

DEFAULT_TIMEOUT = 10.0

# qemu.qmp logs protocol failures at ERROR; without a handler Python's
# last-resort handler would print them (multi-line) to stderr next to our one
# line.  A NullHandler keeps them for applications that configure logging.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _key(cmd: str, args: dict | None) -> str:
    return json.dumps([cmd, args or {}], sort_keys=True)


class Monitor:
    """Common surface; subclasses implement ``_execute``."""

    pid: int | None = None
    source: str = "monitor"

    def __init__(self):
        self.transcript: list[dict] = []

    def execute(self, cmd: str, **args):
        try:
            ret = self._execute(cmd, args or None)
        except QmpCommandError as e:
            self.transcript.append({"execute": cmd, **({"arguments": args} if args else {}),
                                    "error": {"class": e.error_class, "desc": e.desc}})
            raise
        self.transcript.append({"execute": cmd, **({"arguments": args} if args else {}),
                                "return": ret})
        return ret

    def hmp(self, command_line: str) -> str:
        return self.execute("human-monitor-command", **{"command-line": command_line})

    def _execute(self, cmd, args):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- QMP over a unix socket ---------------------------------------------------------------

class QmpMonitor(Monitor):
    """A QMP session on a unix socket, with a private asyncio loop."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        super().__init__()
        self.path = str(path)
        self.source = f"QMP socket {self.path}"
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._sock: socket.socket | None = None
        self.greeting: dict | None = None
        self._connect()

    def _run(self, coro, what: str):
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, self.timeout))
        except (asyncio.TimeoutError, TimeoutError):
            raise QemuGoneError(f"{self.source}: no answer to {what} within "
                                f"{self.timeout:g}s", valid="a running QEMU whose monitor "
                                "is not busy; raise --timeout") from None

    def _connect(self) -> None:
        from qemu.qmp import QMPClient
        if not os.path.exists(self.path):
            raise QmpConnectError(f"no such socket: {self.path}",
                                  valid="the path given to QEMU's "
                                        "-qmp unix:PATH,server=on,wait=off")
        # QEMU binds the socket before it listens: a fresh socket can refuse for a
        # moment (seen under load), so ECONNREFUSED is retried for up to a second.
        deadline = time.monotonic() + min(self.timeout, 1.0)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                break
            except ConnectionRefusedError:
                sock.close()
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                e = ConnectionRefusedError(111, "Connection refused")
            except OSError as oe:
                sock.close()
                e = oe
            raise QmpConnectError(f"cannot connect to {self.path}: {e.strerror or e} "
                                  "(is QEMU still running?)",
                                  valid="a QMP socket of a running QEMU")
        try:
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                   struct.calcsize("3i"))
            pid = struct.unpack("3i", cred)[0]
            self.pid = pid if pid > 0 else None
        except OSError:
            self.pid = None
        self._sock = sock
        self._loop = asyncio.new_event_loop()

        async def make():
            return QMPClient("vfio-emu")

        self._client = self._loop.run_until_complete(make())
        try:
            self._run(self._client.connect(sock), "the QMP greeting")
        except QemuGoneError:
            self.close()
            raise QmpConnectError(f"{self.path} sent no QMP greeting within "
                                  f"{self.timeout:g}s: not a QMP socket, or another client "
                                  "holds the monitor", valid="a QEMU -qmp socket") from None
        except Exception as e:  # qemu.qmp ConnectError (GreetingError, EOF, ...)
            self.close()
            cause = getattr(e, "exc", None) or e
            raise QmpConnectError(f"{self.path} does not speak QMP: "
                                  + _one_line(f"{type(cause).__name__}: {cause}").rstrip(": "),
                                  valid="a QEMU -qmp socket") from e
        g = self._client.greeting
        self.greeting = g._raw if g is not None and hasattr(g, "_raw") else None

    def _execute(self, cmd, args):
        from qemu.qmp import ExecuteError
        if self._client is None:
            raise QemuGoneError(f"{self.source}: the session is closed")
        try:
            return self._run(self._client.execute(cmd, args), cmd)
        except ExecuteError as e:
            err = e.error.error
            raise QmpCommandError(
                f"{self.source}: {cmd} {json.dumps(args or {})} failed: {err.class_}: "
                f"{_one_line(err.desc)}", command=cmd, error_class=err.class_, desc=err.desc) from None
        except QemuError:
            raise
        except Exception as e:  # EOF, StateError, ExecInterruptedError, ConnectionReset ...
            raise QemuGoneError(f"{self.source}: QEMU went away during {cmd} "
                                f"({type(e).__name__}{': ' + _one_line(e) if str(e) else ''})",
                                valid="a running QEMU") from e

    def close(self) -> None:
        if self._loop is not None:
            if self._client is not None:
                try:
                    self._loop.run_until_complete(
                        asyncio.wait_for(self._client.disconnect(), self.timeout))
                except Exception:
                    pass
            self._client = None
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            except Exception:
                pass
            self._loop.close()
            self._loop = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --- recorded transcripts -------------------------------------------------------------

class ReplayMonitor(Monitor):
    """Answers from a recorded transcript (fixtures/qmp/*.json)."""

    def __init__(self, transcript: list[dict], source: str = "transcript"):
        super().__init__()
        self.source = source
        self._answers = {}
        for ex in transcript:
            self._answers[_key(ex["execute"], ex.get("arguments"))] = ex

    @classmethod
    def load(cls, path) -> "ReplayMonitor":
        with open(path) as f:
            doc = json.load(f)
        return cls(doc["exchanges"], source=str(path))

    def _execute(self, cmd, args):
        ex = self._answers.get(_key(cmd, args))
        if ex is None:
            raise QemuGoneError(f"{self.source}: no recorded answer to {cmd} "
                                f"{json.dumps(args or {})}")
        if "error" in ex:
            err = ex["error"]
            raise QmpCommandError(f"{self.source}: {cmd} {json.dumps(args or {})} failed: "
                                  f"{err.get('class')}: {err.get('desc')}", command=cmd,
                                  error_class=err.get("class"), desc=err.get("desc"))
        return ex["return"]


# --- HMP on stdio (pexpect) ---------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "(qemu) "


class HmpMonitor(Monitor):
    """QEMU's human monitor on stdio (``-monitor stdio``), driven with pexpect.

    Answers the QMP commands introspection uses by their HMP equivalents
    (``info version``, ``qom-list``, ``qom-get`` -- which prints JSON --,
    ``info ramblock``, ``info mtree -f``, ``gpa2hva``); others are
    CommandNotFound, as QMP would say."""

    def __init__(self, child, timeout: float = DEFAULT_TIMEOUT, source: str = "HMP on stdio"):
        super().__init__()
        self.child = child
        self.timeout = timeout
        self.source = source
        self.pid = child.pid
        self._wait_prompt("the HMP banner")

    def _wait_prompt(self, what: str) -> str:
        import pexpect
        try:
            self.child.expect_exact(PROMPT, timeout=self.timeout)
        except pexpect.TIMEOUT:
            raise QemuGoneError(f"{self.source}: no '(qemu)' prompt after {what} within "
                                f"{self.timeout:g}s") from None
        except pexpect.EOF:
            tail = _ANSI.sub("", self.child.before or "").strip().splitlines()
            raise QemuGoneError(f"{self.source}: QEMU exited during {what}"
                                + (f": {tail[-1]}" if tail else "")) from None
        return self.child.before

    def command(self, line: str) -> str:
        self.child.sendline(line)
        out = self._wait_prompt(line)
        out = _ANSI.sub("", out).replace("\r\n", "\n").replace("\r", "")
        # QEMU's readline echoes the command line first.
        first, _, rest = out.partition("\n")
        return rest

    def _execute(self, cmd, args):
        args = args or {}

        def hmp_checked(line):
            out = self.command(line)
            if out.startswith("Error: ") or out.startswith("unknown command"):
                raise QmpCommandError(f"{self.source}: {line} failed: {out.strip()}",
                                      command=cmd, error_class="GenericError",
                                      desc=out.strip().removeprefix("Error: "))
            return out

        if cmd == "human-monitor-command":
            return self.command(args["command-line"])
        if cmd == "query-version":
            return parse_hmp_version(hmp_checked("info version"))
        if cmd == "qom-list":
            return parse_hmp_qom_list(hmp_checked(f"qom-list {args['path']}"))
        if cmd == "qom-get":
            out = hmp_checked(f"qom-get {args['path']} {args['property']}")
            try:
                return json.loads(out)
            except ValueError:
                raise QemuError(f"{self.source}: qom-get {args['path']} {args['property']}: "
                                f"not JSON: {out.strip()!r}") from None
        raise QmpCommandError(f"{self.source}: {cmd} has no HMP equivalent here", command=cmd,
                              error_class="CommandNotFound", desc=f"{cmd} over HMP")

    def close(self) -> None:
        import pexpect
        if self.child.isalive():
            try:
                self.child.sendline("quit")
                self.child.expect(pexpect.EOF, timeout=min(self.timeout, 5))
            except Exception:
                pass
        deadline = time.monotonic() + self.timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.child.terminate(force=True)
        self.child.close(force=True)
