"""FeedSync against in-memory fakes: the commit rule, dedup, revisions, budget, backfill."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from connector.batching import DEFAULT_BATCH_BUDGET_BYTES
from connector.errors import CheckpointConflictError, GraphThrottledError, LockLostError, SinkError
from connector.ports import Deadline, FeedPorts
from connector.sync import FeedSync, SyncPolicy
from tests.fakes.memory import (
    FakeClock,
    KillingSink,
    MemorySink,
    MemorySource,
    MemoryStore,
    MemoryVerifier,
    ProcessKilled,
    trace,
)

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def make_sync(
    source,
    sink,
    store,
    clock,
    *,
    budget=timedelta(minutes=5),
    batch_budget=None,
    verifier=None,
    sleep=None,
    deadline=None,
    **overrides,
):
    options = {
        "local_domains": ("contoso.com",),
        "overlap_lookback": timedelta(minutes=60),
        "settle_delay": timedelta(minutes=2),
        "initial_lookback": timedelta(hours=6),
        "max_slice_span": timedelta(hours=24),
        "target_records_per_slice": 50_000,
        "ledger_warn_entries": 1_000_000,
        "verify_delay": timedelta(minutes=10),
        "batch_budget_bytes": batch_budget or DEFAULT_BATCH_BUDGET_BYTES,
    }
    options.update(overrides)
    return FeedSync(
        FeedPorts(source=source, sink=sink, store=store, dead_letters=store, verifier=verifier),
        SyncPolicy(**options),
        clock=clock,
        deadline=deadline or Deadline(budget),
        **({} if sleep is None else {"sleep": sleep}),
    )


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
def world():
    return MemorySource(), MemorySink(), MemoryStore(), FakeClock(NOW)


def keys(rows):
    return sorted((r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in rows)


def test_first_run_stores_every_record_once_and_sets_the_high_water_mark(world):
    source, sink, store, clock = world
    source.records = [trace(f"id-{i}", "bob@contoso.com", iso(NOW - timedelta(hours=i))) for i in range(1, 5)]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.ok, report.error
    assert report.outcome == "completed"
    assert len(sink.rows) == 4
    assert store.checkpoint().progress.high_water_mark == NOW - timedelta(minutes=2)


def test_multi_recipient_mail_is_one_row_per_recipient(world):
    source, sink, store, clock = world
    at = iso(NOW - timedelta(hours=1))
    source.records = [trace("id-1", r, at) for r in ("a@contoso.com", "b@contoso.com", "c@gmail.com")]

    make_sync(source, sink, store, clock).run_live()

    assert keys(sink.rows) == [
        ("id-1", "a@contoso.com", "Delivered"),
        ("id-1", "b@contoso.com", "Delivered"),
        ("id-1", "c@gmail.com", "Delivered"),
    ]


def test_second_run_with_no_new_mail_uploads_nothing(world):
    source, sink, store, clock = world
    source.records = [trace("id-1", "bob@contoso.com", iso(NOW - timedelta(minutes=30)))]
    make_sync(source, sink, store, clock).run_live()
    clock.advance(timedelta(minutes=5))

    report = make_sync(source, sink, store, clock).run_live()

    assert report.rows_uploaded == 0
    assert report.duplicates_dropped == 1
    assert len(sink.rows) == 1


def test_late_record_inside_the_overlap_is_stored_once(world):
    source, sink, store, clock = world
    source.records = [trace("id-1", "bob@contoso.com", iso(NOW - timedelta(minutes=20)))]
    make_sync(source, sink, store, clock).run_live()
    source.records.append(trace("id-late", "bob@contoso.com", iso(NOW - timedelta(minutes=15))))
    clock.advance(timedelta(minutes=5))

    make_sync(source, sink, store, clock).run_live()
    clock.advance(timedelta(minutes=5))
    make_sync(source, sink, store, clock).run_live()

    assert keys(sink.rows) == [
        ("id-1", "bob@contoso.com", "Delivered"),
        ("id-late", "bob@contoso.com", "Delivered"),
    ]


def test_status_change_is_stored_as_one_revision_row(world):
    source, sink, store, clock = world
    source.records = [trace("id-1", "bob@contoso.com", iso(NOW - timedelta(minutes=20)), status="pending")]
    make_sync(source, sink, store, clock).run_live()
    source.records = [trace("id-1", "BOB@contoso.com", iso(NOW - timedelta(minutes=20)), status="Delivered")]
    clock.advance(timedelta(minutes=5))

    make_sync(source, sink, store, clock).run_live()
    clock.advance(timedelta(minutes=5))
    make_sync(source, sink, store, clock).run_live()

    assert [(r["Status"], r["StatusRevision"], r["PreviousStatus"]) for r in sink.rows] == [
        ("Pending", 0, ""),
        ("Delivered", 1, "Pending"),
    ]


@pytest.mark.parametrize("statuses", [("pending", "Delivered"), ("Delivered", "pending")])
def test_same_key_twice_in_one_answer_is_stored_once_in_its_most_advanced_status_and_rereads_add_nothing(
    world, statuses
):
    # The two observations straddle a page boundary (pages of 3): the first page's key is held.
    source, sink, store, clock = world
    at = iso(NOW - timedelta(minutes=20))
    first, second = statuses
    source.records = [
        trace("id-1", "bob@contoso.com", at, status=first),
        trace("id-2", "ann@contoso.com", at),
        trace("id-3", "cat@contoso.com", at),
        trace("id-1", "BOB@contoso.com", at, status=second),
    ]

    reports = []
    for _ in range(3):
        reports.append(make_sync(source, sink, store, clock).run_live())
        clock.advance(timedelta(minutes=5))

    assert all(report.ok for report in reports), [report.error for report in reports]
    assert sorted((r["MessageTraceId"], r["Status"], r["StatusRevision"]) for r in sink.rows) == [
        ("id-1", "Delivered", 0),
        ("id-2", "Delivered", 0),
        ("id-3", "Delivered", 0),
    ]
    assert [report.rows_uploaded for report in reports] == [3, 0, 0]


def test_a_status_that_changes_back_between_reads_is_still_stored_as_revisions(world):
    source, sink, store, clock = world
    at = iso(NOW - timedelta(minutes=20))
    for status in ("Pending", "Delivered", "Pending"):
        source.records = [trace("id-1", "bob@contoso.com", at, status=status)]
        make_sync(source, sink, store, clock).run_live()
        clock.advance(timedelta(minutes=5))

    assert [(r["Status"], r["StatusRevision"], r["PreviousStatus"]) for r in sink.rows] == [
        ("Pending", 0, ""),
        ("Delivered", 1, "Pending"),
        ("Pending", 2, "Delivered"),
    ]


def test_record_exactly_on_a_slice_boundary_is_stored_once(world):
    source, sink, store, clock = world
    sync = make_sync(
        source, sink, store, clock, max_slice_span=timedelta(hours=1), target_records_per_slice=1000
    )
    boundary = NOW - timedelta(hours=5)
    # The first slice is one hour long and starts at NOW - 6h, so NOW - 5h is its end and the next start.
    source.records = [trace("id-edge", "bob@contoso.com", iso(boundary))]

    report = sync.run_live()

    assert report.slices > 1
    assert report.duplicates_dropped == 1
    assert len(sink.rows) == 1


def test_failed_batch_keeps_the_checkpoint_at_the_last_accepted_batch_and_rerun_has_no_gap_or_duplicate(
    world,
):
    source, sink, store, clock = world
    source.records = [
        trace(f"id-{i}", "bob@contoso.com", iso(NOW - timedelta(minutes=10 + i))) for i in range(40)
    ]
    sink.fail_on_upload = {3}

    first = make_sync(source, sink, store, clock, batch_budget=2_000).run_live()

    assert isinstance(first.error, SinkError)
    assert first.outcome == "failed"
    assert store.checkpoint().progress.high_water_mark < NOW - timedelta(minutes=49)
    stored_before_failure = len(sink.rows)
    assert 0 < stored_before_failure < 40
    assert len(store.checkpoint().ledger) == stored_before_failure

    second = make_sync(source, sink, store, clock, batch_budget=2_000).run_live()

    assert second.ok
    assert keys(sink.rows) == sorted(set(keys(sink.rows)))
    assert len(sink.rows) == 40


def test_malformed_record_is_dead_lettered_with_its_reason_and_the_feed_goes_on(world):
    source, sink, store, clock = world
    bad = trace("id-bad", "bob@contoso.com", iso(NOW - timedelta(minutes=10)))
    bad["receivedDateTime"] = "not-a-date"
    source.records = [bad, trace("id-good", "bob@contoso.com", iso(NOW - timedelta(minutes=11)))]

    report = make_sync(source, sink, store, clock).run_live()
    again = make_sync(source, sink, store, clock).run_live()

    assert report.ok, report.error
    assert report.dead_lettered >= 1
    assert [r["MessageTraceId"] for r in sink.rows] == ["id-good"]
    (letter,) = store.dead_letters.values()
    assert "not an ISO 8601 timestamp" in letter.reason
    assert letter.record == bad
    assert store.checkpoint().progress.last_run["dead_lettered"] == again.dead_lettered


def test_record_missing_key_fields_or_with_wrong_types_is_dead_lettered(world):
    source, sink, store, clock = world
    no_id = trace("x", "bob@contoso.com", iso(NOW - timedelta(minutes=10)))
    del no_id["id"]
    bad_size = trace("y", "bob@contoso.com", iso(NOW - timedelta(minutes=10)))
    bad_size["size"] = "large"
    source.records = [no_id, bad_size]

    report = make_sync(source, sink, store, clock).run_live()

    assert report.ok
    assert report.dead_lettered == 2
    assert sink.rows == []
    assert sorted(letter.reason.split()[1] for letter in store.dead_letters.values()) == ["'id'", "'size'"]


def test_checkpoint_written_by_someone_else_stops_the_run_cleanly(world):
    source, sink, store, clock = world
    source.records = [trace("id-1", "bob@contoso.com", iso(NOW - timedelta(minutes=10)))]
    make_sync(source, sink, store, clock).run_live()
    source.records.append(trace("id-2", "bob@contoso.com", iso(NOW - timedelta(minutes=1))))
    clock.advance(timedelta(minutes=5))

    class InterferingSink(MemorySink):
        def upload(self, rows):
            store.touch_behind_the_back()
            return super().upload(rows)

    interfering = InterferingSink()
    report = make_sync(source, interfering, store, clock).run_live()

    assert isinstance(report.error, CheckpointConflictError)


def test_budget_exhausted_stops_between_slices_and_next_run_continues(world):
    source, sink, store, clock = world
    source.records = [
        trace(f"id-{i}", "bob@contoso.com", iso(NOW - timedelta(hours=i, minutes=30))) for i in range(6)
    ]
    ticks = iter(range(1000))
    sync = make_sync(
        source,
        sink,
        store,
        clock,
        max_slice_span=timedelta(hours=1),
        target_records_per_slice=1000,
        deadline=Deadline(timedelta(seconds=2.5), monotonic=lambda: float(next(ticks))),
    )

    first = sync.run_live()

    assert first.outcome == "budget_exhausted"
    assert 0 < first.slices < 6
    second = make_sync(source, sink, store, clock).run_live()
    assert second.outcome == "completed"
    assert len(sink.rows) == 6


def test_throttling_beyond_the_budget_ends_the_run_cleanly_and_the_next_run_completes(world):
    source, sink, store, clock = world
    source.records = [
        trace(f"id-{i}", "bob@contoso.com", iso(NOW - timedelta(minutes=10 + i))) for i in range(9)
    ]
    source.fail_after_pages = 2
    source.failure = GraphThrottledError(300)

    report = make_sync(source, sink, store, clock, initial_lookback=timedelta(hours=1)).run_live()

    assert report.ok
    assert report.outcome == "throttled"
    assert store.checkpoint().progress.high_water_mark is None
    source.fail_after_pages = None
    again = make_sync(source, sink, store, clock).run_live()
    assert again.outcome == "completed"
    assert len(sink.rows) == len(set(keys(sink.rows))) == 9


class TestBackfill:
    def test_backfill_needs_a_live_checkpoint_first(self, world):
        source, sink, store, clock = world

        report = make_sync(source, sink, store, clock).run_backfill(
            NOW - timedelta(days=3), NOW - timedelta(days=2)
        )

        assert report.error is not None
        assert "run the connector once" in str(report.error)

    def test_backfill_stops_at_the_live_coverage_start_and_never_moves_the_live_mark(self, world):
        source, sink, store, clock = world
        live_start = NOW - timedelta(hours=6)
        source.records = [
            trace("old", "bob@contoso.com", iso(NOW - timedelta(days=2))),
            trace("edge", "bob@contoso.com", iso(live_start)),
            trace("live", "bob@contoso.com", iso(NOW - timedelta(hours=1))),
        ]
        make_sync(source, sink, store, clock).run_live()
        live_before = store.checkpoint("live")

        report = make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(days=3), NOW)

        assert report.ok, report.error
        assert sorted(r["MessageTraceId"] for r in sink.rows) == ["edge", "live", "old"]
        assert store.checkpoint("live").progress.high_water_mark == live_before.progress.high_water_mark

    def test_live_overlap_after_a_first_run_shorter_than_it_leaves_the_backfill_its_rows(self, world):
        # A first run covers 61 minutes; the next re-reads 60 minutes before its high-water mark,
        # which starts before the coverage start. What lies there is the backfill's.
        source, sink, store, clock = world
        source.records = [trace("before-coverage", "bob@contoso.com", iso(NOW - timedelta(minutes=62)))]
        make_sync(source, sink, store, clock, initial_lookback=timedelta(minutes=61)).run_live()
        backfill = make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(hours=3), NOW)
        clock.advance(timedelta(minutes=1))

        again = make_sync(source, sink, store, clock, initial_lookback=timedelta(minutes=61)).run_live()

        assert backfill.ok, backfill.error
        assert again.ok, again.error
        assert [r["MessageTraceId"] for r in sink.rows] == ["before-coverage"]

    def test_a_backfill_claims_its_range_before_any_read_so_an_overlapping_one_is_refused(self, world):
        source, sink, store, clock = world
        make_sync(source, sink, store, clock).run_live()
        source.fail_after_pages = source.pages_served
        source.failure = ProcessKilled()  # dies reading its first page, before anything is saved
        with pytest.raises(ProcessKilled):
            make_sync(source, sink, store, clock).run_backfill(
                NOW - timedelta(days=3), NOW - timedelta(days=1)
            )
        source.fail_after_pages = None

        second = make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(days=2), NOW)

        assert store.checkpoint("backfill/20260307T120000Z_20260309T120000Z").progress.range_start is not None
        assert second.error is not None
        assert second.error.exit_code == 2
        assert "backfill/20260307T120000Z_20260309T120000Z" in str(second.error)

    def test_rerunning_a_finished_backfill_stores_nothing_more(self, world):
        source, sink, store, clock = world
        source.records = [trace("old", "bob@contoso.com", iso(NOW - timedelta(days=2)))]
        make_sync(source, sink, store, clock).run_live()
        make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(days=3), NOW - timedelta(days=1))

        again = make_sync(source, sink, store, clock).run_backfill(
            NOW - timedelta(days=3), NOW - timedelta(days=1)
        )

        assert again.ok
        assert again.rows_uploaded == 0
        assert len(sink.rows) == 1

    def test_overlapping_backfill_range_is_refused(self, world):
        source, sink, store, clock = world
        make_sync(source, sink, store, clock).run_live()
        make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(days=3), NOW - timedelta(days=1))

        report = make_sync(source, sink, store, clock).run_backfill(
            NOW - timedelta(days=2), NOW - timedelta(hours=20)
        )

        assert report.error is not None
        assert "overlaps the earlier backfill" in str(report.error)

    def test_adjacent_backfill_ranges_are_allowed(self, world):
        source, sink, store, clock = world
        source.records = [trace("edge", "bob@contoso.com", iso(NOW - timedelta(days=2)))]
        make_sync(source, sink, store, clock).run_live()
        make_sync(source, sink, store, clock).run_backfill(NOW - timedelta(days=3), NOW - timedelta(days=2))

        report = make_sync(source, sink, store, clock).run_backfill(
            NOW - timedelta(days=2), NOW - timedelta(days=1)
        )

        assert report.ok, report.error
        assert len(sink.rows) == 1


class TestInterruptedBatch:
    """A process killed after the service took a batch but before the commit was saved."""

    def crash_after_upload(self, world, **options):
        source, _, store, clock = world
        source.records = [
            trace(f"id-{i}", "bob@contoso.com", iso(NOW - timedelta(minutes=10 + i))) for i in range(5)
        ]
        killer = KillingSink(kill_on_upload=1)
        with pytest.raises(ProcessKilled):
            make_sync(source, killer, store, clock, **options).run_live()
        assert store.checkpoint().progress.pending_batch is not None
        assert len(killer.rows) == 5
        return killer

    def test_without_verification_the_batch_is_resent_and_counted_as_possible_duplicates(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0

        report = make_sync(source, sink, store, clock).run_live()

        assert report.ok
        assert report.possible_duplicates == 5
        assert len(sink.rows) == 10
        assert store.checkpoint().progress.pending_batch is None
        assert store.checkpoint().progress.last_run["possible_duplicates"] == 5

    def test_with_verification_rows_already_stored_are_committed_not_resent(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0
        clock.advance(timedelta(minutes=11))
        verifier = MemoryVerifier(sink)

        report = make_sync(source, sink, store, clock, verifier=verifier).run_live()

        assert report.ok, report.error
        assert report.intent_rows_found == 5
        assert report.possible_duplicates == 0
        assert len(sink.rows) == 5
        assert verifier.queries == 1

    def test_verification_finds_missing_rows_and_only_those_are_sent_again(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0
        lost = sink.rows.pop()  # the service lost one row of the batch
        clock.advance(timedelta(minutes=11))

        report = make_sync(source, sink, store, clock, verifier=MemoryVerifier(sink)).run_live()

        assert report.intent_rows_found == 4
        assert report.intent_rows_resent == 1
        assert sorted(keys(sink.rows)) == sorted(set(keys(sink.rows)))
        assert lost["MessageTraceId"] in [r["MessageTraceId"] for r in sink.rows]
        assert len(sink.rows) == 5

    def test_a_status_back_to_an_earlier_one_is_not_taken_for_its_older_revision(self, world):
        # Pending (0), Delivered (1), then Pending again (2): the process dies before the service
        # stores revision 2. The table's Pending row is revision 0, not this batch's row.
        source, _, store, clock = world
        at = iso(NOW - timedelta(minutes=20))
        sink = KillingSink(kill_on_upload=3, stored_before_death=False)
        for status in ("Pending", "Delivered", "Pending"):
            source.records = [trace("id-1", "bob@contoso.com", at, status=status)]
            clock.advance(timedelta(minutes=1))
            try:
                make_sync(source, sink, store, clock).run_live()
            except ProcessKilled:
                break
        sink.kill_on_upload = 0
        clock.advance(timedelta(minutes=11))

        report = make_sync(source, sink, store, clock, verifier=MemoryVerifier(sink)).run_live()

        assert report.ok, report.error
        assert report.intent_rows_found == 0
        assert [(r["Status"], r["StatusRevision"]) for r in sink.rows] == [
            ("Pending", 0),
            ("Delivered", 1),
            ("Pending", 2),
        ]

    def test_an_intent_left_by_a_version_before_row_ids_is_resolved_by_trace_id_and_revision(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0
        document = json.loads(store.documents["live"][0])
        document["pending_batch"]["entries"] = [
            [key, received, status, revision, row["MessageTraceId"]]
            for (key, received, status, revision, _), row in zip(
                document["pending_batch"].pop("rows"), sink.rows, strict=True
            )
        ]
        store.documents["live"] = (json.dumps(document).encode(), store.documents["live"][1])
        clock.advance(timedelta(minutes=11))

        report = make_sync(source, sink, store, clock, verifier=MemoryVerifier(sink)).run_live()

        assert report.ok, report.error
        assert report.intent_rows_found == 5
        assert len(sink.rows) == 5

    def test_young_batch_is_verified_after_waiting_out_the_ingestion_latency(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0
        clock.advance(timedelta(minutes=1))
        slept = []

        def sleep(seconds):
            slept.append(seconds)
            clock.advance(timedelta(seconds=seconds))

        report = make_sync(
            source,
            sink,
            store,
            clock,
            verifier=MemoryVerifier(sink),
            verify_delay=timedelta(minutes=3),
            sleep=sleep,
        ).run_live()

        assert report.ok
        assert slept == [120.0]
        assert len(sink.rows) == 5

    def test_young_batch_defers_the_run_when_waiting_would_eat_the_budget(self, world):
        source, _, store, clock = world
        sink = self.crash_after_upload(world)
        sink.kill_on_upload = 0

        report = make_sync(
            source, sink, store, clock, verifier=MemoryVerifier(sink), verify_delay=timedelta(minutes=10)
        ).run_live()

        assert report.ok
        assert report.outcome == "deferred"
        assert store.checkpoint().progress.pending_batch is not None
        assert len(sink.rows) == 5


class TestBatchGroups:
    """The batches a page fills go under one intent and one commit, with the same guarantees as one batch."""

    ROWS = 12

    def page_of_batches(self, source):
        """One page of ROWS records, with a batch budget that holds about three rows a batch."""
        source.page_size = self.ROWS
        at = NOW - timedelta(minutes=30)
        source.records = [
            trace(f"id-{i:02d}", "bob@contoso.com", iso(at - timedelta(seconds=i))) for i in range(self.ROWS)
        ]
        row = len(json.dumps(make_row_like()))
        return 3 * row + 40

    def intents(self, store):
        """The number of rows of each intent the store saw saved, in order."""
        seen = []
        save = store.save

        def recording(checkpoint, etag, changes=None):
            pending = checkpoint.progress.pending_batch
            if pending is not None:
                seen.append(len(pending.entries))
            return save(checkpoint, etag, changes)

        store.save = recording
        return seen

    def test_the_batches_of_one_page_are_sent_under_one_intent_and_one_commit(self, world):
        source, sink, store, clock = world
        budget = self.page_of_batches(source)
        intents = self.intents(store)

        report = make_sync(source, sink, store, clock, batch_budget=budget).run_live()

        assert report.ok, report.error
        assert sink.uploads == 4
        assert report.batches == sink.uploads
        assert intents == [self.ROWS]  # one intent listing every row of every batch, not one per batch
        assert report.checkpoint_saves == 3  # the intent, the commit, the run summary
        assert sorted(row["MessageTraceId"] for row in sink.rows) == [f"id-{i:02d}" for i in range(self.ROWS)]
        assert store.checkpoint().progress.pending_batch is None

    def test_a_kill_after_the_first_batch_of_a_group_is_settled_by_the_one_intent(self, world):
        source, _, store, clock = world
        budget = self.page_of_batches(source)
        killer = KillingSink(kill_on_upload=1)
        with pytest.raises(ProcessKilled):
            make_sync(source, killer, store, clock, batch_budget=budget).run_live()
        first = len(killer.rows)
        assert 0 < first < self.ROWS
        assert len(store.checkpoint().progress.pending_batch.entries) == self.ROWS
        killer.kill_on_upload = 0
        clock.advance(timedelta(minutes=11))

        report = make_sync(
            source, killer, store, clock, batch_budget=budget, verifier=MemoryVerifier(killer)
        ).run_live()

        assert report.ok, report.error
        assert report.intent_rows_found == first
        assert report.intent_rows_resent == self.ROWS - first
        ids = [row["MessageTraceId"] for row in killer.rows]
        assert sorted(ids) == [f"id-{i:02d}" for i in range(self.ROWS)]  # each once

    def test_a_lease_lost_inside_a_group_stops_the_sending_and_leaves_the_intent_to_the_next_holder(
        self, world
    ):
        source, sink, store, clock = world
        budget = self.page_of_batches(source)

        class LeaseLostAfterFirstUpload:
            checks = 0

            def check(self):
                self.checks += 1
                if self.checks > 1 and sink.uploads >= 1:
                    raise LockLostError("the lease was last renewed 60 s ago (lease 60 s)")

        report = make_sync(source, sink, store, clock, batch_budget=budget).run_live(
            lock=LeaseLostAfterFirstUpload()
        )

        assert not report.ok
        assert sink.uploads == 1  # no batch of the group went out after the lease was in doubt
        assert len(store.checkpoint().progress.pending_batch.entries) == self.ROWS

    def test_a_failed_upload_inside_a_group_commits_the_batches_before_it(self, world):
        source, sink, store, clock = world
        budget = self.page_of_batches(source)
        sink.fail_on_upload = {2}

        failed = make_sync(source, sink, store, clock, batch_budget=budget).run_live()

        assert not failed.ok
        first = len(sink.rows)
        assert 0 < first < self.ROWS
        assert store.checkpoint().progress.pending_batch is None  # the first batch is committed, not in doubt
        assert failed.rows_uploaded == first
        clock.advance(timedelta(minutes=5))

        report = make_sync(source, sink, store, clock, batch_budget=budget).run_live()

        assert report.ok, report.error
        assert report.possible_duplicates == 0
        assert report.rows_uploaded == self.ROWS - first
        ids = [row["MessageTraceId"] for row in sink.rows]
        assert sorted(ids) == [f"id-{i:02d}" for i in range(self.ROWS)]

    def test_a_row_refused_inside_a_group_is_dead_lettered_and_the_batches_after_it_still_go(self, world):
        source, sink, store, clock = world
        budget = self.page_of_batches(source)
        source.records[4]["subject"] = "refuse me"
        sink.refuse_row = lambda row: "(InvalidPayload) range" if row.get("Subject") == "refuse me" else None
        intents = self.intents(store)

        report = make_sync(source, sink, store, clock, batch_budget=budget).run_live()

        assert report.ok, report.error
        ids = sorted(row["MessageTraceId"] for row in sink.rows)
        assert ids == [f"id-{i:02d}" for i in range(self.ROWS) if i != 4]
        (letter,) = store.dead_letters.values()
        assert letter.record["id"] == "id-04"
        # Four batches of three: the first stored, the second split to find its refused row, the last two
        # under an intent of their own.
        assert intents[0] == self.ROWS
        assert intents[-1] == self.ROWS - 6
        uploads = sink.uploads
        clock.advance(timedelta(minutes=5))
        assert make_sync(source, sink, store, clock, batch_budget=budget).run_live().ok
        assert sink.uploads == uploads


def make_row_like():
    """A row as the mapper writes it for :func:`trace` (the batch budget is sized from it)."""
    from connector.mapping import RowMapper, parse_trace_record

    record = parse_trace_record(trace("id-00", "bob@contoso.com", iso(NOW)))
    return RowMapper(("contoso.com",)).to_row(record, revision=0, previous_status=None)
