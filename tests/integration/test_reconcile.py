"""`reconcile`: Graph compared with the table hour by hour over the simulator; `--repair` fills exactly the gaps.

The table is the simulator's workspace (rows the ingestion endpoint accepted, queried
through the Log Analytics query API with its latency); gaps and duplicates are planted
in it directly, as an outage or a crash between a store and its commit would leave them.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connector.checkpoint import backfill_feed_name
from connector.errors import ReconcileError
from connector.ledger import row_id
from connector.reconcile import floor_hour
from connector.reconcile_command import reconcile
from connector.runner import run_feed
from connector.simulator import generate_traffic
from connector.state import Checkpoint, FeedProgress
from tests.integration.cli_run import run_cli
from tests.integration.test_interrupted_batch import killed_after_first_accepted_batch

pytestmark = pytest.mark.integration


def identity(row) -> tuple[str, str, str, int]:
    return (row["MessageTraceId"], row["RecipientAddress"].lower(), row["Status"], row["StatusRevision"])


def stored(sim) -> Counter:
    return Counter(identity(row) for row in sim.ingestion.rows())


def received(row) -> datetime:
    return datetime.fromisoformat(str(row["Received"]).replace("Z", "+00:00"))


@pytest.fixture
def env(sim, connector_env):
    """The feed's settings with workspace verification on and a short ingestion latency to wait out."""
    sim.logs_query.latency_seconds = 0.5
    return {**connector_env, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0.02"}


@pytest.fixture
def fed(sim, env):
    """Five hours of traffic stored by the live feed: the table holds exactly what Graph holds."""
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=5), now - timedelta(minutes=5), messages=1500, seed=41)
    )
    report = run_feed(env)
    assert report.ok, report.error
    assert report.rows_uploaded == len(sim.graph.rows())
    return report


def hour_of(row) -> datetime:
    return floor_hour(received(row))


def plant(sim) -> tuple[dict[datetime, set], dict[datetime, int]]:
    """Drop 3 rows of one hour and 11 of another, store 4 rows of a third twice: what was planted, per hour."""
    rows = sorted(sim.ingestion.rows(), key=received)
    by_hour: dict[datetime, list] = {}
    for row in rows:
        by_hour.setdefault(hour_of(row), []).append(row)
    hours = sorted(hour for hour, members in by_hour.items() if len(members) > 20)
    gaps = {hours[0]: by_hour[hours[0]][:3], hours[2]: by_hour[hours[2]][5:16]}
    dropped = {hour: {row["RowId"] for row in members} for hour, members in gaps.items()}
    all_dropped = set().union(*dropped.values())
    assert sim.ingestion.default_dcr.drop_rows(lambda row: row["RowId"] in all_dropped) == 14
    doubled = {row["RowId"] for row in by_hour[hours[1]][:4]}
    assert sim.ingestion.default_dcr.duplicate_rows(lambda row: row["RowId"] in doubled, age_seconds=60) == 4
    return dropped, {hours[1]: 4}


def test_planted_gaps_and_duplicates_are_reported_exactly_per_hour(sim, env, fed):
    dropped, duplicated = plant(sim)
    now = sim.now()
    told = []

    outcome = reconcile(now - timedelta(hours=6), now, env, announce=told.append)

    assert outcome.outcome == "completed"
    (announcement,) = told
    assert announcement.graph_requests == len(outcome.plan.pieces)  # every hour fits one page
    assert outcome.graph_requests == announcement.graph_requests
    by_hour = {floor_hour(result.piece.start): result for result in outcome.results}
    for hour, row_ids in dropped.items():
        result = by_hour[hour]
        assert {
            row_id(m.graph.record.trace_id, m.graph.record.recipient, m.graph.status, 0)
            for m in result.missing
        } == row_ids
        assert result.stale == 0
    for hour, copies in duplicated.items():
        assert by_hour[hour].duplicated_rows == copies
    others = [r for h, r in by_hour.items() if h not in dropped and h not in duplicated]
    assert all(r.clean and r.unknown_to_graph == 0 for r in others)
    totals = outcome.totals
    assert (totals.missing, totals.duplicated, totals.unknown_to_graph) == (14, 4, 0)
    assert totals.graph_keys == len(sim.graph.rows())
    assert totals.table_rows == len(sim.graph.rows()) - 14 + 4


