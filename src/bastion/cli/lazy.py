"""A click group whose subcommands live in modules imported only when one of them runs.

Layer: client edge (CLI plumbing). ``bsh --help`` and ``bsh status`` must start in a few tens of
milliseconds: importing every command module would load aiohttp, asyncssh, pydantic and
cryptography (about a second). :class:`LazyGroup` lists each lazy command with the one-line help
given at registration, and imports ``module:attribute`` only when the command is looked up to
run (or for its own ``--help``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

__all__ = ["LazyCommand", "LazyGroup"]


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a command lives, and its one-line help for the group's listing."""

    module: str
    attribute: str
    short_help: str


class LazyGroup(click.Group):
    """``click.Group`` plus ``lazy={name: LazyCommand}``: imported on first use."""

    def __init__(
        self, *args: object, lazy: dict[str, LazyCommand] | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, LazyCommand] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = self.lazy.get(cmd_name)
        if spec is not None and cmd_name not in self.commands:
            command = getattr(importlib.import_module(spec.module), spec.attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{spec.module}.{spec.attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but lazy commands show their registered help without an import."""
        rows: list[tuple[str, str]] = []
        width = formatter.width - 6 - max((len(n) for n in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            if name in self.lazy:  # the same line whether or not the module was imported
                rows.append((name, self.lazy[name].short_help))
                continue
            command = self.commands.get(name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
