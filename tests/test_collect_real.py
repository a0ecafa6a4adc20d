"""`auditor volumes/pools/scan` against the real libvirtd bed; expectations come from
os.stat, os.statvfs and qemu-img run directly, never from auditor's own code."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import libvirt
import pytest
from clirun import Ran, auditor
from testbed import Bed, ImageSpec, PoolSpec

MiB = 1 << 20


def qemu_info(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def device_size(path: str) -> int:
    with open(path, "rb") as fh:
        return fh.seek(0, os.SEEK_END)


@cache
def _run(uri: str, *args: str) -> Ran:
    return auditor("-c", uri, *args, "--format", "json")


@pytest.fixture
def volumes(bed: Bed) -> dict[str, dict[str, Any]]:
    ran = _run(bed.uri, "volumes")
    assert ran.code in (0, 1), ran.err
    return {row["path"]: row for row in ran.json()["volumes"]}


@pytest.fixture
def pools(bed: Bed) -> dict[str, dict[str, Any]]:
    ran = _run(bed.uri, "pools")
    assert ran.code in (0, 1), ran.err
    return {(r["pool"], r["filesystem"]): r for r in ran.json()["pools"]}  # type: ignore[misc]


def expected_virtual(spec: ImageSpec) -> int:
    if spec.pool is None and spec.path.startswith("/dev/"):
        return device_size(spec.path)
    if spec.format == "raw" and spec.pool is not None:
        return os.stat(spec.path).st_size  # libvirt: exact file size
    return int(qemu_info(spec.path)["virtual-size"])


def expected_disk(spec: ImageSpec) -> int:
    return device_size(spec.path) if spec.path.startswith("/dev/") else allocated(spec.path)


def test_every_image_kind_has_exact_figures(bed: Bed, volumes: dict[str, dict[str, Any]]) -> None:
    in_scope = {k: s for k, s in bed.images.items() if s.pool != bed.inactive_pool.name}
    for key, spec in in_scope.items():
        row = volumes.get(spec.path)
        assert row is not None, f"{key}: {spec.path} missing"
        v, a = expected_virtual(spec), expected_disk(spec)
        assert row["virtual_size"] == v, key
        assert row["disk_size"] == a, key
        assert row["provisioning"] == spec.expected, key
        assert row["format"] == spec.format, key
        assert row["managed"] is (spec.pool is not None), key
        assert row["pool"] == (spec.pool or ""), key
        if spec.format == "raw":
            assert row["growth"] == max(0, v - a), key


def test_backing_chain_and_users(bed: Bed, volumes: dict[str, dict[str, Any]]) -> None:
    overlay, base = bed.images["overlay"], bed.images["base"]
    assert volumes[overlay.path]["backing_file"] == base.path
    for dom, disks in bed.domain_disks.items():
        for key in disks.values():
            assert dom in volumes[bed.images[key].path]["used_by"], key
    # The base is used through the overlay of the running domain.
    assert volumes[base.path]["used_by"] == [bed.running_domain]
    assert volumes[bed.images["qcow2_off"].path]["used_by"] == []


def test_unmanaged_file_and_block_device(bed: Bed, volumes: dict[str, dict[str, Any]]) -> None:
    f, b = volumes[bed.unmanaged_file.path], volumes[bed.unmanaged_block.path]
    assert (f["managed"], f["pool"], f["kind"]) == (False, "", "file")
    assert (b["managed"], b["kind"], b["provisioning"]) == (False, "block", "preallocated")
    assert b["disk_size"] == b["virtual_size"] == device_size(bed.unmanaged_block.path)


def test_fs_pool_figures_match_statvfs(bed: Bed, pools: dict[Any, dict[str, Any]]) -> None:
    spec = bed.fs_pool
    row = next(r for (name, _), r in pools.items() if name == spec.name)
    vfs = os.statvfs(spec.path)
    assert row["type"] == "fs" and row["state"] == "running"
    assert row["capacity"] == vfs.f_blocks * vfs.f_frsize
    assert row["available"] == vfs.f_bavail * vfs.f_frsize  # usable, not libvirt's f_bfree
    images = [s for s in bed.images.values() if s.pool == spec.name]
    provisioned = sum(s.virtual_size for s in images)
    assert row["volumes"] == len(images) == 3  # lost+found is not a disk
    assert row["provisioned"] == provisioned
    assert row["used"] == sum(allocated(s.path) for s in images)
    assert row["overcommit_ratio"] == round(provisioned / row["capacity"], 4)
    assert row["filesystem"] == spec.path


def test_inactive_pool_has_empty_figures(bed: Bed, pools: dict[Any, dict[str, Any]]) -> None:
    row = next(r for (name, _), r in pools.items() if name == bed.inactive_pool.name)
    assert row["state"] == "inactive"
    assert all(row[k] is None for k in ("capacity", "available", "volumes", "provisioned"))


def test_unmanaged_groups_by_filesystem(bed: Bed, pools: dict[Any, dict[str, Any]]) -> None:
    mount = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "-T", bed.unmanaged_file.path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    row = pools[("(unmanaged)", mount)]
    assert row["type"] == "unmanaged" and row["volumes"] >= 1
    vfs = os.statvfs(mount)
    assert row["capacity"] == vfs.f_blocks * vfs.f_frsize


def test_hostile_names_survive_every_format(bed: Bed, volumes: dict[str, dict[str, Any]]) -> None:
    hostile = [s for k, s in bed.images.items() if k.startswith("hostile_")]
    names = {r["volume"] for r in volumes.values()}
    assert {s.volume for s in hostile} <= names
    csv = auditor("-c", bed.uri, "volumes", "--pool", bed.dir_pool.name, "--format", "csv").out
    assert ",'=HYPERLINK(1).raw," in csv and ",'+plus.raw," in csv and ",'@at.raw," in csv
    table = auditor("-c", bed.uri, "volumes", "--pool", bed.dir_pool.name)
    assert "<script>alert(1)<script>.raw" in table.out and "semi;colon.raw" in table.out
    assert not Path("pwned").exists() and not Path(bed.dir_pool.path, "pwned").exists()


def test_vanished_volume_is_skipped_not_fatal(
    bed: Bed, scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    for name in ("keep.raw", "gone.raw"):
        subprocess.run(["truncate", "-s", "8M", f"{scratch_pool.path}/{name}"], check=True)
    libvirt_conn.storagePoolLookupByName(scratch_pool.name).refresh(0)
    os.unlink(f"{scratch_pool.path}/gone.raw")
    ran = auditor(
        "-c", bed.uri, "volumes", "--no-refresh", "--pool", scratch_pool.name, "--format", "json"
    )
    assert ran.code == 1
    doc = ran.json()
    assert [r["volume"] for r in doc["volumes"]] == ["keep.raw"]
    (skip,) = doc["skipped"]
    assert skip["kind"] == "volume" and "vanished" in skip["reason"]
    assert "gone.raw" in ran.err and "Traceback" not in ran.err


def test_unreachable_uri_is_one_line_exit_2() -> None:
    ran = auditor("-c", "qemu+tcp://127.0.0.1:9/system", "pools")
    assert ran.code == 2
    assert ran.err.count("\n") == 1 and "cannot connect to qemu+tcp://127.0.0.1:9/system" in ran.err
    assert "Traceback" not in ran.err


def test_one_unreachable_host_among_several_is_a_skip(bed: Bed) -> None:
    ran = auditor("-c", bed.uri, "-c", "qemu+tcp://127.0.0.1:9/system", "pools", "--format", "json")
    assert ran.code == 1
    doc = ran.json()
    assert [s["kind"] for s in doc["skipped"]] == ["host"]
    assert any(r["pool"] == bed.fs_pool.name for r in doc["pools"])


def test_read_only_connection_says_figures_may_be_stale(bed: Bed) -> None:
    ran = auditor("--read-only", "-c", bed.uri, "pools", "--format", "json")
    assert ran.code == 0, ran.err
    assert "may be stale" in ran.err and ran.json()["notices"]


def test_scan_reads_images_through_qemu_img(bed: Bed) -> None:
    good = [bed.images[k] for k in ("qcow2_off", "qcow2_falloc", "raw_partial", "overlay")]
    ran = auditor(
        "scan", *(s.path for s in good), bed.corrupt_image, bed.truncated_image, "--format", "json"
    )
    assert ran.code == 1
    doc = ran.json()
    rows = {r["path"]: r for r in doc["volumes"]}
    for spec in good:
        info = qemu_info(spec.path)
        row = rows[spec.path]
        assert row["virtual_size"] == info["virtual-size"]
        assert row["disk_size"] == info["actual-size"] == allocated(spec.path)
        assert row["format"] == info["format"] and row["provisioning"] == spec.expected
    assert rows[bed.images["overlay"].path]["backing_file"] == bed.images["base"].path
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert set(skipped) == {bed.corrupt_image, bed.truncated_image}
    assert all("qemu-img cannot read it" in r for r in skipped.values())


def test_scan_of_a_folder_is_recursive(bed: Bed) -> None:
    ran = auditor("scan", bed.root, "--format", "json")
    paths = {r["path"] for r in ran.json()["volumes"]}
    assert bed.unmanaged_file.path in paths and bed.images["fs_raw"].path in paths
