"""Prometheus metrics: the families of a summary (no unknown figure as a number), the textfile
written atomically, the listener over loopback (a bounded number of requests; it stops by
itself), promtool's checks of the output and of examples/alerts.yml, and the README's table."""

from __future__ import annotations

import math
import os
import re
import selectors
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clirun import auditor
from prometheus_client.parser import text_string_to_metric_families
from summaries import GiB, summary

from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.analyze import analyze
from auditor.collect import Probes, collect
from auditor.config import Config, parse
from auditor.errors import ConfigError
from auditor.history import open_history
from auditor.models import Finding, Severity, Target
from auditor.report import metrics as prom
from auditor.report.metrics import HostStatus, Reading

REPO = Path(__file__).resolve().parents[1]
REPORT_HOST = REPO / "tests" / "data" / "report-host.xml"
URI = f"test://{REPORT_HOST}"
T1 = datetime(2026, 1, 1, tzinfo=UTC)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of an exposition: (name, labels) -> value."""
    out: Samples = {}
    raw = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(raw):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def pick(found: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {k: v for (n, k), v in found.items() if n == name and want <= k}


def one(found: Samples, name: str, **labels: str) -> float:
    (value,) = pick(found, name, **labels).values()
    return value


def promtool_metrics(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text.decode(), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def _reading(**kw: object) -> Reading:
    s = summary(T1, "h1", "h2")
    hosts = (HostStatus("test:///h1", "h1", True, 0.25), HostStatus("test:///h2", "h2", True, 1.5),
             HostStatus("qemu+ssh://h3/system", "h3", False, 10.0))  # fmt: skip
    findings = (
        Finding("AUD101", Severity.WARN, "h1", "big", "", "used"),
        Finding("AUD301", Severity.INFO, "h1", "big", "b.raw", "orphan"),
        Finding("AUD301", Severity.INFO, "h1", "big", "c.raw", "orphan"),
    )
    base = Reading(T1, hosts, s, findings, {("h1", "big", "dir"): 8.5})
    return replace(base, **kw)  # type: ignore[arg-type]


# ---- the families ----------------------------------------------------------------------------


def test_pool_figures_in_base_units_and_unknown_ones_left_out() -> None:
    found = samples(prom.render(prom.families(_reading(), Config())))
    big = {"host": "h1", "pool": "big", "type": "dir"}
    assert one(found, "auditor_pool_capacity_bytes", **big) == 100 * GiB
    assert one(found, "auditor_pool_usable_free_bytes", **big) == 40 * GiB
    assert one(found, "auditor_pool_used_bytes", **big) == 60 * GiB
    assert one(found, "auditor_pool_provisioned_bytes", **big) == 170 * GiB
    assert one(found, "auditor_pool_overcommit_ratio", **big) == 1.7
    assert one(found, "auditor_pool_exposure_bytes", **big) == 110 * GiB
    volumes = pick(found, "auditor_pool_volumes", **big)
    assert {dict(k)["provisioning"]: v for k, v in volumes.items()} == {
        "thin": 2, "preallocated": 1, "unknown": 0,
    }  # fmt: skip
    assert one(found, "auditor_pool_level", **big) == 1  # provisioned 1.7x: warn
    assert one(found, "auditor_pool_time_to_full_seconds", **big) == 8.5 * 86400
    assert pick(found, "auditor_pool_time_to_full_seconds", host="h2") == {}
    # 'idle' is inactive: no figure known, so no sample at all but its volume counts' absence
    idle = [(n, dict(k)) for (n, k) in found if dict(k).get("pool") == "idle"]
    assert idle == []
    # the unmanaged row: no capacity, so no level; its known sums are there
    loose = {"host": "h1", "pool": "(unmanaged)", "type": "unmanaged"}
    assert pick(found, "auditor_pool_capacity_bytes", **loose) == {}
    assert pick(found, "auditor_pool_level", **loose) == {}
    assert one(found, "auditor_pool_provisioned_bytes", **loose) == 8 * GiB
    assert all(math.isfinite(v) for v in found.values())


def test_levels_follow_the_policy() -> None:
    """big: 60 % used (ok), provisioned 1.7x (warn at 1.5x); lenient for h1 only."""
    found = samples(prom.render(prom.families(_reading(), Config())))
    by_host = pick(found, "auditor_pool_level", pool="big")
    assert {dict(k)["host"]: v for k, v in by_host.items()} == {"h1": 1, "h2": 1}
    policy = parse({"pools": {"h1/big": {"overcommit_warn": 3.0, "overcommit_crit": 4.0}}})
    found = samples(prom.render(prom.families(_reading(), policy)))
    by_host = pick(found, "auditor_pool_level", pool="big")
    assert {dict(k)["host"]: v for k, v in by_host.items()} == {"h1": 0, "h2": 1}


def test_hosts_findings_and_the_collection_time() -> None:
    found = samples(prom.render(prom.families(_reading(), Config())))
    assert one(found, "auditor_host_up", host="h1", uri="test:///h1") == 1
    assert one(found, "auditor_host_up", host="h3", uri="qemu+ssh://h3/system") == 0
    assert one(found, "auditor_host_collect_seconds", host="h2") == 1.5
    assert one(found, "auditor_collection_timestamp_seconds") == T1.timestamp()
    assert one(found, "auditor_findings", host="h1", code="AUD301", severity="info") == 2
    assert one(found, "auditor_findings", host="h1", code="AUD101", severity="warn") == 1
    assert len(pick(found, "auditor_findings")) == 2
    nothing = samples(prom.render(prom.families(_reading(findings=None), Config())))
    assert pick(nothing, "auditor_findings") == {}  # the audit did not run: no family


def test_no_host_read_gives_host_metrics_only() -> None:
    down = (HostStatus("qemu+ssh://h3/system", "h3", False, 3.0),)
    reading = _reading(hosts=down, summary=None, findings=None)
    found = samples(prom.render(prom.families(reading, Config())))
    assert {n for n, _ in found} == {
        "auditor_host_up", "auditor_host_collect_seconds", "auditor_collection_timestamp_seconds"
    }  # fmt: skip
    assert one(found, "auditor_host_up", host="h3") == 0


def test_the_host_labels_hook() -> None:
    labels = {"h1": {"site": "ams1", "rack": "r7"}, "h2": {"site": "fra2"}}
    found = samples(prom.render(prom.families(_reading(), Config(), lambda h: labels.get(h, {}))))
    assert one(found, "auditor_pool_capacity_bytes", host="h1", pool="big", site="ams1",
               rack="r7") == 100 * GiB  # fmt: skip
    h2 = next(iter(pick(found, "auditor_pool_capacity_bytes", host="h2", pool="big")))
    assert dict(h2) == {"host": "h2", "pool": "big", "type": "dir", "site": "fra2"}
    assert one(found, "auditor_host_up", host="h1", site="ams1") == 1
    assert one(found, "auditor_findings", host="h1", code="AUD101", rack="r7") == 1
    for bad in ("pool", "host", "9lives", "__name", "a-b"):
        with pytest.raises(ConfigError, match="cannot be a label"):
            prom.families(_reading(), Config(), lambda h, bad=bad: {bad: "x"})


def test_the_same_host_twice_is_one_series() -> None:
    s = summary(T1, "h1")
    twice = replace(s, pools=s.pools + s.pools)
    found = samples(prom.render(prom.families(_reading(summary=twice), Config())))
    assert one(found, "auditor_pool_capacity_bytes", host="h1", pool="big") == 100 * GiB


def test_promtool_accepts_the_output() -> None:
    labels = {"h1": {"site": "ams1"}}
    text = prom.render(prom.families(_reading(), Config(), lambda h: labels.get(h, {})))
    ran = promtool_metrics(text)
    assert ran.returncode == 0 and ran.stdout + ran.stderr == "", ran.stdout + ran.stderr


# ---- the textfile ----------------------------------------------------------------------------


def test_write_textfile_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "auditor.prom"
    target.write_bytes(b"old\n")
    prom.write_textfile(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["auditor.prom"]

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        prom.write_textfile(target, b"newer\n")
    assert target.read_bytes() == b"new\n"  # untouched, and no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == ["auditor.prom"]


def _pools_json() -> dict[str, dict[str, object]]:
    ran = auditor("-c", URI, "pools", "--format", "json")
    assert ran.code == 0, ran.err
    return {p["pool"]: p for p in ran.json()["pools"]}


def test_the_command_writes_the_textfile_of_a_test_driver_host(tmp_path: Path) -> None:
    out = tmp_path / "auditor.prom"
    out.write_text("previous\n")
    ran = auditor("-c", URI, "metrics", "--out", str(out))
    assert ran.code == 0, ran.err
    assert ran.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auditor.prom"]
    text = out.read_bytes()
    assert promtool_metrics(text).returncode == 0
    found = samples(text)
    for name, row in _pools_json().items():
        labels = {"pool": name, "type": str(row["type"])}
        for metric, column in (("capacity_bytes", "capacity"), ("usable_free_bytes", "available"),
                               ("used_bytes", "used"), ("provisioned_bytes", "provisioned"),
                               ("overcommit_ratio", "overcommit_ratio"),
                               ("exposure_bytes", "exposure")):  # fmt: skip
            got = pick(found, f"auditor_pool_{metric}", **labels)
            if row[column] is None:
                assert got == {}, (name, metric)
            else:
                assert list(got.values()) == [float(row[column])], (name, metric)  # type: ignore[arg-type]
    levels = {dict(k)["pool"]: v for k, v in pick(found, "auditor_pool_level").items()}
    assert levels == {"vmstore": 2, "backups": 1, "scratch": 1, "iso": 0}  # as the XML says
    assert one(found, "auditor_host_up", uri=URI) == 1
    assert pick(found, "auditor_findings", code="AUD102", severity="crit")


def test_to_stdout_and_with_a_host_down(tmp_path: Path) -> None:
    missing = f"qemu+unix:///system?socket={tmp_path}/no-libvirtd-here"  # fails at once
    ran = auditor("-c", URI, "-c", missing, "metrics", "--no-audit")
    assert ran.code == 1
    assert f"host {missing} is down" in ran.err and ran.err.count("\n") == 1
    found = samples(ran.out)
    assert one(found, "auditor_host_up", uri=missing) == 0
    assert sum(pick(found, "auditor_host_up").values()) == 1
    assert pick(found, "auditor_findings") == {}
    ran = auditor("-c", missing, "metrics", "--out", str(tmp_path / "down.prom"))
    assert ran.code == 2
    assert one(samples((tmp_path / "down.prom").read_text()), "auditor_host_up") == 0


def test_a_textfile_that_cannot_be_written(tmp_path: Path) -> None:
    ran = auditor("-c", URI, "metrics", "--out", str(tmp_path / "no" / "such" / "dir.prom"))
    assert ran.code == 2 and ran.err.startswith("auditor: error: cannot write")
    assert ran.err.count("\n") == 1


def test_days_to_full_from_the_history(tmp_path: Path) -> None:
    """Three snapshots of the test-driver host two days apart, vmstore's usable free space
    shrinking by 2 GiB a day: full in 16 GiB / 2 GiB = 8 days, as auditor plan says."""
    from auditor import planning

    probes = Probes(images=qemu_img.info_many, fs=localfs)
    now = analyze(collect([Target(URI)], lambda t: LibvirtHost.connect(t.uri), probes))
    where = tmp_path / "h.sqlite"
    with open_history(where) as h:
        for days_ago in (2, 1, 0):
            pools = tuple(
                replace(p, usable_free=(16 + 2 * days_ago) * GiB) if p.pool == "vmstore" else p
                for p in now.pools
            )
            at = now.collected_at - timedelta(days=days_ago)
            h.record(replace(now, collected_at=at, pools=pools), "1.0")
        end = h.newest()
        assert end is not None
        plans = planning.plan(h.series(since=end - planning.WINDOW), Config(), end=end).pools
    (vmstore,) = [p for p in plans if p.newest.pool == "vmstore"]
    assert vmstore.days_to_full == 8
    ran = auditor("-c", URI, "metrics", "--history", str(where), "--no-audit")
    assert ran.code == 0, ran.err
    to_full = pick(samples(ran.out), "auditor_pool_time_to_full_seconds")
    assert {dict(k)["pool"]: v for k, v in to_full.items()} == {"vmstore": 8 * 86400}  # flat
    ran = auditor("-c", URI, "metrics", "--history", str(tmp_path / "none.sqlite"), "--no-audit")
    assert ran.code == 1 and "no days to full: no history at" in ran.err
    assert pick(samples(ran.out), "auditor_pool_time_to_full_seconds") == {}


# ---- the listener ----------------------------------------------------------------------------


def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    assert sel.select(timeout), "the listener said nothing"
    return proc.stdout.readline()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_listener_answers_from_the_last_collection_and_stops_by_itself() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", "-c", URI, "metrics", "--listen", "127.0.0.1:0",
         "--interval", "1", "--max-requests", "4", "--no-audit"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = _line(proc, 60)
        m = re.fullmatch(
            r"serving (http://127\.0\.0\.1:\d+/metrics) \(collecting every 1 s\)\n", line
        )
        assert m, line
        url = m.group(1)
        stamps = []
        for pause in (0, 0, 2.5):
            time.sleep(pause)
            started = time.monotonic()
            code, body = _get(url)
            assert code == 200 and time.monotonic() - started < 2  # from the last collection
            assert promtool_metrics(body).returncode == 0
            found = samples(body)
            assert one(found, "auditor_pool_level", pool="vmstore") == 2
            stamps.append(one(found, "auditor_collection_timestamp_seconds"))
        assert stamps[0] <= stamps[1] < stamps[2]
        assert stamps[2] - stamps[0] >= 1  # at most one collection a second
        assert _get(url.replace("/metrics", "/"))[0] == 404  # the fourth and last request
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("address", ["9177", ":9177", "127.0.0.1", "127.0.0.1:99999", "[::1]"])
def test_the_listener_binds_only_a_given_address(address: str) -> None:
    ran = auditor("-c", URI, "metrics", "--listen", address)
    assert ran.code == 2 and "--listen" in ran.err


def test_out_and_listen_exclude_each_other(tmp_path: Path) -> None:
    ran = auditor("-c", URI, "metrics", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "x"))
    assert ran.code == 2 and "give one of them" in ran.err
    assert auditor("-c", URI, "metrics", "--max-requests", "1").code == 2


# ---- alert rules and the README --------------------------------------------------------------

ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'auditor_pool_overcommit_ratio{{host="kvm1",pool="vmstore",type="dir"}}'
        values: '2.5x120'
      - series: 'auditor_pool_overcommit_ratio{{host="kvm1",pool="iso",type="dir"}}'
        values: '0.5x120'
      - series: 'auditor_pool_time_to_full_seconds{{host="kvm1",pool="vmstore",type="dir"}}'
        values: '864000x120'
      - series: 'auditor_host_up{{host="kvm2",uri="qemu+ssh://kvm2/system"}}'
        values: '1x10 0x110'
      - series: 'auditor_host_up{{host="kvm1",uri="qemu+ssh://kvm1/system"}}'
        values: '1x120'
      - series: 'auditor_pool_level{{host="kvm1",pool="vmstore",type="dir"}}'
        values: '2x120'
      - series: 'auditor_collection_timestamp_seconds'
        values: '0+60x120'
    alert_rule_test:
      - eval_time: 90m
        alertname: AuditorPoolOvercommitted
        exp_alerts:
          - exp_labels: {{severity: critical, host: kvm1, pool: vmstore, type: dir}}
            exp_annotations:
              summary: "vmstore on kvm1 is provisioned 2.50x its capacity"
              description: "Thin disks on it may need more than the pool holds; see auditor plan and auditor_pool_exposure_bytes."
      - eval_time: 90m
        alertname: AuditorPoolFillsSoon
        exp_alerts:
          - exp_labels: {{severity: warning, host: kvm1, pool: vmstore, type: dir}}
            exp_annotations:
              summary: "vmstore on kvm1 is full in 10d 0h 0m 0s at its growth"
              description: "Growth fitted over the history (auditor plan); order capacity or move disks."
      - eval_time: 90m
        alertname: AuditorPoolFillsVerySoon
        exp_alerts: []
      - eval_time: 20m
        alertname: AuditorHostDown
        exp_alerts: []
      - eval_time: 30m
        alertname: AuditorHostDown
        exp_alerts:
          - exp_labels: {{severity: critical, host: kvm2, uri: "qemu+ssh://kvm2/system"}}
            exp_annotations:
              summary: "auditor cannot read libvirt on kvm2 (qemu+ssh://kvm2/system)"
              description: "The host is unreachable or libvirtd does not answer; its pools are not watched."
      - eval_time: 60m
        alertname: AuditorPoolCritical
        exp_alerts:
          - exp_labels: {{severity: critical, host: kvm1, pool: vmstore, type: dir}}
            exp_annotations:
              summary: "vmstore on kvm1 is over a critical threshold of the policy"
              description: "Used space or overcommit ratio at or above used_crit or overcommit_crit (auditor status shows which)."
      - eval_time: 100m
        alertname: AuditorMetricsStale
        exp_alerts: []
"""  # noqa: E501


def test_the_example_alert_rules(tmp_path: Path) -> None:
    rules = REPO / "examples" / "alerts.yml"
    ran = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 0 and "SUCCESS: 6 rules found" in ran.stdout, ran.stdout + ran.stderr
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(ALERT_TESTS.format(rules=rules))
    ran = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_readme_lists_every_metric() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Fleet") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    listed = set(re.findall(r"^\| `(auditor_[a-z_]+)", section, re.M))
    found = {n for n, _ in samples(prom.render(prom.families(_reading(), Config())))}
    assert listed == found
