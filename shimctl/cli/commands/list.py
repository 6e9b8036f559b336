"""`shimctl list`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import report_exit, run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("list", context_settings=CONTEXT)
@click.option(
    "--exit-code",
    is_flag=True,
    help=f"Exit {int(ExitCode.GARBAGE_FOUND)} when garbage is found (for a CI step).",
)
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(cli: CliContext, exit_code: bool) -> ExitCode:
    """Show every bundle, shim and leftover with its kind. Changes nothing."""

    def action(console: Console) -> ExitCode:
        from shimctl.reconcile.run import Reconciler

        rep = Reconciler(cli.settings()).list()
        console.report(rep)
        return report_exit(rep, garbage_code=exit_code)

    return run(cli, action)
