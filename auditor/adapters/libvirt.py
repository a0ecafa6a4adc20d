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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from auditor.errors import AuditorError, ConnectError, NotFound, OperationError
from auditor.models import (
    Disk,
    DiskSpec,
    Domain,
    DomainDisk,
    Pool,
    PoolDefinition,
    Progress,
    Skip,
    VolumeSpec,
)

T = TypeVar("T")


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
WORKERS = 4  # concurrent RPCs per connection (libvirtd's default max_client_requests is 5)


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

    def __init__(self, conn: libvirt.virConnect, read_only: bool, why: str = "") -> None:
        self._conn = conn
        self.read_only = read_only
        self.read_only_reason = why
        self.uri: str = conn.getURI()
        self.host: str = conn.getHostname()

    @classmethod
    def connect(
        cls, uri: str | None, *, write: bool = False, read_only: bool = False
    ) -> LibvirtHost:
        """Open ``uri`` read-write. Unless ``write`` is required, fall back to a read-only
        connection when read-write fails (no access to the read-write socket, polkit);
        ``read_only`` asks for a read-only connection straight away."""
        name = uri or "the default libvirt URI"
        if read_only:
            try:
                return cls(libvirt.openReadOnly(uri), read_only=True, why="--read-only")
            except libvirt.libvirtError as exc:
                raise ConnectError(f"cannot connect to {name}: {_msg(exc)}") from exc
        try:
            return cls(libvirt.open(uri), read_only=False)
        except libvirt.libvirtError as exc:
            rw_error = exc
        hint = "check the URI, that libvirtd runs there, and your access rights"
        if write:
            raise ConnectError(f"cannot connect to {name} read-write: {_msg(rw_error)}", hint)
        try:
            return cls(libvirt.openReadOnly(uri), read_only=True, why=_msg(rw_error))
        except libvirt.libvirtError:
            raise ConnectError(f"cannot connect to {name}: {_msg(rw_error)}", hint) from rw_error

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> LibvirtHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def is_test_driver(self) -> bool:
        return self.uri.startswith("test:")

    def _skip(self, kind: str, name: str, exc: libvirt.libvirtError) -> Skip:
        gone = exc.get_error_code() in _VANISHED
        reason = f"vanished while being read ({_msg(exc)})" if gone else _msg(exc)
        return Skip(self.host, kind, name, reason)

    def _parallel(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        if len(items) < 2 * WORKERS:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=WORKERS) as ex:
            return list(ex.map(fn, items))

    # ---- inventory ------------------------------------------------------------------------

    def read_pools(self, *, refresh: bool) -> tuple[list[Pool], list[Skip]]:
        """All pools, active and inactive; active ones refreshed first when ``refresh``."""
        skips: list[Skip] = []
        pools: list[Pool] = []
        for handle in self._conn.listAllStoragePools(0):
            name = handle.name()
            try:
                if refresh and handle.isActive():
                    self._refresh(handle)
                pools.append(self._pool(handle))
            except libvirt.libvirtError as exc:
                skips.append(self._skip("pool", name, exc))
        return pools, skips

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

    def _pool(self, handle: libvirt.virStoragePool) -> Pool:
        root = _xml(handle.XMLDesc(0))
        state, capacity, allocation, available = handle.info()
        active = state == libvirt.VIR_STORAGE_POOL_RUNNING
        return Pool(
            host=self.host,
            name=handle.name(),
            uuid=handle.UUIDString(),
            type=root.get("type", ""),
            state=POOL_STATES.get(state, str(state)),
            persistent=bool(handle.isPersistent()),
            autostart=bool(handle.autostart()),
            target_path=_text(root.find("target/path")) or "",
            capacity=capacity if active else None,
            allocation=allocation if active else None,
            available=available if active else None,
        )

    def read_volumes(self, pools: list[Pool]) -> tuple[list[Disk], list[Skip]]:
        """Every volume of the active ``pools``: one XML read per volume, several in flight."""
        skips: list[Skip] = []
        handles: list[tuple[Pool, libvirt.virStorageVol]] = []
        for pool in pools:
            if not pool.active:
                continue
            try:
                vols = self._conn.storagePoolLookupByName(pool.name).listAllVolumes(0)
            except libvirt.libvirtError as exc:
                skips.append(self._skip("pool", pool.name, exc))
                continue
            handles.extend((pool, v) for v in vols)

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
        return Disk(
            host=self.host,
            path=_text(root.find("target/path")) or _text(root.find("key")) or name,
            name=name,
            pool=pool.name,
            backend=pool.type,
            kind=kind,
            format=_attr(root.find("target/format"), "type"),
            virtual_size=_int(root.find("capacity")),
            disk_size=_int(root.find("allocation")),
            physical=_int(root.find("physical")),
            backing_file=_text(backing.find("path")) if backing is not None else None,
            backing_format=_attr(backing.find("format"), "type") if backing is not None else None,
        )

    def read_domains(self) -> tuple[list[Domain], list[Skip]]:
        """All domains with their disks: bulk stats for state and sizes, then each XML."""
        stats = self._conn.getAllDomainStats(
            libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK,
            libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING,
        )

        def one(item: tuple[libvirt.virDomain, dict[str, Any]]) -> Domain | Skip:
            dom, st = item
            try:
                return self._domain(dom, st)
            except libvirt.libvirtError as exc:
                return self._skip("domain", dom.name(), exc)

        domains: list[Domain] = []
        skips: list[Skip] = []
        for res in self._parallel(one, list(stats)):
            (skips if isinstance(res, Skip) else domains).append(res)  # type: ignore[arg-type]
        return domains, skips

    def _domain(self, dom: libvirt.virDomain, st: dict[str, Any]) -> Domain:
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
            persistent=bool(dom.isPersistent()),
            disks=disks,
        )

    # ---- managed operations ---------------------------------------------------------------
    # One libvirt call each (or one stream), no guards: auditor.ops plans every operation and
    # checks it first. libvirt errors become the project's errors, naming the object and the fix.

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

    def define_pool(self, spec: PoolDefinition) -> None:
        with _translate(f"pool {spec.name}"):
            self._conn.storagePoolDefineXML(_pool_xml(spec), 0)

    def pool_action(self, pool: str, action: str, flag: bool = False) -> None:
        """build (flag: NO_OVERWRITE), start, stop (destroy), refresh, autostart (flag: on),
        delete, undefine."""
        handle = self._lookup_pool(pool)
        calls: dict[str, Callable[[], object]] = {
            "build": lambda: handle.build(
                libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE if flag else 0
            ),
            "start": lambda: handle.create(0),
            "stop": handle.destroy,
            "refresh": lambda: self._refresh(handle),
            "autostart": lambda: handle.setAutostart(int(flag)),
            "delete": lambda: handle.delete(0),
            "undefine": handle.undefine,
        }
        with _translate(f"pool {pool}"):
            calls[action]()

    def _volume_exists(self, handle: libvirt.virStoragePool, name: str) -> bool:
        try:
            handle.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise _error(exc, f"volume {handle.name()}/{name}") from exc
        return True

    def _remove_partial(self, handle: libvirt.virStoragePool, name: str) -> None:
        """Delete what a failed create, clone or upload left behind (libvirt may have already)."""
        with contextlib.suppress(libvirt.libvirtError):
            handle.storageVolLookupByName(name).delete(0)

    def create_volume(self, spec: VolumeSpec) -> None:
        """Create ``spec`` (a clone of ``spec.source`` if set); a failure leaves no volume."""
        handle = self._lookup_pool(spec.pool)
        if self._volume_exists(handle, spec.name):
            raise OperationError(
                f"volume {spec.name} already exists in pool {spec.pool}", "choose another name"
            )
        source = self._lookup_volume(spec.pool, spec.source) if spec.source else None
        flags = 0
        if spec.prealloc_metadata:
            flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
        if spec.reflink:
            flags |= libvirt.VIR_STORAGE_VOL_CREATE_REFLINK
        xml = _volume_xml(spec)
        try:
            if source is None:
                handle.createXML(xml, flags)
            else:
                handle.createXMLFrom(xml, source, flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_STORAGE_VOL_EXIST:  # made meanwhile
                self._remove_partial(handle, spec.name)
            if spec.reflink and "not supported" in _msg(exc):
                raise OperationError(
                    f"pool {spec.pool}: its filesystem cannot reflink ({_msg(exc)})",
                    "reflink needs btrfs, or xfs made with reflink=1; clone without --reflink",
                ) from exc
            raise _error(exc, f"volume {spec.pool}/{spec.name}") from exc
        except BaseException:
            self._remove_partial(handle, spec.name)
            raise

    def resize_volume(
        self, pool: str, name: str, capacity: int, *, allocate: bool, shrink: bool
    ) -> None:
        vol = self._lookup_volume(pool, name)
        flags = (libvirt.VIR_STORAGE_VOL_RESIZE_ALLOCATE if allocate else 0) | (
            libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if shrink else 0
        )
        with _translate(f"volume {pool}/{name}"):
            vol.resize(capacity, flags)

    def block_resize(self, domain: str, target: str, capacity: int) -> None:
        """Grow a running domain's disk through QEMU (the image is locked by it)."""
        dom = self._lookup_domain(domain)
        with _translate(f"disk {target} of domain {domain}"):
            dom.blockResize(target, capacity, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def delete_volume(self, pool: str, name: str) -> None:
        vol = self._lookup_volume(pool, name)
        with _translate(f"volume {pool}/{name}"):
            vol.delete(0)

    def wipe_volume(self, pool: str, name: str, algorithm: str) -> None:
        vol = self._lookup_volume(pool, name)
        with _translate(f"volume {pool}/{name}"):
            vol.wipePattern(getattr(libvirt, f"VIR_STORAGE_VOL_WIPE_ALG_{algorithm.upper()}"), 0)

    def upload_volume(self, spec: VolumeSpec, file: str, progress: Progress | None) -> None:
        """Create ``spec`` and fill it with ``file`` as a sparse stream (holes are sent as
        holes); on any failure the stream is aborted and the new volume removed."""
        try:
            fd = os.open(file, os.O_RDONLY)
        except OSError as exc:
            raise OperationError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            self.create_volume(spec)
            handle = self._lookup_pool(spec.pool)
            try:
                vol = handle.storageVolLookupByName(spec.name)
                stream = self._conn.newStream(0)
                with _streaming(stream, f"upload of {file} to {spec.pool}/{spec.name}"):
                    vol.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
                    stream.sparseSendAll(_reader(progress), _in_data, _skipper(progress), fd)
                    stream.finish()
            except BaseException:
                self._remove_partial(handle, spec.name)
                raise
        finally:
            os.close(fd)

    def download_volume(
        self, pool: str, name: str, file: str, *, overwrite: bool, progress: Progress | None
    ) -> None:
        """Write a volume's content to ``file`` (mode 0600) as a sparse stream: holes stay
        holes. A failed download removes the file."""
        vol = self._lookup_volume(pool, name)
        mode = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(file, mode, 0o600)
        except OSError as exc:
            raise OperationError(f"cannot write {file}: {exc.strerror}") from exc
        done = False
        try:
            stream = self._conn.newStream(0)
            with _streaming(stream, f"download of {pool}/{name} to {file}"):
                vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
                stream.sparseRecvAll(_writer(progress), _hole_writer(progress), fd)
                stream.finish()
            done = True
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(file)

    def attach_disk(self, disk: DiskSpec) -> None:
        dom = self._lookup_domain(disk.domain)
        with _translate(f"domain {disk.domain}"):
            dom.attachDeviceFlags(_disk_xml(disk), _affect(disk))

    def detach_disk(self, disk: DiskSpec) -> None:
        """Detach the disk ``disk.target``, as the live or the persistent XML describes it."""
        dom = self._lookup_domain(disk.domain)
        with _translate(f"domain {disk.domain}"):
            live = disk.live or (not disk.config and dom.isActive())
            doc = _xml(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))
            for node in doc.findall("devices/disk"):
                if _attr(node.find("target"), "dev") == disk.target:
                    dom.detachDeviceFlags(ET.tostring(node, encoding="unicode"), _affect(disk))
                    return
        raise NotFound(f"domain {disk.domain} has no disk {disk.target}")


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


def _pool_xml(spec: PoolDefinition) -> str:
    root = ET.Element("pool", type=spec.type)
    ET.SubElement(root, "name").text = spec.name
    if spec.source_devices or spec.source_host or spec.source_path or spec.source_name:
        source = ET.SubElement(root, "source")
        for device in spec.source_devices:
            ET.SubElement(source, "device", path=device)
        if spec.source_host:
            ET.SubElement(source, "host", name=spec.source_host)
        if spec.source_path:
            ET.SubElement(source, "dir", path=spec.source_path)
        if spec.source_name:
            ET.SubElement(source, "name").text = spec.source_name
        if spec.source_format:
            ET.SubElement(source, "format", type=spec.source_format)
    ET.SubElement(ET.SubElement(root, "target"), "path").text = spec.target
    return ET.tostring(root, encoding="unicode")


def _volume_xml(spec: VolumeSpec) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "capacity", unit="bytes").text = str(spec.capacity)
    if spec.allocation is not None:
        ET.SubElement(root, "allocation", unit="bytes").text = str(spec.allocation)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=spec.format)
    if spec.format == "qcow2":
        ET.SubElement(target, "compat").text = "1.1"  # libvirt's default is the old 0.10
    if spec.backing:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = spec.backing[0]
        ET.SubElement(store, "format", type=spec.backing[1])
    return ET.tostring(root, encoding="unicode")


def _disk_xml(disk: DiskSpec) -> str:
    node = ET.Element("disk", type="volume", device="disk")
    ET.SubElement(node, "driver", name="qemu", type=disk.format)
    ET.SubElement(node, "source", pool=disk.pool, volume=disk.volume)
    ET.SubElement(node, "target", dev=disk.target, bus=disk.bus)
    return ET.tostring(node, encoding="unicode")


def _affect(disk: DiskSpec) -> int:
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if disk.live else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if disk.config else 0
    )
    return flags or libvirt.VIR_DOMAIN_AFFECT_CURRENT
