"""A wait a service asks for (Retry-After) or a backoff longer than the run has left.

No client sleeps past the run's time budget: a 429 ends the run as "throttled" (exit 0,
the quota refills), any other status is an outage (exit 6, with the service's words).
Either way the refused rows stay uncommitted and the next run stores them once. Each
test would hang for hours (or be misreported as throttling) without the cap, so each
carries a timeout well under the hang and a loose wall-time guard.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import (
    ErrorKind,
    GraphUnavailableError,
    SinkError,
    VerificationError,
)
from connector.ledger import epoch_ms, ledger_key, row_id
from connector.runner import run_feed
from connector.state import Checkpoint, FeedProgress, IntentEntry, PendingBatch
from tests.fakes.memory import trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BUDGET = {"RUN_TIME_BUDGET_SECONDS": "20"}
HANG_GUARD_SECONDS = 30.0
FOREVER = {"Retry-After": "100000"}  # about 28 hours


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def one_mail(sim) -> datetime:
    received = (sim.now() - timedelta(minutes=10)).replace(microsecond=0)
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(received))])
    return received


def outage(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def timed_run(env):
    started = time.monotonic()
    report = run_feed(env)
    assert time.monotonic() - started < HANG_GUARD_SECONDS, "the run waited instead of ending"
    return report


def assert_mail_not_committed(blob_store, received: datetime) -> None:
    progress = blob_store.load("live").checkpoint
    assert progress.ledger == {}
    assert progress.progress.pending_batch is None
    mark = progress.progress.high_water_mark
    assert mark is None or mark <= received


def assert_next_run_stores_it_once(sim, connector_env) -> None:
    sim.ingestion.clear_faults()
    sim.graph.clear_faults()
    report = run_feed(connector_env)
    assert report.ok, report.error
    assert Counter(r["MessageTraceId"] for r in sim.ingestion.rows()) == Counter({"mail-1": 1})


def test_ingestion_429_asking_for_more_than_the_budget_ends_the_run_throttled(sim, connector_env, blob_store):
    received = one_mail(sim)
    sim.ingestion.inject(429, headers=FOREVER, times=None)

    report = timed_run({**connector_env, **BUDGET})

    assert report.error is None
    assert report.outcome == "throttled"
    assert len(sim.ingestion.requests()) == 1  # no sleep, no second attempt
    assert sim.ingestion.rows() == []
    assert blob_store.load("live").checkpoint.progress.last_run["outcome"] == "throttled"
    assert_mail_not_committed(blob_store, received)
    assert_next_run_stores_it_once(sim, connector_env)


def test_ingestion_503_asking_for_more_than_the_budget_is_an_outage_with_the_services_words(
    sim, connector_env, blob_store
):
    received = one_mail(sim)
    sim.ingestion.inject(
        503,
        headers=FOREVER,
        body=outage("ServiceUnavailable", "Ingestion is paused for maintenance"),
        times=None,
    )

    report = timed_run({**connector_env, **BUDGET})

    assert report.outcome == "failed"
    assert isinstance(report.error, SinkError)
    assert report.error.kind is ErrorKind.TRANSIENT
    assert report.error.exit_code == 6
    message = str(report.error)
    assert "503" in message
    assert "Ingestion is paused for maintenance" in message
    assert "100000 s" in message
    assert "throttl" not in message.lower()
    assert len(sim.ingestion.requests()) == 1
    assert_mail_not_committed(blob_store, received)
    assert_next_run_stores_it_once(sim, connector_env)


def test_ingestion_backoff_longer_than_the_budget_stops_retrying_with_the_last_failure(
    sim, connector_env, blob_store
):
    received = one_mail(sim)
    sim.ingestion.inject(503, body=outage("ServiceUnavailable", "Still warming up"), times=None)

    # azure-core's second retry waits backoff * 2 s (at most 120 s): far more than the budget.
    report = timed_run({**connector_env, **BUDGET, "HTTP_RETRY_BACKOFF_SECONDS": "60"})

    assert isinstance(report.error, SinkError)
    assert report.error.kind is ErrorKind.TRANSIENT
    assert "503" in str(report.error)
    assert "Still warming up" in str(report.error)
    assert len(sim.ingestion.requests()) == 2  # the first retry has no backoff; the second would
    assert_mail_not_committed(blob_store, received)
    assert_next_run_stores_it_once(sim, connector_env)


def test_graph_503_asking_for_more_than_the_budget_is_an_outage_not_throttling(
    sim, connector_env, blob_store
):
    one_mail(sim)
    sim.graph.inject(
        503,
        headers=FOREVER,
        body=outage("serviceNotAvailable", "Message trace is temporarily unavailable"),
        times=None,
    )

    report = timed_run({**connector_env, **BUDGET})

    assert report.outcome == "failed"
    assert isinstance(report.error, GraphUnavailableError)
    assert report.error.exit_code == 6
    message = str(report.error)
    assert "503" in message
    assert "Message trace is temporarily unavailable" in message
    assert "100000 s" in message
    assert "429" not in message
    assert "throttl" not in message.lower()
    assert len(sim.graph.requests(path="messageTraces")) == 1
    stored = blob_store.load("live")
    assert stored is None or stored.checkpoint.progress.high_water_mark is None
    assert_next_run_stores_it_once(sim, connector_env)


def test_graph_backoff_longer_than_the_budget_after_a_5xx_is_an_outage_not_throttling(sim, connector_env):
    one_mail(sim)
    sim.graph.inject(500, body=outage("internalServerError", "Backend exploded"), times=None)

    # The first backoff is 60 * uniform(0.5, 1) s (at least 30 s), more than the 20 s budget.
    report = timed_run({**connector_env, **BUDGET, "HTTP_RETRY_BACKOFF_SECONDS": "60"})

    assert isinstance(report.error, GraphUnavailableError)
    assert report.error.exit_code == 6
    assert "500" in str(report.error)
    assert "Backend exploded" in str(report.error)
    assert "throttl" not in str(report.error).lower()


def test_workspace_query_asking_for_more_than_the_budget_stops_with_the_batch_still_recorded(
    sim, connector_env, blob_store
):
    received = sim.now() - timedelta(minutes=30)
    entry = IntentEntry(
        ledger_key("mail-1", "bob@contoso.com"),
        epoch_ms(received),
        "Delivered",
        0,
        row_id("mail-1", "bob@contoso.com", "Delivered", 0),
    )
    progress = FeedProgress(
        feed="live", coverage_start=received, pending_batch=PendingBatch(created=received, entries=(entry,))
    )
    blob_store.save(Checkpoint(progress=progress, ledger={}), None)
    sim.logs_query.inject(429, headers=FOREVER, times=None)
    env = {**connector_env, **BUDGET, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0"}

    report = timed_run(env)

    assert isinstance(report.error, VerificationError)
    assert report.error.exit_code == 6
    assert "workspace verification query failed" in str(report.error)
    assert "100000 s" in str(report.error)
    assert len(sim.logs_query.requests()) == 1
    assert blob_store.load("live").checkpoint.progress.pending_batch is not None
