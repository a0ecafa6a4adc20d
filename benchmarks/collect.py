"""Benchmark: start-up, and `auditor volumes/pools` against `virsh vol-list --details`.

Start-up: `auditor --help` and `auditor pools` on an empty test-driver host (no daemon).
Collection: builds a dir pool of N volumes (half sparse raw, half qcow2), lets the files
settle, then runs `virsh vol-list --details` and `auditor volumes --format csv` in turn
(medians of --repeat runs each), after one first run of auditor with nothing kept in its
state folder yet (a temporary one, as `--state`). Prints medians, ratios to virsh, auditor's
peak RSS and the targets. Children run with bytecode caching on, as an installed auditor
does. Needs root and a running libvirtd (`scripts/testbed.sh`).

    .venv/bin/python benchmarks/collect.py --volumes 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
EMPTY_HOST = "<node>\n</node>\n"  # a test-driver host with nothing on it
SETTLE = 2.5  # seconds: auditor asks libvirt about files changed just before its refresh
Run = tuple[float, int]  # wall seconds, peak RSS in bytes


def timed(argv: list[str], env: dict[str, str]) -> Run:
    """Wall seconds and peak RSS (bytes) of one run; output discarded, failure is fatal
    (auditor's exit 1, items that vanished while read - other pools coming and going on a
    shared libvirtd - is not a failure)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"benchmark: {' '.join(argv)} failed: {stderr.strip()}")
    return elapsed, usage.ru_maxrss * 1024


def median(runs: list[Run]) -> Run:
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def interleaved(commands: dict[str, list[str]], repeat: int, env: dict[str, str]) -> dict[str, Run]:
    """Each command ``repeat`` times, taking turns (load drifts hit all alike): medians."""
    runs: dict[str, list[Run]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, argv in commands.items():
            runs[label].append(timed(argv, env))
    return {label: median(r) for label, r in runs.items()}


def child_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"AUDITOR_STATE": str(state)}


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


@contextmanager
def bench_pool(virsh: list[str], n: int) -> Iterator[str]:
    """A transient dir pool of ``n`` settled volumes under /var/tmp, removed afterwards."""
    name = f"auditor-bench-{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix=name, dir="/var/tmp"))
    try:
        t0 = time.perf_counter()
        populate(folder, n)
        subprocess.run([*virsh, "pool-create-as", name, "dir", "--target", str(folder)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"pool {name}: {n} volumes built in {time.perf_counter() - t0:.1f} s")
        time.sleep(SETTLE)
        yield name
    finally:
        subprocess.run([*virsh, "pool-destroy", name], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def startup(repeat: int, env: dict[str, str], work: Path) -> dict[str, Run]:
    host = work / "empty-host.xml"
    host.write_text(EMPTY_HOST)
    auditor = str(VENV_BIN / "auditor")
    timed([auditor, "--help"], env)  # the first run writes the bytecode caches
    return interleaved({
        "auditor --help": [auditor, "--help"],
        "auditor pools (empty test host)": [auditor, "-c", f"test://{host}", "pools"],
    }, repeat, env)  # fmt: skip


def collection(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Run]:
    virsh = ["virsh", "-q", "-c", args.uri]
    auditor = [str(VENV_BIN / "auditor"), "-c", args.uri]
    with bench_pool(virsh, args.volumes) as name:
        volumes = [*auditor, "volumes", "--format", "csv"]
        results = {"auditor volumes, first run": timed(volumes, env)}
        results |= interleaved({
            "virsh vol-list --details": [*virsh, "vol-list", "--details", name],
            "auditor volumes --format csv": volumes,
            "auditor pools": [*auditor, "pools"],
        }, args.repeat, env)  # fmt: skip
        if not args.skip_qemu_img:
            loop = 'for f in "$1"/*; do qemu-img info --output=json -U "$f" >/dev/null; done'
            folder = subprocess.run([*virsh, "pool-dumpxml", name], capture_output=True,
                                    text=True, check=True).stdout  # fmt: skip
            path = folder.split("<path>")[1].split("</path>")[0]
            results["qemu-img info loop"] = timed(["bash", "-c", loop, "loop", path], env)
    return results


def show(start: dict[str, Run], results: dict[str, Run], n: int) -> None:
    base = results["virsh vol-list --details"][0]
    print(f"\n{'command':34} {'median s':>9} {'vs virsh':>9} {'peak RSS':>10}")
    for label, (secs, rss) in {**start, **results}.items():
        ratio = f"{secs / base:8.2f}x" if label in results else ""
        print(f"{label:34} {secs:9.3f} {ratio:>9} {rss / 1e6:8.0f} MB")
    vol, peak = (
        results["auditor volumes --format csv"][0],
        results["auditor volumes --format csv"][1],
    )
    target = 0.8 if n <= 2000 else 0.5
    print(f"\nauditor --help: {start['auditor --help'][0]:.3f} s (target <= 0.15)")
    print(f"auditor pools, empty host: {start['auditor pools (empty test host)'][0]:.3f} s "
          "(target <= 0.25)")  # fmt: skip
    print(f"auditor volumes / virsh vol-list --details at {n}: {vol / base:.2f} "
          f"(target <= {target} at {'2,000' if n <= 2000 else '10,000'})")  # fmt: skip
    print(f"auditor volumes peak RSS: {peak / 1e6:.0f} MB (target <= 150 at 10,000)")
    if "qemu-img info loop" in results:
        q = results["qemu-img info loop"][0]
        print(f"qemu-img loop / auditor volumes: {q / vol:.1f} (target >= 10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=2000)
    ap.add_argument("--uri", default="qemu:///system")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-qemu-img", action="store_true", help="skip the slow qemu-img loop")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditor-bench-state-") as work:
        env = child_env(Path(work) / "state")
        start = startup(args.repeat, env, Path(work))
        results = collection(args, env)
    show(start, results, args.volumes)


if __name__ == "__main__":
    main()
