"""Graph pages are requested one ahead, so Graph's time per page overlaps the connector's own work."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from connector.auth import graph_token_provider
from connector.graph import GraphMessageTraceSource
from connector.ports import Deadline
from connector.settings import Settings
from connector.transport import ConnectorSession
from connector.windows import Window, floor_second
from tests.fakes.memory import trace
from tests.integration.test_live_feed import at

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def source(env) -> GraphMessageTraceSource:
    settings = Settings.from_env(env)
    return GraphMessageTraceSource(
        base_url=settings.graph_base_url,
        tokens=graph_token_provider(settings),
        session=ConnectorSession(ca_bundle=settings.ca_bundle, timeout_seconds=10, connection_retries=0),
        timeout_seconds=10,
        max_retries=2,
        backoff_seconds=0.01,
        deadline=Deadline(timedelta(seconds=30)),
        prefetch=True,
    )


def three_pages(sim) -> Window:
    now = floor_second(sim.now())
    sim.graph.add(
        [trace(f"m-{i}", "bob@contoso.com", at(now - timedelta(minutes=10, seconds=i))) for i in range(30)]
    )
    sim.graph.max_page_size = 10
    return Window(now - timedelta(hours=1), now - timedelta(minutes=1))


def answered(sim) -> int:
    return len(sim.graph.requests(path="messageTraces"))


def wait_for(condition) -> bool:
    """Poll until ``condition`` holds (a wait for the worker thread, not a timing check)."""
    give_up = time.monotonic() + 10
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


def test_the_next_page_is_requested_while_the_caller_still_holds_this_one(sim, connector_env):
    graph = source(connector_env)
    pages = graph.pages(three_pages(sim))

    first = next(pages)

    assert first.more
    assert wait_for(lambda: answered(sim) == 2)
    rest = list(pages)
    assert sum(len(page.records) for page in [first, *rest]) == 30
    assert answered(sim) == 3
    graph.close()


def test_a_caller_that_stops_early_leaves_at_most_one_page_unread_and_nothing_in_flight(sim, connector_env):
    graph = source(connector_env)
    pages = graph.pages(three_pages(sim))
    next(pages)

    pages.close()
    graph.close()

    # The page asked ahead was answered before close returned (and dropped), or never sent.
    sent = answered(sim)
    assert sent <= 2
    time.sleep(0.2)
    assert answered(sim) == sent
