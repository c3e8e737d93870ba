#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, when they are missing:
#   docker.io (the Docker engine), debootstrap (to build a base image without a registry),
#   docker-registry (a local registry on 127.0.0.1 for the `dsdt dockerize --push` tests) and
#   chromium (a real browser that renders the luigid visualiser in the scheduler tests).
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-system-packages: run as root or install: ${need[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
