"""Reconcile's pure core: hour pieces, the range it may compare, the comparison, and the repaired revision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.ledger import LedgerEntry, epoch_ms, ledger_key
from connector.mapping import parse_trace_record
from connector.reconcile import (
    GraphFinal,
    Missing,
    NothingToReconcile,
    TableRow,
    Totals,
    compare_piece,
    confirm_piece,
    estimate_requests,
    hour_pieces,
    never_loaded,
    plan_reconcile,
    render_piece,
    repair_decision,
    still_missing,
    unfinished_backfills,
)
from connector.state import Checkpoint, FeedProgress, QueuePlan
from connector.windows import Window

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PIECE = Window(datetime(2026, 11, 25, 9, tzinfo=UTC), datetime(2026, 11, 25, 10, tzinfo=UTC))
TRACE = "7e3b2b2e-1b5e-4b17-80cc-2af6c1d9a3b1"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, tzinfo=UTC)


HALF_PAST_NINE = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def final(recipient: str, status: str, received: datetime = HALF_PAST_NINE, trace: str = TRACE) -> GraphFinal:
    raw = {
        "id": trace,
        "recipientAddress": recipient,
        "senderAddress": "a@fabrikam.com",
        "receivedDateTime": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": status,
    }
    record = parse_trace_record(raw)
    return GraphFinal(
        ledger_key(record.trace_id, record.recipient), record.received, record.status, record, raw
    )


def row(
    recipient: str,
    status: str,
    revision: int = 0,
    copies: int = 1,
    trace: str = TRACE,
    ingested: datetime | None = None,
) -> TableRow:
    return TableRow(trace, recipient, status, revision, copies, ingested)


GRAPH_ASKED = at(11, 0)
"""When the tests' comparisons asked Graph (rows that arrived after it may be newer than its answer)."""


def compared(finals: list[GraphFinal], rows: list[TableRow]):  # noqa: ANN201
    result = compare_piece(PIECE, finals, rows)
    result.graph_read_at = GRAPH_ASKED
    return result


# ---------------------------------------------------------------- pieces and the range


def test_pieces_follow_clock_hours_with_short_pieces_at_the_edges():
    pieces = hour_pieces(Window(at(9, 20), at(11, 45)))

    assert [(p.start, p.end) for p in pieces] == [(at(9, 20), at(10)), (at(10), at(11)), (at(11), at(11, 45))]


def test_the_range_stops_at_the_live_feed_s_high_water_mark_and_says_so():
    plan = plan_reconcile(
        at(6), at(12), now=NOW, settle_delay=timedelta(minutes=10), live_high_water_mark=at(11, 30)
    )

    assert plan.window == Window(at(6), at(11, 30))
    assert len(plan.pieces) == 6
    assert any("high-water mark" in note for note in plan.notes)


def test_the_range_starts_no_earlier_than_graph_s_retention():
    plan = plan_reconcile(
        NOW - timedelta(days=120),
        NOW - timedelta(days=80),
        now=NOW,
        settle_delay=timedelta(0),
        live_high_water_mark=NOW,
    )

    assert plan.window.start == NOW - timedelta(days=90) + timedelta(minutes=15)
    assert any("90 days" in note for note in plan.notes)


def test_a_range_the_feed_has_not_reached_is_nothing_to_reconcile():
    with pytest.raises(NothingToReconcile, match="high-water mark"):
        plan_reconcile(at(11, 30), at(12), now=NOW, settle_delay=timedelta(0), live_high_water_mark=at(11))


def test_before_the_first_live_run_there_is_nothing_to_reconcile():
    with pytest.raises(NothingToReconcile, match="stored nothing yet"):
        plan_reconcile(at(6), at(7), now=NOW, settle_delay=timedelta(0), live_high_water_mark=None)


def test_an_empty_range_is_an_argument_error():
    with pytest.raises(ValueError, match="--start"):
        plan_reconcile(at(7), at(7), now=NOW, settle_delay=timedelta(0), live_high_water_mark=NOW)


def test_the_request_estimate_counts_a_page_per_5000_rows_and_at_least_one_per_piece():
    pieces = hour_pieces(Window(at(9), at(12)))

    assert estimate_requests(pieces, {}) == 3
    assert estimate_requests(pieces, {at(9): 12_000, at(10): 5_000, at(11): 1}) == 3 + 1 + 1


# ---------------------------------------------------------------- the comparison


def test_a_key_the_table_lacks_is_missing():
    result = compare_piece(
        PIECE,
        [final("a@contoso.com", "Delivered"), final("b@contoso.com", "Failed")],
        [row("a@contoso.com", "Delivered")],
    )

    assert [m.graph.record.recipient for m in result.missing] == ["b@contoso.com"]
    assert result.stale == 0
    assert (result.graph_keys, result.table_rows) == (2, 1)


def test_a_key_whose_newest_row_has_another_status_is_missing_as_stale():
    result = compare_piece(
        PIECE,
        [final("a@contoso.com", "Delivered")],
        [row("a@contoso.com", "Pending"), row("a@contoso.com", "Expanded", 1)],
    )

    (missing,) = result.missing
    assert (missing.table_status, missing.table_revision) == ("Expanded", 1)
    assert result.stale == 1


