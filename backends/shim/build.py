"""Build the LD_PRELOAD shim (vfio_shim.c) with gcc, once per source version,
into a cache directory ($VFIO_EMU_CACHE, else $XDG_CACHE_HOME/vfio-emu, else
~/.cache/vfio-emu)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from backends.errors import HostError

SOURCE = Path(__file__).with_name("vfio_shim.c")
CFLAGS = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-U_FORTIFY_SOURCE"]


def cache_dir() -> Path:
    env = os.environ.get("VFIO_EMU_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vfio-emu"


def build_shim() -> str:
    """The path of the built shim (built now if this source was never built)."""
    return build(SOURCE)


def build(source: Path) -> str:
    """The path of LD_PRELOAD library ``source`` (a .c file) built with gcc into
    the cache, once per source version (also backends/rig/vfio_observe.c)."""
    src = source.read_bytes()
    digest = hashlib.sha256(src + " ".join(CFLAGS).encode()).hexdigest()[:16]
    out = cache_dir() / f"{source.stem}-{digest}.so"
    if out.exists():
        return str(out)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise HostError(f"cannot build {source.name}: no C compiler (gcc) found",
                        valid="apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        r = subprocess.run([gcc, *CFLAGS, "-o", tmp, str(source), "-ldl", "-lpthread"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise HostError(f"cannot build {source.name}: {gcc} failed: "
                            + " ".join(r.stderr.split())[:300], where=str(source))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(out)
