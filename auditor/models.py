"""The project's own value types, built by the collectors at the boundary.

Sizes are integer bytes; ``None`` means "not known" (an inactive pool, a size the backend
cannot report), never zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

GROUP_TYPES = frozenset({"shared-fs", "unmanaged"})  # summary rows that are not libvirt pools


Repair = Literal["leaks", "all"]  # qemu-img check -r


class Provisioning(StrEnum):
    """How much of its virtual size a disk already holds on the host."""

    PREALLOCATED = "preallocated"
    THIN = "thin"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FsInfo:
    """A local filesystem, as ``os.statvfs`` and ``os.stat`` see it."""

    device: int  # st_dev: pools with the same device share their capacity
    mount_point: str
    capacity: int  # f_blocks * f_frsize
    free: int  # f_bfree * f_frsize (includes blocks reserved for root)
    usable: int  # f_bavail * f_frsize (what QEMU, not running as root, can use)


@dataclass(frozen=True)
class Pool:
    """A libvirt storage pool. Figures are ``None`` when the pool is inactive."""

    host: str
    name: str
    uuid: str
    type: str
    state: str  # running, inactive, building, degraded, inaccessible
    persistent: bool
    autostart: bool
    target_path: str
    capacity: int | None
    allocation: int | None
    available: int | None  # libvirt's; for dir/fs pools it includes root-reserved blocks
    fs: FsInfo | None = None  # set for pools on a local filesystem

    @property
    def active(self) -> bool:
        return self.state == "running"

    @property
    def usable(self) -> int | None:
        """Usable free space: statvfs ``f_bavail`` where known, else libvirt's ``available``."""
        return self.fs.usable if self.fs is not None else self.available


@dataclass(frozen=True)
class Disk:
    """One image: a managed volume, an unmanaged domain disk, or a scanned file."""

    host: str
    path: str
    name: str  # the volume name, or the file name of an unmanaged image
    pool: str | None  # None: unmanaged
    backend: str  # the pool type (dir, fs, logical, iscsi, ...) or "unmanaged"
    kind: str  # file, block, network
    format: str | None
    virtual_size: int | None
    disk_size: int | None
    physical: int | None = None  # st_size of a file; None when not known
    backing_file: str | None = None
    backing_format: str | None = None
    cluster_size: int | None = None
    fs: FsInfo | None = None  # the local filesystem holding an unmanaged file
    notes: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return self.pool is not None


@dataclass(frozen=True)
class DomainDisk:
    """A disk as a domain's XML names it, with the sizes libvirt reports for it."""

    target: str  # vda, sdb, ...
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, volume, network
    path: str | None  # resolved source path (None for an empty drive or unresolved volume)
    pool: str | None = None  # <source pool=...> of a type='volume' disk
    volume: str | None = None
    format: str | None = None  # <driver type=...>
    readonly: bool = False
    backing_chain: tuple[str, ...] = ()  # backing paths from the live XML, top first
    virtual_size: int | None = None  # from bulk domain stats
    disk_size: int | None = None


@dataclass(frozen=True)
class Domain:
    host: str
    name: str
    uuid: str
    state: str  # running, paused, shut off, ...
    persistent: bool
    disks: tuple[DomainDisk, ...] = ()
    autostart: bool = False

    @property
    def active(self) -> bool:
        return self.state not in ("shut off", "crashed", "no state")


