#!/usr/bin/env bash
# Install what auditor needs on Debian 12, idempotently: apt packages, then a .venv.
#   scripts/setup.sh          runtime (libvirt client, qemu-img, build deps) + .venv
#   scripts/setup.sh --test   also the test bed: libvirtd, QEMU, ext4 tools, Chromium,
#                             PostgreSQL (a throwaway server: scripts/postgres.sh), promtool
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-clients qemu-utils util-linux)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 e2fsprogs mount
         chromium chromium-driver postgresql prometheus)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 2; }
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own Python, so the venv works on a plain bookworm machine.
PY=${PYTHON:-/usr/bin/python3}
stamp=.venv/.installed
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
