"""`detail`: one message's events for one recipient, from the simulator's Graph, through the quota budget."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from connector.simulator import generate_traffic
from tests.integration.cli_run import run_cli

pytestmark = pytest.mark.integration


def one_record(sim, status: str) -> dict:
    now = sim.now()
    records = generate_traffic(now - timedelta(hours=2), now - timedelta(minutes=5), 5, seed=3)
    records[0]["status"] = status
    sim.graph.add(records)
    return records[0]


def test_a_quarantined_message_s_journey_is_printed_event_by_event(sim, environment):
    record = one_record(sim, "quarantined")

    code, out = run_cli(
        "detail", "--trace-id", record["id"], "--recipient", record["recipientAddress"].upper()
    )

    assert code == 0, out
    lines = out.splitlines()
    assert (
        lines[0]
        == f"message trace {record['id'].lower()}, recipient {record['recipientAddress'].upper()}: 2 events"
    )
    assert "Receive" in lines[1]
    assert "Message received by:" in lines[1]
    assert any("Quarantine [Quarantine]" in line for line in lines[2:])
    assert any(line.strip().startswith("ReturnPath:") for line in lines)
    (call,) = sim.graph.requests(path="getDetailsByRecipient")
    assert call.status == 200


def test_json_gives_each_event_with_its_properties(sim, environment):
    record = one_record(sim, "delivered")

    code, out = run_cli(
        "detail", "--trace-id", record["id"], "--recipient", record["recipientAddress"], "--json"
    )

    assert code == 0, out
    events = json.loads(out)
    assert [e["event"] for e in events] == ["Receive", "Deliver"]
    assert events[0]["data"]["ReturnPath"] == record["senderAddress"]
    assert events[0]["time"] <= events[1]["time"]


def test_a_message_graph_does_not_know_prints_that_there_are_no_events(sim, environment):
    code, out = run_cli(
        "detail", "--trace-id", "00000000-0000-4000-8000-000000000000", "--recipient", "nobody@contoso.com"
    )

    assert code == 0
    assert "no events" in out


def test_a_detail_call_is_paid_from_the_tenant_s_quota_and_its_429_is_the_throttled_exit(
    sim, environment, capsys
):
    record = one_record(sim, "delivered")
    sim.graph.quota.limit = 1  # Graph counts list and detail calls alike against the tenant's quota
    assert run_cli("detail", "--trace-id", record["id"], "--recipient", record["recipientAddress"])[0] == 0

    code, _ = run_cli("detail", "--trace-id", record["id"], "--recipient", record["recipientAddress"])

    err = capsys.readouterr().err
    assert code == 6, err  # transient: the tenant's quota is used up; try again after its Retry-After


def test_a_bad_trace_id_is_refused_before_any_setting_or_network_call(sim, monkeypatch, capsys):
    monkeypatch.delenv("TENANT_ID", raising=False)

    code, _ = run_cli("detail", "--trace-id", "x' or 1 eq 1", "--recipient", "a@contoso.com")

    assert code == 2
    assert "--trace-id: must be a message trace id" in capsys.readouterr().err
    assert sim.graph.requests() == []
