"""The verification query's string literals (issue 8, item 5).

A trace id is whatever text Graph sent. Each becomes a KQL literal whose value must be
exactly the id, under Kusto's lexical rules (which the simulator's parser follows), or
one odd id makes every verification of its batch fail.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from azure.monitor.query import LogsQueryStatus

from connector.simulator.logs_query import parse_presence_query, parse_string_list
from connector.workspace import LogAnalyticsVerifier, kql_string, presence_query, stored_query

ODD_IDS = [
    "plain-3f2a",
    "",
    "CR\rLF\nTAB\t",
    "\r\n\t",
    'double " quote',
    "single ' quote",
    "back \\ slash",
    "trailing backslash \\",
    '\\"',
    '\\\\"',
    "\\n is not a newline",
    "\\u0041 is not an A",
    "NUL\x00 BEL\x07 BS\x08 VT\x0b FF\x0c ESC\x1b US\x1f DEL\x7f",
    "C1 \x80 NEL \x85 \x9f",
    "line sep \u2028 para sep \u2029",
    "x)y, z",
    "in (\"a\", 'b') | project",
    "// not a comment",
    "```fence```",
    "@verbatim",
    "Grüße 会議 ÿ",
    "emoji 😀 astral \U0001f9d1\u200d\U0001f4bb",
    "zero width \u200b bom \ufeff rtl \u202e",
    "replacement \ufffd",
    "".join(chr(c) for c in range(0x20)),
]


@pytest.mark.parametrize("trace_id", ODD_IDS)
def test_literal_reads_back_as_exactly_the_id(trace_id):
    literal = kql_string(trace_id)

    values, end = parse_string_list(literal + ")", 0)

    assert values == [trace_id]
    assert end == len(literal) + 1


@pytest.mark.parametrize("trace_id", ODD_IDS)
def test_literal_is_one_printable_line_of_utf8(trace_id):
    literal = kql_string(trace_id)

    assert not any(ch in literal for ch in "\r\n\x00\x85\u2028\u2029")
    assert all(ch.isprintable() or ch in "\u200b\ufeff\u202e\u200d" for ch in literal)
    literal.encode("utf-8")


@pytest.mark.parametrize(
    ("trace_id", "literal"),
    [
        ("abc", '"abc"'),
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("a'b", '"a\'b"'),
        ("a\tb", r'"a\tb"'),
        ("a\nb", r'"a\nb"'),
        ("a\rb", r'"a\u000Db"'),
        ("\r\n\t", r'"\u000D\n\t"'),
        ("\x00", r'"\u0000"'),
        ("\x7f\x85", r'"\u007F\u0085"'),
        ("\u2028", r'"\u2028"'),
        ("é😀", '"é😀"'),
    ],
)
def test_only_escapes_the_kusto_documentation_names_are_used(trace_id, literal):
    assert kql_string(trace_id) == literal


def test_the_whole_query_parses_and_lists_every_id():
    query = presence_query("EmailEvents_CL", ODD_IDS)

    assert parse_presence_query(query) == (
        "EmailEvents_CL",
        ODD_IDS,
        ["MessageTraceId", "RecipientAddress", "Status", "StatusRevision"],
        "MessageTraceId",
        (),
    )
    json.dumps({"query": query}, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("trace_id", ["\ud83d", "a\udc00b", "\udfff\ud800"])
def test_an_unpaired_surrogate_cannot_become_a_literal(trace_id):
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        kql_string(trace_id)


class RecordingClient:
    """Stands for ``LogsQueryClient``: records each query, answers with no rows."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query_workspace(self, workspace_id, query, timespan):
        self.queries.append(query)
        return SimpleNamespace(status=LogsQueryStatus.SUCCESS, tables=[])


def test_the_shared_table_query_keeps_to_the_tenant_and_still_parses():
    query = stored_query("EmailEvents_CL", ODD_IDS, "72f988bf-86f1-41af-91ab-2d7cd011db47")

    parsed = parse_presence_query(query)

    assert parsed is not None
    assert (parsed.values, parsed.filters) == (
        ODD_IDS,
        (("SourceTenantId", "72f988bf-86f1-41af-91ab-2d7cd011db47"),),
    )


def test_ids_with_an_unpaired_surrogate_are_left_out_and_the_rest_still_verified(caplog):
    client = RecordingClient()
    verifier = LogAnalyticsVerifier(client, workspace_id="ws", table="EmailEvents_CL")  # type: ignore[arg-type]
    since, until = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)

    with caplog.at_level(logging.WARNING, logger="connector.workspace"):
        assert verifier.legacy_rows_present(["ok-1", "bad-\ud83d", "ok-\r\n"], since, until) == set()

    assert len(client.queries) == 1
    assert parse_presence_query(client.queries[0]) == (
        "EmailEvents_CL",
        ["ok-1", "ok-\r\n"],
        ["MessageTraceId", "RecipientAddress", "Status", "StatusRevision"],
        "MessageTraceId",
        (),
    )
    client.queries[0].encode("utf-8")
    assert "1 trace ids hold an unpaired UTF-16 surrogate" in caplog.text


def test_a_batch_of_only_unstorable_ids_sends_no_query():
    client = RecordingClient()
    verifier = LogAnalyticsVerifier(client, workspace_id="ws", table="EmailEvents_CL")  # type: ignore[arg-type]

    present = verifier.legacy_rows_present(
        ["\ud800"], datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)
    )

    assert present == set()
    assert client.queries == []
