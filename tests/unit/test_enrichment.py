"""Enrichment, pure: rows from detail events, RowId stability, hostile text, the ids file, the plan, the pending document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from connector.detail import TraceEvent, parse_events
from connector.enrichment import (
    MAX_DESCRIPTION_BYTES,
    MAX_PROPERTIES,
    MAX_PROPERTY_VALUE_BYTES,
    PendingDetail,
    PendingPair,
    Target,
    detail_row_id,
    detail_rows,
    parse_ids_file,
    parse_statuses,
    plan,
    settle,
)
from connector.schema import load_detail_schema
from connector.subjects import SubjectMode, SubjectPolicy

TRACE = "7e3b2b2e-1b5e-4b17-80cc-2af6c1d9a3b1"
OTHER = "0a1b2c3d-0000-4000-8000-000000000001"
FETCHED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

RECORDS = [
    {
        "dateTime": "2026-11-25T10:30:07Z",
        "event": "Quarantine",
        "action": "Quarantine",
        "description": "The message was quarantined.",
        "data": '<root><MEP Name="FilteringAgent" String="SpamFilter"/></root>',
    },
    {
        "dateTime": "2026-11-25T10:30:05Z",
        "event": "Receive",
        "action": "",
        "description": "Message received by: MN2PR00MB0670.namprd00.prod.outlook.com",
        "data": '<root><MEP Name="ReturnPath" String="a@fabrikam.com"/><MEP Name="ClientIP" String="203.0.113.25"/></root>',
    },
]


def rows_of(records, target=None, **kwargs):
    return detail_rows(
        target or Target(TRACE, "Robert@Contoso.com", "status:Quarantined"),
        parse_events(records),
        fetched=FETCHED,
        **kwargs,
    )


class TestDetailRows:
    def test_each_event_becomes_one_row_with_exactly_the_schema_columns(self):
        rows = rows_of(RECORDS, source_tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47")

        assert [set(row) for row in rows] == [set(load_detail_schema().column_names)] * 2
        first, second = rows
        assert (first["Event"], first["EventIndex"], first["EventTime"]) == (
            "Receive",
            0,
            "2026-11-25T10:30:05.000000Z",
        )
        assert first["TimeGenerated"] == first["EventTime"]
        assert first["Data"] == {"ReturnPath": "a@fabrikam.com", "ClientIP": "203.0.113.25"}
        assert (second["Event"], second["Action"], second["EventIndex"]) == ("Quarantine", "Quarantine", 1)
        assert second["Reason"] == "status:Quarantined"
        assert second["FetchedTime"].startswith("2026-11-25T12:00:00")
        assert second["SourceTenantId"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"
        assert second["MessageTraceId"] == TRACE

    def test_an_event_without_a_time_is_timed_by_the_fetch(self):
        (row,) = rows_of([{"event": "Deliver", "dateTime": "not a time"}])

        assert row["EventTime"] is None
        assert row["TimeGenerated"].startswith("2026-11-25T12:00:00")

    def test_the_same_event_fetched_again_has_the_same_row_id_whatever_the_recipient_s_case(self):
        once = rows_of(RECORDS)
        again = detail_rows(
            Target(TRACE, "robert@contoso.com"),
            parse_events(list(reversed(RECORDS))),
            fetched=FETCHED + timedelta(days=1),
        )

        assert [row["RowId"] for row in once] == [row["RowId"] for row in again]
        assert len({row["RowId"] for row in once}) == 2

    def test_row_ids_differ_by_event_index_name_time_and_pair(self):
        at = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
        ids = {
            detail_row_id(TRACE, "a@contoso.com", 0, "Receive", at),
            detail_row_id(TRACE, "a@contoso.com", 1, "Receive", at),
            detail_row_id(TRACE, "a@contoso.com", 0, "Deliver", at),
            detail_row_id(TRACE, "a@contoso.com", 0, "Receive", at + timedelta(seconds=1)),
            detail_row_id(TRACE, "a@contoso.com", 0, "Receive", None),
            detail_row_id(TRACE, "b@contoso.com", 0, "Receive", at),
            detail_row_id(OTHER, "a@contoso.com", 0, "Receive", at),
        }

        assert len(ids) == 7
        assert all(len(row_id) == 32 for row_id in ids)

    def test_hostile_text_is_stored_as_valid_unicode_and_cut_below_the_field_limit(self):
        hostile = {
            "dateTime": "2026-11-25T10:30:05Z",
            "event": "Receive\ud800",
            "action": "\udfff",
            "description": "é" * 100_000 + "\ud83d",
            "data": "".join(f'<MEP Name="P{i}" String="{"x" * 5000}"/>' for i in range(200))
            + '<MEP Name="Lone\ud800" String="\udc00"/>',
        }

        (row,) = rows_of([hostile])

        text = json.dumps(row, ensure_ascii=False)
        text.encode("utf-8")  # no lone surrogate left anywhere
        assert row["Event"] == "Receive\ufffd"
        assert len(row["Description"].encode("utf-8")) <= MAX_DESCRIPTION_BYTES
        assert len(row["Data"]) == MAX_PROPERTIES
        assert all(len(value.encode()) <= MAX_PROPERTY_VALUE_BYTES for value in row["Data"].values())
        assert len(text.encode("utf-8")) < 64_000 + MAX_DESCRIPTION_BYTES + 10_000

    def test_a_subject_property_is_hashed_or_emptied_under_subject_mode_and_kept_otherwise(self):
        record = {
            "event": "Receive",
            "data": '<MEP Name="MessageSubject" String="Your invoice"/><MEP Name="ClientIP" String="1.2.3.4"/>',
        }
        key = b"k" * 32

        (kept,) = rows_of([record])
        (hashed,) = rows_of([record], subjects=SubjectPolicy(SubjectMode.HASH, key))
        (dropped,) = rows_of([record], subjects=SubjectPolicy(SubjectMode.DROP))

        assert kept["Data"]["MessageSubject"] == "Your invoice"
        assert hashed["Data"]["MessageSubject"] == SubjectPolicy(SubjectMode.HASH, key).digest("Your invoice")
        assert dropped["Data"] == {"MessageSubject": "", "ClientIP": "1.2.3.4"}


class TestIdsFile:
    def test_lines_of_trace_id_and_optional_recipient_with_comments_and_blanks(self):
        text = f"# from the playbook\n{TRACE.upper()},robert@contoso.com\n\n{OTHER}\n"

        assert parse_ids_file(text) == [(TRACE, "robert@contoso.com"), (OTHER, None)]

    def test_a_csv_with_a_header_picks_its_columns_and_ignores_the_others(self):
        text = f"\ufeffStatus,RecipientAddress,MessageTraceId\nQuarantined,a@contoso.com,{TRACE}\nFailed,,{OTHER}\n"

        assert parse_ids_file(text) == [(TRACE, "a@contoso.com"), (OTHER, None)]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                f"{TRACE},a@contoso.com\nnot-a-guid,a@contoso.com\n",
                "--ids-file line 2: must be a message trace id",
            ),
            (f"{TRACE},no-at-sign\n", "--ids-file line 1: must be one recipient address"),
            (
                f"{TRACE},a@contoso.com,extra\n",
                "--ids-file line 1: expected 'trace id' or 'trace id,recipient'",
            ),
            (f"{TRACE},a\x1b[2J@contoso.com\n", "--ids-file line 1: must be one recipient address"),
        ],
    )
    def test_the_first_bad_line_is_named(self, text, expected):
        with pytest.raises(ValueError, match="^" + expected.replace("[", r"\[").replace("(", r"\(")):
            parse_ids_file(text)


class TestStatusesAndPlan:
    def test_statuses_are_normalised_and_an_unknown_one_is_refused(self):
        assert parse_statuses("quarantined, FAILED,Quarantined") == ("Quarantined", "Failed")
        assert parse_statuses("") == ()
        with pytest.raises(ValueError, match="--status: 'Lost' is not one of"):
            parse_statuses("Lost")

    def test_plan_skips_enriched_pairs_counts_each_pair_once_and_keeps_to_the_cap(self):
        targets = [
            Target(TRACE, "a@contoso.com"),
            Target(TRACE, "A@CONTOSO.COM"),
            Target(TRACE, "b@contoso.com"),
            Target(OTHER, "a@contoso.com"),
            Target(OTHER, "c@contoso.com"),
        ]

        chosen = plan(targets, {Target(TRACE, "b@contoso.com").key}, max_requests=2)

        assert [(t.trace_id, t.recipient) for t in chosen.todo] == [
            (TRACE, "a@contoso.com"),
            (OTHER, "a@contoso.com"),
        ]
        assert (chosen.already, chosen.over_cap) == (1, 1)


class TestPendingDocument:
    def pair(self, key, created, sent):
        return PendingPair(
            key=key, row_ids=("r1", "r2"), created=created, sent=sent, oldest=created - timedelta(days=3)
        )

    def test_round_trips_and_keeps_fields_it_does_not_know(self):
        document = PendingDetail().with_pair(self.pair("k1", FETCHED, False)).marked_sent("k1")
        stored = json.loads(document.encode())
        stored["cursor"] = "kept"

        again = PendingDetail.decode(json.dumps(stored).encode())

        assert again.pairs == document.pairs
        assert again.pairs[0].sent is True
        assert json.loads(again.encode())["cursor"] == "kept"

    def test_a_refused_pair_leaves_the_pending_pairs_round_trips_and_is_forgotten_after_its_memory(self):
        document = (
            PendingDetail()
            .with_pair(self.pair("k1", FETCHED, False))
            .with_pair(self.pair("k2", FETCHED, False))
        )

        refused = document.with_refused("k1", FETCHED)
        again = PendingDetail.decode(refused.encode())

        assert [pair.key for pair in again.pairs] == ["k2"]
        assert again.refused_keys() == {"k1"}
        assert again == refused
        assert again.forgetting_refusals_before(FETCHED).refused_keys() == {"k1"}
        assert again.forgetting_refusals_before(FETCHED + timedelta(seconds=1)).refused_keys() == frozenset()

    def test_a_document_written_before_refusals_existed_reads_with_none(self):
        old = {
            "version": 1,
            "pairs": [
                json.loads(PendingDetail().with_pair(self.pair("k", FETCHED, True)).encode())["pairs"][0]
            ],
        }

        document = PendingDetail.decode(json.dumps(old).encode())

        assert document.refused == ()
        assert "refused" not in json.loads(document.encode())  # what the earlier version wrote, unchanged

    def test_the_plan_skips_refused_pairs_and_counts_them_apart_from_enriched_ones(self):
        targets = [
            Target(TRACE, "a@contoso.com"),
            Target(TRACE, "b@contoso.com"),
            Target(OTHER, "a@contoso.com"),
        ]
        refused = {targets[0].key}

        chosen = plan(targets, {targets[1].key}, 10, refused)

        assert [(t.trace_id, t.recipient) for t in chosen.todo] == [(OTHER, "a@contoso.com")]
        assert (chosen.already, chosen.refused_earlier, chosen.over_cap) == (1, 1, 0)

    def test_a_malformed_document_is_refused_with_what_is_wrong(self):
        with pytest.raises(ValueError, match="enrich document is malformed"):
            PendingDetail.decode(b'{"pairs": [{"key": "k"}]}')

    def test_settle_forgets_old_accepted_uploads_verifies_old_unknown_ones_and_waits_for_young_ones(self):
        delay = timedelta(minutes=10)
        document = PendingDetail(
            pairs=(
                self.pair("old-sent", FETCHED - timedelta(minutes=11), True),
                self.pair("young-sent", FETCHED - timedelta(minutes=1), True),
                self.pair("old-unknown", FETCHED - timedelta(minutes=30), False),
                self.pair("young-unknown", FETCHED - timedelta(minutes=4), False),
            )
        )

        settlement = settle(document, FETCHED, delay)

        assert settlement.visible == ("old-sent",)
        assert settlement.recent == {"young-sent"}
        assert [pair.key for pair in settlement.to_verify] == ["old-unknown"]
        assert settlement.wait_until == FETCHED + timedelta(minutes=6)

    def test_an_empty_document_settles_to_nothing(self):
        settlement = settle(PendingDetail(), FETCHED, timedelta(minutes=10))

        assert (settlement.visible, settlement.to_verify, settlement.wait_until, settlement.recent) == (
            (),
            (),
            None,
            frozenset(),
        )


def test_trace_event_order_is_kept_from_parse_events():
    events = parse_events(RECORDS)

    assert isinstance(events[0], TraceEvent)
    assert [e.event for e in events] == ["Receive", "Quarantine"]
