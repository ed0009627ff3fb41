#!/bin/sh
# Install the real QEMU binaries the tests launch next to the system's QEMU 7.2
# (bookworm):
#
#   sudo sh scripts/install-qemu.sh [10.0] [11.1]        (default: both)
#
#  10.0  Debian's qemu-system-x86 from bookworm-backports, unpacked into
#        /opt/qemu-10.0/root (its libraries are bookworm's, so LD_LIBRARY_PATH
#        is enough).  Wrapper: /opt/qemu-10.0/bin/qemu-system-x86_64.
#  11.1  Debian's qemu-system-x86 from trixie-backports, installed with apt into
#        a debootstrapped trixie userland /opt/qemu-11.1/root (it needs trixie's
#        glibc and libraries, which bookworm cannot provide).
#        Wrapper: /opt/qemu-11.1/bin/qemu-system-x86_64.
#
# The 11.1 wrapper runs the binary WITHOUT chroot, through trixie's own dynamic
# loader:  ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path
# <ROOT's library dirs> ROOT/usr/bin/qemu-system-x86_64 -L <ROOT's firmware>.
# Why not chroot: a chrooted QEMU would see ROOT as "/", so the paths every
# caller passes (memory-backend files, QMP/unix sockets in the caller's temp
# dir, vfio-emu's LD_PRELOAD shim and its socket, /proc and /sys lookups) would
# have to be bind-mounted into ROOT, chroot needs root, and the kernel-rig guest
# (which itself chroots into the host root over 9p) could not nest it.  Through
# the loader QEMU lives in the caller's file system like the other two binaries
# and only its code (binary, libraries, modules via QEMU_MODULE_DIR, firmware
# via -L) comes from ROOT.  Every library and firmware file is checked to
# resolve inside ROOT (the host's ld.so.cache lists bookworm's libraries, and
# Debian's firmware links are absolute, so both could silently reach the host).
#
# Idempotent and cached: a version whose wrapper already runs is skipped; the
# trixie userland is reused when its debootstrap finished.
# Tests find the binaries through VFIO_EMU_QEMU_10_0 / VFIO_EMU_QEMU_11_1.
set -eu
export DEBIAN_FRONTEND=noninteractive
MIRROR=http://deb.debian.org/debian

have() {  # have WRAPPER: the wrapper runs and prints its version
    [ -x "$1" ] && "$1" --version >/dev/null 2>&1 && "$1" --version | head -1
}

install_10_0() {
    PREFIX=/opt/qemu-10.0
    WRAPPER="$PREFIX/bin/qemu-system-x86_64"
    have "$WRAPPER" && return 0
    LIST=/etc/apt/sources.list.d/bookworm-backports.list
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb $MIRROR bookworm-backports main" > "$LIST"
    fi
    apt-get update -q
    WORK=$(mktemp -d)
    chmod 755 "$WORK"   # apt-get download runs as _apt
    # The three QEMU packages from backports.  Checked on bookworm (2025-05
    # snapshot): the 10.0.2 binary needs no library beyond bookworm's (the ldd
    # check below fails loudly if that changes; QEMU_EXTRA_DEBS adds .debs).
    (cd "$WORK" && apt-get download -q qemu-system-x86/bookworm-backports \
        qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports &&
     for extra in ${QEMU_EXTRA_DEBS:-}; do apt-get download -q "$extra"; done)
    mkdir -p "$PREFIX/root"
    for deb in "$WORK"/*.deb; do dpkg-deb -x "$deb" "$PREFIX/root"; done
    rm -rf "$WORK"
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
    have "$WRAPPER"
}

install_11_1() {
    PREFIX=/opt/qemu-11.1
    ROOT="$PREFIX/root"
    WRAPPER="$PREFIX/bin/qemu-system-x86_64"
    have "$WRAPPER" && return 0
    command -v debootstrap >/dev/null 2>&1 || {
        apt-get update -q; apt-get install -y -q --no-install-recommends debootstrap; }
    if [ ! -f "$ROOT/.debootstrap-done" ]; then
        rm -rf "$ROOT"
        debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
        touch "$ROOT/.debootstrap-done"
    fi
    echo "deb $MIRROR trixie-backports main" > "$ROOT/etc/apt/sources.list.d/trixie-backports.list"
    chroot "$ROOT" apt-get update -q
    chroot "$ROOT" apt-get install -y -q -t trixie-backports --no-install-recommends qemu-system-x86
    chroot "$ROOT" apt-get clean
    LIBDIRS="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu"
    LDSO="$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    BIN="$ROOT/usr/bin/qemu-system-x86_64"
    # Debian's firmware links are absolute (/usr/share/seabios/...): outside the
    # chroot they would resolve to the host's bookworm files.  Make them relative.
    find "$ROOT/usr/share/qemu" "$ROOT/usr/share/seabios" -type l | while read -r link; do
        target=$(readlink "$link")
        case "$target" in /*) ln -sfnr "$ROOT$target" "$link" ;; esac
    done
    mkdir -p "$PREFIX/bin"
    cat > "$WRAPPER" <<W
#!/bin/sh
# QEMU from trixie-backports run through trixie's loader, without chroot
# (scripts/install-qemu.sh says why); modules and firmware from the same root.
export QEMU_MODULE_DIR="$ROOT/usr/lib/x86_64-linux-gnu/qemu"
exec "$LDSO" --library-path "$LIBDIRS" --argv0 "\$0" "$BIN" -L "$ROOT/usr/share/qemu" -L "$ROOT/usr/share/seabios" "\$@"
W
    chmod +x "$WRAPPER"
    # Every library of the binary and of its modules from ROOT, none from the host.
    bad=0
    for obj in "$BIN" "$ROOT"/usr/lib/x86_64-linux-gnu/qemu/*.so; do
        out=$(LD_TRACE_LOADED_OBJECTS=1 "$LDSO" --library-path "$LIBDIRS" "$obj" 2>&1 |
              grep '=>' | grep -v "=> $ROOT/" | grep -v 'linux-vdso' || true)
        [ -z "$out" ] || { echo "install-qemu.sh: $obj resolves outside $ROOT:" >&2
                           echo "$out" >&2; bad=1; }
    done
    for link in $(find "$ROOT/usr/share/qemu" "$ROOT/usr/share/seabios" -type l); do
        real=$(readlink -f "$link")
        case "$real" in "$ROOT"/*) ;; *) echo "install-qemu.sh: $link -> $real (outside $ROOT)" >&2; bad=1 ;; esac
    done
    [ "$bad" = 0 ] || exit 1
    have "$WRAPPER"
}

# QEMU 7.2 from bookworm itself (the system binary).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends qemu-system-x86
fi
for v in ${*:-10.0 11.1}; do
    case "$v" in
        10.0) install_10_0 ;;
        11.1) install_11_1 ;;
        *) echo "install-qemu.sh: unknown QEMU version $v (valid: 10.0, 11.1)" >&2; exit 2 ;;
    esac
done
