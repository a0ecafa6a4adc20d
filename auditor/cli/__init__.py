"""The command line: parse, call one service, render, exit code. No logic lives here.

Commands are imported when they are used (``LAZY``): their modules pull in libvirt, pandas,
jinja2 and the report package, which `auditor --help` and most commands never need.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, NoReturn

# libvirt reads its log settings once, when it is loaded, and by default prints its own
# warnings on stderr (e.g. three lines on a host whose own name does not resolve). Errors
# only, unless --debug is given or the user set up libvirt's logging. This runs before any
# command module (and so libvirt) is imported: keep it first.
if "--debug" not in sys.argv[1:] and not any(
    os.environ.get(v) for v in ("LIBVIRT_DEBUG", "LIBVIRT_LOG_FILTERS", "LIBVIRT_LOG_OUTPUTS")
):
    os.environ["LIBVIRT_DEBUG"] = "error"

import click
from click.shell_completion import CompletionItem

from auditor.adapters import signals
from auditor.cli.common import POOL, POOL_VOLUME, VOLUME, App
from auditor.errors import EXIT_ERROR, AuditorError, Interrupted
from auditor.journal import DEFAULT_STATE

if TYPE_CHECKING:
    from auditor.models import Target

# Every command: name -> (its module, the first sentence of its help, as `auditor --help`
# lists it without importing the module; tests/test_cli_tables.py checks the sentences).
LAZY: dict[str, tuple[str, str]] = {
    "status": ("auditor.cli.status", "One screen per host: the verdict, a bar per pool of the "
               "space used and provisioned against its capacity, unmanaged disks and skipped "
               "items."),
    "volumes": ("auditor.cli.inventory",
                "One row per disk: managed volumes and unmanaged domain disks."),
    "pools": ("auditor.cli.inventory", "One row per pool, per group of pools sharing a "
              "filesystem, and per filesystem holding unmanaged disks."),
    "scan": ("auditor.cli.inventory",
             "Image files and folders (recursively) through qemu-img only; no libvirt needed."),
    "report": ("auditor.cli.reporting", "Write report.html, pools.csv, volumes.csv, "
               "findings.csv and summary.json (atomically) and record a history snapshot."),
    "snapshot": ("auditor.cli.reporting",
                 "Collect and record one history snapshot, without rendering a report."),
    "history": ("auditor.cli.reporting",
                "Print the recorded series: one row per pool and snapshot, oldest first."),
    "plan": ("auditor.cli.planning", "Growth per pool and shared-fs group (a robust fit over "
             "the window), when it reaches its critical threshold and capacity, the worst case "
             "and the capacity to buy; with --add or --remove, the figures after that change "
             "beside now."),
    "audit": ("auditor.cli.audit",
              "Findings against the policy, worst first; --fix repairs what is safe to repair."),
    "pool": ("auditor.cli.ops",
             "Managed storage pools: list, inspect, define, build, start, stop, delete."),
    "vol": ("auditor.cli.ops", "Managed volumes: inspect, create, clone, resize, delete, "
            "upload, download, wipe, attach and detach, with the guards libvirt lacks."),
    "journal": ("auditor.cli.journal", "Print the journal of changes: an intent before each "
                "action, an outcome after."),
    "metrics": ("auditor.cli.metrics", "Prometheus metrics of every host: pools, levels, days "
                "to full, findings, host up."),
}  # fmt: skip


class Lazy(click.Group):
    """A group that imports a command's module when the command is used. Its ``commands``
    (click's mapping) imports them all: for introspection, as the tests do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        for name in LAZY:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._loaded.update(value)

    def _load(self, name: str) -> click.Command | None:
        if name not in self._loaded and name in LAZY:
            module = importlib.import_module(LAZY[name][0])
            for command in module.COMMANDS:
                _complete_names(command, (command.name or "",))
                self._loaded[command.name or ""] = command
        return self._loaded.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*LAZY, *(n for n in self._loaded if n not in LAZY)]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``LAZY``, shortened as click shortens help."""
        limit = formatter.width - 6 - max(len(n) for n in LAZY)
        rows = [
            (n, click.Command(n, help=h).get_short_help_str(limit)) for n, (_, h) in LAZY.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Command names from ``LAZY`` (importing nothing), then the group's options."""
        names = [
            CompletionItem(n, help=h) for n, (_, h) in LAZY.items() if n.startswith(incomplete)
        ]
        return names + click.Command.shell_complete(self, ctx, incomplete)


NEW_NAMES = {("pool", "define"), ("vol", "create"), ("vol", "clone"), ("vol", "upload")}


