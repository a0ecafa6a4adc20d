"""Many hosts: the hosts file, concurrent collection with timeouts, labels in every output.

The hosts are test-driver files, the real local daemon, a TCP port that accepts connections
and never answers (a stalled host) and one where nothing listens (a host that is down).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import testbed
from clirun import REPO, auditor
from test_metrics import one, pick, promtool_metrics, samples

from auditor.collect import Budget
from auditor.errors import ConfigError
from auditor.hosts import parse_hosts
from auditor.models import Target

DEMO = REPO / "examples" / "demo-host.xml"


def host(name: str, uri: str, labels: str = "") -> str:
    return f'[[host]]\nname = "{name}"\nuri = "{uri}"\n' + (
        f"labels = {{ {labels} }}\n" if labels else ""
    )


@pytest.fixture
def stalled() -> Iterator[str]:
    """A URI whose TCP port accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"qemu+tcp://127.0.0.1:{s.getsockname()[1]}/system"


@pytest.fixture
def refused() -> str:
    """A URI where nothing listens: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"qemu+tcp://127.0.0.1:{port}/system"


class Freezing:
    """A loopback TCP proxy to libvirtd's socket that forwards the first ``after`` chunks the
    client sends, then nothing more in either direction: a host that stalls mid-collection;
    with ``drop``, it closes the connection instead (a host that reboots)."""

    SOCKET = "/var/run/libvirt/libvirt-sock"

    def __init__(self, after: int, drop: bool = False) -> None:
        self.after, self.sent, self.drop = after, 0, drop
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                daemon = socket.socket(socket.AF_UNIX)
                daemon.connect(self.SOCKET)
                for a, b, up in ((client, daemon, True), (daemon, client, False)):
                    threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                self.sent += up
                if self.sent <= self.after:
                    b.sendall(data)
                elif self.drop:
                    a.close()
                    b.close()
                    return


def drivers(tmp_path: Path, n: int) -> list[str]:
    """``n`` test-driver hosts, each its own copy of the demo host."""
    uris = []
    for i in range(n):
        path = tmp_path / f"h{i}.xml"
        shutil.copy(DEMO, path)
        uris.append(f"test://{path}")
    return uris


def write(tmp_path: Path, *tables: str) -> str:
    path = tmp_path / "hosts.toml"
    path.write_text("\n".join(tables))
    return str(path)


# ---- the hosts file --------------------------------------------------------------------------


def test_a_hosts_file_gives_names_uris_and_labels_in_order() -> None:
    text = host("kvm1", "qemu+ssh://root@kvm1/system", 'site = "ams", cluster = "a"')
    text += host("kvm2", "test:///default")
    assert parse_hosts(text, "h.toml") == (
        Target("qemu+ssh://root@kvm1/system", "kvm1", (("site", "ams"), ("cluster", "a"))),
        Target("test:///default", "kvm2"),
    )


A, B = host("a", "test:///x"), host("b", "test:///x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (host("a", "test:///default") + 'colour = "red"\n', "h.toml:4: unknown key 'colour'"),
        (A + host("a", "test:///y"), "h.toml:5: duplicate name 'a' (first at h.toml:2)"),
        (A + B, "h.toml:6: duplicate uri 'test:///x' (first at h.toml:3)"),
        (host("a", "test:///x", 'host = "h"'), "h.toml:4: label 'host'"),
        (host("a", "test:///x", '"9x" = "h"'), "h.toml:4: label '9x'"),
        (host("a", "test:///x", "n = 1"), "h.toml:4: label 'n' must be a string"),
        ('[[host]]\nname = "a"\n', "h.toml:1: uri must be a non-empty string"),
        ('[[host]]\nname = "a b"\nuri = "test:///x"\n', "h.toml:2: name 'a b'"),
        ("[host]\nname = 1\n", "h.toml: 'host' must be [[host]] tables"),
        ("hosts = []\n", "h.toml: unknown key 'hosts'"),
        ("", "h.toml: no [[host]] table"),
        ("[[host]\n", "h.toml: not valid TOML"),
        ('[[host]]\nname = "a"\nuri = " test:///x"\n', "h.toml:3: uri must be a non-empty"),
        ('host = [{ name = "a", uri = "test:///x", n = 1 }]\n', "h.toml:1: unknown key 'n'"),
        (A + '[host.labels]\nsite = "ams"\nBad = "x"\n', "h.toml:6: label 'Bad'"),
        (A + "labels.site = 1\n", "h.toml:4: label 'site' must be a string"),
        (
            A + '[host.labels]\nname = "x"\n[[host]]\nuri = "test:///y"\n',
            "h.toml:6: name must be a non-empty string",
        ),
        (host("a", "test:///x", 'job = "h"'), "h.toml:4: label 'job'"),
    ],
)
def test_a_bad_hosts_file_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_hosts(text, "h.toml")


def test_the_cli_refuses_a_bad_hosts_file_in_one_line(tmp_path: Path) -> None:
    ran = auditor(
        "--hosts", write(tmp_path, host("a", "test:///x") + host("a", "test:///y")), "pools"
    )
    assert ran.code == 2 and ran.out == ""
    assert ran.err.count("\n") == 1 and "hosts.toml:5: duplicate name 'a'" in ran.err
    ran = auditor("--hosts", str(tmp_path / "missing.toml"), "pools")
    assert ran.code == 2 and "missing.toml: cannot read the hosts file" in ran.err
    # Commands that read no host never read the hosts file: a broken AUDITOR_HOSTS leaves
    # `scan` (qemu-img only) working.
    image = tmp_path / "one.raw"
    image.write_bytes(b"\0" * 4096)
    env = os.environ | {"AUDITOR_HOSTS": str(tmp_path / "missing.toml")}
    p = subprocess.run([sys.executable, "-m", "auditor", "scan", str(image), "-f", "json"],
                       env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 0 and str(image) in p.stdout, p.stderr


def test_hosts_and_connect_together_are_refused_unless_hosts_comes_from_the_environment(
    tmp_path: Path,
) -> None:
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("named", a))
    ran = auditor("--hosts", hosts, "-c", a, "pools")
    assert ran.code == 2 and "give --hosts or --connect, not both" in ran.err
    env = os.environ | {"AUDITOR_HOSTS": hosts}
    p = subprocess.run([sys.executable, "-m", "auditor", "pools", "-f", "json"], env=env,
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 0 and '"host": "named"' in p.stdout
    p = subprocess.run([sys.executable, "-m", "auditor", "-c", a, "pools", "-f", "json"], env=env,
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 0 and '"host": "named"' not in p.stdout


# ---- collection ------------------------------------------------------------------------------


def test_a_fleet_with_the_local_daemon_a_stalled_and_a_down_host(
    bed: testbed.Bed, tmp_path: Path, stalled: str, refused: str
) -> None:
    """Every reachable host is read under its hosts-file name with its labels; the stalled
    and the down host are skipped items (exit 1), and the stall costs no more than its
    connect timeout."""
    a, b = drivers(tmp_path, 2)
    hosts = write(
        tmp_path,
        host("kvm-a", a, 'site = "ams", cluster = "a"'),
        host("kvm-b", b, 'site = "fra"'),
        host("local", "qemu:///system", 'site = "lab"'),
        host("stalled", stalled, 'site = "ams"'),
        host("down", refused),
    )
    started = time.monotonic()
    ran = auditor("--hosts", hosts, "--connect-timeout", "3", "pools", "-f", "csv")
    took = time.monotonic() - started
    assert ran.code == 1, ran.err
    assert took < 3 + 20  # the stalled host's connect timeout, and the rest's collection
    rows = list(csv.DictReader(io.StringIO(ran.out)))
    assert list(rows[0])[:3] == ["host", "label_site", "label_cluster"]
    by_host = {(r["host"], r["label_site"], r["label_cluster"]) for r in rows}
    assert by_host == {("kvm-a", "ams", "a"), ("kvm-b", "fra", ""), ("local", "lab", "")}
    local = {r["pool"] for r in rows if r["host"] == "local"}
    virsh = subprocess.run(["virsh", "-c", "qemu:///system", "pool-list", "--all", "--name"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert bed.dir_pool.name in local and {p for p in virsh.stdout.split() if p} <= local
    err = ran.err.splitlines()
    assert any(
        ln.startswith(f"auditor: skipped host {stalled} on stalled: no answer within 3 s")
        for ln in err
    ), ran.err
    assert any(ln.startswith(f"auditor: skipped host {refused} on down: ") for ln in err), ran.err


def test_jobs_bound_the_hosts_read_at_once_and_a_stall_never_blocks_a_job(
    tmp_path: Path, stalled: str
) -> None:
    """Four stalled hosts and one test host: with --jobs 4 the four stalls overlap (one
    connect timeout in all); with --jobs 1 they follow one another."""
    (a,) = drivers(tmp_path, 1)
    tables = [host(f"s{i}", f"{stalled}?n={i}") for i in range(4)] + [host("ok", a)]
    hosts = write(tmp_path, *tables)
    timings = {}
    for jobs in ("4", "1"):
        started = time.monotonic()
        ran = auditor("--hosts", hosts, "--jobs", jobs, "--connect-timeout", "1", "pools")
        timings[jobs] = time.monotonic() - started
        assert ran.code == 1 and ran.err.count("auditor: skipped host") == 4, ran.err
        assert "ok" in ran.out
    assert timings["4"] < 1 + 2.5 <= 4 <= timings["1"]


def test_the_collection_timeout_covers_a_host_that_stalls_after_connecting(
    tmp_path: Path, stalled: str
) -> None:
    """--timeout bounds a host from its connect on, also when the connect timeout is longer."""
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("ok", a), host("slow", stalled))
    started = time.monotonic()
    ran = auditor("--hosts", hosts, "--timeout", "1.5", "--connect-timeout", "30", "volumes")
    assert time.monotonic() - started < 1.5 + 2.5
    assert ran.code == 1 and "on slow: no answer within 1.5 s while connecting" in ran.err


def test_every_host_unreachable_is_an_error(tmp_path: Path, stalled: str, refused: str) -> None:
    hosts = write(tmp_path, host("s", stalled), host("d", refused))
    ran = auditor("--hosts", hosts, "--connect-timeout", "1", "pools")
    assert ran.code == 2 and ran.err.startswith("auditor: error: no libvirt host could be reached")
    ran = auditor("-c", stalled, "--connect-timeout", "1", "pools")
    assert ran.code == 2
    assert ran.err == f"auditor: error: {stalled}: no answer within 1 s while connecting " \
        "(--connect-timeout): its figures are left out\n"  # fmt: skip


def test_a_progress_line_on_a_terminal_and_none_under_cron(tmp_path: Path, stalled: str) -> None:
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("ok", a), host("slow", stalled))
    args = [sys.executable, "-m", "auditor", "--hosts", hosts, "--connect-timeout", "1", "pools"]
    leader, follower = pty.openpty()
    env = os.environ | {"COLUMNS": "200"}
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=follower, env=env) as p:
        os.close(follower)
        p.communicate(timeout=30)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    text = seen.decode()
    assert "1/2 hosts · 1 running · 0 waiting · slowest: slow (connecting" in text
    assert "\r\x1b[K" in text
    quiet = auditor("--hosts", hosts, "--connect-timeout", "1", "pools")
    assert "hosts ·" not in quiet.err and "\r" not in quiet.err


# ---- labels in the outputs -------------------------------------------------------------------


def test_labels_are_columns_in_json_and_the_report_files(tmp_path: Path, stalled: str) -> None:
    a, b = drivers(tmp_path, 2)
    hosts = write(tmp_path, host("kvm-a", a, 'site = "=cmd()"'), host("kvm-b", b))
    doc = auditor("--hosts", hosts, "volumes", "-f", "json").json()
    assert {(v["host"], v["label_site"]) for v in doc["volumes"]} == {("kvm-a", "=cmd()"),
                                                                      ("kvm-b", "")}  # fmt: skip
    out = tmp_path / "report"
    ran = auditor("--hosts", hosts, "report", "--out", str(out), "--history",
                  str(tmp_path / "h.sqlite"))  # fmt: skip
    assert ran.code == 0, ran.err
    pools = list(csv.DictReader(io.StringIO((out / "pools.csv").read_text())))
    assert {(p["host"], p["label_site"]) for p in pools} == {("kvm-a", "'=cmd()"), ("kvm-b", "")}
    volumes = (out / "volumes.csv").read_text().splitlines()
    assert volumes[0].startswith("host,label_site,pool,")
    series = auditor("history", "--history", str(tmp_path / "h.sqlite"), "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(series.out)))
    assert list(rows[0])[:3] == ["collected_at", "host", "label_site"]
    assert {(r["host"], r["label_site"]) for r in rows} == {("kvm-a", "'=cmd()"), ("kvm-b", "")}


def test_metrics_carry_each_hosts_labels_and_name(tmp_path: Path, stalled: str) -> None:
    a, b = drivers(tmp_path, 2)
    hosts = write(
        tmp_path,
        host("kvm-a", a, 'site = "ams", cluster = "a"'),
        host("kvm-b", b, 'site = "fra"'),
        host("stalled", stalled, 'site = "ams"'),
    )
    ran = auditor("--hosts", hosts, "--connect-timeout", "1", "metrics", "--no-audit")
    assert ran.code == 1 and "host stalled is down" in ran.err
    found = samples(ran.out)
    assert one(found, "auditor_host_up", host="stalled", site="ams") == 0
    assert one(found, "auditor_host_up", host="kvm-a", site="ams", cluster="a") == 1
    capacity = pick(found, "auditor_pool_capacity_bytes", host="kvm-b", site="fra")
    assert len(capacity) == 3 and not any("cluster" in dict(k) for k in capacity)
    checked = promtool_metrics(ran.out.encode())
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_unreachable_host_keeps_its_labels_in_the_report(tmp_path: Path, stalled: str) -> None:
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("kvm-a", a, 'site = "ams"'), host("gone", stalled, 'site = "zrh"'))
    out = tmp_path / "report"
    ran = auditor("--hosts", hosts, "--connect-timeout", "1", "report", "--out", str(out),
                  "--history", str(tmp_path / "h.sqlite"))  # fmt: skip
    assert ran.code == 1, ran.err
    page = (out / "report.html").read_text()
    group = page.index('<span class="gname">site=zrh</span>')
    assert page.index('<span class="hname">gone</span>', group) > group


def test_hosts_that_report_one_name_are_told_apart_by_their_uris(tmp_path: Path) -> None:
    """Two test-driver URIs both report this machine's name: without a hosts file their
    pools would merge; each is named by its URI instead, and a notice says why."""
    a, b = drivers(tmp_path, 2)
    ran = auditor("-c", a, "-c", b, "pools", "-f", "json")
    assert ran.code == 0, ran.err
    rows = {(p["host"], p["pool"]): p["volumes"] for p in ran.json()["pools"]}
    assert rows[a, "backups"] == rows[b, "backups"] == 2
    assert {h for h, _ in rows} == {a, b}
    assert ran.err.count("another host reports that name too") == 2


def test_a_networked_hosts_share_of_calls_in_flight() -> None:
    """Many calls in flight for one remote host; fewer per host when many run at once."""
    assert Budget(jobs=32).calls_per_host(1) == 64
    assert Budget(jobs=32).calls_per_host(300) == 8
    assert Budget(jobs=8).calls_per_host(300) == 32
    assert Budget(jobs=1000).calls_per_host(1000) == 4


def test_a_host_that_stalls_mid_collection_is_given_up_and_the_run_exits(
    libvirtd: None, tmp_path: Path
) -> None:
    """The host answers its connect and its first calls, then nothing (a collection of 200
    volumes needs ~150 client chunks; this one stops at 40, among the volume reads run in
    threads): skipped at --timeout, and the process exits at once, not waiting on the calls
    still in flight."""
    (a,) = drivers(tmp_path, 1)
    proxy = Freezing(after=40)
    big = tmp_path / "big.xml"
    big.write_text(fleet_xml())
    frozen = f"test+tcp://127.0.0.1:{proxy.port}{big}"
    hosts = write(tmp_path, host("ok", a), host("frozen", frozen))
    started = time.monotonic()
    ran = auditor("--hosts", hosts, "--timeout", "3", "volumes", timeout=60)
    assert time.monotonic() - started < 3 + 3
    assert ran.code == 1, ran.err
    assert "on frozen: collection not done within 3 s (--timeout)" in ran.err
    assert proxy.sent > 40  # it did stall after connecting


def fleet_xml(pools: int = 4, per_pool: int = 50) -> str:
    """A test-driver host of ``pools`` x ``per_pool`` volumes."""
    body = ""
    for p in range(pools):
        vols = "".join(
            f"<volume><name>v{v}.qcow2</name><capacity>{(v + 1) << 30}</capacity>"
            f"<allocation>{(v + 1) << 20}</allocation></volume>"
            for v in range(per_pool)
        )
        target = f"<target><path>/p{p}</path></target>"
        body += f"<pool type='dir'><name>p{p}</name>{target}{vols}</pool>"
    return f"<node>{body}</node>"


def test_label_columns_in_the_table_by_name_sort_and_wide(tmp_path: Path) -> None:
    a, b = drivers(tmp_path, 2)
    hosts = write(tmp_path, host("kvm-a", a, 'site = "ams"'), host("kvm-b", b, 'site = "fra"'))
    ran = auditor("--hosts", hosts, "pools", "--columns", "host,label_site,pool", "--sort",
                  "label_site", "-r")  # fmt: skip
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].split() == ["host", "label_site", "pool"]
    assert lines[2].split()[:2] == ["kvm-b", "fra"] and lines[-1].split()[:2] == ["kvm-a", "ams"]
    wide = auditor("--hosts", hosts, "volumes", "--wide").out.splitlines()
    assert wide[0].split()[:3] == ["host", "label_site", "pool"]
    assert auditor("--hosts", hosts, "pools", "--columns", "host,labelsite").code == 2


def test_pool_and_vol_commands_take_a_hosts_file_of_one_host_under_its_name(
    tmp_path: Path,
) -> None:
    a, b = drivers(tmp_path, 2)
    one = write(tmp_path, host("kvm-a", a, 'site = "ams"'))
    ran = auditor("--hosts", one, "pool", "info", "images", "--format", "json")
    assert ran.code == 0, ran.err
    assert '"kvm-a"' in ran.out
    two = write(tmp_path, host("kvm-a", a), host("kvm-b", b))
    ran = auditor("--hosts", two, "pool", "info", "images")
    assert ran.code == 2 and "act on one host" in ran.err


@pytest.mark.parametrize("after", [5, 20, 60])
def test_a_host_whose_connection_drops_mid_collection_is_a_skip(
    libvirtd: None, tmp_path: Path, after: int
) -> None:
    """libvirt's error on a closed connection, at the pools, the volumes or the domains, is
    that host's skip; the others are read (it used to end the run as an internal error)."""
    (a,) = drivers(tmp_path, 1)
    big = tmp_path / "big.xml"
    big.write_text(fleet_xml())
    proxy = Freezing(after, drop=True)
    hosts = write(tmp_path, host("ok", a), host("drops", f"test+tcp://127.0.0.1:{proxy.port}{big}"))
    ran = auditor("--hosts", hosts, "pools", "-f", "json")
    assert ran.code == 1, ran.err
    assert {p["host"] for p in ran.json()["pools"]} == {"ok"}
    assert "auditor: skipped host test+tcp://" in ran.err and " on drops: " in ran.err
    assert "rerun with --debug" not in ran.err  # a libvirt error named, not a crash


