"""The fake Graph ``getDetailsByRecipient`` function: events, OData quoting, quota, errors, tenants."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import pytest
import requests

from connector.simulator import ManualClock, SimulatedTenant, Simulator
from connector.simulator.graph import MESSAGE_TRACES_PATH, parse_details_arguments

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 23, 12, 0, 0, tzinfo=UTC)
RECEIVED = NOW - timedelta(hours=1)
TRACE_ID = "7e3b2b2e-1b5e-4b17-80cc-2af6c1d9a3b1"
CONTEXT = "$metadata#Collection(microsoft.graph.exchangeMessageTraceDetail)"


def _row(recipient: str, status: str = "delivered", trace_id: str = TRACE_ID) -> dict[str, Any]:
    return {
        "id": trace_id,
        "senderAddress": 'a"b@example.net',
        "recipientAddress": recipient,
        "messageId": "<d968@contoso.com>",
        "receivedDateTime": RECEIVED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": "Monthly report",
        "size": 51234,
        "fromIP": "203.0.113.25",
        "toIP": "",
        "status": status,
    }


def _literal(recipient: str) -> str:
    return "'" + recipient.replace("'", "''") + "'"


def _details_url(sim: Simulator, recipient: str, trace_id: str = TRACE_ID, *, encode: bool = True) -> str:
    segment = f"getDetailsByRecipient(recipientAddress={_literal(recipient)})"
    if encode:
        segment = urllib.parse.quote(segment, safe="")
    return f"{sim.graph.url}{MESSAGE_TRACES_PATH}/{trace_id}/{segment}"


def _get(url: str, token: str) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture
def clock(sim: Simulator) -> ManualClock:
    manual = ManualClock(NOW)
    sim.clock = manual
    return manual


def _events(response: requests.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text
    return [(e["event"], e["action"], e["dateTime"]) for e in response.json()["value"]]


def test_a_delivered_record_has_receive_then_deliver(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("robert@contoso.com")])

    response = _get(_details_url(sim, "robert@contoso.com"), graph_token)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["@odata.context"] == f"{sim.graph.url}/v1.0/{CONTEXT}"
    receive, deliver = body["value"]
    assert set(receive) == {"id", "messageId", "dateTime", "event", "action", "description", "data"}
    assert (receive["id"], receive["messageId"]) == (TRACE_ID, "<d968@contoso.com>")
    assert (receive["event"], receive["action"]) == ("Receive", "")
    assert receive["dateTime"] == "2026-01-23T11:00:00Z"
    assert receive["description"].startswith("Message received by: ")
    assert receive["description"].endswith(".prod.outlook.com")
    assert receive["data"].startswith('<root><MEP Name="Connector" String="Default ')
    assert '<MEP Name="ReturnPath" String="a&quot;b@example.net"/>' in receive["data"]
    assert '<MEP Name="ClientIP" String="203.0.113.25"/>' in receive["data"]
    assert (deliver["event"], deliver["action"], deliver["id"]) == ("Deliver", "", TRACE_ID)
    gap = datetime.fromisoformat(deliver["dateTime"]) - datetime.fromisoformat(receive["dateTime"])
    assert timedelta(seconds=1) <= gap <= timedelta(seconds=4)
    # Deterministic: the same answer again, and the helper gives it too.
    assert _get(_details_url(sim, "robert@contoso.com"), graph_token).json()["value"] == body["value"]
    assert sim.graph.details(TRACE_ID, "ROBERT@contoso.com") == body["value"]
    assert [r.status for r in sim.graph.requests(path="getDetailsByRecipient")] == [200, 200]


def test_a_quarantined_record_and_a_later_status_change(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("q@contoso.com", status="quarantined"), _row("p@contoso.com", status="pending")])

    events = _events(_get(_details_url(sim, "q@contoso.com"), graph_token))
    assert [(e, a) for e, a, _ in events] == [("Receive", ""), ("Quarantine", "Quarantine")]

    assert [e for e, _, _ in _events(_get(_details_url(sim, "p@contoso.com"), graph_token))] == [
        "Receive",
        "Pending",
    ]
    sim.graph.set_status(TRACE_ID, "p@contoso.com", "failed", at=NOW - timedelta(minutes=10))
    (receive, _, received_at), (fail, _, failed_at) = _events(
        _get(_details_url(sim, "p@contoso.com"), graph_token)
    )
    assert (receive, fail) == ("Receive", "Fail")
    assert received_at == "2026-01-23T11:00:00Z"
    assert failed_at == "2026-01-23T11:50:00Z"  # when the status changed, not before


def test_an_apostrophe_in_the_recipient_is_a_doubled_quote(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("o'brien@contoso.com")])

    encoded = _get(_details_url(sim, "o'brien@contoso.com"), graph_token)
    plain = _get(_details_url(sim, "o'brien@contoso.com", encode=False), graph_token)

    assert [e for e, _, _ in _events(encoded)] == ["Receive", "Deliver"]
    assert plain.json()["value"] == encoded.json()["value"]
    assert "o''brien" in sim.graph.requests(path="getDetailsByRecipient")[0].path
    assert parse_details_arguments("( recipientAddress = 'o''brien@contoso.com' )") == "o'brien@contoso.com"


@pytest.mark.parametrize(
    "segment",
    [
        "getDetailsByRecipient",
        "getDetailsByRecipient()",
        "getDetailsByRecipient(recipientAddress=robert@contoso.com)",
        "getDetailsByRecipient(recipientAddress='o'brien@contoso.com')",
        "getDetailsByRecipient(recipientAddress='robert@contoso.com'",
        "getDetailsByRecipient(recipientAddress='')",
        "getDetailsByRecipient(sender='robert@contoso.com')",
        "getDetailsByRecipient(recipientAddress='a@contoso.com',x='b')",
        "getDetailsByRecipient(recipientAddress=@r)",
    ],
)
def test_a_malformed_segment_is_a_graph_400(
    sim: Simulator, clock: ManualClock, graph_token: str, segment: str
) -> None:
    sim.graph.add([_row("robert@contoso.com")])
    url = f"{sim.graph.url}{MESSAGE_TRACES_PATH}/{TRACE_ID}/{urllib.parse.quote(segment, safe='')}"

    response = _get(url, graph_token)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert "recipientAddress" in error["message"]


def test_unknown_or_not_yet_visible_records_have_no_details(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("robert@contoso.com")])
    sim.graph.add([_row("late@contoso.com")], visible_at=NOW + timedelta(minutes=5))

    for url in (
        _details_url(sim, "nobody@contoso.com"),
        _details_url(sim, "robert@contoso.com", trace_id="00000000-0000-0000-0000-000000000000"),
        _details_url(sim, "late@contoso.com"),
    ):
        response = _get(url, graph_token)
        assert response.status_code == 200
        assert response.json() == {"@odata.context": f"{sim.graph.url}/v1.0/{CONTEXT}", "value": []}
    clock.advance(timedelta(minutes=5))
    assert [e for e, _, _ in _events(_get(_details_url(sim, "late@contoso.com"), graph_token))] == [
        "Receive",
        "Deliver",
    ]


def test_list_and_details_share_the_tenants_quota(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("robert@contoso.com")])
    sim.graph.quota.limit = 3
    list_url = f"{sim.graph.url}{MESSAGE_TRACES_PATH}"

    assert _get(list_url, graph_token).status_code == 200
    assert _get(_details_url(sim, "robert@contoso.com"), graph_token).status_code == 200
    assert _get(list_url, graph_token).status_code == 200
    throttled = _get(_details_url(sim, "robert@contoso.com"), graph_token)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert _get(list_url, graph_token).status_code == 429


def test_auth_permission_and_faults_are_the_lists(
    sim: Simulator, clock: ManualClock, graph_token: str
) -> None:
    sim.graph.add([_row("robert@contoso.com")])
    url = _details_url(sim, "robert@contoso.com")

    assert requests.get(url, timeout=10).status_code == 401
    sim.graph.permission_granted = False
    assert _get(url, graph_token).status_code == 403
    sim.graph.permission_granted = True
    sim.graph.inject(503, path="getDetailsByRecipient")
    assert _get(f"{sim.graph.url}{MESSAGE_TRACES_PATH}", graph_token).status_code == 200  # not for the list
    assert _get(url, graph_token).status_code == 503
    assert _get(url, graph_token).status_code == 200
    assert [r.fault for r in sim.graph.requests(path="getDetailsByRecipient")] == [None, None, "503", None]


def test_another_tenants_token_sees_nothing(sim: Simulator, clock: ManualClock) -> None:
    other: SimulatedTenant = sim.add_tenant(domains=("tailspin.example",))
    sim.graph.add([_row("robert@contoso.com")])
    other.graph.add([_row("robert@tailspin.example")])

    def token(tenant: SimulatedTenant) -> str:
        app = msal.ConfidentialClientApplication(
            sim.client_id,
            client_credential=sim.client_secret,
            authority=tenant.authority,
            instance_discovery=False,
        )
        result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
        return str(result["access_token"])

    home, theirs = token(sim.default_tenant), token(other)
    assert _get(_details_url(sim, "robert@contoso.com"), theirs).json()["value"] == []
    assert _get(_details_url(sim, "robert@tailspin.example"), home).json()["value"] == []
    assert len(_get(_details_url(sim, "robert@tailspin.example"), theirs).json()["value"]) == 2
    assert len(other.graph.requests(path="getDetailsByRecipient")) == 2
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == 1
    assert other.graph.details(TRACE_ID, "robert@contoso.com") == []
