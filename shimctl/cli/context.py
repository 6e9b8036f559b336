"""The object click hands every command: the global options as given, and what is built from
them when a command runs (Settings, the Console). Typed, so nothing crosses the seam as Any."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from shimctl.output.console import Console
    from shimctl.settings import Settings


@dataclass
class CliContext:
    """One run of the CLI: the global options as given (flag or SHIMCTL_* variable; None where
    nothing was given). Settings are built from them lazily, when a command runs."""

    config: str | None = None
    root: str | None = None
    state: str | None = None
    namespace: str | None = None
    address: str | None = None
    ttrpc_address: str | None = None
    publish_binary: str | None = None
    debug: bool = False
    timeout: float | None = None
    json_output: bool = False

    @property
    def config_path(self) -> Path | None:
        return Path(self.config) if self.config else None

    def settings(self, *, existing_dirs: bool = True) -> Settings:
        """Settings for a command; with `existing_dirs` (all but doctor, version and publish)
        root and state must be absolute paths of directories that exist."""
        from shimctl.settings import build_settings

        return build_settings(
            config=self.config_path,
            root=self.root,
            state=self.state,
            namespace=self.namespace,
            address=self.address,
            ttrpc_address=self.ttrpc_address,
            publish_binary=self.publish_binary,
            debug=self.debug,
            timeout=self.timeout,
            existing_dirs=existing_dirs,
        )

    def console(self, *, quiet: bool = False) -> Console:
        from shimctl.output.console import Console

        return Console(json_output=self.json_output, quiet=quiet)


def cli_context(ctx: click.Context) -> CliContext:
    return ctx.ensure_object(CliContext)


# `@pass_cli` gives a command its CliContext as first argument.
pass_cli = click.make_pass_decorator(CliContext, ensure=True)
