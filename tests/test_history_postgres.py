"""The PostgreSQL history against a real server (scripts/postgres.sh, on 127.0.0.1): the same
protocol as the SQLite store, schema and identity, a version-1 database migrated, refusing
foreign and newer schemas without writing, 20 concurrent `auditor snapshot` processes, and
passwords never printed.

A server that cannot be started is an error, not a skip: `make test` starts it, and so does
the ``server`` fixture when it is not running."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from clirun import auditor
from psycopg.types.json import Jsonb
from summaries import GiB, summary
from test_history import (
    LABELS,
    LABELS_JSON,
    OLD,
    REPORT_HOST,
    SORTED,
    T1,
    T2,
    _expected_pools,
    _expected_volumes,
    bed_summary,
    labelled,
    v1_rows,
)

from auditor.errors import HistoryError
from auditor.history import SCHEMA_VERSION, masked, open_history, series_row, stamp
from auditor.history.postgres import APPLICATION_ID, MIGRATIONS, PostgresHistory
from auditor.history.sqlite import SqliteHistory
from auditor.interfaces import HistoryStore, PoolPoint, SnapshotInfo, VolumePoint
from auditor.models import Summary

REPO = Path(__file__).resolve().parents[1]
PG_DIR = Path(os.environ.get("AUDITOR_PG_DIR", "/var/tmp/auditor-postgres"))
SECRET = "pw-Never-Printed-42"
V1_DDL = "aa3ba397b6a23fce74238212710caab3f174f1ae2c27dfd04fc6ec560383ef90"  # sha256, frozen


@dataclass(frozen=True)
class Server:
    url: str  # postgresql://auditor@127.0.0.1:PORT/auditor: no password
    pgpass: Path  # PGPASSFILE for it
    password: str

    def db(self, name: str, password: str | None = None) -> str:
        head, _, _ = self.url.rpartition("/")
        if password is not None:
            head = head.replace("auditor@", f"auditor:{password}@", 1)
        return f"{head}/{name}"


@pytest.fixture(scope="session")
def server() -> Server:
    """The test server, started by scripts/postgres.sh if it is not running (idempotent)."""
    ran = subprocess.run(
        [REPO / "scripts" / "postgres.sh"], capture_output=True, text=True, timeout=180
    )
    if ran.returncode:
        raise RuntimeError(f"scripts/postgres.sh failed: {ran.stderr.strip() or ran.stdout}")
    return Server(
        (PG_DIR / "dsn").read_text().strip(),
        PG_DIR / "pgpass",
        (PG_DIR / "password").read_text().strip(),
    )


@pytest.fixture
def pgpass(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The password from the server's pgpass file (this process and the auditors it runs)."""
    monkeypatch.setenv("PGPASSFILE", str(server.pgpass))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return server


def _admin(server: Server) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.url, autocommit=True, password=server.password)


