"""Debian packages through a private apt state (docs/kernel-model.md, "The kernel rig").

Same approach as scripts/fetch_uapi_headers.sh: lists, cache and sources.list
live under the rig's cache directory, so the system's apt configuration is
neither read nor written.  ``$VFIO_EMU_RIG_MIRROR`` overrides the mirror.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from backends.errors import HostError

MIRROR = os.environ.get("VFIO_EMU_RIG_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE = 24 * 3600


class Apt:
    """apt-get/apt-cache for one suite (``sid``, ``bookworm``, ``bookworm-backports``)."""

    def __init__(self, root: Path, suite: str):
        self.suite = suite
        self.dir = root / f"apt-{suite}"
        self.sources = self.dir / "etc" / "sources.list"
        self.opts = [f"-oDir::State::Lists={self.dir}/lists",
                     f"-oDir::Etc::SourceList={self.sources}",
                     "-oDir::Etc::SourceParts=/nonexistent", f"-oDir::Cache={self.dir}",
                     "-oDir::State::status=/dev/null", "-oAPT::Architecture=amd64",
                     "-oAPT::Architectures::=amd64", "-oDebug::NoLocking=1",
                     "-oAPT::Sandbox::User=root"]

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self.opts, *args]
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if r.returncode:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HostError(f"{' '.join([tool, *args])} failed: {tail[0]}",
                            where=f"apt ({self.suite})")
        return r.stdout

    def update(self) -> bool:
        """Refresh the lists at most once a day; False when the mirror can't be reached."""
        (self.dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.dir / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources.parent.mkdir(parents=True, exist_ok=True)
        line = f"deb [signed-by={KEYRING}] {MIRROR} {self.suite} main\n"
        stamp = self.dir / "lists" / ".updated"
        if not self.sources.exists() or self.sources.read_text() != line:
            self.sources.write_text(line)
            stamp.unlink(missing_ok=True)
        if stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return True
        try:
            self._run("apt-get", "-qq", "update")
        except HostError:
            return False
        stamp.touch()
        return True

    def candidate(self, pkg: str) -> str | None:
        """The version apt would install, or None."""
        try:
            out = self._run("apt-cache", "policy", pkg)
        except HostError:
            return None
        for line in out.splitlines():
            if line.strip().startswith("Candidate:"):
                v = line.split(":", 1)[1].strip()
                return None if v == "(none)" else v
        return None

    def depends(self, pkg: str) -> list[str]:
        """Direct ``Depends:`` of ``pkg``'s candidate (``apt-cache depends``)."""
        out = self._run("apt-cache", "depends", "--no-recommends", "--no-suggests", pkg)
        return [ln.split(":", 1)[1].strip().strip("<>") for ln in out.splitlines()
                if ln.strip().startswith("Depends:")]

    def download(self, pkg: str, version: str, dest: Path) -> Path:
        """``apt-get download pkg=version`` into ``dest``; the .deb's path."""
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "-qq", "download", f"{pkg}={version}", cwd=dest)
        debs = sorted(dest.glob(f"{pkg}_*.deb"))
        if not debs:
            raise HostError(f"apt-get download {pkg}={version} left no .deb", where=str(dest))
        return debs[-1]