def test_a_uri_given_twice_is_read_once(tmp_path: Path) -> None:
    (a,) = drivers(tmp_path, 1)
    once = auditor("-c", a, "pools", "-f", "json").json()["pools"]
    twice = auditor("-c", a, "-c", a, "pools", "-f", "json").json()["pools"]
    assert twice == once


def test_an_unknown_label_column_is_refused_and_wide_keeps_the_columns_asked(
    tmp_path: Path,
) -> None:
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("kvm-a", a, 'site = "ams"'))
    ran = auditor("--hosts", hosts, "pools", "--columns", "host,label_typo")
    assert ran.code == 2 and "no host has the label of 'label_typo'" in ran.err
    assert "label columns: label_site" in ran.err
    ran = auditor("--hosts", hosts, "pools", "--columns", "host,LABEL-site,pool", "--wide")
    assert ran.out.splitlines()[0].split() == ["host", "label_site", "pool"]
    ran = auditor("--hosts", hosts, "pools", "--columns", "host,pool", "--wide")
    assert ran.out.splitlines()[0].split() == ["host", "pool"]


def test_metrics_tell_apart_hosts_that_report_one_name(tmp_path: Path) -> None:
    a, b = drivers(tmp_path, 2)
    ran = auditor("-c", a, "-c", b, "metrics", "--no-audit")
    assert ran.code == 0, ran.err
    found = samples(ran.out)
    provisioned = pick(found, "auditor_pool_provisioned_bytes", pool="backups")
    assert {dict(k)["host"] for k in provisioned} == {a, b}
    assert set(provisioned.values()) == {80 << 30}  # each host's own, never the sum
    assert {dict(k)["host"] for k in pick(found, "auditor_host_up")} == {a, b}


