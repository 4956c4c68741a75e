"""Many tenants, one deployment: TENANTS, each tenant's own container, and the timer's fan-out.

The timer and the tenant queue's function are called the way the host calls them
(tests/integration/queue_host.py); Graph, Entra and Logs Ingestion are the simulator's.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from connector.simulator import generate_traffic
from tests.integration.cli_run import run_cli
from tests.integration.queue_host import QueueHost, load_function_app, queue_function

pytestmark = pytest.mark.integration

NOT_CONSENTED = "0badc0de-0000-4000-8000-000000000000"


def timer_function(module):
    (function,) = [
        f for f in module.app.get_functions() if any(b.type == "timerTrigger" for b in f.get_bindings())
    ]
    return function.get_user_function()


@pytest.fixture
def tenants(monkeypatch, sim, environment, azurite_queues):
    """One served tenant (the simulator's) under the name ``one``; the queue is this test's own."""
    queue = f"tr-{uuid.uuid4().hex[:12]}"
    entries = [{"name": "one", "tenantId": sim.tenant_id}]
    values = {
        "STORAGE_CONNECTION_STRING": azurite_queues.connection_string,
        "TENANT_QUEUE": queue,
        "TENANTS": json.dumps(entries),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**environment, **values}


def set_tenants(monkeypatch, env, entries) -> None:
    env["TENANTS"] = json.dumps(entries)
    monkeypatch.setenv("TENANTS", env["TENANTS"])


@pytest.fixture
def tenant_host(tenants):
    function = queue_function(load_function_app(), "%TENANT_QUEUE%").get_user_function()
    return QueueHost(tenants["STORAGE_CONNECTION_STRING"], tenants["TENANT_QUEUE"], function)


def containers(env) -> set[str]:
    service = BlobServiceClient.from_connection_string(env["STORAGE_CONNECTION_STRING"])
    prefix = env["CHECKPOINT_CONTAINER"]
    return {c.name for c in service.list_containers(name_starts_with=prefix)}


def add_mail(sim, hours: int = 3, count: int = 120, seed: int = 5) -> None:
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=hours), now - timedelta(minutes=5), count, seed=seed)
    )


def test_a_tenant_s_run_keeps_its_state_in_its_own_container_and_tags_its_rows(sim, tenants):
    add_mail(sim)

    code, out = run_cli("run", "--tenant", "one")

    assert code == 0, out
    rows = sim.ingestion.rows()
    assert rows
    assert {row["SourceTenantId"] for row in rows} == {sim.tenant_id.lower()}
    assert containers(tenants) == {f"{tenants['CHECKPOINT_CONTAINER']}-one"}
    health = sim.ingestion.rows("MessageTraceHealth_CL")
    assert [row["SourceTenantId"] for row in health] == [sim.tenant_id.lower()]
    code, status = run_cli("status")
    assert code == 0
    assert status.startswith("tenant one\n"), status
    code, document = run_cli("status", "--json")
    assert [feed["tenant"] for feed in json.loads(document)] == ["one"]


def test_commands_name_the_tenant_they_work_on(sim, tenants, monkeypatch, capsys):
    assert run_cli("run")[0] == 2
    assert (
        "--tenant: this deployment reads several tenants (TENANTS): name one of one"
        in capsys.readouterr().err
    )

    assert run_cli("unlock", "--tenant", "two")[0] == 2
    assert "no tenant named 'two' in TENANTS (there are: one)" in capsys.readouterr().err

    monkeypatch.delenv("TENANTS")
    assert run_cli("run", "--tenant", "one")[0] == 2
    assert "TENANTS is not set" in capsys.readouterr().err
    assert sim.graph.requests() == []


def test_each_tick_enqueues_every_enabled_tenant_and_one_tenant_s_failure_is_its_own(
    sim, tenants, tenant_host, monkeypatch
):
    set_tenants(
        monkeypatch,
        tenants,
        [
            {"name": "broken", "tenantId": NOT_CONSENTED},
            {"name": "one", "tenantId": sim.tenant_id},
            {"name": "paused", "tenantId": "0badc0de-0000-4000-8000-000000000001", "enabled": False},
        ],
    )
    add_mail(sim)

    timer_function(load_function_app())(TimerRequest())
    deliveries = tenant_host.drain()

    assert sorted(d.body["tenant"] for d in deliveries) == ["broken", "one"]
    # The broken tenant's failure (no consent) is logged and health-rowed; its message is consumed.
    assert all(d.error is None for d in deliveries)
    stored = Counter((r["MessageTraceId"], r["RecipientAddress"].lower()) for r in sim.ingestion.rows())
    assert set(stored) == {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}
    assert max(stored.values()) == 1
    assert tenant_host.poison.get_queue_properties().approximate_message_count == 0


def test_each_tenant_s_log_lines_name_it(sim, tenants, tenant_host, monkeypatch, caplog):
    set_tenants(
        monkeypatch,
        tenants,
        [{"name": "broken", "tenantId": NOT_CONSENTED}, {"name": "one", "tenantId": sim.tenant_id}],
    )
    add_mail(sim)
    caplog.set_level(logging.INFO, logger="connector")

    timer_function(load_function_app())(TimerRequest())
    tenant_host.drain()

    ours = [
        r for r in caplog.records if r.name.startswith("connector.") and getattr(r, "connector_tenant", None)
    ]
    assert {r.connector_tenant for r in ours} == {"broken", "one"}
    assert all(r.getMessage().startswith(f"[tenant {r.connector_tenant}] ") for r in ours)
    (failure,) = [r for r in ours if r.levelno >= logging.ERROR]
    assert failure.connector_tenant == "broken"


def test_a_message_that_waited_behind_a_later_run_ends_without_reading_graph(sim, tenants, tenant_host):
    add_mail(sim)
    timer = timer_function(load_function_app())
    timer(TimerRequest())
    timer(TimerRequest())  # two ticks queued before any instance picked the first one up

    first = tenant_host.process(tenant_host.receive())
    reads = len(sim.graph.requests())
    second = tenant_host.process(tenant_host.receive())

    assert first.error is None
    assert second.error is None
    assert reads > 0
    assert len(sim.graph.requests()) == reads  # the run it asked for had started after its tick
    timer(TimerRequest())
    tenant_host.drain()
    assert len(sim.graph.requests()) > reads  # a later tick runs the tenant again


def test_a_tenant_removed_from_the_list_after_its_tick_ends_its_message_quietly(
    sim, tenants, tenant_host, monkeypatch
):
    timer_function(load_function_app())(TimerRequest())
    set_tenants(monkeypatch, tenants, [{"name": "other", "tenantId": sim.tenant_id}])

    (delivery,) = tenant_host.drain()

    assert delivery.error is None
    assert sim.graph.requests() == []


def test_a_backfill_on_azure_of_one_tenant_runs_in_that_tenant_s_container(sim, tenants, monkeypatch):
    queue = f"bf-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("BACKFILL_QUEUE", queue)
    monkeypatch.setenv("GRAPH_QUOTA_REQUESTS", "10000")
    sim.graph.quota.limit = 10_000
    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(days=3), now - timedelta(minutes=5), 300, seed=17))
    assert run_cli("run", "--tenant", "one")[0] == 0
    start, end = now - timedelta(days=3), now
    code, out = run_cli(
        "backfill",
        "--tenant",
        "one",
        "--start",
        f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "--end",
        f"{end:%Y-%m-%dT%H:%M:%SZ}",
        "--on-azure",
        "--slice-hours",
        "24",
    )
    assert code == 0, out
    function = queue_function(load_function_app()).get_user_function()
    host = QueueHost(tenants["STORAGE_CONNECTION_STRING"], queue, function)

    deliveries = host.drain()

    assert deliveries
    assert all(d.error is None and d.body["tenant"] == "one" for d in deliveries)
    stored = Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )
    assert max(stored.values()) == 1
    assert {(i, r) for i, r, _ in stored} == {
        (r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()
    }
    assert containers(tenants) == {f"{tenants['CHECKPOINT_CONTAINER']}-one"}
    code, status = run_cli("status", "--tenant", "one", "--all")
    assert code == 0
    assert "3 done" in status, status


def test_a_single_tenant_feed_turned_into_a_tenant_of_the_list_continues_without_storing_twice(
    sim, environment, monkeypatch
):
    add_mail(sim, hours=5, count=200)
    assert run_cli("run")[0] == 0
    before = len(sim.ingestion.rows())
    monkeypatch.setenv(
        "TENANTS", json.dumps([{"name": "home", "tenantId": sim.tenant_id, "useDeploymentContainer": True}])
    )

    code, out = run_cli("run", "--tenant", "home")

    assert code == 0, out
    assert len(sim.ingestion.rows()) == before  # the lookback re-read the same mail: nothing added
    assert containers(environment) == {environment["CHECKPOINT_CONTAINER"]}


# ---- done when: three tenants and a 90-day backfill, beside the timer -----------------------------


def _keys(rows) -> Counter:
    return Counter((r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in rows)


def _graph_keys(tenant) -> set[tuple[str, str]]:
    return {(r["id"], r["recipientAddress"].lower()) for r in tenant.graph.rows()}


def _live_marks(names) -> dict[str, str]:
    code, out = run_cli("status", "--json")
    assert code == 0, out
    return {
        f["tenant"]: f["high_water_mark"]
        for f in json.loads(out)
        if f["feed"] == "live" and f["tenant"] in names
    }


def test_three_tenants_and_a_ninety_day_backfill_beside_the_timer_store_everything_once(
    sim, environment, azurite_queues, monkeypatch
):
    """Two tenants share the deployment's table, one has its own DCR; Graph is read with the managed
    identity as the multi-tenant app's federated credential; a 90-day backfill of one tenant runs
    on the backfill queue while the timer keeps fanning out every tenant's live run."""
    fabrikam = sim.add_tenant(name="fabrikam")
    northwind = sim.add_tenant(name="northwind")
    home = sim.default_tenant
    tenants = (home, fabrikam, northwind)
    entries = [home.tenant_entry(False), fabrikam.tenant_entry(True), northwind.tenant_entry(False)]
    values = {
        "STORAGE_CONNECTION_STRING": azurite_queues.connection_string,
        "TENANT_QUEUE": f"tr-{uuid.uuid4().hex[:12]}",
        "BACKFILL_QUEUE": f"bf-{uuid.uuid4().hex[:12]}",
        "TENANTS": json.dumps(entries),
        "GRAPH_AUTH_MODE": "federated_identity",
        "CLIENT_ID": sim.federated_client_id,
        "GRAPH_QUOTA_REQUESTS": "10000",  # pacing is the quota tests' subject; here: exactly once
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    env = {**environment, **values}
    now = sim.now()
    # Fabrikam has 90 days of history for its backfill; the others only what their live feeds read.
    history = {
        fabrikam: timedelta(days=89, hours=12),
        home: timedelta(hours=5),
        northwind: timedelta(hours=5),
    }
    for seed, tenant in enumerate(tenants, start=40):
        tenant.graph.quota.limit = 10_000
        tenant.graph.add(
            generate_traffic(
                now - history[tenant], now - timedelta(minutes=5), 900, tenant.local_domains, seed
            )
        )
    functions = {
        f.get_function_name(): f.get_user_function() for f in load_function_app().app.get_functions()
    }
    timer = functions["message_trace_sync"]
    tenant_host = QueueHost(env["STORAGE_CONNECTION_STRING"], env["TENANT_QUEUE"], functions["tenant_feed"])
    slice_host = QueueHost(
        env["STORAGE_CONNECTION_STRING"], env["BACKFILL_QUEUE"], functions["backfill_slice"]
    )
    names = {tenant.name for tenant in tenants}

    timer(TimerRequest())
    assert [d.error for d in tenant_host.drain()] == [None, None, None]
    start = now - timedelta(days=89, hours=18)
    code, out = run_cli(
        "backfill",
        "--tenant",
        "fabrikam",
        "--start",
        f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "--end",
        f"{now:%Y-%m-%dT%H:%M:%SZ}",
        "--on-azure",
        "--slice-hours",
        "24",
    )
    assert code == 0, out
    marks = [_live_marks(names)]
    ticks = 0
    while True:
        batch = []
        for _ in range(15):
            message = slice_host.receive()
            if message is None:
                break
            batch.append(slice_host.process(message))
        assert [d.error for d in batch if d.error] == []
        for seed, tenant in enumerate(
            tenants, start=100 + 3 * ticks
        ):  # live mail keeps arriving, some of it late
            moment = sim.now()
            tenant.graph.add(
                generate_traffic(
                    moment - timedelta(minutes=4),
                    moment - timedelta(seconds=70),
                    8,
                    tenant.local_domains,
                    seed,
                )
            )
        timer(TimerRequest())
        assert [d.error for d in tenant_host.drain()] == [None, None, None]
        ticks += 1
        marks.append(_live_marks(names))
        if not batch:
            break

    assert ticks >= 6
    for before, after in itertools.pairwise(marks):  # no live feed stalled while the backfill ran
        assert all(after[name] > before[name] for name in names), (before, after)
    own = fabrikam.ingestion.rows()
    shared = sim.ingestion.rows()
    assert max(_keys(own).values()) == 1
    assert max(_keys(shared).values()) == 1
    assert {r["SourceTenantId"] for r in own} == {fabrikam.tenant_id}
    for tenant in (home, northwind):
        mine = [r for r in shared if r["SourceTenantId"] == tenant.tenant_id]
        assert {(i, r) for i, r, _ in _keys(mine)} == _graph_keys(tenant), tenant.name
    assert {(i, r) for i, r, _ in _keys(own)} == _graph_keys(fabrikam)
    assert {r["SourceTenantId"] for r in shared} == {home.tenant_id, northwind.tenant_id}
    assert slice_host.poison.get_queue_properties().approximate_message_count == 0
    assert tenant_host.poison.get_queue_properties().approximate_message_count == 0


def test_a_tenant_run_that_failed_on_an_unreachable_service_is_retried_by_the_host(sim, tenants, tenant_host):
    add_mail(sim)
    sim.graph.inject(503, times=4, path="messageTraces")  # more than HTTP_MAX_RETRIES (3) allows one run

    timer_function(load_function_app())(TimerRequest())
    first = tenant_host.process(tenant_host.receive())
    second = tenant_host.process(tenant_host.receive())

    assert first.error is not None  # transient: the invocation fails and the host delivers it again
    assert (second.dequeue_count, second.error) == (2, None)  # a failed run supersedes nothing
    stored = {(r["MessageTraceId"], r["RecipientAddress"].lower()) for r in sim.ingestion.rows()}
    assert stored == {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}
