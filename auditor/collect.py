"""Build the Inventory from the adapters: hosts in parallel, each within its timeout; skips
recorded, never dropped."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar

from auditor.errors import AuditorError, ConnectError
from auditor.interfaces import HostSource, ImageReader, LocalFs
from auditor.models import (
    Disk,
    Domain,
    DomainDisk,
    HostInventory,
    ImageInfo,
    Inventory,
    Pool,
    Skip,
    Target,
)

FS_POOL_TYPES = frozenset({"dir", "fs", "netfs"})


@dataclass(frozen=True)
class Probes:
    """The local-machine adapters: qemu-img and the filesystem."""

    images: ImageReader
    fs: LocalFs


@dataclass(frozen=True)
class Budget:
    """How many hosts are collected at once, and how long each may take (connect included)."""

    jobs: int = 32
    timeout: float = 300.0  # seconds from the start of a host's connect to its last figure
    connect_timeout: float = 20.0  # seconds for its connection to open

    IN_FLIGHT = 256  # libvirt calls in flight at once over the run's networked connections

    def calls_per_host(self, hosts: int) -> int:
        """A networked host's share of ``IN_FLIGHT``: many for one host, fewer when many
        hosts are read at once (more threads would only contend for the interpreter)."""
        return max(4, min(64, self.IN_FLIGHT // max(1, min(self.jobs, hosts))))


@dataclass(frozen=True)
class FleetProgress:
    """Where a collection of many hosts stands: hosts done, running (name, phase, seconds so
    far; slowest first) and waiting for a free job."""

    total: int
    done: int
    running: tuple[tuple[str, str, float], ...]
    waiting: int


class _Job:
    """One host's collection, run in its own (daemon) thread: a host that stalls is given up
    at its deadline and its thread left behind, never waited for."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.phase = "connecting"
        self.started = 0.0
        self.thread: threading.Thread | None = None
        self.abandoned = False  # given up: a connect that returns late is closed at once

    @staticmethod
    def limit(budget: Budget, phase: str) -> float:
        """Seconds from the start a job has in ``phase``."""
        connecting = phase == "connecting"
        return min(budget.timeout, budget.connect_timeout) if connecting else budget.timeout

    def deadline(self, budget: Budget) -> float:
        return self.started + self.limit(budget, self.phase)

    def expired(self, budget: Budget, now: float) -> Skip | None:
        """The skip of a job past its deadline (None while it has time), told by the phase
        it is in: read once, as another thread moves it on."""
        phase = self.phase
        limit = self.limit(budget, phase)
        if self.started + limit > now:
            return None
        t = self.target
        if phase == "connecting":
            why = f"no answer within {limit:g} s while connecting (--connect-timeout)"
        else:
            why = f"collection not done within {limit:g} s (--timeout)"
        return Skip(t.label, "host", t.uri or "default", f"{why}: its figures are left out")


Result = HostInventory | Skip | BaseException


def collect(
    targets: Sequence[Target],
    connect: Callable[[Target], HostSource],
    probes: Probes,
    *,
    refresh: bool = True,
    budget: Budget = Budget(),
    progress: Callable[[FleetProgress], None] | None = None,
) -> Inventory:
    """Collect every host, ``budget.jobs`` at a time; a host that cannot be reached or does
    not answer in time is a skip, unless it is the only host (then its error is raised)."""

    def one(job: _Job) -> Result:
        try:
            source = connect(job.target)
        except Exception as exc:  # a bad host never stops a run of several
            return _skip_or_raise(job.target, exc, len(targets))
        job.phase = "collecting"
        if job.abandoned:  # its result is no longer awaited
            source.close()
            return Skip(job.target.label, "host", job.target.uri or "default", "given up")
        try:
            found = collect_host(source, probes, refresh=refresh)
        except Exception as exc:
            return _skip_or_raise(job.target, exc, len(targets))
        finally:
            source.close()
        return replace(found, labels=job.target.labels)

    results = _run([_Job(t) for t in targets], one, budget, progress)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    hosts = distinct([r for r in results if isinstance(r, HostInventory)])
    skips = tuple(r for r in results if isinstance(r, Skip))
    if not hosts:
        if len(skips) == 1:
            raise ConnectError(f"{skips[0].name}: {skips[0].reason}")
        raise ConnectError(
            "no libvirt host could be reached: " + "; ".join(s.reason for s in skips),
            "check the URIs and that libvirtd runs there",
        )
    labels = tuple((t.name, t.labels) for t in targets if t.name and t.labels)
    return Inventory(hosts=hosts, skips=skips, labels=labels)


