"""The dev tooling's commands on ``mpp``: the local stack and services, samples and the demo
(mpp.stack.cli_demo), the cluster, images, deploy and Airflow (mpp.stack.commands), and
``mpp analytics erase-batch`` (it runs the batch job from this checkout's jobs/).

mpp.cli calls ``register`` where the dev tooling is installed; the images leave this package
out and put mpp.devtools' stand-ins under the same names (mpp.devtools.DEV_COMMANDS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mpp.clikit import console, fails_with, print_status, progress, settings, split_list, subgroup
from mpp.stack import SERVER_NAMES, Stack, StackError, State, cli_demo, commands

stack_app = typer.Typer(help="The local stack: real servers on loopback.", no_args_is_help=True)
services_app = typer.Typer(
    help="The platform's worker services as local processes.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the dev commands to ``mpp`` (whose ``analytics`` group is already there)."""
    app.add_typer(stack_app, name="stack")
    app.add_typer(services_app, name="services")
    cli_demo.register(app)
    commands.register(app)
    subgroup(app, "analytics").command("erase-batch")(analytics_erase_batch)


OnlyOption = Annotated[
    str | None,
    typer.Option(help=f"Comma-separated subset of: {', '.join(SERVER_NAMES)}."),
]


WithOption = Annotated[
    str | None,
    typer.Option(
        "--with",
        help="Also these optional groups (comma-separated): observability (Jaeger and "
        "Prometheus, built from source with Go the first time: about 25 minutes).",
    ),
]


def _stack(only: str | None, with_: str | None, verb: str) -> Stack:
    with fails_with(StackError, f"stack {verb}"):
        stack = Stack(settings(), split_list(only), with_=split_list(with_))
    return stack


@stack_app.command("up")
def stack_up(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Install what is missing, start every server not already running, wait until ready."""
    stack = _stack(only, with_, "up")
    with fails_with(StackError, "stack up"):
        statuses = stack.up(progress)
    print_status(statuses)


@stack_app.command("down")
def stack_down(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Stop the servers that `stack up` started (and nothing else)."""
    stopped = _stack(only, with_, "down").down(progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was ours)'}")


@stack_app.command("status")
def stack_status(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Probe every server; exit 1 if any is down."""
    statuses = _stack(only, with_, "status").status()
    print_status(statuses)
    if any(s.state == State.DOWN for s in statuses):
        raise typer.Exit(1)


ServicesOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated subset of: ingest, embedder, vector-writer, graph-writer, "
        "analytics, recommender."
    ),
]


@services_app.command("up")
def services_up(only: ServicesOption = None) -> None:
    """Start the worker services not already running and wait until each is ready."""
    with fails_with(StackError, "services up"):
        statuses = Stack.services(settings(), split_list(only)).up(progress)
    print_status(statuses)


@services_app.command("down")
def services_down(only: ServicesOption = None) -> None:
    """Stop the services (SIGTERM: each finishes and commits its batch first)."""
    stopped = Stack.services(settings(), split_list(only)).down(progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was ours)'}")


@services_app.command("status")
def services_status(only: ServicesOption = None) -> None:
    """Probe each service's /readyz; exit 1 if any is not ready."""
    statuses = Stack.services(settings(), split_list(only)).status()
    print_status(statuses)
    if any(s.state == State.DOWN for s in statuses):
        raise typer.Exit(1)


def analytics_erase_batch(
    data: Annotated[Path, typer.Option(help="The batch data folder (raw events, Parquet).")],
    warehouse: Annotated[bool, typer.Option(help="Also erase from the warehouse.")] = True,
) -> None:
    """Rewrite the batch outputs under DATA (and the warehouse) without the erased users, as
    the DAG's first task does (jobs/mpp_jobs/erase.py, Spark in the jobs' environment)."""
    import subprocess

    # The batch jobs are not an installed package: job_env runs them from this checkout's jobs/.
    from mpp.stack import job_venvs as venvs

    python = venvs.ensure_venv("jobs") / "bin" / "python"
    argv = [str(python), "-m", "mpp_jobs.erase", "--data", str(data), "--master", "local[2]"]
    code = subprocess.call([*argv, *(["--warehouse"] if warehouse else [])], env=venvs.job_env())
    raise typer.Exit(code)
