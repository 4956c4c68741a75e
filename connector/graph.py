"""Microsoft Graph ``messageTraces`` reader: filter, paging, retries, clear errors.

``GET {graph}/v1.0/admin/exchange/tracing/messageTraces`` with
``$filter=receivedDateTime ge {start} and receivedDateTime le {end}`` (both bounds,
both inclusive, whole seconds) and ``$top=5000``; pages follow ``@odata.nextLink``
verbatim. Retries (tenacity) cover 429, 5xx, timeouts, dropped connections and
unreadable bodies, honouring ``Retry-After``. A wait longer than the run has left is
never slept: after a 429 it ends the run cleanly
(:class:`~connector.errors.GraphThrottledError`) since the 100-requests-per-5-minutes
quota is shared by the whole tenant; after a 5xx or a dropped connection it is an
outage (:class:`~connector.errors.GraphUnavailableError`, with Graph's words). A 401 about the
missing Transport Data Platform service principal and a 403 each become one error
saying how to fix it; any other 401 refreshes the token once; an untrusted TLS
certificate is not retried (it is a setting: the CA bundle). A connection that cannot be
opened (DNS, refused, TLS, connect timeout) is retried at most ``CONNECT_RETRIES`` times and
named by host and cause. Paging rules live in :mod:`connector.paging`.

Every message trace request (each retry too) first takes a slot from the tenant's shared
quota budget (:mod:`connector.quota_store`), so runs pace themselves instead of bursting
into 429s; a slot further away than the run has left stops the slice like a 429, and a
429 that still comes is recorded for every caller. ``/domains`` is not gated: the message
trace quota covers the list and detail calls only. The next page is requested while the
caller works on the current one (``prefetch``), so Graph's time per page does not add
to the connector's.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connector import __version__
from connector.errors import (
    SERVICE_PRINCIPAL_APP_ID,
    AuthenticationError,
    ErrorKind,
    GraphPermissionError,
    GraphRequestError,
    GraphThrottledError,
    GraphUnavailableError,
    HttpDisposition,
    ServicePrincipalMissingError,
    SourceError,
    classify_http_status,
)
from connector.log_context import in_this_context
from connector.paging import NextLinkPaginator
from connector.ports import Deadline, RequestGate, SourcePage, TokenProvider
from connector.redact import safe_url
from connector.tenant_domains import verified_domains
from connector.transport import (
    CA_BUNDLE_HINT,
    CONNECT_RETRIES,
    connection_failure,
    failed_host,
    parse_retry_after,
    timeouts,
    untrusted_certificate,
)
from connector.windows import Window

logger = logging.getLogger(__name__)

MESSAGE_TRACES_PATH = "/v1.0/admin/exchange/tracing/messageTraces"
DOMAINS_PATH = "/v1.0/domains"
PAGE_SIZE = 5000
MAX_BACKOFF_SECONDS = 60.0


class _RetriableFailure(Exception):
    """One failed attempt that another attempt may fix; ``status`` None when Graph did not answer."""

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        status: int | None = None,
        *,
        connect: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status
        self.connect = connect
        """True when no connection could be opened: retried only ``CONNECT_RETRIES`` times."""


def format_filter_time(value: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ``, the documented filter format."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_trace_url(base_url: str, window: Window) -> str:
    """First-page URL for ``window`` with the closed ``ge``/``le`` filter and ``$top=5000``."""
    query = urlencode(
        {
            "$filter": f"receivedDateTime ge {format_filter_time(window.start)} "
            f"and receivedDateTime le {format_filter_time(window.end)}",
            "$top": str(PAGE_SIZE),
        },
        quote_via=quote,
        safe="$:",
    )
    return f"{base_url}{MESSAGE_TRACES_PATH}?{query}"


def detail_url(base_url: str, trace_id: str, recipient: str) -> str:
    """``getDetailsByRecipient`` of one (trace id, recipient): the address as an OData string literal.

    A quote in the address is doubled (OData's escape), and the whole function segment
    is percent-encoded, so no address can end the literal or add a query.
    """
    literal = "'" + recipient.replace("'", "''") + "'"
    segment = quote(f"getDetailsByRecipient(recipientAddress={literal})", safe="()=")
    return f"{base_url}{MESSAGE_TRACES_PATH}/{quote(trace_id, safe='')}/{segment}"


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    return str(body)[:300]


def _connect_retries_used(retry_state: RetryCallState) -> bool:
    """Stop when a connection could not be opened and ``CONNECT_RETRIES`` retries are used.

    An unreachable host answers no better on the seventh try, and HTTP_MAX_RETRIES
    backoffs of it held a run for about 90 s before it said anything.
    """
    failure = retry_state.outcome.exception() if retry_state.outcome else None
    return (
        isinstance(failure, _RetriableFailure)
        and failure.connect
        and retry_state.attempt_number > CONNECT_RETRIES
    )


class GraphMessageTraceSource:
    """Implements :class:`connector.ports.TraceSource` over Microsoft Graph."""

    def __init__(
        self,
        *,
        base_url: str,
        tokens: TokenProvider,
        session: requests.Session,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        deadline: Deadline,
        sleep: Callable[[float], None] = time.sleep,
        gate: RequestGate | None = None,
        prefetch: bool = False,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._session = session
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._deadline = deadline
        self._sleep = sleep
        self._gate = gate
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="graph-prefetch") if prefetch else None
        self.requests_sent = 0
        self.retries = 0

    def pages(self, window: Window) -> Generator[SourcePage, None, None]:
        """Yield each page of ``window``, following nextLinks as :class:`NextLinkPaginator` allows.

        The nextLink is checked before the page is handed out, so the page says whether
        another follows. With ``prefetch`` the next page is requested while the caller
        works on this one (one request in flight at most, through the same quota gate):
        Graph's seconds per page then overlap the connector's own work instead of adding
        to it, which is what keeps a catch-up at the quota's pace. Nothing is committed
        from a page before the caller has it, so exactly-once is unchanged; a caller that
        stops early (page cap, run budget) leaves one prefetched page unread.
        """
        paginator = NextLinkPaginator(message_trace_url(self._base_url, window), origin=self._base_url)
        ahead: Future[dict[str, Any]] | None = None
        try:
            while paginator.url is not None:
                try:
                    body = ahead.result() if ahead is not None else self._get_page(paginator.url)
                except GraphRequestError as err:
                    ahead = None
                    paginator.restart(err)
                    logger.warning(
                        "graph refused a nextLink (%s); reading the window again from its first page", err
                    )
                    continue
                ahead = None
                records = body["value"]
                logger.debug(
                    "graph page %d of %s..%s: %d records",
                    paginator.pages + 1,
                    window.start,
                    window.end,
                    len(records),
                )
                paginator.advance(body.get("@odata.nextLink"))
                if paginator.url is not None and self._prefetch is not None:
                    ahead = self._prefetch.submit(in_this_context(self._get_page), paginator.url)
                yield SourcePage(records=records, more=paginator.url is not None)
        finally:
            if ahead is not None and not ahead.cancel():
                # Let the request in flight end (its session is not shared while it runs); its page is dropped.
                with contextlib.suppress(Exception):
                    ahead.result()

    def close(self) -> None:
        """Stop the prefetch thread (after any request in flight)."""
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=True, cancel_futures=True)

    def tenant_domains(self) -> tuple[str, ...]:
        """The tenant's verified domains (``GET /v1.0/domains``, every page); implements ``DomainSource``.

        Same token, retries and paging rules as message trace; it does not count against
        the message trace quota (that quota covers message trace list and detail calls
        only), so it takes no slot from the quota gate. A 403 (no ``Domain.Read.All``) raises
        :class:`~connector.errors.GraphPermissionError` like any other.
        """
        records: list[dict[str, Any]] = []
        paginator = NextLinkPaginator(f"{self._base_url}{DOMAINS_PATH}", origin=self._base_url)
        while paginator.url is not None:
            body = self._get_page(paginator.url, what="domain list")
            records.extend(item for item in body["value"] if isinstance(item, dict))
            paginator.advance(body.get("@odata.nextLink"))
        return verified_domains(records)

    def details(self, trace_id: str, recipient: str) -> list[dict[str, Any]]:
        """The detail events of one (trace id, recipient) (``getDetailsByRecipient``, every page).

        Gated like a page of message trace: Graph counts list and detail calls against the
        one tenant quota.
        """
        records: list[dict[str, Any]] = []
        paginator = NextLinkPaginator(detail_url(self._base_url, trace_id, recipient), origin=self._base_url)
        while paginator.url is not None:
            body = self._get_page(paginator.url, what="message trace detail")
            records.extend(item for item in body["value"] if isinstance(item, dict))
            paginator.advance(body.get("@odata.nextLink"))
        return records

    # ------------------------------------------------------------------ one page, with retries

    def _get_page(self, url: str, *, what: str = "message trace") -> dict[str, Any]:
        state = {"force_refresh": False, "refreshed": False}
        retrying = Retrying(
            stop=lambda state: state.attempt_number > self._max_retries or _connect_retries_used(state),
            wait=self._wait,
            retry=retry_if_exception_type(_RetriableFailure),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(url, state, gated=what.startswith("message trace"))
        except _RetriableFailure as err:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise GraphUnavailableError(
                f"Microsoft Graph {what} still failing after {attempts} attempt{'s' if attempts != 1 else ''} "
                f"({safe_url(url)}): {err.reason}"
            ) from err
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _wait(self, retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = failure.retry_after if isinstance(failure, _RetriableFailure) else None
        if retry_after is not None:
            wait = retry_after
        else:
            exponential = self._backoff * (2 ** (retry_state.attempt_number - 1))
            wait = min(MAX_BACKOFF_SECONDS, exponential) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        if isinstance(failure, _RetriableFailure):
            self._check_wait(failure, wait, asked=retry_after is not None)
        return wait

    def _check_wait(self, failure: _RetriableFailure, wait: float, *, asked: bool) -> None:
        """Raise instead of waiting past the run's budget: a 429 is throttling, anything else an outage.

        Only a 429 ends the run cleanly: the quota refills. A 5xx or a dropped
        connection that would need a longer wait is Graph being down, which the
        operator must see (exit 6), not a quiet "throttled".
        """
        remaining = self._deadline.remaining()
        if wait <= 0 or wait <= remaining:
            return
        if failure.status == 429:
            raise GraphThrottledError(wait, asked=asked)
        waiting = "asked to wait" if asked else "the next retry would wait"
        raise GraphUnavailableError(
            f"Microsoft Graph message trace failed ({failure.reason}) and {waiting} {wait:.0f} s, more than "
            f"this run has left ({max(remaining, 0):.0f} s); Graph is unavailable, the next run continues "
            "from the checkpoint"
        ) from failure

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.retries += 1
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "graph request failed (%s); retry %d in %.1f s",
            failure,
            retry_state.attempt_number,
            wait,
        )

    def _attempt(self, url: str, state: dict[str, bool], *, gated: bool = False) -> dict[str, Any]:
        token = self._tokens.token(force_refresh=state["force_refresh"])
        gate = self._gate if gated else None
        if gate is not None:
            # Each attempt is a request Graph counts, retries included; a slot too far away
            # stops the slice like a 429 (GraphQuotaWaitError is a GraphThrottledError).
            gate.acquire(self._deadline)
        state["force_refresh"] = False
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Prefer": "include-unknown-enum-members",
            "client-request-id": str(uuid.uuid4()),
            "User-Agent": f"message-trace-connector/{__version__}",
        }
        self.requests_sent += 1
        try:
            response = self._session.get(url, headers=headers, timeout=timeouts(self._timeout))
        except requests.exceptions.SSLError as err:
            if untrusted_certificate(err):
                raise SourceError(
                    f"cannot read Microsoft Graph at {safe_url(url)}: {CA_BUNDLE_HINT}",
                    kind=ErrorKind.SETTING,
                ) from err
            raise _RetriableFailure(connection_failure(err) or "TLS failure", connect=True) from err
        except requests.ConnectTimeout as err:
            raise _RetriableFailure(connection_failure(err) or "timed out connecting", connect=True) from err
        except requests.Timeout as err:
            raise _RetriableFailure(f"no answer within {self._timeout:g} s") from err
        except requests.ConnectionError as err:
            opened = connection_failure(err)
            if opened is not None:
                raise _RetriableFailure(opened, connect=True) from err
            raise _RetriableFailure(
                f"connection to {failed_host(err) or 'Graph'} failed: {type(err).__name__}"
            ) from err
        status = response.status_code
        if status == 401:
            detail = _error_detail(response)
            if SERVICE_PRINCIPAL_APP_ID in detail or "service principal" in detail.lower():
                raise ServicePrincipalMissingError(detail)
            if state["refreshed"]:
                raise AuthenticationError(
                    f"Microsoft Graph rejected a freshly issued access token (401): {detail}"
                )
            state["force_refresh"] = state["refreshed"] = True
            raise _RetriableFailure(f"401 ({detail}); getting a new token", retry_after=0.0)
        if status == 403:
            raise GraphPermissionError(_error_detail(response))
        disposition = classify_http_status(status)
        if disposition is HttpDisposition.RETRY:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429 and gate is not None:
                gate.throttled(retry_after)
            failure = _RetriableFailure(f"HTTP {status} {_error_detail(response)[:200]}", retry_after, status)
            if retry_after is not None:  # also on the last attempt, where tenacity asks for no wait
                self._check_wait(failure, retry_after, asked=True)
            raise failure
        if disposition is HttpDisposition.FATAL:
            raise GraphRequestError(status, safe_url(url), _error_detail(response))
        return self._parse_body(response)

    @staticmethod
    def _parse_body(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as err:
            content_type = response.headers.get("Content-Type", "?")
            raise _RetriableFailure(
                f"200 with a body that is not JSON (Content-Type {content_type})"
            ) from err
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            raise _RetriableFailure("200 with JSON that has no 'value' list")
        return body
