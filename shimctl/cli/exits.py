"""How a command's run becomes an exit code: shimctl's errors, a reader that went away, an
OS error nothing below classified, an interrupt. Commands return what `run` returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from shimctl.cli.context import CliContext
from shimctl.errors import ExitCode, FailedPrecondition, ShimctlError, Unknown

if TYPE_CHECKING:
    from shimctl.models.findings import ReconcileReport
    from shimctl.output.console import Console


def run(cli: CliContext, action: Callable[[Console], ExitCode], *, quiet: bool = False) -> ExitCode:
    """Run `action(console)`; report shimctl's errors on the console, return the exit code."""
    console = cli.console(quiet=quiet)
    try:
        return action(console)
    except ShimctlError as err:
        console.error(err)
        return err.exit_code
    except BrokenPipeError:
        # The reader went away (`shimctl list | head`): end quietly, with the status a
        # shell reports for a tool killed by SIGPIPE. What was done is done; only output is lost.
        return ExitCode.BROKEN_PIPE
    except PermissionError as err:
        if os.geteuid() == 0:  # root without some capability: nothing a hint can fix
            return _unclassified(console, err)
        failed = FailedPrecondition(_describe(err), hint="run shimctl as root")
        console.error(failed)
        return failed.exit_code
    except OSError as err:
        return _unclassified(console, err)
    except KeyboardInterrupt:
        console.interrupted()
        return ExitCode.INTERRUPTED


def _describe(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    return f"{err.strerror or err}:{where}".rstrip(":")


def _unclassified(console: Console, err: OSError) -> ExitCode:
    """An OS error nothing below classified (a state dir that is a file, a read-only mount):
    one line naming the path, never a traceback."""
    console.error(Unknown(_describe(err)))
    return ExitCode.UNKNOWN


def report_exit(rep: ReconcileReport, *, garbage_code: bool = False) -> ExitCode:
    """load/gc: the run completed; some of its actions may have failed. `garbage_code`
    (`--exit-code`): a distinct status when garbage was found, as `git diff --exit-code`."""
    from shimctl.models.findings import GARBAGE_KINDS

    if rep.errors:
        return ExitCode.ACTIONS_FAILED
    if garbage_code and any(f.kind in GARBAGE_KINDS for f in rep.findings):
        return ExitCode.GARBAGE_FOUND
    return ExitCode.OK