def test_repair_fills_the_gaps_with_the_lost_rows_themselves_and_nothing_twice(sim, env, fed):
    dropped, _ = plant(sim)
    before = stored(sim)
    now = sim.now()

    outcome = reconcile(now - timedelta(hours=6), now, env, repair=True)

    assert outcome.repair is not None
    assert outcome.repair.ok, outcome.repair.error
    assert outcome.totals.repaired == 14
    assert outcome.totals.missing_left == 0
    after = stored(sim)
    added = after - before
    assert sum(added.values()) == 14
    # Every lost row is back with its own RowId: the ledger still held it, so the same revision was sent.
    assert set().union(*dropped.values()) <= {row["RowId"] for row in sim.ingestion.rows()}
    # Only the planted duplicates are twice; nothing the repair sent is.
    assert sum(count - 1 for count in after.values() if count > 1) == 4

    again = reconcile(now - timedelta(hours=6), now, env)
    assert again.totals.missing == 0
    assert again.totals.duplicated == 4

    # The live feed's later re-reads find the repaired rows stored: nothing is sent twice.
    report = run_feed(env)
    assert report.ok, report.error
    assert report.rows_uploaded == 0


def test_a_status_graph_moved_on_to_is_reported_stale_and_repaired_as_the_next_revision(sim, env, fed):
    row = sorted(sim.ingestion.rows(), key=received)[10]
    graph_row = next(
        r
        for r in sim.graph.rows()
        if r["id"] == row["MessageTraceId"]
        and r["recipientAddress"].lower() == row["RecipientAddress"].lower()
    )
    new_status = "failed" if row["Status"] != "Failed" else "delivered"
    # Minutes after the feed stored it, Graph says something else (a row written in the minute before
    # reconcile asks Graph is left to the feed: the service's clock and this one may differ).
    sim.ingestion.default_dcr.age(180)
    sim.graph.set_status(graph_row["id"], graph_row["recipientAddress"], new_status)
    now = sim.now()

    outcome = reconcile(now - timedelta(hours=6), now, env, repair=True)

    assert outcome.totals.missing == 1
    assert outcome.totals.stale == 1
    assert outcome.totals.repaired == 1
    newest = [
        r
        for r in sim.ingestion.rows()
        if r["MessageTraceId"] == row["MessageTraceId"]
        and r["RecipientAddress"].lower() == row["RecipientAddress"].lower()
    ]
    assert sorted((r["StatusRevision"], r["Status"]) for r in newest) == [
        (0, row["Status"]),
        (1, new_status.capitalize()),
    ]
    assert [r["PreviousStatus"] for r in newest if r["StatusRevision"] == 1] == [row["Status"]]


