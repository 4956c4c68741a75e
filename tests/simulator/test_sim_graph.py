"""The fake Graph messageTraces endpoint: filters, paging, visibility, auth, quota and faults."""

from __future__ import annotations

import base64
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import pytest
import requests

from connector.simulator import ManualClock, Simulator, generate_traffic
from connector.simulator.graph import SP_MISSING_MESSAGE

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 23, 12, 0, 0, tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(start: datetime, end: datetime) -> str:
    return f"receivedDateTime ge {_iso(start)} and receivedDateTime le {_iso(end)}"


def _row(index: int, received: datetime, status: str = "delivered", recipient: str = "") -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{index:012d}",
        "senderAddress": "sender@example.net",
        "recipientAddress": recipient or f"user{index}@contoso.com",
        "messageId": f"<m{index}@example.net>",
        "receivedDateTime": received.strftime("%Y-%m-%dT%H:%M:%S.") + f"{index % 1000:03d}Z",
        "subject": f"Message {index} ✉️",
        "size": 1000 + index,
        "fromIP": "203.0.113.7",
        "toIP": "",
        "status": status,
    }


class GraphClient:
    """Tiny requests-based client used by the tests (one keep-alive session)."""

    def __init__(self, sim: Simulator, token: str) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.url = f"{sim.graph.url}/v1.0/admin/exchange/tracing/messageTraces"

    def get(
        self, params: dict[str, str] | None = None, url: str | None = None, **kwargs: Any
    ) -> requests.Response:
        return self.session.get(url or self.url, params=params, timeout=kwargs.pop("timeout", 10), **kwargs)


@pytest.fixture
def clock(sim: Simulator) -> ManualClock:
    manual = ManualClock(NOW)
    sim.clock = manual
    return manual


@pytest.fixture
def graph(sim: Simulator, graph_token: str) -> GraphClient:
    return GraphClient(sim, graph_token)


def test_paging_follows_next_link_verbatim_newest_first(
    sim: Simulator, clock: ManualClock, graph: GraphClient
) -> None:
    sim.graph.add([_row(i, NOW - timedelta(hours=1, minutes=i)) for i in range(25)])
    first = graph.get({"$filter": _window(NOW - timedelta(days=1), NOW), "$top": "10"})
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("application/json")
    assert first.headers["request-id"]
    body = first.json()
    assert body["@odata.context"].endswith("$metadata#admin/exchange/tracing/messageTraces")
    pages = [body]
    links = []
    while "@odata.nextLink" in pages[-1]:
        links.append(pages[-1]["@odata.nextLink"])
        pages.append(graph.get(url=links[-1]).json())
    values = [v for page in pages for v in page["value"]]
    assert [len(p["value"]) for p in pages] == [10, 10, 5]
    assert len({v["id"] for v in values}) == 25
    received = [v["receivedDateTime"] for v in values]
    assert received == sorted(received, reverse=True)
    assert all(v["@odata.type"] == "#microsoft.graph.exchangeMessageTrace" for v in values)
    logged = [r.url for r in sim.graph.requests()]
    assert logged[1:] == links  # followed verbatim
    assert all("$top=10" in link and "$skiptoken=" in link and "$filter=" in link for link in links)


