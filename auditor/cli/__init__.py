"""The command line: parse, call one service, render, exit code. No logic lives here."""

from __future__ import annotations

import sys
import traceback
from typing import NoReturn

import click

from auditor.cli.common import App, group
from auditor.errors import EXIT_ERROR, AuditorError


@click.group(cls=group(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--connect", "-c", "uris", multiple=True, metavar="URI",
    help="libvirt URI; repeat for several hosts. Default: libvirt's default URI.",
)  # fmt: skip
@click.option(
    "--read-only", is_flag=True,
    help="Connect read-only: change nothing, not even a pool refresh (figures may be stale).",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="auditor")
@click.pass_context
def cli(ctx: click.Context, uris: tuple[str, ...], read_only: bool, debug: bool) -> None:
    """Audit libvirt/KVM virtual disks: thin vs preallocated, per-pool overcommit.

    Exit codes: 0 success; 1 the run completed but some items could not be read
    (listed on stderr and in the output); 2 usage, configuration, connection error or a
    refused operation.
    """
    ctx.obj = App(uris=list(uris) or [None], debug=debug, read_only=read_only)


def _register() -> None:
    from auditor.cli import inventory, ops, reporting

    for command in inventory.COMMANDS + reporting.COMMANDS + ops.COMMANDS:
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: map every error to one line and a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
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
    sys.exit(code if isinstance(code, int) else 0)
