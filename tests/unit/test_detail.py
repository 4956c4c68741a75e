"""Message trace detail: the request checked, Graph's events read and printed safely."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import pytest

from connector.detail import (
    check_detail_request,
    event_properties,
    parse_events,
    printable,
    render_events,
)
from connector.graph import MESSAGE_TRACES_PATH, detail_url

TRACE = "7E3B2B2E-1B5E-4B17-80CC-2AF6C1D9A3B1"
GRAPH = "https://graph.microsoft.com"


def test_a_request_needs_a_trace_guid_and_one_address():
    assert check_detail_request(f" {TRACE} ", "robert@contoso.com") == (TRACE.lower(), "robert@contoso.com")
    for trace_id, recipient, named in [
        ("not-a-guid", "robert@contoso.com", "--trace-id"),
        (TRACE, "robert", "--recipient"),
        (TRACE, "a@b.example\r\nX-Injected: 1", "--recipient"),
        (TRACE, "a" * 400 + "@contoso.com", "--recipient"),
    ]:
        with pytest.raises(ValueError, match=named):
            check_detail_request(trace_id, recipient)


def test_the_recipient_is_an_odata_literal_that_no_address_can_leave():
    url = detail_url(GRAPH, TRACE.lower(), "o'brien@contoso.com?$top=1/../x")
    parts = urlsplit(url)

    assert parts.query == ""  # nothing in the address became a query
    path = unquote(parts.path)
    assert path == (
        f"{MESSAGE_TRACES_PATH}/{TRACE.lower()}/getDetailsByRecipient(recipientAddress='o''brien@contoso.com?$top=1/../x')"
    )
    assert parts.path.count("/") == MESSAGE_TRACES_PATH.count("/") + 2


def test_events_come_oldest_first_with_their_data_properties():
    records = [
        {
            "dateTime": "2025-06-13T10:30:09Z",
            "event": "Deliver",
            "action": "",
            "description": "The message was delivered to the mailbox.",
            "data": '<root><MEP Name="MailboxDatabaseName" String="DB01"/><MEP Name="Size" Integer="51234"/></root>',
        },
        {
            "dateTime": "2025-06-13T10:30:05.123Z",
            "event": "Receive",
            "action": "",
            "description": "Message received by: MN2PR00MB0670.namprd00.prod.outlook.com",
            "data": '<root><MEP Name="ReturnPath" String="&lt;bounce@fabrikam.com&gt;" /></root>',
        },
        {"dateTime": "yesterday", "event": "Spam", "action": "Quarantine", "data": 42},
    ]

    events = parse_events(records)

    assert [e.event for e in events] == ["Receive", "Deliver", "Spam"]
    assert events[0].at == datetime(2025, 6, 13, 10, 30, 5, 123000, tzinfo=UTC)
    assert events[0].properties == (("ReturnPath", "<bounce@fabrikam.com>"),)
    assert events[1].properties == (("MailboxDatabaseName", "DB01"), ("Size", "51234"))
    assert (events[2].at, events[2].action, events[2].properties) == (None, "Quarantine", ())
    assert events[2].fields()["time"] is None


def test_data_with_entities_or_a_doctype_is_read_as_text_never_expanded():
    data = '<!DOCTYPE r [<!ENTITY a "aaaa">]><root><MEP Name="X" String="&a;&amp;"/><MEP String="no name"/></root>'

    assert event_properties(data) == (("X", "&a;&"),)


def test_printed_lines_show_control_characters_instead_of_obeying_them():
    events = parse_events(
        [
            {
                "dateTime": "2025-06-13T10:30:05Z",
                "event": "Receive",
                "description": "ok\x1b[2J\r\nforged line\u2028",
                "data": '<root><MEP Name="Rule" String="a\x07b"/></root>',
            }
        ]
    )

    lines = render_events(TRACE.lower(), "o'brien@contoso.com", events)

    assert len(lines) == 3
    assert "\\u001b[2J\\u000d\\u000aforged line\\u2028" in lines[1]
    assert lines[2].endswith("Rule: a\\u0007b")
    assert printable("lone \ud83d") == "lone \\ud83d"


def test_no_events_says_why_there_may_be_none():
    (line,) = render_events(TRACE.lower(), "robert@contoso.com", [])

    assert "no events" in line
    assert "90 days" in line
