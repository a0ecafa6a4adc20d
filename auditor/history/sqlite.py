"""The embedded history store: an SQLite file, one snapshot per run, a row per pool and volume.

The file is identified by ``PRAGMA application_id`` and versioned by ``PRAGMA user_version``
(the schema is documented in the README). It runs in WAL mode and every write is one
``BEGIN IMMEDIATE`` transaction, so concurrent runs are safe. A file that is not ours
(corrupt, foreign, newer) raises ``HistoryError`` and is never written to.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, get_type_hints

from auditor.errors import HistoryError
from auditor.history import SCHEMA_VERSION, recorded, stamp
from auditor.interfaces import Earlier, PoolPoint, SeriesPoint, SnapshotInfo, VolumePoint
from auditor.models import Labels, Summary

APPLICATION_ID = 0x41554454  # "AUDT"
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one

# MIGRATIONS[n]: the statements that take a file from schema n - 1 to n (0: empty), all in one
# transaction. A version once released never changes: a new file runs every step in turn.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE snapshots (
  id              INTEGER PRIMARY KEY,
  collected_at    TEXT NOT NULL,     -- ISO-8601 UTC: when the figures were read (or --at)
  recorded_at     TEXT NOT NULL,     -- ISO-8601 UTC: when this row was written
  hosts           TEXT NOT NULL,     -- JSON list of the hosts read
  skipped         INTEGER NOT NULL,  -- items that could not be read
  auditor_version TEXT NOT NULL
)""",
        "CREATE INDEX snapshots_by_time ON snapshots (collected_at)",
        """CREATE TABLE pools (
  snapshot_id      INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  host             TEXT NOT NULL,
  pool             TEXT NOT NULL,
  type             TEXT NOT NULL,
  state            TEXT NOT NULL,
  capacity         INTEGER,
  allocation       INTEGER,
  available        INTEGER,
  volumes          INTEGER,
  thin             INTEGER,
  preallocated     INTEGER,
  unknown          INTEGER,
  provisioned      INTEGER,
  used             INTEGER,
  overcommit_ratio REAL,
  exposure         INTEGER,
  filesystem       TEXT NOT NULL,
  target           TEXT NOT NULL,
  autostart        INTEGER,          -- 0 or 1; NULL for a group row
  persistent       INTEGER,          -- 0 or 1; NULL for a group row
  members          TEXT NOT NULL     -- pools of a shared-fs group, ';'-joined
)""",
        "CREATE INDEX pools_by_snapshot ON pools (snapshot_id)",
        "CREATE INDEX pools_by_name ON pools (host, pool)",
        """CREATE TABLE volumes (
  snapshot_id  INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  host         TEXT NOT NULL,
  pool         TEXT NOT NULL,        -- '' for an unmanaged disk
  volume       TEXT NOT NULL,
  path         TEXT NOT NULL,
  format       TEXT NOT NULL,
  provisioning TEXT NOT NULL,
  virtual_size INTEGER,
  disk_size    INTEGER,
  growth       INTEGER,
  managed      INTEGER NOT NULL,     -- 0 or 1
  used_by      TEXT NOT NULL,        -- ';'-joined domain names
  backing_file TEXT NOT NULL,
  kind         TEXT NOT NULL,
  note         TEXT NOT NULL,
  physical     INTEGER               -- st_size of a file
)""",
        "CREATE INDEX volumes_by_snapshot ON volumes (snapshot_id)",
        """CREATE VIEW pool_series AS
  SELECT s.collected_at, p.* FROM pools p JOIN snapshots s ON s.id = p.snapshot_id""",
        """CREATE VIEW volume_series AS
  SELECT s.collected_at, v.* FROM volumes v JOIN snapshots s ON s.id = v.snapshot_id""",
    ),
    # labels: the host's, a JSON object with sorted keys. (No SQL comment after a column
    # added: SQLite splices its text into CREATE TABLE, before the closing parenthesis.) The
    # views need no change: SQLite expands their p.* and v.* whenever a statement reads them.
    2: (
        "ALTER TABLE pools ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE volumes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'",
    ),
}

SNAPSHOT_COLUMNS = ", ".join(f.name for f in fields(SnapshotInfo))  # the snapshots table
READ_HOST = "EXISTS (SELECT 1 FROM json_each(s.hosts) WHERE value = :host)"  # s: snapshots

Point = PoolPoint | VolumePoint
P = TypeVar("P", PoolPoint, VolumePoint)


def columns(point: type[Point]) -> tuple[str, ...]:
    """The columns of a point's table after ``snapshot_id``: the point's field names, in order,
    as ``MIGRATIONS`` make them. (No name differs; one that did would be mapped here. Renaming a
    field renames a column: that needs a new schema version.)"""
    return tuple(f.name for f in fields(point))


