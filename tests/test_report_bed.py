"""auditor report against the real libvirtd test bed, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from clirun import Ran, auditor
from golden import REGEN, ROOT, auditor_on, uri_of
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from testbed import Bed, PoolSpec

pytestmark = pytest.mark.libvirtd  # the full suite (make test), whose set-up installs chromium

OUTPUT = ROOT / "tests" / "output"
MiB = 1 << 20
T1, T2 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)  # fmt: skip


def report(bed: Bed, tmp: Path, at: str, name: str = "out") -> tuple[Ran, Path]:
    r = auditor("-c", bed.uri, "report", "--out", str(tmp / name),
                "--history", str(tmp / "h.sqlite"), "--at", at)  # fmt: skip
    # Exit 1 is allowed: other pools on this host (other test runs) may be unreadable.
    assert r.code in (0, 1), r.err
    return r, tmp / name


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def test_report_on_the_bed(bed: Bed, tmp_path: Path) -> None:
    started = time.monotonic()
    r, out = report(bed, tmp_path, T1)
    elapsed = time.monotonic() - started
    assert sorted(p.name for p in out.iterdir()) == [
        "findings.csv", "pools.csv", "report.html", "summary.json", "volumes.csv"
    ]  # fmt: skip
    d = summary(out)
    pools = {p["pool"]: p for p in d["pools"]}
    assert pools[bed.dir_pool.name]["level"] in ("ok", "warn", "crit")
    assert pools[bed.inactive_pool.name]["level"] == "unknown"
    fs = pools[bed.fs_pool.name]
    assert fs["used_percent"] == round((fs["capacity"] - fs["available"]) / fs["capacity"] * 100, 2)
    paths = {v["path"] for v in d["volumes"]}
    assert {i.path for i in bed.images.values() if i.pool != bed.inactive_pool.name} <= paths
    page = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;script&gt;.raw" in page
    assert "<script>alert(1)" not in page
    assert bed.unmanaged_file.path in page and bed.inactive_pool.name in page
    for skip in d["skipped"]:  # every unreadable item is on the page with its reason
        assert skip["name"] in page
    assert (r.code == 1) == bool(d["skipped"])
    print(f"report on the bed: {elapsed:.2f} s, page {len(page.encode()) / 1024:.0f} KiB")


def test_second_report_shows_the_change(
    bed: Bed, scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    report(bed, tmp_path, T1, "first")
    pool = libvirt_conn.storagePoolLookupByName(scratch_pool.name)
    pool.createXML(
        "<volume><name>grown.raw</name><capacity unit='MiB'>64</capacity>"
        "<allocation unit='MiB'>64</allocation><target><format type='raw'/></target></volume>",
        0,
    )
    _, out = report(bed, tmp_path, T2, "second")
    d = summary(out)
    assert d["previous_at"] == "2026-01-01T00:00:00+00:00"
    scratch = next(p for p in d["pools"] if p["pool"] == scratch_pool.name)
    change = scratch["change"]
    assert (change["volumes"], change["provisioned"]) == (1, 64 * MiB)
    assert change["used"] >= 64 * MiB and change["available"] <= -64 * MiB
    added = [c for c in d["volume_changes"] if c["pool"] == scratch_pool.name]
    assert [(c["change"], c["volume"]) for c in added] == [("added", "grown.raw")]
    page = (out / "report.html").read_text()
    assert "Volumes added or removed since the previous report" in page
    assert "grown.raw" in page and "+64.0 MiB" in page


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's chromium through its chromedriver, with a fresh profile and no network."""
    profile = tempfile.mkdtemp(prefix="auditor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def load(driver: webdriver.Chrome, page: Path) -> None:
    """Open the page; fail on any console message of level SEVERE or any non-file request."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(page.as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    urls = [
        json.loads(e["message"])["message"]["params"]["request"]["url"]
        for e in driver.get_log("performance")
        if '"Network.requestWillBeSent"' in e["message"]
    ]
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls


def screenshot(driver: webdriver.Chrome, path: Path, width: int = 1400) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)


def cells(driver: webdriver.Chrome, column: int) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#volumes tbody tr")
    return [
        r.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-sort") or "" for r in rows
    ]


def test_page_in_chromium(bed: Bed, tmp_path: Path, chromium: webdriver.Chrome) -> None:
    _, out = report(bed, tmp_path, T1)
    d = summary(out)
    load(chromium, out / "report.html")
    assert chromium.title.startswith("Disk capacity:")
    rows = chromium.find_elements(By.CSS_SELECTOR, "#volumes tbody tr")
    assert len(rows) == len(d["volumes"]) > 10
    bars = chromium.find_elements(By.CSS_SELECTOR, "#pools svg.bar")
    with_figures = [p for p in d["pools"] if p["type"] != "unmanaged" and p["capacity"]]
    assert len(bars) == len(with_figures) >= 2
    assert chromium.find_element(By.ID, "status").is_displayed()
    assert chromium.find_elements(By.CSS_SELECTOR, f"#pools [data-pool='{bed.fs_pool.name}']")

    # Sorting: click "Virtual size" once (ascending) and again (descending).
    header = chromium.find_element(By.XPATH, "//table[@id='volumes']//th[.='Virtual size']")
    index = [th.text for th in chromium.find_elements(By.CSS_SELECTOR, "#volumes th")].index(
        "Virtual size"
    )
    before = cells(chromium, index)
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    up = cells(chromium, index)
    numbers = [int(v) for v in up if v]
    assert numbers == sorted(numbers) and up != before
    assert up[len(numbers) :] == [""] * (len(up) - len(numbers))  # unknown sizes last
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    down = [int(v) for v in cells(chromium, index) if v]
    assert down == sorted(numbers, reverse=True)

    # Filtering by pool, then by provisioning.
    Select(chromium.find_element(By.CSS_SELECTOR, "select[data-filter='pool']")).select_by_value(
        bed.dir_pool.name
    )
    visible = [
        r for r in chromium.find_elements(By.CSS_SELECTOR, "#volumes tbody tr") if r.is_displayed()
    ]
    in_pool = [v for v in d["volumes"] if v["pool"] == bed.dir_pool.name]
    assert len(visible) == len(in_pool)
    assert chromium.find_element(By.ID, "shown").text == f"{len(in_pool)} of {len(rows)} shown"
    Select(chromium.find_element(By.CSS_SELECTOR, "select[data-filter='prov']")).select_by_value(
        "preallocated"
    )
    visible = [
        r for r in chromium.find_elements(By.CSS_SELECTOR, "#volumes tbody tr") if r.is_displayed()
    ]
    assert len(visible) == sum(v["provisioning"] == "preallocated" for v in in_pool) > 0
    Select(chromium.find_element(By.CSS_SELECTOR, "select[data-filter='pool']")).select_by_value("")
    Select(chromium.find_element(By.CSS_SELECTOR, "select[data-filter='prov']")).select_by_value("")
    assert chromium.find_elements(By.CSS_SELECTOR, "#volumes td[title$=' bytes']")

    screenshot(chromium, OUTPUT / "report-bed.png")
    assert (OUTPUT / "report-bed.png").stat().st_size > 10_000


def test_screenshot_of_a_test_driver_host(tmp_path: Path, chromium: webdriver.Chrome) -> None:
    """The README's picture (docs/report.png, rewritten with AUDITOR_REGEN_GOLDEN=1): a host
    with three pools over a threshold and a day of history."""
    h = str(tmp_path / "h.sqlite")
    for xml, at, command in (
        ("report-host-before.xml", T1, "snapshot"),
        ("report-host.xml", T2, "report"),
    ):
        extra = ("--out", str(tmp_path / "out")) if command == "report" else ()
        r = auditor_on("kvm01", "-c", uri_of(xml), command, "--history", h, "--at", at, *extra)
        assert r.code == 0, r.err
    load(chromium, tmp_path / "out" / "report.html")
    chromium.set_window_size(1280, 1350)
    path = OUTPUT / "report-host.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(path))
    chromium.set_window_size(1400, 1000)
    assert path.stat().st_size < 300_000
    if REGEN:
        shutil.copyfile(path, ROOT / "docs" / "report.png")
    assert os.path.getsize(ROOT / "docs" / "report.png") < 300_000
