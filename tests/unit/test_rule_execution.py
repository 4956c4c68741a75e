"""The analytic rules' and the MessageTrace parser's own KQL, executed on rows the connector would write.

Why: a rule that parses can still never fire, or fire on every run; only running it
shows which. Each rule's query is read from its YAML under ``infra/sentinel/Analytic
Rules/`` and run by duckdb-kql (a KQL-to-DuckDB translator) over:

* normal traffic: the simulator's generator (``connector.simulator.traffic``), mapped
  to rows by the connector's own ``RowMapper``, 13 days of it, arriving 7 minutes
  after receipt, as message trace does;
* planted incidents on top (exfiltration, a campaign, a look-alike sender, ...), and
  the same incidents arriving as a backfill or in an earlier run.

Two things differ from Log Analytics, both made explicit here: ``ingestion_time()``,
which duckdb-kql cannot provide, is the only text replaced (by the fixture column
``IngestionTime``); and ``_GetWatchlist`` is a stored function over a fixture table.
The clock is pinned (``query_now``), so every figure is deterministic. Every rule
executes here; none is only validated. duckdb-kql takes a stored function's arguments
by position only, so the parser tests call ``MessageTrace(start, end, history)``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb_kql
import pytest
import yaml

from connector.lookalikes_command import generate_csv
from connector.mapping import RowMapper, parse_trace_record
from connector.simulator.traffic import generate_traffic
from tests import kql

RULES = kql.SENTINEL / "Analytic Rules"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LOCAL = ("contoso.com", "fabrikam.com")
ARRIVAL_DELAY = timedelta(minutes=7)  # message trace publishes 5-10 minutes late
# Log Analytics replaces a TimeGenerated older than this with the arrival time.
TIME_GENERATED_LIMIT = timedelta(days=2)
_SQL_TYPES = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMP",
    "long": "BIGINT",
    "int": "INTEGER",
    "real": "DOUBLE",
}


def rule_query(name: str) -> str:
    """The rule's query as deployed, with ``ingestion_time()`` read from the fixture column."""
    document = yaml.safe_load((RULES / f"{name}.yaml").read_text(encoding="utf-8"))
    query: str = document["query"]
    assert "ingestion_time()" in query, f"{name}: judged without ingestion_time()"
    return query.replace("ingestion_time()", "IngestionTime")


@dataclass
class Mail:
    """One message to its recipients, as Graph would list it, and when its rows arrive."""

    sender: str
    recipients: list[str]
    received: datetime
    arrived: datetime | None = None
    subject: str = "Quarterly report"
    size: int = 40_000
    status: str = "delivered"
    from_ip: str = "203.0.113.7"
    to_ip: str = ""
    trace_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def graph_records(self, index: int) -> Iterator[dict[str, Any]]:
        trace_id = self.trace_id or f"00000000-0000-4000-8000-{index:012d}"
        for recipient in self.recipients:
            yield {
                "id": trace_id,
                "senderAddress": self.sender,
                "recipientAddress": recipient,
                "messageId": f"<{trace_id}@mail.example>",
                "receivedDateTime": self.received.isoformat().replace("+00:00", "Z"),
                "subject": self.subject,
                "size": self.size,
                "fromIP": self.from_ip,
                "toIP": self.to_ip,
                "status": self.status,
            }


def to_rows(records: Iterable[Mapping[str, Any]], arrived: datetime | None = None) -> list[dict[str, Any]]:
    """Table rows the connector writes for Graph records (first revision), with arrival times."""
    mapper = RowMapper(LOCAL)
    rows = []
    for raw in records:
        row = mapper.to_row(parse_trace_record(raw), revision=0, previous_status=None)
        received = datetime.fromisoformat(str(row["Received"]).replace("Z", "+00:00"))
        ingested = arrived or received + ARRIVAL_DELAY
        if ingested > NOW:
            continue  # not in the workspace yet
        row["Received"] = received
        row["TimeGenerated"] = received if ingested - received <= TIME_GENERATED_LIMIT else ingested
        row["IngestionTime"] = ingested
        rows.append(row)
    return rows


def mails_to_rows(mails: Iterable[Mail]) -> list[dict[str, Any]]:
    rows = []
    for index, mail in enumerate(mails, start=1):
        rows.extend(to_rows(mail.graph_records(index), mail.arrived))
    return rows


