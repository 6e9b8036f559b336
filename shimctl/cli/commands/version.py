"""`shimctl version`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("version", context_settings=CONTEXT)
@json_option
@global_options_after()
@pass_cli
def command(cli: CliContext) -> ExitCode:
    """shimctl's version, Python's, and the containerd and shim versions found here."""

    def action(console: Console) -> ExitCode:
        from shimctl.ops import version as versions

        console.version(versions.collect(cli.settings(existing_dirs=False)))
        return ExitCode.OK

    return run(cli, action)
