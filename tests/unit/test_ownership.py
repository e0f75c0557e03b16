"""A message_id belongs to the user who sent it first (mpp.ownership, the writers' plan)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mpp.ownership import RecentOwners, chained, screen_owners
from mpp.v1 import events_pb2 as E
from mpp.writers import Plan


def enriched(message_id: str, user_id: str) -> E.EnrichedMessage:
    out = E.EnrichedMessage()
    out.message.message_id = message_id
    out.message.user_id = user_id
    return out


class Store:
    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners
        self.asked: list[list[str]] = []

    def __call__(self, ids: Sequence[str]) -> Mapping[str, str]:
        self.asked.append(list(ids))
        return {i: self.owners[i] for i in ids if i in self.owners}


def test_an_id_another_user_owns_is_refused_with_message_id_conflict() -> None:
    store = Store({"m1": "alice"})
    recent = RecentOwners()
    batch = [enriched("m1", "mallory"), enriched("m1-replay", "alice"), enriched("m2", "bob")]
    refused = screen_owners(batch, store, recent)
    assert [(e.message.message_id, r.code) for e, r in refused] == [
        ("m1", E.ERROR_CODE_MESSAGE_ID_CONFLICT)
    ]
    assert "alice" not in refused[0][1].detail  # the owner is another user: never named
    # One query for the whole batch.
    assert store.asked == [["m1", "m1-replay", "m2"]]
    # The owner's own replay is no conflict.
    assert screen_owners([enriched("m1", "alice")], store, recent) == []


def test_a_batch_prepared_before_the_previous_was_written_still_sees_its_owners() -> None:
    store = Store({})  # the previous batch is not in the store yet
    recent = RecentOwners()
    assert screen_owners([enriched("m9", "alice")], store, recent) == []
    refused = screen_owners([enriched("m9", "mallory")], store, recent)
    assert [e.message.user_id for e, _ in refused] == ["mallory"]
    # After alice's erasure the id is free again.
    recent.forget_user("alice")
    assert screen_owners([enriched("m9", "mallory")], store, recent) == []


def test_recent_owners_are_bounded() -> None:
    recent = RecentOwners(size=2)
    recent.remember({"a": "u", "b": "u", "c": "u"})
    assert recent.get("a") is None and recent.get("c") == "u"


def test_screens_chain_on_what_the_earlier_ones_let_through() -> None:
    def first(ms: Sequence[E.EnrichedMessage]) -> list[tuple[E.EnrichedMessage, object]]:
        return [(m, "dim") for m in ms if m.message.message_id == "x"]

    seen: list[str] = []

    def second(ms: Sequence[E.EnrichedMessage]) -> list[tuple[E.EnrichedMessage, object]]:
        seen.extend(m.message.message_id for m in ms)
        return []

    out = chained(first, second)([enriched("x", "u"), enriched("y", "u")])  # type: ignore[arg-type]
    assert [m.message.message_id for m, _ in out] == ["x"] and seen == ["y"]


def test_within_one_batch_the_first_user_keeps_the_id() -> None:
    plan = Plan()
    first, second = object(), object()
    plan.add(enriched("m1", "alice"), first)  # type: ignore[arg-type]
    plan.add(enriched("m1", "mallory"), second)  # type: ignore[arg-type]
    assert plan.messages["m1"].message.user_id == "alice"
    assert [(origin, r.code) for origin, r in plan.rejected] == [
        (second, E.ERROR_CODE_MESSAGE_ID_CONFLICT)
    ]
    # A replay by the same user still replaces (the last record wins).
    plan.add(enriched("m1", "alice"), first)  # type: ignore[arg-type]
    assert len(plan.rejected) == 1
