"""What every ``mpp`` command shares: the consoles, the settings, progress lines and the
status table (mpp.cli and the dev tooling's commands, mpp.stack.commands)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

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
