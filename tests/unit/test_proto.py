import filecmp
import subprocess
import sys
from pathlib import Path

from mpp.v1 import events_pb2, feedback_pb2, recommender_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    """lib/mpp/v1 must be what scripts/gen_proto.sh makes from proto/ today."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    fresh = tmp_path / "mpp" / "v1"
    committed = ROOT / "lib" / "mpp" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file())
    _match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated files: {mismatch + errors}; run make proto"
    )


def test_messages_round_trip() -> None:
    event = events_pb2.RawConversationEvent(user_id="u1", message="hello", campaign_id="c1")
    event.timestamp.FromMilliseconds(1_767_225_600_000)
    event.metadata["source"] = "test"
    decoded = events_pb2.RawConversationEvent.FromString(event.SerializeToString())
    assert decoded == event
    assert decoded.HasField("campaign_id") and not decoded.HasField("message_id")

    dead = events_pb2.DeadLetter(
        original_value=b"\xff\x00", code=events_pb2.ERROR_CODE_TIMESTAMP_INVALID, field="timestamp"
    )
    dead.source.topic, dead.source.partition, dead.source.offset = "conversations.raw", 2, 41
    assert events_pb2.DeadLetter.FromString(dead.SerializeToString()).source.offset == 41

    feedback = feedback_pb2.FeedbackEvent(type=feedback_pb2.FEEDBACK_TYPE_CLICK)
    request = recommender_pb2.RecordFeedbackRequest(feedback=feedback)
    assert (
        recommender_pb2.RecordFeedbackRequest.FromString(request.SerializeToString()).feedback.type
        == feedback_pb2.FEEDBACK_TYPE_CLICK
    )
