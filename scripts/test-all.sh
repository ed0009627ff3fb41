#!/bin/sh
# Install everything the tests need on a Debian machine and run them all.
# This is the README's test command; .ci/run calls it.
#   - Debian packages: python3-venv, gcc (UAPI header probe), QEMU 7.2 (bookworm),
#     QEMU 10.0 (bookworm-backports, private prefix) and QEMU 11.1 (trixie-backports
#     in a debootstrapped trixie userland, /opt/qemu-11.1: ~2 min cold, 350 MB) for
#     the live-QEMU tests,
#     and the kernel rig's build and boot packages (scripts/rig-deps.sh)
#   - a virtualenv in .venv with the package and its test extras
# Then two pytest runs: everything but the rig on 2 workers, then the rig
# (-m rig: real kernels booted under QEMU (TCG, one vCPU each), two guests at a
# time on 2 workers, after `vfio-emu rig build --all` has built or fetched
# the kernels into ~/.cache/vfio-emu/rig).
#   VFIO_EMU_RIG=0 sh scripts/test-all.sh     skips the rig run
# Extra arguments go to both pytest runs.
set -eu
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq python3-venv gcc qemu-system-x86 debian-archive-keyring \
    util-linux libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu ovmf >/dev/null
$SUDO sh scripts/libvirt-prefix.sh    # libvirt 11.3 next to 9.0, for tests/test_libvirt.py
if [ -f scripts/install-qemu.sh ]; then $SUDO sh scripts/install-qemu.sh 10.0 11.1; fi
RIG=${VFIO_EMU_RIG:-1}
if [ "$RIG" != 0 ]; then sh scripts/rig-deps.sh; fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
fail=0
run() {
    rc=0
    .venv/bin/python -m pytest "$@" || rc=$?
    [ "$rc" = 5 ] && { echo "no tests were collected: pytest $*" >&2; rc=1; }
    [ "$rc" = 0 ] || fail=1
}
run -n 2 -q -m "not rig" "$@"
if [ "$RIG" != 0 ]; then
    # Build or fetch every kernel first, with both cores (cached ones cost seconds),
    # so that neither rig worker waits on another's build lock.
    .venv/bin/vfio-emu rig build --all || fail=1
    # A guest that cannot boot here is a failure, not a skip.
    VFIO_EMU_RIG_REQUIRED=1 run -n 2 -q -m rig -rs --durations=0 "$@"
fi
exit "$fail"
