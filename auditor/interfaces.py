"""What the services need from adapters. The CLI wires real ones; tests may pass fakes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Protocol

from auditor.errors import AuditorError
from auditor.models import (
    Disk,
    Domain,
    FsInfo,
    ImageInfo,
    LibvirtCall,
    Pool,
    Progress,
    Request,
    Skip,
)


class HostSource(Protocol):
    """A libvirt connection, as the collectors read it."""

    host: str
    uri: str
    read_only: bool
    read_only_reason: str

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

    def calls(self, request: Request) -> tuple[LibvirtCall, ...]: ...

    def execute(
        self, request: Request, progress: Progress | None = None
    ) -> tuple[LibvirtCall, ...]: ...

    def domain_targets(self, domain: str) -> frozenset[str]: ...


class ImageReader(Protocol):
    """``qemu-img info`` over many (path, format) pairs; errors come back as values."""

    def __call__(
        self, items: Iterable[tuple[str, str | None]], workers: int | None = None
    ) -> Iterator[tuple[str, ImageInfo | AuditorError]]: ...


class LocalFs(Protocol):
    """Facts about this machine's filesystems."""

    def filesystem(self, path: str) -> FsInfo | None: ...

    def realpath(self, path: str) -> str: ...

    def is_block_device(self, path: str) -> bool: ...

    def list_files(self, paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]: ...
