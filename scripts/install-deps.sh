#!/bin/sh
# Installs the Debian 12 packages blockd needs to build, test, fuzz and
# benchmark (clang-14 with libFuzzer and the sanitizer runtimes: make fuzz,
# make tsan), systemd (systemd-analyze, for the install test), and Ceph for
# the rbd driver: librbd-dev to build it, a monitor and an OSD for the
# tests' single-node cluster (tests/integration/ceph_lib.py), the rbd CLI
# and python bindings, qemu-block-extra (QEMU's rbd driver, the oracle),
# zlib1g-dev (qcow2's compressed writes) and qemu-system-x86 (the
# snapshot jobs' oracle).
# Runs apt-get only when something is missing (always refreshes lists under CI).
set -eu
PACKAGES="gcc libc6-dev make meson ninja-build pkg-config python3
libglib2.0-dev libjson-glib-dev zlib1g-dev libgnutls28-dev libnbd-dev nbdkit-plugin-dev
nbdkit libnbd-bin python3-libnbd qemu-utils qemu-system-common fio gnutls-bin
clang-14 libclang-rt-14-dev systemd
librbd-dev ceph-mon ceph-osd ceph-common python3-rbd python3-rados uuid-runtime
qemu-block-extra qemu-system-x86"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ] && [ "${CI:-}" != "true" ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $PACKAGES
