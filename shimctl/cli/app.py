"""Command line: parse options, build Settings, call the manager, hand results to console.

No file-system or socket work here. Heavy modules are imported inside the commands so that
`shimctl --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shimctl import __version__
from shimctl.cli.completion import complete_namespace, complete_task_id, register_fish
from shimctl.errors import (
    EXIT_ACTIONS_FAILED,
    FailedPrecondition,
    ShimctlError,
    Unknown,
)
from shimctl.settings import DEFAULT_RUNTIME

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
if "_SHIMCTL_COMPLETE" in os.environ:  # a shell asking for completions: only then
    register_fish()


class GlobalOptions:
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
        from shimctl.output.console import Renderer

        return Renderer(json_output=self.json_output, quiet=quiet)


def json_option(f: F) -> F:
    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(GlobalOptions).json_output = True
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
            ctx.ensure_object(GlobalOptions).options["timeout"] = value
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
    state: GlobalOptions = ctx.ensure_object(GlobalOptions)
    try:
        action(state)
    except ShimctlError as err:
        state.renderer(quiet=quiet).error(err)
        ctx.exit(err.exit_code)
    except BrokenPipeError:
        # The reader went away (`shimctl list | head`): end quietly, with the status a
        # shell reports for a tool killed by SIGPIPE. What was done is done; only output is lost.
        ctx.exit(EXIT_BROKEN_PIPE)
    except OSError as err:
        # An OS error nothing below classified (a state dir that is a file, a read-only
        # mount...): one line naming the path, never a traceback.
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
    "-n",
    "--namespace",
    envvar="SHIMCTL_NAMESPACE",
    metavar="NS",
    shell_complete=complete_namespace,
    help="Namespace (default).",
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
    ctx.ensure_object(GlobalOptions).options.update(options)


@main.command(context_settings=CONTEXT)
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

    def action(state: GlobalOptions) -> None:
        from shimctl.ops.start import read_file_arg
        from shimctl.ops.start import start as start_task

        spec = read_file_arg(Path(spec_file), "spec") if spec_file else None
        options = read_file_arg(Path(options_file), "options") if options_file else None
        result = start_task(
            state.settings(),
            task_id,
            runtime_name=runtime,
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
@click.argument("task_id", metavar="ID", shell_complete=complete_task_id)
@click.option(
    "--force", is_flag=True, help="Stop a shim that does not answer (SIGTERM, then SIGKILL)."
)
@json_option
@timeout_option
@click.pass_context
def delete(ctx: click.Context, task_id: str, force: bool) -> None:
    """Delete task ID: its task, its shim and its bundle."""

    def action(state: GlobalOptions) -> None:
        from shimctl.ops.delete import delete as delete_task

        result = delete_task(state.settings(), task_id, force=force)
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


def _report_exit(
    ctx: click.Context, state: GlobalOptions, rep: Any, *, quiet: bool = False
) -> None:
    from shimctl.output.console import report

    report(state.renderer(quiet=quiet), rep)
    if rep.errors:
        ctx.exit(EXIT_ACTIONS_FAILED)


@main.command("list", context_settings=CONTEXT)
@json_option
@timeout_option
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Show every bundle, shim and leftover with its kind. Changes nothing."""

    def action(state: GlobalOptions) -> None:
        from shimctl.reconcile.run import Reconciler

        _report_exit(ctx, state, Reconciler(state.settings()).list())

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Run even though a containerd answers at --address.")
@json_option
@timeout_option
@click.pass_context
def load(ctx: click.Context, dry_run: bool, force: bool) -> None:
    """containerd's startup reconciliation, on demand (for a stopped containerd)."""

    def action(state: GlobalOptions) -> None:
        from shimctl.output.console import ProgressBar
        from shimctl.reconcile.run import Reconciler

        settings = state.settings()
        with ProgressBar() as bar:
            rep = Reconciler(settings, progress=bar).load(dry_run=dry_run, force=force)
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
@click.option(
    "--metrics-file",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Write Prometheus metrics of this run to PATH (atomically), e.g. for node_exporter's "
    "textfile collector; written also when gc fails.",
)
@json_option
@timeout_option
@click.pass_context
def gc(
    ctx: click.Context,
    dry_run: bool,
    min_age: str,
    kill_hung: bool,
    quiet: bool,
    metrics_file: str | None,
) -> None:
    """Remove leaked, dead and orphaned shims and their leftovers; safe from cron."""

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import metrics
        from shimctl.output.console import ProgressBar
        from shimctl.reconcile.run import Reconciler
        from shimctl.settings import parse_duration

        target = metrics.check_target(Path(metrics_file)) if metrics_file else None
        try:
            settings = state.settings()
            with ProgressBar(enabled=not quiet) as bar:
                rep = Reconciler(settings, progress=bar).gc(
                    dry_run=dry_run, min_age=parse_duration(min_age), kill_hung=kill_hung
                )
        except (ShimctlError, OSError) as err:
            if target is not None:
                metrics.record_gc(target, None, version=__version__, run_error=str(err))
            raise
        if target is not None:
            metrics.record_gc(target, rep, version=__version__)
        _report_exit(ctx, state, rep, quiet=quiet)

    run(ctx, action, quiet=quiet)


