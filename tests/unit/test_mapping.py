import re
from datetime import UTC, datetime

import pytest

from connector.errors import RecordError
from connector.ledger import row_id
from connector.mapping import (
    MAX_FIELD_BYTES,
    RowMapper,
    address_domain,
    classify_direction,
    cut_utf8,
    normalise_status,
    parse_datetime,
    parse_trace_record,
)
from connector.schema import load_table_schema
from tests.fakes.memory import trace

LOCAL = ("contoso.com", "fabrikam.com")


class TestStatus:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("delivered", "Delivered"),
            ("Delivered", "Delivered"),
            ("filteredAsSpam", "FilteredAsSpam"),
            ("FILTEREDASSPAM", "FilteredAsSpam"),
            ("gettingStatus", "GettingStatus"),
            ("recalled", "Recalled"),
            ("somethingNew", "SomethingNew"),
        ],
    )
    def test_status_is_normalised_to_pascal_case(self, raw, expected):
        assert normalise_status(raw) == expected


class TestDirection:
    @pytest.mark.parametrize(
        ("sender", "recipient", "expected"),
        [
            ("contoso.com", "fabrikam.com", "Internal"),
            ("contoso.com", "gmail.com", "Outbound"),
            ("gmail.com", "contoso.com", "Inbound"),
            ("gmail.com", "yahoo.com", "External"),
            ("", "contoso.com", "Inbound"),
            ("mail.contoso.com", "gmail.com", "Outbound"),
            ("notcontoso.com", "gmail.com", "External"),
        ],
    )
    def test_direction_from_local_domains(self, sender, recipient, expected):
        assert classify_direction(sender, recipient, LOCAL) == expected


class TestDomainNormalisation:
    """Issue 9 item 11: one domain, whatever its spelling, gives one Direction and one column value."""

    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("bob@contoso.com.", "contoso.com"),
            ("<bob@Contoso.COM.>", "contoso.com"),
            ("bob@bücher.example", "xn--bcher-kva.example"),
            ("bob@BÜCHER.example", "xn--bcher-kva.example"),
            ("bob@XN--BCHER-KVA.example.", "xn--bcher-kva.example"),
            ("bob@bücher.example.", "xn--bcher-kva.example"),
            ("bob@faß.de", "xn--fa-hia.de"),  # IDNA 2003 would make it fass.de, another domain
        ],
    )
    def test_domain_columns_hold_the_lower_case_ascii_form_without_the_trailing_dot(self, address, expected):
        assert address_domain(address) == expected

    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("bob@☃.Example.", "☃.example"),
            ("bob@💩.la.", "💩.la"),
            ("bob@_dmarc.Contoso.com.", "_dmarc.contoso.com"),
            ("bob@XN--ZZ.example.", "xn--zz.example"),
            ("bob@München..de.", "münchen..de"),
        ],
    )
    def test_domain_that_idna_refuses_is_kept_lower_cased_without_the_trailing_dot(self, address, expected):
        assert address_domain(address) == expected

    @pytest.mark.parametrize(
        ("sender", "recipient", "local", "expected"),
        [
            ("contoso.com.", "gmail.com", ("contoso.com",), "Outbound"),
            ("gmail.com", "contoso.com", ("contoso.com.",), "Inbound"),
            ("CONTOSO.COM", "Fabrikam.Com.", ("contoso.com", "FABRIKAM.com"), "Internal"),
            ("bücher.example", "gmail.com", ("xn--bcher-kva.example",), "Outbound"),
            ("xn--bcher-kva.example", "gmail.com", ("bücher.example",), "Outbound"),
            ("gmail.com", "mail.xn--bcher-kva.example", ("bücher.example",), "Inbound"),
            ("Mail.Bücher.Example.", "gmail.com", ("bücher.example",), "Outbound"),
        ],
    )
    def test_direction_does_not_depend_on_how_a_domain_is_spelled(self, sender, recipient, local, expected):
        assert classify_direction(sender, recipient, local) == expected

    def test_sharp_s_domain_matches_its_idna_2008_form_and_not_the_ss_domain(self):
        assert classify_direction("xn--fa-hia.de", "gmail.com", ("faß.de",)) == "Outbound"
        assert classify_direction("fass.de", "gmail.com", ("faß.de",)) == "External"

    def test_row_from_unicode_and_punycode_spellings_of_a_local_domain_is_internal(self):
        raw = trace("id-1", "Eva@XN--BCHER-KVA.example.", "2026-03-10T10:00:00Z", sender="bob@bücher.example")

        row = RowMapper(("Bücher.Example.",)).to_row(
            parse_trace_record(raw), revision=0, previous_status=None
        )

        assert row["Direction"] == "Internal"
        assert row["SenderDomain"] == row["RecipientDomain"] == "xn--bcher-kva.example"
        assert row["SenderAddress"] == "bob@bücher.example"  # the addresses are stored as Graph sent them
        assert row["RecipientAddress"] == "Eva@XN--BCHER-KVA.example."

    def test_row_whose_domain_idna_refuses_is_still_mapped(self):
        raw = trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z", sender="x@☃.Example.")

        row = RowMapper(LOCAL).to_row(parse_trace_record(raw), revision=0, previous_status=None)

        assert row["SenderDomain"] == "☃.example"
        assert row["Direction"] == "Inbound"


