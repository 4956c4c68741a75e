"""The live feed end to end: real msal/azure-identity/ingestion/blob code, simulator + Azurite."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from connector.errors import (
    AuthenticationError,
    CheckpointConflictError,
    GraphPermissionError,
    PagingLoopError,
    PermissionWaitExpiredError,
    SinkError,
)
from connector.ledger import row_id
from connector.mapping import format_datetime, parse_datetime
from connector.quota_store import quota_blob_name
from connector.runner import run_feed
from connector.simulator import generate_traffic
from connector.state import Checkpoint, FeedProgress
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def stored_keys(sim) -> Counter:
    return Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )


def untiered(env: dict[str, str]) -> dict[str, str]:
    """Every run re-reads the whole overlap: these tests change Graph between runs seconds apart.

    With the tiers, what lies beyond the short lookback is re-read as the feed moves
    (tests/integration/test_live_tiers.py runs that on a data clock).
    """
    return {**env, "SHORT_LOOKBACK_MINUTES": env.get("OVERLAP_LOOKBACK_MINUTES", "60")}


def graph_filters(sim) -> list[tuple[datetime, datetime]]:
    """(start, end) of every first-page Graph request."""
    bounds = []
    for record in sim.graph.requests(path="messageTraces"):
        query = parse_qs(urlsplit(record.url).query)
        if "$filter" in query and "$skiptoken" not in query:
            parts = query["$filter"][0].split()
            bounds.append((parse_datetime(parts[2]), parse_datetime(parts[6])))
    return bounds


def test_every_generated_record_is_stored_exactly_once(sim, connector_env):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=5), now - timedelta(minutes=5), messages=400, seed=7)
    )
    expected = Counter((r["id"], r["recipientAddress"].lower(), r["status"]) for r in sim.graph.rows())

    report = run_feed(connector_env)

    assert report.ok, report.error
    stored = stored_keys(sim)
    assert max(stored.values()) == 1
    assert {(i, r) for i, r, _ in stored} == {(i, r) for i, r, _ in expected}
    assert all("$top=5000" in record.url for record in sim.graph.requests(path="messageTraces"))


def test_multi_recipient_mail_is_one_row_per_recipient(sim, connector_env):
    received = at(sim.now() - timedelta(minutes=30))
    sim.graph.add(
        [trace("mail-1", rcpt, received) for rcpt in ("a@contoso.com", "B@Fabrikam.com", "c@gmail.com")]
    )

    run_feed(connector_env)

    rows = sorted(sim.ingestion.rows(), key=lambda r: r["RecipientAddress"])
    assert [(r["MessageTraceId"], r["RecipientAddress"], r["Direction"]) for r in rows] == [
        ("mail-1", "B@Fabrikam.com", "Internal"),
        ("mail-1", "a@contoso.com", "Internal"),
        ("mail-1", "c@gmail.com", "Outbound"),
    ]


def test_second_run_with_no_new_mail_uploads_nothing(sim, connector_env):
    sim.graph.add(
        generate_traffic(sim.now() - timedelta(hours=2), sim.now() - timedelta(minutes=5), 50, seed=3)
    )
    run_feed(connector_env)
    uploads_before = sim.ingestion.request_count

    report = run_feed(connector_env)

    assert report.ok
    assert report.rows_uploaded == 0
    assert report.duplicates_dropped > 0
    assert sim.ingestion.request_count == uploads_before


def test_late_record_inside_the_overlap_is_stored_once(sim, connector_env):
    now = sim.now()
    sim.graph.add([trace("early", "bob@contoso.com", at(now - timedelta(minutes=20)))])
    sim.graph.add(
        [trace("late", "bob@contoso.com", at(now - timedelta(minutes=18)))],
        visible_at=now + timedelta(days=1),
    )
    run_feed(untiered(connector_env))
    assert [r["MessageTraceId"] for r in sim.ingestion.rows()] == ["early"]

    sim.graph.publish_all()
    run_feed(untiered(connector_env))
    run_feed(untiered(connector_env))

    assert stored_keys(sim) == Counter(
        {("early", "bob@contoso.com", "Delivered"): 1, ("late", "bob@contoso.com", "Delivered"): 1}
    )


def test_status_change_is_stored_as_one_revision_row(sim, connector_env):
    received = at(sim.now() - timedelta(minutes=15))
    sim.graph.add([trace("mail-1", "bob@contoso.com", received, status="pending")])
    run_feed(untiered(connector_env))

    sim.graph.set_status("mail-1", "bob@contoso.com", "quarantined")
    run_feed(untiered(connector_env))
    run_feed(untiered(connector_env))

    rows = sim.ingestion.rows()
    assert [(r["Status"], r["StatusRevision"], r["PreviousStatus"]) for r in rows] == [
        ("Pending", 0, ""),
        ("Quarantined", 1, "Pending"),
    ]


def test_every_stored_row_carries_its_own_row_id(sim, connector_env):
    received = at(sim.now() - timedelta(minutes=15))
    sim.graph.add(
        [trace("mail-1", rcpt, received, status="pending") for rcpt in ("Bob@Contoso.com", "eve@gmail.com")]
    )
    run_feed(untiered(connector_env))
    sim.graph.set_status("mail-1", "Bob@Contoso.com", "delivered")
    run_feed(untiered(connector_env))

    rows = sim.ingestion.rows()

    assert len(rows) == 3
    assert len({r["RowId"] for r in rows}) == 3
    for r in rows:
        assert r["RowId"] == row_id(
            r["MessageTraceId"], r["RecipientAddress"], r["Status"], r["StatusRevision"]
        )


def test_record_exactly_on_a_slice_boundary_is_stored_once(sim, connector_env, blob_store):
    env = untiered({**connector_env, "MAX_SLICE_HOURS": "0.25", "INITIAL_LOOKBACK_HOURS": "2"})
    run_feed(env)
    hwm = blob_store.load("live").checkpoint.progress.high_water_mark
    boundary = hwm - timedelta(minutes=45)  # next run: slices of 15 min from hwm - 60 min
    sim.graph.add([trace("edge", "bob@contoso.com", at(boundary))])
    sim.graph.clear_requests()

    report = run_feed(env)

    assert report.ok, report.error
    assert sum(1 for start, end in graph_filters(sim) if start <= boundary <= end) == 2
    assert stored_keys(sim) == Counter({("edge", "bob@contoso.com", "Delivered"): 1})


def test_retry_after_from_graph_is_honoured(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.graph.inject(429, headers={"Retry-After": "1"})

    report = run_feed(connector_env)

    assert report.ok, report.error
    graph_calls = sim.graph.requests(path="messageTraces")
    assert graph_calls[0].status == 429
    assert graph_calls[1].time - graph_calls[0].time >= 1.0
    assert len(sim.ingestion.rows()) == 1


def test_repeated_next_link_stops_with_a_paging_loop_error(sim, connector_env, blob_store):
    sim.graph.add(
        generate_traffic(sim.now() - timedelta(hours=1), sim.now() - timedelta(minutes=5), 20, seed=1)
    )
    sim.graph.inject("loop", times=None)

    report = run_feed(connector_env)

    assert isinstance(report.error, PagingLoopError)
    assert "paging loop" in str(report.error)
    assert len(sim.graph.requests(path="messageTraces")) < 10
    stored = blob_store.load("live")
    assert stored is None or stored.checkpoint.progress.high_water_mark is None


def test_ingestion_500_mid_run_then_rerun_completes_with_no_duplicate_and_no_gap(
    sim, connector_env, blob_store
):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=5), now - timedelta(minutes=5), messages=2500, seed=11)
    )
    expected = {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}
    sim.ingestion.inject(500, times=10, after=1)  # the second upload and its retries fail

    first = run_feed(connector_env)

    assert isinstance(first.error, SinkError)
    assert "500" in str(first.error)
    committed = blob_store.load("live").checkpoint
    assert 0 < len(sim.ingestion.rows()) < len(expected)
    assert len(committed.ledger) == len(sim.ingestion.rows())
    sim.ingestion.clear_faults()

    second = run_feed(connector_env)

    assert second.ok, second.error
    stored = stored_keys(sim)
    assert max(stored.values()) == 1
    assert {(i, r) for i, r, _ in stored} == expected


def test_high_water_mark_older_than_90_days_is_clamped_with_a_warning(sim, connector_env, blob_store, caplog):
    old = sim.now() - timedelta(days=95)
    blob_store.save(
        Checkpoint(progress=FeedProgress(feed="live", high_water_mark=old, coverage_start=old), ledger={}),
        None,
    )
    sim.graph.add([trace("recent", "bob@contoso.com", at(sim.now() - timedelta(days=89)))])
    caplog.set_level(logging.WARNING, logger="connector")

    report = run_feed({**connector_env, "MAX_SLICE_HOURS": "240"})

    assert report.ok, report.error
    assert timedelta(days=4, hours=23) < report.unrecoverable < timedelta(days=5, hours=1)
    assert any("90-day retention" in message and "5.0 days" in message for message in caplog.messages)
    assert min(start for start, _ in graph_filters(sim)) >= sim.now() - timedelta(days=90)
    assert [r["MessageTraceId"] for r in sim.ingestion.rows()] == ["recent"]


def test_a_service_principal_401_is_a_waiting_state_with_its_first_sighting_then_an_error_after_a_day(
    sim, connector_env, blob_store, caplog
):
    sim.graph.service_principal_missing = True
    first_seen = datetime.now(UTC)

    first = run_feed(connector_env, clock=lambda: first_seen)
    second = run_feed(connector_env, clock=lambda: first_seen + timedelta(hours=3))

    for report in (first, second):
        assert report.ok, report.error
        assert report.outcome == "waiting_for_permission"
    assert len(sim.graph.requests(path="messageTraces")) == 2
    stored = blob_store.load("live").checkpoint.progress
    assert stored.waiting_for_permission_since is not None
    assert abs(stored.waiting_for_permission_since - first_seen) < timedelta(seconds=1)
    assert stored.stalled_runs == 0
    assert any("missing or was created recently and is still activating" in m for m in caplog.messages)
    assert any(
        "New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373" in m for m in caplog.messages
    )

    late = run_feed(connector_env, clock=lambda: first_seen + timedelta(hours=25))

    assert isinstance(late.error, PermissionWaitExpiredError)
    assert late.error.exit_code == 3
    assert "more than 24 h" in str(late.error)

    sim.graph.service_principal_missing = False
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    assert run_feed(connector_env).ok
    assert blob_store.load("live").checkpoint.progress.waiting_for_permission_since is None


def test_missing_permission_names_the_permission_to_grant(sim, connector_env):
    sim.graph.permission_granted = False

    report = run_feed(connector_env)

    assert isinstance(report.error, GraphPermissionError)
    assert "ExchangeMessageTrace.Read.All" in str(report.error)


def test_wrong_client_secret_is_a_clear_authentication_error(sim, connector_env):
    report_or_error = None
    try:
        report_or_error = run_feed({**connector_env, "CLIENT_SECRET": "wrong-secret"})
    except AuthenticationError as err:
        report_or_error = err
    error = report_or_error if isinstance(report_or_error, AuthenticationError) else report_or_error.error

    assert isinstance(error, AuthenticationError)
    assert "AADSTS7000215" in str(error)
    assert "wrong-secret" not in str(error)


def test_checkpoint_written_concurrently_stops_the_run_without_overwriting(sim, connector_env, blob_store):
    sim.graph.add([trace("first", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    run_feed(connector_env)
    sim.graph.add([trace("second", "bob@contoso.com", at(sim.now() - timedelta(minutes=9)))])
    sim.graph.inject("timeout", seconds=2.0)  # the next Graph page answers after 2 s
    other_writer_done = threading.Event()

    def other_writer():
        time.sleep(0.5)
        stored = blob_store.load("live")
        blob_store.save(stored.checkpoint, stored.etag)
        other_writer_done.set()

    thread = threading.Thread(target=other_writer)
    thread.start()
    report = run_feed(connector_env)
    thread.join()

    assert other_writer_done.is_set()
    assert isinstance(report.error, CheckpointConflictError)
    assert "another run of the connector" in str(report.error)
    assert report.error.exit_code == 4


def test_tokens_are_cached_across_runs(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    before = sim.entra.token_request_count()

    for _ in range(3):
        assert run_feed(connector_env).ok

    assert sim.entra.token_request_count() - before <= 2


@pytest.mark.parametrize("auth_mode", ["certificate", "managed_identity"])
def test_certificate_and_managed_identity_credentials_work(sim, connector_env, auth_mode, monkeypatch):
    env = {**connector_env, **sim.connector_env(auth_mode)}
    # The platform (App Service / Functions) sets these for managed identity, in the process environment.
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
    for name in ("CLIENT_SECRET", "CLIENT_ID"):
        if name not in sim.connector_env(auth_mode):
            env.pop(name, None)
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])

    report = run_feed(env)

    assert report.ok, report.error
    assert len(sim.ingestion.rows()) == 1
    if auth_mode == "managed_identity":
        assert sim.managed_identity.request_count() >= 1


def test_rows_are_timestamped_with_the_receive_time(sim, connector_env):
    received = sim.now().replace(microsecond=109_000) - timedelta(minutes=10)
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(received))])

    run_feed(connector_env)

    row = sim.ingestion.rows()[0]
    assert row["TimeGenerated"] == row["Received"] == format_datetime(received)


def test_graph_5xx_and_timeouts_are_retried_until_the_page_arrives(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.graph.inject(503)
    sim.graph.inject("timeout", seconds=3.0)
    sim.graph.inject(502)

    report = run_feed({**connector_env, "HTTP_TIMEOUT_SECONDS": "1"})

    assert report.ok, report.error
    assert {503, 502} <= {r.status for r in sim.graph.requests(path="messageTraces")}
    assert len(sim.ingestion.rows()) == 1


def test_graph_still_failing_after_the_retries_is_a_clear_error(sim, connector_env):
    sim.graph.inject(500, times=None)

    report = run_feed(connector_env)

    assert report.error is not None
    assert "still failing after 4 attempts" in str(report.error)
    assert len(sim.graph.requests(path="messageTraces")) == 4


def test_throttling_longer_than_the_run_budget_ends_the_run_cleanly(
    sim, connector_env, blob_store, container
):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.graph.inject(429, headers={"Retry-After": "600"})

    report = run_feed({**connector_env, "RUN_TIME_BUDGET_SECONDS": "30"})

    assert report.ok
    assert report.outcome == "throttled"
    assert blob_store.load("live").checkpoint.progress.last_run["outcome"] == "throttled"
    # The next run honours the Retry-After through the shared quota budget: it does not ask Graph.
    assert run_feed(connector_env).outcome == "throttled"
    assert len(sim.graph.requests(path="messageTraces")) == 1
    container.delete_blob(quota_blob_name(connector_env["TENANT_ID"]))  # as if the 600 s had passed
    assert run_feed(connector_env).ok
    assert len(sim.ingestion.rows()) == 1


def test_tokens_refused_mid_run_are_renewed_once_for_graph_and_ingestion(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    run_feed(connector_env)
    sim.entra.expire_all_tokens()
    sim.graph.add([trace("mail-2", "bob@contoso.com", at(sim.now() - timedelta(minutes=9)))])

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert 401 in [r.status for r in sim.graph.requests(path="messageTraces")]
    assert 401 in [r.status for r in sim.ingestion.requests()]
    assert len(sim.ingestion.rows()) == 2


def test_poison_record_goes_to_a_dead_letter_blob_and_the_feed_goes_on(sim, connector_env, container):
    good = trace("good", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))
    poison = {
        **trace("poison", "bob@contoso.com", at(sim.now() - timedelta(minutes=10))),
        "receivedDateTime": 17,
    }
    sim.graph.inject(200, body={"value": [poison, good]}, times=None)

    report = run_feed({**connector_env, "INITIAL_LOOKBACK_HOURS": "0.5", "OVERLAP_LOOKBACK_MINUTES": "30"})

    assert report.ok, report.error
    assert [r["MessageTraceId"] for r in sim.ingestion.rows()] == ["good"]
    letters = [b.name for b in container.list_blobs(name_starts_with="deadletter/")]
    assert len(letters) == 1
    document = json.loads(container.download_blob(letters[0]).readall())
    assert document["record"] == poison
    assert "receivedDateTime" in document["reason"]
    assert report.dead_lettered >= 1


def test_same_key_twice_in_one_graph_answer_is_one_row_however_often_it_is_reread(sim, connector_env):
    when = at(sim.now() - timedelta(minutes=10))
    answer = [
        trace("flip", "bob@contoso.com", when, status="Pending"),
        trace("flip", "Bob@contoso.com", when, status="Delivered"),
        trace("flip", "bob@contoso.com", when, status="GettingStatus"),
    ]
    sim.graph.inject(200, body={"value": answer}, times=None)
    env = {**connector_env, "INITIAL_LOOKBACK_HOURS": "0.5", "OVERLAP_LOOKBACK_MINUTES": "30"}

    reports = [run_feed(env) for _ in range(3)]

    assert [report.error for report in reports] == [None, None, None]
    assert [(r["Status"], r["StatusRevision"]) for r in sim.ingestion.rows()] == [("Delivered", 0)]


def many_rows(sim, count=12_000):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(minutes=55), now - timedelta(minutes=5), messages=count // 2, seed=2)
    )
    return {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}


def exactly_once(sim, expected) -> bool:
    counts = stored_keys(sim)
    got = {(i, r) for i, r, _ in counts}
    return max(counts.values()) == 1 and got == expected


def test_malformed_skiptoken_restarts_the_window_without_it_and_never_loops(sim, connector_env):
    expected = many_rows(sim)
    assert len(expected) > 5000  # more than one page
    sim.graph.inject("bad_skiptoken")

    report = run_feed({**connector_env, "INITIAL_LOOKBACK_HOURS": "1"})

    assert report.ok, report.error
    assert 400 in [r.status for r in sim.graph.requests(path="messageTraces")]
    assert exactly_once(sim, expected)


@pytest.mark.parametrize("fault", ["truncated", "html", "reset"])
def test_graph_garbage_and_dropped_connections_are_retried(sim, connector_env, fault):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.graph.inject(fault)

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert len(sim.ingestion.rows()) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_ingestion_5xx_is_retried_by_the_sdk(sim, connector_env, status):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.ingestion.inject(status, times=2)

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert len(sim.ingestion.rows()) == 1


@pytest.mark.parametrize("status", [200, 202])
def test_uploads_answered_with_another_2xx_are_committed_and_not_sent_again(
    sim, connector_env, blob_store, status
):
    sim.graph.add(
        generate_traffic(sim.now() - timedelta(hours=2), sim.now() - timedelta(minutes=5), 30, seed=9)
    )
    sim.ingestion.accept_status = status

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert report.rows_uploaded == len(sim.graph.rows())
    assert max(stored_keys(sim).values()) == 1
    assert blob_store.load("live").checkpoint.progress.pending_batch is None
    requests = sim.ingestion.request_count

    again = run_feed(connector_env)

    assert again.ok, again.error
    assert again.rows_uploaded == 0
    assert sim.ingestion.request_count == requests
    assert len(sim.ingestion.rows()) == len(sim.graph.rows())


def test_ingestion_429_with_retry_after_is_honoured(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.ingestion.inject(429, headers={"Retry-After": "1"})

    report = run_feed(connector_env)

    assert report.ok, report.error
    posts = sim.ingestion.requests()
    assert posts[1].time - posts[0].time >= 1.0


@pytest.mark.parametrize(
    ("status", "hint"),
    [(403, "Monitoring Metrics Publisher"), (413, "1 MB limit"), (400, "redeploy the DCR")],
)
def test_ingestion_refusal_stops_cleanly_with_the_fix_and_the_checkpoint_intact(
    sim, connector_env, blob_store, status, hint
):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.ingestion.inject(status, times=None)

    report = run_feed(connector_env)

    assert report.error is not None
    assert hint in str(report.error)
    checkpoint = blob_store.load("live").checkpoint
    assert checkpoint.progress.pending_batch is None
    assert checkpoint.ledger == {}
    sim.ingestion.clear_faults()
    assert run_feed(connector_env).ok
    assert len(sim.ingestion.rows()) == 1


def test_graph_429_without_retry_after_backs_off_and_succeeds(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    sim.graph.inject(429, times=2)

    report = run_feed(connector_env)

    assert report.ok, report.error
    statuses = [r.status for r in sim.graph.requests(path="messageTraces")]
    assert statuses[:3] == [429, 429, 200]
    assert len(sim.ingestion.rows()) == 1
