"""What the services need from adapters. The CLI wires real ones; tests may pass fakes."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Self

from auditor.errors import AuditorError
from auditor.models import (
    CheckResult,
    Disk,
    DiskReport,
    Domain,
    FsInfo,
    ImageFix,
    ImageInfo,
    Labels,
    LibvirtCall,
    Pool,
    PoolSummary,
    Progress,
    Request,
    Skip,
    Summary,
)


class HostSource(Protocol):
    """A libvirt connection, as the collectors read it."""

    host: str
    uri: str
    read_only: bool
    read_only_reason: str
    local: bool  # its paths are paths on this machine (so stat and qemu-img apply)

    def read_pools(
        self, *, refresh: bool, names: Collection[str] | None = None
    ) -> tuple[list[Pool], list[Skip]]: ...

    def read_volumes(self, pools: list[Pool]) -> tuple[list[Disk], list[Skip]]: ...

    def read_domains(self) -> tuple[list[Domain], list[Skip]]: ...

    def close(self) -> None: ...


class StorageHost(HostSource, Protocol):
    """A libvirt connection that can change pools, volumes and domain disks.

    ``calls`` and ``execute`` share one builder per libvirt call: what a plan prints is what
    runs."""

    def identity(self) -> str:
        """The same text for every URI that reaches the same daemon (the key of its lock)."""
        ...

    def calls(self, request: Request) -> tuple[LibvirtCall, ...]: ...

    def execute(
        self,
        request: Request,
        progress: Progress | None = None,
        made: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[LibvirtCall, ...]: ...

    def domain_targets(self, domain: str) -> frozenset[str]: ...


class ImageReader(Protocol):
    """``qemu-img info`` over many (path, format) pairs; errors come back as values."""

    def __call__(
        self, items: Iterable[tuple[str, str | None]], workers: int | None = None
    ) -> Iterator[tuple[str, ImageInfo | AuditorError]]: ...


class ImageChecker(Protocol):
    """``qemu-img check`` (no repair) over many (path, format) pairs; errors as values."""

    def __call__(
        self, items: Iterable[tuple[str, str]], workers: int | None = None
    ) -> Iterator[tuple[str, CheckResult | AuditorError]]: ...


class ImageFixer(Protocol):
    """Fixes made on this machine (qemu-img, fallocate, rename): described and run by the
    same builders."""

    def steps(self, fix: ImageFix) -> tuple[str, ...]: ...

    def need(self, fix: ImageFix) -> int: ...

    def execute(
        self, fix: ImageFix, made: Callable[[dict[str, Any]], None] | None = None
    ) -> None: ...


class LocalFs(Protocol):
    """Facts about this machine's filesystems."""

    def filesystem(self, path: str) -> FsInfo | None: ...

    def realpath(self, path: str) -> str: ...

    def is_block_device(self, path: str) -> bool: ...

    def list_files(self, paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]: ...

    def regular_file(self, path: str, *, follow: bool = True) -> tuple[int, int] | None: ...


# ---- the history: snapshots of the figures over time ---------------------------------------
# Field names of the point types are the history's column names (README, "History"): the
# stores build their column lists from ``dataclasses.fields``. Text is '' rather than None.


def _sorted(labels: Labels) -> Labels:
    """Labels as a point holds them: one per key (the last), sorted by key, as read back."""
    return tuple(sorted(dict(labels).items()))


@dataclass(frozen=True)
class SnapshotInfo:
    """One recorded run."""

    id: int
    collected_at: datetime  # when the figures were read (or --at); aware, UTC
    recorded_at: datetime  # when the snapshot was written
    hosts: tuple[str, ...]  # the hosts read
    skipped: int  # items that could not be read
    auditor_version: str


