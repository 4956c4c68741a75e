"""Every error the connector stops with; each carries a *kind* that says what the caller does.

The kind, not the service that failed, decides the exit code, so a 403 means the same
thing whether Graph, Logs Ingestion, Blob Storage or Log Analytics sent it:

==========  ====  ============================================================
kind        exit  what the caller does
==========  ====  ============================================================
FATAL       1     read the message: unexpected (a bug, a damaged checkpoint, a refused request)
SETTING     2     fix a setting or argument (the message names it; an untrusted TLS certificate
                  is a setting too: the CA bundle)
PERMISSION  3     fix a credential or grant a role or permission (any service's 401/403)
CONFLICT    4     nothing: another writer changed the checkpoint; this run stopped without harm
LOCK        5     wait: another run holds the feed's lock, or this run lost it
TRANSIENT   6     nothing: a service was unreachable or kept failing after retries; the next run resumes
==========  ====  ============================================================

Exit 0 covers every run that ended without an error, including "throttled" (a 429 from
Graph or Logs Ingestion asked for a wait longer than the run has left: the quota refills)
and "budget used up" (the next run continues). Any other status asking for such a wait
is an outage: TRANSIENT, exit 6.

The classes, by where the error comes from (their messages say what to fix)::

    ConnectorError                 base: ``str(err)`` is the one message a run ends with; ``err.kind``
    ├── ConfigError                SETTING: a setting is missing or bad (names every one)
    ├── BackfillError              SETTING: a backfill request that would lose or duplicate rows
    ├── ReconcileError             SETTING: a reconcile that cannot run now (TRANSIENT: the live
    │                              feed's last batch is not confirmed yet)
    ├── ArgumentError              SETTING: a command's argument is bad (the message names it)
    ├── AuthenticationError        a token could not be had (PERMISSION; TRANSIENT if unreachable)
    ├── SourceError                Microsoft Graph message trace
    │   ├── ServicePrincipalMissingError   PERMISSION: 401, app 8bd644d1-… missing or still activating
    │   │                                  (a waiting state, exit 0, for 24 h after it is first seen)
    │   ├── GraphPermissionError           PERMISSION: 403, ExchangeMessageTrace.Read.All not granted
    │   ├── GraphRequestError              another 4xx (kind from the status): the request was refused
    │   ├── GraphUnavailableError          TRANSIENT: 429/5xx/timeouts/resets outlasted the retries,
    │   │                                  or a 5xx asked to wait longer than the run has left
    │   ├── GraphThrottledError            (ends the run cleanly) a 429's wait would cross the budget
    │   ├── GraphResponseError             FATAL: an answer that is not the documented shape
    │   └── PagingLoopError                FATAL: an @odata.nextLink repeated (server loop)
    ├── ThrottledError             (ends the run cleanly, exit 0) a quota wait longer than the run has left
    ├── RecordError                a trace record cannot become a row (it is dead-lettered, never raised out)
    ├── SinkError                  the Logs Ingestion API refused a batch (kind from the status;
    │   │                          SETTING when it refuses every row: the table or DCR does not match)
    │   └── IngestionThrottledError        (ends the run cleanly) a 429's wait would cross the budget
    ├── FeedStalledError           TRANSIENT: the high-water mark has not moved for 3 runs while data is due
    ├── CheckpointError            the checkpoint store (kind from the cause)
    │   ├── CheckpointConflictError        CONFLICT: someone else wrote the checkpoint (ETag mismatch)
    │   └── CheckpointFormatError          FATAL: the stored checkpoint is unreadable or newer
    ├── VerificationError          the workspace query for an unconfirmed batch (kind from the cause)
    ├── RunLockedError             LOCK: another run holds the feed's lock (lease)
    └── LockLostError              LOCK: this run's lock could not be renewed; it stopped before uploading

``classify_http_status`` is the one table that says which HTTP statuses are worth a
retry, and ``kind_for_status`` the one that says what a final failing status means.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import ClassVar

from connector.redact import scrub

SERVICE_PRINCIPAL_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
MESSAGE_TRACE_PERMISSION = "ExchangeMessageTrace.Read.All"


class ErrorKind(enum.Enum):
    """What the caller does about an error; the value is the process exit code."""

    FATAL = 1
    SETTING = 2
    PERMISSION = 3
    CONFLICT = 4
    LOCK = 5
    TRANSIENT = 6

    @property
    def exit_code(self) -> int:
        """The exit code of a run that stopped with an error of this kind."""
        return self.value


class ConnectorError(Exception):
    """Base class: a run stopped for a reason the operator can act on.

    Subclasses set a default ``kind``; a single instance may carry another one (a
    storage error is PERMISSION when refused, TRANSIENT when unreachable).

    The message is scrubbed (:func:`connector.redact.scrub`): it is printed, logged,
    kept in the checkpoint and raised out of the function app, and a URL or setting
    value in it may carry a SAS or another credential in its query string.
    """

    default_kind: ClassVar[ErrorKind] = ErrorKind.FATAL

    def __init__(self, message: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(scrub(message))
        self.kind = kind or self.default_kind

    @property
    def exit_code(self) -> int:
        """The process exit code, from the kind."""
        return self.kind.exit_code


class ConfigError(ConnectorError):
    """One or more settings are missing or have a bad value; the message names each one."""

    default_kind = ErrorKind.SETTING

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"setting {name}: {problem}" for name, problem in problems))
        self.problems = problems
        self.setting = problems[0][0]


class ReconcileError(ConnectorError):
    """A reconcile that cannot run now (SETTING: a backfill still writes the range; the message says)."""

    default_kind = ErrorKind.SETTING


class BackfillError(ConnectorError):
    """A backfill request that would lose or duplicate rows (a bad argument)."""

    default_kind = ErrorKind.SETTING


class ArgumentError(ConnectorError):
    """A command's argument is bad (a feed name, an age); refused before any lock or network call."""

    default_kind = ErrorKind.SETTING


