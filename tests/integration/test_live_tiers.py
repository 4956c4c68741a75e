"""The tiered live lookback on the simulator: late records and status changes over many ticks.

One data clock drives the simulator and the runs; each record becomes visible some
time after it was received (up to the whole overlap), and pending records settle
within the overlap. With a short lookback every run and the rest of the overlap
re-read by the deep pass, each (record, status) must still be stored exactly once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.runner import run_feed
from connector.simulator import ManualClock, generate_traffic, plan_status_changes
from connector.simulator.graph import normalise_status, parse_graph_datetime

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
TICK = 5 * MINUTE
OVERLAP = 30 * MINUTE


def tiered(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "OVERLAP_LOOKBACK_MINUTES": "30",
        "SHORT_LOOKBACK_MINUTES": "5",
        "FULL_REREAD_MINUTES": "15",
        "HEALTH_ROWS": "off",
        # Five minutes of data clock pass between ticks, none within one: Graph's quota (the
        # simulator's, in real time) and the connector's pacing (on the data clock) are not the subject.
        "GRAPH_QUOTA_REQUESTS": "10000",
    }


def published_up_to_the_overlap_late(row: Mapping[str, Any]) -> datetime:
    """Every tenth message right away, the rest 1 s to 30 min after it was received (stable per message)."""
    fraction = int.from_bytes(hashlib.sha256(str(row["id"]).encode()).digest()[:8], "big") / 2**64
    received = parse_graph_datetime(str(row["receivedDateTime"]))
    return received + (OVERLAP * fraction if fraction > 0.1 else timedelta(0))


@pytest.fixture
def clock(sim, monkeypatch) -> ManualClock:
    manual = ManualClock(datetime.now(UTC).replace(second=0, microsecond=0))
    monkeypatch.setattr(sim, "clock", manual)
    sim.graph.quota.limit = 10_000  # the sim fixture resets it
    return manual


def tick_through(sim, env: dict[str, str], clock: ManualClock, ticks: int) -> list[str]:
    lookbacks = []
    for _ in range(ticks):
        report = run_feed(env, clock=sim.now)
        assert report.ok, report.error
        lookbacks.append(report.lookback)
        clock.advance(TICK)
    return lookbacks


def test_records_published_up_to_the_overlap_late_are_stored_once_across_many_ticks(
    sim, connector_env, clock
):
    start = clock()
    rows = generate_traffic(start + MINUTE, start + 2 * timedelta(hours=1), messages=600, seed=11)
    sim.graph.add(rows, visible_at=published_up_to_the_overlap_late)

    lookbacks = tick_through(sim, tiered(connector_env), clock, ticks=2 * 12 + 16)

    stored = Counter((r["MessageTraceId"], r["RecipientAddress"].lower()) for r in sim.ingestion.rows())
    expected = {(r["id"], r["recipientAddress"].lower()) for r in rows}
    assert set(stored) == expected
    assert max(stored.values()) == 1
    assert "short+deep" in lookbacks
    assert "short" in lookbacks


def test_pending_records_that_settle_within_the_overlap_are_stored_once_per_status(sim, connector_env, clock):
    start = clock()
    rows = generate_traffic(start + MINUTE, start + timedelta(hours=2), messages=600, seed=12)
    sim.graph.add(rows, visible_at=published_up_to_the_overlap_late)
    changes = plan_status_changes(rows, seed=12, delay=(2 * MINUTE, OVERLAP - MINUTE))
    sim.graph.schedule(changes)
    assert len(changes) > 20

    tick_through(sim, tiered(connector_env), clock, ticks=2 * 12 + 16)

    stored = Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )
    assert max(stored.values()) == 1
    final = {
        (r["id"], r["recipientAddress"].lower()): normalise_status(str(r["status"])).lower()
        for r in sim.graph.rows()
    }
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for row in sim.ingestion.rows():
        key = (row["MessageTraceId"], row["RecipientAddress"].lower())
        latest[key] = max(latest.get(key, (-1, "")), (row["StatusRevision"], row["Status"].lower()))
    assert {key: status for key, (_, status) in latest.items()} == final
    settled = {(c.id, c.recipient.lower()) for c in changes}
    revised = {key for key, (revision, _) in latest.items() if revision > 0}
    assert len(revised & settled) > 10