@pytest.fixture(scope="module")
def normal_rows() -> list[dict[str, Any]]:
    """13 days and 3 hours of the simulator's traffic for two local domains."""
    records = generate_traffic(
        NOW - timedelta(days=13, hours=3), NOW, messages=3_000, local_domains=LOCAL, seed=11
    )
    return to_rows(records)


class Workspace:
    """A table (EmailEvents_CL by default) as the workspace holds it at one instant, and the look-alike watchlist.

    All rows live in ``AllRows``; before each run the table becomes a view of those that
    had arrived by the run's instant, so a run "an hour ago" does not see rows that
    arrive later. Loaded through a JSON file: DuckDB inserts row by row slowly. Columns
    come from the table's schema file.
    """

    def __init__(
        self,
        rows: Iterable[Mapping[str, Any]],
        lookalikes: Iterable[tuple[str, str, str]] = (),
        table: str = "EmailEvents_CL",
    ) -> None:
        self.con = duckdb_kql.connect()
        self.table = table
        columns = {**kql.tables()[table], "IngestionTime": "datetime"}
        self.columns = {name: _SQL_TYPES[kind] for name, kind in columns.items() if kind in _SQL_TYPES}
        ddl = ", ".join(f'"{name}" {kind}' for name, kind in self.columns.items())
        self.con.sql(f"CREATE TABLE AllRows ({ddl})")
        self.add(rows)
        self.con.sql(
            "CREATE TABLE LookalikeWatchlist (SearchKey VARCHAR, LookalikeDomain VARCHAR, "
            "OriginalDomain VARCHAR, Fuzzer VARCHAR)"
        )
        for lookalike, original, fuzzer in lookalikes:
            self.con.execute(
                "INSERT INTO LookalikeWatchlist VALUES (?, ?, ?, ?)", (lookalike, lookalike, original, fuzzer)
            )

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        lines = [json.dumps({name: _plain(row.get(name)) for name in self.columns}) for row in rows]
        if not lines:
            return
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as file:
            file.write("\n".join(lines))
        try:
            spec = ", ".join(f"'{name}': '{kind}'" for name, kind in self.columns.items())
            # Column names come from the schema file and the path from tempfile: no outside text.
            self.con.sql(
                f"INSERT INTO AllRows SELECT * FROM read_json('{file.name}', format = 'newline_delimited', "  # noqa: S608
                f"columns = {{{spec}}})"
            )
        finally:
            Path(file.name).unlink()

    def run(self, rule: str, at: datetime = NOW) -> list[dict[str, Any]]:
        # A view takes no bound parameter; the value is a datetime's isoformat, no outside text.
        view = f"CREATE OR REPLACE VIEW {self.table} AS SELECT * FROM AllRows WHERE IngestionTime <= '{_plain(at)}'"  # noqa: S608
        self.con.execute(view)
        relation = duckdb_kql.query(
            self.con,
            rule_query(rule),
            query_now=at,
            functions=["function _GetWatchlist(watchlistAlias:string) { LookalikeWatchlist }"],
        )
        names = [column[0] for column in relation.description]
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]