def _complete_names(command: click.Command, path: tuple[str, ...]) -> None:
    """Shell completion of the pool and volume names a command takes, by its parameters'
    names: ``pool``/``pool_name``/``pools``, a POOL/... metavar, ``pool X NAME`` and
    ``vol X POOL NAME`` (not where NAME is a new one), ``vol clone``'s SRC."""
    for param in command.params:
        if param.type is not click.STRING or param.name is None:
            continue
        new = path[:2] in NEW_NAMES
        if param.name in ("pool", "pools", "pool_name"):
            param.type = POOL
        elif (param.metavar or "").startswith("POOL/"):
            param.type = POOL_VOLUME
        elif path[0] == "pool" and param.name == "name" and not new:
            param.type = POOL
        elif path[0] == "vol" and (param.name == "source" or (param.name == "name" and not new)):
            param.type = VOLUME
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _complete_names(sub, (*path, name))


@click.group(
    cls=Lazy, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--connect", "-c", "uris", multiple=True, metavar="URI",
    help="libvirt URI; repeat for several hosts. Default: libvirt's default URI.",
)  # fmt: skip
@click.option(
    "--hosts", "hosts_file", metavar="FILE", envvar="AUDITOR_HOSTS", show_envvar=True,
    help="TOML file of [[host]] tables (name, uri, labels): the hosts to read. --connect "
    "given on the command line overrides AUDITOR_HOSTS.",
)  # fmt: skip
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1, max=1024), default=32, show_default=True,
    help="Hosts collected at once.",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
    metavar="SECONDS",
    help="Per host, from its connect to its last figure; a host not done by then is skipped.",
)  # fmt: skip
@click.option(
    "--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=20.0,
    show_default=True, metavar="SECONDS",
    help="Per host, for its connection to open; one that does not is skipped.",
)  # fmt: skip
@click.option(
    "--read-only", is_flag=True,
    help="Connect read-only: change nothing, not even a pool refresh (figures may be stale).",
)  # fmt: skip
@click.option(
    "--state", metavar="DIR", default=DEFAULT_STATE, show_default=True, envvar="AUDITOR_STATE",
    show_envvar=True,
    help="Folder of the journal of changes, the per-host locks and the volume figures kept "
    "between runs.",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks on errors (and libvirt's log).")
@click.version_option(package_name="auditor")
@click.pass_context
def cli(
    ctx: click.Context, uris: tuple[str, ...], hosts_file: str | None, jobs: int, timeout: float,
    connect_timeout: float, read_only: bool, state: str, debug: bool,
) -> int | None:  # fmt: skip
    """Audit libvirt/KVM virtual disks: thin vs preallocated, per-pool overcommit.

    On a terminal, `auditor` alone shows `auditor status`.

    Exit codes: 0 success; 1 the run completed but some items could not be read
    (listed on stderr and in the output); 2 usage, configuration, connection error or a
    refused operation; 128 + N interrupted by signal N (SIGINT 130, SIGHUP 129, SIGTERM 143).
    """
    from auditor.collect import Budget

    if ctx.resilient_parsing:
        return None
    budget = Budget(jobs=jobs, timeout=timeout, connect_timeout=connect_timeout)
    targets = functools.partial(_targets, ctx, uris, hosts_file)
    ctx.obj = App(targets, debug, read_only, state, budget=budget)
    if ctx.invoked_subcommand is not None:
        return None
    if not sys.stdout.isatty():
        click.echo(ctx.get_help(), err=True)
        ctx.exit(EXIT_ERROR)
    status = cli.get_command(ctx, "status")
    assert status is not None
    with status.make_context("status", [], parent=ctx) as sub:
        code: int = status.invoke(sub)
    return code


def _targets(ctx: click.Context, uris: tuple[str, ...], hosts_file: str | None) -> list[Target]:
    """The hosts to read: --connect's URIs, else the hosts file's, else libvirt's default."""
    from click.core import ParameterSource

    from auditor.models import Target

    once = [Target(u) for u in dict.fromkeys(uris)]  # a URI given twice is read once
    if uris and hosts_file:
        if ctx.get_parameter_source("hosts_file") is ParameterSource.ENVIRONMENT:
            return once
        raise click.UsageError("give --hosts or --connect, not both")
    if hosts_file:
        from auditor.hosts import load_hosts

        return list(load_hosts(hosts_file))
    return once or [Target(None)]


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: map every error to one line and a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    restore = signals.install()
    try:
        code = cli.main(args=args, prog_name="auditor", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("auditor: aborted", err=True)
        code = EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except AuditorError as exc:
        if debug:
            import traceback  # only here: it costs every run 8 ms to import

            traceback.print_exc()
        click.echo(f"auditor: error: {exc}", err=True)
        code = exc.exit_code
    except Interrupted as exc:
        click.echo(f"auditor: interrupted by {exc.name}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("auditor: interrupted", err=True)
        code = 130
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"auditor: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True
        )
        code = EXIT_ERROR
    finally:
        restore()
    sys.exit(code if isinstance(code, int) else 0)
