"""Tables that fit, the columns a user chooses, a start-up that imports only what a command
needs, shell completion, and volume figures reused across runs that stay libvirt's own."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from clirun import Ran, auditor
from testbed import Bed, PoolSpec

from auditor.adapters.libvirt import LibvirtHost
from auditor.cli import LAZY, cli
from auditor.report import table
from auditor.report.rows import POOL_COLUMNS, VOLUME_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DEMO = f"test://{ROOT / 'examples' / 'demo-host.xml'}"
MiB = 1 << 20


def on_terminal(*args: str, columns: int = 120, env: dict[str, str] | None = None) -> Ran:
    """``python -m auditor ARGS`` with stdout on a pseudo-terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    drop = ("COLUMNS", "LINES", "NO_COLOR")
    environ = {k: v for k, v in os.environ.items() if k not in drop} | (env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", *args],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=environ,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = proc.wait(timeout=120)
    return Ran(code, b"".join(chunks).decode().replace("\r\n", "\n"), err)


def widest(text: str) -> int:
    return max(table.width_of(line) for line in text.splitlines())


# ---- rendering ------------------------------------------------------------------------------


def test_shorten_keeps_both_ends() -> None:
    assert table.shorten("debian-12.7.0-amd64-netinst.iso", 15) == "debian-…nst.iso"
    assert table.shorten("short", 15) == "short"
    assert table.width_of(table.shorten("数据盘数据盘数据盘.raw", 9)) <= 9


def test_render_fits_a_width_shortening_text_not_numbers() -> None:
    rows = [{"volume": "v" * 60 + "-end", "path": "/srv/" + "p" * 80, "disk_size": 123 << 30}]
    text = table.render(rows, ["volume", "path", "disk_size"], width=60)
    assert widest(text) <= 60
    assert "123.0 GiB" in text and "-end" in text and "/srv/" in text and "…" in text
    full = table.render(rows, ["volume", "path", "disk_size"])
    assert "…" not in full and "p" * 80 in full


def test_control_characters_are_escaped() -> None:
    text = table.render([{"volume": "evil\x1b]0;pwned\x07.raw"}], ["volume"])
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;pwned\\x07.raw" in text


def test_sort_puts_empty_values_last_either_way() -> None:
    rows = [{"n": 2}, {"n": None}, {"n": 10}, {"n": 1}]
    assert table.sort_rows(rows, "n") == [3, 0, 2, 1]
    assert table.sort_rows(rows, "n", reverse=True) == [2, 0, 3, 1]
    levels = [{"level": lv} for lv in ("ok", "crit", "unknown", "warn")]
    assert [levels[i]["level"] for i in table.sort_rows(levels, "level")] == [
        "crit", "warn", "unknown", "ok"
    ]  # fmt: skip


def test_headers_and_names_both_choose_columns() -> None:
    assert table.choose("pool, virtual,disk_size,Used By", VOLUME_COLUMNS) == [
        "pool", "virtual_size", "disk_size", "used_by"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="named twice"):
        table.choose("pool,pool", VOLUME_COLUMNS)


# ---- the commands' tables ----------------------------------------------------------------


def test_default_tables_fit_120_columns_on_the_demo_host() -> None:
    vols = auditor("-c", DEMO, "volumes")
    assert vols.code == 0 and widest(vols.out) <= 120
    assert vols.out.split()[:9] == [
        "pool", "volume", "format", "provisioning", "virtual", "disk", "used", "by", "note"
    ]  # fmt: skip
    pools = auditor("-c", DEMO, "pools")
    assert pools.code == 0 and widest(pools.out) <= 120
    head = pools.out.splitlines()[0].split()
    assert head == ["pool", "type", "state", "capacity", "used", "%", "usable", "free",
                    "provisioned", "overcommit", "exposure", "level"]  # fmt: skip
    images = next(line for line in pools.out.splitlines() if line.startswith("images "))
    assert images.split()[-1] == "crit" and "85.0" in images


def test_unknown_column_exits_2_naming_the_known_ones() -> None:
    ran = auditor("-c", DEMO, "volumes", "--columns", "pool,sizee")
    assert ran.code == 2 and "Traceback" not in ran.err
    assert "unknown column 'sizee'" in ran.err
    assert all(c in ran.err for c in VOLUME_COLUMNS)
    ran = auditor("-c", DEMO, "pools", "--sort", "fullness")
    assert ran.code == 2 and "--sort" in ran.err and "level" in ran.err
    assert all(c in ran.err for c in POOL_COLUMNS)
    ran = auditor("-c", DEMO, "volumes", "--columns", "pool", "--format", "csv")
    assert ran.code == 2 and "csv and json hold every column" in ran.err


def test_columns_sort_and_reverse() -> None:
    ran = auditor("-c", DEMO, "volumes", "--columns", "disk,volume", "--sort", "disk", "-r")
    lines = ran.out.splitlines()
    assert lines[0].split() == ["disk", "volume"]
    assert lines[2].split() == ["40.0", "GiB", "db01-data.raw"]
    assert lines[-1].split() == ["db01-logs.img"]  # no disk size: last, even reversed


def test_csv_and_json_keep_every_column_and_follow_the_sort() -> None:
    plain = auditor("-c", DEMO, "volumes", "--format", "csv").out.splitlines()
    ran = auditor("-c", DEMO, "volumes", "--format", "csv", "--sort", "virtual", "--wide")
    assert ran.code == 0
    lines = ran.out.splitlines()
    assert lines[0] == plain[0] == ",".join(VOLUME_COLUMNS)
    assert sorted(lines[1:]) == sorted(plain[1:]) and lines[1:] != plain[1:]
    doc = auditor("-c", DEMO, "pools", "--format", "json", "--sort", "level").json()
    assert doc["pools"][0]["pool"] == "images"  # crit first
    assert all(list(p) == POOL_COLUMNS for p in doc["pools"])  # no level, no used %


def test_wide_shows_every_column_unshortened_on_a_terminal() -> None:
    ran = on_terminal("-c", DEMO, "volumes", "--wide", columns=80)
    head = ran.out.splitlines()[0]
    for c in VOLUME_COLUMNS:
        assert table.label(c) in head
    assert "/var/lib/libvirt/images/debian-12-base.qcow2" in ran.out and "…" not in ran.out


def test_bed_tables_fit_a_120_column_terminal(bed: Bed) -> None:
    for args in (("volumes",), ("pools",), ("volumes", "--pool", bed.dir_pool.name)):
        ran = on_terminal("-c", bed.uri, *args)
        assert ran.code in (0, 1), ran.err
        assert widest(ran.out) <= 120, ran.out
        assert "\x1b" not in ran.out  # no colours in tables, no escapes from names
    listed = on_terminal("-c", bed.uri, "volumes", "--pool", bed.dir_pool.name).out
    assert "semi;colon.raw" in listed and "@at.raw" in listed
    piped = auditor("-c", bed.uri, "volumes", "--pool", bed.dir_pool.name, "--columns", "volume")
    assert "<script>alert(1)<script>.raw" in piped.out  # piped: never shortened


def test_bed_rows_render_in_120_columns(bed: Bed) -> None:
    doc = auditor("-c", bed.uri, "volumes", "--format", "json").json()
    ours = [r for r in doc["volumes"] if r["pool"].startswith(bed.prefix) or not r["managed"]]
    defaults = ["pool", "volume", "format", "provisioning", "virtual_size", "disk_size",
                "used_by", "note"]  # fmt: skip
    text = table.render(ours, defaults, width=120)
    assert widest(text) <= 120 and len(text.splitlines()) == len(ours) + 2


def test_csv_without_pandas_is_the_reports_csv(bed: Bed) -> None:
    """The commands write CSV without pandas; the report's pools.csv and volumes.csv with
    it (report/tables.py): the same text, edge cases included."""
    from auditor.report.tables import to_csv

    edge = [
        {"volume": 'a,"b"\nc', "path": "@p", "note": "-x", "used_by": ["=a", "b"],
         "virtual_size": 1 << 70, "disk_size": None, "managed": True, "physical": 0},
        {"volume": "+1", "used_by": [], "virtual_size": None, "managed": False, "kind": "\t"},
    ]  # fmt: skip
    pools = [{"pool": "p", "overcommit_ratio": r, "autostart": None, "persistent": False,
              "capacity": c} for r, c in ((2.2, 1), (None, None), (0.0062, 5), (1e-05, 0),
                                          (0.0, 7))]  # fmt: skip
    cases = [(edge, VOLUME_COLUMNS), (pools, POOL_COLUMNS)]
    for args, columns in ((("volumes",), VOLUME_COLUMNS), (("pools",), POOL_COLUMNS)):
        for uri in (DEMO, bed.uri):
            doc = auditor("-c", uri, *args, "--format", "json").json()
            cases.append((doc[args[0]], columns))
    for rows, columns in cases:
        assert table.csv_text(rows, columns) == to_csv(rows, columns)


# ---- start-up: only what a command needs ---------------------------------------------------

PROBE = """
import os, sys
from auditor.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("pandas", "jinja2", "libvirt", "tabulate", "auditor.report.tables", "auditor.nightly")
print(os.environ.get("LIBVIRT_DEBUG"), [m for m in heavy if m in sys.modules])
"""


def _loaded(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEBUG"}
    ran = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env=env, check=False)  # fmt: skip
    return ran.stdout.strip().splitlines()[-1]


def test_help_imports_nothing_heavy() -> None:
    assert _loaded("--help") == "error []"
    assert _loaded("-c", DEMO, "pools") == "error ['libvirt']"
    assert _loaded("-c", DEMO, "volumes", "--format", "csv") == "error ['libvirt']"
    assert _loaded("history", "--format", "csv", "--history", "/nonexistent/h.sqlite") == (
        "error []"
    )


def test_libvirt_log_stays_quiet_unless_debug() -> None:
    """LIBVIRT_DEBUG=error is set before libvirt loads (it reads it once, at load)."""
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEBUG"}
    probe = "import os, sys; import auditor.cli; print(os.environ.get('LIBVIRT_DEBUG'))"
    for argv, want in ((["pools"], "error"), (["--debug", "pools"], "None")):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                             text=True, env=env, check=True).stdout  # fmt: skip
        assert out.strip() == want