class AuthenticationError(ConnectorError):
    """A token could not be obtained: the credential was refused, or the authority not reached."""

    default_kind = ErrorKind.PERMISSION


class SourceError(ConnectorError):
    """Microsoft Graph message trace could not be read."""


SERVICE_PRINCIPAL_WAIT = timedelta(hours=24)
"""How long runs wait for a service principal to activate before the 401 is an error again."""


def service_principal_advice() -> str:
    """What to do about the service-principal 401: it is the same for a missing and an activating one."""
    return (
        f"the tenant's service principal for Microsoft app {SERVICE_PRINCIPAL_APP_ID} (Transport Data Platform) "
        "is missing or was created recently and is still activating (Graph answers both with the same 401 "
        "for up to several hours). If it was never created, create it once with "
        f"`New-MgServicePrincipal -AppId {SERVICE_PRINCIPAL_APP_ID}` (or POST /v1.0/servicePrincipals "
        f'{{"appId":"{SERVICE_PRINCIPAL_APP_ID}"}}); if it was, wait'
    )


class ServicePrincipalMissingError(SourceError):
    """Graph answered 401 because the Transport Data Platform app is missing or still activating.

    A run treats it as a state, not a failure, for :data:`SERVICE_PRINCIPAL_WAIT` after it
    was first seen (outcome ``waiting_for_permission``, exit 0); after that it fails with it.
    """

    default_kind = ErrorKind.PERMISSION

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Microsoft Graph refused message trace (401): {service_principal_advice()}. Graph said: {detail}"
        )
        self.detail = detail


class PermissionWaitExpiredError(SourceError):
    """The service-principal 401 has lasted longer than :data:`SERVICE_PRINCIPAL_WAIT`: no longer a wait."""

    default_kind = ErrorKind.PERMISSION

    def __init__(self, since: datetime, detail: str) -> None:
        hours = SERVICE_PRINCIPAL_WAIT / timedelta(hours=1)
        super().__init__(
            f"Microsoft Graph has refused message trace (401) since {since.strftime('%Y-%m-%dT%H:%M:%SZ')}, "
            f"more than {hours:g} h, longer than a new service principal takes to activate: check that the tenant "
            f"has one for Microsoft app {SERVICE_PRINCIPAL_APP_ID} (Get-MgServicePrincipal -Filter "
            f"\"appId eq '{SERVICE_PRINCIPAL_APP_ID}'\") and create it if not (New-MgServicePrincipal -AppId "
            f"{SERVICE_PRINCIPAL_APP_ID}). Graph said: {detail}"
        )


class GraphPermissionError(SourceError):
    """Graph answered 403: the application permission is missing."""

    default_kind = ErrorKind.PERMISSION

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Microsoft Graph refused message trace (403): grant the application permission "
            f"{MESSAGE_TRACE_PERMISSION} (with admin consent) to the connector's app or managed "
            f"identity. Graph said: {detail}"
        )


class GraphRequestError(SourceError):
    """Graph refused the request itself (a 4xx that a retry cannot fix)."""

    def __init__(self, status: int, url: str, detail: str) -> None:
        super().__init__(
            f"Microsoft Graph answered {status} for {url}: {detail}", kind=kind_for_status(status)
        )
        self.status = status


class GraphUnavailableError(SourceError):
    """Retriable failures (429, 5xx, timeouts, resets) outlasted the retries."""

    default_kind = ErrorKind.TRANSIENT


