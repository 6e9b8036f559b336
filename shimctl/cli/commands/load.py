"""`shimctl load`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import report_exit, run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("load", context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Run even though a containerd answers at --address.")
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(cli: CliContext, dry_run: bool, force: bool) -> ExitCode:
    """containerd's startup reconciliation, on demand (for a stopped containerd)."""

    def action(console: Console) -> ExitCode:
        from shimctl.reconcile.run import Reconciler

        settings = cli.settings()
        with console.progress() as bar:
            rep = Reconciler(settings, progress=bar).load(dry_run=dry_run, force=force)
        console.report(rep)
        return report_exit(rep)

    return run(cli, action)
