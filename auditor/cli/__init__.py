"""The command line: parse, call one service, render, exit code. No logic lives here."""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn

# libvirt reads its log settings once, when it is loaded, and by default prints its own
# warnings on stderr (e.g. three lines on a host whose own name does not resolve). Errors
# only, unless --debug is given or the user set up libvirt's logging.
if "--debug" not in sys.argv[1:] and not any(
    os.environ.get(v) for v in ("LIBVIRT_DEBUG", "LIBVIRT_LOG_FILTERS", "LIBVIRT_LOG_OUTPUTS")
):
    os.environ["LIBVIRT_DEBUG"] = "error"

import click

from auditor.adapters import signals
from auditor.cli.common import App, group
from auditor.errors import EXIT_ERROR, AuditorError, Interrupted
from auditor.journal import DEFAULT_STATE


@click.group(cls=group(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--connect", "-c", "uris", multiple=True, metavar="URI",
    help="libvirt URI; repeat for several hosts. Default: libvirt's default URI.",
)  # fmt: skip
@click.option(
    "--read-only", is_flag=True,
    help="Connect read-only: change nothing, not even a pool refresh (figures may be stale).",
)  # fmt: skip
@click.option(
    "--state", metavar="DIR", default=DEFAULT_STATE, show_default=True, envvar="AUDITOR_STATE",
    show_envvar=True, help="Folder of the journal of changes and of the per-host locks.",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks on errors (and libvirt's log).")
@click.version_option(package_name="auditor")
@click.pass_context
def cli(
    ctx: click.Context, uris: tuple[str, ...], read_only: bool, state: str, debug: bool
) -> None:
    """Audit libvirt/KVM virtual disks: thin vs preallocated, per-pool overcommit.

    Exit codes: 0 success; 1 the run completed but some items could not be read
    (listed on stderr and in the output); 2 usage, configuration, connection error or a
    refused operation; 128 + N interrupted by signal N (SIGINT 130, SIGHUP 129, SIGTERM 143).
    """
    ctx.obj = App(uris=list(uris) or [None], debug=debug, read_only=read_only, state=state)


def _register() -> None:
    from auditor.cli import audit, inventory, journal, ops, reporting

    for command in (
        inventory.COMMANDS + reporting.COMMANDS + audit.COMMANDS + ops.COMMANDS + journal.COMMANDS
    ):
        cli.add_command(command)


_register()


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
