"""``parse_datetime``: RFC 3339 / ISO 8601 extended timestamps, strictly (issue 8, item 6).

Graph's ``receivedDateTime`` places a record in time and the checkpoint's own times are
read back with the same parser, so a shape it misreads moves a record silently and a
shape it accepts wrongly (a bare date) stores a record at midnight.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import RecordError
from connector.mapping import format_datetime, parse_datetime, parse_trace_record
from tests.fakes.memory import trace


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The two shapes of the issue: the offset's digits joined the fraction / were lost.
        ("2026-11-20T10:00:00.123+05:30", utc(2026, 11, 20, 4, 30, 0, 123000)),
        ("2026-11-20T10:00:00.1234567-05:00", utc(2026, 11, 20, 15, 0, 0, 123456)),
        ("2026-11-20T10:00:00.5+00:00", utc(2026, 11, 20, 10, 0, 0, 500000)),
        ("2026-11-20T10:00:00.123456789+01:00", utc(2026, 11, 20, 9, 0, 0, 123456)),
        # Offsets: with and without a colon, hours only, crossing midnight, extremes.
        ("2026-11-20T10:00:00+0530", utc(2026, 11, 20, 4, 30)),
        ("2026-11-20T10:00:00.25-0800", utc(2026, 11, 20, 18, 0, 0, 250000)),
        ("2026-11-20T10:00:00-05", utc(2026, 11, 20, 15, 0)),
        ("2026-11-20T02:00:00+05:30", utc(2026, 11, 19, 20, 30)),
        ("2026-11-20T22:00:00-03:00", utc(2026, 11, 21, 1, 0)),
        ("2026-11-20T10:00:00+14:00", utc(2026, 11, 19, 20, 0)),
        ("2026-11-20T10:00:00-12:00", utc(2026, 11, 20, 22, 0)),
        ("2026-11-20T10:00:00-00:00", utc(2026, 11, 20, 10, 0)),
        ("2026-12-31T23:30:00-01:00", utc(2027, 1, 1, 0, 30)),
        # RFC 3339 allows lower-case t and z and a space separator; ISO 8601 a comma.
        ("2026-11-20t10:00:00z", utc(2026, 11, 20, 10, 0)),
        ("2026-11-20 10:00:00Z", utc(2026, 11, 20, 10, 0)),
        ("2026-11-20T10:00:00,5Z", utc(2026, 11, 20, 10, 0, 0, 500000)),
        # Minutes without seconds (ISO 8601 extended).
        ("2026-11-20T10:00Z", utc(2026, 11, 20, 10, 0)),
        ("2026-11-20T10:00+05:30", utc(2026, 11, 20, 4, 30)),
        # Fractions of 1-9 digits are truncated, never rounded into the next second or day.
        ("2026-11-20T23:59:59.9999999Z", utc(2026, 11, 20, 23, 59, 59, 999999)),
        ("2026-11-20T23:59:59.999999999+00:00", utc(2026, 11, 20, 23, 59, 59, 999999)),
        ("2026-11-20T10:00:00.1Z", utc(2026, 11, 20, 10, 0, 0, 100000)),
        ("2026-11-20T10:00:00.000001Z", utc(2026, 11, 20, 10, 0, 0, 1)),
        ("2026-11-20T10:00:00.0000009Z", utc(2026, 11, 20, 10, 0, 0, 0)),
        # A leap second is kept, as the last microsecond of its minute.
        ("2016-12-31T23:59:60Z", utc(2016, 12, 31, 23, 59, 59, 999999)),
        ("2016-12-31T23:59:60.5Z", utc(2016, 12, 31, 23, 59, 59, 999999)),
        ("2017-01-01T05:29:60+05:30", utc(2016, 12, 31, 23, 59, 59, 999999)),
        # No zone is UTC by Graph's contract (Exchange's own 7-digit shape).
        ("2022-11-29T05:35:08.2652371", utc(2022, 11, 29, 5, 35, 8, 265237)),
        ("2026-11-20T10:00:00", utc(2026, 11, 20, 10, 0)),
        # The connector's checkpoint shape, Graph's sample shape, a leap day, whitespace.
        ("2026-11-20T10:00:00.123456Z", utc(2026, 11, 20, 10, 0, 0, 123456)),
        ("2026-01-21T14:12:34.109Z", utc(2026, 1, 21, 14, 12, 34, 109000)),
        ("2024-02-29T00:00:00Z", utc(2024, 2, 29)),
        (" 2026-11-20T10:00:00Z\n", utc(2026, 11, 20, 10, 0)),
        ("0001-01-01T00:00:00Z", utc(1, 1, 1)),
        ("9999-12-31T23:59:59.999999Z", utc(9999, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_timestamp_shapes_parse_to_the_same_instant_in_utc(text, expected):
    parsed = parse_datetime(text)

    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # A date alone is not an instant: the record goes to the dead letters, not to midnight.
        ("2026-11-20", "date without a time of day"),
        (" 2026-11-20 ", "date without a time of day"),
        # Not the extended format, or not a timestamp at all.
        ("20261120T100000Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10", "not an ISO 8601 timestamp"),
        ("2026-11-20T1000", "not an ISO 8601 timestamp"),
        ("2026-W47-5T10:00:00Z", "not an ISO 8601 timestamp"),
        ("2026-324T10:00:00Z", "not an ISO 8601 timestamp"),
        ("26-11-20T10:00:00Z", "not an ISO 8601 timestamp"),
        ("+02026-11-20T10:00:00Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00.Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00.5Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00.1234567890Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00+5:30", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00+05:3", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00+05:30:00", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00 Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00ZZ", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00Z[Europe/Paris]", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00.123+05:30 trailing", "not an ISO 8601 timestamp"),
        ("2026-11-20_10:00:00Z", "not an ISO 8601 timestamp"),
        ("２０２６-11-20T10:00:00Z", "not an ISO 8601 timestamp"),
        ("2026-11-20T10:00:00.１Z", "not an ISO 8601 timestamp"),
        ("yesterday", "not an ISO 8601 timestamp"),
        ("", "not an ISO 8601 timestamp"),
        # Fields out of range.
        ("2026-13-01T00:00:00Z", "date out of range"),
        ("2026-00-10T00:00:00Z", "date out of range"),
        ("2026-11-31T00:00:00Z", "date out of range"),
        ("2026-02-29T00:00:00Z", "date out of range"),
        ("0000-01-01T00:00:00Z", "date out of range"),
        ("2026-11-20T24:00:00Z", "time of day out of range"),
        ("2026-11-20T10:60:00Z", "time of day out of range"),
        ("2026-11-20T10:00:61Z", "time of day out of range"),
        ("2026-11-20T10:00:00+24:00", "UTC offset out of range"),
        ("2026-11-20T10:00:00+05:60", "UTC offset out of range"),
        ("0001-01-01T00:30:00+01:00", "outside the years 1-9999"),
        ("9999-12-31T23:30:00-01:00", "outside the years 1-9999"),
    ],
)
def test_malformed_timestamps_are_refused_saying_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=reason) as raised:
        parse_datetime(text)

    assert repr(text) in str(raised.value)


def test_the_message_quotes_a_long_value_only_in_part():
    with pytest.raises(ValueError, match=r"\.\.\. is not an ISO 8601 timestamp") as raised:
        parse_datetime("x" * 100_000)

    assert len(str(raised.value)) < 200


def test_a_graph_record_with_a_fraction_and_an_offset_is_placed_at_its_instant():
    record = parse_trace_record(trace("id-1", "bob@contoso.com", "2026-11-20T10:00:00.123+05:30"))

    assert record.received == utc(2026, 11, 20, 4, 30, 0, 123000)
    assert format_datetime(record.received) == "2026-11-20T04:30:00.123000Z"


@pytest.mark.parametrize("received", ["2026-11-20", "2026-11-20T10", "2026-11-20T25:00:00Z"])
def test_a_graph_record_without_a_usable_instant_is_a_record_error(received):
    with pytest.raises(RecordError, match="receivedDateTime"):
        parse_trace_record(trace("id-1", "bob@contoso.com", received))
