"""The SQLite history: schema, round trip, refusing corrupt and foreign files, concurrency."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from summaries import GiB, summary

from auditor.errors import HistoryError
from auditor.history import APPLICATION_ID, SCHEMA_VERSION, History, parse_since, parse_time

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 2, tzinfo=UTC)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_file_is_identified_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.sqlite"
    with History.open(path) as h:
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
    with History.open(path) as h:
        first = h.record(summary(T1, "h1", "h2"), "1.0")
        h.record(summary(T2, "h1", extra=True), "1.0")
        assert h.count() == 2
        series = h.series(pool="big")
        assert [(r["collected_at"], r["host"]) for r in series] == [
            ("2026-01-01T00:00:00.000000+00:00", "h1"),
            ("2026-01-01T00:00:00.000000+00:00", "h2"),
            ("2026-01-02T00:00:00.000000+00:00", "h1"),
        ]
        assert [r["provisioned"] for r in series] == [170 * GiB, 170 * GiB, 180 * GiB]
        assert series[0]["overcommit_ratio"] == 1.7 and series[0]["volumes"] == 3
        assert h.series(pool="big", host="h2", since=T1 + timedelta(hours=1)) == []
        assert len(h.series(since=T2)) == 3  # big, idle, (unmanaged) of h1
        idle = h.series(pool="idle")[0]
        assert idle["state"] == "inactive" and idle["capacity"] is None and idle["volumes"] is None

        # The most recent snapshot of each host before a time; h2 was not read on T2.
        earlier = {e.host: e for e in h.earlier(("h1", "h2", "h3"), T2 + timedelta(seconds=1))}
        assert set(earlier) == {"h1", "h2"}
        assert earlier["h1"].collected_at == T2 and earlier["h2"].collected_at == T1
        assert {v["volume"] for v in earlier["h1"].volumes} == {
            "a.raw", "b.raw", "c.raw", "new.raw", "loose.raw"
        }  # fmt: skip
        loose = next(v for v in earlier["h1"].volumes if v["volume"] == "loose.raw")
        assert (loose["pool"], loose["managed"], loose["used_by"]) == ("", 0, "vm1")
        assert [e.collected_at for e in h.earlier(("h1",), T2)] == [T1]
        assert h.earlier(("h1",), T1) == []
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT hosts FROM snapshots WHERE id = ?", (first,)).fetchone() == (
        '["h1", "h2"]',
    )


def test_a_failed_transaction_records_nothing(tmp_path: Path) -> None:
    with History.open(tmp_path / "h.sqlite") as h:
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
        History.open(path)
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
        History.open(path)
    assert digest(path) == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with History.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(HistoryError, match="newer"):
        History.open(path)
    assert digest(path) == before


def test_reading_needs_an_existing_history(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no history"):
        History.open(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(HistoryError, match="empty"):
        History.open(tmp_path / "empty.sqlite", create=False)


def _writer(path: str, n: int, start: int) -> None:
    for i in range(n):
        with History.open(path) as h:
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
    with History.open(path) as h:
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
