import functools
import json
from datetime import UTC, datetime, timedelta

import pytest

from connector.checkpoint import (
    JOURNAL_MAX_BLOCKS,
    MAX_JOURNAL_LINE,
    backfill_feed_name,
    check_feed_name,
    compaction_due,
    decode_checkpoint,
    decode_snapshot,
    encode_checkpoint,
    encode_journal_line,
    encode_snapshot,
    replay_journal,
    seal_line,
    slice_feed_name,
)
from connector.errors import CheckpointFormatError
from connector.ledger import Decision, LedgerChange, LedgerEntry, epoch_ms
from connector.report import LAST_RUN_FIELDS
from connector.state import Checkpoint, FeedProgress, IntentEntry, PendingBatch

T0 = datetime(2026, 3, 10, 10, 0, 0, 109_000, tzinfo=UTC)


LAST_RUN = {
    "started": "2026-03-10T10:00:00.000000Z",
    "finished": "2026-03-10T10:01:00.000000Z",
    "outcome": "completed",
    "rows_uploaded": 3,
    "revisions": 1,
    "duplicates_dropped": 2,
    "batches": 1,
    "error": None,
    "dead_lettered": 0,
    "possible_duplicates": 0,
}


def test_checkpoint_round_trips_through_json():
    original = Checkpoint(
        progress=FeedProgress(
            feed="live",
            high_water_mark=T0,
            coverage_start=T0 - timedelta(days=1),
            slice_span=timedelta(hours=2),
            last_run=LAST_RUN,
            updated=T0,
            possible_duplicates_total=4,
            pending_batch=PendingBatch(
                created=T0,
                entries=(
                    IntentEntry("abc", epoch_ms(T0), "Delivered", 1, "9f86d081884c7d659a2feaa0c55ad015"),
                ),
            ),
        ),
        ledger={"abc": LedgerEntry(epoch_ms(T0), "Delivered", 1)},
    )

    assert decode_checkpoint(encode_checkpoint(original), where="test") == original


def test_document_written_by_the_previous_release_reads_unchanged():
    """Deployed feeds upgrade in place: the format and the last-run keys are those of release 0.1.0."""
    stored = (
        b'{"format_version":1,"feed":"backfill/20260101T000000Z_20260102T000000Z",'
        b'"high_water_mark":"2026-01-01T12:00:00.000000Z","coverage_start":null,'
        b'"range":{"start":"2026-01-01T00:00:00.000000Z","end":"2026-01-02T00:00:00.000000Z"},'
        b'"slice_span_seconds":7200,"ledger":{"k1":[1767268800000,"Pending",0]},'
        b'"last_run":{"started":"s","finished":"f","outcome":"budget_exhausted","rows_uploaded":5,'
        b'"revisions":0,"duplicates_dropped":1,"batches":1,"error":null,"dead_lettered":2,'
        b'"possible_duplicates":0},"updated":"2026-01-01T12:00:05.000000Z","possible_duplicates_total":0,'
        b'"pending_batch":{"created":"2026-01-01T12:00:01.000000Z","entries":[["k2",1767268800000,'
        b'"Delivered",1,"trace-2"]]}}'
    )

    checkpoint = decode_checkpoint(stored, where="old")

    assert checkpoint.progress.range_end == datetime(2026, 1, 2, tzinfo=UTC)
    assert checkpoint.progress.slice_span == timedelta(hours=2)
    assert checkpoint.ledger == {"k1": LedgerEntry(1767268800000, "Pending", 0)}
    assert checkpoint.progress.last_run is not None
    assert checkpoint.progress.last_run["dead_lettered"] == 2
    assert checkpoint.progress.pending_batch is not None
    assert checkpoint.progress.pending_batch.entries[0].legacy_trace_id == "trace-2"
    assert set(checkpoint.progress.last_run) == set(LAST_RUN_FIELDS)
    assert encode_checkpoint(checkpoint) == stored


def test_the_intent_holds_row_ids_and_no_trace_id():
    """With a trace id beside them, the ledger's digests could be tried against a list of addresses."""
    pending = PendingBatch(created=T0, entries=(IntentEntry("abc", epoch_ms(T0), "Delivered", 1, "f" * 32),))
    checkpoint = Checkpoint(progress=FeedProgress(feed="live", pending_batch=pending), ledger={})

    document = json.loads(encode_checkpoint(checkpoint))

    assert document["pending_batch"] == {
        "created": "2026-03-10T10:00:00.109000Z",
        "rows": [["abc", epoch_ms(T0), "Delivered", 1, "f" * 32]],
    }


