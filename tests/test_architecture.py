"""The project's own rules, checked on the source: who may import what, and no shell."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "auditor"
LAYERS = ("cli/", "adapters/", "report/")
ROOTS = {"nightly.py", "__main__.py", "__init__.py"}  # the nightly job and the entry points


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PKG)): imports(p) for p in PKG.rglob("*.py")}


def test_only_the_libvirt_adapter_imports_libvirt() -> None:
    users = {m for m, names in modules().items() if "libvirt" in names}
    assert users == {"adapters/libvirt.py"}


def test_only_the_runner_imports_subprocess() -> None:
    users = {m for m, names in modules().items() if "subprocess" in names}
    assert users == {"adapters/run.py"}


def services() -> dict[str, set[str]]:
    """Every module that is not the CLI, an adapter, the report layer or an entry point:
    collect, analyze, config, ops/*, history/*, models, units... whatever exists."""
    return {
        m: names for m, names in modules().items() if not m.startswith(LAYERS) and m not in ROOTS
    }


def test_the_service_list_is_not_empty_and_covers_the_packages() -> None:
    found = services()
    assert {"collect.py", "analyze.py", "ops/guards.py", "history/sqlite.py"} <= set(found)


def test_services_import_no_adapter_cli_or_report() -> None:
    forbidden = ("auditor.adapters", "auditor.cli", "auditor.report", "click", "libvirt")
    for mod, names in services().items():
        bad = {n for n in names if n.startswith(forbidden)}
        assert not bad, f"{mod} imports {bad}"


def test_only_the_cli_and_the_nightly_job_use_the_report_layer() -> None:
    for mod, names in modules().items():
        if mod.startswith(("cli/", "report/")) or mod == "nightly.py":
            continue
        assert not {n for n in names if n.startswith("auditor.report")}, mod


def test_the_nightly_job_builds_no_adapter() -> None:
    names = modules()["nightly.py"]
    assert not {n for n in names if n.startswith(("auditor.adapters", "auditor.cli", "click"))}


def test_report_depends_only_on_models() -> None:
    for mod, names in modules().items():
        if mod.startswith("report/"):
            ours = {n for n in names if n.startswith("auditor.")}
            allowed = {
                "auditor.models", "auditor.errors", "auditor.config", "auditor.thresholds",
                "auditor.units",
            }  # fmt: skip
            assert all(n in allowed or n.startswith("auditor.report") for n in ours), (mod, ours)


def test_never_shell_true() -> None:
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                assert not (isinstance(node.value, ast.Constant) and node.value.value), path


def test_adapters_depend_only_on_models_and_errors() -> None:
    for mod, names in modules().items():
        if mod.startswith("adapters/"):
            ours = {n for n in names if n.startswith("auditor.")}
            allowed = {"auditor.models", "auditor.errors"}
            assert all(n in allowed or n.startswith("auditor.adapters") for n in ours), (mod, ours)
