"""``mpp``: the operators' command line.

mpp stack up|down|status       the local stack of real servers
mpp cluster up|down|status     a real single-node Kubernetes cluster on this machine (dev)
mpp images build [--import]    the services' images, built with buildah (dev)
mpp deploy up|down|status      the Helm chart on that cluster, against the local stack (dev)
mpp deploy observability up|down|status   Jaeger and Prometheus beside it (dev)
mpp airflow up|down|status     a local Airflow 3 for the batch DAG (dev)
mpp topics ensure|list         Kafka topics and their sizes
mpp db migrate                 PostgreSQL schema migrations
mpp catalog load-campaigns F   load or update the campaign catalog
mpp produce F                  send raw events from a JSON Lines or CSV file
mpp sample chitchat            write sample conversations as JSON Lines
mpp demo                       the platform's main job on local defaults
mpp analytics report|user|sync|charts|erase|erase-batch   analytics numbers, warehouse sync, erasure
mpp recommend USER             ask the running recommender, with its reasons
mpp keys new --name N --scopes S   a new API key and its MPP_AUTH__KEYS entry
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mpp.clikit import console, out, print_status, progress, settings
from mpp.config import Settings

try:
    from mpp.stack import SERVER_NAMES, Stack, StackError, State
except ModuleNotFoundError as missing:  # an image: the local stack is dev tooling, left out
    from mpp.devtools import is_dev_module

    if not is_dev_module(missing):
        raise
    from mpp.devtools import SERVER_NAMES, Stack, StackError, State  # type: ignore[assignment]

app = typer.Typer(
    help="Marketing personalization platform: operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local stack: real servers on loopback.", no_args_is_help=True)
services_app = typer.Typer(
    help="The platform's worker services as local processes.", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
db_app = typer.Typer(help="PostgreSQL schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Campaign and intent catalogs.", no_args_is_help=True)
sample_app = typer.Typer(help="Sample data.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(sample_app, name="sample")
analytics_app = typer.Typer(
    help="Analytics: reports, charts, the warehouse, erasure.", no_args_is_help=True
)
app.add_typer(analytics_app, name="analytics")
keys_app = typer.Typer(help="API keys of the front doors.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_settings = settings
_progress = progress


def _only(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


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


_print_status = print_status


@stack_app.command("up")
def stack_up(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Install what is missing, start every server not already running, wait until ready."""
    try:
        statuses = Stack(_settings(), _only(only), with_=_only(with_)).up(_progress)
    except StackError as exc:
        console.print(f"[red]stack up failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    _print_status(statuses)


@stack_app.command("down")
def stack_down(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Stop the servers that `stack up` started (and nothing else)."""
    try:
        stack = Stack(_settings(), _only(only), with_=_only(with_))
    except StackError as exc:
        console.print(f"[red]stack down failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    stopped = stack.down(_progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was ours)'}")


@stack_app.command("status")
def stack_status(only: OnlyOption = None, with_: WithOption = None) -> None:
    """Probe every server; exit 1 if any is down."""
    try:
        stack = Stack(_settings(), _only(only), with_=_only(with_))
    except StackError as exc:
        console.print(f"[red]stack status failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    statuses = stack.status()
    _print_status(statuses)
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
    try:
        statuses = Stack.services(_settings(), _only(only)).up(_progress)
    except StackError as exc:
        console.print(f"[red]services up failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    _print_status(statuses)


@services_app.command("down")
def services_down(only: ServicesOption = None) -> None:
    """Stop the services (SIGTERM: each finishes and commits its batch first)."""
    stopped = Stack.services(_settings(), _only(only)).down(_progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was ours)'}")


@services_app.command("status")
def services_status(only: ServicesOption = None) -> None:
    """Probe each service's /readyz; exit 1 if any is not ready."""
    statuses = Stack.services(_settings(), _only(only)).status()
    _print_status(statuses)
    if any(s.state == State.DOWN for s in statuses):
        raise typer.Exit(1)


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the platform's topics that are missing; hold every one to MPP_KAFKA__RETENTION_MS
    (the erasure deadline for Kafka)."""
    from mpp.kafka import ensure_topics

    created = ensure_topics(_settings().kafka)
    console.print(f"created: {', '.join(created) if created else 'none (all present)'}")


@topics_app.command("list")
def topics_list() -> None:
    """The platform's topics with their partitions and record counts."""
    from mpp.kafka import topic_sizes

    table = Table("topic", "partitions", "records (end - start offsets)")
    for name, (partitions, records) in topic_sizes(_settings().kafka).items():
        table.add_row(name, str(partitions), str(records))
    out.print(table)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending PostgreSQL migrations."""
    from mpp.db import migrate

    applied = migrate(_settings().postgres.conninfo())
    console.print(f"applied: {', '.join(applied) if applied else 'none (up to date)'}")


@catalog_app.command("load-campaigns")
def catalog_load_campaigns(
    path: Annotated[
        Path | None, typer.Argument(help="JSONL, JSON or CSV; default: built-in set")
    ] = None,
) -> None:
    """Validate a campaign catalog and upsert it into PostgreSQL (idempotent)."""
    from mpp.catalog import CatalogError, default_campaigns_path, parse_campaigns, upsert_campaigns
    from mpp.stores import postgres_connect

    source = path or default_campaigns_path()
    try:
        campaigns = parse_campaigns(source)
    except (CatalogError, OSError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    with postgres_connect(_settings()) as conn:
        count = upsert_campaigns(conn, campaigns)
    console.print(f"loaded {count} campaigns from {source}")


@app.command("produce")
def produce(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines or CSV of raw events")
    ],
    topic: Annotated[str | None, typer.Option(help="Default: the raw conversations topic.")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Send raw events to Kafka, keyed by user_id, with a progress bar."""
    settings = _settings()
    sent = _produce_file(settings, path, topic or settings.kafka.topics.raw, limit)
    console.print(f"sent {sent} records to {topic or settings.kafka.topics.raw}")


def _produce_file(settings: Settings, path: Path, topic: str, limit: int | None) -> int:
    from mpp.kafka import TrackedProducer
    from mpp.samples import read_events
    from mpp.tracing import configure_tracing, get_tracer, produce_span, shutdown_tracing

    total = limit or sum(1 for line in path.open("rb") if line.strip())
    if path.suffix.lower() == ".csv" and not limit:
        total -= 1
    producer = TrackedProducer(settings.kafka, service="cli")
    configure_tracing("mpp-cli")  # only when OTEL_* ask for it
    tracer = get_tracer(__name__)
    sent = 0
    with _bar() as bar:
        task = bar.add_task(f"producing to {topic}", total=total)
        for key, value in read_events(path):
            if limit is not None and sent >= limit:
                break
            # Each event its own trace, when OTEL_* turn tracing on for this command.
            with produce_span(tracer, topic):
                producer.produce(topic, value=value, key=key)
            sent += 1
            if sent % 1000 == 0:
                bar.update(task, completed=sent)
        producer.flush()
        bar.update(task, completed=sent)
    shutdown_tracing()
    return sent


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@sample_app.command("chitchat")
def sample_chitchat(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the JSON Lines.")],
    count: Annotated[int, typer.Option(min=1)] = 1000,
) -> None:
    """Write COUNT raw events from chitchat-dataset (real chats) as JSON Lines."""
    from mpp.samples import chitchat_events

    with out_path.open("w", encoding="utf-8") as f:
        written = 0
        for event in chitchat_events(count):
            f.write(json.dumps(event, ensure_ascii=False) + "\n")
            written += 1
    console.print(f"wrote {written} events to {out_path}")


@app.command("demo")
def demo(
    count: Annotated[int, typer.Option(min=1, help="Sample conversations to replay.")] = 2000,
    users: Annotated[int, typer.Option(min=0, help="Users to show at the end.")] = 3,
) -> None:
    """The main job on local defaults: stack, catalog, services, replay, what the stores hold.

    Idempotent: run it again and it reuses the running stack and services; replayed messages
    keep their ids, so the stores' counts do not grow.
    """
    from mpp.pipeline import Pipeline

    settings = _settings()
    try:
        Stack(settings).up(_progress)
        catalog_load_campaigns(None)
        Stack.services(settings).up(_progress)
    except StackError as exc:
        console.print(f"[red]demo failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    sample = Stack(settings).dir / "samples" / f"chitchat-{count}.jsonl"
    sample.parent.mkdir(parents=True, exist_ok=True)
    if not sample.exists():
        sample_chitchat(sample, count)
    _produce_file(settings, sample, settings.kafka.topics.raw, None)
    pipeline = Pipeline(settings=settings, run_id="", home=Stack(settings).dir)
    pipeline.wait_drained()
    topics_list()
    graph = pipeline.graph_counts()
    out.print(
        f"Milvus: {pipeline.milvus_count()} message vectors in "
        f"{settings.milvus.messages_collection}; Neo4j: {graph['users']} users, "
        f"{graph['messages']} messages"
    )
    top = _print_users(settings, users)
    _print_campaign_totals(settings)
    for user_id in top:
        try:
            _print_answer(_recommendations(settings, user_id, 3))
        except Exception as exc:
            console.print(f"[red]no recommendation for {user_id}:[/red] {escape(str(exc))}")
    out.print(
        "The services keep running: `make status`, `.venv/bin/mpp services status`; "
        "stop everything with `make down`."
    )


def _recommendations(settings: Settings, user_id: str, limit: int) -> dict[str, Any]:
    """The running recommender's answer over HTTP, with this stack's local API key."""
    import httpx

    from mpp.stack.services import SERVICES, local_api_key

    port = SERVICES["recommender"][1]
    key = local_api_key(Stack(settings).dir / "services")
    response = httpx.get(
        f"http://127.0.0.1:{port}/recommendations/{quote(user_id, safe='')}",
        params={"limit": limit},
        headers={"X-API-Key": key},
        timeout=10,
    )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _print_answer(answer: dict[str, Any]) -> None:
    degraded = ", ".join(answer["degraded_sources"]) or "none"
    table = Table(
        "#",
        "campaign",
        "score",
        "why",
        title=f"{answer['user_id']}: {answer['strategy']}"
        + (" (cached)" if answer["cached"] else "")
        + f", degraded sources: {degraded}",
    )
    for rank, item in enumerate(answer["items"], 1):
        reasons = "; ".join(
            f"{r['source']}/{r['kind']}: {r['detail']}" for r in item["reasons"][:3]
        )
        table.add_row(str(rank), item["campaign_id"], f"{item['score']:.3f}", reasons)
    out.print(table)


@app.command("recommend")
def recommend(
    user_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Campaigns to show.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON as it is.")] = False,
) -> None:
    """Ask the running recommender (``mpp services up``) for a user's campaigns, with reasons."""
    import httpx

    try:
        answer = _recommendations(_settings(), user_id, limit)
    except httpx.HTTPError as exc:
        console.print(
            f"[red]no answer from the recommender:[/red] {exc} "
            "(is it running? `.venv/bin/mpp services status`)"
        )
        raise typer.Exit(1) from exc
    if as_json:
        out.print_json(data=answer)
    else:
        _print_answer(answer)


def _print_campaign_totals(settings: Settings) -> None:
    """What analytics made of the replay: the campaigns that messages were about."""
    from mpp import analytics
    from mpp.stores import postgres_connect

    with postgres_connect(settings) as conn:
        totals = analytics.summary(conn)
        campaigns = analytics.campaign_report(conn, 5, None)
    out.print(
        f"Analytics (PostgreSQL): {totals['messages']} messages from {totals['users']} users; "
        "campaigns talked about most: "
        + (", ".join(f"{c['campaign_id']} ({c['messages']})" for c in campaigns) or "none")
        + ". More: `.venv/bin/mpp analytics report`."
    )


def _print_users(settings: Settings, limit: int) -> list[str]:
    """The most active users with their intents and the campaigns their messages are about."""
    from mpp.stores import neo4j_driver

    with neo4j_driver(settings) as driver:
        records, _, _ = driver.execute_query(
            """
            MATCH (u:User)-[:SENT]->(m:Message)
            WITH u, count(m) AS messages ORDER BY messages DESC, u.id LIMIT $limit
            OPTIONAL MATCH (u)-[:SENT]->(:Message)-[:HAS_INTENT]->(i:Intent)
            WITH u, messages, i.name AS intent, count(*) AS n ORDER BY n DESC
            WITH u, messages, collect(intent + " x" + toString(n))[..3] AS intents
            OPTIONAL MATCH (u)-[:SENT]->(:Message)-[:ABOUT]->(c:Campaign)
            WITH u, messages, intents, c.id AS campaign, count(*) AS n ORDER BY n DESC
            RETURN u.id AS user, messages, intents,
                   [x IN collect(campaign + " x" + toString(n)) WHERE x IS NOT NULL][..3]
                       AS campaigns
            ORDER BY messages DESC, user
            """,
            limit=limit,
        )
    table = Table("user", "messages", "top intents", "campaigns talked about")
    for r in records:
        table.add_row(
            r["user"],
            str(r["messages"]),
            ", ".join(r["intents"]) or "-",
            ", ".join(r["campaigns"]) or "-",
        )
    out.print(table)
    return [str(r["user"]) for r in records]


# -- analytics ------------------------------------------------------------------------------

SinceOption = Annotated[
    str | None, typer.Option(help="First UTC day, YYYY-MM-DD (default: all days).")
]


def _since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        console.print(f"[red]--since {value!r}:[/red] expected a day like 2026-11-28")
        raise typer.Exit(2) from exc


@analytics_app.command("report")
def analytics_report(
    limit: Annotated[int, typer.Option(min=1, help="Campaigns to show.")] = 10,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """Campaign performance and daily activity from PostgreSQL's serving tables."""
    from mpp import analytics
    from mpp.stores import postgres_connect

    day = _since(since)
    with postgres_connect(_settings()) as conn:
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
    table = Table(
        "campaign",
        "messages",
        "impressions",
        "clicks",
        "conversions",
        "dismissals",
        "CTR",
        "conversion rate",
        title="Campaign performance" + (f" since {day}" if day else ""),
    )
    for r in campaigns:
        table.add_row(
            r["campaign_id"],
            *(
                str(r[k])
                for k in ("messages", "impressions", "clicks", "conversions", "dismissals")
            ),
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

    with postgres_connect(_settings()) as conn:
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

    settings = _settings()
    configure_logging(settings, "mpp-analytics-sync")  # logs on stderr, the report on stdout
    try:
        warehouse = open_warehouse(settings)
        try:
            with postgres_connect(settings, autocommit=True) as conn:
                report = sync_warehouse(conn, warehouse, full=full)
        finally:
            warehouse.close()
    except (WarehouseError, psycopg.Error) as exc:
        console.print(f"[red]sync failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    out.print_json(data=asdict(report))


@analytics_app.command("charts")
def analytics_charts(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and index.html.")],
    limit: Annotated[int, typer.Option(min=1, help="Campaigns to chart.")] = 10,
    since: SinceOption = None,
) -> None:
    """Write campaigns.png, activity.png and an index.html page that shows them."""
    from mpp_analytics.charts import activity_chart, campaign_chart
    from mpp_analytics.web import render_page

    from mpp import analytics
    from mpp.stores import postgres_connect

    day = _since(since)
    out_dir.mkdir(parents=True, exist_ok=True)
    with postgres_connect(_settings()) as conn:
        (out_dir / "campaigns.png").write_bytes(
            campaign_chart(analytics.campaign_report(conn, limit, day))
        )
        (out_dir / "activity.png").write_bytes(
            activity_chart(
                analytics.activity_report(conn, day), analytics.activity_totals(conn, day)
            )
        )
        page = render_page(conn, limit, day)
    # The page's image links point at the service's routes; here, at the files beside it.
    page = page.replace('src="/charts/campaigns.png', 'src="campaigns.png').replace(
        'src="/charts/activity.png', 'src="activity.png'
    )
    (out_dir / "index.html").write_text(page)
    console.print(f"wrote {out_dir}/campaigns.png, activity.png and index.html")


@analytics_app.command("erase")
def analytics_erase(user_id: str) -> None:
    """Forget a user in the analytics tables and the warehouse (as users.erasure does)."""
    from dataclasses import asdict

    from mpp.analytics import erase_user
    from mpp.kafka import RetryableError
    from mpp.logs import configure_logging

    settings = _settings()
    configure_logging(settings, "mpp-analytics-erase")
    try:
        result = erase_user(settings, user_id)
    except RetryableError as exc:
        console.print(f"[red]erase failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    out.print_json(data={**asdict(result), "warehouse_pending": result.warehouse_pending})


@analytics_app.command("erase-batch")
def analytics_erase_batch(
    data: Annotated[Path, typer.Option(help="The batch data folder (raw events, Parquet).")],
    warehouse: Annotated[bool, typer.Option(help="Also erase from the warehouse.")] = True,
) -> None:
    """Rewrite the batch outputs under DATA (and the warehouse) without the erased users, as
    the DAG's first task does (jobs/mpp_jobs/erase.py, Spark in the jobs' environment)."""
    import subprocess

    jobs = Path(__file__).resolve().parents[2] / "jobs"
    sys.path.insert(0, str(jobs))
    from mpp.stack import job_venvs as venvs

    python = venvs.ensure_venv("jobs") / "bin" / "python"
    argv = [str(python), "-m", "mpp_jobs.erase", "--data", str(data), "--master", "local[2]"]
    code = subprocess.call([*argv, *(["--warehouse"] if warehouse else [])], env=venvs.job_env())
    raise typer.Exit(code)


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


DEV_COMMANDS = ("cluster", "images", "deploy", "airflow")


def _dev_only(name: str) -> Any:
    def command(ctx: typer.Context) -> None:
        from mpp.devtools import dev_only_message

        console.print(f"[red]{dev_only_message(f'mpp {name}')}[/red]")
        raise typer.Exit(2)

    return command


def _register_dev_commands() -> None:
    """The dev tooling's commands (cluster, images, deploy, airflow) where it is installed;
    in an image, each says that it is dev tooling."""
    from mpp.devtools import is_dev_module

    try:
        from mpp.stack.commands import register
    except ModuleNotFoundError as exc:  # an image: the dev tooling is left out
        if not is_dev_module(exc):
            raise
        for name in DEV_COMMANDS:
            app.command(
                name,
                help="Dev tooling: not installed in images.",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            )(_dev_only(name))
        return
    register(app)


_register_dev_commands()


def main() -> None:
    from mpp.devtools import dev_only_message, is_dev_module

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except ModuleNotFoundError as exc:  # an image: mpp.stack, mpp.samples ... are left out
        if not is_dev_module(exc):
            raise
        console.print(f"[red]{dev_only_message(exc.name or 'this command')}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
