"""`shimctl doctor`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command(
    "doctor",
    context_settings=CONTEXT,
    help="Check that shimctl can work here: dirs, permissions, containerd, runtimes, shims.\n\n"
    f"Exits {int(ExitCode.FAILED_PRECONDITION)} when a check fails (warnings do not count).",
)
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(cli: CliContext) -> ExitCode:

    def action(console: Console) -> ExitCode:
        from shimctl.ops import doctor as checks

        rep = checks.run(cli.settings(existing_dirs=False), config=cli.config_path)
        console.doctor(rep)
        return ExitCode.FAILED_PRECONDITION if rep.failed else ExitCode.OK

    return run(cli, action)