def test_pool_commands_give_up_a_host_that_does_not_answer_and_stop_on_a_signal(
    stalled: str,
) -> None:
    started = time.monotonic()
    ran = auditor("-c", stalled, "--connect-timeout", "1", "pool", "list")
    assert time.monotonic() - started < 1 + 3
    assert ran.code == 2
    assert ran.err == (
        f"auditor: error: {stalled}: no answer within 1 s while connecting (--connect-timeout)"
        " (check that libvirtd runs there and the network reaches it)\n"
    )
    args = [sys.executable, "-m", "auditor", "-c", stalled, "pool", "list"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=5)
    assert p.returncode == 130 and "interrupted by SIGINT" in err


def test_a_listener_does_not_pile_up_threads_for_a_stalled_host(
    tmp_path: Path, stalled: str
) -> None:
    """Each collection finds the stalled host's earlier connection still stuck and reports
    it down at once, without a new thread and connection every interval."""
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("ok", a), host("stalled", stalled))
    args = [sys.executable, "-m", "auditor", "--hosts", hosts, "--connect-timeout", "0.5",
            "metrics", "--listen", "127.0.0.1:0", "--interval", "1", "--no-audit"]  # fmt: skip
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            p.stdout.readline()  # serving ...
            counts = []
            for _ in range(4):
                time.sleep(1.5)
                counts.append(len(os.listdir(f"/proc/{p.pid}/task")))
            assert counts[-1] <= counts[0] + 2, counts
        finally:
            p.kill()