def test_last_run_keys_a_newer_version_adds_are_ignored():
    document = b'{"format_version":1,"feed":"live","last_run":{"outcome":"completed","new_counter":7}}'

    checkpoint = decode_checkpoint(document, where="newer")

    assert checkpoint.progress.last_run is not None
    assert checkpoint.progress.last_run["outcome"] == "completed"
    assert "new_counter" not in checkpoint.progress.last_run


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


def test_feed_names_the_connector_makes_are_accepted():
    backfill = backfill_feed_name(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 6, tzinfo=UTC))

    assert check_feed_name("live") == "live"
    assert check_feed_name(backfill) == backfill


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../x",
        "live/../x",
        "live/",
        "LIVE",
        "live\n",
        "backfill/",
        "backfill/../../x",
        "backfill/20260101T000000Z_20260102T060000Z/../../live",
        "backfill/20260101T000000Z_20260102T060000Z.json",
        "backfill/20261301T000000Z_20261302T000000Z",
        "backfill/20260101T000000Z",
        "backfill/\uff12\uff10\uff12\uff16\uff10\uff11\uff10\uff11T000000Z_20260102T060000Z",
    ],
)
def test_anything_else_is_not_a_feed_name_and_says_what_is(name):
    with pytest.raises(ValueError, match=r"is not a feed: give live, backfill/<YYYYmmddTHHMMSSZ>_"):
        check_feed_name(name)


def test_a_queued_slice_inside_its_backfill_is_a_feed_name():
    job = backfill_feed_name(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))
    name = slice_feed_name(job, datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))

    assert name == "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z_20260103T000000Z"
    assert check_feed_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "backfill/20260101T000000Z_20260111T000000Z/",
        "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20251231T000000Z_20260102T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20260110T000000Z_20260112T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20260103T000000Z_20260102T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z_20260102T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z_20260103T000000Z/x",
        "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z_20260103T000000Z/"
        "20260102T000000Z_20260103T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/../20260102T000000Z_20260103T000000Z",
        "backfill/20260101T000000Z_20260111T000000Z/20260102T000000Z_20260103T000000Z.json",
    ],
)
def test_a_slice_name_outside_its_backfill_or_of_another_form_is_refused(name):
    with pytest.raises(ValueError, match="is not a feed"):
        check_feed_name(name)


def test_stall_count_round_trips_and_is_absent_from_a_healthy_feeds_document():
    healthy = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0), ledger={})
    stalled = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0, stalled_runs=2), ledger={})

    assert b"stalled_runs" not in encode_checkpoint(healthy)
    assert decode_checkpoint(encode_checkpoint(stalled), where="t").progress.stalled_runs == 2
    assert decode_checkpoint(encode_checkpoint(healthy), where="t").progress.stalled_runs == 0


def test_stray_lone_surrogate_in_a_run_summary_does_not_stop_the_save():
    summary = {**LAST_RUN, "outcome": "failed", "error": "the service said: \ud83d"}
    checkpoint = Checkpoint(progress=FeedProgress(feed="live", last_run=summary), ledger={})

    decoded = decode_checkpoint(encode_checkpoint(checkpoint), where="t")

    assert decoded.progress.last_run is not None
    assert decoded.progress.last_run["error"] == "the service said: \ud83d"


def test_waiting_for_permission_round_trips_and_old_documents_without_it_still_read():
    waiting = Checkpoint(
        progress=FeedProgress(feed="live", high_water_mark=T0, waiting_for_permission_since=T0), ledger={}
    )
    healthy = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0), ledger={})

    assert b"waiting_for_permission_since" not in encode_checkpoint(healthy)
    assert (
        decode_checkpoint(encode_checkpoint(waiting), where="t").progress.waiting_for_permission_since == T0
    )
    assert (
        decode_checkpoint(encode_checkpoint(healthy), where="t").progress.waiting_for_permission_since is None
    )


# ---------------------------------------------------------------------------- format 2: snapshot + journal


def _entries(n: int) -> dict[str, LedgerEntry]:
    return {
        f"{i:032x}": LedgerEntry(epoch_ms(T0) + i, "Delivered" if i % 2 else "Pending", i % 3)
        for i in range(n)
    }


def test_a_snapshot_reads_back_with_its_journal_name():
    original = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0), ledger=_entries(5))

    data = encode_snapshot(original, journal="journal/live/abc.jsonl")

    assert data.count(b"\n") == 6  # the header and one line per entry
    assert decode_snapshot(data, where="t") == (original, "journal/live/abc.jsonl")


def test_a_truncated_snapshot_is_refused_not_read_short():
    data = encode_snapshot(Checkpoint(progress=FeedProgress(feed="live"), ledger=_entries(5)), journal="j")

    with pytest.raises(CheckpointFormatError, match="4 ledger lines, the header says 5"):
        decode_snapshot(data.rsplit(b"\n", 2)[0] + b"\n", where="t")


