r"""Fake Log Analytics query API over the rows the ingestion simulator accepted.

Why: the connector's workspace verification must be tested against what a real
workspace shows, including ingestion latency: a row accepted by the Logs
Ingestion API becomes queryable only ``latency_seconds`` later (20 s to a few
minutes in Azure). Only the query shape the connector sends is understood::

    EmailEvents_CL
    | where RowId in ("0f3c…", "9ab1…")
    | project RowId

or, for a batch recorded before RowId existed, ``where MessageTraceId in (...)`` and
``project MessageTraceId, RecipientAddress, Status, StatusRevision``; and reconcile's range
counts (:func:`parse_range_query`)::

    EmailEvents_CL
    | where Received >= datetime(2026-11-20T10:00:00.000000Z) and Received < datetime(…)
    | summarize Copies = count() by MessageTraceId, RecipientAddress, Status, StatusRevision

or ``| summarize Rows = count() by Hour = bin(Received, 1h)``. Equality filters
on other columns may come with it, in their own ``| where`` or joined by ``and``
(``| where SourceTenantId == "…"``, a shared table's per-tenant verification); an
unknown column there is a 400 ``SemanticError``.

Each workspace answers from one DCR's rows: the default workspace from the default
DCR, any added one (:meth:`LogsQueryServer.add_workspace`) from its own DCR.

Anything else is a 400 (``BadArgumentError``), as a real workspace would answer a
query it cannot run. ``TimeGenerated`` older than two days at arrival is replaced
by the arrival time, as Log Analytics does, and the request's ``timespan`` filters
on it.

The id list is read with Kusto's own string-literal rules (those of Kusto.Language's
lexer), so a test over the simulator proves the connector's literals mean what it
meant: ``"..."`` or ``'...'`` with the escapes ``\\ \' \" \a \b \f \n \r \t \v``,
``\uXXXX``, ``\UXXXXXXXX``, ``\xHH`` and 1-3 octal digits; verbatim ``@"..."`` in
which ``""`` is a quote; the obfuscation prefix ``h``; multi-line ```` ```...``` ````;
adjacent literals joined into one. An unknown escape, a raw CR or LF inside quotes or
a missing closing quote is a syntax error: 400, as the service answers.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from connector.schema import TableSchema

from .entra import TokenValidator
from .http import FaultQueue, Request, RequestRecord, Response, SimulatedHttpServer
from .ingestion import DataCollectionRule, IngestionServer

LOGS_QUERY_RESOURCE = "https://api.loganalytics.io"
_QUERY_TABLE = re.compile(r"\s*(?P<table>\w+)\s*")
_WHERE = re.compile(r"\|\s*where\s+")
_CONDITION = re.compile(r"(?P<column>\w+)\s*(?:(?P<in>in)\s*\(|==\s*)")
_AND = re.compile(r"\s*and\s+")
_PRESENCE_COLUMNS = ("MessageTraceId", "RowId")
_QUERY_TAIL = re.compile(r"\s*\|\s*project\s+(?P<columns>[\w\s,]+?)\s*", re.DOTALL)
_SIMPLE_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_HEX_ESCAPES = {"u": 4, "U": 8, "x": 2}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MULTI_LINE_QUOTES = ("```", "~~~")


class KqlSyntaxError(ValueError):
    """The query text breaks Kusto's lexical rules (the service answers 400)."""


def _scan_escape(text: str, pos: int) -> tuple[str, int]:
    """Decode the escape whose backslash is at ``pos``; return (value, position after it)."""
    code = text[pos + 1 : pos + 2]
    if code in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[code], pos + 2
    if code in _HEX_ESCAPES:
        digits = text[pos + 2 : pos + 2 + _HEX_ESCAPES[code]]
        if len(digits) != _HEX_ESCAPES[code] or not set(digits) <= _HEX_DIGITS:
            raise KqlSyntaxError(f"malformed \\{code} escape at {pos}")
        value = int(digits, 16)
        if value > 0x10FFFF or (code == "U" and 0xD800 <= value <= 0xDFFF):
            raise KqlSyntaxError(f"\\U escape at {pos} is not a Unicode code point")
        return chr(value), pos + 2 + len(digits)
    # Octal, as Kusto.Language scans it: up to 3 digits 0-7, the third only after 0-3.
    digits = ""
    for char in text[pos + 1 : pos + 4]:
        if char not in "01234567" or (len(digits) == 2 and digits[0] > "3"):
            break
        digits += char
    if not digits:
        raise KqlSyntaxError(f"unknown escape sequence {text[pos : pos + 2]!r} at {pos}")
    return chr(int(digits, 8)), pos + 1 + len(digits)


