"""``auditor metrics``: Prometheus metrics of every host (--connect or --hosts), written once
(node_exporter textfile format) or served on /metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import click

from auditor.adapters.threads import in_threads
from auditor.analyze import analyze
from auditor.cli.common import App, policy_option, refresh_option
from auditor.cli.reporting import HISTORY
from auditor.collect import distinct
from auditor.config import Config, load
from auditor.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, AuditorError
from auditor.history import open_history
from auditor.models import Finding, HostInventory, Inventory, Summary, Target
from auditor.report import metrics as prom
from auditor.report.metrics import HostLabels, HostStatus, PoolKey, Reading


def host_labels(app: App) -> HostLabels:
    """Each host's own labels, from the hosts file (none for a --connect host)."""
    known = {t.name: dict(t.labels) for t in app.targets if t.name}
    return lambda host: known.get(host, {})


@dataclass
class Reader:
    """What one collection reads: the hosts (each on its own, timed, within its timeout), the
    audit's findings and, with a history, the days to full; what could not be read goes to
    ``warn``."""

    app: App
    config: Config
    refresh: bool
    audit: bool
    history: str | None
    warn: Callable[[str], None]
    names: dict[str, str] = field(default_factory=dict)  # URI -> host name, as last read
    down: set[str] = field(default_factory=set)  # hosts down at the last collection

    def __call__(self) -> Reading:
        at = datetime.now(UTC)
        targets = self.app.targets
        jobs = self.app.budget.jobs if self.app.budget else len(targets)
        read = in_threads(self._host, targets, min(jobs, len(targets)))  # a signal stops it
        hosts = distinct([h for found, _ in read if found is not None for h in found.hosts])
        names = {h.uri: h.host for h in hosts}  # two hosts of one name are told by their URIs
        statuses = tuple(replace(st, host=names.get(st.uri, st.host)) for _, st in read)
        summary = analyze(Inventory(hosts=hosts)) if hosts else None
        return Reading(at, statuses, summary, self._findings(summary), self._days_to_full(summary))

    def _host(self, target: Target) -> tuple[Inventory | None, HostStatus]:
        """One host, timed from connecting to its last read; unreachable or late: down."""
        shown, uri = target.label, target.uri or "default"
        started = time.monotonic()
        try:
            found = self.app.collect(refresh=self.refresh, targets=[target])
        except AuditorError as exc:
            if shown not in self.down:  # said once, not at every collection
                self.warn(f"host {shown} is down: {exc}")
            self.down.add(shown)
            return None, HostStatus(uri, self._name(target), False, time.monotonic() - started)
        if shown in self.down:
            self.down.discard(shown)
            self.warn(f"host {shown} is up again")
        host: HostInventory = found.hosts[0]
        self.names[uri] = host.host
        return found, HostStatus(host.uri, host.host, True, time.monotonic() - started)

    def _name(self, target: Target) -> str:
        """A down host's name: its hosts-file name, as last read, else the URI's host, else
        this machine's."""
        remote = urlsplit(target.uri or "").hostname
        known = target.name or self.names.get(target.uri or "default")
        return known or (remote if remote and remote != "localhost" else socket.gethostname())

    def _findings(self, summary: Summary | None) -> tuple[Finding, ...] | None:
        if not self.audit or summary is None:
            return None
        from auditor.adapters import qemu_img
        from auditor.audit import Readers, audit, gather
        from auditor.journal import Journal

        readers = Readers(qemu_img.check_many, self.app.probes.fs)
        return tuple(audit(gather(summary, self.config, readers, Journal(self.app.state))))

    def _days_to_full(self, summary: Summary | None) -> dict[PoolKey, float]:
        """Days to full of each pool and group, as ``auditor plan`` works them out."""
        if self.history is None or summary is None:
            return {}
        from auditor import planning  # only with --history

        out: dict[PoolKey, float] = {}
        try:
            with open_history(self.history, create=False) as db:
                for host in summary.hosts:
                    end = db.newest(host)
                    if end is None:
                        continue
                    series = db.series(host=host, since=end - planning.WINDOW, until=end)
                    for p in planning.plan(series, self.config, end=end).pools:
                        if p.days_to_full is not None:
                            key = (p.newest.host, p.newest.pool, p.newest.type)
                            out[key] = round(float(p.days_to_full), 3)
        except AuditorError as exc:
            self.warn(f"no days to full: {exc}")
        return out


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    try:
        return None if value is None else prom.parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _once(reader: Reader, labels: HostLabels, out: Path | None) -> int:
    """Collect, write (or print) the metrics; the exit code."""
    problems: list[str] = []
    reader.warn = problems.append
    reading = reader()
    data = prom.render(prom.families(reading, reader.config, labels))
    if out is None:
        click.echo(data.decode(), nl=False)
    else:
        try:
            prom.write_textfile(out, data)
        except OSError as exc:
            raise AuditorError(f"cannot write {out}: {exc.strerror}") from exc
    for text in problems:
        click.echo(f"auditor: {text}", err=True)
    skips = reading.summary.skips if reading.summary else ()
    for s in skips:
        click.echo(f"auditor: skipped {s.kind} {s.name} on {s.host}: {s.reason}", err=True)
    if not any(h.up for h in reading.hosts):
        return EXIT_ERROR
    return EXIT_PARTIAL if problems or skips else EXIT_OK


