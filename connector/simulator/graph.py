"""Fake Microsoft Graph ``GET /v1.0/admin/exchange/tracing/messageTraces`` and its details function.

``GET .../messageTraces/{id}/getDetailsByRecipient(recipientAddress='...')`` answers the
``exchangeMessageTraceDetail`` events the simulator derives from the stored record
(:func:`detail_events`), under the same auth, permission flags, faults, request log and
per-tenant quota as the list (the two share the tenant's 100 requests / 5 minutes).

Why it is this detailed: the hard parts of the connector are exactly the
service's edges, so the simulator reproduces them instead of returning canned
pages:

* ``$filter=receivedDateTime ge {start} and receivedDateTime le {end}`` (the
  only filter the connector sends) with the window rules (both bounds,
  end <= now, start >= now - 90 d, span <= 10 d); any other clause is a 400.
  No filter means the last 48 hours, as documented;
* ``$top`` 1..5000 (default 1000) and opaque ``$skiptoken`` paging through
  ``@odata.nextLink``, evaluated against the data *as it is at each request*
  (newly published rows shift later pages, as offset-based paging does);
* publication delay (a row is invisible until the clock reaches its
  ``visible_at``) and status changes over time (``pending`` -> ``delivered``);
* inconsistent status casing (the docs show ``delivered``, tenants have seen
  ``Delivered``) and the evolvable enum (``recalled`` only with
  ``Prefer: include-unknown-enum-members``, otherwise ``unknownFutureValue``);
* the per-tenant rolling quota (100 requests / 5 min) with 429 + Retry-After,
  the missing-service-principal 401 and missing-permission 403, all in Graph's
  error shape (``error.code``, ``error.message``, ``error.innerError``);
* several tenants behind one URL, as ``graph.microsoft.com`` is: the bearer token's
  ``tid`` picks the tenant (:class:`GraphTenant`: its records, quota, domains,
  publication delay, permission flags and faults); one tenant's 429s, outages or
  missing permissions never touch another's. The server's own data attributes
  (``add``, ``rows``, ``quota``, ``inject``, ...) are those of its default tenant;
* scripted faults (5xx, 429, dropped connections, slow answers, cut JSON, HTML,
  a nextLink loop, a corrupt ``$skiptoken``).

Graph ``/beta`` is not served: the connector only calls ``/v1.0``.

Sort order of real results is undocumented; the simulator returns newest
first with ties broken by (id, recipient), so tests are deterministic.

The data clock (``clock``) is the simulator's notion of "now" for the window
rules, visibility and status history. The quota uses ``time.monotonic``
because ``Retry-After`` is a real-time promise to the client.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import math
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from xml.sax.saxutils import escape as _xml_escape

from .entra import (
    DOMAIN_READ_ROLE,
    GRAPH_RESOURCE,
    MESSAGE_TRACE_ROLE,
    REASON_EXPIRED,
    REASON_MISSING,
    REASON_NOT_YET_VALID,
    Claims,
    TokenValidator,
    unverified_tenant,
)
from .entra import REASON_WRONG_AUDIENCE as _WRONG_AUDIENCE
from .http import Fault, FaultQueue, Request, RequestRecord, Response, SimulatedHttpServer, build_fault

StatusCase = Literal["camel", "pascal", "mixed"]
Clock = Callable[[], datetime]

TRANSPORT_DATA_PLATFORM_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
SP_MISSING_MESSAGE = (
    "Service principal-less Authentication failed: the service principal for App ID "
    f"{TRANSPORT_DATA_PLATFORM_APP_ID} was not found. Please create a service principal for this app in your "
    "tenant. Provisioning may take several hours to complete."
)
EXPIRED_TOKEN_MESSAGE = "Access token has expired or is not yet valid."

STATUSES: tuple[str, ...] = (
    "gettingStatus",
    "pending",
    "failed",
    "delivered",
    "expanded",
    "quarantined",
    "filteredAsSpam",
    "unknownFutureValue",
    "recalled",
)
_STATUS_BY_LOWER = {s.lower(): s for s in STATUSES}
GRAPH_PROPERTIES: tuple[str, ...] = (
    "id",
    "senderAddress",
    "recipientAddress",
    "messageId",
    "receivedDateTime",
    "subject",
    "size",
    "fromIP",
    "toIP",
    "status",
)
MESSAGE_TRACES_PATH = "/v1.0/admin/exchange/tracing/messageTraces"
DOMAINS_PATH = "/v1.0/domains"
DOMAINS_PAGE_SIZE = 100
DEFAULT_LOCAL_DOMAINS: tuple[str, ...] = ("contoso.com", "fabrikam.com")
"""The simulated tenant's own domains: the traffic's senders and recipients, and what ``/domains`` lists."""
GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
MAX_TOP = 5000
DEFAULT_TOP = 1000
MAX_WINDOW = timedelta(days=10)
RETENTION = timedelta(days=90)
DEFAULT_WINDOW_WITHOUT_FILTER = timedelta(hours=48)
_EPOCH_MIN = datetime(1, 1, 1, tzinfo=UTC)

_DATETIME_LITERAL = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)
_RANGE_CLAUSE = re.compile(r"receivedDateTime\s+(?P<op>[a-z]+)\s+(?P<value>\S+)", re.IGNORECASE)


def parse_graph_datetime(text: str) -> datetime:
    """Parse an ISO 8601 DateTimeOffset (``Z`` or offset, optional fraction) to aware UTC."""
    if not _DATETIME_LITERAL.fullmatch(text):
        raise ValueError(f"not an ISO 8601 DateTimeOffset: {text!r}")
    value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return value.astimezone(UTC)


def format_graph_datetime(value: datetime) -> str:
    """Format like Graph's samples: ``2026-01-21T14:12:34.109Z`` (UTC, milliseconds)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def normalise_status(status: str) -> str:
    """Map any casing of a status to Graph's camelCase enum member."""
    try:
        return _STATUS_BY_LOWER[status.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown exchangeMessageTraceStatus {status!r}") from None


def pascal(status: str) -> str:
    """``filteredAsSpam`` -> ``FilteredAsSpam``."""
    return status[:1].upper() + status[1:]


DETAILS_FUNCTION = "getDetailsByRecipient"
DETAILS_CONTEXT = "$metadata#Collection(microsoft.graph.exchangeMessageTraceDetail)"
# ``{MESSAGE_TRACES_PATH}/{id}/getDetailsByRecipient...``: the function name matched case-insensitively, the
# rest of the (already percent-decoded) segment parsed by :func:`parse_details_arguments`.
_DETAILS_ROUTE = (
    re.escape(MESSAGE_TRACES_PATH) + r"/(?P<trace_id>[^/]+)/(?i:getDetailsByRecipient)(?P<args>(?s:.*))"
)
_DETAILS_ARGS = re.compile(r"\(\s*recipientAddress\s*=\s*'(?P<value>(?:[^']|'')*)'\s*\)", re.IGNORECASE)

# After the Receive event, by the status the record has at the request: (event, action, description, data).
_RECIPIENT_COUNT = '<root><MEP Name="RecipientCount" Integer="1"/></root>'
_FOLLOW_UP_EVENTS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "gettingStatus": (),
    "unknownFutureValue": (),
    "pending": (
        (
            "Pending",
            "",
            "The message is waiting to be delivered; the next delivery attempt is scheduled.",
            '<root><MEP Name="DeferReason" String="TransientFailure"/></root>',
        ),
    ),
    "delivered": (("Deliver", "", "The message was successfully delivered.", _RECIPIENT_COUNT),),
    "failed": (
        (
            "Fail",
            "",
            "Reason: [{LED=550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
            "lookup};{MSG=};{FQDN=};{IP=};{LRT=}].",
            '<root><MEP Name="ErrorCode" String="550 5.1.10"/></root>',
        ),
    ),
    "expanded": (
        (
            "Expand",
            "",
            "The message was sent to a distribution group, which was expanded to its members.",
            _RECIPIENT_COUNT,
        ),
    ),
    "quarantined": (
        (
            "Quarantine",
            "Quarantine",
            "The message was quarantined.",
            '<root><MEP Name="FilteringAgent" String="SpamFilter"/></root>',
        ),
    ),
    "filteredAsSpam": (
        (
            "Spam",
            "MoveToJmf",
            "The message was marked as spam and moved to the Junk Email folder.",
            '<root><MEP Name="FilteringAgent" String="SpamFilter"/></root>',
        ),
        ("Deliver", "", "The message was successfully delivered to the Junk Email folder.", _RECIPIENT_COUNT),
    ),
    "recalled": (
        ("Deliver", "", "The message was successfully delivered.", _RECIPIENT_COUNT),
        ("Recall", "", "The message was recalled by its sender.", "<root/>"),
    ),
}
_SERVER_PREFIXES = ("MN2", "BY5", "CH3", "SN6", "DM6", "PH0")


