"""`shimctl start ID`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from shimctl.cli.completion import complete_task_id
from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option, timeout_option
from shimctl.errors import ExitCode
from shimctl.settings import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("start", context_settings=CONTEXT)
@click.argument("task_id", metavar="ID")
@click.option(
    "--runtime",
    default=DEFAULT_RUNTIME,
    show_default=True,
    metavar="NAME|PATH",
    help="Runtime name or absolute path of the shim binary.",
)
@click.option("--spec", "spec_file", metavar="FILE", help="OCI spec (config.json) for the bundle.")
@click.option(
    "--sandbox",
    metavar="ID",
    shell_complete=complete_task_id,
    help="Join this sandbox's shim instead of starting one.",
)
@click.option(
    "--options", "options_file", metavar="FILE", help="Shim options: an encoded protobuf Any."
)
@json_option
@timeout_option
@global_options_after()
@pass_cli
def command(
    cli: CliContext,
    task_id: str,
    runtime: str,
    spec_file: str | None,
    sandbox: str | None,
    options_file: str | None,
) -> ExitCode:
    """Create the bundle for ID and start its shim, as containerd's manager does."""

    def action(console: Console) -> ExitCode:
        from shimctl.ops.start import read_file_arg, start

        spec = read_file_arg(Path(spec_file), "spec") if spec_file else None
        options = read_file_arg(Path(options_file), "options") if options_file else None
        result = start(
            cli.settings(),
            task_id,
            runtime_name=runtime,
            spec=spec,
            spec_source=spec_file or "",
            sandbox=sandbox,
            options=options,
            options_source=options_file or "",
            log_sink=console.shim_log,
        )
        console.start(result)
        return ExitCode.OK

    return run(cli, action)
