"""The only module that imports libvirt: bulk inventory reads, and every managed operation.

libvirt handles, tuples and XML are turned into the project's models here; nothing foreign
leaves this module. Objects that vanish between list and inspect become ``Skip`` records.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from auditor.adapters import kept, signals
from auditor.adapters.libvirt_calls import calls_for
from auditor.adapters.threads import in_threads
from auditor.errors import AuditorError, ConnectError, NotFound, OperationError
from auditor.models import (
    Attach,
    BlockResize,
    BuildPool,
    Const,
    CreateVolume,
    DefinePool,
    DeleteVolume,
    Detach,
    Disk,
    DiskSpec,
    Domain,
    DomainDisk,
    Download,
    LibvirtCall,
    Pool,
    PoolAction,
    Progress,
    RemoveMade,
    Request,
    ResizeVolume,
    SetAutostart,
    Skip,
    Upload,
    VolumeSpec,
    WipeVolume,
)

T = TypeVar("T")
Made = Callable[[dict[str, Any]], None]  # hears of what a run created


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_ignore_libvirt_errors, None)

POOL_STATES = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive",
    libvirt.VIR_STORAGE_POOL_BUILDING: "building",
    libvirt.VIR_STORAGE_POOL_RUNNING: "running",
    libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible",
}
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
_VANISHED = {
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_DOMAIN,
}
WORKERS = 4  # concurrent RPCs per local connection (libvirtd's default max_client_requests is 5)
# Over a network a call waits a round trip: keep more in flight (up to ``in_flight``, the
# caller's share of the run). libvirtd works on at most max_client_requests of them at once
# and leaves the rest queued on the socket, so the round trips overlap and the daemon is
# never idle waiting for the next request.
REMOTE_WORKERS = 64


def _msg(exc: libvirt.libvirtError) -> str:
    text = exc.get_error_message() or str(exc)
    return " ".join(text.split())


def _xml(text: str) -> ET.Element:
    """Parse XML that libvirtd produced (trusted; names in it are escaped by libvirt)."""
    return ET.fromstring(text)  # noqa: S314


def _int(node: ET.Element | None) -> int | None:
    return int(node.text) if node is not None and node.text else None


def _attr(node: ET.Element | None, name: str) -> str | None:
    return node.get(name) if node is not None else None


def _text(node: ET.Element | None) -> str | None:
    return node.text if node is not None else None


class LibvirtHost:
    """One libvirt connection: inventory reads and managed operations."""

    def __init__(
        self,
        conn: libvirt.virConnect,
        read_only: bool,
        why: str = "",
        name: str | None = None,
        in_flight: int = REMOTE_WORKERS,
    ) -> None:
        self._conn = conn
        self.read_only = read_only
        self.read_only_reason = why
        self.uri: str = conn.getURI()
        self.host: str = name or conn.getHostname()
        where = urlsplit(self.uri).hostname
        # The test driver's objects live in its XML, not on this machine.
        self._driver = conn.getType()
        self.local = self._driver != "TEST" and where in (None, "", "localhost")
        # Each call waits a network round trip: keep several in flight.
        self._workers = max(WORKERS, in_flight) if where else WORKERS

    @classmethod
    def connect(
        cls,
        uri: str | None,
        *,
        write: bool = False,
        read_only: bool = False,
        host: str | None = None,
        in_flight: int = REMOTE_WORKERS,
    ) -> LibvirtHost:
        """Open ``uri`` read-write. Unless ``write`` is required, fall back to a read-only
        connection when read-write fails (no access to the read-write socket, polkit);
        ``read_only`` asks for a read-only connection straight away. ``host`` names the
        host (else libvirt's name for it); ``in_flight`` bounds the calls in flight at once
        on a networked connection."""
        name = uri or "the default libvirt URI"
        if read_only:
            try:
                return cls(libvirt.openReadOnly(uri), True, "--read-only", host, in_flight)
            except libvirt.libvirtError as exc:
                raise ConnectError(f"cannot connect to {name}: {_msg(exc)}") from exc
        try:
            return cls(libvirt.open(uri), False, "", host, in_flight)
        except libvirt.libvirtError as exc:
            rw_error = exc
        hint = "check the URI, that libvirtd runs there, and your access rights"
        if write:
            raise ConnectError(f"cannot connect to {name} read-write: {_msg(rw_error)}", hint)
        try:
            return cls(libvirt.openReadOnly(uri), True, _msg(rw_error), host, in_flight)
        except libvirt.libvirtError:
            raise ConnectError(f"cannot connect to {name}: {_msg(rw_error)}", hint) from rw_error

    def identity(self) -> str:
        """The daemon behind this connection, however its URI is spelled: the driver, the
        machine's UUID (libvirt's capabilities) and the instance (``/system``,
        ``/session``); the canonical URI where the host has no UUID (the test driver)."""
        with _translate(f"cannot read the capabilities of {self.uri}"):
            uuid = _xml(self._conn.getCapabilities()).findtext("host/uuid")
        return f"{self._driver} {uuid} {urlsplit(self.uri).path}" if uuid else self.uri

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> LibvirtHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _skip(self, kind: str, name: str, exc: libvirt.libvirtError) -> Skip:
        gone = exc.get_error_code() in _VANISHED
        reason = f"vanished while being read ({_msg(exc)})" if gone else _msg(exc)
        return Skip(self.host, kind, name, reason, vanished=gone)

    def _parallel(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        """``fn`` of each item, in order: several calls in flight (more on a remote host,
        where each waits a round trip), one at a time when there are few."""
        if len(items) < (2 if self._workers > WORKERS else 2 * WORKERS):
            return [fn(i) for i in items]
        return in_threads(fn, items, min(self._workers, len(items)))

    # ---- inventory ------------------------------------------------------------------------

    def read_pools(
        self, *, refresh: bool, names: Collection[str] | None = None
    ) -> tuple[list[Pool], list[Skip]]:
        """All pools (or those of ``names`` that exist), active and inactive; active ones
        refreshed first when ``refresh``."""
        with _translate(f"{self.uri}: listing the pools"):
            handles = self._pool_handles(names)  # first: a pool made after is not seen
            flags = _pool_flags(self._conn)

        def one(handle: libvirt.virStoragePool) -> Pool | Skip:
            try:
                if refresh and handle.name() in flags["active"]:
                    self._refresh(handle)
                return self._pool(handle, flags)
            except libvirt.libvirtError as exc:
                return self._skip("pool", handle.name(), exc)

        found = self._parallel(one, handles)
        return [p for p in found if isinstance(p, Pool)], [s for s in found if isinstance(s, Skip)]

    def _pool_handles(self, names: Collection[str] | None) -> list[libvirt.virStoragePool]:
        if names is None:
            return list(self._conn.listAllStoragePools(0))
        handles = []
        for name in names:
            try:
                handles.append(self._conn.storagePoolLookupByName(name))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise _error(exc, f"pool {name}") from exc
        return handles

    def _refresh(self, handle: libvirt.virStoragePool) -> None:
        for attempt in range(5):
            try:
                handle.refresh(0)
                return
            except libvirt.libvirtError as exc:
                # An upload or clone in progress blocks refresh for a moment: retry.
                if "asynchronous jobs" not in _msg(exc) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def _pool(self, handle: libvirt.virStoragePool, flags: dict[str, set[str]]) -> Pool:
        root = _xml(handle.XMLDesc(0))
        state, capacity, allocation, available = handle.info()
        active = state == libvirt.VIR_STORAGE_POOL_RUNNING
        return Pool(
            host=self.host,
            name=handle.name(),
            uuid=handle.UUIDString(),
            type=root.get("type", ""),
            state=POOL_STATES.get(state, str(state)),
            persistent=handle.name() in flags["persistent"],
            autostart=handle.name() in flags["autostart"],
            target_path=_text(root.find("target/path")) or "",
            capacity=capacity if active else None,
            allocation=allocation if active else None,
            available=available if active else None,
        )

    def read_volumes(self, pools: list[Pool]) -> tuple[list[Disk], list[Skip]]:
        """Every volume of the active ``pools``: one XML read per volume, several in flight."""
        handles, skips = self._volume_handles(pools)

        def one(item: tuple[Pool, libvirt.virStorageVol]) -> Disk | Skip | None:
            pool, vol = item
            try:
                return self._volume(pool, vol.XMLDesc(0))
            except libvirt.libvirtError as exc:
                return self._skip("volume", f"{pool.name}/{vol.name()}", exc)

        disks: list[Disk] = []
        for res in self._parallel(one, handles):
            if isinstance(res, Skip):
                skips.append(res)
            elif res is not None:
                disks.append(res)
        return disks, skips

    def _volume(self, pool: Pool, xml: str) -> Disk | None:
        root = _xml(xml)
        kind = root.get("type", "file")
        if kind in ("dir", "netdir"):
            return None  # a folder in a pool (ext4's lost+found), not a disk
        name = _text(root.find("name")) or ""
        backing = root.find("backingStore")
        # "none" is libvirt's word for no format (VIR_STORAGE_FILE_NONE, and the partition
        # type of a disk pool's partitions); pools without volume formats (logical, iscsi,
        # scsi, mpath, zfs) write no <format>. Both mean: no format.
        fmt = _attr(root.find("target/format"), "type")
        return Disk(
            host=self.host,
            path=_text(root.find("target/path")) or _text(root.find("key")) or name,
            name=name,
            pool=pool.name,
            backend=pool.type,
            kind=kind,
            format=None if fmt == "none" else fmt,
            virtual_size=_int(root.find("capacity")),
            disk_size=_int(root.find("allocation")),
            physical=_int(root.find("physical")),
            backing_file=_text(backing.find("path")) if backing is not None else None,
            backing_format=_attr(backing.find("format"), "type") if backing is not None else None,
        )

    def read_domains(self) -> tuple[list[Domain], list[Skip]]:
        """All domains with their disks: bulk stats for state and sizes, then each XML."""
        with _translate(f"{self.uri}: listing the domains"):
            stats = self._conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING,
            )
            flags = _domain_flags(self._conn)

        def one(item: tuple[libvirt.virDomain, dict[str, Any]]) -> Domain | Skip:
            dom, st = item
            try:
                return self._domain(dom, st, flags)
            except libvirt.libvirtError as exc:
                return self._skip("domain", dom.name(), exc)

        domains: list[Domain] = []
        skips: list[Skip] = []
        for res in self._parallel(one, list(stats)):
            (skips if isinstance(res, Skip) else domains).append(res)  # type: ignore[arg-type]
        return domains, skips

    def _domain(
        self, dom: libvirt.virDomain, st: dict[str, Any], flags: dict[str, set[str]]
    ) -> Domain:
        state_code = st.get("state.state")
        if state_code is None:
            state_code = dom.state()[0]
        state = DOMAIN_STATES.get(state_code, str(state_code))
        running = state_code not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED)
        sizes = _block_sizes(st, running)
        root = _xml(dom.XMLDesc(0))
        disks = tuple(
            d for d in (_domain_disk(n, sizes) for n in root.findall("devices/disk")) if d
        )
        return Domain(
            host=self.host,
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=state,
            persistent=dom.UUIDString() in flags["persistent"],
            disks=disks,
            autostart=dom.UUIDString() in flags["autostart"],
        )

    # ---- managed operations ---------------------------------------------------------------
    # No guards here: auditor.ops plans and checks every operation first. Each request runs
    # the calls ``calls_for`` builds, and nothing else. libvirt errors become the project's
    # errors, naming the object and the fix.

    def calls(self, request: Request) -> tuple[LibvirtCall, ...]:
        """What ``execute`` will call for ``request``."""
        return calls_for(request)

    def execute(
        self, request: Request, progress: Progress | None = None, made: Made | None = None
    ) -> tuple[LibvirtCall, ...]:
        """Carry out ``request`` with exactly the calls ``calls`` describes; return them.
        ``made`` hears of every volume or file this run creates, before anything else is
        done with it (the journal's proof of what is ours)."""
        calls = calls_for(request)
        tell = made or (lambda _what: None)
        match request:
            case DefinePool(spec):
                with _translate(f"pool {spec.name}"):
                    self._conn.storagePoolDefineXML(calls[0].document, _flags(calls[0]))
            case BuildPool(pool) | PoolAction(pool) | SetAutostart(pool):
                self._pool_call(pool, calls[0])
            case CreateVolume(spec):
                self._create(spec, calls[0], tell)
            case Upload(spec, file):
                self._upload(spec, file, calls, progress, tell)
            case Download(pool, name):
                self._download(self._lookup_volume(pool, name), request, calls[0], progress, tell)
            case RemoveMade(pool, name, key, path, inode):
                if not self._remove(_Ours(pool, name, key, path, inode)):
                    raise OperationError(
                        f"volume {pool}/{name} is no longer the one auditor made (its key, "
                        "path or inode changed): left alone",
                        "look at it with `auditor vol info`",
                    )
            case _:
                self._volume_or_domain_call(request, calls[0])
        return calls

    def _lookup_pool(self, name: str) -> libvirt.virStoragePool:
        with _translate(f"pool {name}"):
            return self._conn.storagePoolLookupByName(name)

    def _lookup_volume(self, pool: str, name: str) -> libvirt.virStorageVol:
        handle = self._lookup_pool(pool)
        with _translate(f"volume {pool}/{name}"):
            return handle.storageVolLookupByName(name)

    def _lookup_domain(self, name: str) -> libvirt.virDomain:
        with _translate(f"domain {name}"):
            return self._conn.lookupByName(name)

    def domain_targets(self, domain: str) -> frozenset[str]:
        """Disk targets (vda, sdb, ...) of the running guest and of its definition."""
        dom = self._lookup_domain(domain)
        with _translate(f"domain {domain}"):
            docs = [dom.XMLDesc(0)]
            if dom.isActive() and dom.isPersistent():
                docs.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return frozenset(
            t.get("dev", "") for doc in docs for t in _xml(doc).findall("devices/disk/target")
        ) - {""}

    def _pool_call(self, pool: str, call: LibvirtCall) -> None:
        handle = self._lookup_pool(pool)
        with _translate(f"pool {pool}"):
            match call.function:
                case "virStoragePoolBuild":
                    handle.build(_flags(call))
                case "virStoragePoolCreate":
                    handle.create(_flags(call))
                case "virStoragePoolDestroy":
                    handle.destroy()
                case "virStoragePoolRefresh":
                    self._refresh(handle)
                case "virStoragePoolSetAutostart":
                    handle.setAutostart(call.arg("autostart"))
                case "virStoragePoolDelete":
                    handle.delete(_flags(call))
                case "virStoragePoolUndefine":
                    handle.undefine()

    def _volume_or_domain_call(self, request: Request, call: LibvirtCall) -> None:
        match request:
            case ResizeVolume(pool, name) | DeleteVolume(pool, name) | WipeVolume(pool, name):
                vol = self._lookup_volume(pool, name)
                with _translate(f"volume {pool}/{name}"):
                    if isinstance(request, ResizeVolume):
                        vol.resize(call.arg("capacity"), _flags(call))
                    elif isinstance(request, DeleteVolume):
                        vol.delete(_flags(call))
                    else:
                        vol.wipePattern(_const(call.arg("algorithm")), _flags(call))
            case BlockResize(domain, target):
                dom = self._lookup_domain(domain)
                with _translate(f"disk {target} of domain {domain}"):
                    dom.blockResize(target, call.arg("size"), _flags(call))
            case Attach(disk):
                dom = self._lookup_domain(disk.domain)
                with _translate(f"domain {disk.domain}"):
                    dom.attachDeviceFlags(call.document, _flags(call))
            case Detach(disk):
                self._detach(disk, call)

    def _detach(self, disk: DiskSpec, call: LibvirtCall) -> None:
        """Detach the disk ``disk.target``, as the live or the persistent XML describes it."""
        dom = self._lookup_domain(disk.domain)
        with _translate(f"domain {disk.domain}"):
            live = disk.live or (not disk.config and dom.isActive())
            doc = _xml(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))
            for node in doc.findall("devices/disk"):
                if _attr(node.find("target"), "dev") == call.arg("target"):
                    dom.detachDeviceFlags(ET.tostring(node, encoding="unicode"), _flags(call))
                    return
        raise NotFound(f"domain {disk.domain} has no disk {disk.target}")

    def _volume_exists(self, handle: libvirt.virStoragePool, name: str) -> bool:
        try:
            handle.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise _error(exc, f"volume {handle.name()}/{name}") from exc
        return True

    def _create(self, spec: VolumeSpec, call: LibvirtCall, tell: Made) -> _Ours:
        """Create ``spec`` (a clone of ``spec.source`` if set) and say what was made. A
        failed create leaves no volume: libvirt removes what its own failed build left."""
        handle = self._lookup_pool(spec.pool)
        if self._volume_exists(handle, spec.name):
            raise OperationError(
                f"volume {spec.name} already exists in pool {spec.pool}", "choose another name"
            )
        source = self._lookup_volume(spec.pool, spec.source) if spec.source else None
        ours: _Ours | None = None
        try:
            with signals.deferred():  # a signal waits until the new volume is on record
                try:
                    if source is None:
                        vol = handle.createXML(call.document, _flags(call))
                    else:
                        vol = handle.createXMLFrom(call.document, source, _flags(call))
                except libvirt.libvirtError as exc:
                    if spec.reflink and "not supported" in _msg(exc):
                        raise OperationError(
                            f"pool {spec.pool}: its filesystem cannot reflink ({_msg(exc)})",
                            "reflink needs btrfs, or xfs made with reflink=1; clone without "
                            "--reflink",
                        ) from exc
                    raise _error(exc, f"volume {spec.pool}/{spec.name}") from exc
                ours = self._ours(spec.pool, vol)
                tell(ours.proof())
        except BaseException:
            # A signal that waited for a clone (libvirt cannot cancel one), or a journal that
            # cannot be written: the volume is made, so remove it (only while it is ours).
            if ours is not None:
                self._remove(ours)
            raise
        return ours

    def _ours(self, pool: str, vol: libvirt.virStorageVol) -> _Ours:
        with _translate(f"volume {pool}/{vol.name()}"):
            key, path = vol.key(), vol.path()
        inode = None
        if self.local and path.startswith("/"):
            with contextlib.suppress(OSError):
                st = os.stat(path)
                inode = (st.st_dev, st.st_ino)
        return _Ours(pool, vol.name(), key, path, inode)

    def _remove(self, ours: _Ours) -> bool:
        """Delete a volume this run created, only if it is still that volume (same key, and
        on this machine the same inode): never another one that took its name. True when it
        is gone (deleted, or already gone)."""
        try:
            vol = self._conn.storagePoolLookupByName(ours.pool).storageVolLookupByName(ours.name)
        except libvirt.libvirtError:
            return True
        with contextlib.suppress(libvirt.libvirtError):
            if self._ours(ours.pool, vol).same(ours):
                vol.delete(0)
                return True
        return False

    @contextlib.contextmanager
    def _removed_on_interrupt(self, ours: _Ours) -> Iterator[None]:
        """Remove ``ours`` if anything fails or interrupts the block."""
        try:
            yield
        except BaseException:
            self._remove(ours)
            raise

    def _upload(
        self,
        spec: VolumeSpec,
        file: str,
        calls: tuple[LibvirtCall, ...],
        progress: Progress | None,
        tell: Made,
    ) -> None:
        """Create ``spec`` and fill it with ``file`` as a sparse stream (holes are sent as
        holes); on any failure or signal the stream is aborted and the new volume removed."""
        try:
            fd = os.open(file, os.O_RDONLY)
        except OSError as exc:
            raise OperationError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            with contextlib.ExitStack() as stack:
                with signals.deferred():  # no signal between made and removed-if-interrupted
                    ours = self._create(spec, calls[0], tell)
                    stack.enter_context(self._removed_on_interrupt(ours))
                vol = self._lookup_volume(spec.pool, spec.name)
                stream = self._conn.newStream(0)
                offset, length = calls[1].arg("offset"), calls[1].arg("length")
                with _streaming(stream, f"upload of {file} to {spec.pool}/{spec.name}"):
                    vol.upload(stream, offset, length, _flags(calls[1]))
                    stream.sparseSendAll(_reader(progress), _in_data, _skipper(progress), fd)
                    stream.finish()
        finally:
            os.close(fd)

    def _download(
        self,
        vol: libvirt.virStorageVol,
        request: Download,
        call: LibvirtCall,
        progress: Progress | None,
        tell: Made,
    ) -> None:
        """Write a volume's content to the new file ``request.temp`` beside the target (mode
        0600, never following a link) as a sparse stream, then move it into place: over the
        target only with ``overwrite``. Any failure or signal removes the temporary file;
        the target is untouched."""
        what = f"download of {vol.name()} to {request.file}"
        with contextlib.ExitStack() as stack:
            with signals.deferred():  # the temporary file is on record before it fills
                fd = stack.enter_context(_new_file(request.temp))
                st = os.fstat(fd)
                tell({"file": request.temp, "inode": [st.st_dev, st.st_ino]})
            stream = self._conn.newStream(0)
            with _streaming(stream, what):
                vol.download(stream, call.arg("offset"), call.arg("length"), _flags(call))
                stream.sparseRecvAll(_writer(progress), _hole_writer(progress), fd)
                stream.finish()
            os.fsync(fd)
            with signals.deferred():
                _move_into_place(request.temp, request.file, request.overwrite)

    # ---- volumes with fewer RPCs: libvirt's own figures, kept for unchanged files -----------
    # Additive to read_volumes, with the same results (tests/test_cli_tables.py proves it on
    # the bed); when a kept description still holds: auditor.adapters.kept.

    def libvirt_version(self) -> int:
        """libvirt's version on the host (major * 1,000,000 + minor * 1,000 + release)."""
        return int(self._conn.getLibVersion())

    def volume_names(self, pool: str) -> list[str]:
        """The names of a pool's volumes, in one RPC (for shell completion)."""
        handle = self._lookup_pool(pool)
        with _translate(f"pool {pool}"):
            return [v.name() for v in handle.listAllVolumes(0)]

    def read_volumes_reusing(
        self, pools: list[Pool], known: dict[str, list[Any]], refreshed_at: int
    ) -> tuple[list[Disk], list[Skip], dict[str, list[Any]]]:
        """``read_volumes``, reusing ``known`` descriptions (path -> entry, as returned by an
        earlier call) where they still hold. ``refreshed_at``: ``time.time_ns()`` before this
        run refreshed ``pools``. Returns the disks, skips and the descriptions to keep."""
        handles, skips = self._volume_handles(pools)
        files = kept.Files(refreshed_at)

        def ask(item: tuple[Pool, libvirt.virStorageVol]) -> tuple[Disk | Skip | None, Any]:
            pool, vol = item
            before = files.fingerprint(vol.key()) if self._reusable(pool, vol.key()) else None
            try:
                disk = self._volume(pool, vol.XMLDesc(0))
            except libvirt.libvirtError as exc:
                return self._skip("volume", f"{pool.name}/{vol.name()}", exc), None
            return disk, files.described(disk, before)

        # Reusing takes a stat and no RPC: in one thread, which is faster than several.
        tried = [self._attempt(pool, vol, known, files) for pool, vol in handles]
        asked = iter(
            self._parallel(ask, [h for h, t in zip(handles, tried, strict=True) if t is None])
        )
        disks: list[Disk] = []
        keep: dict[str, list[Any]] = {}
        for res, entry in (t if t is not None else next(asked) for t in tried):
            if isinstance(res, Skip):
                skips.append(res)
            elif res is not None:
                disks.append(res)
                if entry is not None:
                    keep[res.path] = entry
        return disks, skips, keep

    def _reusable(self, pool: Pool, path: str) -> bool:
        """Whether a volume can be a file on this machine whose description may be kept."""
        return self.local and pool.type in ("dir", "fs") and path.startswith("/")

    def _volume_handles(
        self, pools: list[Pool]
    ) -> tuple[list[tuple[Pool, libvirt.virStorageVol]], list[Skip]]:
        """(pool, volume handle) of every volume of the active ``pools``: one RPC per pool."""

        def one(pool: Pool) -> list[tuple[Pool, libvirt.virStorageVol]] | Skip:
            try:
                vols = self._conn.storagePoolLookupByName(pool.name).listAllVolumes(0)
            except libvirt.libvirtError as exc:
                return self._skip("pool", pool.name, exc)
            return [(pool, v) for v in vols]

        found = self._parallel(one, [p for p in pools if p.active])
        skips = [f for f in found if isinstance(f, Skip)]
        return [h for f in found if not isinstance(f, Skip) for h in f], skips

    def _attempt(
        self,
        pool: Pool,
        vol: libvirt.virStorageVol,
        known: dict[str, list[Any]],
        files: kept.Files,
    ) -> tuple[Disk, list[Any]] | None:
        """The volume from its kept description, and the entry to keep; None: ask libvirt."""
        path = vol.key()  # no RPC: the handle holds it (the target path, for these pools)
        entry = known.get(path) if self._reusable(pool, path) else None
        found = files.reused(path, entry) if entry is not None else None
        if found is None:
            return None
        r, keep = found
        disk = Disk(host=self.host, path=path, name=vol.name(), pool=pool.name,
                    backend=pool.type, kind=r.kind, format=r.format, virtual_size=r.capacity,
                    disk_size=r.stat.st_blocks * 512, physical=r.stat.st_size,
                    backing_file=r.backing, backing_format=r.backing_format)  # fmt: skip
        return disk, keep


