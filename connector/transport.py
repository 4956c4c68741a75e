"""How the connector talks HTTPS: one CA bundle for every client, and what a transport failure means.

* :class:`ConnectorSession` is the ``requests`` session for Graph and (as
  :class:`connector.auth.AuthoritySession`) for every call to Entra ID. ``requests`` lets
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` from the process environment override a
  session's own ``verify``; the connector reads its CA bundle from its settings (which
  may come from another mapping than ``os.environ``, as in tests and the CLI), so the
  session passes ``verify`` with every request, where it wins. It also carries a
  default timeout, and no connection-level retry: the Graph reader and the Entra ID
  session retry with tenacity, which also sees statuses and bodies.
* :func:`tls_options` is the one place the Azure SDK clients (Blob, Logs Ingestion,
  Log Analytics query, azure-identity) get the CA bundle, and :func:`retrying_options`
  adds the ``HTTP_*`` timeouts and retries for the clients on azure-core's RetryPolicy
  (Logs Ingestion, Log Analytics query; Blob Storage keeps its own retry policy).
  Their retry policy is a :class:`DeadlineRetryPolicy`: azure-core sleeps for any
  ``Retry-After`` a service sends, uncapped, so a ``Retry-After: 100000`` would hold the
  run (and its lock) for a day; this one raises :class:`WaitBeyondDeadline` instead
  of sleeping past the run's budget, and the adapter says what the status means.
* :func:`failure_kind` sorts a failure by what the caller does, whichever client raised
  it: an untrusted certificate is a SETTING (the CA bundle), an unreachable host is
  TRANSIENT, an HTTP status means what :func:`connector.errors.kind_for_status` says.
  azure-identity and azure-core wrap transport errors, so it looks through the causes;
  :func:`describe_failure` adds the text every adapter shows with it.
* :func:`parse_retry_after` reads a ``Retry-After`` header for either tenacity loop.

An unreachable host must not hold a run for minutes: every client connects within
:data:`CONNECT_TIMEOUT_SECONDS` (the read timeout stays ``HTTP_TIMEOUT_SECONDS``), a
failed connection is retried at most :data:`CONNECT_RETRIES` times (a status still
``HTTP_MAX_RETRIES`` times), and :func:`connection_failure` names the host and the
cause (DNS name not found, connection refused, TLS failure, timed out) instead of
``ConnectionError``.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from connector.errors import ConnectorError, ErrorKind, kind_for_status
from connector.ports import Deadline
from connector.redact import scrub
from connector.settings import Settings

CA_BUNDLE_HINT = (
    "the server's TLS certificate is not trusted by this machine; set REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) "
    "to a CA bundle that includes its issuer (e.g. a TLS-inspecting proxy's CA)"
)

CONNECT_TIMEOUT_SECONDS = 10.0
"""The longest any client waits to open a connection; a host that answers at all does so in far less."""
CONNECT_RETRIES = 2
BLOB_GET_BYTES = 4 << 20
"""Retries of a connection that could not be opened (DNS, refused, TLS, connect timeout)."""


def timeouts(read_timeout: float) -> tuple[float, float]:
    """``(connect, read)`` for ``requests``: a short connect, the ``HTTP_TIMEOUT_SECONDS`` read."""
    return min(CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout


# Origins one session remembers the environment's proxies for (a run talks to a handful).
_MAX_ORIGINS = 64


class EnvironmentOnceSession(requests.Session):
    """A ``requests`` session that reads the environment's proxy settings once per origin, not per request.

    With ``trust_env`` (requests' default) every request walks the whole process
    environment twice for ``*_PROXY``/``NO_PROXY`` and looks for a ``.netrc``: about a
    millisecond of CPU per request with the connector's environment, more on a Functions
    host whose app settings are environment variables, and a run sends hundreds of
    requests (two checkpoint appends per group of batches, the quota budget per page). This session
    resolves an origin's proxies the way requests does (``get_environ_proxies``, so
    ``NO_PROXY`` still exempts a host) on its first request there and keeps them; the
    environment is not expected to change under a running process. It never reads
    ``.netrc``: the connector sends only its own credentials. The CA bundle comes from the
    settings (``verify``/``connection_verify``), not from requests' own environment lookup.
    """

    def __init__(self) -> None:
        super().__init__()
        self._origin_proxies: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def trust_env(self) -> bool:
        """Always False: the environment is read here, once per origin (azure-core's setting is ignored)."""
        return False

    @trust_env.setter
    def trust_env(self, value: bool) -> None:
        pass  # requests' __init__ and azure-core's transport set it; the lookup above replaces it

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:  # requests' own settings mapping
        """The merge of ``requests.Session``, with the environment's proxies for ``url``'s origin looked up once."""
        text = url.decode() if isinstance(url, bytes) else str(url or "")
        given = dict(proxies or {})
        if "no_proxy" in given:  # a caller's own exemptions: looked up each time, as requests does
            found = get_environ_proxies(text, no_proxy=given["no_proxy"])
        else:
            parts = urlsplit(text)
            origin = (parts.scheme, parts.netloc)
            cached = self._origin_proxies.get(origin)
            if cached is None:
                if len(self._origin_proxies) >= _MAX_ORIGINS:
                    self._origin_proxies.clear()
                cached = self._origin_proxies[origin] = get_environ_proxies(text)
            found = cached
        merged = {**found, **given}  # the caller's own proxies win, as with requests' setdefault
        return super().merge_environment_settings(url, merged, stream, verify, cert)


def sdk_transport(*, ca_bundle: str | None, connect_timeout: float, read_timeout: float) -> RequestsTransport:
    """azure-core's requests transport over an :class:`EnvironmentOnceSession` (Blob, Logs Ingestion, query)."""
    return RequestsTransport(
        session=EnvironmentOnceSession(),
        session_owner=True,
        use_env_settings=False,
        connection_timeout=connect_timeout,
        read_timeout=read_timeout,
        **tls_options(ca_bundle),
    )


class ConnectorSession(EnvironmentOnceSession):
    """A session whose CA bundle and timeouts (short connect, ``timeout_seconds`` read) apply to every request."""

    def __init__(self, *, ca_bundle: str | None, timeout_seconds: float, connection_retries: int = 0) -> None:
        super().__init__()
        self.verify = ca_bundle or True
        self._timeout = timeouts(timeout_seconds)
        adapter = HTTPAdapter(max_retries=connection_retries)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send with this session's ``verify`` and timeout unless the call gives its own."""
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


def tls_options(ca_bundle: str | None) -> dict[str, Any]:
    """Keyword arguments that make an Azure SDK client trust ``ca_bundle`` (none: the system's CAs)."""
    return {} if ca_bundle is None else {"connection_verify": ca_bundle}


class WaitBeyondDeadline(Exception):
    """The next retry would wait longer than the run has left, so the policy stopped instead.

    Deliberately not an ``AzureError``: azure-core's retry loop catches those around its
    sleep and, for methods it may retry, would send the request again. The adapter turns
    it into the run's error: a 429 is throttling (the run ends cleanly), any other status
    an outage, no status (an unreachable host) a transport failure.

    Attributes:
        status: the HTTP status of the last answer, or None when there was no answer.
        wait: seconds the retry would have slept.
        asked: True when the service asked for ``wait`` (``Retry-After``), False for the
            policy's own backoff.
        detail: the service's words (its error code and message), or the transport error.
        remaining: seconds the run had left.
    """

    def __init__(
        self, *, status: int | None, wait: float, asked: bool, detail: str, remaining: float
    ) -> None:
        self.status = status
        self.wait = wait
        self.asked = asked
        self.detail = detail
        self.remaining = remaining
        answered = "no answer" if status is None else f"HTTP {status}"
        super().__init__(f"{answered} and {self.waiting}, more than the run has left: {detail}")

    @property
    def waiting(self) -> str:
        """``asked to wait N s`` or ``the next retry would wait N s``, for messages."""
        return f"{'asked to wait' if self.asked else 'the next retry would wait'} {self.wait:.0f} s"


def _service_words(response: PipelineResponse[Any, Any]) -> str:
    """The first line of azure-core's reading of an error answer: ``(Code) message``."""
    answer = response.http_response
    try:
        message = HttpResponseError(response=answer).message
    except Exception:  # noqa: BLE001 - a body that cannot be read still has a status to report
        message = ""
    return scrub(message.splitlines()[0])[:400] if message else f"HTTP {answer.status_code}"


class DeadlineRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy that never sleeps past the run's deadline.

    Everything else (what is retried, how many times, the backoff, ``Retry-After`` in
    seconds, as a date or in ms headers) stays azure-core's; only :meth:`sleep`, the
    one place it waits, checks first whether the wait fits in ``deadline.remaining()``
    and raises :class:`WaitBeyondDeadline` when it does not.
    """

    def __init__(self, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deadline = deadline

    def sleep(
        self,
        settings: dict[str, Any],
        transport: HttpTransport[Any, Any],
        response: PipelineResponse[Any, Any] | None = None,
    ) -> None:
        """Sleep as azure-core would, unless that wait is longer than the run has left."""
        retry_after = self.get_retry_after(response) if response is not None else None
        # azure-core treats a zero Retry-After as absent and falls back to its backoff.
        asked = bool(retry_after)
        wait = retry_after if retry_after else self.get_backoff_time(settings)
        remaining = self._deadline.remaining()
        if wait > 0 and wait > remaining:
            raise self._beyond(settings, response, wait=wait, asked=asked, remaining=remaining)
        super().sleep(settings, transport, response)

    @staticmethod
    def _beyond(
        settings: dict[str, Any],
        response: PipelineResponse[Any, Any] | None,
        *,
        wait: float,
        asked: bool,
        remaining: float,
    ) -> WaitBeyondDeadline:
        """The stop, naming the last failure (the answer, or the transport error from the history)."""
        if response is not None:
            status: int | None = response.http_response.status_code
            detail = _service_words(response)
        else:
            last = settings["history"][-1] if settings.get("history") else None
            answer = getattr(last, "http_response", None)
            error = getattr(last, "error", None)
            status = answer.status_code if answer is not None else None
            detail = describe_failure(error)[1] if isinstance(error, BaseException) else "no answer"
        return WaitBeyondDeadline(status=status, wait=wait, asked=asked, detail=detail, remaining=remaining)


def blob_options(settings: Settings) -> dict[str, Any]:
    """The CA bundle, a short connect timeout and bounded connection retries, for Blob Storage clients.

    Blob keeps its own retry policy (statuses, backoff from ``HTTP_RETRY_BACKOFF_SECONDS``);
    without these an unreachable account took its default 3 connect retries 15 s apart.
    """
    connect, read = timeouts(settings.http_timeout_seconds)
    return {
        "connection_timeout": connect,
        "read_timeout": read,
        "retry_connect": CONNECT_RETRIES,
        "initial_backoff": settings.http_retry_backoff_seconds,
        # Downloads in 4 MiB pieces: the default first GET of 32 MiB is held twice (the HTTP
        # answer and the SDK's copy) beside the buffer a large checkpoint is read into.
        "max_single_get_size": BLOB_GET_BYTES,
        "max_chunk_get_size": BLOB_GET_BYTES,
        **tls_options(settings.ca_bundle),
        "transport": sdk_transport(ca_bundle=settings.ca_bundle, connect_timeout=connect, read_timeout=read),
    }


def retrying_options(settings: Settings, deadline: Deadline) -> dict[str, Any]:
    """The CA bundle, the HTTP_* timeouts, and retries that end by ``deadline``, for azure-core clients.

    The generated Logs Ingestion and Log Analytics query clients take ``retry_policy``
    as is (``kwargs.get("retry_policy")``), so the ``HTTP_*`` retry settings go to the
    policy rather than to the client.
    """
    connect, read = timeouts(settings.http_timeout_seconds)
    return {
        "retry_policy": DeadlineRetryPolicy(
            deadline,
            retry_total=settings.http_max_retries,
            retry_connect=min(CONNECT_RETRIES, settings.http_max_retries),
            retry_backoff_factor=settings.http_retry_backoff_seconds,
        ),
        "connection_timeout": connect,
        "read_timeout": read,
        **tls_options(settings.ca_bundle),
        "transport": sdk_transport(ca_bundle=settings.ca_bundle, connect_timeout=connect, read_timeout=read),
    }


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = (now or (lambda: datetime.now(UTC)))()
    return max(0.0, (when - current).total_seconds())


_LINKS = ("__cause__", "__context__", "inner_exception", "exc_value", "reason")


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it wraps (Python chaining, azure-core, urllib3)."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, name, None) for name in _LINKS] + list(current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))


def untrusted_certificate(error: BaseException) -> bool:
    """True when a TLS handshake failed because the server's certificate is not trusted."""
    return any(
        isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cause)
        for cause in causes(error)
    )


