"""Analytics on a real PostgreSQL: the aggregates equal a plain recomputation from the facts,
whatever is replayed, and an erasure leaves no trace of the user.

The workload, its recomputation and ``write`` are in workload.py (shared with the other
analytics tests).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from mpp import analytics
from mpp.analytics import MessageFact
from mpp.config import Settings

from .workload import START, aggregates, recompute, workload, write


@pytest.fixture
def conn(database_settings: Settings) -> Any:
    with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as connection:
        yield connection


def test_aggregates_equal_a_plain_recomputation_and_replays_change_nothing(
    conn: psycopg.Connection[Any], unique: str
) -> None:
    work = workload(unique)
    assert sum(1 for k, _ in work.events if k == "erase") == 2
    for batch in work.batches(37):
        write(conn, batch)
    messages, feedback = work.final_facts()
    expected = recompute(messages, feedback)
    first = aggregates(conn)
    assert first == expected
    # Sanity of the input: every aggregate has rows, and counts that can be wrong.
    assert all(first[t] for t in first)
    assert sum(r["clicks"] for r in first["campaign_performance"]) > 10
    assert {r["message_id"] for r in analytics.read_table(conn, "message_facts")} == set(messages)

    # The same input again, in other batch sizes: identical aggregates, no new facts.
    for batch in work.batches(101):
        write(conn, batch)
    assert aggregates(conn) == first
    assert len(analytics.read_table(conn, "feedback_facts")) == len(feedback)


def test_erased_user_leaves_no_trace_and_the_rest_is_exact(
    conn: psycopg.Connection[Any], unique: str
) -> None:
    work = workload(unique, messages=150, erase=0)
    for batch in work.batches(50):
        write(conn, batch)
    messages, feedback = work.final_facts()
    victim = next(iter(messages.values())).user_id
    write(conn, [("erase", victim)])
    write(conn, [("erase", victim)])  # twice: harmless
    messages = {k: v for k, v in messages.items() if v.user_id != victim}
    feedback = {k: v for k, v in feedback.items() if v.user_id != victim}
    assert aggregates(conn) == recompute(messages, feedback)
    for table in ("message_facts", "feedback_facts", "user_engagement"):
        assert conn.execute(
            f"SELECT count(*) FROM {table} WHERE user_id = %s", (victim,)
        ).fetchone() == (0,)


def test_an_erased_users_older_facts_are_never_written_back(
    conn: psycopg.Connection[Any], unique: str
) -> None:
    """The ledger: facts of an erased user sent up to the erasure, read after it (still on
    their way, or replayed), are dropped; facts sent after it count."""
    work = workload(unique, messages=60, erase=0)
    for batch in work.batches(30):
        write(conn, batch)
    messages, feedback = work.final_facts()
    victim = next(iter(messages.values())).user_id
    erased_at = START + timedelta(days=30)
    analytics.write_batch(conn, [], [], [victim], ledger={victim: ("r1", erased_at)})
    # The whole input again, and the user back with a message after the erasure.
    for batch in work.batches(30):
        write(conn, batch)
    later = MessageFact(f"{unique}-later", victim, erased_at + timedelta(minutes=1), "chat")
    before = MessageFact(f"{unique}-before", victim, erased_at - timedelta(minutes=1), "chat")
    result = analytics.write_batch(conn, [later, before], [])
    assert result.messages_inserted == 1
    kept = {k: v for k, v in messages.items() if v.user_id != victim} | {later.message_id: later}
    assert aggregates(conn) == recompute(
        kept, {k: v for k, v in feedback.items() if v.user_id != victim}
    )
    assert conn.execute(
        "SELECT message_id FROM message_facts WHERE user_id = %s", (victim,)
    ).fetchall() == [(later.message_id,)]


def test_a_re_enriched_message_replaces_its_fact_and_both_keys_are_recomputed(
    conn: psycopg.Connection[Any], unique: str
) -> None:
    at = START + timedelta(hours=3)
    first = MessageFact(f"{unique}-m", f"{unique}-u", at, "chat", ("travel",), (f"{unique}-c1",))
    again = MessageFact(f"{unique}-m", f"{unique}-u", at, "email", ("refund",), (f"{unique}-c2",))
    assert analytics.write_batch(conn, [first], []).messages_inserted == 1
    assert analytics.write_batch(conn, [first], []).messages_inserted == 0  # a plain replay
    assert analytics.write_batch(conn, [again], []).messages_inserted == 1
    assert aggregates(conn) == recompute({again.message_id: again}, {})
    # The old campaign and channel lost the message: their rows are gone, not stale.
    campaigns = {r["campaign_id"] for r in analytics.read_table(conn, "campaign_performance")}
    assert campaigns == {f"{unique}-c2"}


def test_concurrent_writers_on_the_same_campaigns_stay_exact(
    database_settings: Settings, unique: str
) -> None:
    """Two connections (two service instances) writing disjoint users about shared campaigns:
    the advisory lock keeps each recomputation from missing the other's facts."""
    import threading

    work = workload(unique, messages=300, erase=0)
    halves: list[list[tuple[str, Any]]] = [[], []]
    for kind, item in work.events:
        halves[int(item.user_id.rsplit("u", 1)[1]) % 2].append((kind, item))
    errors: list[BaseException] = []

    def run(events: list[tuple[str, Any]]) -> None:
        try:
            with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as c:
                for i in range(0, len(events), 20):
                    write(c, events[i : i + 20])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with psycopg.connect(database_settings.postgres.conninfo()) as c:
        assert aggregates(c) == recompute(*work.final_facts())
