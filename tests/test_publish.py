"""Publishing a report: ``out`` holds exactly the old or exactly the new report at every phase,
whatever interrupts it (an exception, a real signal, SIGKILL), and the next publish cleans up.

Everything runs on the real filesystem; faults come in through publish's ``step`` hook, and
the state is checked independently: listings and sha256 of what is on disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.errors import Interrupted, PublishError
from auditor.report.publish import FILES, PHASES, Step, discard, publish, swap_in_two_steps

REPO = Path(__file__).resolve().parents[1]
BEFORE_SWAP = PHASES[: PHASES.index("swapped")]
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL)

# A publish in a child process that delivers a real signal to itself at one phase.
CHILD = """
import os, signal, sys
from pathlib import Path
from auditor.report.publish import FILES, publish, swap_in_two_steps
for s in (signal.SIGTERM, signal.SIGHUP):  # whatever the parent ignores, the default action
    signal.signal(s, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
mode, target, phase, sig, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3], *sys.argv[4:]
if mode.endswith("-cli"):  # the CLI's handlers: the signal raises Interrupted
    from auditor.adapters.signals import install
    install()
def step(name):
    if name == phase:
        os.kill(os.getpid(), int(sig))
if mode.startswith("publish"):
    publish(target, {f: f"{tag} {f}\\n".encode() for f in FILES}, step=step)
else:  # the fallback's rename pair in folder target, as publish would call it
    dfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    swap_in_two_steps(dfd, ".out.new-0000aaaa", "out", ".out.old-0000aaaa", step)
sys.exit(3)
"""


def report(tag: str) -> dict[str, bytes]:
    """Four report files whose contents name ``tag``."""
    return {f: f"{tag} {f}\n".encode() for f in FILES}


def sha(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def on_disk(folder: Path) -> dict[str, str] | None:
    """Every entry of ``folder`` with the sha256 of its contents; None if there is no folder."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def fault(phase: str, exc: BaseException) -> Step:
    """A step hook raising ``exc`` at ``phase``."""

    def step(name: str) -> None:
        if name == phase:
            raise exc

    return step