def test_every_command_is_listed_with_its_own_first_sentence() -> None:
    commands = cli.commands
    assert set(commands) == set(LAZY)
    for name, (_, sentence) in LAZY.items():
        full = " ".join((commands[name].help or "").split())
        assert full.startswith(sentence), f"{name}: update LAZY in auditor/cli/__init__.py"


def test_no_command_shows_status_on_a_terminal_and_usage_elsewhere() -> None:
    piped = auditor("-c", DEMO)
    assert piped.code == 2 and "Usage: auditor" in piped.err and piped.out == ""
    shown = on_terminal("-c", DEMO, env={"NO_COLOR": "1"})
    assert shown.code == 0 and "CRITICAL" in shown.out and "images" in shown.out


# ---- shell completion ------------------------------------------------------------------------


def complete(*words: str) -> list[str]:
    env = os.environ | {"_AUDITOR_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
                        "COMP_CWORD": str(len(words) - 1)}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "auditor"], capture_output=True, text=True,
                         env=env, check=False).stdout  # fmt: skip
    return [line.split(",", 1)[1] for line in out.splitlines() if line]


def test_completion_of_commands_options_pools_and_volumes() -> None:
    assert complete("auditor", "vo") == ["volumes", "vol"]
    assert "--sort" in complete("auditor", "volumes", "--s")
    assert complete("auditor", "-c", DEMO, "volumes", "--pool", "") == ["backups", "images", "iso"]
    assert complete("auditor", "-c", DEMO, "pool", "info", "i") == ["images", "iso"]
    assert complete("auditor", "-c", DEMO, "vol", "info", "images", "web") == [
        "web01.qcow2", "web02.qcow2"
    ]  # fmt: skip
    assert complete("auditor", "-c", DEMO, "vol", "attach", "web01", "iso/") == [
        "iso/debian-12.7.0-amd64-netinst.iso"
    ]  # fmt: skip
    assert complete("auditor", "-c", "qemu+tcp://127.0.0.1:9/system", "volumes", "--pool", "") == []


