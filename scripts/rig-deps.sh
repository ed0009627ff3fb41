#!/bin/sh
# Debian packages the kernel rig needs (research/kernel-rig.md §1 step 0):
# a kernel build (bison flex libelf-dev libssl-dev bc), the iommufd selftests
# (libcap-dev), the initramfs (busybox-static cpio; kmod/zstd/xz to read
# Debian's module packages) and QEMU.
#
#   sudo sh scripts/rig-deps.sh
set -eu
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
pkgs="build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils zstd kmod
      libcap-dev busybox-static qemu-system-x86 debian-archive-keyring util-linux"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
[ -z "$missing" ] && exit 0
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
