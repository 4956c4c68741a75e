"""Backfill on Azure: `backfill --on-azure` enqueues slices on an Azurite queue; the queue
function runs them as the host would (tests/integration/queue_host.py)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest

from connector.queued import MAX_DEQUEUE_COUNT, SliceMessageError
from connector.runner import run_feed
from connector.simulator import generate_traffic
from tests.integration.cli_run import run_cli
from tests.integration.queue_host import (
    QueueHost,
    host_max_dequeue_count,
    load_function_app,
    queue_function,
)

pytestmark = pytest.mark.integration


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stored(sim) -> Counter:
    return Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )


def assert_exactly_once(sim) -> None:
    counts = stored(sim)
    assert max(counts.values()) == 1, [key for key, n in counts.items() if n > 1][:3]
    assert {(i, r) for i, r, _ in counts} == {
        (r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()
    }


@pytest.fixture
def queued(monkeypatch, sim, environment, azurite_queues):
    """The connector's settings with a queue endpoint and a queue of this test's own."""
    queue = f"bf-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("STORAGE_CONNECTION_STRING", azurite_queues.connection_string)
    monkeypatch.setenv("BACKFILL_QUEUE", queue)
    # Not the quota's tests (tests/integration/test_quota_*.py): slices run unpaced here.
    monkeypatch.setenv("GRAPH_QUOTA_REQUESTS", "10000")
    sim.graph.quota.limit = 10_000
    return {
        **environment,
        "STORAGE_CONNECTION_STRING": azurite_queues.connection_string,
        "BACKFILL_QUEUE": queue,
    }


@pytest.fixture
def host(queued):
    function = queue_function(load_function_app()).get_user_function()
    return QueueHost(queued["STORAGE_CONNECTION_STRING"], queued["BACKFILL_QUEUE"], function)


def start_live(sim, env, days: int = 10) -> None:
    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(days=days), now - timedelta(minutes=5), 400, seed=11))
    assert run_feed(env).error is None  # the live feed starts 6 h back (INITIAL_LOOKBACK_HOURS)


@pytest.fixture
def enqueue(sim, queued):
    """``backfill --on-azure`` of the last ``days`` days (the same range every time in one test)."""
    end = sim.now()

    def run(days: int, *extra: str) -> str:
        start = end - timedelta(days=days)
        code, out = run_cli("backfill", "--start", iso(start), "--end", iso(end), "--on-azure", *extra)
        assert code == 0, out
        return out

    return run


def test_the_queue_trigger_binding_reads_the_backfill_queue_setting_through_host_storage(queued):
    function = queue_function(load_function_app())

    (trigger,) = [b for b in function.get_bindings() if b.type == "queueTrigger"]
    assert trigger.queue_name == "%BACKFILL_QUEUE%"
    assert trigger.connection == "AzureWebJobsStorage"


def test_the_connector_s_last_delivery_is_the_host_s_max_dequeue_count():
    assert host_max_dequeue_count() == MAX_DEQUEUE_COUNT


def test_a_ten_day_backfill_in_slices_is_stored_exactly_once_and_a_rerun_enqueues_nothing(
    sim, queued, host, enqueue
):
    start_live(sim, queued, days=10)

    out = enqueue(10, "--slice-hours", "24")

    assert "10 slices of 24 h" in out
    assert "10 enqueued" in out
    deliveries = host.drain()
    assert [d.error for d in deliveries if d.error] == []
    assert_exactly_once(sim)
    code, status = run_cli("status", "--all")
    assert "queued slices     10 of 24 h: 10 done" in status
    assert "poison queue      0 messages" in status
    assert "0 enqueued, 10 already done" in enqueue(10, "--slice-hours", "24")
    assert host.drain() == []


def test_a_slice_stopped_by_its_run_budget_continues_through_its_own_message(
    sim, queued, host, monkeypatch, enqueue
):
    start_live(sim, queued, days=2)
    monkeypatch.setenv("RUN_TIME_BUDGET_SECONDS", "5")
    monkeypatch.setenv("MAX_SLICE_HOURS", "1")
    sim.graph.page_latency = 0.4
    enqueue(2, "--slice-hours", "48")

    deliveries = host.drain()

    assert len(deliveries) >= 2
    assert all(d.error is None and d.dequeue_count == 1 for d in deliveries)
    assert_exactly_once(sim)


def test_a_transient_failure_is_retried_by_the_host_then_stored_once(sim, queued, host, enqueue):
    start_live(sim, queued, days=1)
    enqueue(1)
    sim.graph.inject(503, times=4)  # the first delivery: one request and its three retries

    deliveries = host.drain()

    assert [d.dequeue_count for d in deliveries] == [1, 2]
    assert deliveries[0].error is not None
    assert deliveries[1].error is None
    assert_exactly_once(sim)
    _, out = run_cli("status", "--json", "--all")
    (job,) = [d for d in json.loads(out) if "queue" in d]
    (piece,) = job["queue"]["slices"]
    assert piece["state"] == "done"
    assert piece["failures"] == 1


def test_a_permanent_failure_is_poisoned_with_its_reason_in_status_and_a_rerun_queues_it_again(
    sim, queued, host, enqueue
):
    start_live(sim, queued, days=1)
    enqueue(1)
    sim.graph.permission_granted = False

    deliveries = host.drain()

    assert [d.dequeue_count for d in deliveries] == list(range(1, MAX_DEQUEUE_COUNT + 1))
    assert all(d.error is not None for d in deliveries)
    assert host.poison_count() == 1
    _, out = run_cli("status")
    assert "poisoned: GraphPermissionError" in out
    assert "ExchangeMessageTrace.Read.All" in out
    assert "poison queue      1 message" in out

    sim.graph.permission_granted = True
    assert "1 enqueued (1 poisoned ones again)" in enqueue(1)
    assert [d.error for d in host.drain()] == [None]
    assert_exactly_once(sim)


def test_a_malformed_message_fails_every_delivery_and_ends_in_the_poison_queue(queued, host):
    host.send_raw('{"v":1,"job":"../live","start":"x"}')

    deliveries = host.drain()

    assert len(deliveries) == MAX_DEQUEUE_COUNT
    assert all(isinstance(d.error, SliceMessageError) for d in deliveries)
    assert "job, start or end" in str(deliveries[0].error)
    assert host.poison_count() == 1


def test_two_deliveries_of_one_slice_at_once_store_nothing_twice(sim, queued, host, enqueue):
    start_live(sim, queued, days=1)
    sim.graph.page_latency = 0.2
    enqueue(1)
    enqueue(1)  # the same slice enqueued again while the first message waits
    first, second = host.receive(), host.receive()
    assert first is not None
    assert second is not None

    threads = [threading.Thread(target=host.process, args=(message,)) for message in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    host.drain()

    assert_exactly_once(sim)
    assert host.poison_count() == 0


def test_the_live_timer_between_slice_runs_keeps_both_exactly_once(sim, queued, host, enqueue):
    start_live(sim, queued, days=4)
    enqueue(4, "--slice-hours", "12")
    ticks = []

    def tick() -> None:
        now = sim.now()
        sim.graph.add(
            generate_traffic(
                now - timedelta(minutes=8), now - timedelta(minutes=5), 10, seed=100 + len(ticks)
            )
        )
        ticks.append(run_feed(queued))

    host.drain(between=tick)

    assert len(ticks) >= 8
    assert all(t.error is None for t in ticks)
    assert_exactly_once(sim)


def test_a_delivery_of_a_slice_already_done_ends_at_once_without_reading_graph(sim, queued, host, enqueue):
    start_live(sim, queued, days=1)
    enqueue(1)
    enqueue(1)  # the same slice twice: the host delivers a done slice again (a kill before its delete)
    first = host.receive()
    assert first is not None
    assert host.process(first).error is None
    graph_before = len(sim.graph.requests(path="messageTraces"))
    rows_before = len(sim.ingestion.rows())
    runs_before = len(sim.ingestion.rows("MessageTraceHealth_CL"))
    assert runs_before > 0  # each run sends its health row: a delivery that runs the slice would add one

    deliveries = host.drain()

    assert [d.error for d in deliveries] == [None]
    assert len(sim.graph.requests(path="messageTraces")) == graph_before
    assert len(sim.ingestion.rows()) == rows_before
    assert len(sim.ingestion.rows("MessageTraceHealth_CL")) == runs_before  # no run: nothing to do
    assert_exactly_once(sim)
