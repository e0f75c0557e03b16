"""``mpp``: the operators' command line (the one shipped in the images).

mpp stack up|down|status       the local stack of real servers (dev)
mpp services up|down|status    the worker services as local processes (dev)
mpp cluster up|down|status     a real single-node Kubernetes cluster on this machine (dev)
mpp images build [--import]    the services' images, built with buildah (dev)
mpp deploy up|down|status      the Helm chart on that cluster, against the local stack (dev)
mpp deploy observability up|down|status   Jaeger and Prometheus beside it (dev)
mpp airflow up|down|status     a local Airflow 3 for the batch DAG (dev)
mpp topics ensure|list         Kafka topics and their sizes
mpp db migrate                 PostgreSQL schema migrations
mpp catalog load-campaigns F   load or update the campaign catalog
mpp produce F                  send raw events from a JSON Lines or CSV file (dev)
mpp sample chitchat            write sample conversations as JSON Lines (dev)
mpp demo                       the platform's main job on local defaults (dev)
mpp analytics report|user|sync|charts|erase|erase-batch   analytics numbers, warehouse sync, erasure
mpp recommend USER             ask the running recommender, with its reasons (dev)
mpp keys new --name N --scopes S   a new API key and its MPP_AUTH__KEYS entry

The commands marked (dev) are the dev tooling's (mpp.stack.cli), attached here where it is
installed; in an image each of them says that it is dev tooling (mpp.devtools). Commands of a
service package (``mpp analytics charts``: mpp_analytics.cli) come in through the entry point
group ``mpp.cli`` (see load_extensions below), so that this module imports no service
package and no batch job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mpp.clikit import SinceOption, console, fails_with, out, parse_since, settings
from mpp.devtools import add_stand_ins, dev_only_message, is_dev_module

app = typer.Typer(
    help="Marketing personalization platform: operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
db_app = typer.Typer(help="PostgreSQL schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Campaign and intent catalogs.", no_args_is_help=True)
analytics_app = typer.Typer(
    help="Analytics: reports, charts, the warehouse, erasure.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys of the front doors.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(analytics_app, name="analytics")
app.add_typer(keys_app, name="keys")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the platform's topics that are missing; hold every one to MPP_KAFKA__RETENTION_MS
    (the erasure deadline for Kafka)."""
    from mpp.kafka import ensure_topics

    created = ensure_topics(settings().kafka)
    console.print(f"created: {', '.join(created) if created else 'none (all present)'}")


@topics_app.command("list")
def topics_list() -> None:
    """The platform's topics with their partitions and record counts."""
    from mpp.kafka import topic_sizes

    table = Table("topic", "partitions", "records (end - start offsets)")
    for name, (partitions, records) in topic_sizes(settings().kafka).items():
        table.add_row(name, str(partitions), str(records))
    out.print(table)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending PostgreSQL migrations."""
    from mpp.db import migrate

    applied = migrate(settings().postgres.conninfo())
    console.print(f"applied: {', '.join(applied) if applied else 'none (up to date)'}")


@catalog_app.command("load-campaigns")
def catalog_load_campaigns(
    path: Annotated[
        Path | None, typer.Argument(help="JSONL, JSON or CSV; default: built-in set")
    ] = None,
) -> None:
    """Validate a campaign catalog and upsert it into PostgreSQL (idempotent)."""
    from mpp.catalog import CatalogError, default_campaigns_path, parse_campaigns
    from mpp.stores import postgres_connect
    from mpp.stores.campaigns import upsert_campaigns

    source = path or default_campaigns_path()
    with fails_with((CatalogError, OSError), code=2):
        campaigns = parse_campaigns(source)
    with postgres_connect(settings()) as conn:
        count = upsert_campaigns(conn, campaigns)
    console.print(f"loaded {count} campaigns from {source}")


# -- analytics ------------------------------------------------------------------------------


@analytics_app.command("report")
def analytics_report(
    limit: Annotated[int, typer.Option(min=1, help="Campaigns to show.")] = 10,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """Campaign performance and daily activity from PostgreSQL's serving tables."""
    from mpp import analytics
    from mpp.stores import postgres_connect

    day = parse_since(since)
    with postgres_connect(settings()) as conn:
        totals = analytics.summary(conn)
        campaigns = analytics.campaign_report(conn, limit, day)
        activity = analytics.activity_totals(conn, day)
    if as_json:
        document = {"summary": totals, "campaigns": campaigns, "daily_activity": activity}
        out.print_json(data=analytics.jsonable(document))
        return
    out.print(
        f"{totals['messages']} messages, {totals['feedback_events']} feedback events, "
        f"{totals['users']} users, {totals['campaigns']} campaigns; UTC days "
        f"{totals['first_day'] or '-'} to {totals['last_day'] or '-'}"
    )
    counts = ("messages", "impressions", "clicks", "conversions", "dismissals")
    table = Table(
        "campaign",
        *counts,
        "CTR",
        "conversion rate",
        title="Campaign performance" + (f" since {day}" if day else ""),
    )
    for r in campaigns:
        table.add_row(
            r["campaign_id"],
            *(str(r[k]) for k in counts),
            f"{100 * r['ctr']:.1f}%",
            f"{100 * r['conversion_rate']:.1f}%",
        )
    out.print(table)
    daily = Table("day (UTC)", "messages", "active users", title="Daily activity")
    for r in activity:
        daily.add_row(r["day"].isoformat(), str(r["messages"]), str(r["active_users"]))
    out.print(daily)


