"""auditor report / snapshot / history on libvirt's test driver (no daemon), and the pieces."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from clirun import auditor
from golden import ROOT, uri_of
from summaries import GiB, summary

from auditor.analyze import full_size
from auditor.config import Config
from auditor.errors import PublishError
from auditor.history import open_history, parse_time
from auditor.nightly import build_page, volume_changes
from auditor.report import html
from auditor.report.publish import FILES, publish, render_files
from auditor.report.rows import POOL_COLUMNS, SIZE_COLUMNS, VOLUME_COLUMNS

HOST = uri_of("report-host.xml")
BEFORE = uri_of("report-host-before.xml")
HOSTILE = uri_of("hostile-host.xml")
T1, T2 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def run_report(tmp: Path, uri: str = HOST, *args: str, at: str = T2, name: str = "out") -> Path:
    r = auditor("-c", uri, "report", "--out", str(tmp / name), "--history",
                str(tmp / "h.sqlite"), "--at", at, *args)  # fmt: skip
    assert r.code == 0, r.err
    return tmp / name


def doc(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_report_writes_the_four_files(tmp_path: Path) -> None:
    r = auditor("-c", HOST, "report", "--out", str(tmp_path / "out"), "--history",
                str(tmp_path / "h.sqlite"), "--at", T2)  # fmt: skip
    assert r.code == 0, r.err
    host = doc(tmp_path / "out")["hosts"][0]
    assert r.out.splitlines() == [
        f"report: {tmp_path / 'out' / 'report.html'}",
        f"3 over a threshold: vmstore on {host} (crit), backups on {host} (warn), "
        f"scratch on {host} (warn)",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite", "out"]  # no leftovers


def test_csv_files_are_the_read_commands_csv(tmp_path: Path) -> None:
    out = run_report(tmp_path)
    assert (out / "pools.csv").read_text() == auditor("-c", HOST, "pools", "-f", "csv").out
    assert (out / "volumes.csv").read_text() == auditor("-c", HOST, "volumes", "-f", "csv").out


@pytest.mark.parametrize(
    ("uri", "name", "key", "columns"),
    [
        (HOST, "volumes", "volumes", VOLUME_COLUMNS),
        (HOST, "pools", "pools", POOL_COLUMNS),
        (HOSTILE, "volumes", "volumes", VOLUME_COLUMNS),
    ],
)
def test_csv_round_trips_to_the_json_numbers(
    tmp_path: Path, uri: str, name: str, key: str, columns: list[str]
) -> None:
    out = run_report(tmp_path, uri)
    df = pd.read_csv(out / f"{name}.csv")
    rows = auditor("-c", uri, name, "-f", "json").json()[key]
    assert list(df.columns) == columns and len(df) == len(rows) > 0
    for i, row in enumerate(rows):
        for c in columns:
            if c in SIZE_COLUMNS or c in ("volumes", "thin", "preallocated", "unknown"):
                assert pd.api.types.is_integer_dtype(df[c]) or df[c].isna().any(), c
                got = df.loc[i, c]
                assert (pd.isna(got) and row[c] is None) or int(got) == row[c], (c, got, row[c])
            elif c == "overcommit_ratio":
                got = df.loc[i, c]
                assert (pd.isna(got) and row[c] is None) or float(got) == row[c]


def test_summary_json_levels_totals_and_order(tmp_path: Path) -> None:
    d = doc(run_report(tmp_path))
    levels = [(p["pool"], p["level"]) for p in d["pools"]]
    assert levels[:3] == [("vmstore", "crit"), ("backups", "warn"), ("scratch", "warn")]
    assert set(levels[3:]) == {("iso", "ok"), ("(unmanaged)", "unknown")}
    vmstore = d["pools"][0]
    assert vmstore["used_percent"] == 88.0 and vmstore["overcommit_ratio"] == 2.5
    assert vmstore["reasons"] == [
        "provisioned 2.50x capacity (critical at 2x)", "88.0% used (warning at 80%)"
    ]  # fmt: skip
    assert vmstore["thresholds"] == {
        "used_warn": 80.0, "used_crit": 90.0, "overcommit_warn": 1.5, "overcommit_crit": 2.0,
        "exposure_crit": 1.0,
    }  # fmt: skip
    t = d["totals"]
    assert (t["hosts"], t["pools"], t["volumes"], t["unmanaged"], t["over_threshold"]) == (
        1, 4, 10, 1, 3
    )  # fmt: skip
    assert t["capacity"] == 400 * GiB
    assert t["provisioned"] == (250 + 90 + 160) * GiB + 631 * 2**20
    assert d["collected_at"] == "2026-01-02T00:00:00+00:00" and d["previous_at"] is None
    assert vmstore["change"] is None and d["skipped"] == []


def test_second_report_shows_the_change(tmp_path: Path) -> None:
    r = auditor("-c", BEFORE, "snapshot", "--history", str(tmp_path / "h.sqlite"), "--at", T1)
    assert r.code == 0, r.err
    assert r.out.startswith("snapshot 1: 5 pools, 10 volumes at 2026-01-01T00:00:00+00:00")
    d = doc(run_report(tmp_path))
    assert d["previous_at"] == "2026-01-01T00:00:00+00:00"
    change = {p["pool"]: p["change"] for p in d["pools"]}
    assert change["vmstore"] == {
        "since": "2026-01-01T00:00:00+00:00", "volumes": 1, "used": 10 * GiB,
        "provisioned": 40 * GiB, "available": -10 * GiB,
        "exposure": full_size("qcow2", 40 * GiB) - 8 * GiB - 2 * GiB,  # build.qcow2, web01
    }  # fmt: skip
    assert change["backups"]["used"] == 6 * GiB and change["backups"]["volumes"] == 0
    assert change["scratch"]["volumes"] == -1 and change["iso"]["used"] == 0
    assert [(c["change"], c["pool"], c["volume"]) for c in d["volume_changes"]] == [
        ("added", "vmstore", "build.qcow2"), ("removed", "scratch", "old.qcow2")
    ]  # fmt: skip
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Volumes added or removed since the previous report" in page
    assert "Since 2026-01-01 00:00 UTC:" in page and "+10.0 GiB" in page
    # A backfill before the first snapshot has nothing to compare with.
    early = doc(run_report(tmp_path, at="2025-12-31T00:00:00Z", name="early"))
    assert early["previous_at"] is None
    series = auditor("history", "--history", str(tmp_path / "h.sqlite"), "--pool", "vmstore",
                     "-f", "json").json()["pools"]  # fmt: skip
    assert [(s["collected_at"][:10], s["volumes"]) for s in series] == [
        ("2025-12-31", 4), ("2026-01-01", 3), ("2026-01-02", 4)
    ]  # fmt: skip


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_names_are_escaped_and_csv_neutralised(tmp_path: Path) -> None:
    out = run_report(tmp_path, HOSTILE)
    page = (out / "report.html").read_text()
    parser = Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags.count("script") == 1 and "marquee" not in tags and "img" not in tags
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
    assert "&lt;script&gt;alert(1)&lt;script&gt;.qcow2" in page
    assert "&lt;marquee&gt;pool" in page and "&lt;img src=x onerror=alert(3)&gt;" in page
    assert "&#34; onmouseover=&#34;alert(2)&#39;.raw" in page
    df = pd.read_csv(out / "volumes.csv")
    assert set(df["volume"]) == {
        "<script>alert(1)<script>.qcow2", "'=HYPERLINK(\"x\",\"y\").raw", "'+cmd.raw",
        "'-2+3.raw", "'@SUM(A1).raw", "\" onmouseover=\"alert(2)'.raw",
    }  # fmt: skip
    assert df["virtual_size"].tolist() == [10 * GiB] * 6
    names = {v["volume"] for v in doc(out)["volumes"]}
    assert '=HYPERLINK("x","y").raw' in names  # JSON keeps the real names


def test_page_is_self_contained_with_a_strict_policy(tmp_path: Path) -> None:
    page = (run_report(tmp_path) / "report.html").read_text()
    parser = Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert not {"src", "href"} & set(attrs) or attrs.get("href", "").startswith("#"), tag
    csp = next(
        a["content"] for t, a in parser.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp.startswith("default-src 'none'; style-src 'sha256-")
    assert "unsafe-inline" not in (csp or "")


def test_skipped_inactive_and_unmanaged_are_on_the_page() -> None:
    s = summary(datetime(2026, 1, 1, tzinfo=UTC), "h1", skip=True)
    text = html.render(build_page(s, Config(), [], ("test:///h1",), "9.9"))
    assert "/bad.qcow2" in text and "qemu-img: not a qcow2 image" in text
    assert "1 item could not be read" in text
    assert "Pool <strong>idle</strong> on h1 is inactive" in text
    assert "/elsewhere/loose.raw" in text and "Unmanaged disks <small>1</small>" in text


def test_inactive_pools_and_unreadable_items_are_not_changes(tmp_path: Path) -> None:
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    with open_history(tmp_path / "h.sqlite") as h:
        h.record(summary(t1, extra=True), "x")
        h.record(summary(t2, down=True), "x")
        gone = volume_changes(summary(t2), h.earlier(("h1",), t2))
        assert [(c.change, c.volume) for c in gone] == [("removed", "new.raw")]
        back = volume_changes(summary(t2 + (t2 - t1)), h.earlier(("h1",), t2 + (t2 - t1)))
        assert back == []  # big was inactive in the previous snapshot
        stopped = volume_changes(summary(t2, down=True), h.earlier(("h1",), t2))
        assert stopped == []  # big is inactive now: its volumes are unknown, not removed


def test_publish_is_all_or_nothing(tmp_path: Path) -> None:
    s = summary(datetime(2026, 1, 1, tzinfo=UTC))
    files = render_files(build_page(s, Config(), [], ("x",), "9.9"))
    out = tmp_path / "report"
    publish(out, files)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    broken = dict(files) | {"missing-folder/x": b""}  # fails after the other files are written
    with pytest.raises(PublishError, match="cannot write the report"):
        publish(out, broken)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left
    publish(out, files | {"report.html": b"new"})
    assert (out / "report.html").read_bytes() == b"new"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="not a report"):
        publish(out, files)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(PublishError, match="not a folder"):
        publish(out / "notes.txt", files)


def test_failed_publish_records_no_snapshot(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    r = auditor("-c", HOST, "report", "--out", str(tmp_path / "out"),
                "--history", str(tmp_path / "h.sqlite"))  # fmt: skip
    assert r.code == 2 and r.err.count("\n") == 1 and "not a report" in r.err
    conn = sqlite3.connect(tmp_path / "h.sqlite")
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0


def test_corrupt_history_stops_the_report(tmp_path: Path) -> None:
    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"not a database" * 300)
    r = auditor("-c", HOST, "report", "--out", str(tmp_path / "out"), "--history", str(bad))
    assert r.code == 2 and r.err.count("\n") == 1 and "corrupt or not an SQLite database" in r.err
    assert not (tmp_path / "out").exists() and bad.read_bytes() == b"not a database" * 300


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--policy", "POLICY"), "used_wran"),
        (("--at", "yesterday"), "not an ISO-8601"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[thresholds]\nused_wran = 70\n")
    argv = [str(policy) if a == "POLICY" else a for a in args]
    r = auditor("-c", HOST, "report", "--out", str(tmp_path / "out"),
                "--history", str(tmp_path / "h.sqlite"), *argv)  # fmt: skip
    assert r.code == 2 and needle in r.err
    assert not (tmp_path / "out").exists()


def test_config_thresholds_reach_the_page(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[thresholds]\nused_warn = 85\n[pools."backups"]\nused_warn = 95\nused_crit = 99\n'
    )
    d = doc(run_report(tmp_path, HOST, "--policy", str(policy)))
    levels = {p["pool"]: p["level"] for p in d["pools"]}
    assert levels["backups"] == "ok" and levels["vmstore"] == "crit"
    assert d["thresholds"]["backups"]["used_warn"] == 95.0
    assert d["config"] == str(policy)
    assert "backups" in (tmp_path / "out" / "report.html").read_text()


def test_the_policy_file_can_come_from_the_environment(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[thresholds]\nused_wran = 70\n")
    argv = [sys.executable, "-m", "auditor", "-c", HOST, "report", "--out", str(tmp_path / "o"),
            "--history", str(tmp_path / "h.sqlite")]  # fmt: skip
    env = os.environ | {"AUDITOR_POLICY": str(policy)}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 2 and "used_wran" in r.stderr and str(policy) in r.stderr


def test_history_command(tmp_path: Path) -> None:
    h = str(tmp_path / "h.sqlite")
    for uri, at in ((BEFORE, T1), (HOST, T2)):
        assert auditor("-c", uri, "snapshot", "--history", h, "--at", at).code == 0
    csv = auditor("history", "--history", h, "--pool", "backups", "-f", "csv")
    assert csv.code == 0
    df = pd.read_csv(io.StringIO(csv.out))
    assert df["used"].tolist() == [78 * GiB, 84 * GiB]
    table = auditor("history", "--history", h, "--since", "2026-01-02")
    assert table.code == 0 and "84.0 GiB" in table.out and "78.0 GiB" not in table.out
    assert auditor("history", "--history", h, "--since", "1d", "-f", "json").json()["pools"] == []
    missing = auditor("history", "--history", str(tmp_path / "none.sqlite"))
    assert missing.code == 2 and "no history" in missing.err
    assert auditor("history", "--history", h, "--since", "soon").code == 2


def test_default_out_is_the_collection_date(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "auditor", "-c", HOST, "report", "--at", "2026-03-04T12:00:00Z"]
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    day = parse_time("2026-03-04T12:00:00Z").astimezone().strftime("%Y-%m-%d")
    assert sorted(p.name for p in (tmp_path / "reports" / day).iterdir()) == sorted(FILES)
    assert (tmp_path / "reports" / "history.sqlite").is_file()


def test_templates_are_packaged() -> None:
    """Every template matches the package-data globs, so an installed auditor has them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert project["package-dir"]["auditor.templates"] == "templates"
    globs = project["package-data"]["auditor.templates"]
    files = [p for p in (ROOT / "templates").iterdir() if p.name != "__init__.py" and p.is_file()]
    assert files and all(any(p.match(g) for g in globs) for p in files)
    assert html.environment().get_template("report.html.j2") is not None


def test_the_report_carries_the_audits_findings(tmp_path: Path) -> None:
    d = doc(run_report(tmp_path))
    audit = auditor("-c", HOST, "audit", "--format", "json")
    assert audit.code == 1, audit.err
    assert d["findings"] == audit.json()["findings"]
    assert {f["code"] for f in d["findings"]} >= {"AUD101", "AUD102", "AUD103"}
    csv = (tmp_path / "out" / "findings.csv").read_text().splitlines()
    assert (
        csv[0] == "severity,code,host,pool,volume,message,fix"
        and len(csv) == len(d["findings"]) + 1
    )
    assert "Findings" in (tmp_path / "out" / "report.html").read_text()
