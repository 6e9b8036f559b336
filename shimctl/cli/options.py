"""Options every command shares: the global ones (dirs, addresses, namespace), --json and
--timeout. --json and --timeout may be given before or after the command name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shimctl.cli.completion import complete_namespace
from shimctl.cli.context import cli_context
from shimctl.settings import (
    DEFAULT_ADDRESS,
    DEFAULT_CONFIG,
    DEFAULT_NAMESPACE,
    DEFAULT_ROOT,
    DEFAULT_STATE,
)

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


# The global options: (flags, dest, metavar or None for a flag, help). Help texts name the
# built-in defaults; containerd's config file (read only when a command runs, not for --help)
# takes precedence over them.
_GLOBALS: list[tuple[tuple[str, ...], str, str | None, str]] = [
    (
        ("--config",),
        "config",
        "FILE",
        "containerd's config.toml to read root, state, address and timeouts from "
        f"[default: {DEFAULT_CONFIG}, if present]",
    ),
    (
        ("--root",),
        "root",
        "DIR",
        f"containerd's root dir, absolute [default: {DEFAULT_ROOT}, or root in the config]",
    ),
    (
        ("--state",),
        "state",
        "DIR",
        f"containerd's state dir, absolute [default: {DEFAULT_STATE}, or state in the config]",
    ),
    (
        ("-n", "--namespace"),
        "namespace",
        "NS",
        f"Namespace [default: {DEFAULT_NAMESPACE}]; without -n, list, load, gc and events "
        "cover every namespace.",
    ),
    (
        ("--address",),
        "address",
        "PATH",
        "containerd's gRPC socket, passed to shims "
        f"[default: {DEFAULT_ADDRESS}, or grpc.address in the config]",
    ),
    (
        ("--ttrpc-address",),
        "ttrpc_address",
        "PATH",
        "containerd's ttrpc socket [default: the address + .ttrpc, or ttrpc.address in the config]",
    ),
    (
        ("--publish-binary",),
        "publish_binary",
        "PATH",
        "Binary shims call to publish events [default: containerd on PATH, else shimctl]",
    ),
    (("--debug",), "debug", None, "Pass -debug to shims; log to stderr."),
]


def global_options(f: F) -> F:
    """The root group's options; each reads its SHIMCTL_* variable when not given."""
    for flags, dest, metavar, help_text in reversed(_GLOBALS):
        envvar = f"SHIMCTL_{dest.upper()}"
        if metavar is None:
            f = click.option(*flags, dest, is_flag=True, envvar=envvar, help=help_text)(f)
        else:
            complete = complete_namespace if dest == "namespace" else None
            f = click.option(
                *flags,
                dest,
                envvar=envvar,
                metavar=metavar,
                shell_complete=complete,
                help=help_text,
            )(f)
    return f


def global_options_after(*, except_: tuple[str, ...] = ()) -> Callable[[F], F]:
    """The global options once more, accepted after the command name too (`shimctl list
    --root DIR` is what people type). Hidden from the command's help, not read from the
    environment (the group did that): given here, a value overrides what came before it."""

    def store(ctx: click.Context, param: click.Parameter, value: object) -> object:
        if value is not None and value is not False and param.name is not None:
            setattr(cli_context(ctx), param.name, value)
        return value

    def decorate(f: F) -> F:
        for flags, dest, metavar, _help in reversed(_GLOBALS):
            if dest in except_:
                continue
            kwargs: dict[str, Any] = {"is_flag": True} if metavar is None else {"metavar": metavar}
            f = click.option(
                *flags, dest, expose_value=False, hidden=True, callback=store, **kwargs
            )(f)
        return f

    return decorate
