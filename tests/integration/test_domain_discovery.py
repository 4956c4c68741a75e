"""Direction without typing domains: the tenant's verified domains read from the simulated Graph ``/domains``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from connector.auth import clear_credential_cache
from connector.checkpoint import decode_checkpoint
from connector.cli import main
from connector.mapping import format_datetime
from connector.runner import run_feed
from connector.simulator import ManualClock
from connector.simulator.graph import domain_object
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration


def without_local_domains(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "LOCAL_DOMAINS"}


def domain_requests(sim) -> int:
    return len(sim.graph.requests(path="/v1.0/domains"))


def mail(sim, trace_id: str, sender: str, recipient: str) -> None:
    sim.graph.add(
        [trace(trace_id, recipient, format_datetime(sim.now() - timedelta(minutes=10)), sender=sender)]
    )


def directions(sim) -> dict[str, str]:
    return {row["MessageTraceId"]: row["Direction"] for row in sim.ingestion.rows()}


def test_a_fresh_feed_classifies_direction_with_the_domains_graph_lists_and_caches_them(
    sim, connector_env, blob_store
):
    mail(sim, "out", "adele@contoso.com", "someone@example.org")
    mail(sim, "in", "someone@example.org", "admin@contoso.onmicrosoft.com")
    mail(sim, "hybrid", "bob@fabrikam.com", "carol@contoso.mail.onmicrosoft.com")
    mail(sim, "ext", "a@example.org", "b@example.net")
    now = datetime.now(UTC)

    report = run_feed(without_local_domains(connector_env), clock=lambda: now)

    assert report.ok, report.error
    assert directions(sim) == {"out": "Outbound", "in": "Inbound", "hybrid": "Internal", "ext": "External"}
    assert report.domains == f"4 discovered {now:%Y-%m-%dT%H:%MZ}"
    cached = blob_store.load("live").checkpoint.progress.discovered_domains
    assert cached is not None
    assert cached.domains == (
        "contoso.com",
        "fabrikam.com",
        "contoso.onmicrosoft.com",
        "contoso.mail.onmicrosoft.com",
    )
    assert cached.fetched_at == now


def test_unverified_domains_do_not_count_and_every_page_of_domains_is_read(sim, connector_env, blob_store):
    sim.graph.domains = [domain_object(f"d{i}.example", verified=i != 3) for i in range(5)]
    sim.graph.domains_page_size = 2
    mail(sim, "m3", "a@example.org", "x@d3.example")
    mail(sim, "m4", "a@example.org", "x@d4.example")

    report = run_feed(without_local_domains(connector_env))

    assert report.ok, report.error
    assert domain_requests(sim) == 3
    assert directions(sim) == {"m3": "External", "m4": "Inbound"}
    cached = blob_store.load("live").checkpoint.progress.discovered_domains
    assert cached is not None
    assert cached.domains == ("d0.example", "d1.example", "d2.example", "d4.example")


@pytest.fixture
def clock(sim, monkeypatch) -> ManualClock:
    """One clock for the simulator and the runs, so a run a day later asks Graph for a day later."""
    manual = ManualClock(datetime.now(UTC).replace(microsecond=0))
    monkeypatch.setattr(sim, "clock", manual)
    return manual


def test_the_cached_list_is_used_for_24_hours_and_read_again_after(sim, connector_env, blob_store, clock):
    env = without_local_domains(connector_env)
    first = clock()

    run_feed(env, clock=sim.now)
    clock.advance(timedelta(hours=23, minutes=59))
    run_feed(env, clock=sim.now)
    assert domain_requests(sim) == 1

    sim.graph.domains = [*sim.graph.domains, domain_object("new.example")]
    mail(sim, "to-new", "a@example.org", "x@new.example")
    later = clock.advance(timedelta(minutes=1))
    report = run_feed(env, clock=sim.now)

    assert report.ok, report.error
    assert domain_requests(sim) == 2
    cached = blob_store.load("live").checkpoint.progress.discovered_domains
    assert cached is not None
    assert "new.example" in cached.domains
    assert cached.fetched_at == later
    assert later - first == timedelta(hours=24)
    assert directions(sim)["to-new"] == "Inbound"


def test_a_403_keeps_the_cached_list_and_says_so_once_in_the_report(sim, connector_env, blob_store, clock):
    env = without_local_domains(connector_env)
    first = clock()
    run_feed(env, clock=sim.now)
    sim.graph.domains_permission_granted = False
    clock.advance(timedelta(days=2))
    mail(sim, "out", "adele@contoso.com", "someone@example.org")

    report = run_feed(env, clock=sim.now)

    assert report.ok, report.error
    assert report.domains == (
        f"domain discovery failed (permission Domain.Read.All missing): using 4 discovered {first:%Y-%m-%dT%H:%MZ}"
    )
    assert directions(sim) == {"out": "Outbound"}
    cached = blob_store.load("live").checkpoint.progress.discovered_domains
    assert cached is not None
    assert cached.fetched_at == first


def test_a_403_on_a_fresh_feed_falls_back_to_local_domains(
    sim, connector_env, blob_store, capsys, monkeypatch
):
    sim.graph.domains_permission_granted = False
    mail(sim, "out", "adele@contoso.com", "someone@example.org")
    for name, value in {**connector_env, "LOCAL_DOMAINS": "contoso.com"}.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()

    code = main(["--no-progress", "run"], out=out)

    assert code == 0
    assert (
        "domain discovery failed (permission Domain.Read.All missing): using 1 from LOCAL_DOMAINS"
        in out.getvalue()
    )
    assert directions(sim) == {"out": "Outbound"}
    assert blob_store.load("live").checkpoint.progress.discovered_domains is None


def test_no_domain_from_any_source_is_a_setting_error_before_any_upload(
    sim, connector_env, blob_store, monkeypatch, capsys
):
    sim.graph.domains_permission_granted = False
    mail(sim, "out", "adele@contoso.com", "someone@example.org")
    for name, value in without_local_domains(connector_env).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_DOMAINS", raising=False)
    out = io.StringIO()

    code = main(["--no-progress", "run"], out=out)

    shown = out.getvalue() + capsys.readouterr().err
    assert code == 2
    assert "LOCAL_DOMAINS" in shown
    assert "Domain.Read.All" in shown
    assert sim.ingestion.rows() == []
    assert not sim.graph.requests(path="messageTraces")


def test_with_discovery_off_graph_domains_is_never_asked(sim, connector_env):
    report = run_feed({**connector_env, "DISCOVER_DOMAINS": "false"})

    assert report.ok, report.error
    assert domain_requests(sim) == 0
    assert report.domains == "2 from LOCAL_DOMAINS"


def test_a_checkpoint_written_before_discovery_loads_and_gains_the_list(sim, connector_env, blob_store):
    run_feed({**connector_env, "DISCOVER_DOMAINS": "false"})
    stored = blob_store.load("live")
    document = json.loads(blob_store.container.download_blob("live.json").readall())
    assert "discovered_domains" not in document
    decode_checkpoint(json.dumps(document).encode(), where="old")  # the old shape reads

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert stored.checkpoint.progress.discovered_domains is None
    assert blob_store.load("live").checkpoint.progress.discovered_domains is not None


def test_entra_refusing_at_discovery_is_recorded_as_the_run_s_failure_without_asking_twice(
    sim, connector_env, blob_store
):
    """Discovery is due on every run until it succeeds: a run it stops must still be saved."""
    clear_credential_cache()  # tokens live per process: make this run ask Entra
    sim.entra.inject(401, path=r"/oauth2/v2\.0/token", body={"error": "invalid_client"}, times=None)

    report = run_feed(without_local_domains(connector_env))

    assert report.error is not None
    assert report.error.kind.name == "PERMISSION"
    assert len(sim.entra.requests(path=r"/oauth2/v2\.0/token")) == 1  # a refusal is asked once
    assert not sim.ingestion.rows()
    stored = blob_store.load("live")
    assert stored is not None
    last_run = stored.checkpoint.progress.last_run
    assert last_run is not None
    assert last_run["outcome"] == "failed"
    assert "invalid_client" in last_run["error"]
