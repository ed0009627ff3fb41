#!/bin/sh
# Debian packages the kernel rig needs (docs/kernel-model.md, "The kernel rig"):
# a kernel build (build-essential bc bison flex libelf-dev libssl-dev patch,
# xz-utils for linux-source's .tar.xz), the iommufd selftests (libcap-dev),
# the initramfs (busybox-static; kmod's depmod, xz/zstd for Debian's module
# packages), apt's keyring for the private sid/bookworm lists, and QEMU.
#
#   sudo sh scripts/rig-deps.sh
set -eu
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
pkgs="build-essential bc bison flex libelf-dev libssl-dev patch xz-utils zstd kmod
      libcap-dev busybox-static qemu-system-x86 debian-archive-keyring"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
[ -z "$missing" ] && exit 0
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
