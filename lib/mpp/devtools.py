"""What the CLI falls back on where the dev tooling is not installed (the images).

The images' wheel leaves out the local stack and the dev commands (``mpp.stack``, with
``mpp.stack.cli``), the sample conversations (``mpp.samples``) and ``mpp demo``'s pipeline
(``mpp.pipeline``); see pyproject.toml. There ``mpp.cli`` puts a stand-in under each dev
command's name (DEV_COMMANDS), so that the operator commands of an image (``mpp db migrate``,
``mpp topics ensure`` ...) work and a dev command says why not, with exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from mpp.clikit import console, subgroup

DEV_MODULES = ("mpp.stack", "mpp.samples", "mpp.pipeline", "chitchat_dataset", "milvus_lite")

# Every command that mpp.stack.cli adds, as (group, name): "" is ``mpp`` itself. A unit test
# (tests/unit/test_devtools.py) holds this list to what the dev tooling registers.
DEV_COMMANDS: tuple[tuple[str, str], ...] = (
    ("", "stack"),
    ("", "services"),
    ("", "sample"),
    ("", "produce"),
    ("", "demo"),
    ("", "recommend"),
    ("", "cluster"),
    ("", "images"),
    ("", "deploy"),
    ("", "airflow"),
    ("analytics", "erase-batch"),
)


def dev_only_message(module: str) -> str:
    return (
        f"{module}: dev tooling; not installed in images (run this command from a development "
        "checkout: scripts/bootstrap.sh)"
    )


def is_dev_module(exc: ModuleNotFoundError) -> bool:
    """Whether a failed import is of the dev tooling that images leave out."""
    name = exc.name or ""
    return any(name == m or name.startswith(m + ".") for m in DEV_MODULES)


def _dev_only(words: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        console.print(f"[red]{dev_only_message(words)}[/red]")
        raise typer.Exit(2)

    return command


def add_stand_ins(app: typer.Typer) -> None:
    """Put a stand-in under each of DEV_COMMANDS' names: whatever arguments it is given, it
    says that the command is dev tooling and exits with status 2."""
    for group, name in DEV_COMMANDS:
        target = subgroup(app, group) if group else app
        target.command(
            name,
            help="Dev tooling: not installed in images.",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_dev_only(" ".join(("mpp", *filter(None, (group, name))))))
