#!/bin/sh
# Install Debian's QEMU 10.0 (bookworm-backports) into a private prefix next to
# the system's QEMU 7.2 (bookworm), so tests can launch both real binaries.
#
#   sudo sh scripts/install-qemu.sh [PREFIX]        (default /opt/qemu-10.0)
#
# Afterwards:  PREFIX/usr/bin/qemu-system-x86_64 (a wrapper that sets
# LD_LIBRARY_PATH to the extracted libraries and -L to the extracted firmware).
# Tests find it through VFIO_EMU_QEMU_10_0 (default /opt/qemu-10.0/bin/qemu-system-x86_64).
# Idempotent: does nothing when the wrapper already runs.
set -eu
PREFIX=${1:-/opt/qemu-10.0}
WRAPPER="$PREFIX/bin/qemu-system-x86_64"
if [ -x "$WRAPPER" ] && "$WRAPPER" --version >/dev/null 2>&1; then
    "$WRAPPER" --version | head -1
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# QEMU 7.2 from bookworm itself (the system binary).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends qemu-system-x86
fi
LIST=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$LIST"
fi
apt-get update -q
WORK=$(mktemp -d)
chmod 755 "$WORK"   # apt-get download runs as _apt
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# The three QEMU packages from backports.  Checked on bookworm (2025-05
# snapshot): the 10.0.2 binary needs no library beyond bookworm's (the ldd check
# below fails loudly if that changes; QEMU_EXTRA_DEBS="pkg ..." adds more .debs).
apt-get download -q qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
    qemu-system-data/bookworm-backports
for extra in ${QEMU_EXTRA_DEBS:-}; do apt-get download -q "$extra"; done
mkdir -p "$PREFIX/root"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$PREFIX/root"; done
BIN="$PREFIX/root/usr/bin/qemu-system-x86_64"
LIBS="$PREFIX/root/usr/lib/x86_64-linux-gnu"
mkdir -p "$PREFIX/bin"
cat > "$WRAPPER" <<W
#!/bin/sh
# modules of this QEMU, not the system 7.2's (/usr/lib/x86_64-linux-gnu/qemu)
export QEMU_MODULE_DIR="$LIBS/qemu"
LD_LIBRARY_PATH="$LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$BIN" -L "$PREFIX/root/usr/share/qemu" -L "$PREFIX/root/usr/share/seabios" "\$@"
W
chmod +x "$WRAPPER"
if LD_LIBRARY_PATH="$LIBS" ldd "$BIN" | grep -q 'not found'; then
    echo "install-qemu.sh: libraries missing for $BIN:" >&2
    LD_LIBRARY_PATH="$LIBS" ldd "$BIN" | grep 'not found' >&2
    exit 1
fi
"$WRAPPER" --version | head -1