# ---- volume figures reused across runs: always libvirt's ------------------------------------


@dataclass
class Counted:
    """Counts XMLDesc calls on volumes."""

    calls: int = 0


@pytest.fixture
def xml_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counted]:
    counted = Counted()
    real = libvirt.virStorageVol.XMLDesc

    def spy(self: libvirt.virStorageVol, flags: int = 0) -> Any:
        counted.calls += 1
        return real(self, flags)

    monkeypatch.setattr(libvirt.virStorageVol, "XMLDesc", spy)
    yield counted


def _by_path(disks: list[Any]) -> dict[str, Any]:
    return {d.path: d for d in disks}


def read_both(
    host: LibvirtHost, names: list[str], known: dict[str, Any], counted: Counted
) -> tuple[Any, ...]:
    """Refresh ``names``; libvirt's own reading, the reusing one (every file counts as
    settled: the test's files are seconds old), what it keeps, and its XMLDesc calls."""
    started = time.time_ns()
    pools, _ = host.read_pools(refresh=True, names=names)
    plain, _ = host.read_volumes(pools)
    counted.calls = 0
    reused, _, keep = host.read_volumes_reusing(pools, known, started + 10**12)
    return _by_path(plain), _by_path(reused), keep, counted.calls


def test_reused_figures_equal_libvirts_on_the_bed(bed: Bed, xml_calls: Counted) -> None:
    names = [bed.dir_pool.name, bed.fs_pool.name]
    with LibvirtHost.connect(bed.uri) as host:
        plain, first, keep, calls = read_both(host, names, {}, xml_calls)
        assert first == plain and calls == len(plain) + 1  # lost+found: a folder, no disk
        assert len(keep) == len(plain)  # every file described, and kept
        plain, again, keep2, calls = read_both(host, names, keep, xml_calls)
    assert again == plain and keep2 == keep
    assert calls == 1  # only lost+found is asked again