def _scan_literal(text: str, pos: int) -> tuple[str, int]:
    """Read one string literal starting at ``pos``; return (value, position after it)."""
    if text[pos : pos + 1] in ("h", "H"):
        pos += 1  # obfuscated literal: same value
    for fence in _MULTI_LINE_QUOTES:
        if text.startswith(fence, pos):
            end = text.find(fence, pos + len(fence))
            if end < 0:
                raise KqlSyntaxError(f"multi-line string literal at {pos} is not closed")
            return text[pos + len(fence) : end], end + len(fence)
    verbatim = text[pos : pos + 1] == "@"
    if verbatim:
        pos += 1
    quote = text[pos : pos + 1]
    if quote not in ("'", '"'):
        raise KqlSyntaxError(f"expected a string literal at {pos}")
    start = pos
    pos += 1
    value: list[str] = []
    while True:
        char = text[pos : pos + 1]
        if char in ("", "\r", "\n"):
            raise KqlSyntaxError(f"string literal at {start} is not closed on its line")
        if char == quote:
            if verbatim and text[pos + 1 : pos + 2] == quote:
                value.append(quote)
                pos += 2
                continue
            return _join_surrogates("".join(value)), pos + 1
        if char == "\\" and not verbatim:
            decoded, pos = _scan_escape(text, pos)
            value.append(decoded)
            continue
        value.append(char)
        pos += 1


def _join_surrogates(value: str) -> str:
    """Pair \\uD83D\\uDE00-style halves into one code point, as a .NET string would hold them."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def parse_string_list(text: str, pos: int) -> tuple[list[str], int]:
    """Read ``"a", 'b' "c", ...)`` from ``pos``: the values and the position after ``)``.

    Adjacent literals (only whitespace between) are one value, as in Kusto.

    Raises:
        KqlSyntaxError: a literal is malformed or the list is not closed.
    """
    values: list[str] = []
    while True:
        pos = _skip_space(text, pos)
        if not values and text.startswith(")", pos):
            return values, pos + 1
        parts: list[str] = []
        while True:
            part, pos = _scan_literal(text, pos)
            parts.append(part)
            pos = _skip_space(text, pos)
            if text[pos : pos + 1] in (",", ")", ""):
                break
        values.append("".join(parts))
        separator = text[pos : pos + 1]
        pos += 1
        if separator == ")":
            return values, pos
        if separator != ",":
            raise KqlSyntaxError("the in (...) list is not closed")


class PresenceQuery(NamedTuple):
    """The one query shape the connector sends: rows whose ``column`` is one of ``values``."""

    table: str
    values: list[str]
    projected: list[str]
    column: str = "MessageTraceId"
    filters: tuple[tuple[str, str], ...] = ()
    """Further ``column == "value"`` conditions, all of which a row must meet."""


def parse_presence_query(query: object) -> PresenceQuery | None:
    """The presence query (by RowId, or by trace id for an intent from before RowId); None for another shape.

    Raises:
        KqlSyntaxError: a string literal in the id list or a filter is malformed.
    """
    if not isinstance(query, str):
        return None
    head = _QUERY_TABLE.match(query)
    if head is None:
        return None
    pos = head.end()
    presence: tuple[str, list[str]] | None = None
    filters: list[tuple[str, str]] = []
    while (where := _WHERE.match(query, pos)) is not None:
        pos = where.end()
        while True:
            condition = _CONDITION.match(query, pos)
            if condition is None:
                return None
            column = condition.group("column")
            if condition.group("in"):
                if presence is not None or column not in _PRESENCE_COLUMNS:
                    return None
                ids, pos = parse_string_list(query, condition.end())
                presence = (column, ids)
            else:
                value, pos = _scan_literal(query, condition.end())
                filters.append((column, value))
            pos = _skip_space(query, pos)
            joined = _AND.match(query, pos)
            if joined is None:
                break
            pos = joined.end()
    tail = _QUERY_TAIL.fullmatch(query, pos)
    if tail is None or presence is None:
        return None
    projected = [column.strip() for column in tail.group("columns").split(",")]
    return PresenceQuery(head.group("table"), presence[1], projected, presence[0], tuple(filters))


class RangeQuery(NamedTuple):
    """Reconcile's shape: rows whose ``column`` lies in ``[start, end)``, counted by identity or by hour."""

    table: str
    column: str
    start: datetime
    end: datetime
    filters: tuple[tuple[str, str], ...]
    count_name: str
    group_by: tuple[str, ...]
    """The grouping columns; empty when the rows are counted per hour of ``column`` (``bin(column, 1h)``)."""
    hour_name: str = ""
    ingested_name: str = ""
    """The column of each group's newest arrival (``max(ingestion_time())``); empty when not asked."""


