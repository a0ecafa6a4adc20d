"""Run the real ``auditor`` entry point in a subprocess, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def auditor(*args: str, user: str | None = None, timeout: float = 120) -> Ran:
    """``python -m auditor ARGS``; ``user`` runs it as another user (via setpriv)."""
    argv = [sys.executable, "-m", "auditor", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return Ran(p.returncode, p.stdout, p.stderr)