class TestParse:
    def test_seven_fractional_digits_and_missing_zone_are_utc(self):
        assert parse_datetime("2022-11-29T05:35:08.2652371") == datetime(
            2022, 11, 29, 5, 35, 8, 265237, tzinfo=UTC
        )

    @pytest.mark.parametrize("field", ["id", "recipientAddress", "receivedDateTime", "status"])
    def test_missing_key_field_is_a_record_error_naming_the_field(self, field):
        raw = trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z")
        del raw[field]

        with pytest.raises(RecordError, match=field):
            parse_trace_record(raw)

    def test_unparseable_date_is_a_record_error_naming_the_record(self):
        raw = trace("id-1", "bob@contoso.com", "yesterday")

        with pytest.raises(RecordError, match=r"id='id-1'.*not an ISO 8601"):
            parse_trace_record(raw)

    def test_non_integer_size_is_a_record_error(self):
        raw = trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z")
        raw["size"] = "big"

        with pytest.raises(RecordError, match="size"):
            parse_trace_record(raw)


class TestRow:
    def test_row_has_exactly_the_schema_columns_and_types(self):
        mapper = RowMapper(LOCAL)
        record = parse_trace_record(
            trace(
                "id-1",
                "Bob@FABRIKAM.COM",
                "2026-03-10T10:00:00.109Z",
                status="filteredAsSpam",
                sender="x@Evil.example",
            )
        )

        row = mapper.to_row(record, revision=0, previous_status=None)

        schema = load_table_schema()
        assert set(row) == set(schema.column_names)
        assert row["TimeGenerated"] == row["Received"] == "2026-03-10T10:00:00.109000Z"
        assert row["Status"] == "FilteredAsSpam"
        assert row["RecipientDomain"] == "fabrikam.com"
        assert row["SenderDomain"] == "evil.example"
        assert row["Direction"] == "Inbound"
        assert row["StatusRevision"] == 0
        assert row["PreviousStatus"] == ""

    def test_null_sender_has_empty_domain_and_keeps_the_address(self):
        record = parse_trace_record(trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z", sender="<>"))

        row = RowMapper(LOCAL).to_row(record, revision=0, previous_status=None)

        assert row["SenderAddress"] == "<>"
        assert row["SenderDomain"] == ""
        assert row["Direction"] == "Inbound"

    def test_null_optional_fields_are_left_out_of_the_row(self):
        raw = trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z")
        raw["subject"] = None
        raw["size"] = None

        row = RowMapper(LOCAL).to_row(parse_trace_record(raw), revision=0, previous_status=None)

        assert "Subject" not in row
        assert "Size" not in row

    def test_revision_row_carries_the_previous_status(self):
        record = parse_trace_record(trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z"))

        row = RowMapper(LOCAL).to_row(record, revision=2, previous_status="Pending")

        assert row["StatusRevision"] == 2
        assert row["PreviousStatus"] == "Pending"


class TestRowId:
    def test_row_id_is_the_digest_of_the_rows_trace_id_recipient_status_and_revision(self):
        record = parse_trace_record(
            trace("id-1", "Bob@Contoso.com", "2026-03-10T10:00:00Z", status="quarantined")
        )

        row = RowMapper(LOCAL).to_row(record, revision=1, previous_status="Pending")

        assert re.fullmatch(r"[0-9a-f]{32}", row["RowId"])
        assert row["RowId"] == row_id(
            row["MessageTraceId"], row["RecipientAddress"], row["Status"], row["StatusRevision"]
        )
        assert row["RowId"] == row_id("id-1", "bob@contoso.com", "Quarantined", 1)

    def test_rows_differing_only_in_recipient_case_or_status_spelling_share_a_row_id(self):
        mapper = RowMapper(LOCAL)
        first = parse_trace_record(
            trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z", status="delivered")
        )
        again = parse_trace_record(
            trace("id-1", "BOB@Contoso.COM", "2026-03-10T10:00:00Z", status="DELIVERED")
        )

        assert (
            mapper.to_row(first, revision=0, previous_status=None)["RowId"]
            == mapper.to_row(again, revision=0, previous_status=None)["RowId"]
        )

    def test_each_revision_and_each_recipient_gets_its_own_row_id(self):
        mapper = RowMapper(LOCAL)
        bob = parse_trace_record(trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z"))
        eve = parse_trace_record(trace("id-1", "eve@contoso.com", "2026-03-10T10:00:00Z"))

        ids = {
            mapper.to_row(bob, revision=0, previous_status=None)["RowId"],
            mapper.to_row(bob, revision=1, previous_status="Pending")["RowId"],
            mapper.to_row(eve, revision=0, previous_status=None)["RowId"],
        }

        assert len(ids) == 3


class TestFieldLimit:
    def test_short_values_are_not_cut(self):
        assert cut_utf8("hello", max_bytes=10) is None

    def test_cut_lands_on_a_character_boundary_below_the_limit(self):
        value = "a" + "€" * 10  # 1 + 30 bytes

        cut = cut_utf8(value, max_bytes=12)

        assert cut == "a" + "€" * 3
        assert len(cut.encode("utf-8")) <= 12

    def test_subject_over_64_kb_is_cut_by_the_connector_and_marked(self):
        raw = trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z", subject="日本" * 20_000)

        row = RowMapper(LOCAL).to_row(parse_trace_record(raw), revision=0, previous_status=None)

        assert len(row["Subject"].encode("utf-8")) <= MAX_FIELD_BYTES
        assert row["Subject"] == ("日本" * 20_000)[: len(row["Subject"])]
        assert row["TruncatedFields"] == "Subject"

    def test_rows_within_limits_have_an_empty_truncation_marker(self):
        row = RowMapper(LOCAL).to_row(
            parse_trace_record(trace("id-1", "bob@contoso.com", "2026-03-10T10:00:00Z")),
            revision=0,
            previous_status=None,
        )

        assert row["TruncatedFields"] == ""