def test_two_repairs_that_both_found_the_gaps_send_each_missing_row_once(sim, env, fed):
    plant(sim)
    now = sim.now()
    both_compared = threading.Barrier(2, timeout=60)
    outcomes = []

    def at_each_hour(result) -> None:
        if result.piece.end == outcomes_plan_end[0]:
            both_compared.wait()  # neither repairs before both have found the 14 rows missing

    outcomes_plan_end = [min(now, fed.high_water_mark_after)]

    def repair() -> None:
        outcomes.append(reconcile(now - timedelta(hours=6), now, env, repair=True, progress=at_each_hour))

    threads = [threading.Thread(target=repair) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(outcomes) == 2
    assert [o.totals.missing for o in outcomes] == [14, 14]
    assert all(o.repair is not None and o.repair.ok for o in outcomes)
    assert sorted(o.totals.repaired for o in outcomes) == [0, 14]
    assert sorted(o.totals.repair_skipped for o in outcomes) == [0, 14]  # the second found them stored
    counts = stored(sim)
    assert sum(count - 1 for count in counts.values() if count > 1) == 4  # the planted ones only


def test_the_command_says_what_it_will_spend_prints_each_hour_and_exits_1_while_rows_are_missing(
    sim, environment, fed, capsys, monkeypatch
):
    monkeypatch.setenv("WORKSPACE_ID", sim.workspace_id)
    monkeypatch.setenv("VERIFY_INGESTION_DELAY_MINUTES", "0.02")
    plant(sim)
    now = sim.now()
    start, end = (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y-%m-%dT%H:%M:%SZ")

    code, out = run_cli("reconcile", "--start", start, "--end", end)

    err = capsys.readouterr().err
    assert code == 1, err
    assert "Graph requests from the tenant's quota" in err
    assert "missing 3" in out
    assert "missing 11" in out
    assert "duplicated 4" in out
    assert "run again with --repair" in out

    code, out = run_cli("reconcile", "--start", start, "--end", end, "--repair", "--json")

    assert code == 0, capsys.readouterr().err
    document = json.loads(out)
    assert document["totals"]["repaired"] == 14
    assert document["totals"]["missingLeft"] == 0
    assert document["repair"]["rowsUploaded"] == 14


def test_max_requests_refuses_before_any_graph_request(sim, environment, fed, capsys, monkeypatch):
    monkeypatch.setenv("WORKSPACE_ID", sim.workspace_id)
    now = sim.now()
    graph_calls = len(sim.graph.requests())

    code, _ = run_cli(
        "reconcile",
        "--start",
        (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--end",
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--max-requests",
        "2",
    )

    assert code == 2
    assert "--max-requests 2" in capsys.readouterr().err
    assert len(sim.graph.requests()) == graph_calls


def test_without_workspace_id_it_names_the_setting_before_any_network_call(sim, environment, capsys):
    now = datetime.now(UTC)

    code, _ = run_cli(
        "reconcile", "--start", (now - timedelta(hours=2)).isoformat(), "--end", now.isoformat()
    )

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "WORKSPACE_ID" in err
    assert sim.graph.requests() == []
    assert sim.logs_query.requests() == []


def test_a_range_ending_before_it_starts_is_refused_before_settings_are_read(monkeypatch, capsys):
    monkeypatch.delenv("TENANT_ID", raising=False)

    code, _ = run_cli("reconcile", "--start", "2026-11-20T10:00:00Z", "--end", "2026-11-20T09:00:00Z")

    assert code == 2
    assert "--start" in capsys.readouterr().err


def test_before_the_live_feed_stored_anything_there_is_nothing_to_reconcile(sim, environment, monkeypatch):
    monkeypatch.setenv("WORKSPACE_ID", sim.workspace_id)
    now = sim.now()

    code, out = run_cli(
        "reconcile", "--start", (now - timedelta(hours=2)).isoformat(), "--end", now.isoformat()
    )

    assert code == 0
    assert "nothing to reconcile" in out
    assert sim.graph.requests() == []


def test_an_unreadable_record_is_counted_as_such_not_as_missing(sim, env, fed):
    now = sim.now()
    bad = dict(
        sim.graph.rows()[0], id="", receivedDateTime=(now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    sim.graph.add([bad])

    outcome = reconcile(now - timedelta(hours=6), now, env)

    assert outcome.totals.unreadable == 1
    assert outcome.totals.missing == 0


def test_a_repair_killed_after_the_service_took_its_rows_leaves_no_duplicate_and_no_gap(sim, env, fed):
    """A real SIGKILL between the upload and its commit: the intent in the live checkpoint settles it."""
    dropped, _ = plant(sim)
    now = sim.now()
    start, end = (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y-%m-%dT%H:%M:%SZ")
    killed_after_first_accepted_batch(sim, env, ("reconcile", "--start", start, "--end", end, "--repair"))
    first_hour = min(dropped)
    present = {row["RowId"] for row in sim.ingestion.rows()}
    assert dropped[first_hour] <= present  # the first hour's batch was stored, its commit never saved
    assert not (set().union(*dropped.values()) - dropped[first_hour]) & present

    again = reconcile(now - timedelta(hours=6), now, env, repair=True)
    report = run_feed(env)

    assert again.totals.missing == 11
    assert again.repair is not None
    assert again.repair.intent_rows_found == 3  # the killed repair's batch, found stored and committed
    assert again.totals.repaired == 11
    assert report.ok, report.error
    assert report.rows_uploaded == 0
    counts = stored(sim)
    assert sum(count - 1 for count in counts.values() if count > 1) == 4  # the planted ones only
    assert set().union(*dropped.values()) <= {row["RowId"] for row in sim.ingestion.rows()}


def test_repair_refuses_a_range_no_feed_loaded_before_any_graph_request(sim, env, fed):
    now = sim.now()
    coverage_start = now - timedelta(hours=6, minutes=30)
    graph_calls = len(sim.graph.requests())

    with pytest.raises(ReconcileError, match="never loaded") as refused:
        reconcile(coverage_start - timedelta(hours=2), now, env, repair=True)

    assert refused.value.exit_code == 2
    assert "backfill" in str(refused.value)
    assert len(sim.graph.requests()) == graph_calls
    # Without --repair the range is compared and the unloaded part named.
    outcome = reconcile(coverage_start - timedelta(hours=2), now, env)
    assert outcome.never_loaded
    assert outcome.never_loaded[0].start == coverage_start - timedelta(hours=2)


def test_in_a_table_tenants_share_each_tenant_is_reconciled_on_its_own_rows(sim, env):
    northwind = sim.add_tenant(name="northwind")
    home = {"name": "home", "tenantId": sim.tenant_id}
    env = {**env, "TENANTS": json.dumps([home, northwind.tenant_entry(own_destination=False)])}
    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(hours=3), now - timedelta(minutes=5), 200, seed=61))
    northwind.graph.add(
        generate_traffic(
            now - timedelta(hours=3), now - timedelta(minutes=5), 200, northwind.local_domains, seed=62
        )
    )
    for name in ("home", "northwind"):
        assert run_feed(env, tenant=name).ok
    theirs = sorted(r["RowId"] for r in sim.ingestion.rows() if r["SourceTenantId"] == northwind.tenant_id)
    assert sim.ingestion.default_dcr.drop_rows(lambda row: row["RowId"] in set(theirs[:2])) == 2

    mine = reconcile(now - timedelta(hours=4), now, env, tenant="home")
    repaired = reconcile(now - timedelta(hours=4), now, env, tenant="northwind", repair=True)

    assert (mine.totals.missing, mine.totals.unknown_to_graph) == (
        0,
        0,
    )  # the other tenant's rows are not its
    assert (repaired.totals.missing, repaired.totals.repaired, repaired.totals.unknown_to_graph) == (2, 2, 0)
    assert set(theirs) <= {r["RowId"] for r in sim.ingestion.rows()}
    assert all(
        r["SourceTenantId"] == northwind.tenant_id
        for r in sim.ingestion.rows()
        if r["RowId"] in set(theirs[:2])
    )


def test_a_backfill_still_writing_the_range_is_named_and_repair_waits_for_it(sim, env, fed, blob_store):
    now = sim.now()
    start, end = now - timedelta(hours=8), now - timedelta(hours=5)
    claim = FeedProgress(feed=backfill_feed_name(start, end), range_start=start, range_end=end)
    blob_store.save(Checkpoint(claim, {}), None)  # claimed, nothing stored yet

    outcome = reconcile(now - timedelta(hours=6), now, env)

    assert outcome.unfinished_backfills == [claim.feed]
    with pytest.raises(ReconcileError, match="has not finished") as refused:
        reconcile(now - timedelta(hours=6), now, env, repair=True)
    assert refused.value.exit_code == 2
