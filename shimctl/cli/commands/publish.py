"""`shimctl publish`: the verb shims run to publish an event."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from shimctl.cli.completion import complete_namespace
from shimctl.cli.context import CliContext, pass_cli
from shimctl.cli.exits import run
from shimctl.cli.options import CONTEXT, global_options_after, json_option
from shimctl.errors import ExitCode

if TYPE_CHECKING:
    from shimctl.output.console import Console


@click.command("publish", context_settings=CONTEXT)
@click.option("--topic", required=True, metavar="TOPIC", help="Event topic, e.g. /tasks/exit.")
@click.option(
    "--namespace",
    "event_namespace",
    required=True,
    metavar="NS",
    shell_complete=complete_namespace,
    help="Namespace of the event.",
)
@json_option
@global_options_after(except_=("namespace",))
@pass_cli
def command(cli: CliContext, topic: str, event_namespace: str) -> ExitCode:
    """Record an event a shim publishes (a protobuf Any on stdin) in the events journal.

    The verb shims run as `<publish-binary> --address A publish --topic T --namespace NS`.
    """

    def action(console: Console) -> ExitCode:
        from shimctl.ops import journal

        data = sys.stdin.buffer.read(journal.MAX_EVENT_BYTES + 1)
        event = journal.publish(
            cli.settings(existing_dirs=False), topic=topic, namespace=event_namespace, data=data
        )
        console.publish(event)
        return ExitCode.OK

    return run(cli, action)
