"""Workspace verification: ask Log Analytics which rows of an interrupted batch arrived.

Optional (``WORKSPACE_ID``): the identity needs read access to the table (e.g. Log
Analytics Reader scoped to ``EmailEvents_CL``). Uses the Log Analytics query API
through ``azure-monitor-query``; rows are matched on their ``RowId``, a digest of
(trace id, recipient, status, revision): a row of an earlier revision with the same
status (Pending, Delivered, then Pending again) is not taken for this batch's row.
The time span to search is the caller's (:mod:`connector.intent` widens it for
backfilled rows, whose ``TimeGenerated`` Log Analytics replaces with their arrival
time).

An intent written before RowId existed is resolved by trace id, matching (trace id,
recipient, status, revision). Trace ids come from Graph and may hold any text, so
each one becomes a KQL string literal whose value is exactly the id
(:func:`kql_string`): one odd id must not make the query, and so every verification
of its batch, invalid. An id holding an unpaired UTF-16 surrogate cannot be stored as
sent (Log Analytics keeps only valid Unicode), so it is left out of the query: its
rows count as absent and are sent again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from connector.errors import VerificationError, kind_for_status
from connector.ledger import ledger_key
from connector.mapping import format_datetime, has_lone_surrogate, normalise_status, parse_datetime
from connector.reconcile import TableRow
from connector.transport import WaitBeyondDeadline, describe_failure
from connector.windows import Window

logger = logging.getLogger(__name__)

IDS_PER_QUERY = 200
VERIFY_MARGIN = timedelta(hours=1)
"""How far before a range a reconcile query's time span starts (clocks differ)."""


# Only escapes the Learn page "The string data type" documents: \\ \" \t \n by name and
# \uXXXX by example. Every other character Kusto's lexer (Kusto.Language) takes as it is,
# except CR and LF, which end a quoted literal; those and the other control characters
# (and the Unicode line/paragraph separators) are written as \uXXXX so the query stays
# one valid, printable literal per id.
_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n"}
_NEEDS_CODE_ESCAPE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    if _NEEDS_CODE_ESCAPE.match(char):
        return f"\\u{ord(char):04X}"
    return char


def kql_string(value: str) -> str:
    """A double-quoted KQL string literal whose value is exactly ``value``.

    Raises:
        ValueError: ``value`` holds an unpaired UTF-16 surrogate, which no KQL
            literal (and no UTF-8 query text) can carry.
    """
    if has_lone_surrogate(value):
        raise ValueError("an unpaired UTF-16 surrogate cannot be written in a KQL string literal")
    return '"' + "".join(_escape(char) for char in value) + '"'


def queryable(trace_id: str) -> bool:
    """True when ``trace_id`` can be looked up (see the module note on unpaired surrogates)."""
    return not has_lone_surrogate(trace_id)


def stored_query(table: str, row_ids: Sequence[str], source_tenant_id: str | None = None) -> str:
    """KQL listing which of ``row_ids`` the table holds (what a batch in flight is resolved with).

    ``source_tenant_id`` keeps to that tenant's rows, for a table several tenants share:
    a row of another tenant with the same identity must not count as this one's.
    """
    ids = ", ".join(kql_string(row_id) for row_id in row_ids)
    return f"{table}\n| where RowId in ({ids}){tenant_filter(source_tenant_id)}\n| project RowId"


def tenant_filter(source_tenant_id: str | None) -> str:
    """``| where SourceTenantId == "…"`` on its own line, or nothing when the table is the tenant's own."""
    return "" if source_tenant_id is None else f"\n| where SourceTenantId == {kql_string(source_tenant_id)}"


def presence_query(table: str, trace_ids: Sequence[str]) -> str:
    """KQL listing the rows of ``trace_ids`` (only for an intent written before RowId)."""
    ids = ", ".join(kql_string(trace_id) for trace_id in trace_ids)
    return (
        f"{table}\n| where MessageTraceId in ({ids})\n"
        "| project MessageTraceId, RecipientAddress, Status, StatusRevision"
    )