def _plain(value: Any) -> Any:
    """DuckDB TIMESTAMP holds UTC without a zone."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def as_list(value: Any) -> list[Any]:
    """A dynamic array as duckdb-kql returns it (JSON text) or as a list."""
    return list(json.loads(value)) if isinstance(value, str) else list(value)


def _externals(count: int, domain: str = "files-drop.example") -> list[str]:
    return [f"box{i}@{domain}" for i in range(count)]


def _locals(count: int) -> list[str]:
    return [f"user{i}@contoso.com" for i in range(count)]


ALL_RULES = sorted(path.stem for path in RULES.glob("*.yaml"))


def test_every_rule_is_executed_here():
    executed = {
        "OutboundVolumeAboveBaseline",
        "LargeOutboundToExternal",
        "ExternalSenderCampaign",
        "InboundFromLookalikeDomain",
        "DeliveryFailureSpike",
        "NewSenderDomainToManyUsers",
        "ConnectorHealth",
    }

    assert set(ALL_RULES) == executed


@pytest.mark.parametrize(
    "rule",
    [
        "OutboundVolumeAboveBaseline",
        "ExternalSenderCampaign",
        "InboundFromLookalikeDomain",
        "DeliveryFailureSpike",
        "NewSenderDomainToManyUsers",
    ],
)
def test_rule_stays_quiet_on_normal_traffic(rule, normal_rows):
    workspace = Workspace(normal_rows, lookalikes=[("c0ntoso.com", "contoso.com", "homoglyph")])

    for hour in range(6):  # six consecutive hourly runs
        assert workspace.run(rule, NOW - timedelta(hours=hour)) == [], f"{rule} fired {hour} h ago"


def test_large_outbound_alerts_on_exactly_the_external_messages_over_the_limit(normal_rows):
    limit = 10 * 1024 * 1024
    arrived_in_run = [r for r in normal_rows if r["IngestionTime"] > NOW - timedelta(hours=1)]
    expected = {
        (str(r["SenderAddress"]).lower(), r["RecipientDomain"])
        for r in arrived_in_run
        if r["Direction"] == "Outbound" and int(r["Size"]) > limit
    }
    planted = Mail(
        "Adele.Vance@contoso.com", ["drop@files-drop.example"], NOW - timedelta(minutes=20), size=25 << 20
    )

    found = Workspace([*normal_rows, *mails_to_rows([planted])]).run("LargeOutboundToExternal")

    assert {(row["Sender"], row["RecipientDomain"]) for row in found} == expected | {
        ("adele.vance@contoso.com", "files-drop.example")
    }


def test_large_outbound_ignores_an_internal_or_inbound_large_message_and_a_backfill():
    mails = [
        Mail("adele.vance@contoso.com", ["lee.gu@fabrikam.com"], NOW - timedelta(minutes=20), size=30 << 20),
        Mail(
            "someone@files-drop.example", ["lee.gu@contoso.com"], NOW - timedelta(minutes=20), size=30 << 20
        ),
        # a backfill: five-day-old mail arriving now
        Mail(
            "adele.vance@contoso.com",
            ["drop@files-drop.example"],
            NOW - timedelta(days=5),
            arrived=NOW - timedelta(minutes=5),
            size=30 << 20,
        ),
    ]

    assert Workspace(mails_to_rows(mails)).run("LargeOutboundToExternal") == []


def _exfiltration(received: datetime, arrived: datetime | None = None, count: int = 120) -> list[Mail]:
    return [
        Mail(
            "adele.vance@contoso.com",
            [f"box{i}@files-drop.example"],
            received + timedelta(seconds=i * 10),
            arrived=arrived,
            to_ip="198.51.100.4",
        )
        for i in range(count)
    ]


def test_outbound_volume_alerts_when_a_sender_mails_out_far_above_its_baseline(normal_rows):
    planted = mails_to_rows(_exfiltration(NOW - timedelta(minutes=40)))

    (alert,) = Workspace([*normal_rows, *planted]).run("OutboundVolumeAboveBaseline")

    assert alert["Sender"] == "adele.vance@contoso.com"
    assert alert["Messages"] >= 100
    assert alert["Messages"] > alert["Threshold"]
    assert alert["TopRecipientDomain"] == "files-drop.example"


def test_outbound_volume_alerts_once_not_again_in_the_next_run(normal_rows):
    planted = mails_to_rows(_exfiltration(NOW - timedelta(minutes=40)))
    workspace = Workspace([*normal_rows, *planted])

    assert len(workspace.run("OutboundVolumeAboveBaseline")) == 1
    assert workspace.run("OutboundVolumeAboveBaseline", NOW + timedelta(hours=1)) == []


def test_outbound_volume_does_not_page_for_a_backfill_of_old_mail(normal_rows):
    backfill = mails_to_rows(_exfiltration(NOW - timedelta(days=6), arrived=NOW - timedelta(minutes=10)))

    assert Workspace([*normal_rows, *backfill]).run("OutboundVolumeAboveBaseline") == []


def test_outbound_volume_of_a_bulk_sender_who_mails_that_much_every_working_hour_stays_quiet(normal_rows):
    habit = [
        mail
        for day in range(1, 13)
        for hour in range(8)
        for mail in _exfiltration(NOW - timedelta(days=day, hours=hour, minutes=40), count=120)
    ]
    today = _exfiltration(NOW - timedelta(minutes=40), count=120)

    assert (
        Workspace([*normal_rows, *mails_to_rows([*habit, *today])]).run("OutboundVolumeAboveBaseline") == []
    )


def _campaign(count: int, received: datetime, arrived: datetime | None = None, start: int = 0) -> list[Mail]:
    return [
        Mail(
            "promo@deals-today.example",
            [f"user{start + i}@contoso.com"],
            received + timedelta(seconds=i * 20),
            arrived=arrived,
            subject="  Your invoice is READY ",
            status="delivered" if i % 3 else "quarantined",
        )
        for i in range(count)
    ]


def test_campaign_alerts_with_its_recipients_and_their_statuses(normal_rows):
    planted = mails_to_rows(_campaign(25, NOW - timedelta(minutes=50)))

    (alert,) = Workspace([*normal_rows, *planted]).run("ExternalSenderCampaign")

    assert (alert["Sender"], alert["NormalizedSubject"], alert["Recipients"]) == (
        "promo@deals-today.example",
        "your invoice is ready",
        25,
    )
    assert (alert["Delivered"], alert["Quarantined"]) == (16, 9)


def test_campaign_split_over_two_runs_alerts_in_the_run_that_crosses_the_threshold():
    hour = NOW.replace(minute=0) - timedelta(hours=1)
    earlier = _campaign(15, hour + timedelta(minutes=1), arrived=NOW - timedelta(minutes=80))
    later = _campaign(10, hour + timedelta(minutes=20), arrived=NOW - timedelta(minutes=10), start=15)
    workspace = Workspace(mails_to_rows([*earlier, *later]))

    assert workspace.run("ExternalSenderCampaign", NOW - timedelta(hours=1)) == []
    assert [a["Recipients"] for a in workspace.run("ExternalSenderCampaign")] == [25]
    assert workspace.run("ExternalSenderCampaign", NOW + timedelta(hours=1)) == []


def test_campaign_that_already_alerted_does_not_alert_again_when_more_recipients_arrive():
    hour = NOW.replace(minute=0) - timedelta(hours=1)
    first = _campaign(25, hour + timedelta(minutes=1), arrived=NOW - timedelta(minutes=80))
    more = _campaign(5, hour + timedelta(minutes=30), arrived=NOW - timedelta(minutes=10), start=25)
    workspace = Workspace(mails_to_rows([*first, *more]))

    assert [a["Recipients"] for a in workspace.run("ExternalSenderCampaign", NOW - timedelta(hours=1))] == [
        25
    ]
    assert workspace.run("ExternalSenderCampaign") == []


def test_campaign_below_the_threshold_or_from_a_local_sender_stays_quiet():
    few = _campaign(19, NOW - timedelta(minutes=50))
    internal = [
        Mail("hr@contoso.com", [f"user{i}@contoso.com"], NOW - timedelta(minutes=50), subject="All hands")
        for i in range(40)
    ]

    assert Workspace(mails_to_rows([*few, *internal])).run("ExternalSenderCampaign") == []


def test_lookalike_sender_alerts_with_who_received_it(normal_rows):
    planted = Mail(
        "ceo@C0ntoso.com", ["lee.gu@contoso.com", "Megan.Bowen@contoso.com"], NOW - timedelta(minutes=30)
    )
    workspace = Workspace(
        [*normal_rows, *mails_to_rows([planted])], lookalikes=[("c0ntoso.com", "contoso.com", "homoglyph")]
    )

    (alert,) = workspace.run("InboundFromLookalikeDomain")

    assert (alert["Sender"], alert["SenderDomain"], alert["ImitatedDomain"]) == (
        "ceo@c0ntoso.com",
        "c0ntoso.com",
        "contoso.com",
    )
    assert sorted(as_list(alert["RecipientList"])) == ["lee.gu@contoso.com", "megan.bowen@contoso.com"]
    assert alert["Delivered"] == 2


def test_lookalike_rule_fires_on_a_domain_from_the_generated_watchlist(normal_rows):
    """The watchlist `python -m connector lookalikes` writes is what the rule joins on."""
    csv_text, _ = generate_csv(["contoso.com"], unicode_homoglyphs=False)
    entries = [tuple(line.split(",")) for line in csv_text.splitlines()[1:]]
    lookalike = next(domain for domain, _, fuzzer in entries if fuzzer == "bitsquatting")
    planted = Mail(f"billing@{lookalike}", ["lee.gu@contoso.com"], NOW - timedelta(minutes=30))
    workspace = Workspace([*normal_rows, *mails_to_rows([planted])], lookalikes=entries)

    found = workspace.run("InboundFromLookalikeDomain")

    assert [(a["SenderDomain"], a["ImitatedDomain"]) for a in found] == [(lookalike, "contoso.com")]


def test_quarantine_spike_alerts_above_the_baseline(normal_rows):
    spike = [
        Mail(
            f"sender{i}@bulk-mailer.example",
            ["lee.gu@contoso.com"],
            NOW - timedelta(minutes=45),
            status="quarantined",
        )
        for i in range(60)
    ]

    found = Workspace([*normal_rows, *mails_to_rows(spike)]).run("DeliveryFailureSpike")

    assert [(a["Status"], a["TopSenderDomain"]) for a in found] == [("Quarantined", "bulk-mailer.example")]
    assert found[0]["Messages"] >= 60


def test_new_sender_domain_reaching_many_users_alerts_but_a_known_one_does_not(normal_rows):
    new = [Mail("hello@fresh-start.example", _locals(12), NOW - timedelta(minutes=30))]
    known = [
        Mail("news@old-friend.example", ["lee.gu@contoso.com"], NOW - timedelta(days=5)),
        Mail("news@old-friend.example", _locals(12), NOW - timedelta(minutes=30)),
    ]

    found = Workspace([*normal_rows, *mails_to_rows([*new, *known])]).run("NewSenderDomainToManyUsers")

    assert [(a["SenderDomain"], a["Recipients"]) for a in found] == [("fresh-start.example", 12)]


def test_new_sender_domain_alerts_once_and_not_for_a_backfill(normal_rows):
    new = [Mail("hello@fresh-start.example", _locals(12), NOW - timedelta(minutes=30))]
    backfill = [
        # received within the rule's day, but 20 hours late: a backfill
        Mail(
            "old@backfilled.example",
            _locals(12),
            NOW - timedelta(hours=20),
            arrived=NOW - timedelta(minutes=5),
        )
    ]
    workspace = Workspace([*normal_rows, *mails_to_rows([*new, *backfill])])

    assert [a["SenderDomain"] for a in workspace.run("NewSenderDomainToManyUsers")] == ["fresh-start.example"]
    assert workspace.run("NewSenderDomainToManyUsers", NOW + timedelta(hours=1)) == []


def test_campaign_does_not_page_for_a_backfill_of_old_mail(normal_rows):
    # received three and a half hours ago, inside the rule's period, arriving only now
    backfill = _campaign(30, NOW - timedelta(hours=3, minutes=30), arrived=NOW - timedelta(minutes=5))

    assert Workspace([*normal_rows, *mails_to_rows(backfill)]).run("ExternalSenderCampaign") == []


def test_rules_read_the_columns_they_name_from_the_schema_file():
    """The fixture table comes from the schema file, so a renamed column fails here too."""
    workspace = Workspace([])

    assert set(workspace.columns) >= {column.name for column in kql.connector_schema().columns}
    assert Path(RULES).is_dir()


# ---- the MessageTrace parser, executed --------------------------------------------------


def message_trace_function() -> str:
    """The MessageTrace parser as a stored function, its body as deployed."""
    (parser,) = [p for p in kql.parsers() if p.name == "MessageTrace"]
    body = parser.body.replace("ingestion_time()", "IngestionTime")
    return f"function MessageTrace{parser.parameter_list()} {{\n{body}\n}}"


def revision(row: Mapping[str, Any], status: str, number: int, **changes: Any) -> dict[str, Any]:
    """A later row of the same message and recipient, as the connector writes a status change."""
    later = {**row, "Status": status, "StatusRevision": number, "PreviousStatus": row["Status"], **changes}
    later["RowId"] = changes.get("RowId", f"{row['RowId'][:28]}{number:04d}")
    return later


def parse(workspace: Workspace, query: str) -> list[tuple[Any, ...]]:
    workspace.con.execute("CREATE OR REPLACE VIEW EmailEvents_CL AS SELECT * FROM AllRows")
    return list(
        duckdb_kql.query(workspace.con, query, query_now=NOW, functions=[message_trace_function()]).fetchall()
    )


def test_message_trace_gives_each_recipient_once_with_its_newest_status_whatever_the_case():
    first, other = mails_to_rows(
        [
            Mail(
                "a@partner.example",
                ["Lee.Gu@contoso.com", "b@contoso.com"],
                NOW - timedelta(hours=3),
                status="pending",
            )
        ]
    )
    delivered = revision(first, "Delivered", 1, RecipientAddress="lee.gu@contoso.com")
    workspace = Workspace([first, other, delivered, dict(delivered)])  # and a crash copy

    found = parse(
        workspace,
        "MessageTrace() | project RecipientAddress, Status, StatusRevision | order by RecipientAddress",
    )

    assert found == [("lee.gu@contoso.com", "Delivered", 1), ("b@contoso.com", "Pending", 0)]


def test_message_trace_prefers_a_final_status_between_rows_of_the_same_revision():
    (pending,) = mails_to_rows(
        [Mail("a@partner.example", ["lee.gu@contoso.com"], NOW - timedelta(hours=3), status="pending")]
    )
    # two rows of revision 0 (possible with workspace verification off after a crash)
    delivered = {**pending, "Status": "Delivered", "RowId": "f" * 32}

    for rows in ([pending, delivered], [delivered, pending]):
        assert parse(Workspace(rows), "MessageTrace() | project Status") == [("Delivered",)]


def test_message_trace_history_lists_each_revision_once_dropping_crash_copies_with_or_without_row_id():
    (first,) = mails_to_rows(
        [Mail("a@partner.example", ["lee.gu@contoso.com"], NOW - timedelta(hours=3), status="pending")]
    )
    delivered = revision(first, "Delivered", 1)
    legacy = {**first, "MessageTraceId": "legacy-id", "RowId": ""}  # stored before RowId existed
    rows = [first, dict(first), delivered, dict(delivered), legacy, dict(legacy)]

    found = parse(
        Workspace(rows), "MessageTrace(datetime(null), datetime(null), true) | project MessageTraceId, Status"
    )

    assert sorted(found) == sorted(
        [
            (first["MessageTraceId"], "Pending"),
            (first["MessageTraceId"], "Delivered"),
            ("legacy-id", "Pending"),
        ]
    )


def test_message_trace_selects_by_received_so_a_backfill_is_not_taken_for_new_mail():
    recent, old = mails_to_rows(
        [
            Mail("a@partner.example", ["lee.gu@contoso.com"], NOW - timedelta(hours=3)),
            # five-day-old mail backfilled now: TimeGenerated is the arrival time
            Mail(
                "b@partner.example",
                ["lee.gu@contoso.com"],
                NOW - timedelta(days=5),
                arrived=NOW - timedelta(minutes=5),
            ),
        ]
    )
    workspace = Workspace([recent, old])

    assert parse(workspace, "MessageTrace(ago(1d)) | project SenderAddress") == [("a@partner.example",)]
    assert len(parse(workspace, "MessageTrace(ago(6d)) | project SenderAddress")) == 2
    assert parse(workspace, "MessageTrace(ago(6d), ago(4d)) | project SenderAddress") == [
        ("b@partner.example",)
    ]


# --------------------------------------------------------------------------- connector health


class HealthWorkspace(Workspace):
    """MessageTraceHealth_CL at one instant, for the ConnectorHealth rule."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        super().__init__(rows, table="MessageTraceHealth_CL")

    def run(self, at: datetime = NOW + timedelta(minutes=1)) -> list[dict[str, Any]]:  # type: ignore[override]
        """Run the rule at ``at``: by default a minute after NOW, when the run ending at NOW has arrived."""
        return super().run("ConnectorHealth", at)


