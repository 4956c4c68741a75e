"""FeedSync against what the field sends: hostile records, refused rows, dense slices, endless paging.

Each test here failed before the feed learnt to keep moving (issue 8): the run
raised, held good rows back, dead-lettered nothing, or never moved its high-water mark.
"""

import json
import logging
from collections.abc import Generator
from datetime import timedelta

import pytest

from connector.errors import ErrorKind, FeedStalledError, GraphThrottledError
from connector.ports import Deadline, SourcePage
from connector.refusal import MAX_ALONE_WITHOUT_EVIDENCE
from connector.state import STALL_LIMIT
from connector.windows import Window
from tests.fakes.memory import MemorySink, MemorySource, MemoryStore, trace
from tests.unit.test_sync import NOW, iso, keys, make_sync


def poison(row):
    """The service refuses rows whose subject says so (a rule the connector cannot check first)."""
    if row.get("Subject") == "poison":
        return "(InvalidPayload) Record 0: column 'Subject' holds a value the workspace refuses"
    return None


# --------------------------------------------------------------------------- hostile records


def test_hostile_records_anywhere_in_a_page_are_dead_lettered_or_repaired_and_the_feed_moves_on(world):
    source, sink, store, clock = world
    at = iso(NOW - timedelta(minutes=30))
    good = [trace(f"good-{i}", "bob@contoso.com", at) for i in range(3)]
    surrogate_subject = trace("sub-1", "bob@contoso.com", at, subject="Invoice \ud83d due")
    surrogate_status = {**trace("stat-1", "bob@contoso.com", at), "status": "deliv\udc00ered"}
    long_subject = trace("long-1", "bob@contoso.com", at, subject="\ud83d" + "x" * 200_000)
    bad_id = trace("bad\ud83d", "bob@contoso.com", at)
    bad_recipient = trace("bad-rcpt", "bob\udfff@contoso.com", at)
    huge = trace("huge-1", "bob@contoso.com", at, size=2**70)
    negative = trace("neg-1", "bob@contoso.com", at, size=-1)
    source.records = [
        good[0],
        bad_id,
        surrogate_subject,
        bad_recipient,
        good[1],
        surrogate_status,
        long_subject,
        huge,
        negative,
        good[2],
    ]
    source.page_size = 4

    report = make_sync(source, sink, store, clock).run_live()

    assert report.ok, report.error
    assert report.outcome == "completed"
    stored = {row["MessageTraceId"]: row for row in sink.rows}
    assert set(stored) == {"good-0", "good-1", "good-2", "sub-1", "stat-1", "long-1"}
    assert stored["sub-1"]["Subject"] == "Invoice \ufffd due"
    assert "\ufffd" in stored["stat-1"]["Status"]
    assert stored["long-1"]["TruncatedFields"] == "Subject"
    json.dumps(sink.rows).encode("utf-8")  # every stored row is valid UTF-8 JSON
    assert report.dead_lettered == 4
    reasons = sorted(letter.reason for letter in store.dead_letters.values())
    assert sum("unpaired UTF-16 surrogate" in reason for reason in reasons) == 2
    assert sum("Int32" in reason for reason in reasons) == 2
    assert store.checkpoint().progress.high_water_mark is not None


def test_dead_letter_of_a_record_with_a_lone_surrogate_keeps_it_exactly_as_sent(world):
    source, sink, store, clock = world
    bad = trace("bad\ud83d", "bob@contoso.com", iso(NOW - timedelta(minutes=30)), subject="s\udc00")
    source.records = [bad]

    make_sync(source, sink, store, clock).run_live()

    (letter,) = store.dead_letters.values()
    document = json.loads(letter.encode())
    assert document["record"]["id"] == "bad\ud83d"
    assert document["record"]["subject"] == "s\udc00"
    assert letter.name.startswith("deadletter/live/")


def test_record_with_a_key_longer_than_any_graph_key_is_dead_lettered(world):
    source, sink, store, clock = world
    source.records = [trace("x" * 5000, "bob@contoso.com", iso(NOW - timedelta(minutes=30)))]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.ok
    assert report.dead_lettered == 1
    assert sink.rows == []


def test_record_outside_its_slice_is_logged_with_id_and_time_counted_and_not_stored(world, caplog):
    source, sink, store, clock = world

    class LeakySource(MemorySource):
        def pages(self, window: Window) -> Generator[SourcePage, None, None]:
            yield SourcePage(
                records=[trace("stray-1", "bob@contoso.com", "2020-01-01T00:00:00Z")], more=False
            )

    report = make_sync(LeakySource(), sink, store, clock).run_live()

    assert report.ok
    assert report.outside_range >= 1
    assert sink.rows == []
    assert any(
        "stray-1" in record.getMessage() and "2020-01-01T00:00:00" in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
    )


# --------------------------------------------------------------------------- refused rows