_RANGE_HEAD = re.compile(
    r"\s*(?P<table>\w+)\s*\|\s*where\s+(?P<column>\w+)\s*>=\s*datetime\((?P<start>[^()]+)\)\s+and\s+"
    r"(?P<again>\w+)\s*<\s*datetime\((?P<end>[^()]+)\)\s*"
)
_EQUALS_FILTER = re.compile(r"\|\s*where\s+(?P<column>\w+)\s*==\s*")
_SUMMARIZE_BY = re.compile(
    r"\|\s*summarize\s+(?P<count>\w+)\s*=\s*count\(\)"
    r"(?:\s*,\s*(?P<ingested>\w+)\s*=\s*max\(\s*ingestion_time\(\)\s*\))?\s+by\s+"
    r"(?:(?P<hour>\w+)\s*=\s*bin\(\s*(?P<binned>\w+)\s*,\s*1h\s*\)|(?P<columns>\w+(?:\s*,\s*\w+)*))\s*"
)


class _RangeHead(NamedTuple):
    table: str
    column: str
    start: datetime
    end: datetime
    filters: tuple[tuple[str, str], ...]
    pos: int
    """Where the query goes on after the range and its ``column == "value"`` filters."""


def _parse_range_head(query: str) -> _RangeHead | None:
    """``Table | where C >= datetime(…) and C < datetime(…)`` and any ``| where X == "…"`` after it.

    What reconcile's and enrichment's range queries start with; None for another start.

    Raises:
        KqlSyntaxError: a string literal in a filter is malformed.
    """
    head = _RANGE_HEAD.match(query)
    if head is None or head.group("again") != head.group("column"):
        return None
    try:
        start, end = _parse_time(head.group("start")), _parse_time(head.group("end"))
    except ValueError:
        return None
    pos = head.end()
    filters: list[tuple[str, str]] = []
    while (condition := _EQUALS_FILTER.match(query, pos)) is not None:
        value, pos = _scan_literal(query, condition.end())
        filters.append((condition.group("column"), value))
        pos = _skip_space(query, pos)
    return _RangeHead(head.group("table"), head.group("column"), start, end, tuple(filters), pos)


def parse_range_query(query: object) -> RangeQuery | None:
    """Reconcile's range query (see :func:`connector.workspace.piece_rows_query`); None for another shape.

    Raises:
        KqlSyntaxError: a string literal in a filter is malformed.
    """
    if not isinstance(query, str):
        return None
    head = _parse_range_head(query)
    if head is None:
        return None
    table, column, start, end, filters, pos = head
    tail = _SUMMARIZE_BY.fullmatch(query, pos)
    if tail is None:
        return None
    hour = tail.group("hour")
    if hour is not None:  # counted per hour of ``column``
        if tail.group("binned") != column:
            return None
        group_by: tuple[str, ...] = ()
        ingested = ""
    else:
        group_by = tuple(name.strip() for name in tail.group("columns").split(","))
        ingested = tail.group("ingested") or ""
    return RangeQuery(table, column, start, end, filters, tail.group("count"), group_by, hour or "", ingested)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Workspace(NamedTuple):
    """A Log Analytics workspace the query API answers for: its id, the DCR feeding it, its faults."""

    workspace_id: str
    dcr: DataCollectionRule
    faults: FaultQueue


_WORKSPACE_IN_PATH = re.compile(r"/v1/workspaces/(?P<workspace>[^/]+)/")


