import json
from pathlib import Path

from mpp.samples import chitchat_events, read_events


def test_chitchat_events_are_raw_events() -> None:
    events = list(chitchat_events(50))
    assert len(events) == 50
    assert {"user_id", "message", "timestamp"} <= set(events[0])
    assert len({e["user_id"] for e in events}) > 1


def test_read_events_keeps_bad_lines_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = json.dumps({"user_id": "u1", "message": "hi", "timestamp": 1})
    path.write_bytes(good.encode() + b"\n{not json\n\n" + b'{"message": "no user"}\n')
    pairs = list(read_events(path))
    assert pairs == [
        (b"u1", good.encode()),
        (None, b"{not json"),
        (None, b'{"message": "no user"}'),
    ]


def test_read_events_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user_id,message,timestamp\nu9,hello there,2026-01-01T00:00:00Z\n")
    ((key, value),) = list(read_events(path))
    assert key == b"u9"
    assert json.loads(value) == {
        "user_id": "u9",
        "message": "hello there",
        "timestamp": "2026-01-01T00:00:00Z",
    }
