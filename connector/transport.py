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
* :func:`failure_kind` sorts a failure by what the caller does, whichever client raised
  it: an untrusted certificate is a SETTING (the CA bundle), an unreachable host is
  TRANSIENT, an HTTP status means what :func:`connector.errors.kind_for_status` says.
  azure-identity and azure-core wrap transport errors, so it looks through the causes;
  :func:`describe_failure` adds the text every adapter shows with it.
* :func:`parse_retry_after` reads a ``Retry-After`` header for either tenacity loop.
"""

from __future__ import annotations

import email.utils
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from requests.adapters import HTTPAdapter

from connector.errors import ErrorKind, kind_for_status
from connector.settings import Settings

CA_BUNDLE_HINT = (
    "the server's TLS certificate is not trusted by this machine; set REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) "
    "to a CA bundle that includes its issuer (e.g. a TLS-inspecting proxy's CA)"
)


class ConnectorSession(requests.Session):
    """A session whose CA bundle and timeout apply to every request."""

    def __init__(self, *, ca_bundle: str | None, timeout_seconds: float, connection_retries: int = 0) -> None:
        super().__init__()
        self.verify = ca_bundle or True
        self._timeout = timeout_seconds
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


def retrying_options(settings: Settings) -> dict[str, Any]:
    """The CA bundle plus the HTTP_* timeouts and retries, for clients on azure-core's RetryPolicy."""
    return {
        "retry_total": settings.http_max_retries,
        "retry_backoff_factor": settings.http_retry_backoff_seconds,
        "connection_timeout": settings.http_timeout_seconds,
        "read_timeout": settings.http_timeout_seconds,
        **tls_options(settings.ca_bundle),
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
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return kind_for_status(status)
    if any(isinstance(cause, _UNREACHABLE) for cause in causes(error)):
        return ErrorKind.TRANSIENT
    return default


def describe_failure(error: BaseException, *, default: ErrorKind = ErrorKind.FATAL) -> tuple[ErrorKind, str]:
    """The kind of ``error`` and the text to show for it.

    An untrusted certificate is shown as the CA-bundle advice (the library's text only says
    the handshake failed); anything else as the error's own message (azure-core's without
    its wrapping).
    """
    kind = failure_kind(error, default=default)
    if untrusted_certificate(error):
        return kind, CA_BUNDLE_HINT
    message = getattr(error, "message", None)
    return kind, message if isinstance(message, str) and message else str(error)
