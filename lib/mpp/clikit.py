"""What every ``mpp`` command shares: the consoles, the settings, progress lines, the status
table, the one way a command turns an expected error into a message and an exit code, and the
way extensions find the command group they add to.

Used by mpp.cli, the dev tooling's commands (mpp.stack.cli and its modules) and the commands
that service packages add to ``mpp`` (for example mpp_analytics.cli).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mpp.config import Settings, get_settings

console = Console(stderr=True)
out = Console()


def settings() -> Settings:
    """The process's settings; a configuration error ends the command with its message."""
    try:
        return get_settings()
    except ValueError as exc:
        console.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def print_status(statuses: Iterable[Any]) -> None:
    """A table of mpp.stack.base.Status rows (a server, a service, a cluster component)."""
    table = Table("server", "endpoint", "state", "pid", "log / detail")
    for s in statuses:
        color = "green" if s.state != "down" else "red"
        where = s.detail or (str(s.log_file) if s.log_file else "")
        table.add_row(s.name, s.endpoint, f"[{color}]{s.state}[/{color}]", str(s.pid or ""), where)
    out.print(table)


@contextmanager
def fails_with(
    errors: type[BaseException] | tuple[type[BaseException], ...],
    what: str | None = None,
    *,
    code: int = 1,
    hint: str | None = None,
) -> Iterator[None]:
    """Run the block; an exception of ``errors`` ends the command with exit status ``code``
    after one red line on stderr: "<what> failed: <message>" (the bare message when ``what``
    is None), then ``hint`` when given. Any other exception passes through unchanged."""
    try:
        yield
    except errors as exc:
        message = escape(str(exc))
        console.print(f"[red]{what} failed:[/red] {message}" if what else f"[red]{message}[/red]")
        if hint:
            console.print(hint)
        raise typer.Exit(code) from exc


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated option's items, blanks dropped (None: no items)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def subgroup(app: typer.Typer, name: str) -> typer.Typer:
    """The command group ``name`` already added to ``app`` (``mpp analytics`` ...), for an
    extension that adds its commands to it. KeyError when there is none."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    raise KeyError(f"mpp has no command group {name!r}")


SinceOption = Annotated[
    str | None, typer.Option(help="First UTC day, YYYY-MM-DD (default: all days).")
]


def parse_since(value: str | None) -> date | None:
    """``--since``'s day; a malformed day ends the command with exit status 2."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        console.print(f"[red]--since {value!r}:[/red] expected a day like 2026-11-28")
        raise typer.Exit(2) from exc