class ThrottledError(ConnectorError):
    """A service's quota asked for a wait longer than the run has left: the run ends cleanly (exit 0).

    Not a fault: quotas are shared and refill, what is committed stays committed, and
    the next run continues. The sync loop ends the run as "throttled" on any subclass.
    """

    default_kind = ErrorKind.TRANSIENT


class GraphThrottledError(ThrottledError, SourceError):
    """Graph throttled us (429) for longer than the run has left; the run ends cleanly and the next continues.

    Only a 429 is throttling: a 5xx that asks for a long wait is an outage
    (:class:`GraphUnavailableError`), so it is not hidden behind exit 0.
    """

    default_kind = ErrorKind.TRANSIENT

    def __init__(self, retry_after: float, *, asked: bool = True) -> None:
        wait = "asked to wait" if asked else "the next retry would wait"
        super().__init__(
            f"Microsoft Graph throttled message trace (429) and {wait} {retry_after:.0f} s, "
            "more than this run has left; the next run continues from the checkpoint"
        )
        self.retry_after = retry_after


class GraphQuotaWaitError(GraphThrottledError):
    """The tenant's shared Graph quota budget has no slot before the run's budget ends.

    The connector's own pacing (:mod:`connector.quota`) says so before Graph has to: the
    slice stops as after a 429, and the next run continues from the checkpoint.
    """

    def __init__(self, wait: float) -> None:
        ConnectorError.__init__(
            self,
            f"the tenant's Graph message trace quota budget has no free slot for {wait:.0f} s, more than this "
            "run has left (other runs, backfills or GRAPH_QUOTA_HEADROOM use it); the next run continues from "
            "the checkpoint",
        )
        self.retry_after = wait


class GraphResponseError(SourceError):
    """An answer that is not the documented shape (e.g. a nextLink to another host)."""


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

    def __init__(
        self,
        message: str,
        *,
        rows_failed: int,
        status: int | None = None,
        kind: ErrorKind | None = None,
        service_message: str = "",
    ) -> None:
        super().__init__(message, kind=kind or kind_for_status(status))
        self.rows_failed = rows_failed
        self.status = status
        self.service_message = service_message
        """The service's own words (its error code and message), for telling a bad row from a bad deployment."""


class FeedStalledError(ConnectorError):
    """Runs keep ending without moving the high-water mark while message trace is due."""

    default_kind = ErrorKind.TRANSIENT


class IngestionThrottledError(ThrottledError, SinkError):
    """Logs Ingestion throttled us (429) for longer than the run has left; the run ends cleanly.

    The refused rows stay uncommitted (a :class:`SinkError` says how many); the quota
    refills and the next run sends them. Another status with a long ``Retry-After`` is an
    outage, a plain :class:`SinkError`.
    """

    def __init__(self, retry_after: float, *, rows_failed: int, where: str, detail: str) -> None:
        super().__init__(
            f"Logs Ingestion API throttled {rows_failed} rows (429, {where}) and asked to wait "
            f"{retry_after:.0f} s, more than this run has left; the next run sends them. "
            f"The service said: {detail}",
            rows_failed=rows_failed,
            status=429,
        )
        self.retry_after = retry_after


class CheckpointError(ConnectorError):
    """The checkpoint (or a dead letter next to it) could not be read or written."""


class CheckpointConflictError(CheckpointError):
    """The stored checkpoint changed under us: another run is writing it."""

    default_kind = ErrorKind.CONFLICT


class CheckpointFormatError(CheckpointError):
    """The stored checkpoint is not one this version can read."""


class VerificationError(ConnectorError):
    """The workspace could not be read; the unresolved batch stays recorded."""


class RunLockedError(ConnectorError):
    """Another run holds the feed's lock; this run did nothing."""

    default_kind = ErrorKind.LOCK


class LockLostError(ConnectorError):
    """The run's lock may have expired; it stops before its next upload."""

    default_kind = ErrorKind.LOCK

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


def kind_for_status(status: int | None) -> ErrorKind:
    """What a final failing HTTP status means for the caller (None: no answer at all).

    401/403 are PERMISSION from every service; 404 means a configured endpoint or id
    names nothing (a SETTING); a status worth a retry that is still failing, or no
    answer, is TRANSIENT (the next run tries again); anything else is FATAL.
    """
    if status in (401, 403):
        return ErrorKind.PERMISSION
    if status == 404:
        return ErrorKind.SETTING
    if status is None or classify_http_status(status) is HttpDisposition.RETRY:
        return ErrorKind.TRANSIENT
    return ErrorKind.FATAL