def run_child(mode: str, target: Path, phase: str, sig: int, tag: str) -> int:
    """Run CHILD; returns its exit code (negative: the signal that ended it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-c", CHILD, mode, str(target), phase, str(sig), tag]
    return subprocess.run(args, env=env, cwd=REPO, timeout=60, check=False).returncode


def expect(out: Path, phase: str, old: dict[str, bytes] | None) -> None:
    """``out`` is exactly the old report (or still missing) before the swap, the new after."""
    if phase in BEFORE_SWAP:
        assert on_disk(out) == (None if old is None else sha(old))
    else:
        assert on_disk(out) == sha(report("new"))


def settle(parent: Path, out: Path) -> None:
    """A following publish leaves ``out`` = the newest report and no leftovers."""
    published = publish(out, report("newest"))
    assert published.path == out and on_disk(out) == sha(report("newest"))
    assert listing(parent) == [out.name]


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture
def out(parent: Path) -> Path:
    return parent / "out"


@pytest.fixture
def old(out: Path) -> dict[str, bytes]:
    """An existing report at ``out``."""
    publish(out, report("old"))
    return report("old")


# --- faults inside the process ------------------------------------------------------------


INTERRUPTS = [KeyboardInterrupt(), Interrupted(signal.SIGTERM, "SIGTERM")]


@pytest.mark.parametrize("exc", INTERRUPTS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("existing", [True, False], ids=["over-old", "first"])
@pytest.mark.parametrize("phase", PHASES)
def test_interrupt_at_each_phase(
    parent: Path, out: Path, phase: str, existing: bool, exc: BaseException
) -> None:
    old = report("old") if existing else None
    if old:
        publish(out, old)
    with pytest.raises(type(exc)):
        publish(out, report("new"), step=fault(phase, exc))
    expect(out, phase, old)
    assert listing(parent) == (["out"] if on_disk(out) is not None else [])
    settle(parent, out)


@pytest.mark.parametrize("existing", [True, False], ids=["over-old", "first"])
@pytest.mark.parametrize("phase", PHASES)
def test_os_error_at_each_phase_gives_a_true_message(
    parent: Path, out: Path, phase: str, existing: bool
) -> None:
    old = report("old") if existing else None
    if old:
        publish(out, old)
    hook = fault(phase, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(PublishError, match="cannot write the report") as err:
        publish(out, report("new"), step=hook)
    expect(out, phase, old)
    message = str(err.value)
    assert "\n" not in message and "Input/output error" in message
    if phase not in BEFORE_SWAP:
        assert f"the new report is in place at {out}" in message
    elif old:
        assert "the previous report is unchanged" in message
    else:
        assert "none was published" in message
    settle(parent, out)


# --- real signals in a child process ------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("phase", PHASES)
def test_signal_at_each_phase_over_an_old_report(
    parent: Path, out: Path, old: dict[str, bytes], phase: str, sig: int
) -> None:
    assert run_child("publish", out, phase, sig, "new") == -sig
    expect(out, phase, old)
    settle(parent, out)


@pytest.mark.parametrize("phase", PHASES)
def test_sigterm_under_the_cli_handlers_at_each_phase(
    parent: Path, out: Path, old: dict[str, bytes], phase: str
) -> None:
    """With ``auditor.adapters.signals`` installed, SIGTERM raises Interrupted (exit 1 here)."""
    assert run_child("publish-cli", out, phase, signal.SIGTERM, "new") == 1
    expect(out, phase, old)
    settle(parent, out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("phase", PHASES)
def test_signal_at_each_phase_of_a_first_publish(
    parent: Path, out: Path, phase: str, sig: int
) -> None:
    assert run_child("publish", out, phase, sig, "new") == -sig
    expect(out, phase, None)
    settle(parent, out)


# --- leftovers of interrupted publishes -----------------------------------------------------


def leave(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_old_layout_leftover_is_restored_before_the_new_report(parent: Path, out: Path) -> None:
    """The old code's SIGTERM window: only ``.out.old-*`` and ``.out.new-*`` are left."""
    leave(parent / ".out.old-0123abcd", report("old"))
    leave(parent / ".out.new-0123abcd", dict(list(report("half").items())[:2]))
    seen: list[dict[str, str] | None] = []
    published = publish(out, report("new"), step=lambda p: seen.append(on_disk(out)))
    assert seen[PHASES.index("recovered")] == sha(report("old"))
    assert on_disk(out) == sha(report("new")) and listing(parent) == ["out"]
    assert any("restored the previous report" in n for n in published.notes)


def test_interrupted_restore_leaves_the_old_report(parent: Path, out: Path) -> None:
    leave(parent / ".out.old-0123abcd", report("old"))
    with pytest.raises(KeyboardInterrupt):
        publish(out, report("new"), step=fault("recovered", KeyboardInterrupt()))
    assert on_disk(out) == sha(report("old")) and listing(parent) == ["out"]


def test_the_newest_complete_old_leftover_is_restored(parent: Path, out: Path) -> None:
    older = leave(parent / ".out.old-000000aa", report("older"))
    os.utime(older / "summary.json", (1, 1))
    leave(parent / ".out.old-000000bb", report("old"))
    leave(parent / ".out.old-000000cc", dict(list(report("partial").items())[:3]))
    seen: list[dict[str, str] | None] = []
    publish(out, report("new"), step=lambda p: seen.append(on_disk(out)))
    assert seen[0] == sha(report("old")) and listing(parent) == ["out"]


def test_incomplete_leftovers_are_discarded_not_restored(parent: Path, out: Path) -> None:
    leave(parent / ".out.old-0123abcd", {"report.html": b"half"})
    leave(parent / ".out.new-4567abcd", report("staged but never swapped"))
    seen: list[dict[str, str] | None] = []
    publish(out, report("new"), step=lambda p: seen.append(on_disk(out)))
    assert seen[0] is None  # a .new- leftover is never restored
    assert on_disk(out) == sha(report("new")) and listing(parent) == ["out"]


