"""The feed never stops and never drops a record silently: field probes over the simulator and Azurite.

Each test reproduces a probe from issue 8 end to end (real msal, Graph paging, azure-monitor-ingestion,
Blob Storage); before the fix each one stalled the feed, crashed the run, or lost rows silently.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError

from connector.errors import ErrorKind, FeedStalledError
from connector.quota_store import quota_blob_name
from connector.runner import run_feed
from connector.state import STALL_LIMIT
from tests.fakes.memory import trace
from tests.integration.test_live_feed import at, stored_keys

pytestmark = pytest.mark.integration


def dead_letters(container) -> list[dict]:
    return [
        json.loads(container.download_blob(blob.name).readall())
        for blob in container.list_blobs(name_starts_with="deadletter/")
    ]


def test_hostile_records_in_graph_pages_are_repaired_or_dead_lettered_and_the_feed_moves_on(
    sim, connector_env, blob_store, container
):
    when = at(sim.now() - timedelta(minutes=20))
    sim.graph.add(
        [
            trace("good-1", "bob@contoso.com", when),
            trace("bad\ud83d", "bob@contoso.com", when),  # lone surrogate in the trace id
            trace("rcpt-1", "bob\udc00@contoso.com", when),  # ... in the recipient
            trace("subj-1", "bob@contoso.com", when, subject="Pay \ud83d now \x00\x1b[2J"),
            trace("long-1", "bob@contoso.com", when, subject="\x01" * 200_000 + "\ud83d"),
            trace("huge-1", "bob@contoso.com", when, size=2**70),
            trace("neg-1", "bob@contoso.com", when, size=-5),
            trace("good-2", "bob@contoso.com", when),
        ]
    )

    report = run_feed(connector_env)

    assert report.ok, report.error
    rows = {row["MessageTraceId"]: row for row in sim.ingestion.rows()}
    assert set(rows) == {"good-1", "good-2", "subj-1", "long-1"}
    assert rows["subj-1"]["Subject"] == "Pay \ufffd now \x00\x1b[2J"
    assert rows["long-1"]["TruncatedFields"] == "Subject"
    letters = dead_letters(container)
    assert sorted(letter["record"]["id"] for letter in letters) == sorted(
        ["bad\ud83d", "rcpt-1", "huge-1", "neg-1"]
    )
    assert all(letter["reason"] for letter in letters)
    assert blob_store.load("live").checkpoint.progress.high_water_mark > sim.now() - timedelta(minutes=5)

    again = run_feed(connector_env)
    assert again.ok, again.error
    assert len(sim.ingestion.rows()) == 4


def test_row_the_workspace_refuses_is_dead_lettered_with_its_words_and_good_rows_are_stored(
    sim, connector_env, blob_store, container
):
    when = at(sim.now() - timedelta(minutes=20))
    sim.graph.add([trace(f"ok-{i}", "bob@contoso.com", when) for i in range(7)])
    sim.graph.add([trace("poison-1", "bob@contoso.com", when, subject="poison")])
    sim.ingestion.refuse_row = lambda row: (
        "column 'Subject' holds a value this workspace refuses" if row.get("Subject") == "poison" else None
    )

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert sorted(row["MessageTraceId"] for row in sim.ingestion.rows()) == [f"ok-{i}" for i in range(7)]
    (letter,) = dead_letters(container)
    assert letter["record"]["id"] == "poison-1"
    assert "holds a value this workspace refuses" in letter["reason"]
    assert blob_store.load("live").checkpoint.progress.high_water_mark > sim.now() - timedelta(minutes=5)

    requests = sim.ingestion.request_count
    again = run_feed(connector_env)
    assert again.ok, again.error
    assert sim.ingestion.request_count == requests  # held as handled: not resent on the re-read


def test_workspace_refusing_every_row_stops_with_a_setting_error_and_dead_letters_nothing(
    sim, connector_env, blob_store, container
):
    when = at(sim.now() - timedelta(minutes=20))
    sim.graph.add([trace(f"ok-{i}", "bob@contoso.com", when) for i in range(3)])
    sim.ingestion.refuse_row = lambda row: "this workspace refuses every row"

    report = run_feed(connector_env)

    assert report.error is not None
    assert report.error.kind is ErrorKind.SETTING
    assert dead_letters(container) == []
    assert sim.ingestion.rows() == []
    mark = blob_store.load("live").checkpoint.progress.high_water_mark
    assert mark is None or mark < sim.now() - timedelta(minutes=20)


def test_413_for_a_batch_whose_halves_go_through_stores_every_row_and_dead_letters_none(
    sim, connector_env, container
):
    when = at(sim.now() - timedelta(minutes=20))
    sim.graph.add([trace(f"ok-{i}", "bob@contoso.com", when) for i in range(6)])
    sim.ingestion.inject(413, times=1)

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert len(sim.ingestion.rows()) == 6
    assert dead_letters(container) == []


def forget_quota_budget(container, env) -> None:
    with contextlib.suppress(ResourceNotFoundError):
        container.delete_blob(quota_blob_name(env["TENANT_ID"]))


def test_tenant_whose_first_slice_needs_more_pages_than_the_quota_moves_its_mark_every_run(
    sim, connector_env, blob_store, container
):
    now = sim.now()
    start = now - timedelta(hours=2) + timedelta(minutes=2)  # inside the first run's 2-hour lookback
    sim.graph.add(
        [trace(f"m-{i:05}", "bob@contoso.com", at(start + timedelta(seconds=2 * i))) for i in range(3000)]
    )
    sim.graph.max_page_size = 25  # 120 pages: more than the quota gives one run
    sim.graph.quota.limit = 40
    env = {
        **connector_env,
        "INITIAL_LOOKBACK_HOURS": "2",
        "OVERLAP_LOOKBACK_MINUTES": "5",  # every run re-reads it: 6 pages here
        "MAX_PAGES_PER_SLICE": "8",
        "RUN_TIME_BUDGET_SECONDS": "60",
        # Graph's quota (the simulator's) stops each run here, not the connector's own pacing.
        "GRAPH_QUOTA_WINDOW_SECONDS": "1",
    }

    marks = []
    for _ in range(20):
        report = run_feed(env)
        assert report.ok, report.error
        marks.append(blob_store.load("live").checkpoint.progress.high_water_mark)
        sim.graph.quota.reset()  # five minutes pass between timer runs: Graph's quota refills,
        forget_quota_budget(container, env)  # and the 429's Retry-After recorded in the budget is over
        if report.outcome == "completed":
            break

    assert report.outcome == "completed"
    assert None not in marks
    assert all(later > earlier for earlier, later in zip(marks, marks[1:], strict=False))
    keys = stored_keys(sim)
    assert len(keys) == 3000
    assert max(keys.values()) == 1


def test_feed_throttled_three_runs_in_a_row_without_progress_exits_6_then_recovers(
    sim, connector_env, blob_store, container
):
    sim.graph.add([trace("m-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=20)))])
    sim.graph.inject(429, headers={"Retry-After": "100000"}, times=None)

    reports = [run_feed(connector_env) for _ in range(STALL_LIMIT)]

    assert [r.outcome for r in reports[:-1]] == ["throttled"] * (STALL_LIMIT - 1)
    assert isinstance(reports[-1].error, FeedStalledError)
    assert reports[-1].error.exit_code == 6
    sim.graph.clear_faults()
    forget_quota_budget(container, connector_env)  # as if the Retry-After had passed
    recovered = run_feed(connector_env)
    assert recovered.ok, recovered.error
    assert Counter(stored_keys(sim)) == Counter({("m-1", "bob@contoso.com", "Delivered"): 1})
    assert blob_store.load("live").checkpoint.progress.stalled_runs == 0
