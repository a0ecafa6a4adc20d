"""Prometheus metrics of a collection (prometheus-client): the families, the node_exporter
textfile format written atomically, and a ``/metrics`` listener answering from the last
collection, renewed in the background at most every interval.

Names are in base units (README, "Fleet"). A figure that is not known is not a sample: it is
left out, never exported as a number. Labels: ``host``, ``pool``, ``type`` (the summary row's:
a pool type, ``shared-fs`` or ``unmanaged``; unmanaged rows also carry ``filesystem``), plus
each host's own labels from a ``HostLabels`` hook (a hosts file).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import MetricsHandler

from auditor.config import Config
from auditor.errors import ConfigError
from auditor.models import OWN_LABELS, Finding, PoolSummary, Summary
from auditor.thresholds import Level, assess

HostLabels = Callable[[str], Mapping[str, str]]  # a host's own labels, e.g. {"site": "ams1"}
PoolKey = tuple[str, str, str]  # host, pool, type of a summary row
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LEVELS = {Level.OK: 0, Level.WARN: 1, Level.CRIT: 2}  # Level.UNKNOWN: no sample
DAY = 86_400  # seconds: days_to_full is exported in the base unit (promtool refuses days)


def no_labels(host: str) -> Mapping[str, str]:
    """No labels of its own for any host (until a hosts file gives some)."""
    return {}


@dataclass(frozen=True)
class HostStatus:
    """Whether a ``--connect`` host could be read, and how long it took."""

    uri: str
    host: str
    up: bool
    seconds: float


@dataclass(frozen=True)
class Reading:
    """One collection, as the metrics show it."""

    at: datetime
    hosts: tuple[HostStatus, ...]
    summary: Summary | None  # None when no host could be read
    findings: tuple[Finding, ...] | None = None  # None: the audit did not run
    days_to_full: Mapping[PoolKey, float] = field(default_factory=dict)  # the plan's, in days


POOL_GAUGES: tuple[tuple[str, str, Callable[[PoolSummary], float | None]], ...] = (
    ("pool_capacity_bytes", "Capacity of the pool (of the filesystem, for a shared-fs group).",
     lambda p: p.capacity),
    ("pool_usable_free_bytes", "Usable free space: statvfs f_bavail on a local filesystem, else "
     "libvirt's available.", lambda p: p.usable_free),
    ("pool_used_bytes", "Sum of the disk sizes of the pool's volumes.", lambda p: p.used),
    ("pool_provisioned_bytes", "Sum of the virtual sizes of the pool's volumes.",
     lambda p: p.provisioned),
    ("pool_overcommit_ratio", "Provisioned bytes / capacity.", lambda p: p.overcommit_ratio),
    ("pool_exposure_bytes", "What the pool must still absorb if every thin disk fills: the sum "
     "of its volumes' growth.", lambda p: p.exposure),
)  # fmt: skip


class _Labels:
    """A sample's labels: its own, then its host's (from the ``HostLabels`` hook, checked);
    a label whose value is empty is left out."""

    def __init__(self, hosts: Iterable[str], labels: HostLabels) -> None:
        self._of = {h: {str(k): str(v) for k, v in labels(h).items()} for h in sorted(set(hosts))}
        for host, own in self._of.items():
            for name in own:
                if not _LABEL.fullmatch(name) or name.startswith("__") or name in OWN_LABELS:
                    raise ConfigError(
                        f"host {host}: {name!r} cannot be a label",
                        f"a label name matches [a-zA-Z_][a-zA-Z0-9_]* and is not one of "
                        f"{', '.join(sorted(OWN_LABELS))}",
                    )

    def __call__(self, host: str, **own: str) -> dict[str, str]:
        found = {"host": host, **own, **self._of.get(host, {})}
        return {k: v for k, v in found.items() if v}


def _gauge(name: str, doc: str) -> Metric:
    return Metric(f"auditor_{name}", doc, "gauge")


def _add(metric: Metric, labels: dict[str, str], value: float) -> None:
    metric.add_sample(metric.name, labels, float(value))


def _pool_labels(p: PoolSummary, lab: _Labels) -> dict[str, str]:
    fs = (p.filesystem or "") if p.type == "unmanaged" else ""  # one row per filesystem
    return lab(p.host, pool=p.pool, type=p.type, filesystem=fs)


def pool_families(
    summary: Summary, config: Config, lab: _Labels, days_to_full: Mapping[PoolKey, float]
) -> list[Metric]:
    """The pool figures, the volume counts, the threshold level and the time to full."""
    gauges = [(_gauge(n, doc), figure) for n, doc, figure in POOL_GAUGES]
    volumes = _gauge("pool_volumes", "Volumes of the pool by provisioning.")
    level = _gauge("pool_level", "Threshold level of the pool: 0 ok, 1 warn, 2 crit.")
    to_full = _gauge(
        "pool_time_to_full_seconds", "Time until used space reaches capacity at the growth "
        "fitted over the history (auditor plan's days_to_full), as of its newest snapshot.",
    )  # fmt: skip
    seen: set[tuple[tuple[str, str], ...]] = set()
    for p in summary.pools:
        labels = _pool_labels(p, lab)
        if tuple(labels.items()) in seen:  # the same host read twice (two URIs of one host)
            continue
        seen.add(tuple(labels.items()))
        for gauge, figure in gauges:
            known = figure(p)
            if known is not None:
                _add(gauge, labels, known)
        for kind, count in (("thin", p.thin), ("preallocated", p.preallocated),
                            ("unknown", p.unknown)):  # fmt: skip
            if count is not None:
                _add(volumes, labels | {"provisioning": kind}, count)
        found = LEVELS.get(assess(p, config.for_pool(p.pool, p.host)).level)
        if found is not None:
            _add(level, labels, found)
        if (p.host, p.pool, p.type) in days_to_full:
            _add(to_full, labels, round(days_to_full[(p.host, p.pool, p.type)] * DAY, 3))
    return [*(g for g, _ in gauges), volumes, level, to_full]


def host_families(reading: Reading, lab: _Labels) -> list[Metric]:
    """Up, collect time, findings and when the collection was made."""
    up = _gauge("host_up", "1 if the host's libvirt could be read, else 0.")
    took = _gauge("host_collect_seconds", "Seconds taken to collect the host.")
    for h in reading.hosts:
        _add(up, lab(h.host, uri=h.uri), 1 if h.up else 0)
        _add(took, lab(h.host, uri=h.uri), round(h.seconds, 6))
    at = _gauge("collection_timestamp_seconds", "When the figures were collected (Unix time).")
    _add(at, {}, reading.at.timestamp())
    out = [up, took, at]
    if reading.findings is not None:
        found = _gauge("findings", "Audit findings of the host by code and severity.")
        counts = Counter((f.host, f.code, f.severity.value) for f in reading.findings)
        for (host, code, severity), n in sorted(counts.items()):
            _add(found, lab(host, code=code, severity=severity), n)
        out.append(found)
    return out


def families(reading: Reading, config: Config, labels: HostLabels = no_labels) -> list[Metric]:
    """Every metric family of a reading (``labels``: each host's own labels)."""
    hosts = [h.host for h in reading.hosts]
    if reading.summary is not None:
        hosts += [p.host for p in reading.summary.pools]
    lab = _Labels(hosts, labels)
    pools = pool_families(reading.summary, config, lab, reading.days_to_full) if (
        reading.summary is not None
    ) else []  # fmt: skip
    return [*pools, *host_families(reading, lab)]


class Fixed:
    """Metric families as a prometheus-client collector."""

    def __init__(self, found: Iterable[Metric]) -> None:
        self._families = list(found)

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def render(found: Iterable[Metric]) -> bytes:
    """The text exposition format (what node_exporter's textfile collector reads)."""
    return generate_latest(Fixed(found))


def write_textfile(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it (its name does not end
    in .prom, so node_exporter skips it), flushed, made world-readable, renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Latest:
    """The families of the last collection; ``start`` collects once, then a thread collects
    again at most every ``interval`` seconds (start to start). A failed collection keeps the
    previous one and is passed to ``on_error``."""

    def __init__(
        self,
        read: Callable[[], list[Metric]],
        interval: float,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._read, self._interval, self._on_error = read, interval, on_error
        self._families: list[Metric] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.collections = 0

    def start(self) -> None:
        started = time.monotonic()
        self._set(self._read())
        thread = threading.Thread(target=self._loop, args=(started,), daemon=True)
        thread.start()

    def _set(self, found: list[Metric]) -> None:
        with self._lock:
            self._families = found
            self.collections += 1

    def _loop(self, started: float) -> None:
        while not self._stop.wait(max(0.0, started + self._interval - time.monotonic())):
            started = time.monotonic()
            try:
                found = self._read()
            except Exception as exc:  # a bug or a lost history must not stop the listener
                self._on_error(exc)
            else:
                self._set(found)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return iter(self._families)

    def stop(self) -> None:
        self._stop.set()


class _Handler(MetricsHandler):
    """GET /metrics from ``registry``; any other path: 404."""

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        super().do_GET()


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; the host must be given (nothing is bound that the
    user did not name)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9177, [::1]:9177)")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, int(port)


def listener(address: tuple[str, int], source: Any) -> ThreadingHTTPServer:
    """An HTTP server bound to ``address`` (only it) serving ``source``'s families at /metrics."""
    family, _, _, _, sockaddr = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0]

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = False  # a bounded run waits for its last answer

    handler = type("Handler", (_Handler,), {"registry": source})
    return Server((str(sockaddr[0]), int(sockaddr[1])), handler)


def serve(server: ThreadingHTTPServer, max_requests: int | None = None) -> None:
    """Answer requests: ``max_requests`` of them, or until interrupted; then close."""
    try:
        if max_requests is None:
            server.serve_forever()
        for _ in range(max_requests or 0):
            server.handle_request()
    finally:
        server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"
