"""The dev commands that feed and show the local platform: ``mpp produce``, ``mpp sample
chitchat``, ``mpp demo`` and ``mpp recommend`` (registered by mpp.stack.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mpp.clikit import console, fails_with, out, progress, settings
from mpp.config import Settings
from mpp.stack import Stack, StackError

sample_app = typer.Typer(help="Sample data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sample_app, name="sample")
    app.command("produce")(produce)
    app.command("demo")(demo)
    app.command("recommend")(recommend)


def produce(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines or CSV of raw events")
    ],
    topic: Annotated[str | None, typer.Option(help="Default: the raw conversations topic.")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Send raw events to Kafka, keyed by user_id, with a progress bar."""
    config = settings()
    sent = _produce_file(config, path, topic or config.kafka.topics.raw, limit)
    console.print(f"sent {sent} records to {topic or config.kafka.topics.raw}")


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


def demo(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, help="Sample conversations to replay.")] = 2000,
    users: Annotated[int, typer.Option(min=0, help="Users to show at the end.")] = 3,
) -> None:
    """The main job on local defaults: stack, catalog, services, replay, what the stores hold.

    Idempotent: run it again and it reuses the running stack and services; replayed messages
    keep their ids, so the stores' counts do not grow.
    """
    from mpp.pipeline import Pipeline

    config = settings()
    with fails_with(StackError, "demo"):
        Stack(config).up(progress)
        _run_command(ctx, "catalog", "load-campaigns")
        Stack.services(config).up(progress)
    sample = Stack(config).dir / "samples" / f"chitchat-{count}.jsonl"
    sample.parent.mkdir(parents=True, exist_ok=True)
    if not sample.exists():
        sample_chitchat(sample, count)
    _produce_file(config, sample, config.kafka.topics.raw, None)
    pipeline = Pipeline(settings=config, run_id="", home=Stack(config).dir)
    pipeline.wait_drained()
    _run_command(ctx, "topics", "list")
    graph = pipeline.graph_counts()
    out.print(
        f"Milvus: {pipeline.milvus_count()} message vectors in "
        f"{config.milvus.messages_collection}; Neo4j: {graph['users']} users, "
        f"{graph['messages']} messages"
    )
    top = _print_users(config, users)
    _print_campaign_totals(config)
    for user_id in top:
        try:
            _print_answer(_recommendations(config, user_id, 3))
        except Exception as exc:
            console.print(f"[red]no recommendation for {user_id}:[/red] {escape(str(exc))}")
    out.print(
        "The services keep running: `make status`, `.venv/bin/mpp services status`; "
        "stop everything with `make down`."
    )


def _run_command(ctx: typer.Context, *words: str) -> None:
    """Run ``mpp <words>`` (an operator command of mpp.cli) with its defaults, as a step of
    this one; by name through click, since the dev tooling does not import mpp.cli."""
    command: Any = ctx.find_root().command
    for word in words:
        command = command.get_command(ctx, word)
    ctx.invoke(command)


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


def recommend(
    user_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Campaigns to show.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON as it is.")] = False,
) -> None:
    """Ask the running recommender (``mpp services up``) for a user's campaigns, with reasons."""
    import httpx

    hint = "(is it running? `.venv/bin/mpp services status`)"
    try:
        answer = _recommendations(settings(), user_id, limit)
    except httpx.HTTPError as exc:
        console.print(f"[red]no answer from the recommender:[/red] {exc} {hint}")
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