def distinct(hosts: list[HostInventory]) -> tuple[HostInventory, ...]:
    """The hosts, those that report the same name from different URIs (clones; every
    test-driver URI) renamed to their URI, so that their pools and disks never mix."""
    uris: dict[str, set[str]] = {}
    for h in hosts:
        uris.setdefault(h.host, set()).add(h.uri)
    clash = {name for name, seen in uris.items() if len(seen) > 1}
    return tuple(_renamed(h, h.uri) if h.host in clash else h for h in hosts)


def _renamed(h: HostInventory, name: str) -> HostInventory:
    note = (
        f"{h.uri}: named by its URI, not {h.host!r}: another host reports that name too "
        "(give each host a name in a hosts file, --hosts)"
    )
    return replace(
        h,
        host=name,
        pools=tuple(replace(p, host=name) for p in h.pools),
        disks=tuple(replace(d, host=name) for d in h.disks),
        domains=tuple(replace(d, host=name) for d in h.domains),
        skips=tuple(replace(s, host=name) for s in h.skips),
        notices=(*h.notices, note),
    )


def _skip_or_raise(target: Target, exc: Exception, hosts: int) -> Skip | Exception:
    """A host's failure: a skip among several hosts (an internal error named as one), the
    error itself for a single host."""
    if hosts == 1:
        return exc
    why = str(exc)
    if not isinstance(exc, AuditorError):
        why = f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)"
    return Skip(target.label, "host", target.uri or "default", why)


def _run(
    jobs: list[_Job],
    work: Callable[[_Job], Result],
    budget: Budget,
    progress: Callable[[FleetProgress], None] | None,
) -> list[Result]:
    """Each job's result, in order: at most ``budget.jobs`` at once, each given up (a Skip)
    at its deadline. The main thread only waits, so signals reach it at once."""
    done: queue.SimpleQueue[tuple[_Job, Result]] = queue.SimpleQueue()
    waiting, running = list(reversed(jobs)), set[_Job]()
    results: dict[_Job, Result] = {}

    def run(job: _Job) -> None:
        try:
            done.put((job, work(job)))
        except BaseException as exc:  # handed to the main thread, which raises it
            done.put((job, exc))

    while waiting or running:
        while waiting and len(running) < max(1, budget.jobs):
            job = waiting.pop()
            job.started = time.monotonic()
            still = _Stalled.earlier(job.target)
            if still is not None:
                results[job] = still
                continue
            running.add(job)
            job.thread = threading.Thread(target=run, args=(job,), daemon=True,
                                          name=job.target.label)  # fmt: skip
            job.thread.start()
        if not running:
            break
        wake = min(j.deadline(budget) for j in running) - time.monotonic()
        for job, result in _arrived(done, max(0.0, min(wake, 0.2 if progress else wake))):
            if job in running:  # not given up meanwhile
                running.discard(job)
                results[job] = result
        now = time.monotonic()
        for job in list(running):
            late = job.expired(budget, now)
            if late is not None:
                running.discard(job)
                results[job] = late
                _Stalled.left(job)
        if progress is not None:
            progress(_state(len(jobs), len(results), running, len(waiting), now))
    return [results[j] for j in jobs]


class _Stalled:
    """Hosts given up on whose thread has not returned yet (a call that never answers): the
    next collection of one (``metrics --listen``) reports it at once, without a new thread
    and connection each time."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    jobs: ClassVar[dict[Target, tuple[_Job, float]]] = {}  # target -> its job, when given up

    @classmethod
    def left(cls, job: _Job) -> None:
        job.abandoned = True
        with cls.lock:
            cls.jobs[job.target] = (job, time.time())

    @classmethod
    def earlier(cls, target: Target) -> Skip | None:
        """A skip while the thread of an earlier collection of ``target`` is still stuck."""
        with cls.lock:
            found = cls.jobs.get(target)
            if found is None or found[0].thread is None or not found[0].thread.is_alive():
                cls.jobs.pop(target, None)
                return None
        since = datetime.fromtimestamp(found[1], UTC).isoformat(timespec="seconds")
        why = f"still not answering: the connection given up at {since} has not returned"
        return Skip(target.label, "host", target.uri or "default", why)


def _arrived(
    done: queue.SimpleQueue[tuple[_Job, Result]], wait: float
) -> list[tuple[_Job, Result]]:
    """The results that arrive within ``wait`` seconds, and every one queued with them:
    none is left waiting while its job's deadline is checked."""
    try:
        found = [done.get(timeout=wait)]
    except queue.Empty:
        return []
    while not done.empty():
        found.append(done.get_nowait())
    return found