def test_shell_completion_reads_the_hosts_files_first_host(tmp_path: Path) -> None:
    (a,) = drivers(tmp_path, 1)
    hosts = write(tmp_path, host("kvm-a", a))
    env = os.environ | {"COMP_WORDS": f"auditor --hosts {hosts} pool info ", "COMP_CWORD": "5",
                        "_AUDITOR_COMPLETE": "bash_complete"}  # fmt: skip
    p = subprocess.run([sys.executable, "-m", "auditor"], env=env, capture_output=True,
                       text=True, check=False)  # fmt: skip
    assert p.stdout.split() == ["plain,backups", "plain,images", "plain,iso"]


def test_within_hands_a_late_result_to_late_and_raises_an_early_error() -> None:
    """What ``open_host`` relies on: a connection that opens after the deadline is closed."""
    from auditor.adapters.threads import within

    closed: list[str] = []
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "conn"

    assert within(slow, 0.1, closed.append) is None
    release.set()
    for _ in range(50):
        if closed:
            break
        time.sleep(0.05)
    assert closed == ["conn"]
    assert within(lambda: "fast", 5, closed.append) == "fast"
    with pytest.raises(ConfigError, match="bad"):
        within(lambda: (_ for _ in ()).throw(ConfigError("bad")), 5, closed.append)
    assert closed == ["conn"]
