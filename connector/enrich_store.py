"""Enrichment's adapters: the workspace queries that choose and skip pairs, and the pending document.

The queries (Log Analytics query API, the identity needs read access to
``EmailEvents_CL`` and ``MessageTraceDetail_CL``):

* :func:`enriched_pairs_query`: which of these trace ids' pairs the detail table holds
  already (skipped before a Graph request is spent);
* :func:`recipients_query`: every recipient ``EmailEvents_CL`` holds for a trace id
  given without one;
* :func:`status_query`: the (trace id, recipient) pairs whose *newest* status in a
  receive-time range is one of the chosen ones (``--status``);
* :func:`connector.workspace.stored_query` on the detail table: which ``RowId`` values
  of an upload whose outcome is unknown arrived.

Every value is a KQL literal written by :func:`connector.workspace.kql_string` or a
``datetime(...)`` of a checked time, and every text is checked by Microsoft's parser in
the suite (``tests/kql.py``). The pending document (:class:`connector.enrichment.PendingDetail`)
is ``enrich/pending.json`` next to the checkpoints (blob or file); it is written only
under the ``enrich`` lock, so a plain overwrite is safe.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.monitor.query import LogsQueryClient
from azure.storage.blob import ContainerClient, ContentSettings

from connector.enrichment import STATUS_REASON_PREFIX, PendingDetail, Target
from connector.errors import CheckpointFormatError
from connector.ledger import ledger_key
from connector.redact import safe_url
from connector.store import file_error, storage_error
from connector.workspace import (
    IDS_PER_QUERY,
    LogAnalyticsVerifier,
    kql_string,
    queryable,
    received_in,
    tenant_filter,
)

PENDING_DOCUMENT = "enrich/pending.json"
ENRICH_LOCK = "enrich"
"""The lock (``locks/enrich.lock``) one enrich run holds, so two never write the pending document at once."""
MAX_STATUS_ROWS = 10_000
"""The most pairs a ``--status`` selection reads from the workspace in one run."""
LOOKBACK = timedelta(days=91)
"""How far back the detail table is searched: Graph keeps message trace 90 days, so older rows cannot recur."""
MARGIN = timedelta(hours=1)


def _id_list(trace_ids: Sequence[str]) -> str:
    return ", ".join(kql_string(trace_id) for trace_id in trace_ids)


def enriched_pairs_query(table: str, trace_ids: Sequence[str], source_tenant_id: str | None = None) -> str:
    """KQL listing the (trace id, recipient) pairs of ``trace_ids`` the detail table holds."""
    return (
        f"{table}\n| where MessageTraceId in ({_id_list(trace_ids)}){tenant_filter(source_tenant_id)}\n"
        "| project MessageTraceId, RecipientAddress"
    )


def recipients_query(table: str, trace_ids: Sequence[str], source_tenant_id: str | None = None) -> str:
    """KQL listing every recipient the mail table holds for ``trace_ids`` (the same shape, on the mail table)."""
    return enriched_pairs_query(table, trace_ids, source_tenant_id)


def status_query(
    table: str,
    statuses: Sequence[str],
    start: datetime,
    end: datetime,
    source_tenant_id: str | None = None,
    limit: int = MAX_STATUS_ROWS,
) -> str:
    """KQL listing the pairs received in ``[start, end)`` whose newest status is one of ``statuses``.

    By ``Received`` (``TimeGenerated`` of a backfilled row is its arrival time), newest
    ``StatusRevision`` per trace id and lower-cased recipient, so a message that was
    Pending then Delivered is not chosen for ``Pending``.
    """
    return (
        f"{table}{received_in(start, end, source_tenant_id)}\n"
        "| summarize arg_max(StatusRevision, Status) by MessageTraceId, RecipientAddress = tolower(RecipientAddress)\n"
        f"| where Status in ({_id_list(statuses)})\n"
        "| project MessageTraceId, RecipientAddress, Status\n"
        f"| take {limit}"
    )


class DetailWorkspace(LogAnalyticsVerifier):
    """The workspace as enrichment asks it: ``rows_stored`` looks in the detail table."""

    def __init__(
        self,
        client: LogsQueryClient,
        *,
        workspace_id: str,
        detail_table: str,
        mail_table: str,
        source_tenant_id: str | None,
        now: datetime,
    ) -> None:
        super().__init__(
            client, workspace_id=workspace_id, table=detail_table, source_tenant_id=source_tenant_id
        )
        self._detail_table = detail_table
        self._mail_table = mail_table
        self._tenant = source_tenant_id
        self._since, self._until = now - LOOKBACK, now + MARGIN

    def enriched_pairs(self, trace_ids: Sequence[str]) -> set[str]:
        """Digests of the (trace id, recipient) pairs of ``trace_ids`` the detail table holds."""
        found: set[str] = set()
        ids = sorted({trace_id for trace_id in trace_ids if queryable(trace_id)})
        for offset in range(0, len(ids), IDS_PER_QUERY):
            query = enriched_pairs_query(
                self._detail_table, ids[offset : offset + IDS_PER_QUERY], self._tenant
            )
            for values in self._rows(query, self._since, self._until):
                found.add(ledger_key(str(values["MessageTraceId"]), str(values["RecipientAddress"])))
        return found

    def recipients(self, trace_ids: Sequence[str]) -> dict[str, list[str]]:
        """Every recipient of each trace id in ``EmailEvents_CL`` (each address once, without case)."""
        found: dict[str, dict[str, str]] = {}
        # Graph writes trace ids in lower case; the upper-case spelling too, should a row hold one.
        ids = sorted({spelling for trace_id in trace_ids for spelling in (trace_id, trace_id.upper())})
        for offset in range(0, len(ids), IDS_PER_QUERY):
            query = recipients_query(self._mail_table, ids[offset : offset + IDS_PER_QUERY], self._tenant)
            for values in self._rows(query, self._since, self._until):
                recipient = str(values["RecipientAddress"])
                found.setdefault(str(values["MessageTraceId"]).lower(), {}).setdefault(
                    recipient.lower(), recipient
                )
        return {trace_id: list(by_key.values()) for trace_id, by_key in found.items()}

    def status_targets(self, statuses: Sequence[str], start: datetime, end: datetime) -> list[Target]:
        """The pairs received in ``[start, end)`` whose newest status is one of ``statuses``."""
        query = status_query(self._mail_table, statuses, start, end, self._tenant)
        targets = [
            Target(
                trace_id=str(values["MessageTraceId"]).lower(),
                recipient=str(values["RecipientAddress"]),
                reason=f"{STATUS_REASON_PREFIX}{values['Status']}",
            )
            for values in self._rows(query, start - MARGIN, self._until)
        ]
        return sorted(targets, key=lambda target: (target.trace_id, target.recipient))


class BlobPendingStore:
    """The pending document as the blob ``enrich/pending.json`` in the checkpoint container."""

    def __init__(self, container: ContainerClient) -> None:
        self._blob = container.get_blob_client(PENDING_DOCUMENT)

    def load(self) -> PendingDetail:
        """The stored document (empty when there is none)."""
        try:
            data = self._blob.download_blob().readall()
        except ResourceNotFoundError:
            return PendingDetail()
        except AzureError as err:
            raise storage_error(f"cannot read {safe_url(self._blob.url)}", err) from err
        return _decode(data, safe_url(self._blob.url))

    def save(self, pending: PendingDetail) -> None:
        """Write the document (the caller holds the enrich lock); an empty one is deleted."""
        try:
            if pending.pairs:
                self._blob.upload_blob(
                    pending.encode(),
                    overwrite=True,
                    content_settings=ContentSettings(content_type="application/json"),
                )
            else:
                self._blob.delete_blob()
        except ResourceNotFoundError:
            return
        except AzureError as err:
            raise storage_error(f"cannot write {safe_url(self._blob.url)}", err) from err


class FilePendingStore:
    """The pending document as ``<directory>/enrich/pending.json`` (replaced atomically)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._path = Path(directory) / PENDING_DOCUMENT

    def load(self) -> PendingDetail:
        """The stored document (empty when there is none)."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return PendingDetail()
        except OSError as err:
            raise file_error(f"cannot read {self._path}", err) from err
        return _decode(data, str(self._path))

    def save(self, pending: PendingDetail) -> None:
        """Write the document (the caller holds the enrich lock); an empty one is deleted."""
        try:
            if not pending.pairs:
                self._path.unlink(missing_ok=True)
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".pending-")
            with os.fdopen(fd, "wb") as out:
                out.write(pending.encode())
            os.replace(temporary, self._path)
        except OSError as err:
            raise file_error(f"cannot write {self._path}", err) from err


def _decode(data: bytes, where: str) -> PendingDetail:
    try:
        return PendingDetail.decode(data)
    except ValueError as err:
        raise CheckpointFormatError(
            f"{where}: {err}; delete it only after the rows of the enrich runs of the last "
            "VERIFY_INGESTION_DELAY_MINUTES are queryable (or accept that their pairs may be stored twice)"
        ) from None
