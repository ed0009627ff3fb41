#!/bin/sh
# Run examples/downstream (a VMM team's suite) against vfio-emu as users get it:
# build vfio-emu's wheel from this checkout, install it into a fresh virtual
# environment outside the checkout, copy the downstream project next to it and
# run its tests there.  Nothing is left behind (a temporary directory).
#
#   scripts/test-downstream.sh [pytest args...]
#   PYTHON=python3.11 scripts/test-downstream.sh       # the interpreter to build with
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfio-emu-downstream.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# A copy of the sources (tracked and new files, not .venv or build output), so
# the build leaves nothing in the checkout.
mkdir "$WORK/src"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --) \
    | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/vfio_emu-*.whl)
echo "test-downstream: built $(basename "$WHEEL")"

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" "pytest>=8"

cp -R "$REPO/examples/downstream" "$WORK/downstream"
cd "$WORK/downstream"
env -u PYTHONPATH "$WORK/venv/bin/python" - "$WORK/venv" <<'PYEOF'
import sys, vmm_model
from pathlib import Path
assert vmm_model.__file__.startswith(sys.argv[1]), f"vmm_model from {vmm_model.__file__}"
site = Path(vmm_model.__file__).parents[1]
assert (site / "vmm_model" / "py.typed").is_file() and (site / "backends" / "py.typed").is_file()
print(f"test-downstream: vfio-emu {vmm_model.__version__} from {vmm_model.__file__}")
PYEOF
exec env -u PYTHONPATH "$WORK/venv/bin/python" -m pytest "$@"
