"""A message_id belongs to the user who sent it first.

A producer may give its own message_id, so a later event of another user can carry an id that
is already taken (by mistake, or to pull someone's message into another account). An upsert
by message_id would then move the message: the first user's vector, node or fact would become
the second user's, and the first user's erasure would miss it. The writers refuse that: before
writing a batch, a store is asked who owns its ids (one query per batch), and a message whose
id another user owns is dead-lettered as ``MESSAGE_ID_CONFLICT``; the stored message stays
as it was.

A writer prepares a batch while the previous one is still being written (``mpp.kafka``'s
staged handler), so the store alone may not know yet of an id the previous batch takes:
``RecentOwners`` remembers the owners of the messages a writer accepted lately.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from mpp.codecs import Rejection
from mpp.v1 import events_pb2

Conflicts = list[tuple[events_pb2.EnrichedMessage, Rejection]]


class RecentOwners:
    """message_id -> user_id of the last ``size`` messages accepted; thread-safe."""

    def __init__(self, size: int = 200_000) -> None:
        self._size = size
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, message_id: str) -> str | None:
        with self._lock:
            return self._owners.get(message_id)

    def remember(self, owners: Mapping[str, str]) -> None:
        with self._lock:
            for message_id, user_id in owners.items():
                self._owners[message_id] = user_id
                self._owners.move_to_end(message_id)
            while len(self._owners) > self._size:
                self._owners.popitem(last=False)

    def forget_user(self, user_id: str) -> None:
        """An erased user's ids are free again (the store no longer holds them either)."""
        with self._lock:
            for message_id in [k for k, v in self._owners.items() if v == user_id]:
                del self._owners[message_id]


def conflict(message_id: str) -> Rejection:
    """The dead letter's reason (the owner is not named: it is another user)."""
    return Rejection(
        events_pb2.ERROR_CODE_MESSAGE_ID_CONFLICT,
        "message.message_id",
        f"message_id {message_id[:80]!r} already belongs to another user's "
        "message; it is not moved. Give each message its own id (or leave message_id out to "
        "have one derived)",
    )


def screen_owners(
    messages: Sequence[events_pb2.EnrichedMessage],
    stored_owners: Callable[[Sequence[str]], Mapping[str, str]],
    recent: RecentOwners,
) -> Conflicts:
    """The messages whose id another user owns (in ``recent``, else in the store, asked once
    for the ids ``recent`` does not know), each with its ``MESSAGE_ID_CONFLICT`` rejection.
    The others are remembered in ``recent`` as their users'."""
    known = {m.message.message_id: recent.get(m.message.message_id) for m in messages}
    unknown = [i for i, owner in known.items() if owner is None]
    stored = stored_owners(unknown) if unknown else {}
    refused: Conflicts = []
    accepted: dict[str, str] = {}
    for enriched in messages:
        message = enriched.message
        owner = known.get(message.message_id) or stored.get(message.message_id)
        if owner is not None and owner != message.user_id:
            refused.append((enriched, conflict(message.message_id)))
        else:
            accepted[message.message_id] = message.user_id
    recent.remember(accepted)
    return refused


Screen = Callable[[Sequence[events_pb2.EnrichedMessage]], Conflicts]


def chained(*screens: Screen) -> Screen:
    """Screens run one after the other, each on the messages the ones before let through."""

    def screen(messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        refused: Conflicts = []
        left = list(messages)
        for one in screens:
            if not left:
                break
            out = one(left)
            refused += out
            gone = {id(enriched) for enriched, _ in out}
            left = [m for m in left if id(m) not in gone]
        return refused

    return screen
