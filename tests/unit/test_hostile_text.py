"""Hostile text in Graph records: lone surrogates, huge fields, out-of-range sizes. Pure."""

import json

import pytest

from connector.deadletter import DeadLetter
from connector.errors import RecordError
from connector.ledger import ledger_key
from connector.mapping import MAX_SIZE, RowMapper, parse_trace_record, replace_lone_surrogates
from connector.windows import Window
from tests.fakes.memory import trace
from tests.unit.test_checkpoint import T0

AT = "2026-03-10T10:00:00Z"


@pytest.mark.parametrize("field", ["subject", "senderAddress", "fromIP", "toIP", "messageId", "status"])
def test_lone_surrogate_in_a_non_key_field_becomes_the_replacement_character(field):
    raw = trace("id-1", "bob@contoso.com", AT)
    raw[field] = "de\ud83dlivered"

    record = parse_trace_record(raw)

    row = RowMapper(("contoso.com",)).to_row(record, revision=0, previous_status=None)
    assert "\ufffd" in json.dumps(row, ensure_ascii=False)
    json.dumps(row, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("field", ["id", "recipientAddress"])
def test_lone_surrogate_in_a_key_field_is_a_record_error_saying_so(field):
    raw = trace("id-1", "bob@contoso.com", AT)
    raw[field] = "x\udc00y@contoso.com"

    with pytest.raises(RecordError, match="unpaired UTF-16 surrogate") as caught:
        parse_trace_record(raw)
    str(caught.value).encode("utf-8")  # the message itself is loggable


def test_paired_surrogates_decoded_by_json_are_kept_as_the_emoji():
    raw = json.loads('{"subject": "hi \\ud83d\\ude00"}')
    assert replace_lone_surrogates(raw["subject"]) == "hi \U0001f600"


def test_200_kb_subject_with_a_lone_surrogate_is_cut_not_crashed():
    raw = trace("id-1", "bob@contoso.com", AT, subject="\ud83d" + "é" * 100_000)

    row = RowMapper(("contoso.com",)).to_row(parse_trace_record(raw), revision=0, previous_status=None)

    assert row["TruncatedFields"] == "Subject"
    assert len(str(row["Subject"]).encode("utf-8")) <= 64_000


@pytest.mark.parametrize("size", [2**70, 2**31, -1])
def test_size_outside_graphs_int32_byte_count_is_a_record_error(size):
    raw = trace("id-1", "bob@contoso.com", AT, size=size)

    with pytest.raises(RecordError, match="Int32"):
        parse_trace_record(raw)


def test_largest_int32_size_is_stored():
    assert parse_trace_record(trace("id-1", "bob@contoso.com", AT, size=MAX_SIZE)).size == MAX_SIZE


def test_error_for_a_huge_bad_value_is_bounded():
    raw = trace("id-1", "bob@contoso.com", "x" * 200_000)

    with pytest.raises(RecordError) as caught:
        parse_trace_record(raw)

    assert len(str(caught.value)) < 1_000


def test_dead_letter_of_any_text_has_a_stable_name_and_an_ascii_body():
    record = {"id": "a\ud83d", "subject": "\x00\x1b[31m\u202e", "size": 2**70}
    letter = DeadLetter(feed="live", reason="r", record=record, window=Window(T0, T0), seen_at=T0)

    assert (
        letter.name
        == DeadLetter(feed="live", reason="r", record=dict(record), window=Window(T0, T0), seen_at=T0).name
    )
    assert json.loads(letter.encode())["record"] == record


def test_dead_letter_name_of_an_ordinary_record_is_unchanged_by_surrogate_support():
    import hashlib

    record = {"id": "mail-1", "subject": "Grüße"}
    letter = DeadLetter(feed="live", reason="r", record=record, window=Window(T0, T0), seen_at=T0)
    material = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")

    assert letter.name == f"deadletter/live/{hashlib.sha256(material).hexdigest()[:32]}.json"


def test_ledger_key_never_raises_and_is_unchanged_for_encodable_keys():
    assert ledger_key("a\ud83d", "bob@contoso.com") != ledger_key("a", "bob@contoso.com")
    assert ledger_key("mail-1", "Bob@Contoso.com") == ledger_key("mail-1", "bob@contoso.com")