def parse_details_arguments(args: str) -> str:
    """The recipient of ``getDetailsByRecipient``'s (percent-decoded) argument list, e.g. ``(recipientAddress='a@b')``.

    Accepted: exactly one parameter, ``recipientAddress`` (name matched case-insensitively, spaces allowed
    around ``=`` and inside the parentheses), an OData string literal in single quotes with a quote inside
    doubled (``'o''brien@contoso.com'`` is ``o'brien@contoso.com``), not empty. Not accepted: a missing or
    unquoted value, other or extra parameters, parameter aliases (``=@p``), anything after the ``)``.

    Raises:
        ValueError: the segment is malformed (the server answers 400).
    """
    match = _DETAILS_ARGS.fullmatch(args)
    if match is None:
        raise ValueError(
            f"The segment '{DETAILS_FUNCTION}{args}' is malformed: expected "
            f"{DETAILS_FUNCTION}(recipientAddress='{{address}}') with the address as a single-quoted string "
            "literal (a quote inside doubled)."
        )
    value = match["value"].replace("''", "'")
    if not value.strip():
        raise ValueError("The parameter 'recipientAddress' of getDetailsByRecipient must not be empty.")
    return value


def _detail_time(value: datetime, fraction: bool) -> str:
    utc = value.astimezone(UTC)
    return format_graph_datetime(utc) if fraction else utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def detail_events(
    data: Mapping[str, Any], status: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``exchangeMessageTraceDetail`` objects the simulator derives for one record (deterministic).

    Args:
        data: the record's Graph properties (``id``, ``messageId``, ``receivedDateTime``, ``senderAddress``,
            ``recipientAddress``, ``fromIP``).
        status: its status (any casing) as of the request.
        since: when that status took effect (default: ``receivedDateTime``).

    A ``Receive`` event at ``receivedDateTime`` comes first, then the events of the status (``Deliver``,
    ``Fail``, ``Pending``, ``Expand``, ``Quarantine``, ``Spam`` + ``Deliver``, ``Deliver`` + ``Recall``;
    none for ``gettingStatus`` / ``unknownFutureValue``), ``step`` (1..4, from a hash of the trace id) seconds
    apart and never before ``since``. ``dateTime`` keeps milliseconds only when ``receivedDateTime`` has a
    fraction. The receiving server name also comes from the trace id's hash.
    """
    raw_received = str(data["receivedDateTime"])
    received = parse_graph_datetime(raw_received)
    fraction = "." in raw_received
    digest = hashlib.sha256(str(data["id"]).lower().encode("utf-8")).digest()
    step = timedelta(seconds=1 + digest[0] % 4)
    server = (
        f"{_SERVER_PREFIXES[digest[1] % len(_SERVER_PREFIXES)]}PR{digest[2] % 100:02d}MB"
        f"{int.from_bytes(digest[3:5], 'big') % 10000:04d}"
    )
    fqdn = f"{server}.namprd{digest[5] % 100:02d}.prod.outlook.com"
    receive_data = (
        f'<root><MEP Name="Connector" String="Default {server}"/>'
        f'<MEP Name="ReturnPath" String="{_xml_escape(str(data["senderAddress"]), {chr(34): "&quot;"})}"/>'
    )
    if data.get("fromIP"):
        receive_data += (
            f'<MEP Name="ClientIP" String="{_xml_escape(str(data["fromIP"]), {chr(34): "&quot;"})}"/>'
        )
    receive_data += "</root>"
    events = [("Receive", "", f"Message received by: {fqdn}", receive_data, received)]
    start = max(received, since or received)
    for index, (event, action, description, detail) in enumerate(
        _FOLLOW_UP_EVENTS[normalise_status(status)], start=1
    ):
        at = max(received + step * index, start + step * (index - 1))
        events.append((event, action, description, detail, at))
    return [
        {
            "id": data["id"],
            "messageId": data["messageId"],
            "dateTime": _detail_time(at, fraction),
            "event": event,
            "action": action,
            "description": description,
            "data": detail,
        }
        for event, action, description, detail, at in events
    ]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A scheduled status change of one (trace id, recipient)."""

    id: str
    recipient: str
    status: str
    at: datetime


