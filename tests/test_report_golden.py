"""Golden files of a report: CSV, summary.json and the HTML outline of a test-driver host.

Deterministic: fixed --at times, host name 'kvm01' (a UTS namespace), repository path and
version replaced. Regenerate with AUDITOR_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path

import pytest
from golden import DATA, GOLDEN, ROOT, auditor_on, check, outline, uri_of

FILES = ["pools.csv", "volumes.csv", "findings.csv", "summary.json", "report.html"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    history = str(tmp / "h.sqlite")
    before = auditor_on("kvm01", "-c", uri_of("report-host-before.xml"), "snapshot",
                        "--history", history, "--at", "2026-01-01T00:00:00Z")  # fmt: skip
    assert before.code == 0, before.err
    now = auditor_on("kvm01", "-c", uri_of("report-host.xml"), "report", "--out", str(tmp / "out"),
                     "--history", history, "--at", "2026-01-02T00:00:00Z")  # fmt: skip
    assert now.code == 0, now.err
    return tmp / "out"


def normalise(text: str) -> str:
    return text.replace(str(ROOT), "REPO").replace(f"auditor {version('auditor')}", "auditor VER")


@pytest.mark.parametrize("name", FILES)
def test_golden(report: Path, name: str) -> None:
    text = normalise((report / name).read_text())
    if name == "report.html":
        check("report-host/report.outline", outline(text))
    else:
        check(f"report-host/{name}", text)


# --- the bars, computed from the test driver's XML, not from the auditor ---------------------

UNITS = {"B": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
TEST_DRIVER_CAPACITY = 100 << 30  # every pool of the test driver; allocation = Σ volumes'
USED_WARN, USED_CRIT = 80, 90  # the documented default thresholds (README)
X_AXIS = ("x", "width", "x1", "x2")
Shapes = dict[str, dict[str, float]]  # class of a rect or line -> its x-axis attributes


class Bars(HTMLParser):
    """Each pool card's bar: pool -> Shapes, and the width of its SVG user space."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pool = ""
        self.bars: dict[str, Shapes] = {}
        self.widths: set[float] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "article" and "data-pool" in a:
            self.pool = a["data-pool"]
        elif tag == "svg" and self.pool:
            self.widths.add(float(a["viewbox"].split()[2]))
            self.bars[self.pool] = {}
        elif tag in ("rect", "line") and self.pool:
            self.bars[self.pool][a["class"]] = {k: float(a[k]) for k in X_AXIS if k in a}


def _bytes(node: ET.Element | None) -> int:
    assert node is not None and node.text
    return int(node.text) * UNITS[node.get("unit", "B")]


def expected_bars(xml: Path, width: float) -> dict[str, Shapes]:
    """Top bar: capacity, used (= volumes: the test driver has no other files), thresholds;
    bottom bar: provisioned up to capacity, the rest beyond it; all scaled so the longest of
    capacity, provisioned and used spans `width`."""
    bars = {}
    for pool in ET.parse(xml).getroot().findall("pool"):
        volumes = pool.findall("volume")
        allocated = sum(_bytes(v.find("allocation")) for v in volumes)
        provisioned = sum(_bytes(v.find("capacity")) for v in volumes)
        cap = TEST_DRIVER_CAPACITY
        scale = width / max(cap, provisioned, allocated)
        warn, crit, end = cap * USED_WARN / 100 * scale, cap * USED_CRIT / 100 * scale, cap * scale
        shapes: Shapes = {
            "b-free": {"x": 0, "width": end},
            "b-other": {"x": 0, "width": allocated * scale},
            "b-vol": {"x": 0, "width": allocated * scale},
            "b-warn": {"x1": warn, "x2": warn},
            "b-crit": {"x1": crit, "x2": crit},
            "b-prov": {"x": 0, "width": min(provisioned, cap) * scale},
            "b-cap": {"x1": end, "x2": end},
        }
        if provisioned > cap:
            shapes["b-over"] = {"x": end, "width": (provisioned - cap) * scale}
        bars[str(pool.findtext("name"))] = shapes
    return bars


def test_bar_geometry_matches_the_xml_figures(report: Path) -> None:
    parser = Bars()
    parser.feed((report / "report.html").read_text())
    (width,) = parser.widths
    want = expected_bars(DATA / "report-host.xml", width)
    assert parser.bars.keys() == want.keys()
    for pool, shapes in want.items():
        got = parser.bars[pool]
        assert got.keys() == shapes.keys(), pool
        for name, attrs in shapes.items():
            assert got[name] == pytest.approx(attrs, abs=0.1), (pool, name)
    assert "b-over" in want["vmstore"] and "b-over" not in want["iso"]


# --- regeneration: rewrites every golden file and passes; refused in CI -----------------------


def _golden_run(golden_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """This module's golden tests in a child pytest, writing to `golden_dir`."""
    child = {k: v for k, v in os.environ.items() if k not in ("CI", "AUDITOR_REGEN_GOLDEN")}
    child |= {"AUDITOR_GOLDEN_DIR": str(golden_dir), **env}
    test = f"{__file__}::test_golden"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=child, check=False)


def test_regeneration_rewrites_every_golden_file_and_passes(tmp_path: Path) -> None:
    ran = _golden_run(tmp_path, AUDITOR_REGEN_GOLDEN="1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"{len(FILES)} passed" in ran.stdout
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file())
    for path in written:
        assert (tmp_path / path).read_text() == (GOLDEN / path).read_text(), path


@pytest.mark.parametrize("ci", ["true", "1"])
def test_regeneration_is_refused_in_ci(tmp_path: Path, ci: str) -> None:
    ran = _golden_run(tmp_path, AUDITOR_REGEN_GOLDEN="1", CI=ci)
    assert ran.returncode != 0
    assert "AUDITOR_REGEN_GOLDEN=1 is refused in CI" in ran.stdout + ran.stderr
    assert not list(tmp_path.iterdir())
