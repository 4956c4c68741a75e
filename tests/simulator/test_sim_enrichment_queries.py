"""The fake workspace answers enrichment's queries as a real one would.

The detail rows arrive on their own stream and are stored apart from the mail rows;
the query API finds them by trace id or RowId (after the ingestion latency), and the
``--status`` query sees each (trace id, recipient) in its newest status.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient

from connector.enrich_store import enriched_pairs_query, status_query
from connector.simulator import Simulator
from connector.simulator.logs_query import parse_status_query
from connector.workspace import stored_query

pytestmark = pytest.mark.integration

DETAIL = "MessageTraceDetail_CL"
TRACE = "7e3b2b2e-1b5e-4b17-80cc-2af6c1d9a3b1"


def upload(
    sim: Simulator, credential: ClientSecretCredential, stream: str, rows: list[dict[str, Any]]
) -> None:
    with LogsIngestionClient(
        sim.ingestion.url, credential, connection_verify=sim.ca_bundle_path
    ) as ingestion:
        ingestion.upload(sim.dcr_immutable_id, stream, rows)  # type: ignore[arg-type]


def detail_row(sim: Simulator, recipient: str, row_id: str) -> dict[str, Any]:
    now = sim.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "TimeGenerated": now,
        "MessageTraceId": TRACE,
        "RecipientAddress": recipient,
        "EventIndex": 0,
        "Event": "Receive",
        "Data": {"ClientIP": "203.0.113.25"},
        "RowId": row_id,
        "Reason": "requested",
    }


def values(result: Any) -> list[list[Any]]:
    return [list(row) for table in result.tables for row in table.rows]


def test_detail_rows_are_stored_apart_and_found_by_trace_id_and_by_row_id(sim, credential, query_client):
    upload(sim, credential, sim.detail_schema.stream, [detail_row(sim, "a@contoso.com", "r1")])
    window = timedelta(hours=1)

    pairs = query_client.query_workspace(
        sim.workspace_id, enriched_pairs_query(DETAIL, [TRACE]), timespan=window
    )
    stored = query_client.query_workspace(
        sim.workspace_id, stored_query(DETAIL, ["r1", "r2"]), timespan=window
    )

    assert sim.ingestion.rows() == []
    assert [r["RowId"] for r in sim.ingestion.rows(DETAIL)] == ["r1"]
    assert values(pairs) == [[TRACE, "a@contoso.com"]]
    assert values(stored) == [["r1"]]


def test_detail_rows_are_not_queryable_before_the_ingestion_latency(sim, credential, query_client):
    sim.logs_query.latency_seconds = 3600
    upload(sim, credential, sim.detail_schema.stream, [detail_row(sim, "a@contoso.com", "r1")])

    result = query_client.query_workspace(
        sim.workspace_id, enriched_pairs_query(DETAIL, [TRACE]), timespan=timedelta(hours=1)
    )

    assert values(result) == []


def test_the_status_query_sees_each_pair_in_its_newest_status_within_the_receive_range(
    sim, credential, query_client
):
    now = sim.now()

    def mail(trace: str, recipient: str, status: str, revision: int, received: datetime) -> dict[str, Any]:
        text = received.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "TimeGenerated": text,
            "Received": text,
            "MessageTraceId": trace,
            "RecipientAddress": recipient,
            "Status": status,
            "StatusRevision": revision,
        }

    hour_ago = now - timedelta(hours=1)
    upload(
        sim,
        credential,
        sim.stream_name,
        [
            mail("t1", "A@contoso.com", "Pending", 0, hour_ago),
            mail("t1", "a@contoso.com", "Failed", 1, hour_ago),  # newest: Failed
            mail("t2", "b@contoso.com", "Failed", 0, hour_ago),
            mail("t2", "b@contoso.com", "Delivered", 1, hour_ago),  # newest: Delivered
            mail("t3", "c@contoso.com", "Quarantined", 0, now - timedelta(hours=5)),  # outside the range
        ],
    )
    query = status_query("EmailEvents_CL", ["Failed", "Quarantined"], now - timedelta(hours=2), now)

    result = query_client.query_workspace(
        sim.workspace_id, query, timespan=(now - timedelta(days=1), now + timedelta(hours=1))
    )

    assert values(result) == [["t1", "a@contoso.com", "Failed"]]


def test_the_status_query_is_read_with_its_tenant_filter_and_limit():
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, 3, 4, 5, 600000, tzinfo=UTC)

    parsed = parse_status_query(status_query("EmailEvents_CL", ["Failed"], start, end, 'ten"ant', limit=7))

    assert parsed is not None
    assert (parsed.table, parsed.start, parsed.end, parsed.statuses, parsed.take, parsed.tenant) == (
        "EmailEvents_CL",
        start,
        end,
        ["Failed"],
        7,
        'ten"ant',
    )


def test_a_detail_query_naming_an_unknown_column_is_a_semantic_error(sim, query_client):
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as refused:
        query_client.query_workspace(
            sim.workspace_id,
            f'{DETAIL}\n| where MessageTraceId in ("x")\n| project NoSuchColumn',
            timespan=timedelta(hours=1),
        )

    assert refused.value.status_code == 400
