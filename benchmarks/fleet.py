"""Benchmark: many hosts at once (`--hosts FILE --jobs N`), a remote host, a stalled host.

1. Fleet: --hosts test-driver hosts (XML files of 4 pools x 50 volumes, thin and
   preallocated, a few domains) plus the local libvirtd (qemu:///system) in one hosts file,
   collected by `auditor --hosts FILE --jobs J pools|volumes -f json` for J = 1, 8, 32. Twice:
   in-process (`test:///FILE`: the test driver runs inside auditor, so this is CPU-bound), and
   served by the local libvirtd through the remote driver (`test+tcp://127.0.0.1:PORT/FILE`)
   via a loopback proxy to its unix socket that holds every chunk 2 ms in each direction
   (order kept): a LAN-like 4 ms round trip, where the hosts' latencies can overlap.
2. Remote host: a dir pool of --volumes sparse 1 MiB files on the local libvirtd, collected
   through the same proxy (`qemu+tcp://127.0.0.1:PORT/system`) and directly (qemu:///system),
   with `virsh vol-list --details POOL` both ways for context.
3. Stalled host: a TCP server that accepts and never answers, in the hosts file among the
   test hosts, with `--timeout 5 --connect-timeout 3`; and a slow host (the proxy at 100 ms
   each way: it connects within the connect timeout, then outlasts the timeout). Each run
   should end within the time without them plus the timeout, with exit code 1 and the host
   a skipped item of kind "host".

Medians of --runs runs, taken in turn (load drifts hit all alike); peak RSS is the child's
(os.wait4). Until `--hosts` exists the hosts are given as repeated `--connect` (8 threads,
no --jobs, no timeouts; a stalled host is then killed after --limit seconds). Children run
with bytecode caching and a temporary state folder. Needs root and a running libvirtd
(`scripts/testbed.sh`); the pool is made through tests/testbed.py, so even a run killed
with SIGKILL leaves nothing that the next test-bed run does not remove.

    .venv/bin/python benchmarks/fleet.py            # about 10 minutes
    .venv/bin/python benchmarks/fleet.py --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SOCKET = "/var/run/libvirt/libvirt-sock"
LOCAL = "qemu:///system"
DELAY = 0.002  # seconds each way through the proxy
SLOW_DELAY = 0.1  # the slow host of part 3
STALL_JOBS = 8
SETTLE = 2.5  # seconds: auditor asks libvirt about files changed just before its refresh
JOBS = (1, 8, 32)
GiB, MiB = 1 << 30, 1 << 20
T = TypeVar("T")


# --- running a child ---------------------------------------------------------------------


# The child's peak RSS from wait4 is at least its parent's peak when it was spawned (exec
# keeps the larger of the two high-water marks, and Python spawns with vfork): so every child
# is spawned by this tiny launcher, never by the benchmark itself, whose parsed outputs grow.
LAUNCHER = """import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
os.write(fd, f"{time.perf_counter() - start} {usage.ru_maxrss} {code} {usage.ru_utime} "
         f"{usage.ru_stime}".encode())
"""


@dataclass(frozen=True)
class Run:
    secs: float
    rss: int  # peak RSS in bytes
    code: int  # exit code; -9: killed after the limit
    cpu: float  # user + system seconds
    doc: dict[str, Any]  # of the JSON output: hosts, the number of rows, skipped
    stdout: str  # unless JSON
    stderr: str


def summary(text: str) -> tuple[dict[str, Any], str]:
    """The JSON output's hosts, row counts and skipped items (and "" for the text), or {} and
    the text itself when it is not JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}, text
    if not isinstance(doc, dict):
        return {}, text
    kept = {k: len(v) for k, v in doc.items() if isinstance(v, list)}
    return kept | {"hosts": doc.get("hosts", []), "skipped": doc.get("skipped", [])}, ""