@analytics_app.command("user")
def analytics_user(user_id: str) -> None:
    """One user's engagement (exit 1 when the user has none)."""
    from mpp import analytics
    from mpp.stores import postgres_connect

    with postgres_connect(settings()) as conn:
        row = analytics.user_engagement(conn, user_id)
    if row is None:
        console.print(f"no engagement for user {user_id!r}")
        raise typer.Exit(1)
    out.print_json(data=analytics.jsonable(row))


@analytics_app.command("sync")
def analytics_sync(
    full: Annotated[bool, typer.Option(help="Send every fact again, not only new ones.")] = False,
) -> None:
    """Sync facts and aggregates to the configured warehouse (SQLite or BigQuery) now."""
    from dataclasses import asdict

    import psycopg

    from mpp.logs import configure_logging
    from mpp.stores import postgres_connect
    from mpp.warehouse import WarehouseError, open_warehouse
    from mpp.warehouse.sync import sync_warehouse

    config = settings()
    configure_logging(config, "mpp-analytics-sync")  # logs on stderr, the report on stdout
    with fails_with((WarehouseError, psycopg.Error), "sync"):
        warehouse = open_warehouse(config)
        try:
            with postgres_connect(config, autocommit=True) as conn:
                report = sync_warehouse(conn, warehouse, full=full)
        finally:
            warehouse.close()
    out.print_json(data=asdict(report))


@analytics_app.command("erase")
def analytics_erase(user_id: str) -> None:
    """Forget a user in the analytics tables and the warehouse (as users.erasure does)."""
    from dataclasses import asdict

    from mpp.analytics import erase_user
    from mpp.errors import RetryableError
    from mpp.logs import configure_logging

    config = settings()
    configure_logging(config, "mpp-analytics-erase")
    with fails_with(RetryableError, "erase"):
        result = erase_user(config, user_id)
    out.print_json(data={**asdict(result), "warehouse_pending": result.warehouse_pending})


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="The key's name (logs, rate limits, errors).")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: recommendations:read, feedback:write, users:erase, "
            "analytics:read, admin."
        ),
    ],
    rate_per_s: Annotated[
        float | None, typer.Option(help="Requests per second per process (default 100).")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="Requests at once (default 200).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: key, entry.")] = False,
) -> None:
    """Make a random API key: print it once, with the entry to add to MPP_AUTH__KEYS (which
    keeps only its SHA-256; the key itself is shown here and nowhere else)."""
    from pydantic import ValidationError

    from mpp.auth import key_entry, new_key

    key = new_key()
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    try:
        entry = key_entry(name, key, wanted, rate_per_s, burst)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        console.print(f"[red]not a valid key:[/red] {problems}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps({"key": key, "entry": entry}))
        return
    typer.echo(f"key (shown once; give it to the client, store it nowhere else):\n{key}\n")
    typer.echo("its entry in MPP_AUTH__KEYS (a JSON list of such entries):")
    typer.echo(json.dumps(entry))


# The entry point group through which installed packages add commands to ``mpp``: each entry
# names a function that takes this Typer app (and may add to a group of it, found with
# mpp.clikit.subgroup). pyproject.toml declares the project's own:
#   [project.entry-points."mpp.cli"]
#   analytics = "mpp_analytics.cli:register"
EXTENSION_GROUP = "mpp.cli"


def load_extensions(app: typer.Typer) -> None:
    """Let each extension of EXTENSION_GROUP add its commands to ``app``. By name, never by an
    import statement: this entry point imports no service package. An extension whose own
    package is not installed is left out; any other import error is raised."""
    from importlib import import_module
    from importlib.metadata import entry_points

    for target in (e.value for e in entry_points(group=EXTENSION_GROUP)):
        module_name, _, attribute = target.partition(":")
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name.split(".")[0]:
                raise
            continue
        getattr(module, attribute)(app)


def attach_dev_commands(app: typer.Typer) -> None:
    """The dev tooling's commands (mpp.devtools.DEV_COMMANDS) where it is installed; in an
    image, a stand-in for each that says it is dev tooling."""
    try:
        from mpp.stack.cli import register
    except ModuleNotFoundError as exc:  # an image: the dev tooling is left out
        if not is_dev_module(exc):
            raise
        add_stand_ins(app)
        return
    register(app)


def keep_help_order(app: typer.Typer) -> None:
    """List the groups and the analytics commands in ``mpp --help`` in one fixed order, however
    they were added (here, by an extension, by the dev tooling)."""

    def rank(order: tuple[str, ...], name: str | None) -> int:
        return order.index(name) if name in order else len(order)

    groups = ("stack", "services", "topics", "db", "catalog", "sample", "analytics", "keys")
    app.registered_groups.sort(key=lambda info: rank(groups, info.name))
    analytics = ("report", "user", "sync", "charts", "erase", "erase-batch")
    analytics_app.registered_commands.sort(key=lambda info: rank(analytics, info.name))


load_extensions(app)
attach_dev_commands(app)
keep_help_order(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:  # an image: a dev module that a command reached for
        if not is_dev_module(exc):
            raise
        console.print(f"[red]{dev_only_message(exc.name or 'this command')}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