@dataclass(slots=True)
class _TraceRow:
    data: dict[str, Any]  # Graph properties except status
    received: datetime
    visible_at: datetime
    history: list[tuple[datetime, str]]  # sorted by time; first entry at _EPOCH_MIN

    def status_at(self, now: datetime) -> str:
        current = self.history[0][1]
        for effective, status in self.history:
            if effective <= now:
                current = status
            else:
                break
        return current


def _key(trace_id: str, recipient: str) -> tuple[str, str]:
    return trace_id.lower(), recipient.lower()


_ONE_MICROSECOND = timedelta(microseconds=1)

# A row's place in answers: newest first (negated microseconds), ties by (id, recipient lower-cased),
# then its store key (never compared: (id, recipient) is unique).
_Order = tuple[int, str, str, tuple[str, str]]


def _micros(value: datetime) -> int:
    return (value - _EPOCH_MIN) // _ONE_MICROSECOND


def _order_of(key: tuple[str, str], trace: _TraceRow) -> _Order:
    data = trace.data
    return (-_micros(trace.received), str(data["id"]), str(data["recipientAddress"]).lower(), key)


class MessageTraceStore:
    """Thread-safe store of trace rows with visibility and status history.

    A time index keeps a page request at O(log n + page + rows not yet visible) rather
    than a scan of every stored row, so the simulator is not what limits a benchmark of
    the connector: ``_order`` holds every row in answer order (sorted lazily after adds),
    ``_by_visible`` every row by the time it becomes visible, so the rows still hidden at
    a request's ``now`` are a suffix of it.

    Args:
        clock: the simulator's data clock (aware UTC).
        publication_delay: default delay between ``receivedDateTime`` and
            visibility when :meth:`add` gets no ``visible_at``.
    """

    def __init__(self, clock: Clock, publication_delay: timedelta = timedelta(0)) -> None:
        self._clock = clock
        self.publication_delay = publication_delay
        self._rows: dict[tuple[str, str], _TraceRow] = {}
        self._order: list[_Order] = []
        self._by_visible: list[tuple[int, _Order]] = []
        self._sorted = True
        self._lock = threading.RLock()

    def add(
        self,
        rows: Iterable[Mapping[str, Any]],
        visible_at: datetime | Callable[[Mapping[str, Any]], datetime] | None = None,
    ) -> int:
        """Add Graph rows; returns how many were added.

        Args:
            rows: dicts with Graph's ``exchangeMessageTrace`` properties.
            visible_at: when the rows appear in query results: a datetime for
                all, a function of the row, or ``None`` for
                ``receivedDateTime + publication_delay``.

        Raises:
            ValueError: a row lacks a property, has a bad value, or its
                (id, recipientAddress) already exists (use :meth:`set_status`).
        """
        prepared: list[tuple[tuple[str, str], _TraceRow]] = []
        for row in rows:
            missing = [p for p in GRAPH_PROPERTIES if p not in row]
            if missing:
                raise ValueError(f"trace row lacks {missing}: {row!r}")
            received = parse_graph_datetime(str(row["receivedDateTime"]))
            status = normalise_status(str(row["status"]))
            if callable(visible_at):
                when = visible_at(row)
            elif visible_at is not None:
                when = visible_at
            else:
                when = received + self.publication_delay
            data = {p: row[p] for p in GRAPH_PROPERTIES if p != "status"}
            prepared.append(
                (
                    _key(str(row["id"]), str(row["recipientAddress"])),
                    _TraceRow(data=data, received=received, visible_at=when, history=[(_EPOCH_MIN, status)]),
                )
            )
        with self._lock:
            seen: set[tuple[str, str]] = set()
            for key, _ in prepared:
                if key in self._rows or key in seen:
                    raise ValueError(f"duplicate trace row (id, recipientAddress) = {key}")
                seen.add(key)
            for key, trace in prepared:
                self._rows[key] = trace
                order = _order_of(key, trace)
                self._order.append(order)
                self._by_visible.append((_micros(trace.visible_at), order))
            self._sorted = not prepared and self._sorted
        return len(prepared)

    def set_status(self, trace_id: str, recipient: str, status: str, at: datetime | None = None) -> None:
        """Change a row's status from ``at`` on (default: the clock's now).

        Raises:
            KeyError: no such (id, recipient).
        """
        canonical = normalise_status(status)
        when = at if at is not None else self._clock()
        with self._lock:
            trace = self._rows[_key(trace_id, recipient)]
            trace.history.append((when, canonical))
            trace.history.sort(key=lambda item: item[0])

    def schedule(self, changes: Iterable[StatusChange]) -> int:
        """Apply many :class:`StatusChange` (e.g. from ``plan_status_changes``)."""
        count = 0
        for change in changes:
            self.set_status(change.id, change.recipient, change.status, change.at)
            count += 1
        return count

    def publish_all(self) -> None:
        """Make every stored row visible now, regardless of its ``visible_at``."""
        with self._lock:
            for trace in self._rows.values():
                trace.visible_at = _EPOCH_MIN
            self._by_visible = [(_micros(_EPOCH_MIN), order) for _, order in self._by_visible]

    def rows(self, visible_only: bool = False) -> list[dict[str, Any]]:
        """Copies of the rows with their status as of now, oldest first."""
        now = self._clock()
        with self._lock:
            traces = sorted(
                self._rows.values(), key=lambda t: (t.received, t.data["id"], t.data["recipientAddress"])
            )
            return [
                {**trace.data, "status": trace.status_at(now)}
                for trace in traces
                if not visible_only or trace.visible_at <= now
            ]

    def visible_row(
        self, trace_id: str, recipient: str, now: datetime
    ) -> tuple[dict[str, Any], str, datetime] | None:
        """One row (matched case-insensitively) if it is visible at ``now``: its data, status then and since when.

        The "since when" is the time its current status took effect (its ``receivedDateTime`` for the status
        it was added with).
        """
        with self._lock:
            trace = self._rows.get(_key(trace_id, recipient))
            if trace is None or trace.visible_at > now:
                return None
            since = trace.received
            status = trace.history[0][1]
            for effective, later in trace.history:
                if effective > now:
                    break
                if later != status:
                    status, since = later, max(effective, trace.received)
            return dict(trace.data), status, since

    def clear(self) -> None:
        """Remove every row."""
        with self._lock:
            self._rows.clear()
            self._order.clear()
            self._by_visible.clear()
            self._sorted = True

    def query(self, start: datetime, end: datetime, now: datetime) -> list[tuple[dict[str, Any], str]]:
        """Visible rows with start <= received <= end, newest first, with status at ``now``."""
        rows, _ = self.page(start, end, now, offset=0, top=None)
        return rows

    def page(
        self, start: datetime, end: datetime, now: datetime, *, offset: int, top: int | None
    ) -> tuple[list[tuple[dict[str, Any], str]], int]:
        """``top`` of :meth:`query`'s rows from ``offset`` on (None: all), and how many it holds in all."""
        first, last = -_micros(end), -_micros(start)
        with self._lock:
            if not self._sorted:
                self._order.sort()
                self._by_visible.sort()
                self._sorted = True
            order = self._order
            low = bisect.bisect_left(order, (first,))
            high = bisect.bisect_left(order, (last + 1,))
            # Rows in range that are not visible yet: skipped positions, in answer order.
            hidden_from = bisect.bisect_left(self._by_visible, (_micros(now) + 1,))
            hidden = sorted(
                bisect.bisect_left(order, item, low, high)
                for _, item in self._by_visible[hidden_from:]
                if first <= item[0] <= last
            )
            position = low + offset
            for index in hidden:  # the offset-th visible row comes after every hidden row before it
                if index > position:
                    break
                position += 1
            skip = set(hidden)
            chosen: list[tuple[dict[str, Any], str]] = []
            while position < high and (top is None or len(chosen) < top):
                if position not in skip:
                    trace = self._rows[order[position][3]]
                    chosen.append((dict(trace.data), trace.status_at(now)))
                position += 1
            return chosen, high - low - len(hidden)


