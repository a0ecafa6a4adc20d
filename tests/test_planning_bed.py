"""Capacity planning on the real bed: histories recorded with `auditor snapshot --at` from an
fs pool of its own, on a loop-mounted ext4 image (statvfs makes its figures exact), with known
amounts of data written between snapshots; and the planning section in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testbed
from clirun import auditor
from golden import REGEN, ROOT
from selenium import webdriver
from selenium.webdriver.common.by import By
from test_report_bed import OUTPUT, chromium, load  # noqa: F401  (chromium: a fixture)
from testbed import PoolSpec, Workspace

pytestmark = pytest.mark.libvirtd

MiB = 1 << 20
T0 = datetime(2025, 9, 1, 2, 30, tzinfo=UTC)  # long ago: the window counts from the newest
FS_SIZE = 128 * MiB


@pytest.fixture(scope="module")
def fs_pool(libvirt_conn: libvirt.virConnect, workspace: Workspace) -> Iterator[PoolSpec]:
    """An fs pool of this module on its own loop-mounted ext4 image, no reserved blocks."""
    name = f"{workspace.prefix}plan"
    image = workspace.root / f"{name}.img"
    testbed._raw_sparse(image, FS_SIZE)
    testbed._run("mkfs.ext4", "-q", "-F", "-m", "0", image)
    device = testbed._losetup(image)
    mount = testbed._mkdir(workspace.root / name)
    with ExitStack() as stack:
        stack.callback(testbed._run, "losetup", "-d", device)  # after the pool is stopped
        testbed._define_pool(libvirt_conn, workspace, stack, name, mount, device=device)
        yield PoolSpec(name, str(mount), device)


@dataclass
class Recorder:
    """Writes files into the pool's folder and records snapshots of the whole host."""

    pool: PoolSpec
    history: Path
    measured: list[tuple[datetime, int, int]]  # (at, capacity, used space) by statvfs

    def write(self, name: str, size: int) -> None:
        fd = os.open(Path(self.pool.path) / name, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        (Path(self.pool.path) / name).unlink()

    def snapshot(self, day: float) -> None:
        at = T0 + timedelta(days=day)
        r = auditor("-c", testbed.URI, "snapshot", "--history", str(self.history),
                    "--at", at.isoformat())  # fmt: skip
        assert r.code in (0, 1), r.err  # 1: other runs' pools on this host may be unreadable
        st = os.statvfs(self.pool.path)
        capacity = st.f_blocks * st.f_frsize
        self.measured.append((at, capacity, capacity - st.f_bavail * st.f_frsize))

    def plan(self, *args: str) -> dict[str, Any]:
        r = auditor("plan", "--history", str(self.history), "--pool", self.pool.name,
                    "-f", "json", *args)  # fmt: skip
        assert r.code == 0, r.err
        return r.json()  # type: ignore[no-any-return]

    def row(self, *args: str) -> dict[str, Any]:
        (row,) = self.plan(*args)["pools"]
        return row


@pytest.fixture
def rec(fs_pool: PoolSpec, tmp_path: Path) -> Iterator[Recorder]:
    """A fresh history; the pool's folder is emptied again afterwards."""
    yield Recorder(fs_pool, tmp_path / "h.sqlite", [])
    for f in Path(fs_pool.path).iterdir():
        if f.is_file():
            f.unlink()


def near(got: float, want: float, rel: float = 0.01) -> bool:
    return abs(got - want) <= rel * abs(want)


def test_known_growth_gives_growth_and_days_to_full(rec: Recorder) -> None:
    for day in range(5):
        rec.write(f"g{day}.raw", 4 * MiB)
        rec.snapshot(day)
    r = rec.row()
    at, capacity, used = rec.measured[-1]
    per_day = 4 * MiB
    assert r["capacity"] == capacity and r["used_space"] == used  # exact: statvfs
    assert r["snapshots"] == 5 and r["status"] == "growing"
    assert near(r["used_space_per_day"], per_day)
    # independently: least squares over the statvfs measurements (clean, so it is the truth)
    xs = [(t - T0) / timedelta(days=1) for t, _, _ in rec.measured]
    lsq = statistics.linear_regression(xs, [float(u) for _, _, u in rec.measured])
    assert near(r["used_space_per_day"], lsq.slope)
    assert near(r["days_to_full"], (capacity - used) / per_day)
    assert near(r["days_to_crit"], (capacity * 0.9 - used) / per_day)
    full = at + timedelta(days=(capacity - used) / per_day)
    assert abs(datetime.fromisoformat(r["full_date"]).date() - full.date()) <= timedelta(days=1)
    assert r["worst_overflow"] == 0 and r["fit_r2"] > 0.99
    # what-if, by hand from the newest snapshot's rows in the history file
    db = sqlite3.connect(rec.history)
    (sid,) = db.execute("SELECT max(id) FROM snapshots").fetchone()
    avail, prov, exposure = db.execute(
        "SELECT available, provisioned, exposure FROM pools WHERE snapshot_id = ? AND pool = ?",
        (sid, rec.pool.name),
    ).fetchone()
    virtual, size, growth = db.execute(
        "SELECT virtual_size, disk_size, growth FROM volumes WHERE snapshot_id = ? "
        "AND pool = ? AND volume = 'g0.raw'", (sid, rec.pool.name),
    ).fetchone()  # fmt: skip
    doc = rec.plan("--add", "2x8M", "--preallocated", "--remove", "g0.raw")
    now, after = doc["pools"]
    assert now["available"] == avail and now["provisioned"] == prov
    assert after["provisioned"] == prov + 16 * MiB - virtual
    assert after["available"] == avail - 16 * MiB + size
    assert after["exposure"] == exposure - growth
    assert after["overcommit_ratio"] == round(after["provisioned"] / capacity, 4)
    assert near(after["days_to_full"], (avail - 16 * MiB + size) / per_day)


def test_flat_history_has_no_full_date(rec: Recorder) -> None:
    rec.write("still.raw", 8 * MiB)
    for day in range(3):
        rec.snapshot(day)
    r = rec.row()
    assert r["status"] == "flat" and r["used_space_per_day"] == 0
    assert r["full_date"] is None and r["days_to_full"] is None and r["crit_date"] is None


def test_one_snapshot_is_not_enough_history(rec: Recorder) -> None:
    rec.snapshot(0)
    r = rec.row()
    assert r["status"] == "not enough history" and "1 snapshot(s), 3 needed" in r["note"]
    assert r["used_space_per_day"] is None and r["full_date"] is None
    assert r["used_space"] == rec.measured[0][2]
    table = auditor("plan", "--history", str(rec.history), "--pool", rec.pool.name)
    assert "not enough history" in table.out


def test_a_pool_that_shrinks(rec: Recorder) -> None:
    for n in range(3):
        rec.write(f"s{n}.raw", 6 * MiB)
    for day in range(3):
        rec.snapshot(day)
        rec.remove(f"s{day}.raw")
    r = rec.row()
    assert r["status"] == "shrinking" and near(r["used_space_per_day"], -6 * MiB)
    assert r["days_to_full"] is None and r["full_date"] is None
    assert r["horizon_used_space"] == r["used_space"]  # no shrink is planned on


def test_a_gap_in_the_history(rec: Recorder) -> None:
    last = 0
    for day in (0, 1, 2, 9, 10):
        rec.write(f"d{day}.raw", 2 * MiB * (day - last) or MiB)
        last = day
        rec.snapshot(day)
    r = rec.row()
    assert near(r["used_space_per_day"], 2 * MiB) and r["snapshots"] == 5
    _, capacity, used = rec.measured[-1]
    assert near(r["days_to_full"], (capacity - used) / (2 * MiB))


def test_an_outlier_that_least_squares_follows(rec: Recorder) -> None:
    for day in range(6):
        rec.write(f"o{day}.raw", 3 * MiB)
        if day == 3:
            rec.write("dump.tmp", 30 * MiB)  # there for one snapshot only
        rec.snapshot(day)
        if day == 3:
            rec.remove("dump.tmp")
    r = rec.row()
    xs = [(t - T0) / timedelta(days=1) for t, _, _ in rec.measured]
    lsq = statistics.linear_regression(xs, [float(u) for _, _, u in rec.measured]).slope
    assert abs(lsq - 3 * MiB) > 0.2 * 3 * MiB  # least squares follows the odd snapshot
    assert near(r["used_space_per_day"], 3 * MiB)  # the robust fit does not
    _, capacity, used = rec.measured[-1]
    assert near(r["days_to_full"], (capacity - used) / (3 * MiB))


def test_report_planning_section_in_chromium(
    rec: Recorder,
    tmp_path: Path,
    chromium: webdriver.Chrome,  # noqa: F811
) -> None:
    for day in range(4):
        rec.write(f"p{day}.raw", 5 * MiB)
        rec.snapshot(day)
    rec.write("p4.raw", 5 * MiB)
    out = tmp_path / "out"
    r = auditor("-c", testbed.URI, "report", "--out", str(out), "--history", str(rec.history),
                "--at", (T0 + timedelta(days=4)).isoformat())  # fmt: skip
    assert r.code in (0, 1), r.err
    doc = json.loads((out / "summary.json").read_text())["planning"]
    mine = next(p for p in doc["pools"] if p["pool"] == rec.pool.name)
    assert mine == rec.row() and near(mine["used_space_per_day"], 5 * MiB)
    load(chromium, out / "report.html")
    cards = chromium.find_elements(By.CSS_SELECTOR, "#planning article")
    assert len(cards) == len(doc["pools"])
    card = chromium.find_element(By.CSS_SELECTOR, f"#planning [data-plan='{rec.pool.name}']")
    assert card.find_elements(By.CSS_SELECTOR, "svg.chart polyline.c-used-fit")
    assert card.find_element(By.CSS_SELECTOR, "svg.chart").size["height"] > 100
    assert mine["full_date"] in card.text
    OUTPUT.mkdir(parents=True, exist_ok=True)
    card.screenshot(str(OUTPUT / "planning-bed.png"))


# ---- the README's picture: a test-driver host with three weeks of history --------------------

GiB = 1 << 30


def _docs_host(day: int) -> str:
    """vmstore runs out (with one odd snapshot on day 13), backups reaches critical within
    the horizon, scratch is flat but overcommitted, iso appears two days before the end."""

    def vol(name: str, virtual: float, size: float) -> str:
        return (f"<volume type='file'><name>{name}</name><capacity unit='bytes'>"
                f"{round(virtual * GiB)}</capacity><allocation unit='bytes'>{round(size * GiB)}"
                "</allocation><target><format type='raw'/></target></volume>")  # fmt: skip

    def pool(name: str, *vols: str) -> str:
        return (f"<pool type='dir'><name>{name}</name><target><path>/srv/{name}</path>"
                f"</target>{''.join(vols)}</pool>")  # fmt: skip

    odd = 12 if day == 13 else 0
    pools = [
        pool("vmstore", vol("web.raw", 120, 30 + day * 1.5 + odd), vol("db.raw", 60, 25),
             vol("new.raw", 40 + day // 5 * 10, 0)),
        pool("backups", vol("dump.raw", 70, 40 + day * 0.5)),
        pool("scratch", vol("ci.raw", 100, 8), vol("sandbox.raw", 60, 4)),
    ]  # fmt: skip
    if day >= 19:
        pools.append(pool("iso", vol("debian.iso", 0.6, 0.6)))
    return f"<node>{''.join(pools)}</node>"


_RECORD = """
import socket, sys
from datetime import datetime, timedelta
socket.sethostname("kvm01")
from auditor.cli import main
folder, last = sys.argv[1], int(sys.argv[2])
start = datetime.fromisoformat(sys.argv[3])
for day in range(last + 1):
    at = (start + timedelta(days=day)).isoformat()
    cmd = ["report", "--out", folder + "/out"] if day == last else ["snapshot"]
    try:
        main(["-c", f"test://{folder}/day{day}.xml", *cmd, "--history", folder + "/h.sqlite",
              "--at", at])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
"""


def test_screenshot_of_the_planning_section(tmp_path: Path, chromium: webdriver.Chrome) -> None:  # noqa: F811
    """docs/planning.png (rewritten with AUDITOR_REGEN_GOLDEN=1): host kvm01 with 21 nightly
    snapshots, in one process in a UTS namespace (the test driver reports the host name)."""
    last = 20
    for day in range(last + 1):
        (tmp_path / f"day{day}.xml").write_text(_docs_host(day))
    argv = ["unshare", "--user", "--map-root-user", "--uts", sys.executable, "-c", _RECORD,
            str(tmp_path), str(last), T0.isoformat()]  # fmt: skip
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())["planning"]
    order = [(r["pool"], r["status"]) for r in doc["pools"] if r["type"] == "dir"]
    assert order == [("vmstore", "growing"), ("backups", "growing"), ("scratch", "flat"),
                     ("iso", "not enough history")]  # fmt: skip
    vmstore = doc["pools"][0]
    assert vmstore["used_space_per_day"] == round(1.5 * GiB)  # day 13's odd snapshot ignored
    load(chromium, tmp_path / "out" / "report.html")
    chromium.set_window_size(1400, 2600)
    path = OUTPUT / "planning.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    chromium.find_element(By.ID, "planning").screenshot(str(path))
    chromium.set_window_size(1400, 1000)
    assert 20_000 < path.stat().st_size < 400_000
    if REGEN:
        shutil.copyfile(path, ROOT / "docs" / "planning.png")
    assert (ROOT / "docs" / "planning.png").stat().st_size < 400_000
