"""The plain (fast) and checked ways of reading a record agree on every input, hostile ones included.

``parse_trace_record`` reads a plain ``dict`` by a fast path and anything else field by
field; a ``MappingProxyType`` of the same dict takes the checked way, so comparing the
two on many generated records shows the fast path only skips checks whose outcome it
already knows: the same record (row text of the time included) or the same refusal.
"""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest

from connector.errors import RecordError
from connector.ledger import key_state, ledger_key
from connector.mapping import RowMapper, TraceRecord, format_datetime, parse_trace_record
from connector.subjects import SubjectMode, SubjectPolicy

_TIMES = [
    "2026-11-20T12:34:56Z",
    "2026-11-20T12:34:56.1Z",
    "2026-11-20T12:34:56.123Z",
    "2026-11-20T12:34:56.1234567Z",
    "2026-11-20T12:34:56.123456789Z",
    "2026-11-20T23:59:59.9999999Z",
    "2026-11-20T00:00:00.0000000Z",
    "2026-11-20t12:34:56Z",
    "2026-11-20 12:34:56Z",
    "2026-11-20T12:34:56z",
    "2026-11-20T12:34:56.5+02:00",
    "2026-11-20T12:34:56-0530",
    "2026-11-20T12:34:56+01",
    "2026-11-20T12:34:56",
    "2026-11-20T12:34",
    "2026-11-20T12:34:56,25Z",
    "2016-12-31T23:59:60Z",
    "2016-12-31T23:59:60.5Z",
    "2026-11-20T24:00:00Z",
    "2026-11-20T23:60:00Z",
    "2026-02-30T12:00:00Z",
    "2026-13-01T12:00:00Z",
    "0999-01-01T00:00:00Z",
    "0001-01-01T00:00:00.5Z",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59.9999999Z",
    "9999-12-31T23:30:00-01:00",
    "1000-01-01T00:00:00Z",
    "  2026-11-20T12:34:56Z  ",
    "2026-11-20",
    "2026-11-20T12:34:56.Z",
    "2026-11-20T12:34:56.1234567890Z",
    "２０２６-11-20T12:34:56Z",
    "2026-11-20T1a:34:56Z",
    "",
    "   ",
    "Z",
    "garbage",
]
_STATUSES = [
    "Delivered",
    "delivered",
    "DELIVERED",
    " Pending ",
    "filteredAsSpam",
    "somethingNew",
    "",
    "  ",
    "Fäiled",
]
_TEXTS = [None, "", "plain", "x" * 300, "caf\u00e9", "\ud83d lone", "pair \U0001f600", "a\x00b", 42, ["list"]]
_ADDRESSES = [
    "User@Contoso.com",
    "  padded@contoso.com ",
    "<>",
    "no-at-sign",
    "",
    " ",
    "\u00fcser@b\u00fccher.example",
    "lone\udc00@contoso.com",
    "x" * 1025 + "@contoso.com",
    "y" * 1000 + "@contoso.com",
    None,
    7,
]
_SIZES = [None, 0, 1, 2**31 - 1, 2**31, -1, True, 1.5, "12"]


def _record(rng: random.Random) -> dict[str, object]:
    raw: dict[str, object] = {
        "id": rng.choice(["8a1b-2c3d", "  8a1b  ", "", "id-\u00e9", "id\ud800", None, 5, "z" * 1100]),
        "recipientAddress": rng.choice(_ADDRESSES),
        "receivedDateTime": rng.choice([*_TIMES, None, 17]),
        "status": rng.choice([*_STATUSES, None, 3]),
        "senderAddress": rng.choice(_ADDRESSES),
        "messageId": rng.choice(_TEXTS),
        "subject": rng.choice([*_TEXTS, "s" * 200_000, "\u00e9" * 70_000]),
        "size": rng.choice(_SIZES),
        "fromIP": rng.choice(_TEXTS),
        "toIP": rng.choice(_TEXTS),
    }
    for name in list(raw):  # a field missing altogether, now and then
        if rng.random() < 0.08:
            del raw[name]
    return raw


def _read(raw: object) -> TraceRecord | str:
    try:
        return parse_trace_record(raw)  # type: ignore[arg-type]
    except RecordError as err:
        return f"refused: {err}"


def _records(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    plain = {
        "id": "8a1b",
        "recipientAddress": "user@contoso.com",
        "receivedDateTime": "2026-11-20T12:34:56.1234567Z",
        "status": "Delivered",
    }
    # Mostly records that differ from a valid one in one or two fields (the fast path's edges), then anything.
    out = []
    for _ in range(count):
        mixed = _record(rng)
        raw = dict(plain)
        for name in rng.sample(sorted(mixed), k=rng.choice([1, 2, len(mixed)])):
            raw[name] = mixed[name]
        out.append(raw)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_plain_and_checked_reading_give_the_same_record_or_the_same_refusal(seed):
    for raw in _records(3000, seed):
        assert _read(raw) == _read(MappingProxyType(raw)), raw


@pytest.mark.parametrize("when", _TIMES)
def test_every_timestamp_shape_reads_the_same_both_ways_and_its_row_text_is_the_formatted_time(when):
    raw = {"id": "a", "recipientAddress": "u@contoso.com", "receivedDateTime": when, "status": "Delivered"}
    plain, checked = _read(raw), _read(MappingProxyType(raw))
    assert plain == checked
    if isinstance(plain, TraceRecord):
        assert plain.received_text == format_datetime(plain.received)


@pytest.mark.parametrize("mode", [SubjectMode.KEEP, SubjectMode.DROP, SubjectMode.HASH])
def test_rows_of_plainly_and_checkedly_read_records_are_identical_in_content_and_column_order(mode):
    policy = SubjectPolicy(mode=mode, key=b"k" * 32 if mode is SubjectMode.HASH else None)
    mapper = RowMapper(("contoso.com",), subjects=policy)
    for raw in _records(1500, 99):
        plain, checked = _read(raw), _read(MappingProxyType(raw))
        if not isinstance(plain, TraceRecord) or not isinstance(checked, TraceRecord):
            continue
        for revision, previous in ((0, None), (2, "Pending")):
            row = mapper.to_row(plain, revision=revision, previous_status=previous)
            again = mapper.to_row(checked, revision=revision, previous_status=previous)
            assert list(row.items()) == list(again.items())


def test_a_row_id_carried_on_from_the_ledger_keys_hash_state_is_the_row_id_hashed_afresh():
    mapper = RowMapper(("contoso.com",))
    odd = [
        {
            "id": "Id\u00e9",
            "recipientAddress": "\u00dcser@B\u00fccher.example",
            "receivedDateTime": _TIMES[0],
            "status": "Fäiled",
        }
    ]
    for raw in _records(1500, 7) + odd:
        record = _read(raw)
        if not isinstance(record, TraceRecord):
            continue
        state = key_state(record.trace_id, record.recipient)
        assert state.hexdigest() == ledger_key(record.trace_id, record.recipient)
        for revision, previous in ((0, None), (3, "Pending")):
            fresh = mapper.to_row(record, revision=revision, previous_status=previous)
            carried = mapper.to_row(record, revision=revision, previous_status=previous, key_state=state)
            assert list(carried.items()) == list(fresh.items())
        assert state.hexdigest() == ledger_key(
            record.trace_id, record.recipient
        )  # the state is left as it was
