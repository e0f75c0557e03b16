"""The CLI where the dev tooling is not installed (the images leave out mpp.stack, mpp.samples
and mpp.pipeline, see pyproject.toml): operator commands work, dev commands say why not."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs the CLI with the dev modules made unimportable, as in an image.
WITHOUT_DEV_TOOLING = """
import sys
for name in ("mpp.stack", "mpp.samples", "mpp.pipeline", "torch", "matplotlib", "pymilvus"):
    sys.modules[name] = None
sys.argv = ["mpp", *sys.argv[1:]]
from mpp.cli import main
main()
"""


def mpp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DEV_TOOLING, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["db", "migrate", "--help"],
        ["topics", "ensure", "--help"],
        ["analytics", "charts", "--help"],
    ],
)
def test_operator_commands_load_without_dev_tooling(args: list[str]) -> None:
    result = mpp(*args)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["stack", "status"],
        ["services", "status"],
        ["images", "build"],
        ["demo"],
        ["analytics", "erase-batch", "--data", "x"],
    ],
)
def test_dev_commands_say_they_are_dev_tooling(args: list[str]) -> None:
    result = mpp(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "dev tooling; not installed in images" in result.stderr
    assert "Traceback" not in result.stderr


def test_stand_ins_name_every_dev_command() -> None:
    """The image's stand-ins (mpp.devtools.DEV_COMMANDS) are what the dev tooling adds."""
    import typer

    from mpp.devtools import DEV_COMMANDS
    from mpp.stack.cli import register

    app, analytics = typer.Typer(), typer.Typer()
    app.add_typer(analytics, name="analytics")
    register(app)
    added = {("", g.name) for g in app.registered_groups if g.name != "analytics"}
    added |= {("", c.name) for c in app.registered_commands}
    added |= {("analytics", c.name) for c in analytics.registered_commands}
    assert added == set(DEV_COMMANDS)


def test_extensions_come_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry of the group mpp.cli adds its commands; one whose package is not installed
    is left out; with no entry, no command is added."""
    import importlib.metadata

    import typer

    from mpp import cli

    def commands(entries: list[str]) -> list[str | None]:
        found = [
            importlib.metadata.EntryPoint(f"e{i}", v, cli.EXTENSION_GROUP)
            for i, v in enumerate(entries)
        ]
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found)
        app, analytics = typer.Typer(), typer.Typer()
        app.add_typer(analytics, name="analytics")
        cli.load_extensions(app)
        return [c.name for c in analytics.registered_commands]

    assert commands(["mpp_analytics.cli:register", "no_such_package.cli:register"]) == ["charts"]
    assert commands([]) == []
    with pytest.raises(KeyError, match="no command group 'nope'"):
        from mpp.clikit import subgroup

        subgroup(typer.Typer(), "nope")
