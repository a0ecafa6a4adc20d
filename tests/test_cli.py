"""The CLI as a user meets it: help, documentation, exit codes, the demo host."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import libvirt
import pytest
from clirun import auditor, base_python, portable_site

from auditor.adapters.libvirt import LibvirtHost
from auditor.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-host.xml"
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, full + " ")
    return out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, cmd in all_commands(cli):
        assert cmd.help, f"{name} has no help text"
        assert f"auditor {name}" in readme, f"`auditor {name}` is not documented in README.md"


def test_unknown_command_and_bad_option_exit_2() -> None:
    assert auditor("frobnicate").code == 2
    ran = auditor("volumes", "--format", "xml")
    assert ran.code == 2 and "Traceback" not in ran.err


def _bytes(node: ET.Element) -> int:
    return int(node.text or 0) * UNITS[node.get("unit", "B").replace("bytes", "B")]


def test_demo_host_figures_match_its_xml() -> None:
    """The test driver reports the XML's capacity/allocation for volumes and 100 GiB pools."""
    uri = f"test://{DEMO}"
    doc = auditor("-c", uri, "volumes", "--format", "json").json()
    rows = {(r["pool"], r["volume"]): r for r in doc["volumes"]}
    for pool in ET.parse(DEMO).getroot().findall("pool"):
        pname = pool.findtext("name")
        for vol in pool.findall("volume"):
            row = rows[(pname, vol.findtext("name"))]
            assert row["virtual_size"] == _bytes(vol.find("capacity"))  # type: ignore[arg-type]
            assert row["disk_size"] == _bytes(vol.find("allocation"))  # type: ignore[arg-type]
    assert rows[("images", "web01.qcow2")]["used_by"] == ["web01"]
    assert rows[("", "db01-logs.img")]["managed"] is False
    pools = {r["pool"]: r for r in auditor("-c", uri, "pools", "--format", "json").json()["pools"]}
    assert pools["images"]["provisioned"] == (80 + 80 + 40 + 20) << 30
    assert pools["images"]["overcommit_ratio"] == 2.2


def test_table_output_uses_iec_units() -> None:
    out = auditor("-c", f"test://{DEMO}", "pools").out
    assert re.search(r"\b220\.0 GiB\b", out) and "2.20" in out


def test_read_write_failure_falls_back_to_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(uri: str | None) -> None:
        raise libvirt.libvirtError("polkit said no")

    monkeypatch.setattr(libvirt, "open", refuse)
    host = LibvirtHost.connect(f"test://{DEMO}")
    assert host.read_only and "polkit said no" in host.read_only_reason
    host.close()


def test_scan_of_a_missing_path_is_a_skip(tmp_path: Path) -> None:
    ran = auditor("scan", str(tmp_path / "nope"), "--format", "json")
    assert ran.code == 1
    assert ran.json()["skipped"][0]["reason"] == "No such file or directory"


def test_unknown_pool_is_an_error_naming_known_pools() -> None:
    ran = auditor("-c", f"test://{DEMO}", "volumes", "--pool", "imgaes")
    assert ran.code == 2
    assert ran.err.strip() == (
        "auditor: error: pool 'imgaes' not found (known pools: backups, images, iso)"
    )


def test_another_user_runs_a_copy_outside_the_clone(tmp_path: Path) -> None:
    """`user=` runs work from a clone any user may not enter (e.g. under /root): nothing the
    tool imports may come from the clone or its venv."""
    site = portable_site()
    assert not site.is_relative_to(ROOT) and not site.is_relative_to(Path(sys.prefix))
    assert not [p for p in site.rglob("*") if p.is_symlink()]
    ran = auditor("-c", "test:///default", "pools", "--format", "json", user="daemon")
    assert ran.code == 0, ran.err
    assert [p["pool"] for p in ran.json()["pools"]] == ["default-pool", "(unmanaged)"]
    assert auditor("--version", user="daemon").out.startswith("auditor, version ")
    probe = "import auditor, jinja2, libvirt, pandas; print(auditor.__file__, libvirt.__file__)"
    paths = subprocess.run(
        ["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", base_python(),
         "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        capture_output=True, text=True, check=True, cwd=site,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(site) for p in paths), paths


@pytest.mark.parametrize(
    "args",
    [("pools",), ("volumes", "--format", "csv"), ("audit", "--format", "json"), ("status",)],
)
def test_output_is_the_same_on_a_host_whose_name_does_not_resolve(args: tuple[str, ...]) -> None:
    """libvirt's test driver looks its host name up (getaddrinfo) and logs a warning on stderr
    when that fails: none of it may reach the user, and the output must not change."""
    from golden import auditor_on

    demo = f"test://{ROOT / 'examples' / 'demo-host.xml'}"
    resolvable = socket.gethostname()
    socket.getaddrinfo(resolvable, None)  # this machine's own name resolves (/etc/hosts)
    here = auditor_on(resolvable, "-c", demo, *args)
    lost = auditor_on("no-such-host.invalid", "-c", demo, *args)
    assert lost.code == here.code and lost.code in (0, 1), lost.err

    def same(text: str) -> str:  # the host name and the time of the collection aside
        text = text.replace("no-such-host.invalid", resolvable)
        return re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?\S*", "WHEN", text)

    assert same(lost.out) == same(here.out)
    assert same(lost.err) == same(here.err)
    for libvirt_log in ("libvirt version", "hostname:", "virGetHostname", "warning :"):
        assert libvirt_log not in lost.err, lost.err
