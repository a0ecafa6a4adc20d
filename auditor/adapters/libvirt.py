"""The only module that imports libvirt: bulk inventory reads, and every managed operation.

libvirt handles, tuples and XML are turned into the project's models here; nothing foreign
leaves this module. Objects that vanish between list and inspect become ``Skip`` records.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from auditor.errors import ConnectError
from auditor.models import Disk, Domain, DomainDisk, Pool, Skip

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