def test_top_5000_and_default_1000(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add([_row(i, NOW - timedelta(seconds=i + 1)) for i in range(1200)])
    window = _window(NOW - timedelta(days=1), NOW)
    default = graph.get({"$filter": window}).json()
    assert len(default["value"]) == 1000
    assert "$top=1000" in default["@odata.nextLink"]
    big = graph.get({"$filter": window, "$top": "5000"}).json()
    assert len(big["value"]) == 1200
    assert "@odata.nextLink" not in big
    assert sim.graph.requests()[-1].query["$top"] == "5000"


@pytest.mark.parametrize(
    "filter_text",
    [
        "receivedDateTime le 2026-01-22T00:00:00Z and receivedDateTime ge 2026-01-21T00:00:00Z",
        "ReceivedDateTime GE 2026-01-21T00:00:00.000Z AND receivedDateTime LE 2026-01-22T00:00:00.1234567Z",
        "receivedDateTime ge 2026-01-21T01:00:00+01:00 and receivedDateTime le 2026-01-22T00:00:00Z",
    ],
)
def test_valid_filters(clock: ManualClock, graph: GraphClient, filter_text: str) -> None:
    response = graph.get({"$filter": filter_text})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"$filter": "receivedDateTime ge 2026-01-21T00:00:00Z"}, "Both a start and an end"),
        (
            {
                "$filter": "receivedDateTime ge 2026-01-23T00:00:00Z and receivedDateTime le 2026-01-23T12:00:01Z"
            },
            "future",
        ),
        (
            {
                "$filter": "receivedDateTime ge 2025-10-20T00:00:00Z and receivedDateTime le 2025-10-25T00:00:00Z"
            },
            "90 days",
        ),
        (
            {
                "$filter": "receivedDateTime ge 2026-01-10T00:00:00Z and receivedDateTime le 2026-01-20T00:00:01Z"
            },
            "10 days",
        ),
        (
            {
                "$filter": "receivedDateTime ge 2026-01-22T00:00:00Z and receivedDateTime le 2026-01-21T00:00:00Z"
            },
            "earlier",
        ),
        (
            {
                "$filter": "receivedDateTime ge '2026-01-21T00:00:00Z' and receivedDateTime le 2026-01-22T00:00:00Z"
            },
            "ISO",
        ),
        (
            {
                "$filter": "receivedDateTime ge 2026-01-21T00:00:00 and receivedDateTime le 2026-01-22T00:00:00Z"
            },
            "ISO",
        ),
        (
            {
                "$filter": "receivedDateTime gt 2026-01-21T00:00:00Z and receivedDateTime le 2026-01-22T00:00:00Z"
            },
            "'gt'",
        ),
        ({"$filter": "receivedDateTime ge 2026-01-21T00:00:00Z and size eq 5"}, "Invalid filter clause"),
        ({"$top": "0"}, "$top"),
        ({"$top": "5001"}, "$top"),
        ({"$top": "ten"}, "$top"),
        ({"$skiptoken": "not-base64!!"}, "skiptoken"),
        ({"$orderby": "receivedDateTime"}, "$orderby"),
    ],
)
def test_filter_rule_violations_are_400(
    clock: ManualClock, graph: GraphClient, params: dict[str, str], fragment: str
) -> None:
    response = graph.get(params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert fragment in error["message"]


def test_skiptoken_bound_to_filter(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add([_row(i, NOW - timedelta(minutes=i + 1)) for i in range(3)])
    link = graph.get({"$filter": _window(NOW - timedelta(days=1), NOW), "$top": "1"}).json()[
        "@odata.nextLink"
    ]
    token = link.split("$skiptoken=")[1]
    other = graph.get({"$filter": _window(NOW - timedelta(days=2), NOW), "$skiptoken": token})
    assert other.status_code == 400
    forged = base64.urlsafe_b64encode(json.dumps({"o": "x"}).encode()).decode()
    assert (
        graph.get({"$filter": _window(NOW - timedelta(days=1), NOW), "$skiptoken": forged}).status_code == 400
    )


def test_no_filter_means_last_48_hours(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add([_row(1, NOW - timedelta(hours=47)), _row(2, NOW - timedelta(hours=49))])
    ids = [v["id"] for v in graph.get().json()["value"]]
    assert ids == [_row(1, NOW)["id"]]


def test_visibility_delay_and_status_history(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    received = NOW - timedelta(minutes=3)
    row = _row(7, received, status="pending")
    sim.graph.add([row], visible_at=received + timedelta(minutes=8))
    sim.graph.set_status(row["id"], row["recipientAddress"], "delivered", at=NOW + timedelta(minutes=20))
    sim.graph.status_case = "camel"

    window = _window(NOW - timedelta(hours=1), NOW)
    assert graph.get({"$filter": window}).json()["value"] == []
    clock.advance(timedelta(minutes=6))
    values = graph.get({"$filter": _window(NOW - timedelta(hours=1), clock())}).json()["value"]
    assert [v["status"] for v in values] == ["pending"]
    clock.advance(timedelta(minutes=20))
    values = graph.get({"$filter": _window(NOW - timedelta(hours=1), clock())}).json()["value"]
    assert [v["status"] for v in values] == ["delivered"]
    assert sim.graph.rows()[0]["status"] == "delivered"


def test_publication_shifts_offset_pages(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add([_row(i, NOW - timedelta(minutes=30 + i)) for i in range(4)])
    late = _row(99, NOW - timedelta(minutes=1))
    sim.graph.add([late], visible_at=NOW + timedelta(seconds=1))
    window = _window(NOW - timedelta(hours=1), NOW)
    first = graph.get({"$filter": window, "$top": "2"}).json()
    clock.advance(timedelta(seconds=2))
    second = graph.get(url=first["@odata.nextLink"]).json()
    first_ids = [v["id"] for v in first["value"]]
    second_ids = [v["id"] for v in second["value"]]
    # The newly visible (newest) row pushed the second of page 1 onto page 2.
    assert first_ids[1] == second_ids[0]


def test_status_case_and_recalled_enum(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add(
        [
            _row(1, NOW - timedelta(minutes=20), "filteredAsSpam"),
            _row(2, NOW - timedelta(minutes=10), "recalled"),
        ]
    )
    window = {"$filter": _window(NOW - timedelta(hours=1), NOW)}

    sim.graph.status_case = "pascal"
    assert [v["status"] for v in graph.get(window).json()["value"]] == [
        "UnknownFutureValue",
        "FilteredAsSpam",
    ]
    sim.graph.status_case = "camel"
    response = graph.get(window, headers={"Prefer": "include-unknown-enum-members"})
    assert [v["status"] for v in response.json()["value"]] == ["recalled", "filteredAsSpam"]
    assert response.headers["Preference-Applied"] == "include-unknown-enum-members"
    sim.graph.status_case = "mixed"
    statuses = {graph.get(window).json()["value"][1]["status"] for _ in range(2)}
    assert statuses == {"filteredAsSpam", "FilteredAsSpam"}


def test_quota_429_with_retry_after_then_recovers(
    sim: Simulator, clock: ManualClock, graph: GraphClient
) -> None:
    sim.graph.quota.limit, sim.graph.quota.window_seconds = 3, 1.0
    window = {"$filter": _window(NOW - timedelta(hours=1), NOW)}
    assert [graph.get(window).status_code for _ in range(3)] == [200, 200, 200]
    throttled = graph.get(window)
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    retry_after = int(throttled.headers["Retry-After"])
    assert retry_after >= 1
    time.sleep(retry_after + 0.05)
    assert graph.get(window).status_code == 200

    sim.graph.send_retry_after = False
    sim.graph.quota.window_seconds = 60
    for _ in range(3):
        graph.get(window)
    assert "Retry-After" not in graph.get(window).headers


def test_service_principal_missing_and_permission(
    sim: Simulator, clock: ManualClock, graph: GraphClient
) -> None:
    sim.graph.service_principal_missing = True
    response = graph.get()
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "Unauthorized", "message": SP_MISSING_MESSAGE}}
    sim.graph.service_principal_missing = False
    sim.graph.permission_granted = False
    forbidden = graph.get()
    assert forbidden.status_code == 403
    assert "ExchangeMessageTrace.Read.All" in forbidden.json()["error"]["message"]


def test_bearer_token_checks(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    anonymous = requests.get(graph.url, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in anonymous.headers

    monitor_token, _ = sim.entra.issue_token(sim.client_id, "https://monitor.azure.com")
    wrong = requests.get(graph.url, headers={"Authorization": f"Bearer {monitor_token}"}, timeout=5)
    assert wrong.status_code == 401

    sim.entra.expire_all_tokens()
    expired = graph.get()
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "Access token has expired or is not yet valid."


def test_msal_token_is_accepted_by_graph(sim: Simulator, clock: ManualClock) -> None:
    app = msal.ConfidentialClientApplication(
        sim.client_id, client_credential=sim.client_secret, authority=sim.authority, instance_discovery=False
    )
    token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
    assert GraphClient(sim, token).get().status_code == 200


def test_injected_status_faults_are_consumed_in_order(
    sim: Simulator, clock: ManualClock, graph: GraphClient
) -> None:
    sim.graph.inject(503, times=2)
    sim.graph.inject(429, headers={"Retry-After": "7"})
    codes = [graph.get() for _ in range(4)]
    assert [r.status_code for r in codes] == [503, 503, 429, 200]
    assert codes[2].headers["Retry-After"] == "7"
    assert codes[0].json()["error"]["code"] == "serviceNotAvailable"
    assert codes[0].headers["request-id"]
    assert [r.fault for r in sim.graph.requests()] == ["503", "503", "429", None]


def test_reset_timeout_truncated_and_html_faults(
    sim: Simulator, clock: ManualClock, graph: GraphClient
) -> None:
    sim.graph.add([_row(1, NOW - timedelta(minutes=20))])
    sim.graph.inject("reset")
    with pytest.raises(requests.ConnectionError):
        graph.get()

    sim.graph.inject("timeout", seconds=1.5)
    with pytest.raises(requests.Timeout):
        graph.get(timeout=0.3)

    sim.graph.inject("truncated")
    truncated = graph.get()
    assert truncated.status_code == 200
    with pytest.raises(ValueError, match="."):
        truncated.json()

    sim.graph.inject("html")
    html = graph.get()
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert graph.get().status_code == 200  # the session and server still work


def test_loop_fault_returns_same_page_forever(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    sim.graph.add([_row(i, NOW - timedelta(minutes=i + 1)) for i in range(5)])
    sim.graph.status_case = "camel"
    sim.graph.inject("loop")
    page = graph.get({"$filter": _window(NOW - timedelta(hours=1), NOW), "$top": "2"}).json()
    link = page["@odata.nextLink"]
    for _ in range(3):
        again = graph.get(url=link).json()
        assert again["value"] == page["value"]
        assert again["@odata.nextLink"] == link


def test_generated_traffic_round_trips(sim: Simulator, clock: ManualClock, graph: GraphClient) -> None:
    rows = generate_traffic(NOW - timedelta(days=2), NOW - timedelta(minutes=1), 300, seed=11)
    sim.graph.add(rows)
    seen: list[dict[str, Any]] = []
    url: str | None = None
    params: dict[str, str] | None = {"$filter": _window(NOW - timedelta(days=3), NOW), "$top": "100"}
    while True:
        body = graph.get(params, url=url).json()
        seen.extend(body["value"])
        url, params = body.get("@odata.nextLink"), None
        if url is None:
            break
    assert len(seen) == len(rows)
    assert math.isclose(len(sim.graph.requests()), math.ceil(len(rows) / 100))
    by_key = {(r["id"], r["recipientAddress"]): r for r in rows}
    for value in seen:
        original = by_key[(value["id"], value["recipientAddress"])]
        assert value["subject"] == original["subject"]
        assert (
            value["status"].lower() == original["status"].lower()
            or value["status"].lower() == "unknownfuturevalue"
        )