def health_run(ago: timedelta, lag: timedelta = timedelta(minutes=3), **changes: Any) -> dict[str, Any]:
    """One run's health row as the connector writes it: ended ``ago`` before NOW, ``lag`` behind."""
    ended = NOW - ago
    row: dict[str, Any] = {
        "TimeGenerated": ended,
        "IngestionTime": ended + timedelta(seconds=20),
        "Feed": "live",
        "Outcome": "completed",
        "RunStarted": ended - timedelta(seconds=40),
        "HighWaterMark": ended - lag,
        "LagMinutes": lag / timedelta(minutes=1),
        "RowsStored": 40,
        "Revisions": 2,
        "DeadLettered": 0,
        "PossibleDuplicates": 0,
        "Pages": 1,
    }
    row.update(changes)
    return row


def healthy_feed(hours: int = 6) -> list[dict[str, Any]]:
    """A run every 5 minutes, each moving the mark, 3 minutes behind."""
    return [health_run(timedelta(minutes=minutes)) for minutes in range(0, hours * 60, 5)]


def test_health_rule_stays_quiet_on_a_healthy_feed_run_after_run():
    workspace = HealthWorkspace(healthy_feed())

    for run in range(8):  # eight consecutive 15-minute rule runs
        assert workspace.run(NOW - timedelta(minutes=15 * run)) == []