class LogAnalyticsVerifier:
    """Implements :class:`connector.ports.WorkspaceVerifier` with ``LogsQueryClient``."""

    def __init__(
        self, client: LogsQueryClient, *, workspace_id: str, table: str, source_tenant_id: str | None = None
    ) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._table = table
        self._source_tenant_id = source_tenant_id

    def rows_stored(self, row_ids: Sequence[str], since: datetime, until: datetime) -> set[str]:
        """The ``row_ids`` the table holds between ``since`` and ``until``."""
        stored: set[str] = set()
        for offset in range(0, len(row_ids), IDS_PER_QUERY):
            query = stored_query(
                self._table, row_ids[offset : offset + IDS_PER_QUERY], self._source_tenant_id
            )
            for values in self._rows(query, since, until):
                stored.add(str(values["RowId"]))
        return stored

    def legacy_rows_present(
        self, trace_ids: Sequence[str], since: datetime, until: datetime
    ) -> set[tuple[str, str, int]]:
        """(ledger key, status, revision) of every row of ``trace_ids`` between ``since`` and ``until``."""
        present: set[tuple[str, str, int]] = set()
        ids = [trace_id for trace_id in trace_ids if queryable(trace_id)]
        if len(ids) < len(trace_ids):
            logger.warning(
                "%d trace ids hold an unpaired UTF-16 surrogate and cannot be stored or looked up; "
                "their rows count as absent and are sent again",
                len(trace_ids) - len(ids),
            )
        for offset in range(0, len(ids), IDS_PER_QUERY):
            for values in self._rows(
                presence_query(self._table, ids[offset : offset + IDS_PER_QUERY]), since, until
            ):
                key = ledger_key(str(values["MessageTraceId"]), str(values["RecipientAddress"]))
                present.add(
                    (key, normalise_status(str(values["Status"])), int(str(values["StatusRevision"] or 0)))
                )
        return present

    def _rows(self, query: str, since: datetime, until: datetime) -> list[dict[str, object]]:
        """The result rows of ``query`` over ``[since, until]`` as column → value."""
        return query_rows(self._client, self._workspace_id, query, since, until)


def query_rows(
    client: LogsQueryClient,
    workspace_id: str,
    query: str,
    since: datetime,
    until: datetime,
    *,
    what: str = "workspace verification query",
    advice: str = "or unset WORKSPACE_ID",
    then: str = "The unconfirmed batch stays recorded; the next run verifies it",
) -> list[dict[str, object]]:
    """The result rows of ``query`` over ``[since, until]`` as column → value.

    Raises:
        VerificationError: the query failed or answered only part (``what`` names it in the message).
    """
    try:
        result = client.query_workspace(workspace_id, query, timespan=(since, until))
    except AzureError as err:
        raise _query_failed(err, what, advice) from err
    except WaitBeyondDeadline as err:
        raise _query_cut_short(err, what, then) from err
    if result.status != LogsQueryStatus.SUCCESS:
        raise VerificationError(
            f"{what} returned {result.status}: Log Analytics answered only part of it (its limits are "
            "500,000 rows and 64 MB per query)"
        )
    rows: list[dict[str, object]] = []
    for table in result.tables:
        names = list(table.columns)
        rows.extend(dict(zip(names, row, strict=False)) for row in table.rows)
    return rows


def _query_failed(err: AzureError, what: str, advice: str) -> VerificationError:
    kind, detail = describe_failure(err)
    status = err.status_code if isinstance(err, HttpResponseError) else None
    if status is not None:
        return VerificationError(
            f"{what} failed ({status}): {detail}. Give the connector's "
            f"identity read access to EmailEvents_CL (Log Analytics Reader), {advice}",
            kind=kind,
        )
    return VerificationError(f"{what} failed: {detail}", kind=kind)


def _query_cut_short(err: WaitBeyondDeadline, what: str, then: str) -> VerificationError:
    """Log Analytics asked for a wait longer than the run has left; the batch stays recorded.

    The kind is the status's (429 and 5xx: TRANSIENT). Even a 429 fails the run here: the
    batch must be settled before anything else is sent, so there is nothing to continue
    with; the next run verifies it again.
    """
    answered = "" if err.status is None else f" ({err.status})"
    return VerificationError(
        f"{what} failed{answered}: Log Analytics {err.waiting}, more than this run "
        f"has left ({max(err.remaining, 0):.0f} s): {err.detail.rstrip('.')}. {then}",
        kind=kind_for_status(err.status),
    )


