"""One run-report model: every view (log line, CLI text, last-run summary, status) comes from it."""

from datetime import UTC, datetime, timedelta

from connector.errors import SinkError
from connector.report import (
    COUNTER_FIELDS,
    LAST_RUN_FIELDS,
    MAX_STORED_ERROR_CHARS,
    RunReport,
    last_run_summary,
    log_line,
    render_fields,
    render_status,
    report_fields,
    status_fields,
)
from connector.state import Checkpoint, FeedProgress, IntentEntry, PendingBatch
from connector.windows import Window

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def report(**changes):
    values = {
        "feed": "live",
        "started": NOW - timedelta(minutes=1),
        "finished": NOW,
        "outcome": "completed",
        "window": Window(NOW - timedelta(hours=1), NOW - timedelta(minutes=2)),
        "high_water_mark_before": NOW - timedelta(hours=1),
        "high_water_mark_after": NOW - timedelta(minutes=2),
    }
    values.update(changes)
    return RunReport(**values)


def test_every_counter_reaches_the_log_line_and_the_text():
    counted = report(**{counter.name: 7 for counter in COUNTER_FIELDS})

    fields = report_fields(counted)
    text = "\n".join(render_fields(fields, NOW))

    for counter in COUNTER_FIELDS:
        assert fields[counter.name] == 7
        assert f"{counter.name}=7" in log_line(fields)
        assert f"{counter.metadata['label']:<17} 7" in text


def test_quiet_counters_show_only_when_something_happened():
    text = "\n".join(render_fields(report_fields(report()), NOW))

    assert "possible dups" not in text
    assert "rows uploaded     0" in text


def test_last_run_summary_keeps_exactly_the_fields_every_version_reads():
    summary = last_run_summary(report(rows_uploaded=3, error=SinkError("refused", rows_failed=3, status=503)))

    assert tuple(summary) == LAST_RUN_FIELDS
    assert summary["rows_uploaded"] == 3
    assert summary["error"] == "refused"


def test_the_error_kept_and_logged_shows_no_address_and_the_kept_one_is_bounded():
    echoed = SinkError(
        "Logs Ingestion API answered 400: (InvalidData) value 'victim@fabrikam.example' " + "x" * 2000,
        rows_failed=1,
        status=400,
    )

    logged = report_fields(report(error=echoed))["error"]
    kept = last_run_summary(report(error=echoed))["error"]

    assert "victim@" not in str(logged)
    assert "<address>" in str(logged)
    assert isinstance(kept, str)
    assert len(kept) == MAX_STORED_ERROR_CHARS
    assert kept.startswith("Logs Ingestion API answered 400")


def test_text_shows_the_lag_and_the_error():
    text = render_fields(report_fields(report(error=SinkError("refused", rows_failed=1, status=503))), NOW)

    assert "lag               0:02:00" in text
    assert "error             refused" in text


def test_status_shows_each_feed_with_its_last_run_through_the_same_renderer():
    progress = FeedProgress(
        feed="live",
        high_water_mark=NOW - timedelta(minutes=5),
        possible_duplicates_total=2,
        pending_batch=PendingBatch(
            created=NOW, entries=(IntentEntry("k", 1, "Delivered", 0, "9f86d081884c7d659a2feaa0c55ad015"),)
        ),
        last_run=last_run_summary(report(rows_uploaded=4)),
    )
    checkpoint = Checkpoint(progress=progress, ledger={})

    lines = render_status([checkpoint], NOW)
    document = status_fields(checkpoint, NOW)

    assert lines[0] == "[live]"
    assert "  lag               0:05:00" in lines
    assert "  unconfirmed batch 1 rows, resolved by the next run" in lines
    assert "    rows uploaded     4" in lines
    assert document["lag_seconds"] == 300
    assert document["unconfirmed_batch_rows"] == 1
    assert document["last_run"] == last_run_summary(report(rows_uploaded=4))


def test_status_without_any_checkpoint_says_so():
    assert render_status([], NOW) == ["no checkpoint yet: the connector has not committed a run"]


def test_status_shows_since_when_a_feed_waits_for_the_service_principal():
    since = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
    checkpoint = Checkpoint(progress=FeedProgress(feed="live", waiting_for_permission_since=since), ledger={})
    now = since + timedelta(hours=3)

    text = "\n".join(render_status([checkpoint], now))

    assert "for permission since 2026-01-20T08:00:00" in text
    assert "3:00:00 ago" in text
    assert "missing or still activating" in text
    assert status_fields(checkpoint, now)["waiting_for_permission_since"].startswith("2026-01-20T08:00:00")


def test_health_row_holds_exactly_the_schema_columns_and_the_reports_own_values():
    from connector.mapping import format_datetime
    from connector.report import health_row
    from connector.schema import load_health_schema

    done = report(rows_uploaded=12, revisions=3, dead_lettered=1, possible_duplicates=2, pages=4)

    row = health_row(done, NOW + timedelta(hours=1))

    assert set(row) <= set(load_health_schema().column_names)
    assert row["TimeGenerated"] == format_datetime(NOW)  # the run's end, not when the row is built
    assert row["LagMinutes"] == 2.0
    assert (row["RowsStored"], row["Revisions"], row["DeadLettered"], row["PossibleDuplicates"]) == (
        12,
        3,
        1,
        2,
    )
    assert (row["Pages"], row["Outcome"], row["Feed"]) == (4, "completed", "live")
    assert "Error" not in row
    assert "ErrorKind" not in row


def test_health_row_error_is_the_stored_last_run_error_with_addresses_hidden_and_its_kind():
    from connector.report import health_row

    failed = report()
    failed.fail(SinkError("refused row of bob@contoso.com " + "x" * 900, rows_failed=1, status=403))

    row = health_row(failed, NOW)

    assert row["Error"] == last_run_summary(failed)["error"]
    assert "bob@contoso.com" not in str(row["Error"])
    assert len(str(row["Error"])) <= MAX_STORED_ERROR_CHARS
    assert (row["Outcome"], row["ErrorKind"]) == ("failed", "permission")  # a 403 is a permission to grant
