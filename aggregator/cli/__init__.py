"""The `aggregator` command. Each command mirrors a library call; `--config`
is accepted by every command, after the command name.

Only click is imported here: each command imports what it needs when it
runs, so `aggregator --help` (and a command that needs little) starts fast.
A UserError raised anywhere in a command (a bad setting, a damaged
database...) becomes `error: ...` on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

from typing import Any

import click

from aggregator import __version__
from aggregator.errors import UserError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
def main() -> None:
    """A news feed aggregator: polls feeds, groups the same story from many outlets, publishes one Latest feed."""


# The commands register themselves on `main` (imported for that, last).
from aggregator.cli import articles, controls, db, feeds, polling, service  # noqa: E402, F401
