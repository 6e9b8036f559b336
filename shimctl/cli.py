"""Command line: parse options, build Settings, call the manager, hand results to render.

No file-system or socket work here. Heavy modules are imported inside the commands so that
`shimctl --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shimctl import __version__
from shimctl.errors import ShimctlError

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    """Global options as given; Settings are built lazily, when a command runs."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.json_output = False

    def settings(self) -> Any:
        from shimctl.settings import build_settings

        o = self.options
        return build_settings(
            config=Path(o["config"]) if o["config"] else None,
            root=o["root"],
            state=o["state"],
            namespace=o["namespace"],
            address=o["address"],
            ttrpc_address=o["ttrpc_address"],
            publish_binary=o["publish_binary"],
            debug=o["debug"],
            timeout=o.get("timeout"),
        )

    def renderer(self, *, quiet: bool = False) -> Any:
        from shimctl.render import Renderer

        return Renderer(json_output=self.json_output, quiet=quiet)


def json_option(f: F) -> F:
    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(State).json_output = True
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
            ctx.ensure_object(State).options["timeout"] = value
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


def run(ctx: click.Context, action: Callable[[Any], None], *, quiet: bool = False) -> None:
    """Run `action(state)`; map shimctl errors to stderr and their exit codes."""
    state: State = ctx.ensure_object(State)
    try:
        action(state)
    except ShimctlError as err:
        state.renderer(quiet=quiet).error(err)
        ctx.exit(err.exit_code)
    except OSError as err:
        # An OS error nothing below classified (a state dir that is a file, a read-only
        # mount...): one line naming the path, never a traceback.
        from shimctl.errors import Unknown

        where = f" {err.filename}" if err.filename else ""
        state.renderer(quiet=quiet).error(Unknown(f"{err.strerror or err}:{where}".rstrip(":")))
        ctx.exit(Unknown.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("shimctl: interrupted\n")
        ctx.exit(130)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="shimctl")
@click.option(
    "--config",
    envvar="SHIMCTL_CONFIG",
    metavar="FILE",
    help="containerd's config.toml to read root, state, address and timeouts from "
    "(default /etc/containerd/config.toml, if present).",
)
@click.option("--root", envvar="SHIMCTL_ROOT", metavar="DIR", help="containerd's root dir.")
@click.option("--state", envvar="SHIMCTL_STATE", metavar="DIR", help="containerd's state dir.")
@click.option(
    "-n", "--namespace", envvar="SHIMCTL_NAMESPACE", metavar="NS", help="Namespace (default)."
)
@click.option(
    "--address",
    envvar="SHIMCTL_ADDRESS",
    metavar="PATH",
    help="containerd's gRPC socket, passed to shims (/run/containerd/containerd.sock).",
)
@click.option(
    "--ttrpc-address",
    envvar="SHIMCTL_TTRPC_ADDRESS",
    metavar="PATH",
    help="containerd's ttrpc socket (default: address + .ttrpc).",
)
@click.option(
    "--publish-binary",
    envvar="SHIMCTL_PUBLISH_BINARY",
    metavar="PATH",
    help="Binary shims call to publish events (default: containerd on PATH).",
)
@click.option(
    "--debug", is_flag=True, envvar="SHIMCTL_DEBUG", help="Pass -debug to shims; log to stderr."
)
@json_option
@timeout_option
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """Manage containerd runtime-v2 shims on containerd's root and state directories."""
    ctx.ensure_object(State).options.update(options)


