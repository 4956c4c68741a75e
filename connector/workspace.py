"""Workspace verification: ask Log Analytics which rows of an interrupted batch arrived.

Optional (``WORKSPACE_ID``): the identity needs read access to the table (e.g. Log
Analytics Reader scoped to ``EmailEvents_CL``). Uses the Log Analytics query API
through ``azure-monitor-query``; rows are matched on (trace id, recipient, status),
the same identity the ledger uses. The time span to search is the caller's
(:mod:`connector.intent` widens it for backfilled rows, whose ``TimeGenerated`` Log
Analytics replaces with their arrival time).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from azure.core.exceptions import AzureError, HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from connector.errors import VerificationError, kind_for_status
from connector.ledger import ledger_key
from connector.mapping import normalise_status
from connector.transport import WaitBeyondDeadline, describe_failure

logger = logging.getLogger(__name__)

TRACE_IDS_PER_QUERY = 200


def _kql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def presence_query(table: str, trace_ids: list[str]) -> str:
    """KQL listing the rows of ``trace_ids`` (the only query shape the connector sends)."""
    ids = ", ".join(_kql_string(trace_id) for trace_id in trace_ids)
    return f"{table}\n| where MessageTraceId in ({ids})\n| project MessageTraceId, RecipientAddress, Status"


class LogAnalyticsVerifier:
    """Implements :class:`connector.ports.WorkspaceVerifier` with ``LogsQueryClient``."""

    def __init__(self, client: LogsQueryClient, *, workspace_id: str, table: str) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._table = table

    def rows_present(
        self, trace_ids: Sequence[str], since: datetime, until: datetime
    ) -> set[tuple[str, str]]:
        """(ledger key, status) of every row of ``trace_ids`` the table holds between ``since`` and ``until``."""
        present: set[tuple[str, str]] = set()
        for offset in range(0, len(trace_ids), TRACE_IDS_PER_QUERY):
            query = presence_query(self._table, list(trace_ids[offset : offset + TRACE_IDS_PER_QUERY]))
            try:
                result = self._client.query_workspace(self._workspace_id, query, timespan=(since, until))
            except AzureError as err:
                raise _query_failed(err) from err
            except WaitBeyondDeadline as err:
                raise _query_cut_short(err) from err
            if result.status != LogsQueryStatus.SUCCESS:
                raise VerificationError(f"workspace verification query returned {result.status}")
            for table in result.tables:
                names = list(table.columns)
                for row in table.rows:
                    values = dict(zip(names, row, strict=False))
                    key = ledger_key(str(values["MessageTraceId"]), str(values["RecipientAddress"]))
                    present.add((key, normalise_status(str(values["Status"]))))
        return present


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
