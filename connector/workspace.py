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
from collections.abc import Sequence
from datetime import datetime

from azure.core.exceptions import AzureError, HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from connector.errors import VerificationError, kind_for_status
from connector.ledger import ledger_key
from connector.mapping import has_lone_surrogate, normalise_status
from connector.transport import WaitBeyondDeadline, describe_failure

logger = logging.getLogger(__name__)

IDS_PER_QUERY = 200


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
    tenant = "" if source_tenant_id is None else f"\n| where SourceTenantId == {kql_string(source_tenant_id)}"
    return f"{table}\n| where RowId in ({ids}){tenant}\n| project RowId"


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
        try:
            result = self._client.query_workspace(self._workspace_id, query, timespan=(since, until))
        except AzureError as err:
            raise _query_failed(err) from err
        except WaitBeyondDeadline as err:
            raise _query_cut_short(err) from err
        if result.status != LogsQueryStatus.SUCCESS:
            raise VerificationError(f"workspace verification query returned {result.status}")
        rows: list[dict[str, object]] = []
        for table in result.tables:
            names = list(table.columns)
            rows.extend(dict(zip(names, row, strict=False)) for row in table.rows)
        return rows


def _query_failed(err: AzureError) -> VerificationError:
    kind, detail = describe_failure(err)
    status = err.status_code if isinstance(err, HttpResponseError) else None
    if status is not None:
        return VerificationError(
            f"workspace verification query failed ({status}): {detail}. Give the connector's "
            "identity read access to EmailEvents_CL (Log Analytics Reader), or unset WORKSPACE_ID",
            kind=kind,
        )
    return VerificationError(f"workspace verification query failed: {detail}", kind=kind)


def _query_cut_short(err: WaitBeyondDeadline) -> VerificationError:
    """Log Analytics asked for a wait longer than the run has left; the batch stays recorded.

    The kind is the status's (429 and 5xx: TRANSIENT). Even a 429 fails the run here: the
    batch must be settled before anything else is sent, so there is nothing to continue
    with; the next run verifies it again.
    """
    answered = "" if err.status is None else f" ({err.status})"
    return VerificationError(
        f"workspace verification query failed{answered}: Log Analytics {err.waiting}, more than this run "
        f"has left ({max(err.remaining, 0):.0f} s): {err.detail.rstrip('.')}. The unconfirmed batch stays recorded; "
        "the next run verifies it",
        kind=kind_for_status(err.status),
    )
