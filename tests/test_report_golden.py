"""Golden files of a report: CSV, summary.json and the HTML outline of a test-driver host.

Deterministic: fixed --at times, host name 'kvm01' (a UTS namespace), repository path and
version replaced. Regenerate with AUDITOR_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from golden import ROOT, auditor_on, check, outline, uri_of

FILES = ["pools.csv", "volumes.csv", "summary.json", "report.html"]


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
