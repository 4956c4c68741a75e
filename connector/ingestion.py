"""Logs Ingestion sink: one batch → one ``azure-monitor-ingestion`` upload, failures reported per row.

The SDK retries through azure-core (Retry-After honoured; POST retried on 500/503/504
and on any status with Retry-After), so no second retry layer is put around it; its
policy (:class:`~connector.transport.DeadlineRetryPolicy`) stops instead of waiting
past the run's budget: a 429 then ends the run as throttled, another status as an outage.
``on_error`` collects failed chunks instead of letting the SDK raise after it may
already have sent earlier chunks: the sync loop then knows exactly which rows are
stored. Service errors become one :class:`~connector.errors.SinkError` that says
what to fix.

Any 2xx means the rows were accepted. The service documents 204, and the SDK
(1.1.0, ``_upload``: ``if response.status_code not in [204]``) raises
``HttpResponseError`` for every other status, 200 and 202 included, which reaches
``on_error`` like a refusal. Counting such a chunk as failed would leave its stored
rows uncommitted, and the next run would send them again as duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
)
from azure.monitor.ingestion import LogsIngestionClient, LogsUploadError

from connector.errors import (
    AuthenticationError,
    ConnectorError,
    ErrorKind,
    IngestionThrottledError,
    SinkError,
)
from connector.ports import UploadResult
from connector.transport import WaitBeyondDeadline, describe_failure

logger = logging.getLogger(__name__)


_STATUS_HINTS = {
    401: "the token was refused; check TENANT_ID and the identity in AZURE_AUTH_MODE",
    403: "give the connector's identity the 'Monitoring Metrics Publisher' role on the data collection "
    "rule (a new role assignment can take up to 30 minutes to apply)",
    404: "check INGESTION_ENDPOINT (the DCR's logsIngestion endpoint), DCR_IMMUTABLE_ID and DCR_STREAM_NAME",
    400: "the service refused the rows' content (the run splits the batch to tell a bad row, which is "
    "dead-lettered, from a table or DCR that does not match the schema file)",
    413: "the service found the request too large (the run splits the batch and dead-letters a row "
    "that is refused on its own)",
}


def describe_ingestion_error(error: Exception, *, rule_id: str, stream: str, rows: int) -> ConnectorError:
    """Turn an SDK/transport exception into the one message the run stops with (its kind from the cause)."""
    where = f"DCR {rule_id}, stream {stream}"
    if isinstance(error, WaitBeyondDeadline):
        return _wait_beyond_deadline(error, where=where, rows=rows)
    if isinstance(error, ClientAuthenticationError) and error.status_code is None:
        kind, detail = describe_failure(error, default=ErrorKind.PERMISSION)
        return AuthenticationError(f"could not get a Logs Ingestion token: {detail}", kind=kind)
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        status = error.status_code
        detail = (error.message or "").splitlines()[0][:400]
        hint = _STATUS_HINTS.get(
            status, "the Logs Ingestion API kept failing after the SDK's retries; the next run resends"
        )
        return SinkError(
            f"Logs Ingestion API answered {status} for {rows} rows ({where}): {detail}. {hint}",
            rows_failed=rows,
            status=status,
            service_message=_service_words(error),
        )
    kind, detail = describe_failure(error)
    if kind is ErrorKind.SETTING or isinstance(error, ServiceRequestError):
        return SinkError(
            f"cannot reach the Logs Ingestion endpoint ({where}): {detail}", rows_failed=rows, kind=kind
        )
    return SinkError(f"upload of {rows} rows failed ({where}): {detail}", rows_failed=rows, kind=kind)


def _service_words(error: HttpResponseError) -> str:
    """The service's error code and message as azure-core shows them (``(Code) message``), bounded."""
    lines = (error.message or "").strip().splitlines()
    return lines[0][:1000] if lines else ""


def _wait_beyond_deadline(error: WaitBeyondDeadline, *, where: str, rows: int) -> ConnectorError:
    """A 429 is the quota (the run ends throttled); a 5xx, or no answer, is an outage (TRANSIENT).

    A refusal that happens to carry ``Retry-After`` (say a 403) keeps its status's kind
    and hint: waiting would not have fixed it.
    """
    if error.status == 429:
        return IngestionThrottledError(error.wait, rows_failed=rows, where=where, detail=error.detail)
    answered = "got no answer" if error.status is None else f"answered {error.status}"
    hint = _STATUS_HINTS.get(
        error.status or 0, "the service is unavailable; the rows stay uncommitted and the next run sends them"
    )
    return SinkError(
        f"Logs Ingestion API {answered} for {rows} rows ({where}) and {error.waiting}, more than this "
        f"run has left ({max(error.remaining, 0):.0f} s): {error.detail.rstrip('.')}. {hint}",
        rows_failed=rows,
        status=error.status,
        service_message=error.detail,
    )


def _is_accepted(error: Exception) -> bool:
    """True for the SDK's "error" on a 2xx other than 204: the service took the rows."""
    return (
        isinstance(error, HttpResponseError)
        and error.status_code is not None
        and 200 <= error.status_code < 300
    )


def _is_token_refused(error: Exception) -> bool:
    return isinstance(error, HttpResponseError) and error.status_code == 401


ClientFactory = Callable[[bool], LogsIngestionClient]


class LogsIngestionSink:
    """Implements :class:`connector.ports.RowSink` with ``LogsIngestionClient.upload``.

    ``client_factory(fresh)`` builds the SDK client; ``fresh=True`` asks for a new
    credential. azure-core renews a token only before it expires, not when the
    service refuses it, so on a 401 the sink rebuilds the client once and resends
    just the refused rows.
    """

    def __init__(self, client_factory: ClientFactory, *, rule_id: str, stream_name: str) -> None:
        self._factory = client_factory
        self._client = client_factory(False)
        self._rule_id = rule_id
        self._stream = stream_name
        self.uploads = 0

    def close(self) -> None:
        """Close the SDK client's transport."""
        self._client.close()

    def _send(self, logs: list[Any]) -> list[LogsUploadError]:
        failures: list[LogsUploadError] = []
        self.uploads += 1
        try:
            self._client.upload(
                rule_id=self._rule_id, stream_name=self._stream, logs=logs, on_error=failures.append
            )
        except AzureError as err:  # raised before any chunk was sent (e.g. the request could not be built)
            failures.append(LogsUploadError(error=err, failed_logs=logs))
        refused = [failure for failure in failures if not _is_accepted(failure.error)]
        if len(refused) < len(failures):
            logger.info(
                "logs ingestion answered a 2xx other than 204 for %d rows; counted as stored",
                sum(len(failure.failed_logs) for failure in failures if _is_accepted(failure.error)),
            )
        return refused

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        """Upload ``rows`` (sized by the batcher to be one request) and report what failed."""
        logs: list[Any] = list(rows)
        failures = self._send(logs)
        if failures and all(_is_token_refused(failure.error) for failure in failures):
            logger.warning("logs ingestion refused the access token (401); renewing the credential once")
            self._client.close()
            self._client = self._factory(True)
            failures = self._send([log for failure in failures for log in failure.failed_logs])
        if not failures:
            return UploadResult()
        failed_ids = {id(log) for failure in failures for log in failure.failed_logs}
        failed = frozenset(index for index, log in enumerate(logs) if id(log) in failed_ids)
        logger.warning("logs ingestion refused %d of %d rows", len(failed), len(logs))
        return UploadResult(
            failed_indexes=failed,
            error=describe_ingestion_error(
                failures[0].error, rule_id=self._rule_id, stream=self._stream, rows=len(failed)
            ),
        )