def test_row_the_service_refuses_on_its_own_is_dead_lettered_with_its_reason_and_the_rest_stored(world):
    source, sink, store, clock = world
    sink.refuse_row = poison
    at = iso(NOW - timedelta(minutes=30))
    source.records = [trace(f"ok-{i}", "bob@contoso.com", at) for i in range(9)]
    source.records.insert(4, trace("bad-1", "bob@contoso.com", at, subject="poison"))

    report = make_sync(source, sink, store, clock).run_live()

    assert report.ok, report.error
    assert sorted(row["MessageTraceId"] for row in sink.rows) == [f"ok-{i}" for i in range(9)]
    (letter,) = store.dead_letters.values()
    assert "refused this row" in letter.reason
    assert "holds a value the workspace refuses" in letter.reason
    assert letter.record["id"] == "bad-1"
    assert store.checkpoint().progress.high_water_mark is not None

    uploads = sink.uploads
    clock.advance(timedelta(minutes=5))
    again = make_sync(source, sink, store, clock).run_live()
    assert again.ok
    assert sink.uploads == uploads  # the dead-lettered row is held as handled: not sent, not split again


def test_service_refusing_every_row_even_alone_is_a_setting_error_with_nothing_dead_lettered(world):
    source, sink, store, clock = world
    sink.refuse_row = lambda row: "(InvalidPayload) the value is out of range"
    at = iso(NOW - timedelta(minutes=30))
    source.records = [trace(f"ok-{i}", "bob@contoso.com", at) for i in range(3)]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.error is not None
    assert report.error.kind is ErrorKind.SETTING
    assert "Nothing was dead-lettered" in str(report.error)
    assert store.dead_letters == {}
    assert store.checkpoint().progress.high_water_mark < NOW - timedelta(minutes=30)
    assert len(store.checkpoint().ledger) == 0


def test_refusal_naming_a_column_mismatch_stops_at_once_with_a_setting_error(world):
    source, sink, store, clock = world
    sink.refuse_row = lambda row: "(InvalidPayload) Record 0: column 'Subject' is not declared in stream"
    at = iso(NOW - timedelta(minutes=30))
    source.records = [trace(f"ok-{i}", "bob@contoso.com", at) for i in range(50)]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.error is not None
    assert report.error.kind is ErrorKind.SETTING
    assert "redeploy the DCR" in str(report.error)
    assert sink.uploads == 1
    assert store.dead_letters == {}


def test_splitting_gives_up_and_blames_the_deployment_when_many_rows_are_refused_alone(world):
    source, sink, store, clock = world
    sink.refuse_row = lambda row: "(InvalidPayload) the value is out of range"
    at = iso(NOW - timedelta(minutes=30))
    source.records = [trace(f"ok-{i:04}", "bob@contoso.com", at) for i in range(1000)]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.error is not None
    assert report.error.kind is ErrorKind.SETTING
    assert sink.uploads < 4 * MAX_ALONE_WITHOUT_EVIDENCE + 12  # not one request per row
    assert store.dead_letters == {}


def test_lone_refused_row_of_a_later_batch_is_dead_lettered_when_an_earlier_batch_went_through(world):
    source, sink, store, clock = world
    sink.refuse_row = poison
    at = iso(NOW - timedelta(minutes=30))
    source.records = [trace(f"ok-{i}", "bob@contoso.com", at, subject="s" * 300) for i in range(4)]
    source.records.append(
        trace("bad-1", "bob@contoso.com", iso(NOW - timedelta(minutes=40)), subject="poison")
    )

    # Batches of about two rows: the poison row (the oldest, so the last) ends up in a batch of its own.
    report = make_sync(source, sink, store, clock, batch_budget=1_500).run_live()

    assert report.ok, report.error
    assert len(sink.rows) == 4
    assert [letter.record["id"] for letter in store.dead_letters.values()] == ["bad-1"]


# --------------------------------------------------------------------------- slices too big for a run


def dense_hour(count):
    return [
        trace(f"id-{i:05}", "bob@contoso.com", iso(NOW - timedelta(minutes=70) + timedelta(seconds=3 * i)))
        for i in range(count)
    ]


@pytest.mark.parametrize("oldest_first", [False, True], ids=["newest-first", "order-not-held"])
def test_slice_over_the_page_cap_is_split_in_the_same_run_and_the_mark_moves(world, oldest_first):
    source, sink, store, clock = world
    source.records = dense_hour(600)
    source.page_size = 10
    source.oldest_first = oldest_first

    report = make_sync(
        source, sink, store, clock, initial_lookback=timedelta(hours=2), max_pages_per_slice=8
    ).run_live()

    assert report.ok, report.error
    assert report.outcome == "completed"
    assert len(sink.rows) == len(set(keys(sink.rows))) == 600
    assert store.checkpoint().progress.high_water_mark == NOW.replace(microsecond=0) - timedelta(minutes=2)
    assert all(window.span <= timedelta(hours=1) for window in source.windows)