def timed(argv: list[str], env: dict[str, str], limit: float = 600.0) -> Run:
    """Wall seconds, peak RSS, exit code and output of one run (killed after ``limit`` s)."""
    read, write = os.pipe()
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(write), *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            launcher, stdout=out, stderr=err, env=env, cwd=env["AUDITOR_STATE"],
            pass_fds=(write,), start_new_session=True,
        )  # fmt: skip
        os.close(write)
        kill = threading.Timer(limit, os.killpg, (proc.pid, signal.SIGKILL))
        kill.start()
        try:
            proc.wait()
        finally:
            kill.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of a killed or Ctrl-C run
        with os.fdopen(read, "rb") as fh:
            figures = fh.read().split()
        out.seek(0)
        err.seek(0)
        doc, text = summary(out.read().decode(errors="replace"))
        stderr = err.read().decode(errors="replace")
    if len(figures) != 5 and proc.returncode == -signal.SIGKILL:  # killed at the limit
        return Run(limit, 0, -9, 0.0, doc, text, stderr)
    if len(figures) != 5:
        sys.exit(f"benchmark: cannot run {short(argv)}: {stderr.strip()[-300:]}")
    secs, rss, code, user, system = (float(f) for f in figures)
    return Run(secs, int(rss) * 1024, int(code), user + system, doc, text, stderr)


def checked(run: Run, argv: list[str], codes: tuple[int, ...] = (0, 1)) -> Run:
    """``run``, or exit naming the command when its exit code is not one of ``codes``."""
    if run.code not in codes:
        tail = run.stderr.strip().splitlines()[-3:]
        sys.exit(f"benchmark: {short(argv)} exited {run.code}: {' / '.join(tail)}")
    return run


def short(argv: list[str]) -> str:
    """The command line with a long list of --connect shortened."""
    uris = argv.count("-c")
    if uris <= 2:
        return " ".join(argv)
    kept = [a for i, a in enumerate(argv) if a != "-c" and (i == 0 or argv[i - 1] != "-c")]
    return f"{kept[0]} -c URI (x{uris}) {' '.join(kept[1:])}"