def _state(total: int, done: int, running: set[_Job], waiting: int, now: float) -> FleetProgress:
    slowest = sorted(running, key=lambda j: j.started)
    shown = tuple((j.target.label, j.phase, now - j.started) for j in slowest)
    return FleetProgress(total=total, done=done, running=shown, waiting=waiting)


def collect_host(source: HostSource, probes: Probes, *, refresh: bool) -> HostInventory:
    """Pools, volumes, domains and unmanaged disks of one connection."""
    started = datetime.now(UTC)
    notices: list[str] = []
    if source.read_only:
        notices.append(
            f"{source.uri}: read-only connection ({source.read_only_reason}): pools were not "
            "refreshed, their figures are as of libvirt's last refresh and may be stale"
        )
    elif not refresh:
        notices.append(
            f"{source.uri}: pools not refreshed: figures are as of libvirt's last refresh"
        )
    local = source.local
    pools, skips = _pools(source, probes, refresh=refresh and not source.read_only)
    managed, vol_skips = source.read_volumes(pools)
    domains, dom_skips = source.read_domains()
    skips += vol_skips + dom_skips
    resolver = _Resolver(managed, probes.fs if local else None)
    domains = [resolver.domain(d) for d in domains]
    managed = [resolver.backing(d) for d in managed]
    unmanaged, img_skips = _unmanaged(source.host, managed, domains, resolver, probes, local)
    return HostInventory(
        host=source.host,
        uri=source.uri,
        collected_at=started,
        pools=tuple(pools),
        disks=tuple(managed + unmanaged),
        domains=tuple(domains),
        skips=tuple(skips + img_skips),
        notices=tuple(notices),
        local=local,
    )


def _pools(
    source: HostSource, probes: Probes, *, refresh: bool, names: Collection[str] | None = None
) -> tuple[list[Pool], list[Skip]]:
    """The pools, with their filesystem's figures where they live on a local one."""
    pools, skips = source.read_pools(refresh=refresh, names=names)
    if source.local:
        pools = [
            replace(p, fs=probes.fs.filesystem(p.target_path))
            if p.active and p.type in FS_POOL_TYPES
            else p
            for p in pools
        ]
    return pools, skips


def recollect_pools(
    inventory: HostInventory, source: HostSource, probes: Probes, names: Collection[str]
) -> HostInventory:
    """``inventory`` with the pools ``names`` (refreshed), their volumes and every domain
    read again; other pools and unmanaged disks are kept as they were."""
    pools, skips = _pools(source, probes, refresh=not source.read_only, names=names)
    fresh, vol_skips = source.read_volumes(pools)
    domains, dom_skips = source.read_domains()
    kept = [d for d in inventory.disks if d.pool not in names]
    resolver = _Resolver(
        [d for d in kept if d.managed] + fresh, probes.fs if source.local else None
    )
    old_skips = [
        s for s in inventory.skips
        if s.kind not in ("domain", "host") and s.name.partition("/")[0] not in names
    ]  # fmt: skip
    return replace(
        inventory,
        pools=tuple(
            sorted(
                [*(p for p in inventory.pools if p.name not in names), *pools], key=lambda p: p.name
            )
        ),
        disks=tuple(kept + [resolver.backing(d) for d in fresh]),
        domains=tuple(resolver.domain(d) for d in domains),
        skips=tuple(old_skips + skips + vol_skips + dom_skips),
    )


class _Resolver:
    """Maps the paths domains and backing references use onto one canonical path per image."""

    def __init__(self, managed: list[Disk], fs: LocalFs | None) -> None:
        self._fs = fs
        self.by_path = {self.key(d.path): d for d in managed}
        self.by_volume: dict[tuple[str | None, str | None], Disk] = {
            (d.pool, d.name): d for d in managed
        }

    def key(self, path: str) -> str:
        return self._fs.realpath(path) if self._fs is not None and path.startswith("/") else path

    def canonical(self, path: str) -> str:
        disk = self.by_path.get(self.key(path))
        return disk.path if disk is not None else self.key(path)

    def disk(self, d: DomainDisk) -> DomainDisk:
        if d.type == "volume":
            vol = self.by_volume.get((d.pool, d.volume))
            path = vol.path if vol is not None else None
        else:
            path = self.canonical(d.path) if d.path else None
        return replace(
            d, path=path, backing_chain=tuple(self.canonical(p) for p in d.backing_chain)
        )

    def domain(self, dom: Domain) -> Domain:
        return replace(dom, disks=tuple(self.disk(d) for d in dom.disks))

    def backing(self, disk: Disk) -> Disk:
        if disk.backing_file is None:
            return disk
        return replace(disk, backing_file=self.canonical(disk.backing_file))


