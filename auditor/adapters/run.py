"""The only module that runs subprocesses: argv lists, timeouts, resource limits, clear errors."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from auditor.errors import CommandError


@dataclass(frozen=True)
class Limits:
    """Caps for a child process, applied with util-linux ``prlimit`` (as OpenStack does)."""

    address_space: int = 1 << 30  # bytes of virtual memory
    cpu_seconds: int = 30


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(argv: list[str], *, timeout: float = 60, limits: Limits | None = None) -> Result:
    """Run ``argv`` (never through a shell) and return its output; raise only if it cannot run."""
    full = list(argv)
    if limits is not None:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise CommandError("prlimit not found", "install util-linux")
        full = [prlimit, f"--as={limits.address_space}", f"--cpu={limits.cpu_seconds}", "--", *full]
    try:
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{argv[0]}: command not found", "run `make setup`") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{argv[0]} timed out after {timeout:g} s") from exc
    return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
