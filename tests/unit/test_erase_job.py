"""The batch erasure's pure parts (jobs/mpp_jobs/erase.py): who goes, JSON Lines rewritten in
place, the Parquet datasets found. The Parquet rewrite itself runs with Spark in
tests/e2e/test_erasure_everywhere.py."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))

from mpp_jobs.erase import ErasedUsers, dataset_root, erase_files, erase_lines

from mpp.ids import user_hash

KEY, OLD_KEY = b"k" * 32, b"o" * 32
ERASED_AT = datetime(2026, 11, 1, tzinfo=UTC)


def users() -> ErasedUsers:
    # "gone" was erased under the current key, "rotated" under the previous one.
    erased = {user_hash("gone", KEY): ERASED_AT, user_hash("rotated", OLD_KEY): ERASED_AT}
    return ErasedUsers(erased, (KEY, OLD_KEY))


def line(user: str, ts: object, text: str = "hello") -> str:
    return json.dumps({"user_id": user, "timestamp": ts, "message": text})


def test_rows_of_erased_users_up_to_their_erasure_go_under_any_key_in_use() -> None:
    u = users()
    before, after = datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    assert u.drops("gone", before) and u.drops("gone", ERASED_AT) and u.drops("gone", None)
    assert u.drops("rotated", before)
    assert not u.drops("gone", after)  # came back later: kept
    assert not u.drops("kept", before) and not u.drops(None, before)


def test_json_lines_are_rewritten_without_the_erased_users_lines(tmp_path: Path) -> None:
    path = tmp_path / "day=2026-10-31" / "events.jsonl"
    path.parent.mkdir()
    crc = path.with_name(".events.jsonl.crc")
    lines = [
        line("gone", "2026-10-31T10:00:00Z", "my secret plan"),
        line("kept", "2026-10-31T10:00:00Z"),
        line("gone", "2026-11-03T10:00:00Z", "back again"),
        line("rotated", 1_790_000_000_000),
        "not json at all",
        line("gone", "garbage time"),
    ]
    path.write_text("\n".join(lines) + "\n")
    crc.write_bytes(b"stale")
    assert erase_lines(path, users()) == 3
    assert "my secret plan" not in path.read_text()
    assert path.read_text().splitlines() == [lines[1], lines[2], lines[4]]
    assert not crc.exists()  # Spark would refuse the file against a stale checksum
    assert erase_lines(path, users()) == 0  # idempotent


def test_files_are_walked_and_parquet_datasets_found_above_partitions(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_text(line("gone", "2026-10-01T00:00:00Z") + "\n")
    summary = erase_files(tmp_path, users(), spark=None)
    assert summary.lines_removed == {"raw/a.jsonl": 1}
    assert summary.erased_users == 2
    part = tmp_path / "out" / "enriched" / "day=2026-10-31" / "part-0.parquet"
    assert dataset_root(part) == tmp_path / "out" / "enriched"