def test_leftover_holding_other_files_keeps_them(parent: Path, out: Path, old: object) -> None:
    kept = leave(parent / ".out.new-0123abcd", report("old") | {"notes.txt": b"mine"})
    published = publish(out, report("new"))
    assert on_disk(kept) == sha({"notes.txt": b"mine"})
    assert [n for n in published.notes if "notes.txt" in n and str(kept) in n]
    assert on_disk(out) == sha(report("new"))


def test_names_that_are_not_our_leftovers_are_left_alone(parent: Path, out: Path) -> None:
    others = [".outer.new-0123abcd", ".out.new-notahex1", ".out.tmp-0123abcd", "out.new-0123abcd"]
    for name in others:
        leave(parent / name, report("other"))
    (parent / ".out.new-89abcdef").symlink_to(parent / others[0])
    publish(out, report("new"))
    assert listing(parent) == sorted([*others, ".out.new-89abcdef", "out"])
    assert all(on_disk(parent / n) == sha(report("other")) for n in others)


def test_discard_removes_report_files_only(tmp_path: Path) -> None:
    folder = leave(tmp_path / "x", report("old") | {"keep.txt": b"k"})
    (folder / "sub").mkdir()
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        why = discard(dfd, "x")
        assert why is not None and "keep.txt" in why and "sub" in why
        assert listing(folder) == ["keep.txt", "sub"]
        (folder / "keep.txt").unlink()
        (folder / "sub").rmdir()
        assert discard(dfd, "x") is None and listing(tmp_path) == []
        assert discard(dfd, "x") is None  # already gone
    finally:
        os.close(dfd)


# --- the target ------------------------------------------------------------------------------


def test_first_publish_creates_the_folder(parent: Path, out: Path) -> None:
    published = publish(out, report("new"))
    assert published.path == out and published.notes == ()
    assert on_disk(out) == sha(report("new")) and listing(parent) == ["out"]


def test_publish_over_an_existing_report(parent: Path, out: Path, old: object) -> None:
    inode = out.stat().st_ino
    published = publish(out, report("new"))
    assert published.notes == () and out.stat().st_ino != inode
    assert on_disk(out) == sha(report("new")) and listing(parent) == ["out"]


def test_symlinked_out_is_refused(parent: Path) -> None:
    real = parent / "real"
    publish(real, report("old"))
    link = parent / "out"
    link.symlink_to("real")
    with pytest.raises(PublishError) as err:
        publish(link, report("new"))
    message = str(err.value)
    assert "\n" not in message
    assert f"{link} is a symbolic link to real" in message and f"--out {real}" in message
    assert link.is_symlink() and os.readlink(link) == "real"
    assert on_disk(real) == sha(report("old")) and listing(parent) == ["out", "real"]