_UNREACHABLE = (
    requests.ConnectionError,
    requests.Timeout,
    ServiceRequestError,
    ServiceResponseError,
    ConnectionError,
    TimeoutError,
)


def failure_kind(error: BaseException, *, default: ErrorKind = ErrorKind.FATAL) -> ErrorKind:
    """What the caller does about ``error``: fix the CA bundle, fix a grant, wait for the next run, or read it."""
    if untrusted_certificate(error):
        return ErrorKind.SETTING
    ours = next((cause for cause in causes(error) if isinstance(cause, ConnectorError)), None)
    if ours is not None:  # one of our errors raised inside an SDK call (a credential's) keeps its kind
        return ours.kind
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return kind_for_status(status)
    if any(isinstance(cause, _UNREACHABLE) for cause in causes(error)):
        return ErrorKind.TRANSIENT
    return default


def connection_cause(error: BaseException) -> str | None:
    """Why a connection could not be opened, in words; None if ``error`` is not such a failure."""
    found = list(causes(error))
    checks: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
        ((socket.gaierror,), "DNS name not found"),
        ((ConnectionRefusedError,), "connection refused"),
        ((ssl.SSLError,), "TLS failure"),
        ((requests.ConnectTimeout,), "timed out connecting"),
        ((ConnectionResetError,), "connection reset"),
    )
    for types, words in checks:
        if any(isinstance(cause, types) for cause in found):
            return words
    return None