def test_replaying_the_journal_applies_commits_and_prunes_in_order_and_skips_seals():
    start = Checkpoint(progress=FeedProgress(feed="live"), ledger=_entries(2))
    first = FeedProgress(feed="live", high_water_mark=T0)
    later = FeedProgress(feed="live", high_water_mark=T0 + timedelta(hours=1))
    new = Decision("n" * 32, LedgerEntry(epoch_ms(T0) + 10, "Delivered", 0), previous_status=None)
    journal = (
        encode_journal_line(first, [LedgerChange(committed=(new,))])
        + seal_line("journal/live/next.jsonl")
        + encode_journal_line(later, [LedgerChange(prune_before=T0 + timedelta(milliseconds=5))])
    )

    replayed, sealed = replay_journal(start, journal, where="t")

    assert replayed.progress == later
    assert dict(replayed.ledger) == {new.key: new.entry}
    assert not sealed
    assert replay_journal(start, journal + seal_line("x"), where="t")[1]


def test_a_journal_is_compacted_once_it_outgrows_its_snapshot_or_the_append_blob_limits():
    due = functools.partial(compaction_due, minimum_bytes=1_000)

    assert not due(journal_bytes=500, journal_blocks=3, snapshot_bytes=100, next_line=100)
    assert due(journal_bytes=950, journal_blocks=3, snapshot_bytes=100, next_line=100)
    assert not due(journal_bytes=5_000, journal_blocks=3, snapshot_bytes=9_000, next_line=100)
    assert due(journal_bytes=0, journal_blocks=JOURNAL_MAX_BLOCKS - 1, snapshot_bytes=9_000, next_line=1)
    assert due(journal_bytes=0, journal_blocks=0, snapshot_bytes=10**9, next_line=MAX_JOURNAL_LINE + 1)


def _intent(*decisions: Decision) -> PendingBatch:
    return PendingBatch(
        created=T0,
        entries=tuple(
            IntentEntry(d.key, d.entry.received_ms, d.entry.status, d.entry.revision, row_id=f"r{d.key}")
            for d in decisions
        ),
    )


def test_a_commit_of_the_whole_intent_names_it_and_replays_as_its_rows():
    rows = [Decision(f"{i:032x}", LedgerEntry(epoch_ms(T0) + i, "Delivered", 0), None) for i in range(50)]
    start = Checkpoint(progress=FeedProgress(feed="live"), ledger={})
    in_flight = FeedProgress(feed="live", pending_batch=_intent(*rows))
    after = FeedProgress(feed="live", high_water_mark=T0)
    named = encode_journal_line(after, [LedgerChange(committed=tuple(rows), settles_intent=True)])
    listed = encode_journal_line(after, [LedgerChange(committed=tuple(rows))])

    journal = encode_journal_line(in_flight, []) + named
    replayed, _ = replay_journal(start, journal, where="t")

    assert len(named) < len(listed) / 10
    assert replayed.progress == after
    assert dict(replayed.ledger) == {d.key: d.entry for d in rows}
    assert (
        replayed.ledger
        == replay_journal(start, encode_journal_line(in_flight, []) + listed, where="t")[0].ledger
    )


def test_a_commit_naming_an_intent_that_was_never_recorded_is_refused():
    row = Decision("a" * 32, LedgerEntry(epoch_ms(T0), "Delivered", 0), None)
    line = encode_journal_line(
        FeedProgress(feed="live"), [LedgerChange(committed=(row,), settles_intent=True)]
    )

    with pytest.raises(CheckpointFormatError, match="none was recorded before it"):
        replay_journal(Checkpoint(progress=FeedProgress(feed="live"), ledger={}), line, where="t")


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_a_snapshot_and_its_journal_read_from_chunks_cut_anywhere_equal_reading_them_whole(chunk):
    original = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0), ledger=_entries(300))
    snapshot = encode_snapshot(original, journal="journal/live/abc.jsonl")
    new = Decision("n" * 32, LedgerEntry(epoch_ms(T0) + 10, "Delivered", 0), previous_status=None)
    journal = encode_journal_line(FeedProgress(feed="live"), [LedgerChange(committed=(new,))]) + seal_line(
        "x"
    )

    def cut(data: bytes) -> list[bytes]:
        return [data[i : i + chunk] for i in range(0, len(data), chunk)]

    whole = decode_snapshot(snapshot, where="t")
    assert decode_snapshot(cut(snapshot), where="t") == whole
    # Replay takes the snapshot's ledger over: each replay gets its own decoded snapshot.
    from_chunks = replay_journal(decode_snapshot(snapshot, where="t")[0], cut(journal), where="t")
    assert from_chunks == replay_journal(whole[0], journal, where="t")
    assert new.key in from_chunks[0].ledger
