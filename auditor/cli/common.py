"""What every command shares: the composition root (adapters), options and output.

Start-up is part of the interface: nothing heavy is imported here at module level (libvirt,
qemu-img's adapter, pandas, the report package); each is imported by the function that uses
it, so `auditor --help` and a command that needs none of them stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from auditor.config import DEFAULT_POLICY
from auditor.errors import EXIT_OK, EXIT_PARTIAL
from auditor.journal import DEFAULT_STATE

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from auditor.adapters.libvirt import LibvirtHost
    from auditor.collect import Budget, FleetProgress, Probes
    from auditor.interfaces import HostSource
    from auditor.models import Disk, Domain, Inventory, Pool, Skip, Summary, Target

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "csv", "json")


@dataclass
class App:
    """The composition root: the only place adapters are built."""

    find_targets: Callable[[], list[Target]]  # read when a command first asks (scan never does)
    debug: bool = False
    read_only: bool = False
    state: str = DEFAULT_STATE  # the journal, the per-host locks and the volume cache
    reuse: bool = True  # reuse libvirt's figures of unchanged files (see Reusing)
    budget: Budget | None = None  # jobs and timeouts of a collection (None: the defaults)

    @functools.cached_property
    def targets(self) -> list[Target]:
        """The hosts to read (--connect, --hosts, or libvirt's default)."""
        return self.find_targets()

    @property
    def uris(self) -> list[str | None]:
        return [t.uri for t in self.targets]

    def connect(self, target: Target) -> HostSource:
        """A connection for reading: read-write if allowed (to refresh pools), else read-only.
        On this machine, volume reads reuse libvirt's figures of files unchanged since."""
        from auditor.adapters.libvirt import LibvirtHost
        from auditor.collect import Budget

        share = (self.budget or Budget()).calls_per_host(len(self.targets))
        host = LibvirtHost.connect(
            target.uri, read_only=self.read_only, host=target.name, in_flight=share
        )
        return Reusing(host, self.state) if self.reuse and host.local else host

    def open_host(
        self, target: Target, *, write: bool = False, read_only: bool = False
    ) -> LibvirtHost:
        """``LibvirtHost.connect`` within --connect-timeout (a signal stops the wait); a host
        that does not answer is a ConnectError, and its connection, should it open later, is
        closed at once."""
        from auditor.adapters.libvirt import LibvirtHost
        from auditor.adapters.threads import within
        from auditor.collect import Budget
        from auditor.errors import ConnectError

        def opening() -> LibvirtHost:
            return LibvirtHost.connect(
                target.uri, write=write, read_only=read_only, host=target.name
            )

        limit = (self.budget or Budget()).connect_timeout
        host = within(opening, limit, lambda late: late.close())
        if host is None:
            raise ConnectError(
                f"{target.uri or 'the default libvirt URI'}: no answer within {limit:g} s "
                "while connecting (--connect-timeout)",
                "check that libvirtd runs there and the network reaches it",
            )
        return host

    def collect(self, *, refresh: bool = True, targets: list[Target] | None = None) -> Inventory:
        """Every host's inventory (or that of ``targets``), within the jobs and timeouts
        asked for; a progress line on a terminal when there are several hosts."""
        from auditor.collect import Budget, collect

        targets = self.targets if targets is None else targets
        shown = progress_line() if len(targets) > 1 and sys.stderr.isatty() else None
        try:
            return collect(
                targets, self.connect, self.probes, refresh=refresh,
                budget=self.budget or Budget(), progress=shown,
            )  # fmt: skip
        finally:
            if shown is not None:
                click.echo("\r\033[K", nl=False, err=True)

    @property
    def probes(self) -> Probes:
        from auditor.adapters import localfs, qemu_img
        from auditor.collect import Probes

        return Probes(images=qemu_img.info_many, fs=localfs)

    @property
    def hostname(self) -> str:
        return socket.gethostname()


class Reusing:
    """A local host whose volume reads reuse libvirt's descriptions of files unchanged since
    an earlier run (``LibvirtHost.read_volumes_reusing``), kept in the state folder as
    ``volumes-<hash of the URI>.json``. Only after a pool refresh in this run: without one,
    libvirt's figures may be older than the files, and every volume is asked of libvirt."""

    VERSION = 2  # of the entries' layout (LibvirtHost.read_volumes_reusing)

    def __init__(self, host: LibvirtHost, state: str) -> None:
        self._inner = host
        self.host, self.uri, self.local = host.host, host.uri, host.local
        self.read_only, self.read_only_reason = host.read_only, host.read_only_reason
        name = hashlib.sha256(host.uri.encode()).hexdigest()[:16]
        self.cache = Path(state) / f"volumes-{name}.json"
        self._refreshed_at: int | None = None
        self._every_pool = True

    def read_pools(
        self, *, refresh: bool, names: Collection[str] | None = None
    ) -> tuple[list[Pool], list[Skip]]:
        started = time.time_ns()
        found = self._inner.read_pools(refresh=refresh, names=names)
        self._refreshed_at = started if refresh and not self.read_only else None
        self._every_pool = names is None
        return found

    def read_volumes(self, pools: list[Pool]) -> tuple[list[Disk], list[Skip]]:
        """libvirt's figures; for files unchanged since, those it gave before."""
        if self._refreshed_at is None:
            return self._inner.read_volumes(pools)
        stamp = [self.VERSION, self.uri, self._inner.libvirt_version()]
        known = self._load(stamp)
        disks, skips, keep = self._inner.read_volumes_reusing(pools, known, self._refreshed_at)
        if not self._every_pool:  # some pools read again: the others' entries stay
            keep = known | keep
        if keep != known:
            self._save(stamp, keep)
        return disks, skips

    def read_domains(self) -> tuple[list[Domain], list[Skip]]:
        return self._inner.read_domains()

    def close(self) -> None:
        self._inner.close()

    def _load(self, stamp: list[Any]) -> dict[str, list[Any]]:
        """The kept descriptions, if the file is this URI's, of this format and libvirt."""
        try:
            doc = json.loads(self.cache.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("stamp") != stamp:
            return {}
        volumes = doc.get("volumes")
        return volumes if isinstance(volumes, dict) else {}

    def _save(self, stamp: list[Any], volumes: dict[str, list[Any]]) -> None:
        """Replace the file atomically (readable by its owner only); a state folder that
        cannot be written only costs the next run its speed."""
        tmp = None
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".volumes-", dir=self.cache.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump({"stamp": stamp, "volumes": volumes}, fh, separators=(",", ":"))
            os.replace(tmp, self.cache)
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def progress_line() -> Callable[[FleetProgress], None]:
    """Draw a collection's progress on stderr, one line redrawn in place: the share of hosts
    done, how many run and wait, and the slowest running host."""

    def draw(p: FleetProgress) -> None:
        width = 20
        filled = width * p.done // max(1, p.total)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} hosts"
        line += f" · {len(p.running)} running · {p.waiting} waiting"
        if p.running:
            name, phase, seconds = p.running[0]
            line += f" · slowest: {name} ({phase} {seconds:.0f} s)"
        cols = shutil.get_terminal_size().columns  # COLUMNS, else stdout's terminal, else 80
        click.echo("\r\033[K" + line[: max(10, cols - 1)], nl=False, err=True)

    return draw


# ---- shell completion of pool and volume names (click's completion) -----------------------


class Names(click.ParamType[str]):
    """Text, completed in the shell with the names of pools (``pool``), of the volumes of
    the command's POOL argument (``volume``), or POOL/VOLUME pairs (``pool/volume``), read
    read-only from the first --connect host (else the hosts file's first); nothing when it
    cannot be reached."""

    name = "text"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(click.STRING.convert(value, param, ctx))

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            found = self._names(ctx, incomplete)
        except Exception:  # completion must never print a traceback into the shell
            return []
        return [CompletionItem(n) for n in sorted(found) if n.startswith(incomplete)]

    def _names(self, ctx: click.Context, incomplete: str) -> list[str]:
        from auditor.adapters.libvirt import LibvirtHost

        params = ctx.find_root().params
        uris = params.get("uris") or (None,)
        if not params.get("uris") and params.get("hosts_file"):
            from auditor.hosts import load_hosts

            uris = (load_hosts(params["hosts_file"])[0].uri,)
        with LibvirtHost.connect(uris[0], read_only=True) as host:
            if self.what == "volume":
                return host.volume_names(ctx.params["pool_name"])
            pools = [p.name for p in host.read_pools(refresh=False)[0]]
            if self.what == "pool":
                return pools
            pool, slash, _ = incomplete.partition("/")
            if not slash:
                return [f"{p}/" for p in pools]
            return [f"{pool}/{v}" for v in host.volume_names(pool)]


POOL, VOLUME, POOL_VOLUME = Names("pool"), Names("volume"), Names("pool/volume")


def group() -> type[click.Group]:
    """A click group that lists commands in the order they were added."""

    class Ordered(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return list(self.commands)

    return Ordered


def format_option(f: F) -> F:
    return click.option(
        "--format", "-f", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
        help="table: human sizes (IEC); csv and json: integer bytes.",
    )(f)  # fmt: skip


def refresh_option(f: F) -> F:
    return click.option(
        "--no-refresh", "no_refresh", is_flag=True,
        help="Do not refresh active pools first (faster; figures as of libvirt's last refresh).",
    )(f)  # fmt: skip


def policy_option(f: F) -> F:
    return click.option(
        "--policy", "policy_path", type=click.Path(dir_okay=False), metavar="FILE",
        envvar="AUDITOR_POLICY", show_envvar=True,
        help="TOML policy file: [thresholds] and per-pool [pools.\"NAME\"] tables. "
        f"Default: {DEFAULT_POLICY} if it exists.",
    )(f)  # fmt: skip


# ---- the shape of a table: --columns, --wide, --sort, --reverse ----------------------------


@dataclass(frozen=True)
class View:
    """What the user asked of a table: columns (None: the command's defaults), sort, width."""

    columns: tuple[str, ...] | None = None
    sort: str | None = None
    reverse: bool = False
    wide: bool = False  # every column (unless --columns), nothing shortened
    every: bool = False  # the columns are every column (--wide without --columns)


def view_options(known: Sequence[str]) -> Callable[[F], F]:
    """--columns, --wide, --sort and --reverse, checked against ``known`` (an unknown column:
    exit 2 naming the known ones) and passed to the command as ``view``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(
            *args: Any, columns: str | None, wide: bool, sort: str | None, reverse: bool,
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            view = _view(known, columns, wide, sort, reverse, kwargs.get("fmt", "table"))
            return f(*args, view=view, **kwargs)

        options = (
            click.option("--columns", metavar="A,B,...",
                         help="Table columns, in this order: CSV names or headers."),
            click.option("--wide", "-w", is_flag=True,
                         help="Table: every column, nothing shortened."),
            click.option("--sort", "-s", metavar="COLUMN",
                         help="Sort rows by this column, in every format (empty values last)."),
            click.option("--reverse", "-r", is_flag=True, help="Sort descending."),
        )  # fmt: skip
        for option in reversed(options):
            command = option(command)
        return cast(F, command)

    return decorate


def _view(
    known: Sequence[str], columns: str | None, wide: bool, sort: str | None, reverse: bool,
    fmt: str,
) -> View:  # fmt: skip
    from auditor.report import table

    if "host" in known:  # rows of hosts carry a label_KEY column per host label (checked
        named = [*(columns or "").split(","), sort or ""]  # in emit, once they are known)
        labels = (table.label_name(n) for n in named)
        known = [*known, *dict.fromkeys(n for n in labels if n)]
    if fmt != "table" and columns:
        raise click.UsageError("--columns shapes the table: csv and json hold every column")
    try:
        chosen = tuple(table.choose(columns, known)) if columns else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--columns") from exc
    try:
        key = table.resolve(sort, known) if sort else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sort") from exc
    every = chosen is None and wide
    if every:
        chosen = tuple(known)
    return View(chosen, key, reverse, wide, every)


def terminal_width() -> int | None:
    """The terminal's width when stdout is one (``COLUMNS`` overrides); None otherwise."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def emit(
    key: str,
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    summary: Summary,
    *,
    view: View | None = None,
    shown: Sequence[str] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> int:
    """Print rows in the chosen format, skips on stderr (and in table/json output); exit code.

    csv and json hold ``columns``; the table shows the view's columns, else ``shown`` (else
    ``columns``), with the table-only values of ``extra`` (one dict per row), shortened to
    the terminal's width unless ``--wide``. A view's sort orders the rows in every format."""
    from auditor.models import LABEL_PREFIX
    from auditor.report import table
    from auditor.report.rows import SKIP_COLUMNS, skip_row, with_label_columns

    view = view or View()
    columns = with_label_columns(columns, summary) if "host" in columns else columns
    asked = {c for c in (*(view.columns or ()), view.sort or "") if c.startswith(LABEL_PREFIX)}
    if asked - set(columns):
        known = ", ".join(c for c in columns if c.startswith(LABEL_PREFIX)) or "none"
        raise click.BadParameter(
            f"no host has the label of {sorted(asked - set(columns))[0]!r} (label columns: "
            f"{known})",
            param_hint="--columns/--sort",
        )
    full = [r | x for r, x in zip(rows, extra, strict=True)] if extra else rows
    if view.sort:
        order = table.sort_rows(full, view.sort, view.reverse)
        rows, full = [rows[i] for i in order], [full[i] for i in order]
    skips = [skip_row(s) for s in summary.skips]
    if fmt == "json":
        doc = {
            "collected_at": summary.collected_at.isoformat(),
            "hosts": list(summary.hosts),
            key: rows,
            "skipped": skips,
            "notices": list(summary.notices),
        }
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "csv":
        click.echo(table.csv_text(rows, columns), nl=False)
    else:
        width = None if view.wide else terminal_width()
        cols = list(view.columns or shown or columns)
        labels = [c for c in columns if c.startswith(LABEL_PREFIX)]
        if view.every and "host" in cols:
            at = cols.index("host") + 1
            cols[at:at] = labels
        click.echo(table.render(full, cols, width))
        if skips:
            click.echo(f"\nSkipped ({len(skips)}):")
            click.echo(table.render(skips, SKIP_COLUMNS, width))
    return warn(summary)


def warn(summary: Summary) -> int:
    """Notices and skipped items on stderr; the exit code they imply."""
    for notice in summary.notices:
        click.echo(f"auditor: note: {notice}", err=True)
    for s in summary.skips:
        click.echo(f"auditor: skipped {s.kind} {s.name} on {s.host}: {s.reason}", err=True)
    return EXIT_PARTIAL if summary.skips else EXIT_OK


def colour_allowed() -> bool:
    """ANSI colours: only on a terminal, and not when NO_COLOR is set (no-color.org)."""
    return (
        sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )
