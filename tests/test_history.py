"""The SQLite history: schema, round trip, refusing corrupt and foreign files, concurrency;
the store protocol and its typed points; labels, and a version-1 file migrated."""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import summaries
from summaries import GiB, summary

import auditor
from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.analyze import analyze, full_size
from auditor.collect import Probes, collect
from auditor.errors import HistoryError
from auditor.history import (
    SCHEMA_VERSION,
    SERIES_COLUMNS,
    open_history,
    parse_since,
    parse_time,
    recorded,
    series_row,
    stamp,
)
from auditor.history.sqlite import APPLICATION_ID, MIGRATIONS, SqliteHistory, columns, to_row
from auditor.interfaces import HistoryStore, PoolPoint, SnapshotInfo, VolumePoint
from auditor.models import Inventory, Labels, Summary, Target

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 2, tzinfo=UTC)
# A host's labels in file order, with text a naive encoding would break; read back sorted.
LABELS: Labels = (("site", "ams1"), ("rack", 'r;7 "b"'), ("owner", "jörg"), ("a=b", ""))
SORTED: Labels = (("a=b", ""), ("owner", "jörg"), ("rack", 'r;7 "b"'), ("site", "ams1"))
LABELS_JSON = '{"a=b":"","owner":"jörg","rack":"r;7 \\"b\\"","site":"ams1"}'
V1_DDL = "540c5e32dbe427ca73a529e7f121a2a31b396b3fa4aa102faf3691958d987e5b"  # sha256, frozen


def labelled(at: datetime, labels: dict[str, Labels], **kw: bool) -> Summary:
    """``summary`` of the hosts ``labels`` names, each with its labels."""
    hosts = tuple(replace(summaries.host(h, at, **kw), labels=own) for h, own in labels.items())
    return analyze(Inventory(hosts=hosts))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_file_is_identified_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.sqlite"
    with open_history(path) as h:
        assert h.count() == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
    }
    assert names == {"snapshots", "pools", "volumes", "pool_series", "volume_series"}


def test_record_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with open_history(path) as h:
        first = h.record(summary(T1, "h1", "h2"), "1.0")
        h.record(summary(T2, "h1", extra=True), "1.0")
        assert h.count() == 2
        series = [series_row(s) for s in h.series(pool="big")]
        assert [(r["collected_at"], r["host"]) for r in series] == [
            ("2026-01-01T00:00:00.000000+00:00", "h1"),
            ("2026-01-01T00:00:00.000000+00:00", "h2"),
            ("2026-01-02T00:00:00.000000+00:00", "h1"),
        ]
        assert [r["provisioned"] for r in series] == [170 * GiB, 170 * GiB, 180 * GiB]
        assert series[0]["overcommit_ratio"] == 1.7 and series[0]["volumes"] == 3
        assert h.series(pool="big", host="h2", since=T1 + timedelta(hours=1)) == []
        assert len(h.series(since=T2)) == 3  # big, idle, (unmanaged) of h1
        idle = series_row(h.series(pool="idle")[0])
        assert idle["state"] == "inactive" and idle["capacity"] is None and idle["volumes"] is None

        # The most recent snapshot of each host before a time; h2 was not read on T2.
        earlier = {e.host: e for e in h.earlier(("h1", "h2", "h3"), T2 + timedelta(seconds=1))}
        assert set(earlier) == {"h1", "h2"}
        assert earlier["h1"].collected_at == T2 and earlier["h2"].collected_at == T1
        assert {v.volume for v in earlier["h1"].volumes} == {
            "a.raw", "b.raw", "c.raw", "new.raw", "loose.raw"
        }  # fmt: skip
        loose = next(to_row(v) for v in earlier["h1"].volumes if v.volume == "loose.raw")
        assert (loose["pool"], loose["managed"], loose["used_by"]) == ("", 0, "vm1")
        assert [e.collected_at for e in h.earlier(("h1",), T2)] == [T1]
        assert h.earlier(("h1",), T1) == []
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT hosts FROM snapshots WHERE id = ?", (first,)).fetchone() == (
        '["h1", "h2"]',
    )


