"""Run the real ``auditor`` entry point in a subprocess, as a user would.

Another user (``user=``) may not be able to enter the clone at all (e.g. one under /root),
and the venv's site-packages lives inside it: for them the package, its runtime dependencies
and their metadata are hard-linked (copied across filesystems or when not world-readable)
once per test process into a world-readable folder under /tmp, and run by the base
interpreter in isolated mode, with no venv and nothing from the clone on its path.
"""

from __future__ import annotations

import atexit
import importlib.metadata as metadata
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DIST = "auditor"
# Run ``-m auditor`` from SITE only: -I ignores PYTHONPATH, the user site and the cwd.
_LAUNCH = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module({!r}, "
_LAUNCH += "run_name='__main__', alter_sys=True)"


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def auditor(*args: str, user: str | None = None, timeout: float = 120) -> Ran:
    """``python -m auditor ARGS``; ``user`` runs it as another user (via setpriv), from a
    copy that user can read (see the module doc), in that copy's folder."""
    argv = [sys.executable, "-m", "auditor", *args]
    cwd = None
    if user is not None:
        site = portable_site()
        cwd = site.parent
        launch = [base_python(), "-I", "-c", _LAUNCH.format(DIST), str(site), *args]
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *launch]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    return Ran(p.returncode, p.stdout, p.stderr)


def base_python() -> str:
    """The interpreter the venv was made from (the venv's own python lives in the clone)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def runtime_distributions(name: str = DIST) -> list[metadata.Distribution]:
    """``name`` and every distribution it needs at run time (no extras), installed here."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        key = todo.pop().lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(key)
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _place(src: Path, dest: Path) -> None:
    """Hard-link src at dest if others can read it and it is on the same filesystem; else
    copy it, readable by all."""
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if src.stat().st_mode & stat.S_IROTH:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copy2(src, dest)
    dest.chmod(dest.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _project_packages() -> dict[str, Path]:
    """This project's packages (pyproject's list) -> the folder each is imported from here
    (``auditor.templates`` is the repository's ``templates``)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found: dict[str, Path] = {}
    for package in setuptools["packages"]:
        spec = importlib.util.find_spec(package)
        assert spec and spec.submodule_search_locations, f"cannot locate package {package}"
        found[package] = Path(next(iter(spec.submodule_search_locations)))
    return found


def build_site(site: Path) -> None:
    """Fill ``site`` with this project's packages, its runtime dependencies and metadata."""
    for package, folder in _project_packages().items():
        for src in folder.iterdir():
            if src.is_file():
                _place(src, site / package.replace(".", "/") / src.name)
    project, *dependencies = runtime_distributions()
    # The project may be an editable install (or found as the clone's egg-info): its
    # metadata only, for importlib.metadata.version().
    info = site / f"{DIST}-{project.version}.dist-info"
    info.mkdir(mode=0o755)
    text = project.read_text("METADATA") or project.read_text("PKG-INFO")
    assert text, f"no metadata for {DIST}"
    (info / "METADATA").write_text(text)
    for dist in dependencies:
        root = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file))).resolve()
            if src.is_relative_to(root) and src.is_file():  # not the venv's bin/ scripts
                _place(src, site / src.relative_to(root))


@cache
def portable_site() -> Path:
    """A world-readable copy of what ``python -m auditor`` imports, removed at exit."""
    top = Path(tempfile.mkdtemp(prefix="auditor-as-user-", dir="/tmp"))
    atexit.register(shutil.rmtree, top, ignore_errors=True)
    top.chmod(0o755)
    site = top / "site"
    site.mkdir(mode=0o755)
    build_site(site)
    for folder in (site, *(p for p in site.rglob("*") if p.is_dir())):
        folder.chmod(0o755)
    return site
