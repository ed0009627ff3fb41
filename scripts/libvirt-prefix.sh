#!/bin/sh
# Unpack Debian's libvirt VERSION (default 11.3.0-2~bpo12+1, bookworm-backports)
# under /var/cache/vfio-emu/libvirt-MAJOR.MINOR (readable by the test daemon, which
# runs as nobody) for tests/test_libvirt.py, next to the installed libvirt (9.0 on
# bookworm) without installing it: apt-get download + dpkg-deb -x.
# Its libraries come from bookworm; tests/libvirt_real.py runs it in a private mount
# namespace.
set -eu
V=${1:-11.3.0-2~bpo12+1}
MM=$(echo "$V" | cut -d. -f1-2)
DEST=${VFIO_EMU_LIBVIRT_DIR:-/var/cache/vfio-emu}/libvirt-$MM
[ -x "$DEST/usr/sbin/libvirtd" ] && exit 0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
for p in libvirt0 libvirt-common libvirt-clients libvirt-daemon libvirt-daemon-common \
         libvirt-daemon-driver-qemu libvirt-daemon-log libvirt-daemon-lock; do
    apt-get download -qq "$p=$V" 2>/dev/null
done
mkdir -p "$DEST.tmp"
for d in *.deb; do dpkg-deb -x "$d" "$DEST.tmp"; done
mv "$DEST.tmp" "$DEST"