@dataclass(frozen=True)
class _Ours:
    """A volume this run created: where, and what proves it is still the same one."""

    pool: str
    name: str
    key: str
    path: str
    inode: tuple[int, int] | None  # (st_dev, st_ino) on this machine

    def same(self, other: _Ours) -> bool:
        return (self.key, self.path, self.inode) == (other.key, other.path, other.inode)

    def proof(self) -> dict[str, Any]:
        inode = list(self.inode) if self.inode else None
        return {"volume": f"{self.pool}/{self.name}", "key": self.key, "path": self.path,
                "inode": inode}  # fmt: skip


def _pool_flags(conn: libvirt.virConnect) -> dict[str, set[str]]:
    """The names of the active, persistent and autostarted pools: three calls in all, not
    three per pool."""
    return {
        what: {p.name() for p in conn.listAllStoragePools(flag)}
        for what, flag in (
            ("active", libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE),
            ("persistent", libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT),
            ("autostart", libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART),
        )
    }


def _domain_flags(conn: libvirt.virConnect) -> dict[str, set[str]]:
    """The UUIDs of the persistent and of the autostarted domains (two calls in all)."""
    return {
        what: {d.UUIDString() for d in conn.listAllDomains(flag)}
        for what, flag in (
            ("persistent", libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT),
            ("autostart", libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
        )
    }


def _block_sizes(st: dict[str, Any], running: bool) -> dict[str, tuple[int | None, int | None]]:
    """Target → (virtual size, disk size) from bulk stats, whose fields mean different things
    for running domains (physical = host allocation) and shut-off ones (allocation = host
    allocation, omitted when 0; physical = file size)."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for i in range(int(st.get("block.count", 0))):
        target = st.get(f"block.{i}.name")
        if target is None or target in out:  # later entries are backing images
            continue
        capacity = st.get(f"block.{i}.capacity")
        if running:
            used = st.get(f"block.{i}.physical")
        else:
            used = st.get(f"block.{i}.allocation", 0 if capacity is not None else None)
        out[target] = (capacity, used)
    return out


def _source_path(kind: str | None, source: ET.Element | None) -> str | None:
    if source is None:
        return None
    if kind == "file":
        return source.get("file")
    if kind == "block":
        return source.get("dev")
    if kind == "network":
        return source.get("name")
    return None


def _domain_disk(
    node: ET.Element, sizes: dict[str, tuple[int | None, int | None]]
) -> DomainDisk | None:
    kind = node.get("type", "file")
    source = node.find("source")
    target = _attr(node.find("target"), "dev") or ""
    if source is None or kind == "dir":
        return None  # an empty drive, or a directory exposed as a fat disk
    chain: list[str] = []
    store = node.find("backingStore")
    while store is not None and store.find("source") is not None:
        path = _source_path(store.get("type"), store.find("source"))
        if path:
            chain.append(path)
        store = store.find("backingStore")
    virtual, used = sizes.get(target, (None, None))
    return DomainDisk(
        target=target,
        device=node.get("device", "disk"),
        type=kind,
        path=_source_path(kind, source),
        pool=source.get("pool"),
        volume=source.get("volume"),
        format=_attr(node.find("driver"), "type"),
        readonly=node.find("readonly") is not None,
        backing_chain=tuple(chain),
        virtual_size=virtual,
        disk_size=used,
    )


# ---- managed operations: XML, error translation, stream handlers ---------------------------

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_STORAGE_POOL: "see `auditor pool list`",
    libvirt.VIR_ERR_NO_STORAGE_VOL: "see `auditor volumes --pool POOL`",
    libvirt.VIR_ERR_NO_DOMAIN: "see `virsh list --all`",
}
_HINTS = (
    ("is not active", "start the pool first with `auditor pool start`"),
    ("already active", "it is running already"),
    ("exists already", "choose another name"),
    ("already exists", "choose another name"),
    ("ermission denied", "run as root or as a user allowed to manage libvirt storage"),
    ("No space left", "free space in the pool"),
    ("Not enough space", "free space in the pool"),
    ("Cannot find 'scrub'", "install the scrub package, or use --algorithm zero"),
    ("'trim' algorithm not supported", "use --algorithm zero"),
    ("cannot open directory", "create the pool's storage first with `auditor pool build`"),
    ("Directory not empty", "the pool's folder still holds files"),
    ("already formatted", "the filesystem and its data are kept: start the pool"),
    ("does not support hotplugging", "attach to the definition with --config"),
    ('write" lock', "the image is in use by a running guest"),
)


def _error(exc: libvirt.libvirtError, what: str) -> AuditorError:
    """One line naming the object, with the fix where one is known."""
    code = exc.get_error_code()
    if code in _NOT_FOUND:
        return NotFound(f"{what} not found", _NOT_FOUND[code])
    msg = _msg(exc)
    return OperationError(f"{what}: {msg}", next((h for p, h in _HINTS if p in msg), ""))


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise _error(exc, what) from exc


@contextlib.contextmanager
def _streaming(stream: libvirt.virStream, what: str) -> Iterator[None]:
    """Abort the stream on any failure; libvirt and file errors name the transfer."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        if isinstance(exc, libvirt.libvirtError):
            raise _error(exc, what) from exc
        if isinstance(exc, OSError):
            raise OperationError(f"{what}: {exc.strerror or exc}") from exc
        raise


def _in_data(_stream: object, fd: int) -> list[int]:
    """[in data?, length of the section] at the file offset (SEEK_DATA / SEEK_HOLE)."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        data = os.lseek(fd, cur, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        end = os.lseek(fd, 0, os.SEEK_END)  # no data after cur: a trailing hole (or EOF)
        os.lseek(fd, cur, os.SEEK_SET)
        return [False, end - cur]
    if data > cur:
        os.lseek(fd, cur, os.SEEK_SET)
        return [False, data - cur]
    hole = os.lseek(fd, cur, os.SEEK_HOLE)
    os.lseek(fd, cur, os.SEEK_SET)
    return [True, hole - cur]


def _reader(progress: Progress | None) -> Callable[[object, int, int], bytes]:
    def read(_stream: object, n: int, fd: int) -> bytes:
        data = os.read(fd, n)
        if progress:
            progress(len(data))
        return data

    return read


def _skipper(progress: Progress | None) -> Callable[[object, int, int], int]:
    def skip(_stream: object, n: int, fd: int) -> int:
        if progress:
            progress(n)
        return os.lseek(fd, n, os.SEEK_CUR)

    return skip


def _writer(progress: Progress | None) -> Callable[[object, bytes, int], int]:
    def write(_stream: object, buf: bytes, fd: int) -> int:
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view) :]
        if progress:
            progress(len(buf))
        return len(buf)

    return write


def _hole_writer(progress: Progress | None) -> Callable[[object, int, int], int]:
    def hole(_stream: object, n: int, fd: int) -> int:
        os.ftruncate(fd, os.lseek(fd, n, os.SEEK_CUR))  # extend: the skipped range is a hole
        if progress:
            progress(n)
        return 0

    return hole


def _flags(call: LibvirtCall) -> int:
    """The flags of ``call``, from their names: what was described is what is passed."""
    flags = 0
    for name in call.flags or ():
        flags |= int(getattr(libvirt, name))
    return flags


def _const(value: object) -> int:
    if not isinstance(value, Const):
        raise TypeError(f"{value!r} is not a libvirt constant")
    return int(getattr(libvirt, value.name))


@contextlib.contextmanager
def _new_file(path: str) -> Iterator[int]:
    """A new file (O_EXCL, O_NOFOLLOW, mode 0600) at ``path``; removed unless it was moved
    into place."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise OperationError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(temp: str, file: str, overwrite: bool) -> None:
    """rename(2) over ``file`` (with ``overwrite``), else link(2), which refuses an existing
    name: a file created meanwhile is never replaced unasked."""
    try:
        if overwrite:
            os.rename(temp, file)
        else:
            os.link(temp, file, follow_symlinks=False)
        _fsync_folder(os.path.dirname(os.path.abspath(file)))
    except FileExistsError as exc:
        raise OperationError(f"{file} appeared meanwhile", "it was left as it is") from exc
    except OSError as exc:
        raise OperationError(f"cannot move the download into {file}: {exc.strerror}") from exc
