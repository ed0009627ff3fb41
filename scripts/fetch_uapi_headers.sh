#!/bin/sh
# Fetch the kernel's UAPI headers from Debian's linux-libc-dev, with a private
# apt state that never touches the system's sources (as backends/rig/apt.py does).
#
#   scripts/fetch_uapi_headers.sh [SUITE]        (SUITE defaults to sid)
#
# Result: <cache>/<version>/usr/include/linux/{vfio,iommufd}.h, where <cache> is
# $VFIO_EMU_UAPI_CACHE or ~/.cache/vfio-emu/uapi.  A version already extracted
# is reused ($VFIO_EMU_UAPI_MIRROR overrides http://deb.debian.org/debian).  If the mirror cannot be reached, the newest cached version is used.
# The last line of stdout is:  <package version><TAB><include dir>
# Needs: apt-get, apt-cache, dpkg-deb, debian-archive-keyring (all on Debian).
set -eu

suite=${1:-sid}
pkg=linux-libc-dev
cache=${VFIO_EMU_UAPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-emu/uapi}
apt=$cache/apt-$suite
mkdir -p "$apt/lists/partial" "$apt/etc" "$apt/archives/partial"
# one fetch at a time (pytest-xdist workers, parallel CI jobs sharing the cache)
if command -v flock >/dev/null 2>&1; then exec 9>"$cache/.lock"; flock 9; fi
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${VFIO_EMU_UAPI_MIRROR:-http://deb.debian.org/debian} $suite main" \
    > "$apt/etc/sources.list"
# Dir::Cache is private too, so the system's pkgcache.bin is neither read nor written.
set -- -oDir::State::Lists="$apt/lists" -oDir::Etc::SourceList="$apt/etc/sources.list" \
       -oDir::Etc::SourceParts=/nonexistent -oDir::Cache="$apt" -oDir::State::status=/dev/null \
       -oAPT::Architecture=amd64 -oAPT::Architectures::=amd64 -oDebug::NoLocking=1 -oAPT::Sandbox::User=root

newest_cached() {
    ls -1 "$cache" 2>/dev/null | grep -v '^apt-' | while read -r v; do
        [ -f "$cache/$v/usr/include/linux/vfio.h" ] && echo "$v"
    done | sort -V | tail -n 1
}

# Refresh the lists at most once a day.
stamp=$apt/lists/.updated
[ "$(cat "$apt/etc/sources.list")" = "$(cat "$apt/etc/sources.list.last" 2>/dev/null)" ] || rm -f "$stamp"
cp "$apt/etc/sources.list" "$apt/etc/sources.list.last"
if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
    if apt-get "$@" -qq update >&2; then touch "$stamp"; else echo "apt-get update failed" >&2; fi
fi

ver=$(apt-cache "$@" policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    ver=$(newest_cached)
    [ -n "$ver" ] || { echo "no $pkg from $suite and nothing cached in $cache" >&2; exit 1; }
    echo "mirror unreachable; using cached $pkg $ver" >&2
fi

dest=$cache/$ver
if [ ! -f "$dest/usr/include/linux/vfio.h" ]; then
    tmp=$(mktemp -d "$cache/.dl.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get "$@" -qq download "$pkg=$ver" >&2)
    mkdir -p "$tmp/x"
    dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
    rm -rf "$dest" && mv "$tmp/x" "$dest"
fi
printf '%s\t%s\n' "$ver" "$dest/usr/include"
