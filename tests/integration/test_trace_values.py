"""Odd values Graph may send, end to end over the simulator (issue 8, items 5 and 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.runner import run_feed
from connector.simulator import generate_traffic
from tests.fakes.memory import trace
from tests.integration.test_interrupted_batch import killed_after_first_accepted_batch, stored

pytestmark = pytest.mark.integration

ODD = "\r\n\t\"\\'),"


def test_verification_finds_rows_whose_trace_ids_hold_control_characters_and_quotes(sim, connector_env):
    now = sim.now()
    rows = generate_traffic(now - timedelta(hours=3), now - timedelta(minutes=5), messages=2000, seed=8)
    for row in rows:
        row["id"] = f"{row['id'][:8]}{ODD}{row['id'][8:]}"  # inside: the connector strips the ends
    sim.graph.add(rows)
    traffic = {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}
    env = {**connector_env, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0.02"}
    killed_after_first_accepted_batch(sim, env)
    first_batch = len(sim.ingestion.rows())
    assert 0 < first_batch < len(traffic)
    assert all(ODD in r["MessageTraceId"] for r in sim.ingestion.rows())

    report = run_feed(env)

    assert report.ok, report.error
    assert report.intent_rows_found == first_batch
    assert report.possible_duplicates == 0
    counts = stored(sim)
    assert max(counts.values()) == 1
    assert {(i, r) for i, r, _ in counts} == traffic
    assert len(sim.logs_query.requests()) >= 1


def test_a_received_time_with_a_fraction_and_an_offset_is_stored_at_its_utc_instant(
    sim, connector_env, monkeypatch
):
    now = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    monkeypatch.setattr(sim, "clock", lambda: now)  # the session's simulator keeps its clock
    sim.graph.add([trace("offset-1", "bob@contoso.com", "2026-11-20T10:00:00.123+05:30")])

    report = run_feed(connector_env, clock=lambda: now)

    assert report.ok, report.error
    [row] = sim.ingestion.rows()
    assert row["MessageTraceId"] == "offset-1"
    assert row["Received"] == "2026-11-20T04:30:00.123000Z"
    [served] = sim.graph.rows()
    assert served["receivedDateTime"] == "2026-11-20T10:00:00.123+05:30"  # Graph sent it as written
