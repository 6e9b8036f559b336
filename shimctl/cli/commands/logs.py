"""`shimctl logs ID`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.completion import complete_task_id
from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("logs", context_settings=CONTEXT)
@click.argument("task_id", metavar="ID", shell_complete=complete_task_id)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep reading until interrupted (or the bundle is gone)."
)
@click.option(
    "--idle",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="Without --follow: stop once nothing arrived for this long.",
)
@global_options_after()
@pass_cli
def command(cli: CliContext, task_id: str, follow: bool, idle: str) -> ExitCode:
    """Copy what task ID's shim writes to its log fifo to stdout, as containerd does.

    Only what the shim writes while this runs is seen (start shims with --debug for more).
    """

    def action(console: Console) -> ExitCode:
        from shimctl.ops import logs as shim_logs
        from shimctl.settings import parse_duration

        idle_s = parse_duration(idle)
        console.logs(shim_logs.stream(cli.settings(), task_id, follow=follow, idle=idle_s))
        return ExitCode.OK

    return run(cli, action)