@contextmanager
def _new_database(server: Server) -> Iterator[str]:
    """A new, empty database (concurrent test runs never meet), dropped after; its URL."""
    name = f"auditor_test_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}" STRATEGY = file_copy')  # fast: no WAL
    try:
        yield server.db(name)
    finally:
        with _admin(server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(server: Server, pgpass: Server) -> Iterator[str]:
    """A new, empty database of this test; its URL."""
    with _new_database(server) as url:
        yield url


def sql(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    """Run one statement as the test's role (outside auditor); its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history location of each store: the protocol tests run on both."""
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return str(request.getfixturevalue("database"))


# ---- the store protocol, on both stores ------------------------------------------------------


def test_the_postgres_store_has_the_protocols_methods() -> None:
    for name in ("record", "transaction", "earlier", "series", "newest", "count", "close",
                 "__enter__", "__exit__"):  # fmt: skip
        want = inspect.signature(getattr(HistoryStore, name)).parameters
        got = inspect.signature(getattr(PostgresHistory, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == [
            (p.name, p.kind, p.default) for p in want.values()
        ], name


def test_record_and_read_back(where: str) -> None:
    with open_history(where) as h:
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
        assert len(h.series(since=T2)) == 3
        idle = series_row(h.series(pool="idle")[0])
        assert idle["state"] == "inactive" and idle["capacity"] is None and idle["volumes"] is None
        earlier = {e.host: e for e in h.earlier(("h1", "h2", "h3"), T2 + timedelta(seconds=1))}
        assert set(earlier) == {"h1", "h2"}
        assert earlier["h1"].collected_at == T2 and earlier["h2"].collected_at == T1
        assert earlier["h2"].snapshot.id == first and earlier["h2"].snapshot.hosts == ("h1", "h2")
        loose = next(v for v in earlier["h1"].volumes if v.volume == "loose.raw")
        assert (loose.pool, loose.managed, loose.used_by) == ("", False, ("vm1",))
        assert [e.collected_at for e in h.earlier(("h1",), T2)] == [T1]
        assert h.earlier(("h1",), T1) == []


def test_newest_and_a_window_of_the_series(where: str) -> None:
    with open_history(where) as h:
        assert h.newest() is None and h.series() == []
        h.record(summary(T1, "h1", "h2"), "1.0")
        h.record(summary(T2, "h1"), "1.0")
        assert (h.newest(), h.newest("h1"), h.newest("h2"), h.newest("h3")) == (T2, T2, T1, None)
        assert all(t is None or t.tzinfo is not None for t in (h.newest(), h.newest("h2")))
        window = h.series(pool="big", since=T2 - timedelta(hours=12), until=T2)
        assert [(s.collected_at, s.point.host) for s in window] == [(T2, "h1")]
        until = h.series(pool="big", until=T1)
        assert [(s.collected_at, s.point.host) for s in until] == [(T1, "h1"), (T1, "h2")]
        assert [s.snapshot_id for s in h.series(pool="big")] == [1, 1, 2]
        assert h.series(pool="big", since=T1, until=T1 - timedelta(microseconds=1)) == []


def test_a_failed_transaction_records_nothing_and_record_joins_it(where: str) -> None:
    with open_history(where) as h:
        with pytest.raises(RuntimeError), h.transaction():
            h.record(summary(T1), "1.0")
            h.record(summary(T2), "1.0")
            raise RuntimeError("publish failed")
        assert h.count() == 0
        with h.transaction():
            h.record(summary(T1), "1.0")
            h.record(summary(T2), "1.0")
        assert h.count() == 2


def test_typed_points_round_trip_a_test_driver_summary(where: str) -> None:
    """A Summary of libvirt's test driver, recorded and read back: every field of every point
    equals the figure worked out from the host's XML, in the order recorded."""
    s = bed_summary()
    (host,) = s.hosts
    volumes = _expected_volumes(host)
    pools = _expected_pools(host, volumes)
    with open_history(where) as store:
        sid = store.record(s, "9.9")
        (e,) = store.earlier(s.hosts, T2)
        series = store.series(host=host)
    assert (e.host, e.collected_at, e.snapshot.id, e.snapshot.hosts) == (host, T1, sid, s.hosts)
    assert (e.snapshot.skipped, e.snapshot.auditor_version) == (0, "9.9")
    assert abs(e.snapshot.recorded_at - datetime.now(UTC)) < timedelta(minutes=1)
    read = {p.pool: p for p in e.pools}
    managed = {name: p for name, p in pools.items() if p.type != "unmanaged"}
    assert {name: read[name] for name in managed} == managed  # the XML's figures
    assert {v.path: v for v in e.volumes} == volumes
    assert e.pools == tuple(PoolPoint.of(p) for p in s.pools)  # the summary's, in its order
    assert [(x.collected_at, x.snapshot_id, x.point) for x in series] == [
        (T1, sid, read[name]) for name in sorted(read)
    ]


def test_labels_round_trip(where: str) -> None:
    """Each point has its host's labels, sorted by key; a host without labels has none."""
    with open_history(where) as h:
        h.record(labelled(T1, {"h1": LABELS, "h2": ()}), "1.0")
        h.record(labelled(T2, {"h2": (("site", "fra2"),)}), "1.0")
        earlier = {e.host: e for e in h.earlier(("h1", "h2"), T2 + timedelta(seconds=1))}
        series = h.series(pool="big")
    assert {p.labels for p in earlier["h1"].pools + earlier["h1"].volumes} == {SORTED}
    assert {p.labels for p in earlier["h2"].pools + earlier["h2"].volumes} == {(("site", "fra2"),)}
    assert [(s.point.host, s.point.labels) for s in series] == [
        ("h1", SORTED), ("h2", ()), ("h2", (("site", "fra2"),))
    ]  # fmt: skip


def test_both_stores_give_the_same_answers(tmp_path: Path, database: str) -> None:
    """One sequence of snapshots, equal series keys included (two unmanaged rows of a host):
    every read is the same on both stores."""
    answers = []
    for where in (str(tmp_path / "h.sqlite"), database):
        with open_history(where) as h:
            for i, hosts in enumerate((("h1", "h2"), ("h2",), ("h1", "h2"), ("h3",))):
                s = summary(T1 + timedelta(hours=i), *hosts, extra=i == 2)
                loose = [p for p in s.pools if p.type == "unmanaged"]
                more = tuple(replace(p, filesystem=f"/other{i}", volumes=9) for p in loose)
                h.record(replace(s, pools=s.pools + more), "1.0")
            answers.append(
                (
                    h.count(), h.newest(), h.newest("h1"),
                    [(s.collected_at, s.snapshot_id, s.point) for s in h.series()],
                    h.series(host="h2", since=T1 + timedelta(hours=1)),
                    [(e.host, e.snapshot.id, e.pools, e.volumes)
                     for e in h.earlier(("h1", "h2", "h3"), T2)],
                )
            )  # fmt: skip
    assert answers[0] == answers[1]


# ---- the schema ------------------------------------------------------------------------------


def _columns(url: str, table: str) -> list[str]:
    rows = sql(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s ORDER BY ordinal_position",
        table,
    )
    return [str(r[0]) for r in rows]


def test_a_new_database_is_identified_versioned_and_has_the_sqlite_columns(database: str) -> None:
    with open_history(database) as h:
        assert h.count() == 0
    assert sql(database, "SELECT application_id, user_version FROM auditor_history") == [
        (APPLICATION_ID, SCHEMA_VERSION)
    ]
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    pool_fields = [f.name for f in fields(PoolPoint)]
    volume_fields = [f.name for f in fields(VolumePoint)]
    assert _columns(database, "snapshots") == [f.name for f in fields(SnapshotInfo)]
    # rowid: what SQLite's implicit rowid is, the order recorded
    # labels: added by version 2, after rowid
    assert _columns(database, "pools") == ["snapshot_id", *pool_fields[:-1], "rowid", "labels"]
    assert _columns(database, "volumes") == ["snapshot_id", *volume_fields[:-1], "rowid", "labels"]
    assert _columns(database, "pool_series") == ["collected_at", "snapshot_id", *pool_fields]
    assert _columns(database, "volume_series") == ["collected_at", "snapshot_id", *volume_fields]


def test_encodings_are_the_sqlite_stores(tmp_path: Path, database: str) -> None:
    """The same rows in both: tuples ';'-joined, bools 0/1, '' for text, labels the same JSON
    text, hosts a JSON list, collected_at stamp() text."""
    rows = {}
    for where in (str(tmp_path / "h.sqlite"), database):
        with open_history(where) as h:
            h.record(labelled(T1, {"h1": LABELS, "h2": ()}), "1.0")
    conn = sqlite3.connect(tmp_path / "h.sqlite")
    for table in ("pool_series", "volume_series"):
        lite = conn.execute(f"SELECT * FROM {table} ORDER BY host, pool, 5").fetchall()
        pg = sql(database, f"SELECT * FROM {table} ORDER BY host, pool, 5")
        rows[table] = (lite, [tuple(r) for r in pg])
        assert rows[table][0] == rows[table][1], table
    (hosts,) = sql(database, "SELECT hosts::text, collected_at FROM snapshots")
    assert hosts == ('["h1", "h2"]', "2026-01-01T00:00:00.000000+00:00")
    assert conn.execute("SELECT hosts FROM snapshots").fetchone() == ('["h1", "h2"]',)
    assert sql(database, "SELECT DISTINCT host, labels FROM volumes ORDER BY 1") == [
        ("h1", LABELS_JSON), ("h2", "{}")
    ]  # fmt: skip


# ---- a version-1 database migrated ----------------------------------------------------------


def make_v1_database(url: str, snapshots: list[Summary]) -> None:
    """A version-1 database, as the released DDL made it, holding ``snapshots``."""
    assert hashlib.sha256("\n".join(MIGRATIONS[1]).encode()).hexdigest() == V1_DDL
    with psycopg.connect(url) as conn:  # one transaction
        for statement in MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO auditor_history VALUES (%s, 1)", (APPLICATION_ID,))
        for s in snapshots:
            found = conn.execute(
                "INSERT INTO snapshots (collected_at, recorded_at, hosts, skipped, "
                "auditor_version) VALUES (%s, %s, %s, %s, '1.0') RETURNING id",
                (stamp(s.collected_at), stamp(s.collected_at), Jsonb(s.hosts), len(s.skips)),
            ).fetchone()
            assert found is not None
            for table, rows in zip(("pools", "volumes"), v1_rows(s), strict=True):
                for row in rows:
                    marks = ", %s" * len(row)
                    insert = (
                        f"INSERT INTO {table} (snapshot_id, {', '.join(row)}) VALUES (%s{marks})"
                    )
                    conn.execute(insert, (found[0], *row.values()))


TABLES = ("snapshots", "pools", "volumes", "pool_series", "volume_series")


def _rows(url: str) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    """Every table and view: its column names and rows (sorted)."""
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            cur = conn.execute(f"SELECT * FROM {table}")
            assert cur.description is not None
            out[table] = ([d.name for d in cur.description], sorted(cur.fetchall(), key=repr))
    return out


def _schema(url: str) -> list[tuple[object, ...]]:
    """Every column of the history (its type, collation, default) and every view's query."""
    return sql(
        url,
        "SELECT table_name, column_name, ordinal_position, data_type, collation_name, "
        "is_nullable, column_default, pg_get_viewdef(table_name::regclass) FROM "
        "information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 3",
    )


def test_a_version_1_database_migrates_to_2_keeping_every_row(
    database: str, server: Server
) -> None:
    """Opened (even to read), a version-1 database gets the labels columns ('{}' in every old
    row) and views ending with them, keeps every row and figure, and answers as a new one
    holding the same snapshots."""
    make_v1_database(database, OLD)
    before = _rows(database)
    with open_history(database, create=False) as h:
        migrated = (h.count(), h.series(), h.earlier(("h1", "h2"), T2 + timedelta(hours=1)))
    assert sql(database, "SELECT user_version FROM auditor_history") == [(SCHEMA_VERSION,)]
    after = _rows(database)
    for table, (names, rows) in before.items():
        assert [n for n in after[table][0] if n != "labels"] == names, table
        assert sorted((r[: len(names)] for r in after[table][1]), key=repr) == rows, table
        if table != "snapshots":
            assert after[table][0][-1] == "labels", table
            assert {r[-1] for r in after[table][1]} == {"{}"}, table
    with _new_database(server) as fresh_url, open_history(fresh_url) as h:
        for s in OLD:
            h.record(s, "1.0")
        fresh = (h.count(), h.series(), h.earlier(("h1", "h2"), T2 + timedelta(hours=1)))
        assert _schema(database) == _schema(fresh_url)
    assert migrated[:2] == fresh[:2] and migrated[1]
    strip = [(e.host, e.snapshot.id, e.pools, e.volumes) for e in migrated[2]]
    assert strip == [(e.host, e.snapshot.id, e.pools, e.volumes) for e in fresh[2]]


def test_concurrent_openers_migrate_a_version_1_database_once(database: str) -> None:
    """Eight connections open one version-1 database at once: one migrates it (the advisory
    lock), every one records."""
    make_v1_database(database, OLD)

    def run(k: int) -> int:
        with open_history(database) as h:
            s = labelled(T2 + timedelta(minutes=k + 1), {"h1": (("run", str(k)),)})
            return h.record(s, "2.0")

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(run, range(8)))
    assert len(set(ids)) == 8
    with open_history(database, create=False) as h:
        assert h.count() == 10
        runs = {(s.collected_at, s.point.labels) for s in h.series() if s.collected_at > T2}
    assert runs == {(T2 + timedelta(minutes=k + 1), (("run", str(k)),)) for k in range(8)}
    assert sql(database, "SELECT * FROM auditor_history") == [(APPLICATION_ID, SCHEMA_VERSION)]
    assert sql(database, "SELECT count(*) FROM pools WHERE labels = '{}'") == [(9,)]


# ---- refusing what is not ours, without writing ----------------------------------------------


def _read_only(url: str, server: Server) -> None:
    """Make every later session of the database read-only: a refusal that tried to write
    would fail with another message."""
    name = url.rpartition("/")[2]
    with _admin(server) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')


def _catalog(url: str) -> list[tuple[object, ...]]:
    return sql(
        url,
        "SELECT relname, relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' ORDER BY relname",
    )


def test_a_database_of_another_program_is_refused_and_left_alone(
    database: str, server: Server
) -> None:
    sql(database, "CREATE TABLE bookmarks (url TEXT)")
    sql(database, "INSERT INTO bookmarks VALUES ('https://example.org')")
    before = _catalog(database)
    _read_only(database, server)
    with pytest.raises(HistoryError, match="another program") as err:
        open_history(database)
    assert "\n" not in str(err.value) and "bookmarks" in str(err.value)
    assert _catalog(database) == before
    assert sql(database, "SELECT url FROM bookmarks") == [("https://example.org",)]


def test_a_foreign_snapshots_table_is_refused(database: str) -> None:
    sql(database, "CREATE TABLE snapshots (id INTEGER, note TEXT)")
    with pytest.raises(HistoryError, match="another program"):
        open_history(database, create=False)
    with pytest.raises(HistoryError, match="another program"):
        open_history(database)
    assert [r[0] for r in _catalog(database)] == ["snapshots"]


def test_a_newer_schema_is_refused_without_writing(database: str, server: Server) -> None:
    with open_history(database) as h:
        h.record(summary(T1, "h1"), "1.0")
    sql(database, "UPDATE auditor_history SET user_version = %s", SCHEMA_VERSION + 1)
    before = _catalog(database)
    _read_only(database, server)
    for create in (True, False):
        with pytest.raises(HistoryError, match="newer") as err:
            open_history(database, create=create)
        assert "was not modified" in str(err.value) and "\n" not in str(err.value)
    assert _catalog(database) == before
    assert sql(database, "SELECT count(*) FROM snapshots") == [(1,)]


def test_reading_needs_an_existing_history(database: str) -> None:
    with pytest.raises(HistoryError, match="no history in"):
        open_history(database, create=False)
    assert _catalog(database) == []


def test_other_schemes_are_still_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no history store for mysql://"):
        open_history("mysql://u:pw@h/db")
    assert list(tmp_path.iterdir()) == []


# ---- many writers at once --------------------------------------------------------------------


def _writer(k: int, database: str, at: datetime, folder: Path) -> tuple[list[str], str]:
    """`auditor snapshot` of writer ``k`` (the test bed, named kvmNN by a hosts file that gives
    odd writers labels) and the labels JSON it records."""
    labels = {"site": f"dc{k % 3}", "writer": str(k)} if k % 2 else {}
    line = f'labels = {{ site = "dc{k % 3}", writer = "{k}" }}\n' if labels else ""
    hosts = folder / f"hosts{k}.toml"
    hosts.write_text(f'[[host]]\nname = "kvm{k:02d}"\nuri = "test://{REPORT_HOST}"\n{line}')
    argv = [sys.executable, "-m", "auditor", "--hosts", str(hosts), "snapshot",
            "--history", database, "--at", at.isoformat()]  # fmt: skip
    return argv, json.dumps(labels, separators=(",", ":"))


def test_twenty_concurrent_snapshot_processes_lose_and_duplicate_nothing(
    database: str, tmp_path: Path
) -> None:
    """20 `auditor snapshot` processes, each a test-driver host of a hosts file (ten with
    labels), write to one new database at once (racing to create its schema too): 20
    snapshots, every row once, each with its host's name and labels."""
    n = 20
    times = [T1 + timedelta(minutes=k) for k in range(n)]
    writers = [_writer(k, database, at, tmp_path) for k, at in enumerate(times)]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv, _ in writers
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outs]
    labels = {
        int(out.split()[1].rstrip(":")): w[1] for (out, _), w in zip(outs, writers, strict=True)
    }
    ids = sorted(labels)
    volumes = _expected_volumes("any")
    pools = _expected_pools("any", volumes)
    with open_history(database, create=False) as h:
        assert h.count() == n
        series = h.series()
    assert len(series) == n * len(pools)
    assert sorted({s.collected_at for s in series}) == times
    assert {(s.snapshot_id, s.point.labels) for s in series} == {
        (i, tuple(sorted(json.loads(own).items()))) for i, own in labels.items()
    }
    assert {(s.collected_at, s.point.host) for s in series} == {
        (at, f"kvm{k:02d}") for k, at in enumerate(times)
    }
    assert sql(database, "SELECT id FROM snapshots ORDER BY id") == [(i,) for i in ids]
    assert len(ids) == n
    per_snapshot = sql(
        database,
        "SELECT s.id, (SELECT count(*) FROM pools p WHERE p.snapshot_id = s.id), "
        "(SELECT count(*) FROM volumes v WHERE v.snapshot_id = s.id) FROM snapshots s",
    )
    assert sorted(per_snapshot) == [(i, len(pools), len(volumes)) for i in ids]
    for table, rows in (("pools", len(pools)), ("volumes", len(volumes))):
        found = sql(database, f"SELECT snapshot_id, labels, count(*) FROM {table} GROUP BY 1, 2")
        assert sorted(found) == [(i, labels[i], rows) for i in ids], table
    assert sql(database, "SELECT count(*) FROM auditor_history") == [(1,)]


# ---- passwords -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_masked() -> None:
    assert masked("postgresql://u:s%40cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert masked("postgres://u:a@b@h/db?password=x&sslmode=require") == (
        "postgres://u:***@h/db?password=***&sslmode=require"
    )
    assert masked("postgresql://u@h/db") == "postgresql://u@h/db"
    assert masked("reports/history.sqlite") == "reports/history.sqlite"


@pytest.mark.parametrize(
    "how", ["url", "url-debug", "PGPASSWORD", "malformed", "no-server", "password-param"]
)
def test_a_wrong_password_is_never_printed(
    server: Server, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = server.db("auditor", SECRET)
    args = ["history", "--history"]
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET)
        url = server.db("auditor")
    elif how == "malformed":
        url = f"postgresql://auditor:{SECRET}@[127.0.0.1/auditor"
    elif how == "no-server":
        url = f"postgresql://auditor:{SECRET}@127.0.0.1:{_free_port()}/auditor"
    elif how == "password-param":
        url = f"{server.db('auditor')}?password={SECRET}"
    ran = auditor(*(["--debug"] if how == "url-debug" else []), *args, url)
    assert ran.code == 2
    assert SECRET not in ran.out + ran.err
    if how != "url-debug":
        assert ran.err.count("\n") == 1 and ran.err.startswith("auditor: error: "), ran.err
    if how in ("url", "password-param"):
        assert "***" in ran.err and "password authentication failed" in ran.err


def test_the_fleet_through_the_cli_with_pgpass_in_home(
    server: Server, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`snapshot` and `report` write, `history` reads the whole fleet; the password from
    ~/.pgpass; the URL as printed has no password even when it holds one."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(server.pgpass.read_text())
    (home / ".pgpass").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PGPASSFILE")
    with open_history(database) as h:
        h.record(summary(T1, "h1", "h2"), "1.0")  # two other hosts of the fleet
    uri = f"test://{REPORT_HOST}"
    ran = auditor("-c", uri, "snapshot", "--history", database, "--at", T2.isoformat())
    assert ran.code == 0, ran.err
    assert ran.out.endswith(f" in {database}\n")
    with_password = database.replace("auditor@", f"auditor:{server.password}@", 1)
    out = tmp_path / "report"
    ran = auditor("-c", uri, "report", "--history", with_password, "--out", str(out))
    assert ran.code == 0, ran.err
    assert server.password not in ran.out + ran.err
    assert (out / "summary.json").is_file()
    ran = auditor("history", "--history", with_password, "--format", "json")
    assert ran.code == 0, ran.err
    doc = ran.json()
    assert doc["history"] == masked(with_password) and server.password not in ran.out
    hosts = {r["host"] for r in doc["pools"]}
    assert len(hosts) == 3 and {"h1", "h2"} < hosts


def test_the_cli_keeps_a_sqlite_path_and_its_default(tmp_path: Path) -> None:
    """A path stays a path (its // too); the default is still reports/history.sqlite."""
    where = tmp_path / "a" / "h.sqlite"
    ran = auditor("-c", f"test://{REPORT_HOST}", "snapshot", "--history", f"{tmp_path}//a/h.sqlite")
    assert ran.code == 0, ran.err
    with SqliteHistory.open(where, create=False) as h:
        assert h.count() == 1
    ran = auditor("snapshot", "--help")
    assert "reports/history.sqlite" in ran.out and "PATH|URL" in ran.out
