#!/usr/bin/env bash
# Build a Python 3.11 base image from Debian's package mirror, for machines that cannot pull from a
# registry (no Docker Hub). Use it with `dsdt dockerize --base-image disdat-luigi-base:bookworm ...`
# or `[dockerize] base_image` in luigi.cfg.
#
#   scripts/build-base-image.sh [IMAGE]        (default disdat-luigi-base:bookworm)
#
# Needs root (debootstrap), debootstrap and a running Docker engine. Does nothing when IMAGE exists.
set -euo pipefail
image=${1:-disdat-luigi-base:bookworm}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

# The machine's own Debian mirror (deb822 sources first, then the classic list).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /var/tmp/disdat-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $image from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$image" >/dev/null
echo "built $image"