def test_health_rule_alerts_on_a_high_water_mark_that_stopped_while_runs_complete():
    stalled_at = NOW - timedelta(hours=3)
    rows = [health_run(timedelta(minutes=m)) for m in range(180, 360, 5)]
    rows += [
        health_run(timedelta(minutes=m), HighWaterMark=stalled_at, LagMinutes=(180 - m) * 1.0)
        for m in range(0, 180, 5)
    ]

    (alert,) = HealthWorkspace(rows).run()

    assert alert["Feed"] == "live"
    assert "high-water mark unchanged since" in alert["Reasons"]
    assert alert["Connector"] == "Message trace connector"


def test_health_rule_alerts_on_lag_beyond_the_threshold_but_not_for_a_backfill():
    rows = healthy_feed()
    rows[0] = health_run(timedelta(0), lag=timedelta(minutes=150))
    rows += [
        health_run(timedelta(minutes=m), lag=timedelta(days=3), Feed="backfill/a_b") for m in range(0, 60, 5)
    ]

    (alert,) = HealthWorkspace(rows).run()

    assert alert["Feed"] == "live"
    assert alert["Reasons"].startswith("lag 150")


def test_health_rule_alerts_on_dead_letters_and_possible_duplicates_once():
    rows = healthy_feed()
    rows[1] = health_run(timedelta(minutes=5), DeadLettered=2, PossibleDuplicates=7)
    workspace = HealthWorkspace(rows)

    (alert,) = workspace.run()
    later = workspace.run(NOW + timedelta(minutes=15))

    assert "2 dead-lettered" in alert["Reasons"]
    assert "7 possible duplicates" in alert["Reasons"]
    assert (alert["DeadLettered"], alert["PossibleDuplicates"]) == (2, 7)
    assert later == []  # the next rule run does not count the same runs again