@dataclass(frozen=True)
class PoolPoint:
    """One summary row of a snapshot: a pool, a shared-fs group or an unmanaged filesystem."""

    host: str
    pool: str
    type: str
    state: str
    capacity: int | None
    allocation: int | None
    available: int | None  # usable free space (statvfs f_bavail where known)
    volumes: int | None
    thin: int | None
    preallocated: int | None
    unknown: int | None
    provisioned: int | None
    used: int | None
    overcommit_ratio: float | None
    exposure: int | None
    filesystem: str  # mount point; '' when not known
    target: str
    autostart: bool | None  # None for a group row
    persistent: bool | None
    members: tuple[str, ...]  # the pools of a shared-fs group
    labels: Labels = ()  # the host's labels, sorted by key (stored as a JSON object)

    @classmethod
    def of(cls, p: PoolSummary, labels: Labels = ()) -> PoolPoint:
        """The point a summary row of a host with ``labels`` is recorded as."""
        return cls(
            host=p.host,
            pool=p.pool,
            type=p.type,
            state=p.state,
            capacity=p.capacity,
            allocation=p.allocation,
            available=p.usable_free,  # the column keeps its name
            volumes=p.volumes,
            thin=p.thin,
            preallocated=p.preallocated,
            unknown=p.unknown,
            provisioned=p.provisioned,
            used=p.used,
            overcommit_ratio=p.overcommit_ratio,
            exposure=p.exposure,
            filesystem=p.filesystem or "",
            target=p.target,
            autostart=p.autostart,
            persistent=p.persistent,
            members=p.members,
            labels=_sorted(labels),
        )


@dataclass(frozen=True)
class VolumePoint:
    """One disk of a snapshot: a managed volume or an unmanaged domain disk."""

    host: str
    pool: str  # '' for an unmanaged disk
    volume: str
    path: str
    format: str
    provisioning: str  # preallocated, thin, unknown
    virtual_size: int | None
    disk_size: int | None
    growth: int | None
    managed: bool
    used_by: tuple[str, ...]  # domains referencing it
    backing_file: str
    kind: str  # file, block, network
    note: str
    physical: int | None  # st_size of a file
    labels: Labels = ()  # the host's labels, sorted by key (stored as a JSON object)

    @classmethod
    def of(cls, r: DiskReport, labels: Labels = ()) -> VolumePoint:
        """The point a disk of a host with ``labels`` is recorded as."""
        d = r.disk
        return cls(
            host=d.host,
            pool=d.pool or "",
            volume=d.name,
            path=d.path,
            format=d.format or "",
            provisioning=r.provisioning.value,
            virtual_size=d.virtual_size,
            disk_size=d.disk_size,
            growth=r.growth,
            managed=d.managed,
            used_by=r.used_by,
            backing_file=d.backing_file or "",
            kind=d.kind,
            note=r.reason,
            physical=d.physical,
            labels=_sorted(labels),
        )


@dataclass(frozen=True)
class Earlier:
    """A host's most recent snapshot before some time: its pool and volume points."""

    snapshot: SnapshotInfo
    host: str
    pools: tuple[PoolPoint, ...]
    volumes: tuple[VolumePoint, ...]

    @property
    def collected_at(self) -> datetime:
        return self.snapshot.collected_at


@dataclass(frozen=True)
class SeriesPoint:
    """A pool point with the time of its snapshot."""

    collected_at: datetime
    snapshot_id: int
    point: PoolPoint


class HistoryStore(Protocol):
    """Snapshots of the pool and volume figures over time (one per run), append-only.

    Built by ``auditor.history.open_history``; errors are ``HistoryError``. Times are aware
    datetimes; ``since`` and ``until`` bounds are inclusive."""

    def record(self, summary: Summary, version: str) -> int:
        """Append one snapshot of ``summary`` (in the open transaction, if any); its id."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction: committed if the block succeeds, else nothing is kept."""
        ...

    def earlier(self, hosts: Iterable[str], before: datetime) -> list[Earlier]:
        """For each host, its most recent snapshot collected before ``before`` (if any)."""
        ...

    def series(
        self,
        *,
        pool: str | None = None,
        host: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SeriesPoint]:
        """Pool points of every matching snapshot, ordered by time, snapshot, host, pool."""
        ...

    def newest(self, host: str | None = None) -> datetime | None:
        """When the most recent snapshot (that read ``host``) was collected; None if none."""
        ...

    def count(self) -> int:
        """Number of snapshots."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *_exc: object) -> None: ...
