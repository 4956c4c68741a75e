"""The fake Log Analytics query API reads string literals by Kusto's rules.

The connector's verification is only proven over the simulator if the simulator means
by a literal what Log Analytics means: the escapes Kusto's lexer (Kusto.Language)
decodes, and a 400 for a literal the service cannot parse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient

from connector.simulator import Simulator
from connector.simulator.logs_query import (
    KqlSyntaxError,
    PresenceQuery,
    parse_presence_query,
    parse_range_query,
    parse_string_list,
)
from connector.windows import Window
from connector.workspace import hourly_rows_query, piece_rows_query, presence_query, stored_query

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("text", "values"),
    [
        (r'"plain")', ["plain"]),
        (r"'single')", ["single"]),
        (r'"a\\b\"c\'d")', ["a\\b\"c'd"]),
        (r"'a\'b\"c')", ["a'b\"c"]),
        (r'"\a\b\f\n\r\t\v")', ["\a\b\f\n\r\t\v"]),
        (r'"\u0041\u00e9\u000D")', ["Aé\r"]),
        (r'"\uD83D\uDE00")', ["😀"]),
        (r'"\U0001F600\x41")', ["😀A"]),
        (r'"\0\101\7\77\400")', ["\x00A\x07?\x200"]),
        ('"raw\ttab, NUL\x00 and é")', ["raw\ttab, NUL\x00 and é"]),
        (r'@"C:\dir\""file""")', ['C:\\dir\\"file"']),
        (r"@'it''s')", ["it's"]),
        (r'h"secret")', ["secret"]),
        ('```multi\r\nline "\\n"```)', ['multi\r\nline "\\n"']),
        (r'"a" "b"' + "\n  'c' @\"d\\\")", ["abcd\\"]),
        (r'"x)y", "z,w" , ""  )', ["x)y", "z,w", ""]),
        (")", []),
    ],
)
def test_literals_decode_as_kusto_decodes_them(text, values):
    assert parse_string_list(text, 0) == (values, len(text))


@pytest.mark.parametrize(
    "text",
    [
        r'"unknown \q escape")',
        r'"\8")',
        r'"short \u12")',
        r'"short \x4")',
        r'"not hex \u12G4")',
        r'"\U00110000")',
        r'"\UD800DC00")',
        '"raw\nnewline")',
        '"raw\rreturn")',
        '@"verbatim\nnewline")',
        r'"unterminated)',
        r'"ends in a backslash\")',
        "'mismatched\")",
        "```never closed)",
        r'"a" "b" x)',
        r'"a"; "b")',
        r'"a",',
        "unquoted)",
    ],
)
def test_malformed_literals_are_syntax_errors(text):
    with pytest.raises(KqlSyntaxError):
        parse_string_list(text, 0)


def test_only_the_presence_query_shape_is_understood():
    assert parse_presence_query(presence_query("T", ["a"])) == PresenceQuery(
        "T",
        ["a"],
        ["MessageTraceId", "RecipientAddress", "Status", "StatusRevision"],
        "MessageTraceId",
    )
    assert parse_presence_query(stored_query("T", ["f00d"])) == PresenceQuery(
        "T", ["f00d"], ["RowId"], "RowId"
    )
    assert parse_presence_query('T | where MessageTraceId in ("a") | summarize count()') is None
    assert parse_presence_query("T | take 10") is None
    assert parse_presence_query(42) is None


# --------------------------------------------------------------------------- over HTTPS

ODD_IDS = ["x)y \"q\" \\ 's'", "\r\n\t", "é😀会議", "NUL\x00DEL\x7f"]


def _row(sim: Simulator, trace_id: str, index: int) -> dict[str, Any]:
    now = sim.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "TimeGenerated": now,
        "Received": now,
        "MessageTraceId": trace_id,
        "RecipientAddress": f"user{index}@contoso.com",
        "Status": "Delivered",
    }


@pytest.fixture
def stored(sim: Simulator, credential: ClientSecretCredential) -> list[dict[str, Any]]:
    rows = [_row(sim, trace_id, i) for i, trace_id in enumerate([*ODD_IDS, "plain"])]
    with LogsIngestionClient(
        sim.ingestion.url, credential, connection_verify=sim.ca_bundle_path
    ) as ingestion:
        ingestion.upload(sim.dcr_immutable_id, sim.stream_name, rows)  # type: ignore[arg-type]
    return rows


def test_rows_are_found_by_the_literal_of_their_odd_id(sim, query_client, stored):
    window = (sim.now() - timedelta(hours=1), sim.now() + timedelta(hours=1))

    result = query_client.query_workspace(
        sim.workspace_id, presence_query("EmailEvents_CL", ODD_IDS), timespan=window
    )

    found = {row[0] for table in result.tables for row in table.rows}
    assert found == set(ODD_IDS)


