"""Options every command shares: the global ones (dirs, addresses, namespace), --json and
--timeout. --json and --timeout may be given before or after the command name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shimctl.cli.completion import complete_namespace
from shimctl.cli.context import cli_context

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def json_option(f: F) -> F:
    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            cli_context(ctx).json_output = True
        return value

    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=mark,
        help="Print one JSON document (schema in docs/json-schema.md).",
    )(f)


def timeout_option(f: F) -> F:
    def store(ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
        if value is not None:
            cli_context(ctx).timeout = value
        return value

    return click.option(
        "--timeout",
        type=float,
        expose_value=False,
        callback=store,
        envvar="SHIMCTL_TIMEOUT",
        metavar="SECONDS",
        help="Deadline for each call to a shim (default: containerd's, 5 s).",
    )(f)


def global_options(f: F) -> F:
    """The root group's options; each reads its SHIMCTL_* variable when not given."""
    decorators = [
        click.option(
            "--config",
            envvar="SHIMCTL_CONFIG",
            metavar="FILE",
            help="containerd's config.toml to read root, state, address and timeouts from "
            "(default /etc/containerd/config.toml, if present).",
        ),
        click.option("--root", envvar="SHIMCTL_ROOT", metavar="DIR", help="containerd's root dir."),
        click.option(
            "--state", envvar="SHIMCTL_STATE", metavar="DIR", help="containerd's state dir."
        ),
        click.option(
            "-n",
            "--namespace",
            envvar="SHIMCTL_NAMESPACE",
            metavar="NS",
            shell_complete=complete_namespace,
            help="Namespace (default).",
        ),
        click.option(
            "--address",
            envvar="SHIMCTL_ADDRESS",
            metavar="PATH",
            help="containerd's gRPC socket, passed to shims (/run/containerd/containerd.sock).",
        ),
        click.option(
            "--ttrpc-address",
            envvar="SHIMCTL_TTRPC_ADDRESS",
            metavar="PATH",
            help="containerd's ttrpc socket (default: address + .ttrpc).",
        ),
        click.option(
            "--publish-binary",
            envvar="SHIMCTL_PUBLISH_BINARY",
            metavar="PATH",
            help="Binary shims call to publish events (default: containerd on PATH).",
        ),
        click.option(
            "--debug",
            is_flag=True,
            envvar="SHIMCTL_DEBUG",
            help="Pass -debug to shims; log to stderr.",
        ),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f
