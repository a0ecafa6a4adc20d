"""Every libvirt pool type on the test driver, through the real CLI: pools, volumes (json, csv,
table), report and summary.json, against figures computed by hand from the fixtures in
tests/data/backends/ (the test driver reports a capacity of 100 GiB for every pool, an
allocation of the sum of the volumes' allocations and available = capacity - allocation,
wrapping around 2^64 when the volumes hold more).

The expectations are literals or simple arithmetic on the fixtures' numbers: the README's
formulas written out, never a call into the code under test.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clirun import Ran, auditor
from golden import DATA

KiB, MiB, GiB, TiB, EiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 60
CAP = 100 * GiB  # the test driver's capacity of every pool
WRAP = 1 << 64
T = "2026-01-02T00:00:00Z"
BACKENDS = DATA / "backends"


def qcow2_full(virtual: int) -> int:
    """README 'full size' of a qcow2 with 64 KiB clusters, written out."""
    return virtual + virtual * 10 // (64 * KiB) + 4 * 64 * KiB


@dataclass(frozen=True)
class Vol:
    format: str
    provisioning: str
    virtual_size: int | None
    disk_size: int | None
    growth: int | None
    note: str = ""  # a part of the note ('' : no note at all)


@dataclass(frozen=True)
class Expect:
    pool: str
    type: str
    figures: dict[str, Any]  # the pool row's columns, as JSON
    volumes: dict[str, Vol]
    notes: tuple[str, ...] = ()  # parts of the pool's note, in order
    level: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


def figures(
    capacity: int | None, allocation: int | None, available: int | None, counts: tuple[int, ...],
    provisioned: int | None, used: int | None, ratio: float | None, exposure: int | None,
) -> dict[str, Any]:  # fmt: skip
    volumes, thin, preallocated, unknown = counts
    return {
        "capacity": capacity, "allocation": allocation, "available": available,
        "volumes": volumes, "thin": thin, "preallocated": preallocated, "unknown": unknown,
        "provisioned": provisioned, "used": used, "overcommit_ratio": ratio,
        "exposure": exposure,
    }  # fmt: skip


LUN_NOTE = "for a pool of {} LUNs: the LUNs are fixed by the target"
PARTIAL = " of unknown size or growth (see their notes)"

EXPECT = {
    "dir": Expect("images", "dir", figures(
        CAP, 26 * GiB + 631 * MiB, CAP - 26 * GiB - 631 * MiB, (3, 1, 2, 0),
        60 * GiB + 631 * MiB, 26 * GiB + 631 * MiB, 0.6062, qcow2_full(40 * GiB) - 6 * GiB,
    ), {
        "web.qcow2": Vol("qcow2", "thin", 40 * GiB, 6 * GiB, qcow2_full(40 * GiB) - 6 * GiB),
        "db.raw": Vol("raw", "preallocated", 20 * GiB, 20 * GiB, 0),
        "debian-12.iso": Vol("iso", "preallocated", 631 * MiB, 631 * MiB, 0),
    }),
    "fs": Expect("local-ext4", "fs", figures(
        CAP, 30 * GiB, 70 * GiB, (2, 1, 1, 0), 80 * GiB, 30 * GiB, 0.8,
        50 * GiB + qcow2_full(30 * GiB) - 30 * GiB,
    ), {
        "sparse.raw": Vol("raw", "thin", 50 * GiB, 0, 50 * GiB),
        # growth 30 GiB * 10 / 64 KiB + 4 clusters = 5 MiB - 64 KiB: within the slack
        "full.qcow2": Vol("qcow2", "preallocated", 30 * GiB, 30 * GiB, 5177344),
    }),
    "netfs": Expect("nfs-vms", "netfs", figures(
        CAP, 3 * GiB, 97 * GiB, (2, 2, 0, 0), 30 * GiB, 3 * GiB, 0.3,
        qcow2_full(20 * GiB) - 2 * GiB + 9 * GiB,
    ), {
        "golden.qcow2": Vol("qcow2", "thin", 20 * GiB, 2 * GiB, qcow2_full(20 * GiB) - 2 * GiB),
        "scratch.raw": Vol("raw", "thin", 10 * GiB, GiB, 9 * GiB),
    }),
    "logical": Expect("vg-vms", "logical", figures(
        CAP, 62 * GiB, 38 * GiB, (3, 1, 2, 0), 80 * GiB, 62 * GiB, 0.8, 18 * GiB,
    ), {  # the LVs add up to the VG's allocation (20 + 40 + 2 = 62 GiB): no thin LV hides
        "web-root": Vol("", "preallocated", 20 * GiB, 20 * GiB, 0),
        "db-data": Vol("", "preallocated", 40 * GiB, 40 * GiB, 0),
        "web-root-snap": Vol("", "thin", 20 * GiB, 2 * GiB, 18 * GiB),  # COW size
    }),
    "logical-thin": Expect("vg-thin", "logical", figures(
        CAP, None, None, (6, 0, 0, 6), 240 * GiB, None, 2.4, None,
    ), {
        f"ci-{i}": Vol("", "unknown", 40 * GiB, None, None, "thin or thick unknown")
        for i in range(1, 7)
    }, (
        f"libvirt reports allocation 240.0 GiB ({240 * GiB} B), more than the capacity"
        f" 100.0 GiB ({CAP} B): a pool cannot hold more than its size; allocation unknown",
        f"libvirt reports available 16.0 EiB ({(CAP - 240 * GiB) % WRAP} B), more than the"
        f" capacity 100.0 GiB ({CAP} B): it is capacity - allocation wrapped around 2^64",
    ), level="crit"),  # provisioned 2.4x the VG, though its free space is unknown
    "disk": Expect("sdb", "disk", figures(
        CAP, 84 * GiB, 16 * GiB, (5, 0, 4, 1), 54 * GiB, 54 * GiB, 0.54, 0,
    ), {  # the extended partition holds sdb5 and sdb6: counted once
        "sdb1": Vol("", "preallocated", 20 * GiB, 20 * GiB, 0),
        "sdb2": Vol("extended", "unknown", None, None, None, "a container, left out"),
        "sdb3": Vol("linux-swap", "preallocated", 4 * GiB, 4 * GiB, 0),
        "sdb5": Vol("", "preallocated", 20 * GiB, 20 * GiB, 0),
        "sdb6": Vol("", "preallocated", 10 * GiB, 10 * GiB, 0),
    }, ("used leaves out 1 volume; exposure leaves out 1 volume" + PARTIAL,),
        level="warn"),  # 84 % used: the test driver counts the extended partition too
    "iscsi": Expect("san", "iscsi", figures(
        CAP, 80 * GiB, None, (2, 0, 0, 2), 80 * GiB, 80 * GiB, 0.8, None,
    ), {
        "unit:0:0:1": Vol("", "unknown", 50 * GiB, 50 * GiB, None, "iscsi LUNs hide"),
        "unit:0:0:2": Vol("", "unknown", 30 * GiB, 30 * GiB, None, "iscsi LUNs hide"),
    }, (f"libvirt reports available 20.0 GiB ({20 * GiB} B) " + LUN_NOTE.format("iscsi"),),
        level="unknown"),
    "iscsi-direct": Expect("san-direct", "iscsi-direct", figures(
        CAP, 64 * GiB, None, (1, 0, 0, 1), 64 * GiB, 64 * GiB, 0.64, None,
    ), {
        "unit:0:0:0": Vol("", "unknown", 64 * GiB, 64 * GiB, None, "iscsi-direct LUNs hide"),
    }, (LUN_NOTE.format("iscsi-direct"),), level="unknown"),
    "scsi": Expect("hba", "scsi", figures(
        CAP, CAP, None, (2, 0, 0, 2), CAP, CAP, 1.0, None,
    ), {
        "unit:0:0:0": Vol("", "unknown", 60 * GiB, 60 * GiB, None, "scsi LUNs hide"),
        "unit:0:1:0": Vol("", "unknown", 40 * GiB, 40 * GiB, None, "scsi LUNs hide"),
    }, ("libvirt reports available 0 B " + LUN_NOTE.format("scsi"),), level="unknown"),
    "mpath": Expect("multipath", "mpath", figures(
        CAP, 70 * GiB, None, (1, 0, 0, 1), 70 * GiB, 70 * GiB, 0.7, None,
    ), {
        "dm-0": Vol("", "unknown", 70 * GiB, 70 * GiB, None, "mpath LUNs hide"),
    }, (LUN_NOTE.format("mpath"),), level="unknown"),
    "rbd": Expect("ceph-vms", "rbd", figures(
        None, None, None, (3, 1, 0, 2), 16 * TiB + 10241 * MiB + 100 * GiB, 12 * GiB, None,
        88 * GiB,
    ), {
        "vm-1-disk-0": Vol("raw", "unknown", 16 * TiB, None, None, "does not measure"),
        "vm-2-disk-0": Vol("raw", "unknown", 10241 * MiB, None, None,
                           f"allocation 10.0 GiB ({10244 * MiB} B), the virtual size (rounded"),
        "vm-3-disk-0": Vol("raw", "thin", 100 * GiB, 12 * GiB, 88 * GiB),  # fast-diff
    }, (
        f"libvirt reports allocation 16.0 TiB ({16 * TiB + 10244 * MiB + 12 * GiB} B), more"
        f" than the capacity 100.0 GiB ({CAP} B)",
        "wrapped around 2^64",
        f"libvirt reports capacity 100.0 GiB ({CAP} B), the Ceph cluster's raw figures",
        "used leaves out 2 volumes; exposure leaves out 2 volumes" + PARTIAL,
    ), level="unknown"),
    "gluster": Expect("gv0", "gluster", figures(
        CAP, 13 * GiB, 87 * GiB, (2, 1, 1, 0), 40 * GiB, 13 * GiB, 0.4,
        qcow2_full(30 * GiB) - 3 * GiB,
    ), {
        "app.qcow2": Vol("qcow2", "thin", 30 * GiB, 3 * GiB, qcow2_full(30 * GiB) - 3 * GiB),
        "logs.raw": Vol("raw", "preallocated", 10 * GiB, 10 * GiB, 0),
    }),
    "zfs": Expect("tank-vms", "zfs", figures(
        CAP, 20640 * MiB + 10 * GiB, CAP - 20640 * MiB - 10 * GiB, (3, 0, 1, 2), 170 * GiB,
        20640 * MiB, 1.7, 0,
    ), {
        "db": Vol("", "preallocated", 20 * GiB, 20640 * MiB, 0),  # refreservation > volsize
        "ci": Vol("", "unknown", 50 * GiB, None, None, "refreservation 0 B, not the data"),
        "media": Vol("", "unknown", 100 * GiB, None, None,
                     f"refreservation 10.0 GiB ({10 * GiB} B)"),
    }, ("used leaves out 2 volumes; exposure leaves out 2 volumes" + PARTIAL,), level="warn"),
    "vstorage": Expect("vz", "vstorage", figures(
        CAP, 8 * GiB, 92 * GiB, (1, 1, 0, 0), 64 * GiB, 8 * GiB, 0.64,
        qcow2_full(64 * GiB) - 8 * GiB,
    ), {
        "ct.qcow2": Vol("qcow2", "thin", 64 * GiB, 8 * GiB, qcow2_full(64 * GiB) - 8 * GiB),
    }),
    "huge": Expect("corrupt", "dir", figures(
        CAP, GiB + 196 * KiB, 99 * GiB - 196 * KiB, (2, 1, 0, 1), 10 * GiB, GiB + 196 * KiB,
        0.1, 9 * GiB,
    ), {
        "bogus.qcow2": Vol("qcow2", "unknown", None, 196 * KiB, None,
                           f"libvirt reports virtual size 8.0 EiB ({(1 << 63) - 1} B): more"
                           " than any real disk (2^62 bytes), a corrupt image header?"),
        "ok.raw": Vol("raw", "thin", 10 * GiB, GiB, 9 * GiB),
    }, ("exposure leaves out 1 volume" + PARTIAL,)),
    "exabytes": Expect("exa", "dir", figures(  # Σ 2^63: beyond any storage and int64
        CAP, 0, CAP, (2, 2, 0, 0), None, 0, None, None,
    ), {
        "a.raw": Vol("raw", "thin", 4 * EiB, 0, 4 * EiB),
        "b.raw": Vol("raw", "thin", 4 * EiB, 0, 4 * EiB),
    }, (f"the volumes' virtual sizes add up to 8.0 EiB ({1 << 63} B), beyond 8 EiB",
        f"the volumes' growths add up to 8.0 EiB ({1 << 63} B)")),
}  # fmt: skip
TYPES = {"dir", "fs", "netfs", "logical", "disk", "iscsi", "iscsi-direct", "scsi", "mpath",
         "rbd", "gluster", "zfs", "vstorage"}  # fmt: skip
REPORTED = [name for name in EXPECT if name != "exabytes"]  # see test_report_on_sums_beyond_int64


def uri(name: str) -> str:
    return f"test://{BACKENDS / name}.xml"


@dataclass(frozen=True)
class Runs:
    pools: Ran  # pools -f json
    volumes: Ran  # volumes -f json
    pools_csv: str  # the report's pools.csv (the same as pools -f csv: test_report.py)
    volumes_csv: str
    report: Ran | None
    out: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Runs]:
    """Every CLI run of every fixture, a few at a time."""
    tmp = tmp_path_factory.mktemp("backends")

    def one(name: str) -> Runs:
        out = tmp / name / "report"
        pools, volumes = (auditor("-c", uri(name), c, "-f", "json") for c in ("pools", "volumes"))
        if name not in REPORTED:
            p, v = (auditor("-c", uri(name), c, "-f", "csv") for c in ("pools", "volumes"))
            assert p.code == v.code == 0, p.err + v.err
            return Runs(pools, volumes, p.out, v.out, None, out)
        report = auditor("-c", uri(name), "report", "--out", str(out),
                         "--history", str(out.parent / "h.sqlite"), "--at", T)  # fmt: skip
        assert report.code == 0, report.err
        csvs = ((out / f).read_text() for f in ("pools.csv", "volumes.csv"))
        return Runs(pools, volumes, *csvs, report, out)

    with ThreadPoolExecutor(max_workers=4) as ex:
        return dict(zip(EXPECT, ex.map(one, EXPECT), strict=True))


def test_the_fixtures_cover_every_pool_type_and_load_in_virsh() -> None:
    assert {e.type for e in EXPECT.values()} == TYPES
    assert sorted(p.stem for p in BACKENDS.glob("*.xml")) == sorted(EXPECT)
    for name, e in EXPECT.items():
        virsh = ["virsh", "-c", uri(name)]
        pools = subprocess.run([*virsh, "pool-list", "--all", "--name"], capture_output=True,
                               text=True, check=True).stdout.split()  # fmt: skip
        assert pools == [e.pool], name
        info = subprocess.run([*virsh, "pool-dumpxml", e.pool], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        assert f"<pool type='{e.type}'>" in info, name
        vols = subprocess.run([*virsh, "vol-list", e.pool, "--details"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        listed = [line.split()[0] for line in vols.splitlines()[2:] if line.strip()]
        assert sorted(listed) == sorted(e.volumes), name


def _pool(ran: Ran) -> dict[str, Any]:
    assert ran.code == 0, ran.err
    (row,) = ran.json()["pools"]
    return dict(row)


@pytest.mark.parametrize("name", EXPECT)
def test_pool_figures(runs: dict[str, Runs], name: str) -> None:
    e = EXPECT[name]
    row = _pool(runs[name].pools)
    assert (row["pool"], row["type"], row["state"]) == (e.pool, e.type, "running")
    assert {k: row[k] for k in e.figures} == e.figures
    note = row["note"]
    assert bool(note) == bool(e.notes), note
    at = 0
    for part in e.notes:  # each part, in order
        at = note.index(part, at) + len(part)


@pytest.mark.parametrize("name", EXPECT)
def test_volume_figures(runs: dict[str, Runs], name: str) -> None:
    ran = runs[name].volumes
    assert ran.code == 0, ran.err
    rows = {r["volume"]: r for r in ran.json()["volumes"]}
    assert rows.keys() == EXPECT[name].volumes.keys()
    for volume, v in EXPECT[name].volumes.items():
        r = rows[volume]
        got = (r["format"], r["provisioning"], r["virtual_size"], r["disk_size"], r["growth"])
        assert got == (v.format, v.provisioning, v.virtual_size, v.disk_size, v.growth), volume
        assert v.note in r["note"] and bool(r["note"]) == bool(v.note), (volume, r["note"])
        assert r["pool"] == EXPECT[name].pool and r["managed"] is True


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _cell(value: Any) -> str:
    """A JSON value as the CSV writes it."""
    return "" if value is None else str(value)


@pytest.mark.parametrize("name", EXPECT)
def test_csv_holds_the_json_figures_exactly(runs: dict[str, Runs], name: str) -> None:
    r = runs[name]
    for text, key in ((r.pools_csv, "pools"), (r.volumes_csv, "volumes")):
        rows = (r.pools if key == "pools" else r.volumes).json()[key]
        got = _csv(text)
        for row, want in zip(got, rows, strict=True):
            for column in ("capacity", "allocation", "available", "provisioned", "used",
                           "exposure", "virtual_size", "disk_size", "growth", "note"):  # fmt: skip
                if column in want:
                    assert row[column] == _cell(want[column]), (key, column)
    if name == "exabytes":  # sums beyond int64 are unknown, and named in the note
        (row,) = _csv(r.pools_csv)
        assert row["provisioned"] == row["exposure"] == "" and str(1 << 63) in row["note"]


def test_tables_show_unknown_figures_as_empty_and_name_them() -> None:
    ran = auditor("-c", uri("rbd"), "pools")
    assert ran.code == 0, ran.err
    header, _, row = ran.out.splitlines()[:3]
    figures, note = row.split("libvirt reports", 1)
    assert header.split()[-1] == "note" and "EiB" not in figures  # available: empty
    assert note.startswith(" allocation 16.0 TiB") and "Ceph cluster's raw figures" in note
    vols = auditor("-c", uri("logical-thin"), "volumes")
    assert vols.code == 0 and vols.out.count("thin or thick unknown") == 6
    exa = auditor("-c", uri("exabytes"), "pools")
    assert exa.code == 0 and "8.0 EiB" in exa.out  # provisioned 2^63: unknown, named


def _document(runs: dict[str, Runs], name: str) -> dict[str, Any]:
    ran = runs[name].report
    assert ran is not None and ran.code == 0, ran and ran.err
    return dict(json.loads((runs[name].out / "summary.json").read_text()))


@pytest.mark.parametrize("name", REPORTED)
def test_report_and_summary_json(runs: dict[str, Runs], name: str) -> None:
    e = EXPECT[name]
    doc = _document(runs, name)
    (pool, *_) = [p for p in doc["pools"] if p["pool"] == e.pool]
    assert {k: pool[k] for k in e.figures} == e.figures
    assert pool["level"] == e.level, pool["reasons"]
    assert pool["note"] == _pool(runs[name].pools)["note"]
    volumes = {v["volume"]: v for v in doc["volumes"]}
    assert volumes == {v["volume"]: v for v in runs[name].volumes.json()["volumes"]}
    totals = doc["totals"]
    known = e.figures["capacity"] is not None
    assert totals["capacity"] == (CAP if known else None)  # None: no capacity known
    assert totals["capacity_unknown"] == (0 if known else 1)
    assert totals["overcommit_ratio"] == e.figures["overcommit_ratio"]
    assert totals["provisioned"] == e.figures["provisioned"]
    for total, column in (("used", "used"), ("available", "available"), ("exposure", "exposure")):
        assert totals[total] == e.figures[column], total


@pytest.mark.parametrize("name", ["rbd", "logical-thin", "huge", "iscsi"])
def test_the_verdict_names_every_unknown_figure(runs: dict[str, Runs], name: str) -> None:
    page = (runs[name].out / "report.html").read_text()
    status = page[page.index('<section id="status"') : page.index('<section id="headline"')]
    e = EXPECT[name]
    if e.notes:
        assert "Pool <a href=" in status and f"<strong>{e.pool}</strong></a> on " in status
        for part in e.notes:
            assert part.replace("'", "&#39;") in status, part
    for volume, v in e.volumes.items():
        if v.note.startswith("libvirt reports virtual size"):  # impossible, not unknowable
            assert f"Volume <strong>{volume}</strong> of pool {e.pool}" in status
            assert v.note in status


def test_report_on_sums_beyond_int64(tmp_path: Path) -> None:
    """Two 4 EiB volumes: their 2^63-byte sum is beyond any storage (and any signed 64-bit
    column of the history): unknown, with a note that names it, and the report is written."""
    ran = auditor("-c", uri("exabytes"), "report", "--out", str(tmp_path / "out"),
                  "--history", str(tmp_path / "h.sqlite"), "--at", T)  # fmt: skip
    assert ran.code == 0, ran.err
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    pool = doc["pools"][0]
    assert pool["provisioned"] is None and pool["overcommit_ratio"] is None
    assert str(1 << 63) in pool["note"]
    assert "virtual sizes add up to" in pool["note"]


def test_overcommit_alone_sets_the_level_without_usable_free(runs: dict[str, Runs]) -> None:
    (pool,) = [p for p in _document(runs, "logical-thin")["pools"] if p["pool"] == "vg-thin"]
    assert pool["overcommit_ratio"] == 2.4 and pool["used_percent"] is None
    assert pool["level"] == "crit"  # provisioned 2.4x the VG: what the thin LVs mean