@dataclass(frozen=True)
class ImageInfo:
    """``qemu-img info --output=json`` of one image."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int | None
    cluster_size: int | None = None
    backing_file: str | None = None
    backing_format: str | None = None
    dirty: bool = False
    corrupt: bool = False
    encrypted: bool = False
    snapshots: int = 0


@dataclass(frozen=True)
class CheckResult:
    """``qemu-img check --output=json``. qemu-img omits zero counts; they read as 0 here.

    After a repair, ``corruptions``/``leaks`` are what a re-check found (what is left) and the
    ``*_fixed`` counts what was repaired. A dirty lazy-refcounts image (see ``info().dirty``)
    shows up as corruptions ("refcount=0 reference=1") that ``repair="all"`` rebuilds.
    """

    filename: str
    format: str
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0  # the check itself could not complete (I/O errors, ...)
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int | None = None  # None when the format does not report it
    total_clusters: int = 0
    allocated_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0

    @property
    def clean(self) -> bool:
        return not (self.corruptions or self.leaks or self.check_errors)

    @property
    def needs_repair(self) -> bool:
        return bool(self.corruptions or self.leaks)

    @property
    def repair_mode(self) -> Repair | None:
        """The ``check(repair=...)`` that fixes what was found: leaks alone need only "leaks"."""
        return "all" if self.corruptions else "leaks" if self.leaks else None


@dataclass(frozen=True)
class Measure:
    """``qemu-img measure --output=json``: bytes a converted copy needs."""

    required: int  # with the given preallocation, for the data the image holds
    fully_allocated: int  # if every cluster were allocated
    bitmaps: int | None = None  # persistent dirty bitmaps; given for qcow2 output only


@dataclass(frozen=True)
class Skip:
    """An item that could not be read or an action not taken: data that reaches the report."""

    host: str
    kind: str  # host, pool, volume, domain, disk, image
    name: str
    reason: str
    vanished: bool = False  # it no longer exists (deleted between list and inspect)


Labels = tuple[tuple[str, str], ...]  # a host's labels (from the hosts file), in file order
LABEL_PREFIX = "label_"  # a host label's column in CSV and JSON: label_site for the label site
# Label names the metrics give their samples themselves: no host label may take one.
OWN_LABELS = frozenset(
    {"host", "pool", "type", "filesystem", "provisioning", "code", "severity", "uri"}
)


@dataclass(frozen=True)
class Target:
    """A host to collect: its libvirt URI (None: libvirt's default), the name that is its
    host column everywhere (None: the name libvirt reports), and its labels."""

    uri: str | None
    name: str | None = None
    labels: Labels = ()

    @property
    def label(self) -> str:
        """How messages name the host before it is reached."""
        return self.name or self.uri or "default"


@dataclass(frozen=True)
class HostInventory:
    """Everything collected from one libvirt connection."""

    host: str
    uri: str
    collected_at: datetime
    pools: tuple[Pool, ...] = ()
    disks: tuple[Disk, ...] = ()
    domains: tuple[Domain, ...] = ()
    skips: tuple[Skip, ...] = ()
    notices: tuple[str, ...] = ()
    local: bool = False  # its paths are this machine's (stat and qemu-img apply)
    labels: Labels = ()


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[HostInventory, ...] = ()
    skips: tuple[Skip, ...] = ()  # failures outside any host (an unreachable URI)
    labels: tuple[tuple[str, Labels], ...] = ()  # every named host's labels, reached or not

    @property
    def all_skips(self) -> tuple[Skip, ...]:
        return self.skips + tuple(s for h in self.hosts for s in h.skips)


@dataclass(frozen=True)
class DiskReport:
    """A disk with what the analyzer concluded about it."""

    disk: Disk
    provisioning: Provisioning
    growth: int | None  # bytes the disk can still take on the host
    used_by: tuple[str, ...] = ()  # domains referencing it (directly or as a backing file)
    reason: str = ""  # why provisioning is unknown, or other notes
    backing_only: bool = False  # only ever opened read-only as a backing image
    implausible: tuple[str, ...] = ()  # sizes reported that cannot be true (made None), why


@dataclass(frozen=True)
class PoolSummary:
    """Figures of a pool, of pools sharing a filesystem, or of unmanaged disks on one."""

    host: str
    pool: str
    type: str  # the pool type, "shared-fs" or "unmanaged"
    state: str
    capacity: int | None
    allocation: int | None
    usable_free: int | None  # statvfs f_bavail where known, else libvirt's available
    volumes: int | None  # counts and sums are None for an inactive pool: it cannot list them
    thin: int | None
    preallocated: int | None
    unknown: int | None
    provisioned: int | None
    used: int | None
    overcommit_ratio: float | None
    exposure: int | None
    filesystem: str | None = None  # mount point of a local filesystem
    members: tuple[str, ...] = ()  # the pools of a shared-fs group
    target: str = ""  # the pool's target path
    autostart: bool | None = None  # None for group rows
    persistent: bool | None = None
    notes: tuple[str, ...] = ()  # why a figure is unknown: what libvirt reported, and why

    @property
    def is_pool(self) -> bool:
        """A libvirt pool's row, not a shared-filesystem group or unmanaged disks."""
        return self.type not in GROUP_TYPES


@dataclass(frozen=True)
class Summary:
    """The analyzed inventory: what every renderer and rule works from."""

    collected_at: datetime
    hosts: tuple[str, ...]
    disks: tuple[DiskReport, ...]
    pools: tuple[PoolSummary, ...]
    skips: tuple[Skip, ...] = ()
    notices: tuple[str, ...] = ()
    inventory: Inventory = field(default=Inventory(), repr=False, compare=False)

    @property
    def domains(self) -> tuple[Domain, ...]:
        return tuple(d for h in self.inventory.hosts for d in h.domains)

    @property
    def host_labels(self) -> dict[str, dict[str, str]]:
        """Each host's labels, an unreachable one's too (hosts without labels map to {})."""
        inv = self.inventory
        return {n: dict(lab) for n, lab in inv.labels} | {h.host: dict(h.labels) for h in inv.hosts}

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Every label key of the hosts, in first-seen order."""
        inv = self.inventory
        every = [*(lab for _, lab in inv.labels), *(h.labels for h in inv.hosts)]
        return tuple(dict.fromkeys(k for labels in every for k, _ in labels))


def overcommit_ratio(provisioned: int, capacity: int | None) -> float | None:
    """overcommit_ratio = provisioned / capacity (Python's int division is correctly rounded),
    to 4 decimals; None when the capacity is not known (or 0)."""
    return round(provisioned / capacity, 4) if capacity else None


# ---- requests for managed operations, handed to the libvirt adapter as plain values ----

Progress = Callable[[int], None]  # called with the bytes just transferred


@dataclass(frozen=True)
class PoolDefinition:
    name: str
    type: str  # dir, fs, netfs, logical
    target: str
    source_host: str | None = None  # netfs server
    source_path: str | None = None  # netfs export
    source_devices: tuple[str, ...] = ()  # fs: the device; logical: physical volumes
    source_name: str | None = None  # logical: volume group name
    source_format: str | None = None  # fs: ext4, xfs, auto; netfs: nfs, auto, cifs; logical: lvm2


@dataclass(frozen=True)
class BackingStore:
    path: str
    format: str


@dataclass(frozen=True)
class VolumeSpec:
    """A volume to create (or to clone from ``source`` in the same pool)."""

    pool: str
    name: str
    capacity: int
    format: str
    allocation: int | None  # None: <allocation> left out
    prealloc_metadata: bool = False  # VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
    backing: BackingStore | None = None  # the backing image of a qcow2 overlay
    source: str | None = None  # clone: the volume copied
    reflink: bool = False  # VIR_STORAGE_VOL_CREATE_REFLINK


@dataclass(frozen=True)
class DiskSpec:
    """A ``<disk type='volume'>`` of a domain."""

    domain: str
    pool: str
    volume: str
    format: str
    target: str
    bus: str
    live: bool  # neither live nor config: libvirt's "current" (live if running, else config)
    config: bool


# ---- requests: what an operation asks the libvirt adapter to do -----------------------------


class PoolOp(StrEnum):
    """A pool life-cycle action that takes no parameter."""

    START = "start"
    STOP = "stop"  # libvirt's destroy: inactive, data intact
    REFRESH = "refresh"
    DELETE = "delete"  # remove the (empty) underlying storage
    UNDEFINE = "undefine"


@dataclass(frozen=True)
class DefinePool:
    spec: PoolDefinition


@dataclass(frozen=True)
class BuildPool:
    pool: str
    no_overwrite: bool  # VIR_STORAGE_POOL_BUILD_NO_OVERWRITE: never touch existing data


@dataclass(frozen=True)
class PoolAction:
    pool: str
    op: PoolOp


@dataclass(frozen=True)
class SetAutostart:
    pool: str
    enabled: bool


@dataclass(frozen=True)
class CreateVolume:
    spec: VolumeSpec  # a clone when spec.source is set


@dataclass(frozen=True)
class ResizeVolume:
    pool: str
    name: str
    capacity: int
    allocate: bool = False
    shrink: bool = False


@dataclass(frozen=True)
class BlockResize:
    """Grow a running domain's disk through QEMU (the image is locked by it)."""

    domain: str
    target: str
    capacity: int


@dataclass(frozen=True)
class DeleteVolume:
    pool: str
    name: str


WIPE_ALGORITHMS = (
    "zero", "nnsa", "dod", "bsi", "gutmann", "schneier", "pfitzner7", "pfitzner33", "random",
    "trim",
)  # fmt: skip


@dataclass(frozen=True)
class WipeVolume:
    pool: str
    name: str
    algorithm: str  # zero, nnsa, dod, ... (libvirt's VIR_STORAGE_VOL_WIPE_ALG_*)


@dataclass(frozen=True)
class Upload:
    spec: VolumeSpec  # the volume created for the file
    file: str


@dataclass(frozen=True)
class Download:
    pool: str
    name: str
    file: str  # the final path
    overwrite: bool
    temp: str  # the new file beside it that receives the data, then is renamed to ``file``


@dataclass(frozen=True)
class Attach:
    disk: DiskSpec


@dataclass(frozen=True)
class Detach:
    disk: DiskSpec


@dataclass(frozen=True)
class RemoveMade:
    """Delete a volume an interrupted auditor run created, only while key, path and inode
    still prove it is that volume."""

    pool: str
    name: str
    key: str
    path: str
    inode: tuple[int, int] | None  # (st_dev, st_ino), when it was made on this machine


Request = (
    DefinePool
    | BuildPool
    | PoolAction
    | SetAutostart
    | CreateVolume
    | ResizeVolume
    | BlockResize
    | DeleteVolume
    | WipeVolume
    | Upload
    | Download
    | Attach
    | Detach
    | RemoveMade
)


@dataclass(frozen=True)
class Const:
    """A libvirt constant passed as an argument, by name (resolved by the adapter)."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LibvirtCall:
    """One libvirt API call exactly as the adapter makes it: the adapter builds this value and
    executes it (flags and constants resolved from these names), so a plan's description and
    the executed call cannot differ."""

    function: str  # virStorageVolCreateXML, ...
    args: tuple[tuple[str, int | str | Const], ...] = ()
    flags: tuple[str, ...] | None = ()  # names of VIR_* flags; None: the call takes no flags
    document: str = ""  # the XML sent, if any
    outline: str = ""  # the document in words, made from the same element

    def arg(self, name: str) -> int | str | Const:
        return dict(self.args)[name]

    def __str__(self) -> str:
        parts = [self.outline] if self.outline else []
        parts += [f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in self.args]
        if self.flags is not None:
            parts.append("flags " + ("|".join(self.flags) or "0"))
        return f"{self.function}({', '.join(parts)})"


# ---- findings of the audit ------------------------------------------------------------------


class Severity(StrEnum):
    INFO = "info"
    WARN = "warn"
    CRIT = "crit"

    @property
    def rank(self) -> int:
        """0 for the worst."""
        return {"crit": 0, "warn": 1, "info": 2}[self.value]


class FixKind(StrEnum):
    """What a fix does. Safe fixes move no data; unsafe ones need --unsafe-fixes."""

    REFRESH_POOL = "refresh the pool"
    START_POOL = "start the pool"
    AUTOSTART_POOL = "turn the pool's autostart on"
    REPAIR_LEAKS = "repair leaked clusters (qemu-img check -r leaks)"
    REMOVE_LEFTOVER = "remove what the interrupted auditor run left"
    PREALLOCATE = "preallocate the volume"
    SPARSIFY = "sparsify the volume"

    @property
    def safe(self) -> bool:
        return self not in (FixKind.PREALLOCATE, FixKind.SPARSIFY)


Figure = int | float | str | None


@dataclass(frozen=True)
class Finding:
    """Something wrong, against the policy: a stable code, the object, the figures."""

    code: str
    severity: Severity
    host: str
    pool: str  # '' when no pool is concerned
    volume: str  # '' when no volume is concerned (a path for an unmanaged disk)
    message: str
    figures: tuple[tuple[str, Figure], ...] = ()
    fix: FixKind | None = None

    def figure(self, name: str) -> Figure:
        return dict(self.figures).get(name)


@dataclass(frozen=True)
class ImageFix:
    """A fix made with qemu-img or the filesystem of this machine, not through libvirt."""

    kind: FixKind  # REPAIR_LEAKS, PREALLOCATE, SPARSIFY or REMOVE_LEFTOVER (a file)
    path: str
    format: str
    size: int = 0  # PREALLOCATE raw: the file's size, allocated in full
    copy: str = ""  # qcow2 PREALLOCATE/SPARSIFY: the copy beside ``path`` that replaces it
    inode: tuple[int, int] | None = None  # REMOVE_LEFTOVER: (st_dev, st_ino) it must still have