class StoredAs(NamedTuple):
    """How a point type's fields are stored where they are not stored as they are."""

    joined: frozenset[str]  # tuples of text: ';'-joined
    flags: frozenset[str]  # bools: 0/1
    objects: frozenset[str]  # labels: a JSON object, keys sorted


def _stored_as(point: type[Point]) -> StoredAs:
    """The tuple, bool and ``Labels`` fields of a point type."""
    hints = get_type_hints(point)
    return StoredAs(
        frozenset(n for n, t in hints.items() if t == tuple[str, ...]),
        frozenset(n for n, t in hints.items() if t in (bool, bool | None)),
        frozenset(n for n, t in hints.items() if t == Labels),
    )


_STORED_AS = {PoolPoint: _stored_as(PoolPoint), VolumePoint: _stored_as(VolumePoint)}


def _labels_json(labels: Labels) -> str:
    """Labels as stored: a JSON object, keys sorted, compact, non-ASCII as it is."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_row(point: Point) -> dict[str, Any]:
    """A point as its table stores it: tuples ';'-joined, bools as 0/1, labels as JSON."""
    stored = _STORED_AS[type(point)]
    row = {name: getattr(point, name) for name in columns(type(point))}
    for name in stored.joined:
        row[name] = ";".join(row[name])
    for name in stored.flags:
        row[name] = None if row[name] is None else int(row[name])
    for name in stored.objects:
        row[name] = _labels_json(row[name])
    return row


def _point(cls: type[P], row: Sequence[Any]) -> P:
    """The point a stored row (its ``columns``, in order) holds."""
    stored = _STORED_AS[cls]
    values = dict(zip(columns(cls), row, strict=True))
    for name in stored.joined:
        values[name] = tuple(values[name].split(";")) if values[name] else ()
    for name in stored.flags:
        values[name] = None if values[name] is None else bool(values[name])
    for name in stored.objects:
        values[name] = tuple(sorted(json.loads(values[name]).items()))
    return cls(**values)


def _snapshot(row: Sequence[Any]) -> SnapshotInfo:
    """A ``snapshots`` row (``SNAPSHOT_COLUMNS``) as a value."""
    sid, collected, recorded, hosts, skipped, version = row
    return SnapshotInfo(
        sid, datetime.fromisoformat(collected), datetime.fromisoformat(recorded),
        tuple(json.loads(hosts)), skipped, version,
    )  # fmt: skip


class SqliteHistory:
    """An open SQLite history (a ``HistoryStore``); use ``SqliteHistory.open`` (or
    ``auditor.history.open_history``) and close it, or use ``with``."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> SqliteHistory:
        """Open (and with ``create``, make) the history at ``path``; refuse anything else."""
        where = str(path)
        if not create and not Path(where).is_file():
            raise HistoryError(f"no history at {where}", "run auditor report or snapshot first")
        if create:
            try:
                Path(where).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"cannot create the folder of {where}: {exc.strerror}") from exc
        with _errors(where):
            conn = sqlite3.connect(where, timeout=BUSY_TIMEOUT, isolation_level=None)
        history = cls(conn, where)
        try:
            with _errors(where):
                history._prepare(create)
        except BaseException:
            conn.close()
            raise
        return history

    def _identity(self) -> tuple[int, int, bool]:
        """(application_id, user_version, whether the file holds any table), read in one
        transaction so that another run's initialisation is seen whole or not at all."""
        own = not self._conn.in_transaction
        if own:
            self._conn.execute("BEGIN")
        try:
            app = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            if own:
                self._conn.execute("COMMIT")
        return int(app), int(version), bool(tables)

    def _check(self, app: int, version: int, tables: bool) -> bool:
        """Whether the file is ours (True) or empty (False); raise for anything else."""
        if app == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema {version} is newer than this auditor's "
                    f"({SCHEMA_VERSION})",
                    "upgrade auditor; the file was not modified",
                )
            return True
        if app or version or tables:
            raise HistoryError(
                f"{self.path} is an SQLite database of another program, not an auditor history",
                "pass another --history path; the file was not modified",
            )
        return False

    def _prepare(self, create: bool) -> None:
        app, version, tables = self._identity()
        ours = self._check(app, version, tables)
        if not ours and not create:
            raise HistoryError(f"{self.path} is empty, not an auditor history")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode = WAL")
        if not ours or version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Create or upgrade the schema in one write transaction: a run opening the file at
        the same time waits for it, then finds the schema made."""
        with self.transaction():
            app, version, tables = self._identity()
            if self._check(app, version, tables) and version == SCHEMA_VERSION:
                return  # another run made it meanwhile
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteHistory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``): committed if the block succeeds."""
        with _errors(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        with _errors(self.path):
            self._conn.execute("COMMIT")

    def record(self, summary: Summary, version: str) -> int:
        """Append one snapshot of ``summary`` (inside the caller's transaction, if any)."""
        if not self._conn.in_transaction:
            with self.transaction():
                return self.record(summary, version)
        with _errors(self.path):
            cur = self._conn.execute(
                "INSERT INTO snapshots (collected_at, recorded_at, hosts, skipped, "
                "auditor_version) VALUES (?, ?, ?, ?, ?)",
                (stamp(summary.collected_at), stamp(datetime.now(UTC)),
                 json.dumps(list(summary.hosts)), len(summary.skips), version),
            )  # fmt: skip
            sid = cur.lastrowid
            assert sid is not None
            pools, volumes = recorded(summary)
            self._insert("pools", sid, pools)
            self._insert("volumes", sid, volumes)
        return sid

    def _insert(self, table: str, sid: int, points: Sequence[Point]) -> None:
        if not points:
            return
        names = columns(type(points[0]))
        marks = ", ".join(f":{n}" for n in names)
        listed = ", ".join(names)
        sql = f"INSERT INTO {table} (snapshot_id, {listed}) VALUES ({sid}, {marks})"  # noqa: S608
        self._conn.executemany(sql, [to_row(p) for p in points])

    def earlier(self, hosts: Iterable[str], before: datetime) -> list[Earlier]:
        """Each host's most recent snapshot collected before ``before``."""
        out = []
        with _errors(self.path):
            for host in hosts:
                found = self._conn.execute(
                    f"SELECT {SNAPSHOT_COLUMNS} FROM snapshots s "  # noqa: S608
                    f"WHERE collected_at < :before AND {READ_HOST} "
                    "ORDER BY collected_at DESC, id DESC LIMIT 1",
                    {"before": stamp(before), "host": host},
                ).fetchone()
                if found is None:
                    continue
                snap = _snapshot(found)
                pools = self._points("pools", PoolPoint, snap.id, host)
                volumes = self._points("volumes", VolumePoint, snap.id, host)
                out.append(Earlier(snap, host, pools, volumes))
        return out

    def _points(self, table: str, cls: type[P], sid: int, host: str) -> tuple[P, ...]:
        names = ", ".join(columns(cls))
        sql = f"SELECT {names} FROM {table} WHERE snapshot_id = ? AND host = ?"  # noqa: S608
        sql += " ORDER BY rowid"  # the order recorded
        return tuple(_point(cls, row) for row in self._conn.execute(sql, (sid, host)))

    def series(
        self,
        *,
        pool: str | None = None,
        host: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SeriesPoint]:
        """Pool points of every snapshot, oldest first (then by snapshot, host, pool)."""
        sql = (
            f"SELECT collected_at, snapshot_id, {', '.join(columns(PoolPoint))} "  # noqa: S608
            "FROM pool_series WHERE (:pool IS NULL OR pool = :pool) "
            "AND (:host IS NULL OR host = :host) "
            "AND (:since IS NULL OR collected_at >= :since) "
            "AND (:until IS NULL OR collected_at <= :until) "
            "ORDER BY collected_at, snapshot_id, host, pool"
        )
        params = {
            "pool": pool, "host": host,
            "since": stamp(since) if since else None, "until": stamp(until) if until else None,
        }  # fmt: skip
        with _errors(self.path):
            return [
                SeriesPoint(datetime.fromisoformat(at), sid, _point(PoolPoint, rest))
                for at, sid, *rest in self._conn.execute(sql, params)
            ]

    def newest(self, host: str | None = None) -> datetime | None:
        """When the most recent snapshot (that read ``host``) was collected."""
        with _errors(self.path):
            (at,) = self._conn.execute(
                f"SELECT max(collected_at) FROM snapshots s WHERE :host IS NULL OR {READ_HOST}",  # noqa: S608
                {"host": host},
            ).fetchone()
        return None if at is None else datetime.fromisoformat(at)

    def count(self) -> int:
        """Number of snapshots."""
        with _errors(self.path):
            return int(self._conn.execute("SELECT count(*) FROM snapshots").fetchone()[0])


@contextmanager
def _errors(path: str) -> Iterator[None]:
    """sqlite3 errors → one clear HistoryError line."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise HistoryError(
                f"{path} is locked by another run for more than {BUSY_TIMEOUT:g} s"
            ) from exc
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            raise HistoryError(
                f"{path} is corrupt or not an SQLite database ({text})",
                "move it away or pass another --history path; it was not modified",
            ) from exc
        raise HistoryError(f"{path}: {text}") from exc
