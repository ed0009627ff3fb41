#!/bin/sh
# Install everything the tests need on a Debian machine and run them all.
# This is the README's test command; .ci/run calls it.
#   - Debian packages: python3-venv, gcc (UAPI header probe), QEMU 7.2 (bookworm)
#     and QEMU 10.0 (bookworm-backports, private prefix) for the live-QEMU tests
#   - a virtualenv in .venv with the package and its test extras
set -eu
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq python3-venv gcc qemu-system-x86 debian-archive-keyring \
    util-linux >/dev/null
if [ -f scripts/install-qemu.sh ]; then $SUDO sh scripts/install-qemu.sh; fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
rc=0
# The real-kernel rig (-m rig, backends/rig) is not part of the default run yet.
.venv/bin/python -m pytest -n 2 -q -m "${VFIO_EMU_TEST_MARK:-not rig}" "$@" || rc=$?
[ "$rc" = 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$rc"
