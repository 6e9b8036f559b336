"""Dynamic shell completion: task ids and namespaces read from the state dir.

click calls these while the user presses TAB; they must be quick and must never raise (a
traceback would land in the user's prompt), so every failure gives no candidates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_CANDIDATES = 1000


def _root_params(ctx: Any) -> dict[str, Any]:
    root = ctx.find_root()
    params = root.params if isinstance(root.params, dict) else {}
    return params


def _after_command(ctx: Any, name: str) -> str | None:
    """A global option given after the command name: its callback stored it in the
    CliContext (the root group's own callback does not run while completing)."""
    from shimctl.cli.context import CliContext

    obj = ctx.find_object(CliContext)
    value = getattr(obj, name, None)
    return value if isinstance(value, str) else None


def _task_state(ctx: Any) -> Path | None:
    """`<state>/io.containerd.runtime.v2.task` as the command being completed would use it:
    --state, else SHIMCTL_STATE (click fills both in), else containerd's config, else default."""
    from shimctl.settings import (
        DEFAULT_CONFIG,
        DEFAULT_STATE,
        TASK_PLUGIN_DIR,
        read_containerd_config,
    )

    params = _root_params(ctx)
    state = _after_command(ctx, "state") or params.get("state") or os.environ.get("SHIMCTL_STATE")
    if not state:
        config = params.get("config") or os.environ.get("SHIMCTL_CONFIG") or DEFAULT_CONFIG
        try:
            state = read_containerd_config(Path(config)).state
        except Exception:  # noqa: BLE001 - completion must never fail the shell
            state = None
    return Path(state or DEFAULT_STATE) / TASK_PLUGIN_DIR


def _dir_names(path: Path, incomplete: str) -> list[str]:
    names = []
    with os.scandir(path) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.name.startswith(incomplete):
                continue
            if entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
            if len(names) >= MAX_CANDIDATES:
                break
    return sorted(names)


def namespaces(ctx: Any, incomplete: str) -> list[str]:
    try:
        state = _task_state(ctx)
        return _dir_names(state, incomplete) if state is not None else []
    except Exception:  # noqa: BLE001 - completion must never fail the shell
        return []


def task_ids(ctx: Any, incomplete: str) -> list[str]:
    """Ids of the bundles in the namespace given so far (-n / SHIMCTL_NAMESPACE, or default)."""
    try:
        state = _task_state(ctx)
        if state is None:
            return []
        ns = ctx.params.get("namespace") if isinstance(ctx.params, dict) else None
        ns = (
            ns
            or _after_command(ctx, "namespace")
            or _root_params(ctx).get("namespace")
            or os.environ.get("SHIMCTL_NAMESPACE")
        )
        ns = ns or "default"
        if "/" in ns or ns.startswith("."):
            return []
        return _dir_names(state / ns, incomplete)
    except Exception:  # noqa: BLE001 - completion must never fail the shell
        return []


# click 8.2-8.4's fish script splits on a literal newline it writes into the script itself,
# which breaks it in every fish; this is click 8.1's working protocol ("type,value<TAB>help"
# per line), registered in place of click's `fish` class (cli.py).
FISH_SOURCE = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \
COMP_CWORD=(commandline -t) %(prog_name)s);

    for completion in $response;
        set -l metadata (string split -m 1 "," $completion);

        if test $metadata[1] = "dir";
            __fish_complete_directories $metadata[2];
        else if test $metadata[1] = "file";
            __fish_complete_path $metadata[2];
        else if test $metadata[1] = "plain";
            echo $metadata[2];
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments \
"(%(complete_func)s)";
"""


def register_fish() -> None:
    from click.shell_completion import CompletionItem, FishComplete, add_completion_class

    class Fish(FishComplete):
        source_template = FISH_SOURCE

        def format_completion(self, item: CompletionItem) -> str:
            value = " ".join(str(item.value).split("\n"))
            if item.help:
                return f"{item.type},{value}\t{' '.join(item.help.split())}"
            return f"{item.type},{value}"

    add_completion_class(Fish, "fish")


def complete_namespace(ctx: Any, _param: Any, incomplete: str) -> list[str]:
    return namespaces(ctx, incomplete)


def complete_task_id(ctx: Any, _param: Any, incomplete: str) -> list[str]:
    return task_ids(ctx, incomplete)
