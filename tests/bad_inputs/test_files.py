"""Scenario files that cannot be read or are not TOML: unreadable, not a
regular file, not UTF-8, huge, deeply nested, binary; each error names the file
(and the line where there is one)."""

from __future__ import annotations

import re

import pytest

from tests.bad_inputs.conftest import assert_error
from vmm_model.scenario import MAX_SCENARIO_BYTES

# name -> (bytes, what the error says, line or None)
CONTENT = {
    "latin1": (b'title = "caf\xe9"\n', "not UTF-8: byte 0xe9 at offset 12", 1),
    "utf16": ("title = 'x'\n".encode("utf-16"), "not UTF-8: byte 0xff at offset 0", 1),
    "bad-byte-line-3": (b'title = "x"\n\n[memory]\xff\n', "not UTF-8", 3),
    "binary": (bytes(range(256)), "not UTF-8: byte 0x80 at offset 128", 2),
    "bom": ('\ufefftitle = "x"\n'.encode(), "malformed TOML", 1),
    "deep-array": (("a = " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply", None),
    "deep-table": (("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n").encode(),
                   "nested too deeply", None),
    "huge": (b"# " + b"x" * MAX_SCENARIO_BYTES + b"\n", "larger than 16 MiB", None),
    "unclosed-string": (b'title = "x\n', "malformed TOML", 1),
    "unclosed-table": (b"[memory\nsize = 1\n", "malformed TOML", 1),
    "array-of-tables-clash": (b"[machine]\n[[machine]]\n", "malformed TOML", 2),
    "top-level-garbage": (b"hello world\n", "malformed TOML", 1),
    "unknown-top-key": (b"memroy = 1\n", "unknown top-level key 'memroy'", 1),
    "machine-not-table": (b"machine = 5\n", "[machine] must be a table", 1),
    "object-not-array": (b"object = 5\n", "object must be an array of tables", 1),
    "device-array-of-ints": (b"device = [1, 2]\n", "device must be an array of tables", 1),
    "crlf-bad-size": (b'[memory]\r\nsize = "4Z"\r\n', "bad value '4Z'", 2),
    "size-typo-T": (b'[memory]\nsize = "4000T"\n', "does not fit in the host's 128 TiB", None),
    "size-beyond-phys": (b'[memory]\nsize = "5P"\n', "phys-bits too low (52)", None),
}


@pytest.mark.parametrize("name", list(CONTENT))
def test_bad_file_content(vfio_emu, tmp_path, name):
    data, says, line = CONTENT[name]
    path = tmp_path / f"{name}.toml"
    path.write_bytes(data)
    assert_error(vfio_emu("plan", path, "--kernel", "none"),
                 f"{path}:{line}" if line else str(path), says)


@pytest.mark.parametrize("path,says", [
    ("/nonexistent/x.toml", "No such file or directory"),
    ("/proc/sys/vm/compact_memory", "Permission denied"),     # mode 0200: EACCES even for root
    ("/dev/zero", "not a regular file"),
    ("/dev/null", "not a regular file"),
    ("/", "Is a directory"),
])
def test_unreadable(vfio_emu, path, says):
    assert_error(vfio_emu("plan", path), path, says)


def test_directory_named_toml(vfio_emu, tmp_path):
    d = tmp_path / "dir.toml"
    d.mkdir()
    assert_error(vfio_emu("plan", d), str(d), "Is a directory")


def test_empty_file_is_the_default_vm(vfio_emu, tmp_path):
    path = tmp_path / "empty.toml"
    path.write_bytes(b"")
    r = vfio_emu("plan", path, "--kernel", "none", "--no-compare", "--backend", "iommufd")
    assert r.rc == 0 and r.err == ""
    assert re.search(r"\[0x100000, 0x8000000\)\s+pc\.ram", r.out)   # -m default: 128 MiB
