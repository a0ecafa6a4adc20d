"""Benchmark: `auditor volumes/pools` against `virsh vol-list --details` and a qemu-img loop.

Builds a dir pool with N volumes (half sparse raw, half qcow2), then times each command
(best of --repeat runs) and prints the ratios and auditor's peak RSS. Needs root and a running
libvirtd (`scripts/testbed.sh`). Targets at 10,000 volumes: `auditor volumes` within 2x of
`virsh vol-list --details`, >= 10x faster than the qemu-img loop, under 300 MB peak RSS.

    .venv/bin/python benchmarks/collect.py --volumes 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one run; output discarded, failure is fatal."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark: {argv[0]} failed: {stderr.strip()}")
    return elapsed, usage.ru_maxrss * 1024


def best(argv: list[str], repeat: int) -> tuple[float, int]:
    runs = [timed(argv) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def populate(folder: Path, n: int) -> None:
    """N images: half sparse raw, half copies of a small qcow2 (qemu-img runs once)."""
    template = folder / ".template.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), "10G"], check=True)
    for i in range(n):
        if i % 2:
            shutil.copyfile(template, folder / f"vm{i:05d}.qcow2")
        else:
            with open(folder / f"vm{i:05d}.raw", "wb") as fh:
                fh.truncate(10 << 30)
    template.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=2000)
    ap.add_argument("--uri", default="qemu:///system")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-qemu-img", action="store_true", help="skip the slow qemu-img loop")
    args = ap.parse_args()

    name = f"auditor-bench-{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix=name, dir="/var/tmp"))
    virsh = ["virsh", "-q", "-c", args.uri]
    try:
        t0 = time.perf_counter()
        populate(folder, args.volumes)
        subprocess.run([*virsh, "pool-create-as", name, "dir", "--target", str(folder)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"pool {name}: {args.volumes} volumes built in {time.perf_counter() - t0:.1f} s")
        auditor = [str(VENV_BIN / "auditor"), "-c", args.uri]
        results = {
            "virsh vol-list --details": best([*virsh, "vol-list", "--details", name], args.repeat),
            "auditor volumes --format csv": best(
                [*auditor, "volumes", "--format", "csv"], args.repeat
            ),
            "auditor pools": best([*auditor, "pools"], args.repeat),
        }
        if not args.skip_qemu_img:
            loop = 'for f in "$1"/*; do qemu-img info --output=json -U "$f" >/dev/null; done'
            results["qemu-img info loop"] = timed(["bash", "-c", loop, "loop", str(folder)])
    finally:
        subprocess.run([*virsh, "pool-destroy", name], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

    base = results["virsh vol-list --details"][0]
    print(f"\n{'command':32} {'seconds':>9} {'vs virsh':>9} {'peak RSS':>10}")
    for label, (secs, rss) in results.items():
        print(f"{label:32} {secs:9.2f} {secs / base:8.2f}x {rss / 1e6:8.0f} MB")
    vol = results["auditor volumes --format csv"][0]
    print(f"\nauditor volumes / virsh vol-list --details: {vol / base:.2f} (target <= 2)")
    if "qemu-img info loop" in results:
        q = results["qemu-img info loop"][0]
        print(f"qemu-img loop / auditor volumes: {q / vol:.1f} (target >= 10)")
    peak = results["auditor volumes --format csv"][1] / 1e6
    print(f"auditor volumes peak RSS: {peak:.0f} MB (target < 300)")


if __name__ == "__main__":
    main()
