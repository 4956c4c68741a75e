"""Workspace verification: ask Log Analytics which rows of an interrupted batch arrived.

Optional (``WORKSPACE_ID``): the identity needs read access to the table (e.g. Log
Analytics Reader scoped to ``EmailEvents_CL``). Uses the Log Analytics query API
through ``azure-monitor-query``; rows are matched on (trace id, recipient, status),
the same identity the ledger uses. The query looks back far enough for backfilled
rows, whose ``TimeGenerated`` Log Analytics replaces with their arrival time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from azure.core.exceptions import AzureError, HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from connector.checkpoint import PendingBatch
from connector.errors import ConnectorError
from connector.ledger import ledger_key
from connector.mapping import normalise_status

logger = logging.getLogger(__name__)

TRACE_IDS_PER_QUERY = 200


class VerificationError(ConnectorError):
    """The workspace could not be read; the unresolved batch stays recorded."""


def _kql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def presence_query(table: str, trace_ids: list[str]) -> str:
    """KQL listing the rows of ``trace_ids`` (the only query shape the connector sends)."""
    ids = ", ".join(_kql_string(trace_id) for trace_id in trace_ids)
    return f"{table}\n| where MessageTraceId in ({ids})\n| project MessageTraceId, RecipientAddress, Status"


class LogAnalyticsVerifier:
    """Implements :class:`connector.sync.WorkspaceVerifier` with ``LogsQueryClient``."""

    def __init__(self, client: LogsQueryClient, *, workspace_id: str, table: str) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._table = table

    def rows_present(self, batch: PendingBatch, now: datetime) -> set[tuple[str, str]]:
        """(ledger key, status) of every row of ``batch`` the table holds."""
        trace_ids = sorted({entry.trace_id for entry in batch.entries})
        oldest = datetime.fromtimestamp(
            min(entry.received_ms for entry in batch.entries) / 1000, tz=now.tzinfo
        )
        start = min(oldest, batch.created) - timedelta(hours=1)
        present: set[tuple[str, str]] = set()
        for offset in range(0, len(trace_ids), TRACE_IDS_PER_QUERY):
            query = presence_query(self._table, trace_ids[offset : offset + TRACE_IDS_PER_QUERY])
            try:
                result = self._client.query_workspace(
                    self._workspace_id, query, timespan=(start, now + timedelta(hours=1))
                )
            except HttpResponseError as err:
                raise VerificationError(
                    f"workspace verification query failed ({err.status_code}): {err.message}. Give the connector's "
                    "identity read access to EmailEvents_CL (Log Analytics Reader), or unset WORKSPACE_ID"
                ) from err
            except AzureError as err:
                raise VerificationError(f"workspace verification query failed: {err}") from err
            if result.status != LogsQueryStatus.SUCCESS:
                raise VerificationError(f"workspace verification query returned {result.status}")
            for table in result.tables:
                names = list(table.columns)
                for row in table.rows:
                    values = dict(zip(names, row, strict=False))
                    key = ledger_key(str(values["MessageTraceId"]), str(values["RecipientAddress"]))
                    present.add((key, normalise_status(str(values["Status"]))))
        return present