class LogsQueryServer(SimulatedHttpServer):
    """``POST /v1/workspaces/{id}/query`` answering from ``IngestionServer`` batches.

    The default workspace (``workspace_id``) shows the default DCR's rows; :meth:`add_workspace`
    adds one showing another DCR's. Its ``inject``/``requests`` act on the default workspace.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        validate_token: TokenValidator,
        ingestion: IngestionServer,
        schema: TableSchema,
        workspace_id: str,
        clock: Callable[[], datetime],
        tenant_id: str | None = None,
    ) -> None:
        super().__init__("logs-query", ssl_context)
        self._validate = validate_token
        self.tenant_id = tenant_id
        """The workspaces' Azure tenant: tokens of other tenants are refused (``None``: any)."""
        self._ingestion = ingestion
        self._schema = schema
        self._clock = clock
        self.workspace_id = workspace_id
        self._workspaces: dict[str, Workspace] = {
            workspace_id.lower(): Workspace(workspace_id, ingestion.default_dcr, self._faults)
        }
        self.latency_seconds = 0.0
        self.read_access = True
        self.route("POST", r"/v1/workspaces/(?P<workspace>[^/]+)/query", self._query)

    def add_workspace(self, workspace_id: str, dcr: DataCollectionRule) -> Workspace:
        """Answer for ``workspace_id`` too, from the rows ``dcr`` accepted."""
        workspace = Workspace(workspace_id, dcr, FaultQueue())
        self._workspaces[workspace_id.lower()] = workspace
        return workspace

    def remove_workspace(self, workspace_id: str) -> None:
        """Stop answering for an added workspace (404 WorkspaceNotFoundError)."""
        if workspace_id.lower() == self.workspace_id.lower():
            raise ValueError("the default workspace cannot be removed")
        self._workspaces.pop(workspace_id.lower(), None)

    def workspace_requests(
        self, workspace_id: str, path: str | None = None, method: str | None = None
    ) -> list[RequestRecord]:
        """The requests to one workspace (the default one's: ``requests()``)."""
        if workspace_id.lower() == self.workspace_id.lower():
            return self.requests(path, method)
        return self.scoped_requests(workspace_id.lower(), path, method)

    def _workspace_of(self, request: Request) -> Workspace | None:
        match = _WORKSPACE_IN_PATH.match(request.path)
        return None if match is None else self._workspaces.get(match["workspace"].lower())

    def scope_of(self, request: Request) -> str | None:
        """An added workspace's id (lower case) when the request names it; else ``None``."""
        workspace = self._workspace_of(request)
        if workspace is None or workspace.faults is self._faults:
            return None
        return workspace.workspace_id.lower()

    def fault_queue_for(self, request: Request) -> FaultQueue:
        """The faults of the workspace the request names (the default workspace's otherwise)."""
        workspace = self._workspace_of(request)
        return self._faults if workspace is None else workspace.faults

    def reset(self) -> None:
        """Clear faults and logs; restore latency and access (workspaces stay)."""
        super().reset()
        for workspace in list(self._workspaces.values()):
            workspace.faults.clear()
        self.latency_seconds = 0.0
        self.read_access = True

    def _error(self, status: int, code: str, message: str, syntax: str | None = None) -> Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if syntax is not None:
            error["innererror"] = {
                "code": "SyntaxError",
                "message": f"A recognition error occurred: {syntax}",
            }
        return Response.json(status, {"error": error})

    def _query(self, request: Request) -> Response:
        claims = self._validate(request.header("authorization") or None, LOGS_QUERY_RESOURCE)
        if isinstance(claims, str):
            return self._error(
                401, "InvalidTokenError", f"The provided authentication is not valid ({claims})."
            )
        if self.tenant_id is not None and claims.tid.lower() != self.tenant_id.lower():
            return self._error(
                401,
                "InvalidTokenError",
                f"The provided authentication is not valid for this resource: issued by tenant '{claims.tid}'.",
            )
        workspace = self._workspaces.get(request.params["workspace"].lower())
        if workspace is None:
            return self._error(404, "WorkspaceNotFoundError", "The workspace could not be found")
        if not self.read_access:
            return self._error(
                403,
                "InsufficientAccessError",
                "The provided credentials have insufficient access to perform the requested operation",
            )
        enrichment = self._enrichment_query(request, workspace)
        if enrichment is not None:
            return enrichment
        try:
            body = json.loads(request.body)
            ranged = parse_range_query(body["query"])
            if ranged is not None:
                return self._answer_range(workspace, ranged, body.get("timespan"))
            parsed = parse_presence_query(body["query"])
        except KqlSyntaxError as err:
            return self._error(400, "BadArgumentError", "The request had some invalid properties", str(err))
        except (ValueError, KeyError, TypeError):
            parsed = None
        if parsed is None or parsed[0] != self._schema.table:
            return self._error(400, "BadArgumentError", "The request had some invalid properties")
        ids, columns, match_column = set(parsed.values), parsed.projected, parsed.column
        filters = parsed.filters
        if any(c not in self._schema.column_names for c in (*columns, *(name for name, _ in filters))):
            return self._error(400, "SemanticError", "A semantic error occurred.")
        start, end = self._timespan(body.get("timespan"))
        now_mono = time.monotonic()
        rows: list[list[Any]] = []
        for batch in workspace.dcr.batches():
            if batch.time + self.latency_seconds > now_mono:
                continue  # not queryable yet
            arrived = self._clock() - timedelta(seconds=now_mono - batch.time)
            for row in batch.rows:
                if row.get(match_column) not in ids:
                    continue
                if any(row.get(name) != value for name, value in filters):
                    continue
                generated = _parse_time(str(row["TimeGenerated"]))
                if generated < arrived - timedelta(days=2):
                    generated = arrived
                if (start and generated < start) or (end and generated > end):
                    continue
                rows.append([row.get(c) for c in columns])
        table = {
            "name": "PrimaryResult",
            "columns": [{"name": c, "type": self._schema.type_of(c)} for c in columns],
            "rows": rows,
        }
        return Response.json(200, {"tables": [table]})

    def _answer_range(self, workspace: Workspace, query: RangeQuery, timespan: object) -> Response:
        """Count the rows of ``query``'s range by its columns, or per hour (what reconcile asks)."""
        schema = self._schema
        if query.table != schema.table:
            return self._error(400, "BadArgumentError", "The request had some invalid properties")
        named = (query.column, *query.group_by, *(name for name, _ in query.filters))
        if (
            any(name not in schema.column_names for name in named)
            or schema.type_of(query.column) != "datetime"
        ):
            return self._error(400, "SemanticError", "A semantic error occurred.")
        counts: dict[tuple[Any, ...], int] = {}
        newest: dict[tuple[Any, ...], datetime] = {}
        visible = _arrived_rows(
            workspace.dcr.batches(), self.latency_seconds, self._clock, self._timespan(timespan)
        )
        for row, arrived in visible:
            if any(row.get(name) != value for name, value in query.filters):
                continue
            moment = _parse_time(str(row[query.column]))
            if not query.start <= moment < query.end:
                continue
            if query.group_by:
                group = tuple(row.get(name) for name in query.group_by)
            else:
                hour = moment.replace(minute=0, second=0, microsecond=0)
                group = (hour.strftime("%Y-%m-%dT%H:%M:%SZ"),)
            counts[group] = counts.get(group, 0) + 1
            newest[group] = max(arrived, newest.get(group, arrived))
        if query.group_by:
            columns = [{"name": name, "type": schema.type_of(name)} for name in query.group_by]
        else:
            columns = [{"name": query.hour_name, "type": "datetime"}]
        columns.append({"name": query.count_name, "type": "long"})
        if query.ingested_name:
            columns.append({"name": query.ingested_name, "type": "datetime"})
        table = {
            "name": "PrimaryResult",
            "columns": columns,
            "rows": [
                [
                    *group,
                    count,
                    *([newest[group].strftime("%Y-%m-%dT%H:%M:%S.%fZ")] if query.ingested_name else []),
                ]
                for group, count in counts.items()
            ],
        }
        return Response.json(200, {"tables": [table]})

    @staticmethod
    def _timespan(value: object) -> tuple[datetime | None, datetime | None]:
        if not isinstance(value, str) or "/" not in value:
            return None, None
        first, second = value.split("/", 1)
        try:
            return _parse_time(first), _parse_time(second)
        except ValueError:
            return None, None

    def _enrichment_query(self, request: Request, workspace: Workspace) -> Response | None:
        """Answer enrichment's queries: presence queries on another table (the detail table), the status query.

        None for any other query (the mail table's presence queries are answered as before).
        """
        try:
            body = json.loads(request.body)
            query = body["query"]
            status = parse_status_query(query)
            presence = None if status is not None else parse_presence_query(query)
        except KqlSyntaxError as err:
            return self._error(400, "BadArgumentError", "The request had some invalid properties", str(err))
        except (ValueError, KeyError, TypeError):
            return None
        timespan = self._timespan(body.get("timespan"))
        if status is not None:
            if status.table != self._schema.table:
                return self._error(400, "SemanticError", "A semantic error occurred.")
            newest: dict[tuple[str, str], tuple[int, str]] = {}
            for row in _queryable_rows(workspace.dcr.batches(), self.latency_seconds, self._clock, timespan):
                received = _parse_time(str(row["Received"]))
                if not status.start <= received < status.end:
                    continue
                if status.tenant is not None and row.get("SourceTenantId") != status.tenant:
                    continue
                key = (str(row["MessageTraceId"]), str(row["RecipientAddress"]).lower())
                revision = int(row.get("StatusRevision") or 0)
                if key not in newest or revision >= newest[key][0]:
                    newest[key] = (revision, str(row["Status"]))
            chosen = [
                [trace_id, recipient, found]
                for (trace_id, recipient), (_, found) in newest.items()
                if found in status.statuses
            ]
            return _table(
                ["MessageTraceId", "RecipientAddress", "Status"], self._schema, chosen[: status.take]
            )
        other = {schema.table: schema for schema in self._ingestion.schemas.values()}
        if presence is None or presence.table == self._schema.table or presence.table not in other:
            return None
        schema = other[presence.table]
        names = (*presence.projected, presence.column, *(name for name, _ in presence.filters))
        if any(name not in schema.column_names for name in names):
            return self._error(400, "SemanticError", "A semantic error occurred.")
        values = set(presence.values)
        rows = [
            [row.get(column) for column in presence.projected]
            for row in _queryable_rows(
                workspace.dcr.table_batches(presence.table), self.latency_seconds, self._clock, timespan
            )
            if row.get(presence.column) in values
            and all(row.get(name) == value for name, value in presence.filters)
        ]
        return _table(presence.projected, schema, rows)