def test_an_older_revision_with_graph_s_status_does_not_hide_a_newer_one():
    rows = [row("a@contoso.com", "Delivered", 1), row("a@contoso.com", "Pending", 2)]

    result = compare_piece(PIECE, [final("a@contoso.com", "Delivered")], rows)

    assert len(result.missing) == 1


def test_the_same_identity_twice_is_duplicated_whatever_the_recipient_s_case():
    rows = [row("A@Contoso.com", "Delivered", copies=2), row("a@contoso.com", "Delivered")]

    result = compare_piece(PIECE, [final("a@contoso.com", "Delivered")], rows)

    assert result.duplicated_rows == 2
    assert result.missing == []


def test_revisions_of_one_key_are_not_duplicates():
    rows = [row("a@contoso.com", "Pending"), row("a@contoso.com", "Delivered", 1)]

    result = compare_piece(PIECE, [final("a@contoso.com", "Delivered")], rows)

    assert result.clean


def test_a_key_only_the_table_holds_is_unknown_to_graph():
    result = compare_piece(PIECE, [], [row("gone@contoso.com", "Delivered")])

    assert result.unknown_to_graph == 1
    assert result.missing == []


def test_the_status_case_the_table_holds_does_not_matter():
    result = compare_piece(PIECE, [final("a@contoso.com", "delivered")], [row("a@contoso.com", "delivered")])

    assert result.clean


# ---------------------------------------------------------------- the check under the lock


def test_a_row_stored_since_the_comparison_is_no_longer_missing():
    result = compared([final("a@contoso.com", "Delivered")], [])

    left = still_missing(result, [row("a@contoso.com", "Delivered", ingested=at(11, 5))])

    assert left == []
    assert result.repair_skipped == 1


def test_a_key_the_feed_wrote_after_graph_answered_is_left_to_the_feed():
    result = compared(
        [final("a@contoso.com", "Delivered")], [row("a@contoso.com", "Pending", ingested=at(10))]
    )

    left = still_missing(
        result,
        [
            row("a@contoso.com", "Pending", ingested=at(10)),
            row("a@contoso.com", "Failed", 1, ingested=at(11, 5)),
        ],
    )

    assert left == []
    assert result.repair_skipped == 1


def test_a_row_still_missing_is_kept_with_what_the_table_holds_now():
    result = compared([final("a@contoso.com", "Delivered")], [])

    (left,) = still_missing(result, [row("a@contoso.com", "Pending", ingested=at(10))])

    assert (left.table_status, left.table_revision) == ("Pending", 0)
    assert result.repair_skipped == 0


# ---------------------------------------------------------------- the repaired row's revision


def missing(status: str, table_status: str | None = None, table_revision: int | None = None) -> Missing:
    return Missing(final("a@contoso.com", status), table_status, table_revision)


def test_a_row_the_ledger_holds_but_the_table_lost_is_sent_again_as_it_was():
    entry = LedgerEntry(epoch_ms(at(9, 30)), "Delivered", 1)

    decision = repair_decision(missing("Delivered", "Pending", 0), entry)

    assert decision.entry.revision == 1
    assert decision.previous_status == "Pending"


def test_a_key_neither_ledger_nor_table_holds_is_revision_zero():
    decision = repair_decision(missing("Delivered"), None)

    assert (decision.entry.revision, decision.entry.status, decision.previous_status) == (
        0,
        "Delivered",
        None,
    )
    assert decision.entry.received_ms == epoch_ms(at(9, 30))


def test_a_key_older_than_the_ledger_follows_the_table_s_newest_revision():
    decision = repair_decision(missing("Delivered", "Pending", 3), None)

    assert (decision.entry.revision, decision.previous_status) == (4, "Pending")


def test_a_status_the_ledger_has_not_seen_is_the_revision_after_both():
    entry = LedgerEntry(epoch_ms(at(9, 30)), "Pending", 2)

    decision = repair_decision(missing("Delivered", "Pending", 1), entry)

    assert decision.entry.revision == 3
    assert decision.previous_status == "Pending"


def test_a_lost_row_whose_only_record_is_the_ledger_gets_the_ledger_s_status_as_previous():
    entry = LedgerEntry(epoch_ms(at(9, 30)), "Pending", 0)

    decision = repair_decision(missing("Delivered"), entry)

    assert (decision.entry.revision, decision.previous_status) == (1, "Pending")


# ---------------------------------------------------------------- backfills still writing the range


def backfill(
    start: datetime, end: datetime, mark: datetime | None, plan: QueuePlan | None = None
) -> Checkpoint:
    name = f"backfill/{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"
    return Checkpoint(
        FeedProgress(feed=name, range_start=start, range_end=end, high_water_mark=mark, queue_plan=plan), {}
    )


LIVE = Checkpoint(FeedProgress(feed="live", high_water_mark=NOW, coverage_start=at(6)), {})


