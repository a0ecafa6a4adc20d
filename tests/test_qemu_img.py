"""The qemu-img wrappers on real images made by the real qemu-img and qemu-io (no mocks).

Every expectation is computed independently: qemu-img run directly, os.stat, checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.adapters import qemu_img
from auditor.errors import CommandError, ImageError

MiB = 1 << 20
SIZE = 64 * MiB
CLUSTER = 64 * 1024  # qcow2's default cluster size


def qemu_img_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)


def qemu_img_json(*args: str | Path) -> dict:
    return json.loads(qemu_img_run(*args, "--output=json").stdout)


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def qemu_io(path: Path, fmt: str, *commands: str) -> subprocess.CompletedProcess[str]:
    """qemu-io, without core dumps (``abort`` is used on purpose), from inside the tmp dir."""
    argv = ["qemu-io", "-f", fmt, *(a for c in commands for a in ("-c", c)), str(path)]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=path.parent, preexec_fn=no_core_dumps
    )


def make_qcow2(path: Path, *opts: str, data: int = MiB) -> Path:
    """A 64 MiB qcow2 whose first ``data`` bytes are 0xab."""
    o = ",".join(["compat=1.1", *opts])
    assert qemu_img_run("create", "-q", "-f", "qcow2", "-o", o, path, str(SIZE)).returncode == 0
    if data:
        assert qemu_io(path, "qcow2", f"write -P 0xab 0 {data}").returncode == 0
    return path


def make_raw(path: Path, *, allocated: bool = False) -> Path:
    """A 64 MiB raw file: 1 MiB of random bytes, then zeros (holes unless ``allocated``)."""
    with path.open("wb") as f:
        f.write(os.urandom(MiB))
        if allocated:
            f.write(bytes(SIZE - MiB))
        f.truncate(SIZE)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_sha256(path: Path, fmt: str) -> str:
    """sha256 of the guest-visible bytes: qemu-img convert -O raw, run directly."""
    out = path.with_name(path.name + ".flat")
    assert qemu_img_run("convert", "-f", fmt, "-O", "raw", path, out).returncode == 0
    try:
        return sha256(out)
    finally:
        out.unlink()


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def make_leaky(path: Path) -> Path:
    """A qcow2 with leaked clusters: clusters whose refcount is 1 but that nothing references.

    Recipe: write 1 MiB (16 data clusters, plus 1 L2 table to map them), then zero the first
    L1 entry in the file (the L1 table offset is the big-endian u64 at header byte 40). The
    L2 table and its 16 data clusters keep refcount 1 with no reference: exactly 17 leaks,
    deterministically; the guest now reads zeros there, which is still a consistent image.
    """
    make_qcow2(path)
    with path.open("r+b") as f:
        f.seek(40)
        (l1_offset,) = struct.unpack(">Q", f.read(8))
        f.seek(l1_offset)
        assert struct.unpack(">Q", f.read(8))[0] != 0, "the write allocated an L2 table"
        f.seek(l1_offset)
        f.write(bytes(8))
    return path


def value_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    return make_qcow2(tmp_path / "disk.qcow2")


# --- argv: the seam the wrappers themselves build their command lines with ---


def test_reads_are_force_shared_with_known_formats_and_absolute_paths() -> None:
    for argv in (
        qemu_img.info_argv("-x.qcow2", "qcow2"),
        qemu_img.check_argv("-x.qcow2", "qcow2"),
        qemu_img.measure_argv("-x.qcow2", "qcow2", "raw"),
    ):
        assert "-U" in argv and value_after(argv, "-f") == "qcow2", argv
        assert argv[-1] == os.path.abspath("-x.qcow2") and argv[-1].startswith("/")
    assert value_after(qemu_img.measure_argv("a", "qcow2", "raw"), "-O") == "raw"
    argv = qemu_img.compare_argv("a", "raw", "b", "qcow2")
    assert "-U" in argv and "-s" not in argv
    assert (value_after(argv, "-f"), value_after(argv, "-F")) == ("raw", "qcow2")
    assert argv[-2:] == [os.path.abspath("a"), os.path.abspath("b")]
    assert "-s" in qemu_img.compare_argv("a", "raw", "b", "qcow2", strict=True)


def test_writes_are_never_force_shared() -> None:
    argv = qemu_img.check_argv("d.qcow2", "qcow2", "leaks")
    assert "-U" not in argv and value_after(argv, "-r") == "leaks"
    argv = qemu_img.convert_argv("s.raw", "raw", "d.qcow2", "qcow2", preallocation="falloc")
    assert "-U" not in argv
    assert (value_after(argv, "-f"), value_after(argv, "-O")) == ("raw", "qcow2")
    assert value_after(argv, "-S") == "4k"
    assert value_after(argv, "-o") == "compat=1.1,preallocation=falloc"
    argv = qemu_img.convert_argv("s.qcow2", "qcow2", "d.raw", "raw", sparse=False)
    assert value_after(argv, "-S") == "0" and "-o" not in argv  # compat is qcow2-only
    assert argv[-2:] == [os.path.abspath("s.qcow2"), os.path.abspath("d.raw")]


def test_long_jobs_get_cpu_for_their_timeout_and_keep_the_memory_cap() -> None:
    limits = qemu_img.long_limits(qemu_img.LONG_TIMEOUT)
    assert limits.cpu_seconds == qemu_img.LONG_TIMEOUT
    assert limits.address_space == qemu_img.LIMITS.address_space
    assert qemu_img.long_limits(1).cpu_seconds == qemu_img.LIMITS.cpu_seconds


def test_a_name_starting_with_a_dash_is_a_file(tmp_path: Path, monkeypatch) -> None:
    make_qcow2(tmp_path / "-U")
    monkeypatch.chdir(tmp_path)
    assert qemu_img.check("-U", "qcow2").clean
    assert qemu_img.info("-U", "qcow2").filename == str(tmp_path / "-U")


# --- check ---


def test_check_of_a_clean_qcow2(qcow2: Path) -> None:
    direct = qemu_img_json("check", "-U", "-f", "qcow2", qcow2)
    result = qemu_img.check(str(qcow2), "qcow2")
    assert result.clean and not result.needs_repair and result.repair_mode is None
    assert (result.leaks, result.corruptions, result.check_errors) == (0, 0, 0)
    assert result.filename == str(qcow2) and result.format == "qcow2"
    assert result.allocated_clusters == direct["allocated-clusters"] == MiB // CLUSTER
    assert result.total_clusters == direct["total-clusters"] == SIZE // CLUSTER
    assert result.image_end_offset == direct["image-end-offset"]


def test_check_reports_leaks_and_repair_fixes_them(tmp_path: Path) -> None:
    leaky = make_leaky(tmp_path / "leaky.qcow2")
    direct = qemu_img_run("check", "-U", "-f", "qcow2", "--output=json", leaky)
    assert direct.returncode == 3  # qemu-img's "leaks found" exit: a result, not a failure
    leaks = json.loads(direct.stdout)["leaks"]
    assert leaks == 1 + MiB // CLUSTER  # the L2 table and its 16 data clusters

    found = qemu_img.check(str(leaky), "qcow2")
    assert (found.leaks, found.corruptions) == (leaks, 0)
    assert not found.clean and found.repair_mode == "leaks"

    repaired = qemu_img.check(str(leaky), "qcow2", repair="leaks")
    assert (repaired.leaks_fixed, repaired.leaks, repaired.corruptions) == (leaks, 0, 0)
    assert qemu_img.check(str(leaky), "qcow2").clean
    assert qemu_img_run("check", "-U", "-f", "qcow2", leaky).returncode == 0


def test_a_dirty_lazy_refcounts_image_needs_a_full_repair(tmp_path: Path) -> None:
    """Lazy refcounts + qemu-io ``abort`` after a write: the dirty flag stays set and the
    refcounts were never written, so check sees referenced clusters with refcount 0."""
    path = make_qcow2(tmp_path / "dirty.qcow2", "lazy_refcounts=on", data=0)
    assert qemu_io(path, "qcow2", "write -P 0xcd 0 1M", "abort").returncode != 0
    assert qemu_img.info(str(path), "qcow2").dirty
    direct = qemu_img_json("check", "-U", "-f", "qcow2", path)
    found = qemu_img.check(str(path), "qcow2")
    assert found.corruptions == direct["corruptions"] > 0
    assert found.repair_mode == "all"

    with pytest.raises(ImageError, match="repair='all'") as failed:
        qemu_img.check(str(path), "qcow2", repair="leaks")
    assert str(path) in str(failed.value) and "\n" not in str(failed.value)

    repaired = qemu_img.check(str(path), "qcow2", repair="all")
    assert repaired.corruptions_fixed > 0 and repaired.corruptions == 0
    assert qemu_img.check(str(path), "qcow2").clean
    read = qemu_io(path, "qcow2", "read -P 0xcd 0 1M")
    assert read.returncode == 0 and "verification failed" not in read.stdout


def test_check_of_truncated_qcow2s(qcow2: Path, tmp_path: Path) -> None:
    os.truncate(qcow2, 300_000)  # the header survives, data clusters are gone
    direct = qemu_img_run("check", "-U", "-f", "qcow2", "--output=json", qcow2)
    assert direct.returncode == 2
    result = qemu_img.check(str(qcow2), "qcow2")
    assert result.corruptions == json.loads(direct.stdout)["corruptions"] > 0

    stub = tmp_path / "stub.qcow2"
    stub.write_bytes(qcow2.read_bytes()[:72])  # shorter than a qcow2 header
    with pytest.raises(ImageError, match="header too short") as failed:
        qemu_img.check(str(stub), "qcow2")
    assert str(failed.value).startswith(f"{stub}: qemu-img check failed")


def test_check_of_a_format_without_checks(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "disk.raw")
    assert qemu_img_run("check", "-U", "-f", "raw", raw).returncode == 63
    with pytest.raises(ImageError, match=f"^{raw}: .*no consistency check for raw"):
        qemu_img.check(str(raw), "raw")


def test_a_missing_file_is_an_image_error_naming_it(tmp_path: Path, qcow2: Path) -> None:
    gone = str(tmp_path / "gone.qcow2")
    calls = [
        lambda: qemu_img.info(gone),
        lambda: qemu_img.check(gone, "qcow2"),
        lambda: qemu_img.check(gone, "qcow2", repair="leaks"),
        lambda: qemu_img.measure(gone, "qcow2", "raw"),
        lambda: qemu_img.compare(str(qcow2), "qcow2", gone, "qcow2"),
        lambda: qemu_img.convert(gone, "qcow2", str(tmp_path / "out.raw"), "raw"),
    ]
    for call in calls:
        with pytest.raises(ImageError) as failed:
            call()
        message = str(failed.value)
        assert gone in message and "No such file" in message and "\n" not in message
    assert not (tmp_path / "out.raw").exists()


@pytest.fixture
def held(qcow2: Path) -> Iterator[Path]:
    """The qcow2 opened read-write by a qemu-io process, which holds qemu's write lock.

    qemu-io answers a read only once the image is open (probing the lock from outside instead
    would race it: a probe's shared lock can make qemu-io's own open fail)."""
    proc = subprocess.Popen(
        ["qemu-io", "-f", "qcow2", str(qcow2)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("read 0 512\n")
        proc.stdin.flush()
        assert "read 512/512 bytes" in proc.stdout.readline(), "qemu-io did not open the image"
        yield qcow2
    finally:
        proc.communicate("quit\n", timeout=10)


def test_a_locked_image_is_read_but_never_written(held: Path, tmp_path: Path) -> None:
    assert qemu_img.check(str(held), "qcow2").clean
    assert qemu_img.measure(str(held), "qcow2", "raw").required == SIZE
    with pytest.raises(ImageError, match="lock") as failed:
        qemu_img.check(str(held), "qcow2", repair="leaks")
    assert str(held) in str(failed.value)
    out = tmp_path / "copy.raw"
    with pytest.raises(ImageError, match="lock"):
        qemu_img.convert(str(held), "qcow2", str(out), "raw")
    assert not out.exists()


# --- compare ---


def test_compare_same_content_in_raw_and_qcow2(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "a.raw")
    qcow2 = tmp_path / "a.qcow2"
    assert qemu_img_run("convert", "-f", "raw", "-O", "qcow2", raw, qcow2).returncode == 0
    assert raw_sha256(qcow2, "qcow2") == sha256(raw)
    assert qemu_img_run("compare", "-f", "raw", "-F", "qcow2", raw, qcow2).returncode == 0
    assert qemu_img.compare(str(raw), "raw", str(qcow2), "qcow2")
    # strict also compares allocation status: the raw file's hole is not an unallocated cluster
    assert not qemu_img.compare(str(raw), "raw", str(qcow2), "qcow2", strict=True)
    twin = tmp_path / "twin.qcow2"
    twin.write_bytes(qcow2.read_bytes())
    assert qemu_img.compare(str(qcow2), "qcow2", str(twin), "qcow2", strict=True)


def test_compare_finds_a_one_byte_difference(tmp_path: Path) -> None:
    a = make_raw(tmp_path / "a.raw")
    b = tmp_path / "b.raw"
    data = bytearray(a.read_bytes())
    data[5_000_000] ^= 1
    b.write_bytes(data)
    assert sha256(a) != sha256(b)
    assert qemu_img_run("compare", "-f", "raw", "-F", "raw", a, b).returncode == 1
    assert not qemu_img.compare(str(a), "raw", str(b), "raw")


def test_compare_sizes_matter_only_when_strict(tmp_path: Path) -> None:
    a = make_raw(tmp_path / "a.raw")
    longer = tmp_path / "longer.raw"
    longer.write_bytes(a.read_bytes())
    os.truncate(longer, SIZE + MiB)  # the extra MiB reads as zeros
    assert qemu_img.compare(str(a), "raw", str(longer), "raw")
    assert not qemu_img.compare(str(a), "raw", str(longer), "raw", strict=True)
    assert qemu_img_run("compare", "-s", "-f", "raw", "-F", "raw", a, longer).returncode == 1


def test_compare_with_a_wrong_format_fails_clearly(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "a.raw")
    with pytest.raises(ImageError, match="not in qcow2 format"):
        qemu_img.compare(str(raw), "qcow2", str(raw), "raw")


# --- convert ---


def test_convert_round_trip_keeps_content(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "a.raw")
    qcow2, back = tmp_path / "a.qcow2", tmp_path / "back.raw"
    qemu_img.convert(str(raw), "raw", str(qcow2), "qcow2")
    qemu_img.convert(str(qcow2), "qcow2", str(back), "raw")
    info = qemu_img_json("info", "-U", qcow2)
    assert info["format"] == "qcow2" and info["format-specific"]["data"]["compat"] == "1.1"
    assert qemu_img.compare(str(raw), "raw", str(qcow2), "qcow2")
    assert qemu_img.compare(str(raw), "raw", str(back), "raw")
    assert raw_sha256(qcow2, "qcow2") == raw_sha256(back, "raw") == sha256(raw)
    assert os.stat(back).st_size == SIZE


def test_convert_falloc_allocates_everything(qcow2: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.raw"
    qemu_img.convert(str(qcow2), "qcow2", str(out), "raw", preallocation="falloc")
    assert allocated(out) >= SIZE == os.stat(out).st_size
    assert raw_sha256(qcow2, "qcow2") == sha256(out)


def test_convert_is_sparse_and_sparsifies_by_default(tmp_path: Path) -> None:
    src = make_raw(tmp_path / "src.raw", allocated=True)  # 63 MiB of written zeros
    assert allocated(src) >= SIZE
    raw, qcow2, dense = tmp_path / "s.raw", tmp_path / "s.qcow2", tmp_path / "dense.raw"
    qemu_img.convert(str(src), "raw", str(raw), "raw")
    qemu_img.convert(str(src), "raw", str(qcow2), "qcow2")
    qemu_img.convert(str(src), "raw", str(dense), "raw", sparse=False)
    assert allocated(raw) < 4 * MiB and allocated(qcow2) < 4 * MiB
    assert allocated(dense) >= SIZE
    assert sha256(raw) == sha256(dense) == sha256(src) == raw_sha256(qcow2, "qcow2")


def test_convert_metadata_preallocation_is_qcow2_only(qcow2: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.qcow2"
    qemu_img.convert(str(qcow2), "qcow2", str(out), "qcow2", preallocation="metadata")
    assert qemu_img_json("info", "-U", out)["format-specific"]["data"]["compat"] == "1.1"
    assert qemu_img.compare(str(qcow2), "qcow2", str(out), "qcow2")
    raw = tmp_path / "meta.raw"
    with pytest.raises(ImageError, match="metadata needs a qcow2"):
        qemu_img.convert(str(qcow2), "qcow2", str(raw), "raw", preallocation="metadata")
    assert not raw.exists()  # refused before qemu-img, which would leave an empty file


def test_convert_refuses_an_existing_destination(qcow2: Path, tmp_path: Path) -> None:
    dst = tmp_path / "taken.raw"
    dst.write_bytes(b"keep me")
    before = os.stat(dst)
    with pytest.raises(ImageError, match="already exists"):
        qemu_img.convert(str(qcow2), "qcow2", str(dst), "raw")
    after = os.stat(dst)
    assert dst.read_bytes() == b"keep me"
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        before.st_mtime_ns,
        before.st_size,
        before.st_ino,
    )
    link, target = tmp_path / "link.raw", tmp_path / "elsewhere.raw"
    link.symlink_to(target)  # dangling: qemu-img would create the target through it
    with pytest.raises(ImageError, match="already exists"):
        qemu_img.convert(str(qcow2), "qcow2", str(link), "raw")
    assert not target.exists()


def test_convert_timeout_names_both_images(qcow2: Path, tmp_path: Path) -> None:
    out = tmp_path / "slow.raw"
    with pytest.raises(CommandError, match="timed out") as failed:
        qemu_img.convert(str(qcow2), "qcow2", str(out), "raw", timeout=0.001)
    assert str(failed.value).startswith(f"{qcow2} -> {out}: ")


# --- measure ---


def test_measure_matches_qemu_img(qcow2: Path) -> None:
    direct = qemu_img_json("measure", "-U", "-f", "qcow2", "-O", "qcow2", qcow2)
    m = qemu_img.measure(str(qcow2), "qcow2", "qcow2")
    assert m.required >= MiB and m.fully_allocated >= SIZE
    assert (m.required, m.fully_allocated, m.bitmaps) == (
        direct["required"],
        direct["fully-allocated"],
        direct["bitmaps"],
    )
    full = qemu_img.measure(str(qcow2), "qcow2", "qcow2", preallocation="full")
    assert full.required == full.fully_allocated == m.fully_allocated
    raw = qemu_img.measure(str(qcow2), "qcow2", "raw")
    assert (raw.required, raw.fully_allocated, raw.bitmaps) == (SIZE, SIZE, None)


def test_measure_with_an_unknown_output_format(qcow2: Path) -> None:
    with pytest.raises(ImageError, match=f"^{qcow2}: .*Unknown file format 'qcow9'"):
        qemu_img.measure(str(qcow2), "qcow2", "qcow9")