# ---- enrichment's queries (``connector/enrich_store.py``) -------------------------------------------

_STATUS_GROUP = re.compile(
    r"\|\s*summarize\s+arg_max\(StatusRevision,\s*Status\)\s+by\s+MessageTraceId,\s*"
    r"RecipientAddress\s*=\s*tolower\(RecipientAddress\)\s*\|\s*where\s+Status\s+in\s*\("
)
_STATUS_TAIL = re.compile(
    r"\s*\|\s*project\s+MessageTraceId,\s*RecipientAddress,\s*Status\s*\|\s*take\s+(?P<take>\d+)\s*"
)


class StatusQuery(NamedTuple):
    """Enrichment's ``--status`` query: newest status per (trace id, lower-cased recipient) in a receive range."""

    table: str
    start: datetime
    end: datetime
    statuses: list[str]
    take: int
    tenant: str | None


def parse_status_query(query: object) -> StatusQuery | None:
    """The ``--status`` query shape (:func:`connector.enrich_store.status_query`); None for another.

    Raises:
        KqlSyntaxError: a string literal in it is malformed.
    """
    if not isinstance(query, str):
        return None
    head = _parse_range_head(query)
    if head is None or head.column != "Received" or any(name != "SourceTenantId" for name, _ in head.filters):
        return None
    if len(head.filters) > 1:
        return None
    tenant = head.filters[0][1] if head.filters else None
    pos = head.pos
    group = _STATUS_GROUP.match(query, pos)
    if group is None:
        return None
    statuses, pos = parse_string_list(query, group.end())
    tail = _STATUS_TAIL.fullmatch(query, pos)
    if tail is None:
        return None
    return StatusQuery(head.table, head.start, head.end, statuses, int(tail["take"]), tenant)


