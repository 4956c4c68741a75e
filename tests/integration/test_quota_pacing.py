"""Runs paced by the shared quota budget against the simulator's modelled Graph quota.

Counted in the simulator's 429 answers, not in time: the paced run must not be refused
where the same run unpaced is.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector.runner import run_feed
from tests.fakes.memory import trace
from tests.integration.test_live_feed import at

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PAGES = 30
PAGE = 25


def many_pages(sim) -> int:
    start = sim.now() - timedelta(hours=3)
    sim.graph.add(
        [
            trace(f"m-{i:05}", "bob@contoso.com", at(start + timedelta(seconds=7 * i)))
            for i in range(PAGES * PAGE)
        ]
    )
    sim.graph.max_page_size = PAGE
    sim.graph.quota.limit, sim.graph.quota.window_seconds = 10, 3.0
    return PAGES * PAGE


def refused(sim) -> int:
    return sum(1 for request in sim.graph.requests(path="messageTraces") if request.status == 429)


def test_a_run_paced_by_the_quota_budget_gets_no_429_where_the_unpaced_run_did(sim, connector_env):
    records = many_pages(sim)
    quota = {"GRAPH_QUOTA_WINDOW_SECONDS": "3", "RUN_TIME_BUDGET_SECONDS": "90", "HTTP_MAX_RETRIES": "10"}

    unpaced = run_feed({**connector_env, **quota, "GRAPH_QUOTA_REQUESTS": "10000"})
    assert unpaced.ok, unpaced.error
    assert refused(sim) > 0
    sim.graph.clear_requests()
    sim.graph.quota.reset()

    paced = run_feed(
        {
            **connector_env,
            **quota,
            "GRAPH_QUOTA_REQUESTS": "10",
            "CHECKPOINT_CONTAINER": connector_env["CHECKPOINT_CONTAINER"] + "-paced",
        }
    )

    assert paced.ok, paced.error
    assert paced.outcome == "completed"
    assert refused(sim) == 0
    assert len(sim.graph.requests(path="messageTraces")) >= PAGES
    assert len(sim.ingestion.rows()) == 2 * records


def test_a_slot_further_away_than_the_run_has_left_ends_the_run_throttled_without_asking_graph(
    sim, connector_env
):
    many_pages(sim)
    env = {
        **connector_env,
        "GRAPH_QUOTA_REQUESTS": "3",
        "GRAPH_QUOTA_WINDOW_SECONDS": "600",
        "GRAPH_QUOTA_LIVE_RESERVE_PERCENT": "0",
        "RUN_TIME_BUDGET_SECONDS": "20",
    }

    report = run_feed(env)

    assert report.ok, report.error
    assert report.outcome == "throttled"
    assert "quota budget has no free slot" in str(report.throttled)
    assert refused(sim) == 0
    assert len(sim.graph.requests(path="messageTraces")) <= 3
