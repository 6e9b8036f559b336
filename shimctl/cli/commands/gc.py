"""`shimctl gc`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from shimctl import __version__
from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import report_exit, run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode, ShimctlError, Unknown

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("gc", context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option(
    "--min-age",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Act only on items older than this (a create in flight is younger).",
)
@click.option(
    "--kill-hung", is_flag=True, help="Stop shims that do not answer (SIGTERM, then SIGKILL)."
)
@click.option(
    "--stop-orphaned",
    is_flag=True,
    help="Stop running tasks containerd has no record of (no client can stop them).",
)
@click.option(
    "--delete-created",
    is_flag=True,
    help="Delete tasks stuck in created since before containerd started.",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help=f"Exit {int(ExitCode.GARBAGE_FOUND)} when garbage was found, cleaned or not "
    "(a CI step that fails the job which leaked shims).",
)
@click.option(
    "--remove-foreign-sockets",
    is_flag=True,
    help="Also remove stale sockets in the shared socket dir that are not provably this "
    "containerd's (another containerd's shim may own them).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option(
    "--metrics-file",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Write Prometheus metrics of this run to PATH (atomically), e.g. for node_exporter's "
    "textfile collector; written also when gc fails.",
)
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(
    cli: CliContext,
    dry_run: bool,
    min_age: str,
    kill_hung: bool,
    stop_orphaned: bool,
    delete_created: bool,
    exit_code: bool,
    remove_foreign_sockets: bool,
    quiet: bool,
    metrics_file: str | None,
) -> ExitCode:
    """Remove leaked, dead and orphaned shims and their leftovers; safe from cron."""

    def action(console: Console) -> ExitCode:
        from shimctl.ops import journal, metrics
        from shimctl.reconcile.run import Reconciler
        from shimctl.settings import parse_duration

        # A metrics path that cannot be written does not stop the cleaning: gc runs, then the
        # metrics failure is reported and fails the exit (a cron line or a unit shows it).
        target: Path | None = None
        metrics_error: ShimctlError | None = None
        if metrics_file:
            try:
                target = metrics.check_target(Path(metrics_file))
            except ShimctlError as err:
                metrics_error = err
        try:
            settings = cli.settings()
            with console.progress(enabled=not quiet) as bar:
                rep = Reconciler(settings, progress=bar).gc(
                    dry_run=dry_run,
                    min_age=parse_duration(min_age),
                    kill_hung=kill_hung,
                    stop_orphaned=stop_orphaned,
                    delete_created=delete_created,
                    remove_foreign_sockets=remove_foreign_sockets,
                )
        except (ShimctlError, OSError) as err:
            if target is not None:
                metrics.record_gc(target, None, version=__version__, run_error=str(err))
            raise
        journal.record_exits(settings, rep)  # the exits of the tasks it deleted, never lost
        if target is not None:
            try:
                metrics.record_gc(target, rep, version=__version__)
            except ShimctlError as err:
                metrics_error = err
            except OSError as err:
                metrics_error = Unknown(
                    f"cannot write --metrics-file {target}: {err.strerror or err}"
                )
        console.report(rep)
        code = report_exit(rep, garbage_code=exit_code)
        if metrics_error is not None:
            console.error(metrics_error, document=False)
            # A metrics file that was not written is the failure to show, unless actions failed.
            return code if code == ExitCode.ACTIONS_FAILED else metrics_error.exit_code
        return code

    return run(cli, action, quiet=quiet)
