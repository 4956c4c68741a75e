"""Every error the connector stops with, sorted by what the operator has to do.

The tree::

    ConnectorError                 base: ``str(err)`` is the one message a run ends with
    ├── ConfigError                a setting is missing or bad (names the setting)
    ├── AuthenticationError        a credential was refused (expired secret, wrong tenant, ...)
    ├── SourceError                Microsoft Graph message trace
    │   ├── ServicePrincipalMissingError   401: app 8bd644d1-… not provisioned in the tenant
    │   ├── GraphPermissionError           403: ExchangeMessageTrace.Read.All not granted
    │   ├── GraphRequestError              other 4xx: the request itself was refused (fatal)
    │   ├── GraphUnavailableError          429/5xx/timeouts still failing after the retries
    │   ├── GraphThrottledError            the quota wait would cross the run budget (not a fault)
    │   ├── GraphResponseError             a 200 whose body is not the documented JSON
    │   └── PagingLoopError                an @odata.nextLink repeated (server loop)
    ├── RecordError                a trace record cannot be mapped to a row (it is dead-lettered)
    ├── SinkError                  the Logs Ingestion API refused a batch
    ├── CheckpointError            the checkpoint store
    │   ├── CheckpointConflictError        someone else wrote the checkpoint (ETag mismatch)
    │   └── CheckpointFormatError          the stored checkpoint is unreadable / newer format
    ├── RunLockedError             another run holds the feed's lock (lease)
    └── LockLostError              this run's lock could not be renewed; it stops before uploading

``classify_http_status`` is the one table that says which HTTP statuses are worth a
retry; the Graph client and the tests both use it.
"""

from __future__ import annotations

import enum

SERVICE_PRINCIPAL_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
MESSAGE_TRACE_PERMISSION = "ExchangeMessageTrace.Read.All"


class ConnectorError(Exception):
    """Base class: a run stopped for a reason the operator can act on."""

    exit_code = 1


class ConfigError(ConnectorError):
    """One or more settings are missing or have a bad value; the message names each one."""

    exit_code = 2

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"setting {name}: {problem}" for name, problem in problems))
        self.problems = problems
        self.setting = problems[0][0]


class AuthenticationError(ConnectorError):
    """A token could not be obtained: the credential itself was refused."""

    exit_code = 3


class SourceError(ConnectorError):
    """Microsoft Graph message trace could not be read."""


class ServicePrincipalMissingError(SourceError):
    """Graph answered 401 because the Transport Data Platform app is not provisioned."""

    exit_code = 3

    def __init__(self, detail: str) -> None:
        super().__init__(
            "Microsoft Graph refused message trace (401): the tenant has no service principal for "
            f"Microsoft app {SERVICE_PRINCIPAL_APP_ID}. Create it once with "
            f"`New-MgServicePrincipal -AppId {SERVICE_PRINCIPAL_APP_ID}` (or POST /v1.0/servicePrincipals "
            f'{{"appId":"{SERVICE_PRINCIPAL_APP_ID}"}}); provisioning can take several hours. '
            f"Graph said: {detail}"
        )


class GraphPermissionError(SourceError):
    """Graph answered 403: the application permission is missing."""

    exit_code = 3

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Microsoft Graph refused message trace (403): grant the application permission "
            f"{MESSAGE_TRACE_PERMISSION} (with admin consent) to the connector's app or managed "
            f"identity. Graph said: {detail}"
        )


class GraphRequestError(SourceError):
    """Graph refused the request itself (a 4xx that a retry cannot fix)."""

    def __init__(self, status: int, url: str, detail: str) -> None:
        super().__init__(f"Microsoft Graph answered {status} for {url}: {detail}")
        self.status = status


class GraphUnavailableError(SourceError):
    """Retriable failures (429, 5xx, timeouts) outlasted the retries."""


class GraphThrottledError(SourceError):
    """Graph asked us to wait longer than the run has left; the next run continues."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"Microsoft Graph throttled message trace (429) and asked to wait {retry_after:.0f} s, "
            "more than this run has left; the next run continues from the checkpoint"
        )
        self.retry_after = retry_after


class GraphResponseError(SourceError):
    """A successful status with a body that is not the documented JSON shape."""


class PagingLoopError(SourceError):
    """Graph sent an @odata.nextLink that was already followed in this window."""

    def __init__(self, next_link: str, pages: int) -> None:
        super().__init__(
            f"Microsoft Graph paging loop: @odata.nextLink repeated after {pages} pages "
            f"({next_link[:200]}); stopping instead of fetching the same page forever"
        )
        self.next_link = next_link


class RecordError(ConnectorError):
    """A message trace record cannot be turned into a table row."""

    def __init__(self, problem: str, record_hint: str) -> None:
        super().__init__(f"malformed message trace record ({record_hint}): {problem}")
        self.problem = problem


class SinkError(ConnectorError):
    """The Logs Ingestion API did not accept a batch."""

    def __init__(self, message: str, *, rows_failed: int, status: int | None = None) -> None:
        super().__init__(message)
        self.rows_failed = rows_failed
        self.status = status


class CheckpointError(ConnectorError):
    """The checkpoint could not be read or written."""


class CheckpointConflictError(CheckpointError):
    """The stored checkpoint changed under us: another run is writing it."""

    exit_code = 4


class CheckpointFormatError(CheckpointError):
    """The stored checkpoint is not one this version can read."""


class RunLockedError(ConnectorError):
    """Another run holds the feed's lock; this run did nothing."""

    exit_code = 5


class LockLostError(ConnectorError):
    """The run's lock may have expired; it stops before its next upload."""

    exit_code = 5

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"this run lost its lock ({detail}); stopping before the next upload so two runs never send "
            "the same rows; the next run continues from the checkpoint"
        )


class HttpDisposition(enum.Enum):
    """What a caller should do with an HTTP status."""

    SUCCESS = "success"
    RETRY = "retry"
    FATAL = "fatal"


_RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def classify_http_status(status: int) -> HttpDisposition:
    """Sort an HTTP status: 2xx success, 408/429/5xx retry (bar 501/505), other statuses fatal."""
    if 200 <= status < 300:
        return HttpDisposition.SUCCESS
    if status in _RETRIABLE_STATUSES or (status >= 500 and status not in (501, 505)):
        return HttpDisposition.RETRY
    return HttpDisposition.FATAL
