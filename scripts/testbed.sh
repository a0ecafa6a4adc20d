#!/usr/bin/env bash
# Make sure the libvirt daemons run (no systemd here: start them by hand), and let QEMU,
# running as libvirt-qemu, open /dev/kvm so libvirt keeps its capabilities cache (see
# shared facts §9: otherwise every define takes ~40 s).
set -euo pipefail
if [[ -e /dev/kvm ]] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm || true
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
if ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 1 50); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
virsh -q -c qemu:///system version >/dev/null || { echo "testbed: libvirtd did not start" >&2; exit 2; }
echo "testbed: libvirtd is running"