def median(runs: list[Run]) -> Run:
    """The median run by wall time, with the peak RSS of all of them."""
    mid = sorted(runs, key=lambda r: r.secs)[(len(runs) - 1) // 2]
    secs, cpu = statistics.median(r.secs for r in runs), statistics.median(r.cpu for r in runs)
    return replace(mid, secs=secs, cpu=cpu, rss=max(r.rss for r in runs))


def interleaved(
    commands: dict[str, list[str]], runs: int, env: dict[str, str], limit: float = 600.0
) -> dict[str, Run]:
    """Each command ``runs`` times, taking turns: the median of each."""
    done: dict[str, list[Run]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            done[label].append(checked(timed(argv, env, limit), argv))
    return {label: median(r) for label, r in done.items()}


def child_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"AUDITOR_STATE": str(state)}


# --- the loopback servers: a delaying proxy to libvirtd, a host that never answers -------


class Loopback:
    """An asyncio loop in a thread of its own serving TCP ports on 127.0.0.1: proxies to
    libvirtd's unix socket that hold every chunk ``delay`` s each way, and stalled hosts."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loopback", daemon=True)
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.accepted: dict[int, int] = {}  # port -> connections accepted

    def __enter__(self) -> Loopback:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def proxy(self, delay: float) -> int:
        """A port forwarding to libvirtd's socket with ``delay`` s each way."""
        return self._call(self._serve(lambda r, w: self._forward(r, w, delay)))

    def stalled(self) -> int:
        """A port that accepts connections, reads what comes and never answers."""
        return self._call(self._serve(self._stall))

    async def _serve(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
    ) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            self.accepted[port] = self.accepted.get(port, 0) + 1
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self.tasks.discard(task)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        self.servers.append(server)
        return port

    @staticmethod
    async def _stall(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    @staticmethod
    async def _forward(
        client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, delay: float
    ) -> None:
        daemon_r, daemon_w = await asyncio.open_unix_connection(SOCKET)
        try:
            await asyncio.gather(
                Loopback._pump(client_r, daemon_w, delay), Loopback._pump(daemon_r, client_w, delay)
            )
        finally:
            daemon_w.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        """Copy reader to writer, each chunk sent ``delay`` s after it arrived, in order
        (chunks in flight overlap: latency, not a bandwidth limit). EOF closes the writer."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()

    def close(self) -> None:
        """Close every server and connection, stop the loop, join its thread."""
        if not self.thread.is_alive():
            return

        async def shutdown() -> None:
            for server in self.servers:
                server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# --- the fleet: test-driver hosts and the hosts file -------------------------------------


def host_xml(index: int, pools: int, per_pool: int) -> str:
    """A test-driver host: ``pools`` dir pools of ``per_pool`` volumes (two thirds thin
    qcow2, one third preallocated raw) and 5 domains using some of them."""
    parts = ["<node>"]
    paths: list[list[str]] = []
    for p in range(pools):
        target = f"/srv/fleet/h{index:03d}/pool{p}"
        parts.append(f"<pool type='dir'><name>pool{p}</name><target><path>{target}</path></target>")
        paths.append([])
        for v in range(per_pool):
            k = p * per_pool + v
            if k % 3:
                name, fmt = f"vm{k:04d}.qcow2", "qcow2"
                capacity, allocation = (20 + k % 5 * 10) * GiB, (k % 7 + 1) * 128 * MiB
            else:
                name, fmt = f"vm{k:04d}-data.raw", "raw"
                capacity = allocation = (k % 4 + 1) * GiB
            paths[p].append(f"{target}/{name}")
            parts.append(
                f"<volume type='file'><name>{name}</name><capacity>{capacity}</capacity>"
                f"<allocation>{allocation}</allocation><target><format type='{fmt}'/></target>"
                "</volume>"
            )
        parts.append("</pool>")
    for d in range(5):
        pool = paths[d % pools]
        disks = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='"
            f"{'qcow2' if path.endswith('qcow2') else 'raw'}'/><source file='{path}'/>"
            f"<target dev='vd{'ab'[n]}'/></disk>"
            for n, path in enumerate(pool[2 * d : 2 * d + 2])
        )
        parts.append(
            f"<domain type='test'><name>h{index:03d}-vm{d}</name><memory unit='MiB'>1024</memory>"
            f"<os><type>hvm</type></os><devices>{disks}</devices></domain>"
        )
    parts.append("</node>\n")
    return "\n".join(parts)


@dataclass(frozen=True)
class Host:
    name: str
    uri: str


def write_hosts(path: Path, hosts: list[Host]) -> Path:
    """The TOML hosts file of ``hosts``, with site and cluster labels."""
    lines = []
    for i, h in enumerate(hosts):
        site, cluster = ("ams", "fra", "lon")[i % 3], "abcd"[i % 4]
        lines += [
            "[[host]]",
            f"name = {json.dumps(h.name)}",
            f"uri = {json.dumps(h.uri)}",
            f'labels = {{ site = "{site}", cluster = "{cluster}" }}',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


class Fleet:
    """How to hand auditor many hosts: a hosts file (`--hosts`, `--jobs`, timeouts) when the
    CLI has them, else repeated --connect (8 threads, no timeouts)."""

    def __init__(self, auditor: list[str], env: dict[str, str], work: Path) -> None:
        self.auditor, self.work = auditor, work
        usage = timed([*auditor, "--help"], env).stdout
        self.has_hosts = "--hosts" in usage
        self.has_timeouts = "--connect-timeout" in usage and "--timeout" in usage
        self.files = 0

    @property
    def jobs(self) -> tuple[int, ...]:
        return JOBS if self.has_hosts else (8,)

    def argv(
        self, hosts: list[Host], jobs: int, command: list[str], timeouts: bool = False
    ) -> list[str]:
        if not self.has_hosts:
            connects = [a for h in hosts for a in ("-c", h.uri)]
            return [*self.auditor, *connects, *command]
        self.files += 1
        file = write_hosts(self.work / f"hosts-{self.files}.toml", hosts)
        extra = (
            ["--timeout", "5", "--connect-timeout", "3"] if timeouts and self.has_timeouts else []
        )
        return [*self.auditor, "--hosts", str(file), "--jobs", str(jobs), *extra, *command]


def test_hosts(work: Path, count: int, per_pool: int) -> list[Path]:
    folder = work / "hosts"
    folder.mkdir()
    files = []
    for i in range(count):
        file = folder / f"h{i:03d}.xml"
        file.write_text(host_xml(i, 4, per_pool))
        files.append(file)
    return files


def skipped_hosts(run: Run) -> list[str]:
    return [s.get("host", "?") for s in run.doc.get("skipped", []) if s.get("kind") == "host"]


def describe(run: Run, rows: str) -> str:
    doc = run.doc
    skips = doc.get("skipped", [])
    kinds = sorted({s.get("kind", "?") for s in skips})
    return (
        f"exit {run.code}, {len(doc.get('hosts', []))} hosts, {doc.get(rows, 0)} {rows}, "
        f"{len(skips)} skipped{' (' + ', '.join(kinds) + ')' if kinds else ''}"
    )


FleetResults = dict[tuple[str, str, int], Run]  # (transport, command, jobs) -> median run


def fleet(
    args: argparse.Namespace, fl: Fleet, files: list[Path], lb: Loopback, env: dict[str, str]
) -> FleetResults:
    """Part 1: every test host plus the local libvirtd, at each --jobs, in-process and
    through libvirtd behind the proxy at each of ``--fleet-delays``."""
    transports = {"in-process": [Host(f"h{i:03d}", f"test://{f}") for i, f in enumerate(files)]}
    for ms in args.fleet_delays:
        port = lb.proxy(ms / 1000)
        transports[transport_name(ms)] = [
            Host(f"h{i:03d}", f"test+tcp://127.0.0.1:{port}{f}") for i, f in enumerate(files)
        ]
    results: FleetResults = {}
    for transport, hosts in transports.items():
        hosts = [*hosts, Host("local", LOCAL)]
        for command in ("pools", "volumes"):
            argvs = {str(j): fl.argv(hosts, j, [command, "-f", "json"]) for j in fl.jobs}
            first = checked(timed(argvs[str(max(fl.jobs))], env), argvs[str(max(fl.jobs))])
            print(f"  {transport}, {command}: {describe(first, command)}", flush=True)
            for jobs, run in interleaved(argvs, args.runs, env).items():
                results[transport, command, int(jobs)] = run
    return results


# --- a remote host: a dir pool of many volumes on the local libvirtd ---------------------


def testbed_module() -> ModuleType:
    sys.path.insert(0, str(REPO / "tests"))
    return importlib.import_module("testbed")


@contextmanager
def big_pool(volumes: int) -> Iterator[str]:
    """An active dir pool of ``volumes`` sparse 1 MiB raw files on the local libvirtd, made
    and removed by the test bed (its manifest lists the pool and folder first)."""
    testbed = testbed_module()
    testbed.ensure_libvirtd()
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # the bed's cleanup reports on stderr
    conn = libvirt.open(LOCAL)
    try:
        with testbed.open_workspace(conn) as ws, testbed.scratch_pool(conn, ws) as spec:
            t0 = time.perf_counter()
            for i in range(volumes):
                with open(Path(spec.path) / f"disk{i:05d}.raw", "wb") as fh:
                    fh.truncate(MiB)
            conn.storagePoolLookupByName(spec.name).refresh(0)
            print(f"  pool {spec.name}: {volumes} volumes in {time.perf_counter() - t0:.1f} s")
            time.sleep(SETTLE)
            yield spec.name
    finally:
        conn.close()


def remote(
    args: argparse.Namespace, fl: Fleet, lb: Loopback, env: dict[str, str]
) -> dict[str, Run]:
    """Part 2: the local libvirtd with a big pool, directly and through the proxy."""
    uris = {
        "direct": LOCAL,
        "proxy": f"qemu+tcp://127.0.0.1:{lb.proxy(DELAY)}/system",
        "no delay": f"qemu+tcp://127.0.0.1:{lb.proxy(0.0)}/system",  # remote, without latency
    }
    with big_pool(args.volumes) as pool:
        commands: dict[str, list[str]] = {}
        for way, uri in uris.items():
            commands[f"volumes {way}"] = [*fl.auditor, "-c", uri, "volumes", "-f", "json"]
            commands[f"pools {way}"] = [*fl.auditor, "-c", uri, "pools", "-f", "json"]
            if way != "no delay":
                virsh = ["virsh", "-q", "-c", uri, "vol-list", "--details", pool]
                commands[f"virsh {way}"] = virsh
        for way in uris:
            argv = commands[f"volumes {way}"]
            first = checked(timed(argv, env), argv)  # the first run keeps libvirt's figures
            print(f"  volumes {way}, first run: {first.secs:.2f} s, {describe(first, 'volumes')}")
        return interleaved(commands, args.runs, env)


# --- a stalled host and a slow one among the test hosts ----------------------------------


def stalled(
    args: argparse.Namespace, fl: Fleet, files: list[Path], lb: Loopback, env: dict[str, str]
) -> dict[str, Run]:
    """Part 3: the test hosts alone, with a host that never answers, with a slow host."""
    hosts = [Host(f"h{i:03d}", f"test://{f}") for i, f in enumerate(files)]
    stall_port, slow_port = lb.stalled(), lb.proxy(SLOW_DELAY)
    extra = {
        "without": [],
        "stalled": [Host("stalled", f"qemu+tcp://127.0.0.1:{stall_port}/system")],
        "slow": [Host("slow", f"test+tcp://127.0.0.1:{slow_port}{files[0]}")],
    }
    command = ["pools", "-f", "json"]
    commands = {k: fl.argv([*hosts, *v], STALL_JOBS, command, True) for k, v in extra.items()}
    done: dict[str, list[Run]] = {label: [] for label in commands}
    for _ in range(args.runs):
        for label, argv in commands.items():
            run = timed(argv, env, args.limit)
            done[label].append(checked(run, argv, (0, 1, -9)))
    print(f"  stalled host: {lb.accepted.get(stall_port, 0)} connections accepted, slow host: "
          f"{lb.accepted.get(slow_port, 0)}")  # fmt: skip
    return {label: median(r) for label, r in done.items()}


# --- the tables --------------------------------------------------------------------------


def transport_name(ms: float) -> str:
    return f"libvirtd, {ms:g} ms proxy"


def mb(run: Run) -> str:
    return f"{run.rss / 1e6:.0f} MB"


def show_fleet(
    results: FleetResults, fl: Fleet, hosts: int, volumes: int, delays: list[float]
) -> None:
    jobs = fl.jobs
    print(f"\n1. {hosts} test hosts x {volumes} volumes + {LOCAL}, `auditor --hosts F --jobs J "
          "CMD -f json` (median s, peak RSS)")  # fmt: skip
    if not fl.has_hosts:
        print("   (no --hosts in this auditor: repeated --connect, 8 threads; no speed-up shown)")
    head = "".join(f"{'jobs=' + str(j):>17}" for j in jobs)
    print(f"{'':32}{head}{'32 vs 1':>10}  goal   CPU s at jobs={jobs[-1]}")
    for transport in ("in-process", *map(transport_name, delays)):
        for command in ("pools", "volumes"):
            runs = [results[transport, command, j] for j in jobs]
            cells = "".join(f"{r.secs:9.2f} s {mb(r):>6}" for r in runs)
            speed = ""
            if 1 in jobs and 32 in jobs:
                ratio = results[transport, command, 1].secs / results[transport, command, 32].secs
                speed = f"{ratio:8.1f}x  >= 10x"
            print(f"{command + ', ' + transport:32}{cells}{speed:>18}{runs[-1].cpu:9.1f}")


def show_remote(results: dict[str, Run], volumes: int) -> None:
    print(f"\n2. one host, {volumes:,} volumes: {LOCAL} directly vs qemu+tcp through the proxy")
    print(f"{'':32}{'direct':>8}{'0 ms':>8}{'2 ms':>8}{'2 ms/direct':>12}  goal   RSS (2 ms)")
    for label, what, goal in (
        ("auditor volumes -f json", "volumes", "<= 3x"),
        ("auditor pools -f json", "pools", "<= 3x"),
        ("virsh vol-list --details (ctx)", "virsh", ""),
    ):
        d, p = results[f"{what} direct"], results[f"{what} proxy"]
        zero = results.get(f"{what} no delay")
        cell = f"{zero.secs:7.2f}s" if zero else f"{'':8}"
        ratio = f"{p.secs / d.secs:10.1f}x"
        print(f"{label:32}{d.secs:7.2f}s{cell}{p.secs:7.2f}s{ratio}  {goal:6} {mb(p):>8}")
    v, virsh = results["volumes proxy"], results["virsh proxy"]
    print(
        f"auditor volumes / virsh vol-list, both through the 2 ms proxy: {v.secs / virsh.secs:.2f}"
    )


def show_stalled(results: dict[str, Run], fl: Fleet, hosts: int, limit: float) -> None:
    opts = f"--jobs {STALL_JOBS} --timeout 5 --connect-timeout 3"
    opts = opts if fl.has_timeouts else "repeated --connect, no timeouts"
    print(f"\n3. {hosts} test hosts, `auditor --hosts F {opts} pools -f json`")
    base = results["without"].secs
    print(f"{'':30}{'median s':>9}{'extra':>8}{'goal':>10}{'exit':>6}  skipped hosts (goal)")
    for label, name in (("without", ""), ("stalled", "stalled"), ("slow", "slow")):
        run = results[label]
        extra = f"{run.secs - base:+7.2f}s" if label != "without" else ""
        goal = "<= +5 s" if label != "without" else ""
        code = f"{run.code}" if run.code != -9 else f"killed at {limit:.0f} s"
        skips = ", ".join(skipped_hosts(run)) or "none"
        want = f"({name}, exit 1)" if name else "(none, exit 0)"
        what = {
            "without": "without it",
            "stalled": "+ host never answering",
            "slow": "+ slow host (100 ms each way)",
        }[label]
        print(f"{what:30}{run.secs:9.2f}{extra:>8}{goal:>10}{code:>6}  {skips} {want}")
    for label in ("stalled", "slow"):
        for s in results[label].doc.get("skipped", []):
            if s.get("kind") == "host":
                print(f"   {s.get('host')}: {str(s.get('reason')).split(': its figures')[0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each command (median)")
    ap.add_argument("--hosts", type=int, default=50, help="test-driver hosts")
    ap.add_argument("--volumes", type=int, default=2000, help="volumes of the remote host")
    ap.add_argument("--per-pool", type=int, default=50, help="volumes per test pool (4 pools)")
    ap.add_argument("--quick", action="store_true", help="1 run, 10 hosts, 500 volumes")
    ap.add_argument("--only", choices=("fleet", "remote", "stalled"), action="append",
                    help="only these parts (repeatable)")  # fmt: skip
    ap.add_argument("--limit", type=float, default=60.0, help="kill a stalled run after this")
    ap.add_argument("--fleet-delays", type=lambda t: [float(x) for x in t.split(",")],
                    default=[DELAY * 1000], metavar="MS,MS",
                    help="part 1: proxy delays each way, ms (2,20: and a WAN)")  # fmt: skip
    ap.add_argument("--auditor", default=str(VENV_BIN / "auditor"), help="the auditor command")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.hosts, args.volumes = 1, 10, 500
    parts = args.only or ["fleet", "remote", "stalled"]

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds: pool, folders and threads are cleaned up

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    with tempfile.TemporaryDirectory(prefix="auditor-fleet-") as tmp, Loopback() as lb:
        work = Path(tmp)
        (work / "state").mkdir()
        env = child_env(work / "state")
        fl = Fleet(args.auditor.split(), env, work)
        print(f"auditor: {args.auditor} ({'--hosts' if fl.has_hosts else 'no --hosts yet'}), "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        files = test_hosts(work, args.hosts, args.per_pool)
        fleet_results = remote_results = stalled_results = None
        if "fleet" in parts:
            print("1. fleet", flush=True)
            fleet_results = fleet(args, fl, files, lb, env)
        if "remote" in parts:
            print("2. remote host", flush=True)
            remote_results = remote(args, fl, lb, env)
        if "stalled" in parts:
            print("3. stalled host", flush=True)
            stalled_results = stalled(args, fl, files, lb, env)
    if fleet_results:
        show_fleet(fleet_results, fl, args.hosts, 4 * args.per_pool, args.fleet_delays)
    if remote_results:
        show_remote(remote_results, args.volumes)
    if stalled_results:
        show_stalled(stalled_results, fl, args.hosts, args.limit)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything made is removed by then
        sys.exit(130)