class SlidingWindowQuota:
    """Rolling-window request quota (Graph message trace: 100 per 300 s per tenant)."""

    def __init__(self, limit: int = 100, window_seconds: float = 300.0) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: str) -> float | None:
        """Take a slot; returns ``None`` if allowed, else seconds until one frees."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window_seconds:
                hits.popleft()
            if len(hits) < self.limit:
                hits.append(now)
                return None
            return max(0.0, hits[0] + self.window_seconds - now)

    def reset(self) -> None:
        """Forget every request."""
        with self._lock:
            self._hits.clear()


class GraphError(Exception):
    """A Graph error response in the making (status, code, message)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class GraphTenant:
    """One tenant's side of Graph: its message traces, quota, domains, flags and faults.

    Args:
        server: the Graph server it belongs to.
        tenant_id: the tenant GUID (tokens with this ``tid`` read this data).
        clock: the data clock.
        quota_limit, quota_window_seconds: the tenant's rolling quota.
        publication_delay: default delay before added rows become visible.
        domains: the tenant's own domain names (the first is the default one).
        initial_domain: its ``<name>.onmicrosoft.com`` domain.
        faults: the queue of faults for this tenant's requests.

    Attributes (settable at any time):
        store, quota, domains, service_principal_missing, permission_granted,
        domains_permission_granted, domains_page_size: as on :class:`GraphServer`.
    """

    def __init__(
        self,
        server: GraphServer,
        tenant_id: str,
        clock: Clock,
        *,
        quota_limit: int = 100,
        quota_window_seconds: float = 300.0,
        publication_delay: timedelta = timedelta(0),
        domains: tuple[str, ...] = DEFAULT_LOCAL_DOMAINS,
        initial_domain: str | None = None,
        faults: FaultQueue | None = None,
    ) -> None:
        self._server = server
        self._clock = clock
        self.tenant_id = tenant_id
        self.local_domains = tuple(domains)
        self.initial_domain = initial_domain or INITIAL_DOMAIN
        self.store = MessageTraceStore(clock, publication_delay)
        self.quota = SlidingWindowQuota(quota_limit, quota_window_seconds)
        self.faults = faults or FaultQueue()
        self._defaults = (quota_limit, quota_window_seconds, publication_delay)
        self.domains: list[dict[str, Any]] = tenant_domains(self.local_domains, self.initial_domain)
        self.service_principal_missing = False
        self.permission_granted = True
        self.domains_permission_granted = True
        self.domains_page_size = DOMAINS_PAGE_SIZE

    @property
    def is_default(self) -> bool:
        """Whether this is the server's default tenant (whose requests are ``server.requests()``)."""
        return self is self._server.default_tenant

    # ------------------------------------------------------------ data API
    def add(
        self,
        rows: Iterable[Mapping[str, Any]],
        visible_at: datetime | Callable[[Mapping[str, Any]], datetime] | None = None,
    ) -> int:
        """Add rows (see :meth:`MessageTraceStore.add`)."""
        return self.store.add(rows, visible_at)

    def set_status(self, trace_id: str, recipient: str, status: str, at: datetime | None = None) -> None:
        """Change a row's status from ``at`` (default now) on."""
        self.store.set_status(trace_id, recipient, status, at)

    def schedule(self, changes: Iterable[StatusChange]) -> int:
        """Apply scheduled status changes."""
        return self.store.schedule(changes)

    def publish_all(self) -> None:
        """Make every row visible now."""
        self.store.publish_all()

    def rows(self, visible_only: bool = False) -> list[dict[str, Any]]:
        """Copies of stored rows with their current status."""
        return self.store.rows(visible_only)

    def details(self, trace_id: str, recipient: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """What ``getDetailsByRecipient`` answers for (trace id, recipient) at ``now`` (default: the clock's now).

        ``[]`` when the tenant has no such record or it is not visible yet (see :func:`detail_events`).
        """
        found = self.store.visible_row(trace_id, recipient, now if now is not None else self._clock())
        if found is None:
            return []
        data, status, since = found
        return detail_events(data, status, since)

    def inject(self, status: int | str = 500, *, path: str | None = None, **kwargs: Any) -> Fault:
        """Queue a fault for this tenant's requests (as :meth:`GraphServer.inject`: message trace unless ``path``)."""
        return self.faults.add(
            build_fault(status, path=re.escape(MESSAGE_TRACES_PATH) if path is None else path, **kwargs)
        )

    def clear_faults(self) -> None:
        """Drop this tenant's queued faults."""
        self.faults.clear()

    def pending_faults(self) -> list[Fault]:
        """This tenant's faults not used up yet."""
        return self.faults.pending()

    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Requests made with this tenant's tokens (the default tenant's: also those without a usable token)."""
        if self.is_default:
            return self._server.requests(path, method)
        return self._server.scoped_requests(self.tenant_id.lower(), path, method)

    def reset(self) -> None:
        """Clear rows, faults, quota and flags back to this tenant's defaults."""
        limit, window, delay = self._defaults
        self.store.clear()
        self.store.publication_delay = delay
        self.quota.reset()
        self.quota.limit, self.quota.window_seconds = limit, window
        self.faults.clear()
        self.domains = tenant_domains(self.local_domains, self.initial_domain)
        self.service_principal_missing = False
        self.permission_granted = True
        self.domains_permission_granted = True
        self.domains_page_size = DOMAINS_PAGE_SIZE