def _qcow2(path: Path, size: str, *extra: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size], check=True)


def test_any_change_is_read_from_libvirt_again(scratch_pool: PoolSpec, xml_calls: Counted) -> None:
    """A new size, a new header (a raw file that became qcow2, a resized qcow2), a changed
    backing file or a file changed since the refresh: libvirt is asked, figures stay equal.
    Data written past the probed bytes changes only the disk size, which stat gives."""
    folder = Path(scratch_pool.path)
    _qcow2(folder / "base.qcow2", "64M")
    _qcow2(folder / "top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    for name in ("plain.raw", "data.raw"):
        with open(folder / name, "wb") as fh:
            fh.truncate(8 * MiB)
    with LibvirtHost.connect("qemu:///system") as host:
        plain, reused, keep, _ = read_both(host, [scratch_pool.name], {}, xml_calls)
        assert reused == plain and len(keep) == 4
        subprocess.run(["qemu-img", "resize", "-q", str(folder / "base.qcow2"), "128M"], check=True)
        _qcow2(folder / "plain.raw.tmp", "1G")
        with open(folder / "plain.raw.tmp", "rb") as src, open(folder / "plain.raw", "r+b") as dst:
            dst.write(src.read(4096))  # same inode and size, a qcow2 header now
        (folder / "plain.raw.tmp").unlink()
        with open(folder / "data.raw", "r+b") as fh:
            fh.seek(4 * MiB)
            fh.write(b"\x5a" * MiB)  # past the probed bytes: same description, more on disk
        plain, reused, keep, calls = read_both(host, [scratch_pool.name], keep, xml_calls)
        assert reused == plain and calls == 3  # all but data.raw: top through its backing
        assert plain[str(folder / "plain.raw")].format == "qcow2"
        assert plain[str(folder / "base.qcow2")].virtual_size == 128 * MiB
        assert plain[str(folder / "data.raw")].disk_size == MiB
        started = time.time_ns()
        pools, _ = host.read_pools(refresh=True, names=[scratch_pool.name])
        fresh, _, kept = host.read_volumes_reusing(pools, keep, started)  # files seconds old
        assert _by_path(fresh) == plain and kept == {}


def test_the_cli_keeps_figures_in_the_state_folder(bed: Bed, tmp_path: Path) -> None:
    """Two runs with a state folder, one without: the same volumes (after a refresh)."""
    newest = max(os.stat(s.path).st_ctime for s in bed.images.values() if s.pool)
    time.sleep(max(0.0, newest + 2.5 - time.time()))  # let the bed's files settle
    runs = []
    for state in (tmp_path / "a", tmp_path / "a", tmp_path / "b"):
        ran = auditor("--state", str(state), "-c", bed.uri, "volumes", "--format", "json")
        assert ran.code in (0, 1), ran.err
        runs.append([r for r in ran.json()["volumes"] if r["pool"].startswith(bed.prefix)])
    assert runs[0] == runs[1] == runs[2] and runs[0]
    (cache,) = (tmp_path / "a").glob("volumes-*.json")
    assert cache.stat().st_mode & 0o077 == 0
    kept = cache.read_text()
    assert bed.images["qcow2_off"].path in kept and bed.images["fs_qcow2"].path in kept
    cache.write_text("{not json")
    damaged = auditor("--state", str(tmp_path / "a"), "-c", bed.uri, "volumes", "--format", "json")
    assert [r for r in damaged.json()["volumes"] if r["pool"].startswith(bed.prefix)] == runs[0]