@main.command(context_settings=CONTEXT)
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
@click.pass_context
def logs(ctx: click.Context, task_id: str, follow: bool, idle: str) -> None:
    """Copy what task ID's shim writes to its log fifo to stdout, as containerd does.

    Only what the shim writes while this runs is seen (start shims with --debug for more).
    """

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import logs as shim_logs
        from shimctl.output.console import stream
        from shimctl.settings import parse_duration

        idle_s = parse_duration(idle)
        stream(shim_logs.stream(state.settings(), task_id, follow=follow, idle=idle_s))

    run(ctx, action)


@main.command(context_settings=CONTEXT)
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
@click.pass_context
def publish(ctx: click.Context, topic: str, event_namespace: str) -> None:
    """Record an event a shim publishes (a protobuf Any on stdin) in the events journal.

    The verb shims run as `<publish-binary> --address A publish --topic T --namespace NS`.
    """

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import journal

        data = click.get_binary_stream("stdin").read(journal.MAX_EVENT_BYTES + 1)
        event = journal.publish(state.settings(), topic=topic, namespace=event_namespace, data=data)
        if state.json_output:
            state.renderer().result("publish", event, text=[])

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@click.option("--topic", metavar="TOPIC", help="Only events of this topic.")
@json_option
@click.pass_context
def events(ctx: click.Context, topic: str | None) -> None:
    """Print the events journal that `shimctl publish` keeps (all namespaces unless -n)."""

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import journal
        from shimctl.output import console

        console.events(state.renderer(), journal.read(state.settings(), topic=topic))

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@json_option
@click.pass_context
def version(ctx: click.Context) -> None:
    """shimctl's version, Python's, and the containerd and shim versions found here."""

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import version as versions
        from shimctl.output import console

        console.version(state.renderer(), versions.collect(state.settings()))

    run(ctx, action)


@main.command(context_settings=CONTEXT)
@json_option
@timeout_option
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check that shimctl can work here: dirs, permissions, containerd, runtimes, shims.

    Exits 5 when a check fails (warnings do not count).
    """

    def action(state: GlobalOptions) -> None:
        from shimctl.ops import doctor as checks
        from shimctl.output import console

        config = state.options.get("config")
        rep = checks.run(state.settings(), config=Path(config) if config else None)
        console.doctor(state.renderer(), rep)
        if rep.failed:
            ctx.exit(FailedPrecondition.exit_code)

    run(ctx, action)


def entry() -> None:
    """The `shimctl` program (console script and `python -m shimctl`): run `main`, then end
    the process without the interpreter's teardown. Unloading protobuf, click and the rest
    costs 10-15 ms a run, which cron and CI runs on every node pay for nothing: every file
    shimctl writes is closed by then, and stdout/stderr are flushed here. Normal teardown
    still happens when another thread is still running, or on an unexpected exception."""
    import contextlib
    import threading

    try:
        main()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")  # what the interpreter does with a non-int exit value
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: output lost anyway
            stream.flush()
    os._exit(code)