def _queryable_rows(
    batches: list[Any],
    latency: float,
    clock: Callable[[], datetime],
    timespan: tuple[datetime | None, datetime | None],
) -> list[dict[str, Any]]:
    """The rows of ``batches`` a query sees: arrived longer than ``latency`` ago, ``TimeGenerated`` in the timespan."""
    return [row for row, _ in _arrived_rows(batches, latency, clock, timespan)]


def _arrived_rows(
    batches: list[Any],
    latency: float,
    clock: Callable[[], datetime],
    timespan: tuple[datetime | None, datetime | None],
) -> list[tuple[dict[str, Any], datetime]]:
    """:func:`_queryable_rows` with each row's arrival time (what ``ingestion_time()`` gives)."""
    start, end = timespan
    now_mono = time.monotonic()
    rows: list[tuple[dict[str, Any], datetime]] = []
    for batch in batches:
        if batch.time + latency > now_mono:
            continue
        arrived = clock() - timedelta(seconds=now_mono - batch.time)
        for row in batch.rows:
            generated = _parse_time(str(row["TimeGenerated"]))
            if generated < arrived - timedelta(days=2):
                generated = arrived
            if (start and generated < start) or (end and generated > end):
                continue
            rows.append((row, arrived))
    return rows


def _table(columns: list[str], schema: TableSchema, rows: list[list[Any]]) -> Response:
    table = {
        "name": "PrimaryResult",
        "columns": [{"name": c, "type": schema.type_of(c)} for c in columns],
        "rows": rows,
    }
    return Response.json(200, {"tables": [table]})