def failed_host(error: BaseException) -> str | None:
    """The host ``error`` failed to reach, from urllib3's pool or connection or the request's URL."""
    for cause in causes(error):
        # urllib3 2 errors carry ``conn`` (and a deprecated ``pool`` property), MaxRetryError ``pool``.
        pool = (
            None if isinstance(getattr(type(cause), "pool", None), property) else getattr(cause, "pool", None)
        )
        for holder in (getattr(cause, "conn", None), pool):
            host = getattr(holder, "host", None)
            if isinstance(host, str) and host:
                return host
        request = getattr(cause, "request", None)
        url = getattr(request, "url", None)
        if isinstance(url, str) and urlsplit(url).hostname:
            return urlsplit(url).hostname
    return None


def connection_failure(error: BaseException) -> str | None:
    """``cannot connect to HOST: CAUSE`` for a connection that could not be opened, else None."""
    cause = connection_cause(error)
    if cause is None:
        return None
    host = failed_host(error)
    return f"cannot connect to {host or 'the service'}: {cause}"


def describe_failure(error: BaseException, *, default: ErrorKind = ErrorKind.FATAL) -> tuple[ErrorKind, str]:
    """The kind of ``error`` and the text to show for it.

    An untrusted certificate is shown as the CA-bundle advice (the library's text only says
    the handshake failed); a connection that could not be opened as the host and the cause
    (:func:`connection_failure`); anything else as the error's own message (azure-core's without
    its wrapping), scrubbed: SDK texts name the URL they failed on, query string (a SAS) included.
    """
    kind = failure_kind(error, default=default)
    if untrusted_certificate(error):
        return kind, CA_BUNDLE_HINT
    unreachable = connection_failure(error) if kind is ErrorKind.TRANSIENT else None
    if unreachable is not None:
        return kind, unreachable
    message = getattr(error, "message", None)
    return kind, scrub(message if isinstance(message, str) and message else str(error))