class GraphServer(SimulatedHttpServer):
    """Fake Graph serving ``GET /v1.0/admin/exchange/tracing/messageTraces``.

    Args:
        ssl_context: server TLS context.
        validate_token: ``EntraServer.validate_bearer``.
        tenant_id: the default tenant; tokens of tenants Graph does not know
            (:meth:`add_tenant`) are rejected.
        clock: the data clock (aware UTC ``datetime``).
        status_case: ``"camel"``, ``"pascal"`` or ``"mixed"`` (alternates per response).
        quota_limit, quota_window_seconds: rolling quota per tenant.

    Attributes (settable at any time; the per-tenant ones act on the default tenant,
    :attr:`default_tenant`; :meth:`tenant` has the others):
        status_case, send_retry_after, max_page_size, page_latency: server-wide.
        service_principal_missing, permission_granted, quota (``SlidingWindowQuota``),
        store (``MessageTraceStore``), domains, domains_permission_granted, domains_page_size:
        per tenant.
        max_page_size: the server's own page limit (``None``: ``$top`` decides); Graph, like
            any OData service, may send fewer records per page than ``$top`` asks for.
        domains: the tenant's domains ``GET /v1.0/domains`` lists, as Graph's ``domain``
            objects (:func:`domain_object`); by default the traffic generator's local domains,
            verified, plus the initial ``<tenant>.onmicrosoft.com`` one.
        domains_permission_granted: False answers ``/domains`` with the 403 of a missing
            ``Domain.Read.All`` (the token's ``roles`` claim must hold it too).
        domains_page_size: domain objects per ``/domains`` page (nextLink after).
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        validate_token: TokenValidator,
        tenant_id: str,
        clock: Clock,
        *,
        status_case: StatusCase = "mixed",
        quota_limit: int = 100,
        quota_window_seconds: float = 300.0,
        publication_delay: timedelta = timedelta(0),
    ) -> None:
        super().__init__("graph", ssl_context)
        self._validate = validate_token
        self.tenant_id = tenant_id
        self._clock = clock
        self.default_tenant = GraphTenant(
            self,
            tenant_id,
            clock,
            quota_limit=quota_limit,
            quota_window_seconds=quota_window_seconds,
            publication_delay=publication_delay,
            faults=self._faults,
        )
        self._tenants: dict[str, GraphTenant] = {tenant_id.lower(): self.default_tenant}
        self._tenants_lock = threading.Lock()
        self.status_case: StatusCase = status_case
        self.send_retry_after = True
        self.max_page_size: int | None = None
        self.page_latency = 0.0
        """Seconds each message trace page takes to answer, after the quota counted it (benchmarks)."""
        self._responses = 0
        self._counter_lock = threading.Lock()
        self._local = threading.local()
        self.route("GET", re.escape(MESSAGE_TRACES_PATH), self._list)
        self.route("GET", _DETAILS_ROUTE, self._details)
        self.route("GET", re.escape(DOMAINS_PATH), self._list_domains)

    # ------------------------------------------------------------- tenants
    def add_tenant(
        self,
        tenant_id: str,
        *,
        quota: tuple[int, float] = (100, 300.0),
        publication_delay: timedelta = timedelta(0),
        domains: tuple[str, ...] = DEFAULT_LOCAL_DOMAINS,
        initial_domain: str | None = None,
    ) -> GraphTenant:
        """Serve ``tenant_id`` too (its own data, quota and faults); returns its :class:`GraphTenant`."""
        tenant = GraphTenant(
            self,
            tenant_id,
            self._clock,
            quota_limit=quota[0],
            quota_window_seconds=quota[1],
            publication_delay=publication_delay,
            domains=domains,
            initial_domain=initial_domain,
        )
        with self._tenants_lock:
            if tenant_id.lower() in self._tenants:
                raise ValueError(f"Graph already serves tenant {tenant_id}")
            self._tenants[tenant_id.lower()] = tenant
        return tenant

    def remove_tenant(self, tenant_id: str) -> None:
        """Stop serving an added tenant (its tokens get 401 invalid issuer)."""
        if tenant_id.lower() == self.tenant_id.lower():
            raise ValueError("the default tenant cannot be removed")
        with self._tenants_lock:
            self._tenants.pop(tenant_id.lower(), None)

    def tenant(self, tenant_id: str) -> GraphTenant:
        """The served tenant ``tenant_id`` (KeyError if Graph does not serve it)."""
        with self._tenants_lock:
            return self._tenants[tenant_id.lower()]

    @property
    def tenants(self) -> tuple[GraphTenant, ...]:
        """Every served tenant, the default first."""
        with self._tenants_lock:
            return tuple(self._tenants.values())

    def _tenant_of(self, request: Request) -> GraphTenant | None:
        tid = unverified_tenant(request.header("authorization"))
        if tid is None:
            return None
        with self._tenants_lock:
            return self._tenants.get(tid.lower())

    def scope_of(self, request: Request) -> str | None:
        """An added tenant's id (lower case) when the request's token is one of its; else ``None``."""
        tenant = self._tenant_of(request)
        return None if tenant is None or tenant.is_default else tenant.tenant_id.lower()

    def fault_queue_for(self, request: Request) -> FaultQueue:
        """The faults of the tenant whose token the request carries (the default tenant's otherwise)."""
        tenant = self._tenant_of(request)
        return self._faults if tenant is None else tenant.faults

    # ----------------------------------------- the default tenant's state
    @property
    def store(self) -> MessageTraceStore:
        """The default tenant's rows."""
        return self.default_tenant.store

    @property
    def quota(self) -> SlidingWindowQuota:
        """The default tenant's quota."""
        return self.default_tenant.quota

    @property
    def domains(self) -> list[dict[str, Any]]:
        """The default tenant's domain objects."""
        return self.default_tenant.domains

    @domains.setter
    def domains(self, value: list[dict[str, Any]]) -> None:
        self.default_tenant.domains = value

    @property
    def service_principal_missing(self) -> bool:
        """The default tenant lacks the Transport Data Platform service principal (401)."""
        return self.default_tenant.service_principal_missing

    @service_principal_missing.setter
    def service_principal_missing(self, value: bool) -> None:
        self.default_tenant.service_principal_missing = value

    @property
    def permission_granted(self) -> bool:
        """False: the default tenant answers 403 (no ExchangeMessageTrace.Read.All)."""
        return self.default_tenant.permission_granted

    @permission_granted.setter
    def permission_granted(self, value: bool) -> None:
        self.default_tenant.permission_granted = value

    @property
    def domains_permission_granted(self) -> bool:
        """False: the default tenant answers ``/domains`` with 403."""
        return self.default_tenant.domains_permission_granted

    @domains_permission_granted.setter
    def domains_permission_granted(self, value: bool) -> None:
        self.default_tenant.domains_permission_granted = value

    @property
    def domains_page_size(self) -> int:
        """Domain objects per ``/domains`` page of the default tenant."""
        return self.default_tenant.domains_page_size

    @domains_page_size.setter
    def domains_page_size(self, value: int) -> None:
        self.default_tenant.domains_page_size = value

    def inject(self, status: int | str = 500, *, path: str | None = None, **kwargs: Any) -> Fault:
        """Queue a fault (see :meth:`SimulatedHttpServer.inject`); without ``path`` it hits message trace only.

        The connector also reads ``/v1.0/domains`` once a day; a fault meant for message
        trace must not be spent on it. Give ``path=DOMAINS_PATH`` to fault domain discovery.
        "Message trace" is the list and its details calls (the path regex is searched); give
        ``path="getDetailsByRecipient"`` for details only, or ``path=re.escape(MESSAGE_TRACES_PATH) + "$"``
        for the list only.
        """
        return super().inject(status, path=re.escape(MESSAGE_TRACES_PATH) if path is None else path, **kwargs)

    # ------------------------------------------------------------ data API
    def add(
        self,
        rows: Iterable[Mapping[str, Any]],
        visible_at: datetime | Callable[[Mapping[str, Any]], datetime] | None = None,
    ) -> int:
        """Add rows (see :meth:`MessageTraceStore.add`)."""
        return self.store.add(rows, visible_at)

    def set_status(self, trace_id: str, recipient: str, status: str, at: datetime | None = None) -> None:
        """Change a row's status from ``at`` (default now) on."""
        self.store.set_status(trace_id, recipient, status, at)

    def schedule(self, changes: Iterable[StatusChange]) -> int:
        """Apply scheduled status changes."""
        return self.store.schedule(changes)

    def publish_all(self) -> None:
        """Make every row visible now."""
        self.store.publish_all()

    def rows(self, visible_only: bool = False) -> list[dict[str, Any]]:
        """Copies of stored rows with their current status."""
        return self.store.rows(visible_only)

    def details(self, trace_id: str, recipient: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """The default tenant's detail events for (trace id, recipient) (see :meth:`GraphTenant.details`)."""
        return self.default_tenant.details(trace_id, recipient, now)

    def reset(self) -> None:
        """Clear rows, faults, logs, quota and flags of every tenant back to defaults (tenants stay)."""
        super().reset()
        for tenant in self.tenants:
            tenant.reset()
        self.send_retry_after = True
        self.max_page_size = None
        self.page_latency = 0.0
        with self._counter_lock:
            self._responses = 0

    # -------------------------------------------------------- HTTP plumbing
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Give every request a ``request-id`` before faults and routing run (errors quote it)."""
        self._local.request_id = str(uuid.uuid4())
        self._local.client_request_id = request.header("client-request-id") or self._local.request_id
        return super().dispatch(request)

    def error_response(self, status: int, message: str) -> Response:
        """Graph's error shape with ``innerError`` (used for faults and 404s)."""
        codes = {
            400: "BadRequest",
            401: "Unauthorized",
            403: "Forbidden",
            404: "ResourceNotFound",
            429: "TooManyRequests",
            500: "generalException",
            503: "serviceNotAvailable",
        }
        return self._error(GraphError(status, codes.get(status, "UnknownError"), message))

    def decorate(self, request: Request, response: Response) -> Response:
        """Add Graph's request id headers to every response."""
        response.headers.setdefault("request-id", getattr(self._local, "request_id", ""))
        response.headers.setdefault("client-request-id", getattr(self._local, "client_request_id", ""))
        return response

    def _error(self, error: GraphError) -> Response:
        body: dict[str, Any] = {
            "error": {
                "code": error.code,
                "message": error.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": getattr(self._local, "request_id", ""),
                    "client-request-id": getattr(self._local, "client_request_id", ""),
                },
            }
        }
        return Response.json(error.status, body, headers=error.headers)

    # -------------------------------------------------------------- listing
    def _list(self, request: Request) -> Response:
        try:
            return self._list_or_raise(request)
        except GraphError as error:
            return self._error(error)

    def _authorise(self, request: Request) -> tuple[Claims, GraphTenant]:
        result = self._validate(request.header("authorization") or None, GRAPH_RESOURCE)
        www = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if isinstance(result, str):
            messages = {
                REASON_MISSING: "Access token is empty.",
                REASON_EXPIRED: EXPIRED_TOKEN_MESSAGE,
                REASON_NOT_YET_VALID: EXPIRED_TOKEN_MESSAGE,
                _WRONG_AUDIENCE: "Access token validation failure. Invalid audience.",
            }
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                messages.get(result, "Access token validation failure."),
                www,
            )
        with self._tenants_lock:
            tenant = self._tenants.get(result.tid.lower())
        if tenant is None:
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer.", www
            )
        return result, tenant

    def _admit(self, request: Request) -> GraphTenant | Response:
        """Auth, service principal, permission and the tenant's quota, shared by list and details.

        Returns the caller's tenant, or the service principal 401 (sent as is); raises the other refusals.
        """
        claims, tenant = self._authorise(request)
        if tenant.service_principal_missing:
            # Exactly the body seen in the wild: no innerError.
            return Response.json(401, {"error": {"code": "Unauthorized", "message": SP_MISSING_MESSAGE}})
        if not tenant.permission_granted or MESSAGE_TRACE_ROLE not in claims.roles:
            raise GraphError(
                403,
                "Forbidden",
                f"Missing application permission {MESSAGE_TRACE_ROLE}. Grant the application permission and admin "
                "consent, then acquire a new access token.",
            )
        quota = tenant.quota
        wait = quota.try_acquire(claims.tid.lower())
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            headers = {"Retry-After": str(retry_after)} if self.send_retry_after else {}
            raise GraphError(
                429,
                "TooManyRequests",
                f"Too many requests. The message trace API allows {quota.limit} requests per "
                f"{quota.window_seconds:g} seconds per tenant. Please retry after {retry_after} seconds.",
                headers,
            )
        return tenant

    def _list_or_raise(self, request: Request) -> Response:
        admitted = self._admit(request)
        if isinstance(admitted, Response):
            return admitted
        tenant = admitted
        if self.page_latency > 0:
            time.sleep(
                self.page_latency
            )  # Graph's own time per page; the quota counted the request on arrival
        now = self._clock()
        start, end, canonical = self._parse_filter(request, now)
        top = self._parse_top(request)
        if self.max_page_size is not None:
            top = min(top, self.max_page_size)
        offset, looping = self._parse_skiptoken(request, canonical)
        include_unknown = "include-unknown-enum-members" in request.header("prefer").lower()
        with self._counter_lock:
            self._responses += 1
            use_pascal = self.status_case == "pascal" or (
                self.status_case == "mixed" and self._responses % 2 == 0
            )
        hits, total = tenant.store.page(start, end, now, offset=offset, top=top)
        values: list[dict[str, Any]] = []
        for data, status in hits:
            shown = status if (status != "recalled" or include_unknown) else "unknownFutureValue"
            if use_pascal:
                shown = pascal(shown)
            values.append({"@odata.type": "#microsoft.graph.exchangeMessageTrace", **data, "status": shown})
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#admin/exchange/tracing/messageTraces",
            "value": values,
        }
        if request.fault == "loop" or looping:
            body["@odata.nextLink"] = self._next_link(request, canonical, top, offset, loop=True)
        elif offset + top < total:
            link = self._next_link(request, canonical, top, offset + top, loop=False)
            if request.fault == "bad_skiptoken":
                link = re.sub(r"(\$skiptoken=)[^&]+", r"\1%21corrupt%21", link)
            body["@odata.nextLink"] = link
        headers = {"Content-Type": GRAPH_CONTENT_TYPE}
        if include_unknown:
            headers["Preference-Applied"] = "include-unknown-enum-members"
        return Response.json(200, body, headers=headers)

    def _details(self, request: Request) -> Response:
        """``GET .../messageTraces/{id}/getDetailsByRecipient(recipientAddress='...')``.

        Admission is the list's (:meth:`_admit`): same 401/403, and the call takes a slot of the tenant's
        rolling quota, which list and details share (429 + Retry-After when it is used up). A malformed
        argument list is a 400 (after the quota counted the call, as a bad ``$filter`` is). The answer is
        200 with :func:`detail_events` for the (trace id, recipient) of the caller's tenant, or an empty
        ``value`` when the tenant has no such record or it is not visible yet. Real Graph's answer for an
        unknown (trace id, recipient) is not documented (an empty collection or a 404 are both possible);
        the simulator picks the empty collection. ``page_latency`` does not apply.
        """
        try:
            admitted = self._admit(request)
            if isinstance(admitted, Response):
                return admitted
            try:
                recipient = parse_details_arguments(request.params["args"])
            except ValueError as error:
                raise GraphError(400, "BadRequest", str(error)) from None
        except GraphError as error:
            return self._error(error)
        body = {
            "@odata.context": f"{self.url}/v1.0/{DETAILS_CONTEXT}",
            "value": admitted.details(request.params["trace_id"], recipient, self._clock()),
        }
        return Response.json(200, body, headers={"Content-Type": GRAPH_CONTENT_TYPE})

    def _list_domains(self, request: Request) -> Response:
        """``GET /v1.0/domains``: every domain object, ``domains_page_size`` per page, ``$skiptoken`` after."""
        try:
            claims, tenant = self._authorise(request)
            if not tenant.domains_permission_granted or DOMAIN_READ_ROLE not in claims.roles:
                raise GraphError(
                    403,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                )
            raw = request.query_ci("$skiptoken") or "0"
            if not raw.isdigit():
                raise GraphError(400, "BadRequest", "Invalid $skiptoken.")
            offset, size = int(raw), max(1, tenant.domains_page_size)
        except GraphError as error:
            return self._error(error)
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#domains",
            "value": [dict(domain) for domain in tenant.domains[offset : offset + size]],
        }
        if offset + size < len(tenant.domains):
            body["@odata.nextLink"] = f"{self.url}{DOMAINS_PATH}?$skiptoken={offset + size}"
        return Response.json(200, body, headers={"Content-Type": GRAPH_CONTENT_TYPE})

    def _parse_top(self, request: Request) -> int:
        raw = request.query_ci("$top")
        if raw is None:
            return DEFAULT_TOP
        if not re.fullmatch(r"\d{1,9}", raw.strip()):
            raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option '$top'.")
        top = int(raw)
        if not 1 <= top <= MAX_TOP:
            raise GraphError(
                400, "BadRequest", f"The value of '$top' must be between 1 and {MAX_TOP}, got {top}."
            )
        return top

    def _parse_filter(self, request: Request, now: datetime) -> tuple[datetime, datetime, str]:
        """``(start, end, canonical filter text)``; the canonical text binds ``$skiptoken`` to the filter."""
        for key in request.query:
            if key.startswith("$") and key.lower() not in ("$filter", "$top", "$skiptoken"):
                raise GraphError(
                    400, "BadRequest", f"Query option '{key}' is not supported for messageTraces."
                )
        raw = request.query_ci("$filter")
        if raw is None:
            # Documented: no filter = the latest 1,000 traces of the previous 48 hours.
            return now - DEFAULT_WINDOW_WITHOUT_FILTER, now, ""
        bounds: dict[str, datetime] = {}
        for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
            match = _RANGE_CLAUSE.fullmatch(clause)
            if match is None:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: '{clause}'.")
            op = match["op"].lower()
            if op not in ("ge", "le"):
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Operator '{op}' is not supported for receivedDateTime; use 'ge' and 'le'.",
                )
            if op in bounds:
                raise GraphError(400, "BadRequest", f"receivedDateTime '{op}' is specified more than once.")
            try:
                bounds[op] = parse_graph_datetime(match["value"])
            except ValueError:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Invalid receivedDateTime value '{match['value']}'. Use ISO 8601 UTC, e.g. "
                    "2026-01-20T00:00:00Z.",
                ) from None
        if "ge" not in bounds or "le" not in bounds:
            raise GraphError(
                400,
                "BadRequest",
                "Both a start and an end receivedDateTime must be specified: "
                "$filter=receivedDateTime ge {start} and receivedDateTime le {end}.",
            )
        start, end = bounds["ge"], bounds["le"]
        if start > end:
            raise GraphError(
                400, "BadRequest", "The start date must be earlier than or equal to the end date."
            )
        if end > now:
            raise GraphError(400, "BadRequest", "The end date cannot be in the future.")
        if start < now - RETENTION:
            raise GraphError(400, "BadRequest", "The start date cannot be older than 90 days.")
        if end - start > MAX_WINDOW:
            raise GraphError(400, "BadRequest", "The date range cannot exceed 10 days.")
        return start, end, " ".join(raw.split()).lower()

    def _parse_skiptoken(self, request: Request, canonical: str) -> tuple[int, bool]:
        raw = request.query_ci("$skiptoken")
        if raw is None:
            return 0, False
        try:
            decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            offset = decoded["o"]
            digest = decoded["h"]
            looping = bool(decoded.get("l", False))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise GraphError(400, "BadRequest", "The $skiptoken is malformed or has expired.") from None
        if not isinstance(offset, int) or offset < 0:
            raise GraphError(400, "BadRequest", "The $skiptoken is malformed or has expired.")
        if digest != _filter_hash(canonical):
            raise GraphError(400, "BadRequest", "The $skiptoken does not belong to this $filter.")
        return offset, looping

    def _next_link(self, request: Request, canonical: str, top: int, offset: int, *, loop: bool) -> str:
        token_doc: dict[str, Any] = {"o": offset, "h": _filter_hash(canonical)}
        if loop:
            token_doc["l"] = True
        token = (
            base64.urlsafe_b64encode(json.dumps(token_doc, separators=(",", ":")).encode())
            .decode()
            .rstrip("=")
        )
        params: list[tuple[str, str]] = []
        raw_filter = request.query_ci("$filter")
        if raw_filter is not None:
            params.append(("$filter", raw_filter))
        params += [("$top", str(top)), ("$skiptoken", token)]
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe=":'$")
        return f"{self.url}{MESSAGE_TRACES_PATH}?{query}"