def _listen(
    reader: Reader, labels: HostLabels, address: tuple[str, int], interval: float,
    max_requests: int | None,
) -> int:  # fmt: skip
    """Serve /metrics from the last collection until interrupted (or ``max_requests``)."""
    reader.warn = lambda text: click.echo(f"auditor: {text}", err=True)

    def failed(exc: Exception) -> None:
        click.echo(f"auditor: collection failed, serving the previous one: {exc}", err=True)

    latest = prom.Latest(lambda: prom.families(reader(), reader.config, labels), interval, failed)
    try:
        server = prom.listener(address, latest)  # bound before the first collection
    except OSError as exc:
        raise AuditorError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror}") from exc
    try:
        latest.start()
        click.echo(f"serving {prom.url_of(server)} (collecting every {interval:g} s)")
        prom.serve(server, max_requests)
    finally:
        latest.stop()
        server.server_close()
    return EXIT_OK


@click.command()
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Write the metrics to FILE atomically (node_exporter's textfile collector reads "
    "*.prom files). Default: stdout.",
)  # fmt: skip
@click.option(
    "--listen", metavar="HOST:PORT", callback=_address,
    help="Serve /metrics on this address (only it), e.g. 127.0.0.1:9177, instead of writing.",
)  # fmt: skip
@click.option(
    "--interval", type=click.FloatRange(min=1), default=60, show_default=True, metavar="SECONDS",
    help="With --listen: collect at most this often; a scrape gets the last collection.",
)  # fmt: skip
@click.option(
    "--max-requests", type=click.IntRange(min=1), metavar="N",
    help="With --listen: stop after answering N requests (checks, tests).",
)  # fmt: skip
@click.option(
    "--history", "history_path", type=HISTORY, metavar="PATH|URL",
    help="History (SQLite file or postgresql:// URL) for auditor_pool_days_to_full. Without "
    "it, that metric has no samples.",
)  # fmt: skip
@click.option(
    "--audit/--no-audit", "do_audit", default=True, show_default=True,
    help="Count the audit's findings (auditor_findings); runs qemu-img check on idle qcow2s.",
)  # fmt: skip
@policy_option
@refresh_option
@click.pass_obj
def metrics(
    app: App, out: Path | None, listen: tuple[str, int] | None, interval: float,
    max_requests: int | None, history_path: str | None, do_audit: bool,
    policy_path: str | None, no_refresh: bool,
) -> int:  # fmt: skip
    """Prometheus metrics of every host: pools, levels, days to full, findings, host up. Exit
    1 if some items could not be read, 2 if no host could."""
    if listen and out:
        raise click.UsageError("--out writes once, --listen serves: give one of them")
    if not listen and max_requests:
        raise click.UsageError("--max-requests needs --listen")
    config = load(policy_path)
    reader = Reader(app, config, not no_refresh, do_audit, history_path, lambda _: None)
    labels = host_labels(app)
    if listen:
        return _listen(reader, labels, listen, interval, max_requests)
    return _once(reader, labels, out)


COMMANDS = [metrics]
