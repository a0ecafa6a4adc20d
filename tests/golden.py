"""Golden files (regenerate with AUDITOR_REGEN_GOLDEN=1), HTML outlines, a fixed host name."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from clirun import Ran

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
DATA = ROOT / "tests" / "data"
REGEN = os.environ.get("AUDITOR_REGEN_GOLDEN") == "1"

_AS_HOST = (
    "import socket, sys; socket.sethostname(sys.argv.pop(1)); "
    "from auditor.cli import main; main(sys.argv[1:])"
)


def auditor_on(host: str, *args: str, cwd: Path | None = None) -> Ran:
    """``auditor ARGS`` in a new UTS namespace whose host name is ``host``: libvirt's test
    driver reports the machine's host name, so this makes its output the same everywhere."""
    argv = ["unshare", "--user", "--map-root-user", "--uts", sys.executable, "-c", _AS_HOST]
    p = subprocess.run(
        [*argv, host, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    return Ran(p.returncode, p.stdout, p.stderr)


def uri_of(name: str) -> str:
    return f"test://{DATA / name}"


def check(name: str, text: str) -> None:
    """Compare ``text`` with golden file ``name`` (or rewrite it when regenerating)."""
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden file {path}: run with AUDITOR_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file (AUDITOR_REGEN_GOLDEN=1)"


KEEP = ("id", "class", "role", "scope", "aria-label", "hidden", "data-level", "data-type",
        "data-filter", "data-pool", "data-prov", "data-managed")  # fmt: skip
VOID = {"meta", "link", "br", "hr", "img", "input", "rect", "line", "col", "source", "wbr"}


class Outline(HTMLParser):
    """The element tree with its structural attributes and text; no CSS, JS or geometry."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.depth = 0
        self.skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kept = " ".join(f"{k}={v!r}" if v is not None else k for k, v in attrs if k in KEEP)
        self.lines.append("  " * self.depth + f"<{tag}{' ' + kept if kept else ''}>")
        self.skip = tag in ("style", "script")
        if tag not in VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            self.depth -= 1
        self.skip = False

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text and not self.skip:
            self.lines.append("  " * self.depth + repr(text))


def outline(html: str) -> str:
    parser = Outline()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.lines) + "\n"