# ---------------------------------------------------------------------- reconcile

RECONCILE_QUERY = "reconcile's workspace query"
_RECONCILE_ADVICE = "then run reconcile again"
_RECONCILE_THEN = "Nothing was repaired from this hour on; run reconcile again for the rest of the range"


def kql_datetime(moment: datetime) -> str:
    """A KQL ``datetime(...)`` literal of ``moment`` (UTC, microseconds)."""
    return f"datetime({format_datetime(moment)})"


def received_in(start: datetime, end: datetime, source_tenant_id: str | None = None) -> str:
    """The lines keeping to rows received in ``[start, end)`` (of one tenant, in a shared table).

    By ``Received``, not ``TimeGenerated``: Log Analytics replaces an old ``TimeGenerated``
    with the arrival time.
    """
    return (
        f"\n| where Received >= {kql_datetime(start)} and Received < {kql_datetime(end)}"
        f"{tenant_filter(source_tenant_id)}"
    )


def piece_rows_query(table: str, piece: Window, source_tenant_id: str | None = None) -> str:
    """KQL counting the table's rows of ``piece`` by identity (trace id, recipient, status, revision).

    Grouped, so an hour of 200,000 rows comes back as at most that many small rows and a
    row stored twice shows as ``Copies`` 2 (one pass, under Log Analytics' limits);
    ``Ingested`` (the newest copy's arrival) tells a row the feed wrote after Graph's
    answer for the hour from one it wrote before.
    """
    return (
        f"{table}{received_in(piece.start, piece.end, source_tenant_id)}"
        "\n| summarize Copies = count(), Ingested = max(ingestion_time())"
        " by MessageTraceId, RecipientAddress, Status, StatusRevision"
    )


def hourly_rows_query(table: str, window: Window, source_tenant_id: str | None = None) -> str:
    """KQL counting the table's rows of ``window`` per clock hour (what the request estimate reads)."""
    return (
        f"{table}{received_in(window.start, window.end, source_tenant_id)}"
        "\n| summarize Rows = count() by Hour = bin(Received, 1h)"
    )


def _moment(value: object) -> datetime | None:
    """A datetime column's value as an aware UTC datetime (the SDK parses them; text is read too)."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    return moment.astimezone(UTC)


class TableReader:
    """What ``EmailEvents_CL`` holds of a range, for :mod:`connector.reconcile`.

    Rows are selected on ``Received`` (the record's time), not ``TimeGenerated``: Log
    Analytics replaces a ``TimeGenerated`` older than two days with the arrival time, so a
    backfilled or repaired row's ``TimeGenerated`` is later than its hour. The query's time
    span therefore runs from the hour (less a margin for clocks) to now.
    """

    def __init__(
        self,
        client: LogsQueryClient,
        *,
        workspace_id: str,
        table: str,
        source_tenant_id: str | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._table = table
        self._source_tenant_id = source_tenant_id
        self._clock = clock

    def piece_rows(self, piece: Window) -> list[TableRow]:
        """The table's rows of ``piece``, one per identity with its number of copies."""
        query = piece_rows_query(self._table, piece, self._source_tenant_id)
        return [
            TableRow(
                trace_id=str(values["MessageTraceId"]),
                recipient=str(values["RecipientAddress"]),
                status=str(values["Status"]),
                revision=int(str(values["StatusRevision"] or 0)),
                copies=int(str(values["Copies"])),
                ingested=_moment(values.get("Ingested")),
            )
            for values in self._run(query, piece.start)
        ]

    def rows_per_hour(self, window: Window) -> dict[datetime, int]:
        """The table's rows of ``window`` per clock hour (its start, UTC)."""
        counts: dict[datetime, int] = {}
        for values in self._run(hourly_rows_query(self._table, window, self._source_tenant_id), window.start):
            moment = _moment(values["Hour"])
            if moment is not None:
                counts[moment] = int(str(values["Rows"]))
        return counts

    def _run(self, query: str, since: datetime) -> list[dict[str, object]]:
        return query_rows(
            self._client,
            self._workspace_id,
            query,
            since - VERIFY_MARGIN,
            self._clock() + VERIFY_MARGIN,
            what=RECONCILE_QUERY,
            advice=_RECONCILE_ADVICE,
            then=_RECONCILE_THEN,
        )
