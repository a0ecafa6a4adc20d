"""`auditor status`: the verdict, a bar per pool, unmanaged disks and skipped items, in one
screen; colours only on a terminal without NO_COLOR."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from clirun import auditor
from summaries import summary
from test_cli_tables import DEMO, on_terminal, widest
from testbed import Bed

from auditor.config import Config, Thresholds
from auditor.report.status import Style, render

AT = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_a_pool_within_thresholds_is_ok_and_its_bar_shows_use() -> None:
    lenient = Config(thresholds=Thresholds(overcommit_warn=2, overcommit_crit=3))
    text = render(summary(AT, "h1"), lenient, width=100)
    assert text.splitlines()[1] == "  OK  1 pool within thresholds; 1 without figures"
    big = next(line for line in text.splitlines() if line.strip().startswith("big "))
    # 'big': 100 GiB, 60 GiB used, 170 GiB provisioned: 12 of 20 cells used, the rest
    # provisioned, and the mark beyond the bar.
    assert "▕" + "█" * 12 + "▒" * 8 + "▏▶" in big
    assert "60.0%" in big and "170.0 GiB (1.70x)" in big and "40.0 GiB" in big
    idle = next(line for line in text.splitlines() if line.strip().startswith("idle "))
    assert "inactive: libvirt reports no figures" in idle
    assert "\x1b" not in text


def test_the_verdict_names_each_pool_over_a_threshold_with_the_reason() -> None:
    strict = Config(pools={"big": Thresholds(used_warn=50, used_crit=55)})
    lines = render(summary(AT, "h1"), strict).splitlines()
    assert lines[1].split()[:2] == ["CRITICAL", "1"]
    assert "crit  big: 60.0% used (critical at 55%)" in lines[2]


def test_unmanaged_disks_skips_and_several_hosts() -> None:
    text = render(summary(AT, "h1", "h2", skip=True), Config())
    assert text.count("unmanaged disks: 1, 1.0 GiB on disk, 8.0 GiB virtual") == 2
    assert "loose.raw (vm1)" in text
    assert text.count("skipped: 1") == 2 and "image /bad.qcow2: qemu-img: not a qcow2" in text
    assert text.index("h1") < text.index("h2")


def test_colour_and_ascii() -> None:
    coloured = render(summary(AT, "h1"), Config(), Style(colour=True))
    assert ANSI.search(coloured) and ANSI.sub("", coloured) == render(summary(AT, "h1"), Config())
    ascii_only = render(summary(AT, "h1"), Config(), Style(unicode=False))
    assert ascii_only.isascii() and "[" + "#" * 12 + "=" * 8 + "]>" in ascii_only


def test_status_on_the_demo_host_exit_code_and_no_color() -> None:
    piped = auditor("-c", DEMO, "status")
    assert piped.code == 0 and "\x1b" not in piped.out
    assert "CRITICAL  1 of 3 pools over a threshold" in piped.out
    assert "images: provisioned 2.20x capacity (critical at 2x)" in piped.out
    shown = on_terminal("-c", DEMO, "status", columns=100)
    assert ANSI.search(shown.out) and widest(ANSI.sub("", shown.out)) <= 100
    plain = on_terminal("-c", DEMO, "status", env={"NO_COLOR": "1"})
    assert "\x1b" not in plain.out and "CRITICAL" in plain.out
    ascii_only = on_terminal("-c", DEMO, "status", env={"PYTHONIOENCODING": "ascii"})
    assert ascii_only.out.isascii() and "]>" in ANSI.sub("", ascii_only.out)


def test_status_on_the_bed(bed: Bed, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[pools."{bed.fs_pool.name}"]\nused_warn = 1\nused_crit = 2\n')
    ran = on_terminal("-c", bed.uri, "status", "--policy", str(policy), env={"NO_COLOR": "1"})
    out = ran.out
    assert ran.code == (1 if "\n  skipped: " in out else 0), ran.err
    assert widest(out) <= 120
    assert re.search(r"CRITICAL  \d+ of \d+ pools over a threshold; \d+ without figures", out)
    fs = re.escape(bed.fs_pool.name)
    assert re.search(rf"crit  {fs}: \d+\.\d% used \(critical at 2%\)", out)
    assert re.search(rf"\n  {re.escape(bed.dir_pool.name)} +▕[█▒·]+▏[▶ ] +\d+\.\d%", out)
    inactive = re.escape(bed.inactive_pool.name)
    assert re.search(rf"\n  {inactive} +inactive: libvirt reports no figures", out)
    found = re.search(r"unmanaged disks: (\d+)", out)
    assert found and int(found.group(1)) >= 2  # the bed's file and block device