INITIAL_DOMAIN = "contoso.onmicrosoft.com"
"""The simulated tenant's initial domain (``isInitial``), listed besides the traffic's local domains."""


def domain_object(
    name: str, *, verified: bool = True, default: bool = False, initial: bool = False
) -> dict[str, Any]:
    """One Graph ``domain`` object as ``GET /domains`` lists it (the properties the connector reads and a few more)."""
    return {
        "id": name,
        "authenticationType": "Managed",
        "isAdminManaged": True,
        "isDefault": default,
        "isInitial": initial,
        "isRoot": True,
        "isVerified": verified,
        "supportedServices": ["Email", "OfficeCommunicationsOnline"] if verified else [],
    }


def default_domains() -> list[dict[str, Any]]:
    """The tenant's domains: the traffic generator's local domains (the first is the default) and the initial one."""
    return tenant_domains(DEFAULT_LOCAL_DOMAINS, INITIAL_DOMAIN)


def tenant_domains(local_domains: Iterable[str], initial_domain: str) -> list[dict[str, Any]]:
    """A tenant's domain objects: its own domains (the first is the default) and its initial one."""
    return [
        *(domain_object(name, default=index == 0) for index, name in enumerate(local_domains)),
        domain_object(initial_domain, initial=True),
    ]


def _filter_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