def test_health_rule_judges_each_tenant_s_feed_on_its_own_when_several_share_the_table():
    tenants = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")
    rows = [{**row, "SourceTenantId": tenants[0]} for row in healthy_feed()]
    failing = [{**row, "SourceTenantId": tenants[1]} for row in healthy_feed()]
    for index in range(3):  # the second tenant's last three runs failed; the first's keep succeeding
        failing[index] = {
            **health_run(
                timedelta(minutes=5 * index), Outcome="failed", Error="AADSTS700016", ErrorKind="permission"
            ),
            "SourceTenantId": tenants[1],
        }

    (alert,) = HealthWorkspace(rows + failing).run()

    assert alert["Feed"] == f"live (tenant {tenants[1]})"
    assert "3 failed runs in a row" in alert["Reasons"]


def test_health_rule_keeps_the_plain_feed_name_for_one_tenant_across_the_upgrade_to_source_tenant_id():
    rows = healthy_feed()
    upgraded = [{**row, "SourceTenantId": "11111111-1111-1111-1111-111111111111"} for row in rows[:12]]

    assert HealthWorkspace(upgraded + rows[12:]).run() == []


def test_health_rule_alerts_on_a_streak_of_failed_runs_not_on_one():
    def failing(count: int) -> list[dict[str, Any]]:
        rows = healthy_feed()
        for index in range(count):
            rows[index] = health_run(
                timedelta(minutes=5 * index),
                lag=timedelta(minutes=3 + 5 * index),
                Outcome="failed",
                Error="Graph answered 403: grant ExchangeMessageTrace.Read.All",
                ErrorKind="permission",
            )
        return rows

    (alert,) = HealthWorkspace(failing(3)).run()

    assert "3 failed runs in a row" in alert["Reasons"]
    assert alert["LastError"].startswith("Graph answered 403")
    assert HealthWorkspace(failing(1)).run() == []


def test_health_rule_alerts_once_when_the_live_feed_falls_silent():
    rows = [health_run(timedelta(minutes=m)) for m in range(35, 360, 5)]  # the last run ended 35 minutes ago
    workspace = HealthWorkspace(rows)

    (alert,) = workspace.run()

    assert alert["Feed"] == "live"
    assert alert["Reasons"].startswith("no health row since")
    assert workspace.run(NOW + timedelta(minutes=15)) == []
    assert workspace.run(NOW - timedelta(minutes=15)) == []