@main.command(context_settings=CONTEXT)
@click.argument("task_id", metavar="ID")
@click.option(
    "--runtime",
    default="io.containerd.runc.v2",
    show_default=True,
    metavar="NAME|PATH",
    help="Runtime name or absolute path of the shim binary.",
)
@click.option("--spec", "spec_file", metavar="FILE", help="OCI spec (config.json) for the bundle.")
@click.option("--sandbox", metavar="ID", help="Join this sandbox's shim instead of starting one.")
@click.option(
    "--options", "options_file", metavar="FILE", help="Shim options: an encoded protobuf Any."
)
@json_option
@timeout_option
@click.pass_context
def start(
    ctx: click.Context,
    task_id: str,
    runtime: str,
    spec_file: str | None,
    sandbox: str | None,
    options_file: str | None,
) -> None:
    """Create the bundle for ID and start its shim, as containerd's manager does."""

    def action(state: State) -> None:
        from shimctl.manager import ShimManager, read_file_arg

        spec = read_file_arg(Path(spec_file), "spec") if spec_file else None
        options = read_file_arg(Path(options_file), "options") if options_file else None
        result = ShimManager(state.settings()).start(
            task_id,
            runtime=runtime,
            spec=spec,
            spec_source=spec_file or "",
            sandbox=sandbox,
            options=options,
            options_source=options_file or "",
        )
        state.renderer().result(
            "start",
            result,
            text=[
                ("id", result.id),
                ("namespace", result.namespace),
                ("bundle", result.bundle),
                ("address", result.address),
                ("api", f"task v{result.api_version}"),
                ("shim pid", result.shim_pid),
                ("runtime", result.runtime),
                ("sandbox", result.sandbox),
            ],
        )

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@click.argument("task_id", metavar="ID")
@click.option(
    "--force", is_flag=True, help="Stop a shim that does not answer (SIGTERM, then SIGKILL)."
)
@json_option
@timeout_option
@click.pass_context
def delete(ctx: click.Context, task_id: str, force: bool) -> None:
    """Delete task ID: its task, its shim and its bundle."""

    def action(state: State) -> None:
        from shimctl.manager import ShimManager

        result = ShimManager(state.settings()).delete(task_id, force=force)
        state.renderer().result(
            "delete",
            result,
            text=[
                ("id", result.id),
                ("namespace", result.namespace),
                ("exit status", result.exit_status),
                ("pid", result.pid),
                ("exited at", result.exited_at),
                ("via", result.method),
                ("shim stopped", "yes" if result.shim_stopped else "no"),
                ("notes", result.notes),
            ],
        )

    run(ctx, action)


def _report_exit(ctx: click.Context, state: State, rep: Any, *, quiet: bool = False) -> None:
    from shimctl.errors import EXIT_ACTIONS_FAILED
    from shimctl.render import report

    report(state.renderer(quiet=quiet), rep)
    if rep.errors:
        ctx.exit(EXIT_ACTIONS_FAILED)


@main.command("list", context_settings=CONTEXT)
@json_option
@timeout_option
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Show every bundle, shim and leftover with its kind. Changes nothing."""

    def action(state: State) -> None:
        from shimctl.manager import ShimManager

        _report_exit(ctx, state, ShimManager(state.settings()).list())

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Run even though a containerd answers at --address.")
@json_option
@timeout_option
@click.pass_context
def load(ctx: click.Context, dry_run: bool, force: bool) -> None:
    """containerd's startup reconciliation, on demand (for a stopped containerd)."""

    def action(state: State) -> None:
        from shimctl.manager import ShimManager

        rep = ShimManager(state.settings()).load(dry_run=dry_run, force=force)
        _report_exit(ctx, state, rep)

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option(
    "--min-age",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Act only on items older than this (a create in flight is younger).",
)
@click.option(
    "--kill-hung", is_flag=True, help="Stop shims that do not answer (SIGTERM, then SIGKILL)."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@json_option
@timeout_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, min_age: str, kill_hung: bool, quiet: bool) -> None:
    """Remove leaked, dead and orphaned shims and their leftovers; safe from cron."""

    def action(state: State) -> None:
        from shimctl.manager import ShimManager
        from shimctl.settings import parse_duration

        rep = ShimManager(state.settings()).gc(
            dry_run=dry_run, min_age=parse_duration(min_age), kill_hung=kill_hung
        )
        _report_exit(ctx, state, rep, quiet=quiet)

    run(ctx, action, quiet=quiet)
