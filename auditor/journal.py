"""The journal of mutations and the per-host lock, in the state folder.

Every mutating action writes an *intent* record before it starts and an *outcome* record when
it ends (JSON lines, fsynced). An intent without an outcome is an action that was killed
(SIGKILL, power loss): its ``leftovers`` name what it may have left (a temporary file, a new
volume), and ``made`` records prove what this run created. A per-host lock (``flock``) keeps
two auditor runs from planning and acting on one host at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.errors import StateError

DEFAULT_STATE = "/var/lib/auditor"
JOURNAL = "journal.jsonl"
PHASES = ("intent", "made", "outcome")


@dataclass(frozen=True)
class Record:
    """One line of the journal."""

    id: str  # shared by the records of one action
    phase: str  # intent, made (something this action created), outcome
    time: str  # ISO-8601 UTC
    host: str
    action: str  # "vol upload", ...
    subject: str  # POOL/VOLUME, POOL or DOMAIN
    before: Mapping[str, Any] = field(default_factory=dict)  # figures (intent)
    after: Mapping[str, Any] = field(default_factory=dict)  # figures expected or measured
    leftovers: tuple[str, ...] = ()  # what a killed run may leave (intent)
    made: Mapping[str, Any] = field(default_factory=dict)  # proof of what was created
    outcome: str = ""  # done, failed, interrupted, cleaned up (outcome)
    message: str = ""
    pid: int = 0  # the process that wrote it: an intent of a live process is not killed

    @classmethod
    def parse(cls, line: str) -> Record | None:
        """A record, or None for a line a crash cut short."""
        try:
            doc = json.loads(line)
            doc["leftovers"] = tuple(doc.get("leftovers", ()))
            return cls(**doc)
        except (ValueError, TypeError):
            return None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Journal:
    """Append-only JSON lines in ``folder/journal.jsonl``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL

    def append(self, record: Record) -> None:
        line = (json.dumps(asdict(record), default=str) + "\n").encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(
                f"cannot write the journal {self.path}: {exc.strerror}",
                "pass --state DIR with a folder you can write",
            ) from exc

    def records(self, since: datetime | None = None) -> list[Record]:
        """Every record, oldest first (from ``since`` on)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read the journal {self.path}: {exc.strerror}") from exc
        found = [r for r in map(Record.parse, text.splitlines()) if r is not None]
        return [r for r in found if since is None or datetime.fromisoformat(r.time) >= since]

    def incomplete(self) -> list[Record]:
        """Intents that have no outcome and whose process is gone: actions that were killed
        (an action still running in another process is not one)."""
        records = self.records()
        ended = {r.id for r in records if r.phase == "outcome"}
        return [
            r for r in records if r.phase == "intent" and r.id not in ended and not _alive(r.pid)
        ]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (0: not recorded)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Entry:
    """An action being journalled: ``made`` and ``finish`` add its records."""

    journal: Journal
    intent: Record

    def made(self, what: Mapping[str, Any]) -> None:
        self.journal.append(self._next("made", made=what))

    def finish(
        self, outcome: str, after: Mapping[str, Any] | None = None, message: str = ""
    ) -> None:
        self.journal.append(
            self._next("outcome", after=after or {}, outcome=outcome, message=message)
        )

    def _next(self, phase: str, **values: Any) -> Record:
        base = asdict(self.intent) | {"phase": phase, "time": now(), "leftovers": ()}
        return Record(**(base | {"before": {}, "after": {}} | values))


@contextmanager
def journalled(
    journal: Journal,
    *,
    host: str,
    action: str,
    subject: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    leftovers: tuple[str, ...] = (),
) -> Iterator[Entry]:
    """Write the intent, yield; an exception writes a failed (or interrupted) outcome. The
    caller writes the ``done`` outcome with the measured figures."""
    intent = Record(secrets.token_hex(8), "intent", now(), host, action, subject,
                    before, after, leftovers, pid=os.getpid())  # fmt: skip
    journal.append(intent)
    entry = Entry(journal, intent)
    try:
        yield entry
    except Exception as exc:
        entry.finish("failed", message=str(exc))
        raise
    except BaseException as exc:
        entry.finish("interrupted", message=str(exc) or type(exc).__name__)
        raise


@contextmanager
def host_lock(
    folder: str | Path, key: str, uri: str, waiting: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold the lock of the host ``key`` (its identity: one lock however its URI ``uri`` is
    spelled); if another run holds it, say so (``waiting`` hears who) and wait for it."""
    locks = Path(folder) / "locks"
    path = locks / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".lock")
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot use the state folder {folder}: {exc.strerror}",
            "pass --state DIR with a folder you can write",
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(os.pread(fd, 200, 0).decode(errors="replace").strip() or str(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {uri}\n".encode())
        yield path
    finally:
        os.close(fd)
