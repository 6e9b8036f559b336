"""`shimctl events`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("events", context_settings=CONTEXT)
@click.option("--topic", metavar="TOPIC", help="Only events of this topic.")
@json_option
@global_options_after()
@pass_cli
def command(cli: CliContext, topic: str | None) -> ExitCode:
    """Print the events journal that `shimctl publish` keeps (all namespaces unless -n)."""

    def action(console: Console) -> ExitCode:
        from shimctl.ops import journal

        console.events(journal.read(cli.settings(), topic=topic))
        return ExitCode.OK

    return run(cli, action)