def test_a_failed_transaction_records_nothing(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.sqlite") as h:
        with pytest.raises(RuntimeError), h.transaction():
            h.record(summary(T1), "1.0")
            raise RuntimeError("publish failed")
        assert h.count() == 0


@pytest.mark.parametrize(
    "content",
    [b"hello, this is not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "damaged-header"],
)
def test_corrupt_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(content)
    with pytest.raises(HistoryError, match="corrupt or not an SQLite database") as err:
        open_history(path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]


def test_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "places.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE bookmarks (url TEXT)")
    conn.execute("INSERT INTO bookmarks VALUES ('https://example.org')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(HistoryError, match="another program"):
        open_history(path)
    assert digest(path) == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with open_history(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(HistoryError, match="newer"):
        open_history(path)
    assert digest(path) == before


def test_reading_needs_an_existing_history(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no history"):
        open_history(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(HistoryError, match="empty"):
        open_history(tmp_path / "empty.sqlite", create=False)


def _writer(path: str, n: int, start: int) -> None:
    for i in range(n):
        with open_history(path) as h:
            h.record(summary(T1 + timedelta(minutes=start + i), "h1", "h2"), "1.0")


def test_concurrent_runs_are_safe(tmp_path: Path) -> None:
    """Eight processes create the same new file and write to it at once."""
    path = str(tmp_path / "h.sqlite")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 5, 10 * k)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    with open_history(path) as h:
        assert h.count() == 40
        assert len(h.series(pool="big")) == 80
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(DISTINCT snapshot_id) FROM volumes").fetchone()[0] == 40


def test_times() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_time("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T02:00:00+02:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_since("yesterday", now)


# ---- the store protocol and its typed points ----------------------------------------------

REPORT_HOST = Path(__file__).parent / "data" / "report-host.xml"
UNITS = {"B": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
TEST_POOL_CAPACITY = 100 * GiB  # what libvirt's test driver gives every pool


def test_the_sqlite_store_has_the_protocols_methods() -> None:
    """Every method of HistoryStore, with the same parameters, on the SQLite store (mypy checks
    the types: ``open_history`` returns the SQLite store as a HistoryStore)."""
    members = {
        n for n, v in vars(HistoryStore).items()
        if inspect.isfunction(v) and (not n.startswith("__") or n in ("__enter__", "__exit__"))
    }  # fmt: skip
    assert members == {"record", "transaction", "earlier", "series", "newest", "count", "close",
                       "__enter__", "__exit__"}  # fmt: skip
    for name in members:
        want = inspect.signature(getattr(HistoryStore, name)).parameters
        got = inspect.signature(getattr(SqliteHistory, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == [
            (p.name, p.kind, p.default) for p in want.values()
        ], name


def test_columns_are_the_fields_of_the_point_types(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with open_history(path):
        pass
    conn = sqlite3.connect(path)

    def cols(table: str) -> list[str]:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]

    pool_fields = [f.name for f in fields(PoolPoint)]
    volume_fields = [f.name for f in fields(VolumePoint)]
    assert cols("snapshots") == [f.name for f in fields(SnapshotInfo)]
    assert cols("pools") == ["snapshot_id", *pool_fields] == ["snapshot_id", *columns(PoolPoint)]
    assert cols("volumes") == ["snapshot_id", *volume_fields]
    assert cols("pool_series") == ["collected_at", "snapshot_id", *pool_fields]
    assert cols("volume_series") == ["collected_at", "snapshot_id", *volume_fields]
    assert SERIES_COLUMNS[0] == "collected_at"
    assert SERIES_COLUMNS[1:] == pool_fields[: pool_fields.index("filesystem") + 1]


def test_newest_and_a_window_of_the_series(tmp_path: Path) -> None:
    with open_history(tmp_path / "h.sqlite") as h:
        assert h.newest() is None and h.series() == []
        h.record(summary(T1, "h1", "h2"), "1.0")
        h.record(summary(T2, "h1"), "1.0")
        assert (h.newest(), h.newest("h1"), h.newest("h2"), h.newest("h3")) == (T2, T2, T1, None)
        end = h.newest()
        assert end is not None
        window = h.series(pool="big", since=end - timedelta(hours=12), until=end)
        assert [(s.collected_at, s.point.host) for s in window] == [(T2, "h1")]
        until = h.series(pool="big", until=T1)
        assert [(s.collected_at, s.point.host) for s in until] == [(T1, "h1"), (T1, "h2")]
        assert [s.snapshot_id for s in h.series(pool="big")] == [1, 1, 2]
        assert h.series(pool="big", since=T1, until=T1 - timedelta(microseconds=1)) == []


def _size(element: ET.Element | None) -> int:
    assert element is not None and element.text is not None
    return int(element.text) * UNITS[element.get("unit", "B")]


def _expected_volumes(host: str) -> dict[str, VolumePoint]:
    """The volume points of report-host.xml, read from the XML (not through auditor)."""
    root = ET.parse(REPORT_HOST).getroot()
    users: dict[str, list[str]] = {}
    for dom in root.iter("domain"):
        for src in dom.iter("source"):
            users.setdefault(src.get("file", ""), []).append(dom.findtext("name", ""))
    out = {}
    for pool in root.iter("pool"):
        for vol in pool.iter("volume"):
            fmt = vol.find("target/format")
            assert fmt is not None
            name = vol.findtext("name", "")
            path = f"{pool.findtext('target/path')}/{name}"
            virtual, size = _size(vol.find("capacity")), _size(vol.find("allocation"))
            growth = max(0, full_size(fmt.get("type"), virtual) - size)
            thin = growth > max(4 << 20, virtual // 100)
            out[path] = VolumePoint(
                host, pool.findtext("name", ""), name, path, fmt.get("type", ""),
                "thin" if thin else "preallocated", virtual, size, growth, True,
                tuple(users.get(path, ())), "", "file", "", None,
            )  # fmt: skip
    loose = "/srv/legacy/db01-logs.img"  # db01's disk outside any pool: sizes unknown
    out[loose] = VolumePoint(
        host, "", "db01-logs.img", loose, "raw", "unknown", None, None, None, False, ("db01",),
        "", "file", "sizes not reported", None,
    )  # fmt: skip
    return out


def _expected_pools(host: str, volumes: dict[str, VolumePoint]) -> dict[str, PoolPoint]:
    """The pool points of report-host.xml, summed from the expected volume points."""
    root = ET.parse(REPORT_HOST).getroot()
    out = {}
    for pool in root.iter("pool"):
        name = pool.findtext("name", "")
        vols = [v for v in volumes.values() if v.pool == name]
        used = sum(v.disk_size or 0 for v in vols)
        provisioned = sum(v.virtual_size or 0 for v in vols)
        out[name] = PoolPoint(
            host, name, pool.get("type", ""), "running", TEST_POOL_CAPACITY, used,
            TEST_POOL_CAPACITY - used, len(vols), sum(v.provisioning == "thin" for v in vols),
            sum(v.provisioning == "preallocated" for v in vols), 0, provisioned, used,
            round(provisioned / TEST_POOL_CAPACITY, 4), sum(v.growth or 0 for v in vols), "",
            pool.findtext("target/path", ""), False, True, (),
        )  # fmt: skip
    # one unmanaged disk of unknown sizes: its sums are unknown, not 0
    out["(unmanaged)"] = PoolPoint(host, "(unmanaged)", "unmanaged", "", None, None, None,
                                   1, 0, 0, 1, None, None, None, None, "", "", None, None,
                                   ())  # fmt: skip
    return out


def bed_summary() -> Summary:
    """libvirt's test driver on report-host.xml, collected at T1."""
    probes = Probes(images=qemu_img.info_many, fs=localfs)
    target = Target(f"test://{REPORT_HOST}")
    inventory = collect([target], lambda t: LibvirtHost.connect(t.uri), probes)
    return replace(analyze(inventory), collected_at=T1)


def test_typed_points_round_trip_a_test_driver_summary(tmp_path: Path) -> None:
    """A Summary of libvirt's test driver, recorded and read back: every field of every point
    equals the figure worked out from the host's XML."""
    s = bed_summary()
    (host,) = s.hosts
    volumes = _expected_volumes(host)
    pools = _expected_pools(host, volumes)
    store: HistoryStore = open_history(tmp_path / "h.sqlite")
    with store:
        sid = store.record(s, "9.9")
        (e,) = store.earlier(s.hosts, T2)
        series = store.series(host=host)
    assert (e.host, e.collected_at, e.snapshot.id, e.snapshot.hosts) == (host, T1, sid, s.hosts)
    assert (e.snapshot.skipped, e.snapshot.auditor_version) == (0, "9.9")
    assert abs(e.snapshot.recorded_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert {p.pool: p for p in e.pools} == pools
    assert {v.path: v for v in e.volumes} == volumes
    assert e.pools == tuple(PoolPoint.of(p) for p in s.pools)  # the summary's order
    assert [(x.collected_at, x.snapshot_id, x.point) for x in series] == [
        (T1, sid, pools[name]) for name in sorted(pools)
    ]
    assert pools["vmstore"].overcommit_ratio == 2.5 and pools["vmstore"].volumes == 4


def test_only_the_sqlite_store_knows_sqlite() -> None:
    """The store hides its engine; the history package does not import the report layer."""
    package = Path(auditor.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        mod = path.relative_to(package).as_posix()
        if mod != "history/sqlite.py":
            assert "sqlite3" not in text and "json_each" not in text, mod
            assert "PRAGMA" not in text and "BEGIN IMMEDIATE" not in text, mod
        if mod.startswith("history/"):
            assert "auditor.report" not in text and "click" not in text, mod


# ---- labels, and a version-1 file migrated ---------------------------------------------------


def test_labels_round_trip_as_a_sorted_json_object(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with open_history(path) as h:
        h.record(labelled(T1, {"h1": LABELS, "h2": ()}), "1.0")
        (e1, e2) = h.earlier(("h1", "h2"), T2)
        series = h.series()
    assert {p.labels for p in e1.pools} | {v.labels for v in e1.volumes} == {SORTED}
    assert {p.labels for p in e2.pools} | {v.labels for v in e2.volumes} == {()}
    assert {(s.point.host, s.point.labels) for s in series} == {("h1", SORTED), ("h2", ())}
    conn = sqlite3.connect(path)
    for table in ("pools", "volumes", "pool_series", "volume_series"):
        stored = conn.execute(f"SELECT DISTINCT host, labels FROM {table} ORDER BY host")
        assert stored.fetchall() == [("h1", LABELS_JSON), ("h2", "{}")], table
    assert json.loads(LABELS_JSON) == dict(LABELS)


def v1_rows(s: Summary) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The ``pools`` and ``volumes`` rows a version-1 store wrote for ``s``: no labels."""
    pools, volumes = recorded(s)
    return (
        [{k: v for k, v in to_row(p).items() if k != "labels"} for p in pools],
        [{k: v for k, v in to_row(v).items() if k != "labels"} for v in volumes],
    )


def make_v1(path: Path, snapshots: list[Summary]) -> None:
    """A version-1 file, as the released DDL made it, holding ``snapshots``."""
    assert hashlib.sha256("\n".join(MIGRATIONS[1]).encode()).hexdigest() == V1_DDL
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    for s in snapshots:
        sid = conn.execute(
            "INSERT INTO snapshots (collected_at, recorded_at, hosts, skipped, auditor_version) "
            "VALUES (?, ?, ?, ?, '1.0')",
            (stamp(s.collected_at), stamp(s.collected_at), json.dumps(s.hosts), len(s.skips)),
        ).lastrowid
        for table, rows in zip(("pools", "volumes"), v1_rows(s), strict=True):
            for row in rows:
                marks = ", ?" * len(row)
                sql = f"INSERT INTO {table} (snapshot_id, {', '.join(row)}) VALUES (?{marks})"
                conn.execute(sql, (sid, *row.values()))
    conn.execute("COMMIT")
    conn.close()


def _rows(path: Path) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    """Every table and view of a file: its column names and rows (sorted)."""
    conn = sqlite3.connect(path)
    out = {}
    for table in ("snapshots", "pools", "volumes", "pool_series", "volume_series"):
        cur = conn.execute(f"SELECT * FROM {table}")
        out[table] = ([d[0] for d in cur.description], sorted(cur.fetchall(), key=repr))
    conn.close()
    return out


def _schema(path: Path) -> list[tuple[str, ...]]:
    conn = sqlite3.connect(path)
    found = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
    schema = found.fetchall()
    conn.close()
    return schema


OLD = [summary(T1, "h1", "h2"), summary(T2, "h1", extra=True, skip=True)]


def test_a_version_1_file_migrates_to_2_keeping_every_row(tmp_path: Path) -> None:
    """Opened (even to read), a version-1 file gets the labels columns ('{}' in every old row),
    keeps every row and figure, and answers as a new file holding the same snapshots."""
    old, new = tmp_path / "v1.sqlite", tmp_path / "v2.sqlite"
    make_v1(old, OLD)
    before = _rows(old)
    with open_history(old, create=False) as h:
        migrated = (h.count(), h.series(), h.earlier(("h1", "h2"), T2 + timedelta(hours=1)))
    with open_history(new) as h:
        for s in OLD:
            h.record(s, "1.0")
        fresh = (h.count(), h.series(), h.earlier(("h1", "h2"), T2 + timedelta(hours=1)))
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    after = _rows(old)
    for table, (names, rows) in before.items():
        kept = [n for n in after[table][0] if n != "labels"]
        assert kept == names, table  # every old column, in its place
        assert sorted((r[: len(names)] for r in after[table][1]), key=repr) == rows, table
        if table != "snapshots":
            assert after[table][0][-1] == "labels", table
            assert {r[-1] for r in after[table][1]} == {"{}"}, table
    assert _schema(old) == _schema(new)
    assert migrated[:2] == fresh[:2] and migrated[1]
    strip = [(e.host, e.snapshot.id, e.pools, e.volumes) for e in migrated[2]]
    assert strip == [(e.host, e.snapshot.id, e.pools, e.volumes) for e in fresh[2]]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _open_and_record(path: str, k: int) -> None:
    with open_history(path) as h:
        h.record(labelled(T2 + timedelta(minutes=k + 1), {"h1": (("run", str(k)),)}), "2.0")


def test_concurrent_openers_migrate_a_version_1_file_once(tmp_path: Path) -> None:
    """Eight processes open one version-1 file at once: one migrates it, every one records."""
    path = tmp_path / "h.sqlite"
    make_v1(path, OLD)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_open_and_record, args=(str(path), k)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    with open_history(path, create=False) as h:
        assert h.count() == 10
        runs = {(s.collected_at, s.point.labels) for s in h.series() if s.collected_at > T2}
    assert runs == {(T2 + timedelta(minutes=k + 1), (("run", str(k)),)) for k in range(8)}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM pools WHERE labels = '{}'").fetchone()[0] == 9