def test_the_row_id_column_can_be_queried(sim, query_client, credential):
    row = {**_row(sim, "with-id", 0), "RowId": "0123456789abcdef0123456789abcdef"}
    with LogsIngestionClient(
        sim.ingestion.url, credential, connection_verify=sim.ca_bundle_path
    ) as ingestion:
        ingestion.upload(sim.dcr_immutable_id, sim.stream_name, [row])
    query = 'EmailEvents_CL\n| where MessageTraceId in ("with-id")\n| project MessageTraceId, RowId'

    result = query_client.query_workspace(sim.workspace_id, query, timespan=timedelta(hours=1))

    assert [list(r) for table in result.tables for r in table.rows] == [["with-id", row["RowId"]]]


@pytest.mark.parametrize("literal", [r'"unknown \q escape"', '"raw\r\nnewline"', r'"\u12"', r'"unterminated'])
def test_a_malformed_literal_is_answered_400_like_the_service(sim, query_client, literal):
    query = f"EmailEvents_CL\n| where MessageTraceId in ({literal})\n| project MessageTraceId"

    with pytest.raises(HttpResponseError) as raised:
        query_client.query_workspace(sim.workspace_id, query, timespan=timedelta(hours=1))

    assert raised.value.status_code == 400
    assert "SyntaxError" in str(raised.value)


# --------------------------------------------------------------------------- reconcile's range counts


def _window(sim: Simulator) -> Window:
    hour = sim.now().replace(minute=0, second=0, microsecond=0)
    return Window(hour - timedelta(hours=1), hour + timedelta(hours=1))


def test_the_range_query_shapes_reconcile_sends_are_understood():
    piece = Window(datetime(2026, 11, 25, 9, tzinfo=UTC), datetime(2026, 11, 25, 10, tzinfo=UTC))

    by_identity = parse_range_query(piece_rows_query("EmailEvents_CL", piece, "t'1"))
    per_hour = parse_range_query(hourly_rows_query("EmailEvents_CL", piece))

    assert by_identity is not None
    assert (by_identity.column, by_identity.start, by_identity.end) == ("Received", piece.start, piece.end)
    assert by_identity.filters == (("SourceTenantId", "t'1"),)
    assert by_identity.group_by == ("MessageTraceId", "RecipientAddress", "Status", "StatusRevision")
    assert per_hour is not None
    assert (per_hour.group_by, per_hour.hour_name, per_hour.count_name) == ((), "Hour", "Rows")
    assert parse_range_query(stored_query("EmailEvents_CL", ["x"])) is None


def test_rows_are_counted_by_identity_and_per_hour_over_https(sim, query_client, stored):
    sim.ingestion.default_dcr.duplicate_rows(lambda row: row["MessageTraceId"] == "plain", age_seconds=60)
    window = _window(sim)
    span = (window.start - timedelta(hours=1), sim.now() + timedelta(hours=1))

    identities = query_client.query_workspace(
        sim.workspace_id, piece_rows_query("EmailEvents_CL", window), timespan=span
    )
    hours = query_client.query_workspace(
        sim.workspace_id, hourly_rows_query("EmailEvents_CL", window), timespan=span
    )

    (table,) = identities.tables
    columns = list(table.columns)
    copies = {r[0]: r[columns.index("Copies")] for r in table.rows}
    assert copies == {**{trace_id: 1 for trace_id in ODD_IDS}, "plain": 2}
    assert all(isinstance(r[columns.index("Ingested")], datetime) for r in table.rows)
    (hour_rows,) = [list(r) for table in hours.tables for r in table.rows]
    assert hour_rows[1] == len(ODD_IDS) + 2


def test_a_dropped_row_is_gone_from_every_answer(sim, query_client, stored):
    assert sim.ingestion.default_dcr.drop_rows(lambda row: row["MessageTraceId"] == "plain") == 1
    window = _window(sim)

    result = query_client.query_workspace(
        sim.workspace_id,
        piece_rows_query("EmailEvents_CL", window),
        timespan=(window.start, sim.now() + timedelta(hours=1)),
    )

    assert "plain" not in {tuple(r)[0] for table in result.tables for r in table.rows}
    assert all(row["MessageTraceId"] != "plain" for row in sim.ingestion.rows())


def test_a_range_over_an_unknown_column_is_a_semantic_error(sim, query_client):
    query = piece_rows_query("EmailEvents_CL", _window(sim)).replace("Received", "Arrived")

    with pytest.raises(HttpResponseError) as raised:
        query_client.query_workspace(sim.workspace_id, query, timespan=timedelta(hours=1))

    assert raised.value.status_code == 400
