"""Shared Hypothesis settings and strategies for the fuzz tests."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mpp.v1 import events_pb2 as E


def fuzz(examples: int) -> settings:
    """Bounded examples, no deadline (a shared 2-core machine), no database in the checkout."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Text a chat message may hold: any Unicode (controls, zero-width, combining marks, emoji,
# other scripts), with the characters PII is made of made frequent.
PII_ALPHABET = string.ascii_letters + string.digits + " .-+()@_%#:/\u00e9\u0301\u200b\n"
chat_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=PII_ALPHABET, max_size=200),
    st.lists(
        st.sampled_from(
            [
                "a@b.cd", "josé@exämple.de", "4111 1111 1111 1111", "4111.1111.1111.1111",
                "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "078-05-1120",
                "SSN", "123456789", "+44 20 7946 0958", "(555) 123-4567", "2125550143",
                "order", "#", "$", "2024-03-15", "192.168.1.1", " ", "-", ".", "@", "1", "x",
            ]
        ),
        max_size=30,
    ).map("".join),
)  # fmt: skip

user_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}", fullmatch=True),
    st.text(max_size=140),
)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
seconds = st.one_of(st.integers(min_value=0, max_value=7_258_118_400), int64)


@st.composite
def raw_events(draw: st.DrawFn) -> E.RawConversationEvent:
    """Any RawConversationEvent protobuf can carry: valid-looking and not."""
    event = E.RawConversationEvent(user_id=draw(user_ids), message=draw(chat_text))
    if draw(st.booleans()):
        event.timestamp.seconds = draw(seconds)
        event.timestamp.nanos = draw(st.one_of(st.integers(0, 999_999_999), int32))
    for name in ("message_id", "campaign_id", "channel", "locale"):
        if draw(st.booleans()):
            setattr(
                event,
                name,
                draw(
                    st.one_of(
                        st.from_regex(r"[a-z0-9\-]{1,12}", fullmatch=True), st.text(max_size=40)
                    )
                ),
            )
    for key, value in draw(
        st.dictionaries(st.text(max_size=70), st.text(max_size=1100), max_size=35)
    ).items():
        event.metadata[key] = value
    return event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "user_id",
    "message",
    "timestamp",
    "message_id",
    "campaign_id",
    "channel",
    "locale",
    "metadata",
]
json_timestamps = st.one_of(
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "+14:00"),
    st.integers(min_value=0, max_value=2**70).map(str),
)


@st.composite
def json_events(draw: st.DrawFn) -> dict[str, object]:
    """JSON objects with the event's field names (and others) and values of any JSON type."""
    keys = draw(st.lists(st.sampled_from([*FIELDS, "userId", "extra"]), unique=True))
    event: dict[str, object] = {}
    for key in keys:
        if key in ("user_id", "message"):
            event[key] = draw(st.one_of(chat_text, json_values))
        elif key == "timestamp":
            event[key] = draw(st.one_of(json_timestamps, json_values))
        elif key == "metadata":
            event[key] = draw(
                st.one_of(st.dictionaries(st.text(max_size=10), json_values), json_values)
            )
        else:
            event[key] = draw(json_values)
    return event
