"""The `shimctl` program: the root group, its commands, and `entry`, the one place the process
ends.

No file-system or socket work here. Commands (shimctl/cli/commands/) return an ExitCode;
`entry` turns it into the process's status.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from shimctl import __version__
from shimctl.cli.completion import register_fish
from shimctl.cli.context import cli_context
from shimctl.cli.options import CONTEXT, global_options, json_option, timeout_option
from shimctl.errors import ExitCode

if "_SHIMCTL_COMPLETE" in os.environ:  # a shell asking for completions: only then
    register_fish()


# Each command is the module of that name under shimctl.cli.commands.
COMMANDS = (
    "start",
    "delete",
    "list",
    "load",
    "gc",
    "logs",
    "publish",
    "events",
    "version",
    "doctor",
)


class CommandGroup(click.Group):
    """The root group. A command's module is imported only when that command is asked for
    (click's "lazily loading subcommands" pattern): `shimctl start` does not import the other
    nine, `--help` imports them all to show their help."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002 - click's signature
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"shimctl.cli.commands.{cmd_name}")
            self.add_command(module.command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in COMMANDS:
            # Not a command: load them all, so that click's "Did you mean ...?" sees them.
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=CommandGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="shimctl")
@global_options
@json_option
@timeout_option
@click.pass_context
def main(
    ctx: click.Context,
    /,
    config: str | None,
    root: str | None,
    state: str | None,
    namespace: str | None,
    address: str | None,
    ttrpc_address: str | None,
    publish_binary: str | None,
    debug: bool,
) -> None:
    """Manage containerd runtime-v2 shims on containerd's root and state directories.

    Global options may also follow the command name (`shimctl list --root DIR`).
    """
    o = cli_context(ctx)
    o.config, o.root, o.state, o.namespace = config, root, state, namespace
    o.address, o.ttrpc_address, o.publish_binary = address, ttrpc_address, publish_binary
    o.debug = debug


def run_main(args: list[str] | None = None) -> int:
    """Parse `args` (default: sys.argv), run the command, return its exit status."""
    try:
        rv = main.main(args=args, standalone_mode=False)
    except click.ClickException as err:  # usage errors: click's message, exit 2
        from shimctl.output.console import Console

        Console().usage_error(err)
        return err.exit_code
    except click.Abort:  # Ctrl-C or EOF while click itself was prompting or parsing
        from shimctl.output.console import Console

        Console().interrupted()
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # click's own output (--help) into a closed pipe
        return ExitCode.BROKEN_PIPE
    except SystemExit:
        from click.utils import PacifyFlushWrapper

        # On EPIPE click swaps stdout for a PacifyFlushWrapper and exits 1 (Command.main in
        # click/core.py); that is a reader that went away.
        if isinstance(sys.stdout, PacifyFlushWrapper):
            return ExitCode.BROKEN_PIPE
        raise
    except OSError as err:  # ... or into a full disk
        return _output_failed(err)
    if rv is None:  # --help, --version
        return ExitCode.OK
    return int(rv)


def flush_output(code: int) -> int:
    """Flush stdout; output that cannot be written fails the run, buffered or not. A reader
    that went away ends it quietly with BROKEN_PIPE; any other error (ENOSPC, EIO) is reported.
    A failing command keeps its own status."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return code or ExitCode.BROKEN_PIPE
    except OSError as err:
        _discard_stdout()
        return code or _output_failed(err)
    except ValueError:  # stdout was closed by someone: nothing more to flush
        pass
    return code


def _output_failed(err: OSError) -> ExitCode:
    from shimctl.errors import Unknown
    from shimctl.output.console import Console

    _discard_stdout()
    Console().error(Unknown(f"cannot write output: {err.strerror or err}"))
    return ExitCode.UNKNOWN


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null: what is still buffered cannot fail again at exit (the advice
    of https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def entry() -> None:
    """The `shimctl` program (console script and `python -m shimctl`): run `main`, then end
    the process without the interpreter's teardown. Unloading protobuf, click and the rest
    costs 10-15 ms a run, which cron and CI runs on every node pay for nothing: every file
    shimctl writes is closed by then, and stdout/stderr are flushed here. Normal teardown
    still happens when another thread is still running, or on an unexpected exception."""
    import contextlib
    import threading

    code: int | str | None
    try:
        code = run_main()
    except SystemExit as done:  # shell completion ends through click's own sys.exit
        code = done.code
    if code is None or isinstance(code, int):
        code = flush_output(code or ExitCode.OK)
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        code = ExitCode.OK
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")  # what the interpreter does with a non-int exit value
        code = ExitCode.UNKNOWN
    with contextlib.suppress(OSError, ValueError):  # stderr is all that is left to tell
        sys.stderr.flush()
    os._exit(code)