def test_newest_first_order_sizes_the_split_from_what_was_read_instead_of_halving(world):
    source, sink, store, clock = world
    source.records = dense_hour(1200)
    source.page_size = 10

    make_sync(
        source, sink, store, clock, initial_lookback=timedelta(hours=2), max_pages_per_slice=8
    ).run_live()

    first, second = source.windows[0], source.windows[1]
    assert second.start == first.start
    # 8 pages held the newest 80 records (4 minutes): the next read is about half of that, not 30 minutes.
    assert second.span <= timedelta(minutes=3)


def test_deadline_is_checked_between_pages_and_the_unfinished_slice_is_split_for_the_next_run(world):
    source, sink, store, clock = world
    source.records = dense_hour(300)
    source.page_size = 10
    ticks = iter(range(10_000))
    deadline = Deadline(timedelta(seconds=6.5), monotonic=lambda: float(next(ticks)))
    sync = make_sync(
        source,
        sink,
        store,
        clock,
        initial_lookback=timedelta(hours=2),
        max_pages_per_slice=1000,
        deadline=deadline,
    )

    first = sync.run_live()

    assert first.outcome == "budget_exhausted"
    assert first.pages < 10
    progress = store.checkpoint().progress
    assert progress.high_water_mark is None
    assert progress.slice_span is not None
    assert progress.slice_span < timedelta(hours=1)
    assert len(sink.rows) == first.rows_uploaded > 0  # what was read is stored, not thrown away

    second = make_sync(
        source, sink, store, clock, initial_lookback=timedelta(hours=2), max_pages_per_slice=1000
    ).run_live()
    assert second.outcome == "completed"
    assert len(sink.rows) == len(set(keys(sink.rows))) == 300


def test_endless_chain_of_distinct_pages_cannot_hold_a_run_past_its_budget(world):
    source, sink, store, clock = world

    class EndlessSource(MemorySource):
        def pages(self, window: Window) -> Generator[SourcePage, None, None]:
            self.windows.append(window)
            while True:
                self.pages_served += 1
                yield SourcePage(records=[], more=True)

    endless = EndlessSource()
    ticks = iter(range(100_000))
    deadline = Deadline(timedelta(seconds=500), monotonic=lambda: float(next(ticks)))

    report = make_sync(endless, sink, store, clock, deadline=deadline).run_live()

    assert report.outcome == "budget_exhausted"
    assert endless.pages_served < 500


def test_throttled_mid_slice_stores_what_was_read_and_splits_the_slice(world):
    source, sink, store, clock = world
    source.records = dense_hour(100)
    source.page_size = 10
    source.fail_after_pages = 3
    source.failure = GraphThrottledError(300)

    report = make_sync(source, sink, store, clock, initial_lookback=timedelta(hours=2)).run_live()

    assert report.outcome == "throttled"
    assert len(sink.rows) == 30
    assert store.checkpoint().progress.slice_span < timedelta(hours=1)


def test_feed_whose_mark_does_not_move_for_three_runs_reports_a_transient_error(world):
    source, sink, store, clock = world
    source.records = dense_hour(10)
    source.fail_after_pages = 0
    source.failure = GraphThrottledError(300)

    reports = []
    for _ in range(STALL_LIMIT):
        reports.append(make_sync(source, sink, store, clock).run_live())
        clock.advance(timedelta(minutes=5))

    assert [report.outcome for report in reports[:-1]] == ["throttled"] * (STALL_LIMIT - 1)
    assert all(report.ok for report in reports[:-1])
    stalled = reports[-1]
    assert isinstance(stalled.error, FeedStalledError)
    assert stalled.error.exit_code == 6
    assert store.checkpoint().progress.stalled_runs == STALL_LIMIT

    source.fail_after_pages = None
    recovered = make_sync(source, sink, store, clock).run_live()
    assert recovered.ok
    assert recovered.outcome == "completed"
    assert store.checkpoint().progress.stalled_runs == 0


def test_runs_stopped_by_the_operator_do_not_count_as_a_stall(world):
    source, sink, store, clock = world
    source.records = dense_hour(10)

    reports = []
    for _ in range(STALL_LIMIT + 1):
        stopped = Deadline(timedelta(minutes=5), stop_requested=lambda: True)
        reports.append(make_sync(source, sink, store, clock, deadline=stopped).run_live())
        clock.advance(timedelta(minutes=5))

    assert [report.outcome for report in reports] == ["interrupted"] * (STALL_LIMIT + 1)
    assert all(report.ok for report in reports)
    assert store.checkpoint().progress.stalled_runs == 0


@pytest.fixture
def world():
    from tests.fakes.memory import FakeClock

    return MemorySource(), MemorySink(), MemoryStore(), FakeClock(NOW)
