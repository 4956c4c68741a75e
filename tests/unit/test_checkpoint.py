from datetime import UTC, datetime, timedelta

import pytest

from connector.checkpoint import (
    Checkpoint,
    RunSummary,
    backfill_feed_name,
    decode_checkpoint,
    encode_checkpoint,
)
from connector.errors import CheckpointFormatError
from connector.ledger import LedgerEntry, epoch_ms

T0 = datetime(2026, 3, 10, 10, 0, 0, 109_000, tzinfo=UTC)


def test_checkpoint_round_trips_through_json():
    original = Checkpoint(
        feed="live",
        high_water_mark=T0,
        coverage_start=T0 - timedelta(days=1),
        slice_span=timedelta(hours=2),
        ledger={"abc": LedgerEntry(epoch_ms(T0), "Delivered", 1)},
        last_run=RunSummary("s", "f", "completed", 3, 1, 2, 1),
        updated=T0,
    )

    assert decode_checkpoint(encode_checkpoint(original), where="test") == original


def test_newer_format_version_is_refused_with_advice():
    with pytest.raises(CheckpointFormatError, match="format_version 99"):
        decode_checkpoint(b'{"format_version": 99, "feed": "live"}', where="blob")


def test_garbage_is_refused_naming_the_location():
    with pytest.raises(CheckpointFormatError, match="blob-x is not valid JSON"):
        decode_checkpoint(b"{not json", where="blob-x")


def test_malformed_ledger_entry_is_refused():
    with pytest.raises(CheckpointFormatError, match="malformed"):
        decode_checkpoint(b'{"format_version": 1, "feed": "live", "ledger": {"k": ["x"]}}', where="b")


def test_backfill_feed_name_encodes_the_range():
    name = backfill_feed_name(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 6, tzinfo=UTC))

    assert name == "backfill/20260101T000000Z_20260102T060000Z"
