"""Logs Ingestion sink: one batch → one request, its body the batcher's bytes gzipped once.

The rows are not handed to the SDK as a list (it would ``json.dumps`` each one again
to cut 1 MiB chunks, then the chunk again for the body): the sink joins the bytes the
batcher sized the rows by (:mod:`connector.batching`), gzips them once and passes the
result to ``LogsIngestionClient.upload`` as a stream, which the SDK (1.1.0) sends as
it is, with ``Content-Encoding: gzip`` because it starts with the gzip magic number.
One batch is therefore exactly one request: accepted whole or refused whole, and a
refused request reports every row of it failed.

The SDK retries through azure-core (Retry-After honoured; POST retried on 500/503/504
and on any status with Retry-After), so no second retry layer is put around it; its
policy (:class:`~connector.transport.DeadlineRetryPolicy`) stops instead of waiting
past the run's budget: a 429 then ends the run as throttled, another status as an outage.
Service errors become one :class:`~connector.errors.SinkError` that says
what to fix.

Any 2xx means the rows were accepted. The service documents 204, and the SDK
(1.1.0, ``_upload``: ``if response.status_code not in [204]``) raises
``HttpResponseError`` for every other status, 200 and 202 included. Counting such a chunk as failed would leave its stored
rows uncommitted, and the next run would send them again as duplicates.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
)
from azure.monitor.ingestion import LogsIngestionClient

from connector.batching import request_body
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


# zlib's default level, as the SDK used for its chunks; wbits 16+15 writes a gzip stream.
GZIP_LEVEL = 6


def gzip_body(body: bytes) -> bytes:
    """``body`` as one gzip member (what ``Content-Encoding: gzip`` announces)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


class LogsIngestionSink:
    """Implements :class:`connector.ports.RowSink` with ``LogsIngestionClient.upload``.

    ``client_factory(fresh)`` builds the SDK client; ``fresh=True`` asks for a new
    credential. azure-core renews a token only before it expires, not when the
    service refuses it, so on a 401 the sink rebuilds the client once and resends
    the same body.
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

    def _send(self, compressed: bytes) -> Exception | None:
        """One request with ``compressed`` as its body; the error if the rows were not taken."""
        self.uploads += 1
        try:
            # A seekable stream: the SDK sends it as is (gzip detected from its first bytes), and
            # azure-core's retry policy rewinds it before sending it again.
            self._client.upload(rule_id=self._rule_id, stream_name=self._stream, logs=io.BytesIO(compressed))
        except (AzureError, WaitBeyondDeadline) as err:
            if _is_accepted(err):
                logger.info("logs ingestion answered a 2xx other than 204; counted as stored")
                return None
            return err
        return None

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        """Upload ``rows`` (sized by the batcher to be one request) and report what failed.

        The failure is all or nothing: one request carries every row.
        """
        if not rows:
            return UploadResult()
        compressed = gzip_body(request_body(rows))
        error = self._send(compressed)
        if error is not None and _is_token_refused(error):
            logger.warning("logs ingestion refused the access token (401); renewing the credential once")
            self._client.close()
            self._client = self._factory(True)
            error = self._send(compressed)
        if error is None:
            return UploadResult()
        logger.warning("logs ingestion refused %d of %d rows", len(rows), len(rows))
        return UploadResult(
            failed_indexes=frozenset(range(len(rows))),
            error=describe_ingestion_error(error, rule_id=self._rule_id, stream=self._stream, rows=len(rows)),
        )
