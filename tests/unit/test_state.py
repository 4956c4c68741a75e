"""The feed state and its one commit step, with literal before/after values."""

from datetime import UTC, datetime, timedelta

from connector.ledger import Decision, DedupLedger, LedgerChange, LedgerEntry
from connector.state import (
    Checkpoint,
    CommitRules,
    Committed,
    FeedProgress,
    FeedState,
    IntentEntry,
    PendingBatch,
    after_run,
    commit,
)
from connector.windows import Window

T10 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
T11 = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
T12 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RULES = CommitRules(
    keep_lookback=timedelta(minutes=60), target_records=1000, max_slice_span=timedelta(hours=24)
)
PENDING = PendingBatch(
    created=T11, entries=(IntentEntry("k1", 1, "Delivered", 0, "9f86d081884c7d659a2feaa0c55ad015"),)
)


def decision(key, status="Delivered", revision=0, received_ms=1_773_136_800_000):
    return Decision(key=key, entry=LedgerEntry(received_ms, status, revision), previous_status=None)


class TestCommit:
    def test_accepted_batch_settles_the_intent_and_commits_its_rows_without_moving_the_mark(self):
        before = FeedProgress(
            feed="live", high_water_mark=T10, slice_span=timedelta(hours=1), pending_batch=PENDING
        )

        after, change = commit(before, Committed(accepted=(decision("k1"),)), RULES)

        assert after == FeedProgress(feed="live", high_water_mark=T10, slice_span=timedelta(hours=1))
        assert change == LedgerChange(committed=(decision("k1"),), prune_before=None)

    def test_finished_slice_moves_the_mark_to_its_end_prunes_the_lookback_and_doubles_a_sparse_span(self):
        before = FeedProgress(feed="live", high_water_mark=T10, slice_span=timedelta(hours=1))

        after, change = commit(before, Committed(finished_slice=Window(T10, T11), slice_records=10), RULES)

        assert after == FeedProgress(feed="live", high_water_mark=T11, slice_span=timedelta(hours=2))
        assert change == LedgerChange(committed=(), prune_before=T10)

    def test_full_slice_halves_the_span(self):
        before = FeedProgress(feed="live", high_water_mark=T10, slice_span=timedelta(hours=2))

        after, _ = commit(before, Committed(finished_slice=Window(T10, T12), slice_records=2002), RULES)

        assert after.slice_span == timedelta(hours=1)

    def test_slice_behind_the_mark_never_moves_it_back(self):
        before = FeedProgress(feed="live", high_water_mark=T12, slice_span=timedelta(hours=1))

        after, change = commit(before, Committed(finished_slice=Window(T10, T11), slice_records=500), RULES)

        assert after.high_water_mark == T12
        assert change.prune_before == T11

    def test_first_slice_of_a_new_feed_starts_from_the_initial_span(self):
        before = FeedProgress(feed="live")

        after, change = commit(before, Committed(finished_slice=Window(T10, T11), slice_records=1000), RULES)

        assert after == FeedProgress(feed="live", high_water_mark=T11, slice_span=timedelta(hours=1))
        assert change.prune_before == T10

    def test_backfill_rules_keep_no_lookback(self):
        rules = CommitRules(
            keep_lookback=timedelta(0), target_records=1000, max_slice_span=timedelta(hours=24)
        )

        _, change = commit(FeedProgress(feed="backfill/x"), Committed(finished_slice=Window(T10, T11)), rules)

        assert change.prune_before == T11

    def test_unverified_resend_counts_possible_duplicates_and_commits_nothing(self):
        before = FeedProgress(feed="live", pending_batch=PENDING, possible_duplicates_total=3)

        after, change = commit(before, Committed(possible_duplicates=1), RULES)

        assert after == FeedProgress(feed="live", possible_duplicates_total=4)
        assert change == LedgerChange()


class TestFeedState:
    def test_applying_a_commit_changes_progress_and_ledger_in_place(self):
        state = FeedState.new("live")
        state.ledger.decide("k1", T10, "Delivered")

        state.apply(Committed(accepted=(decision("k1", received_ms=int(T10.timestamp() * 1000)),)), RULES)
        state.apply(Committed(finished_slice=Window(T10, T12)), RULES)

        assert state.progress.high_water_mark == T12
        assert len(state.ledger) == 0  # received at 10:00, older than 12:00 - 60 min: aged out
        assert state.ledger.staged_count == 0

    def test_checkpoint_is_a_view_of_the_ledger_not_a_copy(self):
        ledger = DedupLedger({"k1": LedgerEntry(1, "Delivered", 0)})
        state = FeedState(progress=FeedProgress(feed="live"), ledger=ledger)

        document = state.checkpoint()
        ledger.commit([decision("k2")])

        assert set(document.ledger) == {"k1", "k2"}

    def test_resume_takes_a_stored_checkpoint_and_its_etag(self):
        stored = Checkpoint(
            progress=FeedProgress(feed="live", high_water_mark=T10), ledger={"k": LedgerEntry(1, "A", 0)}
        )

        state = FeedState.resume(stored, '"etag-1"')

        assert state.progress.high_water_mark == T10
        assert len(state.ledger) == 1
        assert state.etag == '"etag-1"'

    def test_a_commit_of_every_row_of_the_saved_intent_is_marked_as_settling_it(self):
        state = FeedState(progress=FeedProgress(feed="live", pending_batch=PENDING), ledger=DedupLedger())
        state.saved('"e1"')

        state.apply(Committed(accepted=(decision("k1", received_ms=1),)), RULES)

        assert state.unsaved == [
            LedgerChange(committed=(decision("k1", received_ms=1),), settles_intent=True)
        ]

    def test_a_commit_of_part_of_the_intent_or_of_an_unsaved_intent_lists_its_rows(self):
        two = PendingBatch(created=T11, entries=(*PENDING.entries, IntentEntry("k2", 1, "Delivered", 0, "r")))
        partial = FeedState(progress=FeedProgress(feed="live", pending_batch=two), ledger=DedupLedger())
        partial.saved('"e1"')
        unsaved = FeedState(progress=FeedProgress(feed="live", pending_batch=PENDING), ledger=DedupLedger())

        partial.apply(Committed(accepted=(decision("k1", received_ms=1),)), RULES)
        unsaved.apply(Committed(accepted=(decision("k1", received_ms=1),)), RULES)

        assert not partial.unsaved[0].settles_intent
        assert not unsaved.unsaved[0].settles_intent


class TestUnfinishedSlicesAndStalls:
    def test_unfinished_slice_keeps_the_mark_and_shrinks_the_span(self):
        before = FeedProgress(feed="live", high_water_mark=T10, slice_span=timedelta(hours=1))

        after, change = commit(
            before,
            Committed(unfinished_slice=Window(T10, T11), covered_from=T11 - timedelta(minutes=10)),
            RULES,
        )

        assert after.high_water_mark == T10
        assert after.slice_span == timedelta(minutes=5)
        assert change == LedgerChange()

    def test_dead_lettered_rows_are_committed_to_the_ledger_as_handled(self):
        _, change = commit(FeedProgress(feed="live"), Committed(dead_lettered=(decision("k9"),)), RULES)

        assert change.committed == (decision("k9"),)

    def test_runs_without_progress_count_up_and_progress_or_nothing_due_resets(self):
        progress = FeedProgress(feed="live")
        for expected in (1, 2, 3):
            progress = after_run(progress, due=True, moved=False)
            assert progress.stalled_runs == expected

        assert after_run(progress, due=True, moved=True).stalled_runs == 0
        assert after_run(progress, due=False, moved=False).stalled_runs == 0