def _unmanaged(
    host: str,
    managed: list[Disk],
    domains: list[Domain],
    resolver: _Resolver,
    probes: Probes,
    local: bool,
) -> tuple[list[Disk], list[Skip]]:
    """Disks that domains use (and their backing files) that no active pool holds."""
    known = {d.path for d in managed}
    wanted: dict[str, DomainDisk | None] = {}  # path -> the domain disk naming it, if any
    for dom in domains:
        for dd in dom.disks:
            if dd.path and dd.path not in known:
                wanted.setdefault(dd.path, dd)
            for p in dd.backing_chain:
                if p not in known:
                    wanted.setdefault(p, None)
    for d in managed:
        if d.backing_file and d.backing_file not in known:
            wanted.setdefault(d.backing_file, None)
    if not local:
        return [_from_stats(host, path, dd) for path, dd in wanted.items()], []

    disks: list[Disk] = []
    skips: list[Skip] = []
    formats: dict[str, str | None] = {p: (dd.format if dd else None) for p, dd in wanted.items()}
    todo = [p for p, dd in wanted.items() if not (dd and dd.type == "network")]
    disks += [_from_stats(host, p, dd) for p, dd in wanted.items() if dd and dd.type == "network"]
    seen = set(todo)
    while todo:
        batch, todo = todo, []
        for path, res in probes.images(_pairs(batch, formats)):
            if isinstance(res, AuditorError):
                skips.append(Skip(host, "image", path, str(res)))
                named = wanted.get(path)
                if named is not None and named.virtual_size is not None:
                    disks.append(_from_stats(host, path, named))
                continue
            disks.append(_from_image(host, path, res, probes.fs))
            base = res.backing_file and resolver.canonical(res.backing_file)
            if base and base not in known and base not in seen:
                seen.add(base)
                formats[base] = res.backing_format
                todo.append(base)
    return disks, skips


def _pairs(paths: Iterable[str], formats: dict[str, str | None]) -> list[tuple[str, str | None]]:
    return [(p, formats.get(p)) for p in paths]


def _from_image(host: str, path: str, info: ImageInfo, fs: LocalFs) -> Disk:
    block = fs.is_block_device(path)
    notes = []
    if info.dirty:
        notes.append("dirty: needs repair on next open")
    if info.corrupt:
        notes.append("marked corrupt")
    return Disk(
        host=host,
        path=path,
        name=os.path.basename(path),
        pool=None,
        backend="unmanaged",
        kind="block" if block else "file",
        format=info.format,
        virtual_size=info.virtual_size,
        # qemu-img reports 0 for block devices: the device holds its whole size.
        disk_size=info.virtual_size if block and info.format == "raw" else info.actual_size,
        backing_file=info.backing_file,
        backing_format=info.backing_format,
        cluster_size=info.cluster_size,
        fs=None if block else fs.filesystem(path),
        notes=tuple(notes),
    )


def _from_stats(host: str, path: str, dd: DomainDisk | None) -> Disk:
    """An unmanaged disk on a remote host: sizes from libvirt's bulk domain stats."""
    return Disk(
        host=host,
        path=path,
        name=os.path.basename(path),
        pool=None,
        backend="unmanaged",
        kind=dd.type if dd and dd.type in ("block", "network") else "file",
        format=dd.format if dd else None,
        virtual_size=dd.virtual_size if dd else None,
        disk_size=dd.disk_size if dd else None,
    )


def collect_files(paths: list[str], probes: Probes, host: str) -> Inventory:
    """Image files and folders (recursively) through qemu-img only, no libvirt."""
    started = datetime.now(UTC)
    files, errors = probes.fs.list_files(paths)
    skips = [Skip(host, "file", p, reason) for p, reason in errors]
    disks: list[Disk] = []
    for path, res in probes.images((p, None) for p in files):
        if isinstance(res, AuditorError):
            skips.append(Skip(host, "image", path, str(res)))
        else:
            disks.append(_from_image(host, path, res, probes.fs))
    inv = HostInventory(host=host, uri="", collected_at=started, disks=tuple(disks),
                        skips=tuple(skips))  # fmt: skip
    return Inventory(hosts=(inv,))
