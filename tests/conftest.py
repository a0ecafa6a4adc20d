"""Fixtures for tests against the real libvirtd and qemu-img (the bed lives in testbed.py).

Any test that uses `libvirtd` or a fixture built on it (`libvirt_conn`, `workspace`, `bed`,
`scratch_pool`) is marked `libvirtd` automatically. A missing daemon is an error, not a skip.
"""

import os
import tempfile
from collections.abc import Iterator

import golden
import libvirt
import pytest
import testbed


def pytest_configure(config: pytest.Config) -> None:
    """Refuse AUDITOR_REGEN_GOLDEN=1 in CI before any test runs; give this run a state folder
    (journal, locks) of its own, which every auditor the tests run inherits."""
    golden.refuse_regen_in_ci()
    os.environ["AUDITOR_STATE"] = tempfile.mkdtemp(prefix="auditor-state-")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the daemon, before `-m` selection happens."""
    for item in items:
        if "libvirtd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.libvirtd)


@pytest.fixture(scope="session")
def libvirtd() -> None:
    """Ensure libvirtd answers on qemu:///system (starting it with scripts/testbed.sh)."""
    testbed.ensure_libvirtd()


@pytest.fixture(scope="session")
def libvirt_conn(libvirtd: None) -> Iterator[libvirt.virConnect]:
    """A read-write connection to qemu:///system."""
    conn = libvirt.open(testbed.URI)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def workspace(libvirt_conn: libvirt.virConnect) -> Iterator[testbed.Workspace]:
    """This run's name prefix and temp folder; leftovers of crashed runs are removed first."""
    with testbed.open_workspace(libvirt_conn) as ws:
        yield ws


@pytest.fixture(scope="session")
def bed(libvirt_conn: libvirt.virConnect, workspace: testbed.Workspace) -> Iterator[testbed.Bed]:
    """The shared, read-only test bed: pools, images, a running and a shut-off domain."""
    with testbed.build_bed(libvirt_conn, workspace) as built:
        yield built


@pytest.fixture
def scratch_pool(
    libvirt_conn: libvirt.virConnect, workspace: testbed.Workspace
) -> Iterator[testbed.PoolSpec]:
    """A fresh, empty, active dir pool, removed with its volumes after the test."""
    with testbed.scratch_pool(libvirt_conn, workspace) as spec:
        yield spec