@pytest.mark.parametrize("phase", ["checked", "staged"])
def test_file_dropped_after_the_check_survives(
    parent: Path, out: Path, old: object, phase: str
) -> None:
    def drop(name: str) -> None:
        if name == phase:
            (out / "notes.txt").write_text("mine")

    published = publish(out, report("new"), step=drop)
    assert on_disk(out) == sha(report("new"))
    [kept] = [parent / n for n in listing(parent) if n != "out"]
    assert (kept / "notes.txt").read_text() == "mine" and listing(kept) == ["notes.txt"]
    assert [n for n in published.notes if str(kept) in n and "notes.txt" in n]
    again = publish(out, report("newest"))  # still kept, never deleted
    assert (kept / "notes.txt").read_text() == "mine" and again.notes


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """No entry can be added to, removed from or renamed in ``folder`` (root too)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(folder)], check=False).returncode:
        pytest.fail("chattr +i failed: the test needs a filesystem with immutable folders")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_read_only_parent_changes_nothing(parent: Path, out: Path, old: object) -> None:
    mode = stat.S_IMODE(parent.stat().st_mode)
    with read_only(parent), pytest.raises(PublishError) as err:
        publish(out, report("new"))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot write the report to {out}: ")
    assert "the previous report is unchanged" in message
    assert on_disk(out) == sha(report("old")) and listing(parent) == ["out"]
    assert stat.S_IMODE(parent.stat().st_mode) == mode


def test_other_files_than_the_report_are_refused(parent: Path, out: Path) -> None:
    with pytest.raises(PublishError, match=r"unexpected \.\./x.*no summary\.json"):
        publish(out, {**dict(list(report("new").items())[:3]), "../x": b""})
    assert not parent.exists() or listing(parent) == []


def test_a_path_naming_no_folder_is_refused(tmp_path: Path) -> None:
    for target in (Path("."), Path("/"), tmp_path / ".."):
        with pytest.raises(PublishError, match="names no folder"):
            publish(target, report("new"))
    assert listing(tmp_path) == []


def test_publishes_into_one_folder_wait_for_each_other(parent: Path, out: Path) -> None:
    """A publish holding the lock (here paused at ``staged``) is not taken for a leftover."""
    publish(out, report("old"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = (
        "import sys, time\nfrom pathlib import Path\n"
        "from auditor.report.publish import FILES, publish\n"
        "def step(p):\n    if p == 'staged':\n        print('staged', flush=True); time.sleep(1)\n"
        "publish(Path(sys.argv[1]), {f: b'child' for f in FILES}, step=step)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(out)], env=env, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdout.readline() == "staged\n"
        publish(out, report("new"))  # waits for the child's lock, then replaces its report
        assert child.wait(timeout=60) == 0
    assert on_disk(out) == sha(report("new")) and listing(parent) == ["out"]


# --- the fallback where folders cannot be exchanged --------------------------------------


@pytest.fixture
def pair(parent: Path, out: Path, old: object) -> Iterator[int]:
    """``out`` (old) and a staged new report, as publish has them just before the swap."""
    leave(parent / ".out.new-0000aaaa", report("new"))
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    yield dfd
    os.close(dfd)


def test_two_step_swap(parent: Path, out: Path, pair: int) -> None:
    swap_in_two_steps(pair, ".out.new-0000aaaa", "out", ".out.old-0000aaaa")
    assert on_disk(out) == sha(report("new"))
    assert on_disk(parent / ".out.old-0000aaaa") == sha(report("old"))
    settle(parent, out)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.EIO, "I/O")], ids=repr)
def test_two_step_failure_puts_the_old_report_back(
    parent: Path, out: Path, pair: int, exc: BaseException
) -> None:
    with pytest.raises(type(exc)):
        hook = fault("moved-aside", exc)
        swap_in_two_steps(pair, ".out.new-0000aaaa", "out", ".out.old-0000aaaa", hook)
    assert on_disk(out) == sha(report("old")) and listing(parent) == [".out.new-0000aaaa", "out"]
    settle(parent, out)


@pytest.mark.parametrize("sig", SIGNALS[:3], ids=lambda s: signal.Signals(s).name)
def test_two_step_holds_signals_until_both_renames_are_done(
    parent: Path, out: Path, pair: int, sig: int
) -> None:
    assert run_child("two-step", parent, "moved-aside", sig, "-") == -sig
    assert on_disk(out) == sha(report("new"))
    settle(parent, out)


def test_two_step_defers_the_cli_handlers(parent: Path, out: Path, pair: int) -> None:
    assert run_child("two-step-cli", parent, "moved-aside", signal.SIGTERM, "-") == 1
    assert on_disk(out) == sha(report("new"))
    settle(parent, out)


def test_sigkill_between_the_two_steps_is_recovered(parent: Path, out: Path, pair: int) -> None:
    assert run_child("two-step", parent, "moved-aside", signal.SIGKILL, "-") == -signal.SIGKILL
    assert on_disk(out) is None  # the one window the fallback cannot close...
    assert on_disk(parent / ".out.old-0000aaaa") == sha(report("old"))
    seen: list[dict[str, str] | None] = []
    publish(out, report("newest"), step=lambda p: seen.append(on_disk(out)))
    assert seen[0] == sha(report("old"))  # ...and the next publish restores it first
    assert on_disk(out) == sha(report("newest")) and listing(parent) == ["out"]
