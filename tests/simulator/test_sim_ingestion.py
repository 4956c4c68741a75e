"""The fake Logs Ingestion endpoint with the real azure-monitor-ingestion client."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient

from connector.simulator import Simulator

pytestmark = pytest.mark.integration


def _record(index: int, padding: int = 0) -> dict[str, Any]:
    return {
        "TimeGenerated": "2026-01-21T14:12:34.109Z",
        "Received": "2026-01-21T14:12:34.109Z",
        "MessageTraceId": f"00000000-0000-4000-8000-{index:012d}",
        "MessageId": f"<m{index}@example.net>",
        "SenderAddress": "sender@example.net",
        "RecipientAddress": f"user{index}@contoso.com",
        "Subject": "Grüße 🎉 会議" + "x" * padding,
        "Status": "Delivered",
        "Size": 51234,
        "FromIP": "2001:db8::1",
        "ToIP": "",
        "SenderDomain": "example.net",
        "RecipientDomain": "contoso.com",
        "Direction": "Inbound",
        "StatusRevision": 0,
        "PreviousStatus": "",
    }


@pytest.fixture
def client(sim: Simulator) -> Iterator[LogsIngestionClient]:
    credential = ClientSecretCredential(
        sim.tenant_id,
        sim.client_id,
        sim.client_secret,
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )
    with LogsIngestionClient(
        sim.ingestion.url, credential, connection_verify=sim.ca_bundle_path, retry_backoff_factor=0.01
    ) as logs_client:
        yield logs_client


def test_upload_stores_rows(sim: Simulator, client: LogsIngestionClient) -> None:
    rows: list[MutableMapping[str, Any]] = [_record(i) for i in range(3)]
    client.upload(sim.dcr_immutable_id, sim.stream_name, rows)
    assert sim.ingestion.rows() == rows
    batch = sim.ingestion.batches()[0]
    assert batch.content_encoding == "gzip"
    record = sim.ingestion.requests()[0]
    assert record.query == {"api-version": "2023-01-01"}
    assert record.headers["authorization"] == "Bearer"
    assert record.status == 204


def test_sdk_splits_lists_over_one_mebibyte(sim: Simulator, client: LogsIngestionClient) -> None:
    rows: list[MutableMapping[str, Any]] = [_record(i, padding=900) for i in range(2500)]  # ~2.7 MB of JSON
    client.upload(sim.dcr_immutable_id, sim.stream_name, rows)
    batches = sim.ingestion.batches()
    assert len(batches) >= 3
    assert all(b.content_encoding == "gzip" for b in batches)
    assert max(b.uncompressed_bytes for b in batches) > 1_000_000  # the SDK's chunks pass the limit
    assert sim.ingestion.rows() == rows


def test_oversized_io_body_is_413(sim: Simulator, client: LogsIngestionClient) -> None:
    body = json.dumps([_record(i, padding=900) for i in range(1200)]).encode()
    assert len(body) > 1_048_576
    with pytest.raises(HttpResponseError) as caught:
        client.upload(sim.dcr_immutable_id, sim.stream_name, io.BytesIO(body))
    assert caught.value.status_code == 413
    assert "ContentLengthLimitExceeded" in str(caught.value)
    assert sim.ingestion.rows() == []


def test_gzip_io_body_over_the_uncompressed_limit_is_413(sim: Simulator, client: LogsIngestionClient) -> None:
    body = gzip.compress(json.dumps([_record(i, padding=2000) for i in range(600)]).encode())
    assert len(body) < 100_000
    with pytest.raises(HttpResponseError) as caught:
        client.upload(sim.dcr_immutable_id, sim.stream_name, io.BytesIO(body))
    assert caught.value.status_code == 413


def test_unknown_column_and_wrong_type_are_400(sim: Simulator, client: LogsIngestionClient) -> None:
    with pytest.raises(HttpResponseError) as unknown:
        client.upload(sim.dcr_immutable_id, sim.stream_name, [{**_record(1), "Colour": "blue"}])
    assert unknown.value.status_code == 400
    assert "'Colour'" in str(unknown.value)

    with pytest.raises(HttpResponseError) as wrong_type:
        client.upload(sim.dcr_immutable_id, sim.stream_name, [{**_record(1), "Size": "51234"}])
    assert wrong_type.value.status_code == 400
    assert "'Size'" in str(wrong_type.value)

    with pytest.raises(HttpResponseError):
        client.upload(sim.dcr_immutable_id, sim.stream_name, [{**_record(1), "StatusRevision": True}])
    with pytest.raises(HttpResponseError):
        client.upload(sim.dcr_immutable_id, sim.stream_name, [{**_record(1), "Received": 1737468754}])
    assert sim.ingestion.rows() == []


def test_row_id_is_a_declared_string_column(sim: Simulator, client: LogsIngestionClient) -> None:
    row: MutableMapping[str, Any] = {**_record(1), "RowId": "0123456789abcdef0123456789abcdef"}

    client.upload(sim.dcr_immutable_id, sim.stream_name, [row])

    assert sim.ingestion.rows() == [row]
    with pytest.raises(HttpResponseError) as wrong_type:
        client.upload(sim.dcr_immutable_id, sim.stream_name, [{**_record(2), "RowId": 123}])
    assert wrong_type.value.status_code == 400
    assert "'RowId'" in str(wrong_type.value)


def test_body_must_be_an_array_of_objects(sim: Simulator, client: LogsIngestionClient) -> None:
    for body in (b'{"a": 1}', b"[1, 2]", b"[{]"):
        with pytest.raises(HttpResponseError) as caught:
            client.upload(sim.dcr_immutable_id, sim.stream_name, io.BytesIO(body))
        assert caught.value.status_code == 400


def test_unknown_dcr_stream_and_missing_role(sim: Simulator, client: LogsIngestionClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        client.upload("dcr-ffffffffffffffffffffffffffffffff", sim.stream_name, [_record(1)])
    with pytest.raises(ResourceNotFoundError):
        client.upload(sim.dcr_immutable_id, "Custom-Other", [_record(1)])
    sim.ingestion.role_assigned = False
    with pytest.raises(HttpResponseError) as caught:
        client.upload(sim.dcr_immutable_id, sim.stream_name, [_record(1)])
    assert caught.value.status_code == 403
    assert "(OperationFailed) The authentication token provided does not have access" in str(caught.value)


def test_graph_token_is_rejected_with_401(sim: Simulator, graph_token: str) -> None:
    url = f"{sim.ingestion.url}/dataCollectionRules/{sim.dcr_immutable_id}/streams/{sim.stream_name}"
    response = requests.post(
        url,
        params={"api-version": "2023-01-01"},
        headers={"Authorization": f"Bearer {graph_token}", "Content-Type": "application/json"},
        data=json.dumps([_record(1)]),
        timeout=5,
    )
    assert response.status_code == 401
    assert "error" in response.json()


def test_expired_token_raises_client_authentication_error(
    sim: Simulator, client: LogsIngestionClient
) -> None:
    client.upload(sim.dcr_immutable_id, sim.stream_name, [_record(1)])
    sim.entra.expire_all_tokens()  # azure-core still has the token cached
    with pytest.raises(ClientAuthenticationError):
        client.upload(sim.dcr_immutable_id, sim.stream_name, [_record(2)])


def test_sdk_retries_injected_500_and_429_with_retry_after(
    sim: Simulator, client: LogsIngestionClient
) -> None:
    sim.ingestion.inject(500)
    sim.ingestion.inject(429, headers={"Retry-After": "1"})
    client.upload(sim.dcr_immutable_id, sim.stream_name, [_record(1)])
    assert sim.ingestion.request_count == 3
    assert [r.status for r in sim.ingestion.requests()] == [500, 429, 204]
    assert len(sim.ingestion.rows()) == 1


@pytest.mark.parametrize("status", [200, 202])
def test_another_2xx_stores_the_rows_yet_the_sdk_raises_it_as_an_error(
    sim: Simulator, client: LogsIngestionClient, status: int
) -> None:
    sim.ingestion.accept_status = status
    rows: list[MutableMapping[str, Any]] = [_record(i) for i in range(2)]
    with pytest.raises(HttpResponseError) as caught:
        client.upload(sim.dcr_immutable_id, sim.stream_name, rows)
    assert caught.value.status_code == status
    assert sim.ingestion.rows() == rows
    assert [r.status for r in sim.ingestion.requests()] == [status]


def test_health_stream_is_checked_against_its_own_schema_and_stored_apart(
    sim: Simulator, client: LogsIngestionClient
) -> None:
    health = sim.health_schema
    row = {"TimeGenerated": "2026-03-10T12:00:00Z", "Feed": "live", "Outcome": "completed", "RowsStored": 3}

    client.upload(sim.dcr_immutable_id, health.stream, [row])
    with pytest.raises(HttpResponseError) as unknown:
        client.upload(sim.dcr_immutable_id, health.stream, [{**row, "MessageTraceId": "x"}])
    with pytest.raises(HttpResponseError) as wrong_type:
        client.upload(sim.dcr_immutable_id, health.stream, [{**row, "RowsStored": "3"}])

    assert (unknown.value.status_code, wrong_type.value.status_code) == (400, 400)
    assert "'MessageTraceId' is not declared in stream 'Custom-MessageTraceHealth'" in str(unknown.value)
    assert sim.ingestion.rows(health.table) == [row]
    assert sim.ingestion.rows() == []
