"""`shimctl delete ID`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.completion import complete_task_id
from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("delete", context_settings=CONTEXT)
@click.argument("task_id", metavar="ID", shell_complete=complete_task_id)
@click.option(
    "--force", is_flag=True, help="Stop a shim that does not answer (SIGTERM, then SIGKILL)."
)
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(cli: CliContext, task_id: str, force: bool) -> ExitCode:
    """Delete task ID: its task, its shim and its bundle."""

    def action(console: Console) -> ExitCode:
        from shimctl.ops.delete import delete

        result = delete(cli.settings(), task_id, force=force)
        console.delete(result)
        return ExitCode.OK

    return run(cli, action)