def test_an_unfinished_backfill_overlapping_the_range_is_named():
    busy = backfill(at(0), at(6), at(2))

    assert unfinished_backfills([LIVE, busy], Window(at(1), at(3))) == [busy.progress.feed]
    assert unfinished_backfills([LIVE, busy], Window(at(6), at(9))) == []


def test_a_finished_backfill_does_not_hold_the_range():
    assert unfinished_backfills([LIVE, backfill(at(0), at(8), at(6))], Window(at(1), at(3))) == []


def test_a_queued_backfill_holds_the_range_until_each_overlapping_slice_is_done():
    job = backfill(at(0), at(6), None, QueuePlan(slice_span=timedelta(hours=2), stop=at(6)))
    done = Checkpoint(
        FeedProgress(
            feed=f"{job.progress.feed}/20261125T000000Z_20261125T020000Z",
            range_start=at(0),
            range_end=at(2),
            high_water_mark=at(2),
        ),
        {},
    )

    assert unfinished_backfills([LIVE, job, done], Window(at(0), at(2))) == []
    assert unfinished_backfills([LIVE, job, done], Window(at(1), at(3))) == [job.progress.feed]


# ---------------------------------------------------------------- what is shown


def test_totals_add_up_and_an_hour_line_names_each_difference():
    result = compare_piece(
        PIECE,
        [final("a@contoso.com", "Delivered"), final("b@contoso.com", "Failed")],
        [row("a@contoso.com", "Pending"), row("c@contoso.com", "Delivered", copies=3)],
        unreadable=2,
    )
    totals = Totals.of([result, compare_piece(PIECE, [], [])])

    assert (totals.pieces, totals.missing, totals.stale, totals.duplicated) == (2, 2, 1, 2)
    assert (totals.unknown_to_graph, totals.unreadable, totals.missing_left) == (1, 2, 2)
    line = render_piece(result)
    assert line.startswith("  2026-11-25T09:00Z..10:00  graph 2  table 4  missing 2 (1 stale)  duplicated 2")
    assert "unknown to Graph 1" in line
    assert "unreadable 2" in line


def test_the_json_of_an_hour_names_rows_by_identity_never_by_subject():
    graph = final("a@contoso.com", "Delivered")
    graph.raw["subject"] = "Quarterly results"  # type: ignore[index]
    result = compare_piece(PIECE, [graph], [])

    (shown,) = result.fields()["missingRows"]  # type: ignore[misc]
    assert set(shown) == {"messageTraceId", "recipient", "received", "graphStatus", "tableStatus"}


def test_a_range_before_the_live_feed_s_start_that_no_backfill_claimed_was_never_loaded():
    assert never_loaded([LIVE], Window(at(3), at(9))) == [Window(at(3), at(6))]
    assert never_loaded([LIVE], Window(at(7), at(9))) == []


def test_a_backfill_s_claim_counts_as_loaded_and_only_the_rest_is_named():
    claimed = backfill(at(1), at(4), at(4))

    assert never_loaded([LIVE, claimed], Window(at(0), at(9))) == [Window(at(0), at(1)), Window(at(4), at(6))]


def test_without_a_live_feed_everything_outside_backfills_was_never_loaded():
    assert never_loaded([], Window(at(0), at(2))) == [Window(at(0), at(2))]


def test_the_second_read_clears_a_row_the_feed_stored_before_graph_answered():
    finals = [final("a@contoso.com", "Delivered"), final("b@contoso.com", "Pending")]
    first = compared(finals, [row("b@contoso.com", "Pending", ingested=at(10))])

    again = confirm_piece(
        first,
        finals,
        [row("a@contoso.com", "Delivered", ingested=at(10, 59)), row("b@contoso.com", "Pending")],
    )

    assert again.missing == []
    assert again.table_rows == 2


def test_a_stale_row_not_yet_queryable_at_the_first_read_is_found_by_the_second():
    finals = [final("a@contoso.com", "Delivered")]
    first = compared(finals, [])  # the feed's Failed row was still in the ingestion latency

    again = confirm_piece(first, finals, [row("a@contoso.com", "Failed", ingested=at(10, 30))])

    (missing,) = again.missing
    assert (missing.table_status, missing.table_revision) == ("Failed", 0)


def test_the_second_read_never_takes_a_row_written_after_graph_answered_for_a_stale_one():
    finals = [final("b@contoso.com", "Pending")]
    first = compared(finals, [row("b@contoso.com", "Pending", ingested=at(10))])
    # The feed stored Delivered after Graph's (older) answer was asked for: not a row to repair.
    fresh = [
        row("b@contoso.com", "Pending", ingested=at(10)),
        row("b@contoso.com", "Delivered", 1, ingested=at(11)),
    ]

    assert confirm_piece(first, finals, fresh).missing == []


def test_the_second_read_keeps_a_row_still_missing():
    finals = [final("a@contoso.com", "Delivered")]
    first = compared(finals, [])

    assert len(confirm_piece(first, finals, []).missing) == 1
