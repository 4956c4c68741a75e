"""Fake Azure Monitor Logs Ingestion API (``POST /dataCollectionRules/.../streams/...``).

Why it is strict: the real service accepts a request and only later (or never)
shows the rows in Log Analytics, so a wrong column name or type in the
connector would go unnoticed until someone queries the table. The simulator
checks every row against ``connector/data/EmailEvents_CL.json`` at request
time and answers 400 naming the offending column, so tests fail loudly. The
DCR's second stream, the health rows, is checked the same way against
``connector/data/MessageTraceHealth_CL.json`` and stored apart: ``rows()`` is
the mail table, ``rows(table)`` any other.
(The real DCR silently drops undeclared columns and usually stores badly typed
values as empty; the simulator deliberately rejects both.)

Several DCRs (one per tenant with its own destination) share one endpoint, as DCRs
behind one data collection endpoint do: :meth:`IngestionServer.add_dcr` returns a
:class:`DataCollectionRule` with its own rows, batches, counters, flags and faults and
the same streams. The server's own data attributes (``rows``, ``batches``,
``role_assigned``, ``inject``, ...) are its default DCR's.

Size limit: the documented limit is "1 MB"; the service's own 413 says
``Maximum allowed content length: 1048576 bytes (1 MB)`` and applies to the
body as sent. azure-monitor-ingestion 1.1.0 cuts lists into chunks whose
records add up to <= 1 MiB of uncompressed JSON (``json.dumps`` per record, not
counting the array's brackets and ``", "`` separators) and then gzips them,
and the service accepts those chunks. So the simulator answers 413 when the
body as sent, or the uncompressed records counted the SDK's way, exceed
``MAX_CONTENT_LENGTH`` (1,048,576).
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from connector.schema import TableSchema

from .entra import MONITOR_RESOURCE, REASON_EXPIRED, REASON_MISSING, TokenValidator
from .http import Fault, FaultQueue, Request, RequestRecord, Response, SimulatedHttpServer, build_fault

SUPPORTED_API_VERSIONS: frozenset[str] = frozenset({"2021-11-01-preview", "2023-01-01"})
MAX_CONTENT_LENGTH = 1_048_576
ADMIN_TOKEN_HEADER = "X-Simulator-Admin-Token"
DECOMPRESSION_CAP = 64 * 1024 * 1024
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class IngestedBatch:
    """One accepted request: its rows and how they were sent."""

    rows: tuple[dict[str, Any], ...]
    content_encoding: str
    body_bytes: int
    uncompressed_bytes: int
    time: float
    stream: str = ""
    """The DCR stream the request named."""
    dcr: str = ""
    """The immutable id of the DCR the request named."""


_DCR_IN_PATH = re.compile(r"/dataCollectionRules/(?P<dcr>[^/]+)/")


class IngestionError(Exception):
    """An ingestion error response in the making."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class DataCollectionRule:
    """One DCR on the ingestion endpoint: what its streams accepted, its flags and its faults.

    Attributes (settable at any time):
        role_assigned, on_accepted, accept_status, refuse_row: as on :class:`IngestionServer`.
    """

    def __init__(
        self, server: IngestionServer, dcr_immutable_id: str, faults: FaultQueue | None = None
    ) -> None:
        self._server = server
        self.dcr_immutable_id = dcr_immutable_id
        self.faults = faults or FaultQueue()
        self.role_assigned = True
        self.on_accepted: Callable[[IngestedBatch], None] | None = None
        self.refuse_row: Callable[[dict[str, Any]], str | None] | None = None
        self.refuse_other_row: dict[str, Callable[[dict[str, Any]], str | None]] = {}
        """As ``refuse_row``, for the rows of another table (the detail table), by table name."""
        self.accept_status = 204
        self._rows: list[dict[str, Any]] = []
        self._other_rows: dict[str, list[dict[str, Any]]] = {
            each.table: [] for each in server.schemas.values() if each is not server.schema
        }
        self._batches: list[IngestedBatch] = []
        self._other_batches: dict[str, list[IngestedBatch]] = {table: [] for table in self._other_rows}
        self._request_count = 0
        self._lock = threading.Lock()

    @property
    def is_default(self) -> bool:
        """Whether this is the server's default DCR."""
        return self is self._server.default_dcr

    def rows(self, table: str | None = None) -> list[dict[str, Any]]:
        """Copies of every accepted row of ``table`` (the mail table unless named), in arrival order."""
        with self._lock:
            stored = (
                self._rows if table in (None, self._server.schema.table) else self._other_rows[table or ""]
            )
            return [dict(row) for row in stored]

    def batches(self) -> list[IngestedBatch]:
        """Every accepted request to the mail stream, in arrival order."""
        with self._lock:
            return list(self._batches)

    def table_batches(self, table: str) -> list[IngestedBatch]:
        """Every accepted request to the stream of another table (the detail rows'), in arrival order."""
        with self._lock:
            return list(self._other_batches[table])

    @property
    def request_count(self) -> int:
        """POSTs to this DCR's mail stream (any outcome, faults included); health rows not counted."""
        with self._lock:
            return self._request_count

    def inject(self, status: int | str = 500, **kwargs: Any) -> Fault:
        """Queue a fault for requests to this DCR (arguments of :meth:`SimulatedHttpServer.inject`)."""
        return self.faults.add(build_fault(status, **kwargs))

    def clear_faults(self) -> None:
        """Drop this DCR's queued faults."""
        self.faults.clear()

    def pending_faults(self) -> list[Fault]:
        """This DCR's faults not used up yet."""
        return self.faults.pending()

    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Requests to this DCR (the default DCR's: also those to no known DCR, e.g. ``/admin/rows``)."""
        if self.is_default:
            return self._server.requests(path, method)
        return self._server.scoped_requests(self.dcr_immutable_id, path, method)

    def reset(self) -> None:
        """Clear rows, batches, counters, faults and flags."""
        with self._lock:
            self._rows.clear()
            for stored in self._other_rows.values():
                stored.clear()
            self._batches.clear()
            for batches in self._other_batches.values():
                batches.clear()
            self._request_count = 0
        self.faults.clear()
        self.role_assigned = True
        self.on_accepted = None
        self.refuse_row = None
        self.refuse_other_row = {}
        self.accept_status = 204

    def drop_rows(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the mail rows ``predicate`` picks, as if they never arrived (a planted gap); return how many."""
        with self._lock:
            dropped = 0
            kept_batches: list[IngestedBatch] = []
            for batch in self._batches:
                kept = tuple(row for row in batch.rows if not predicate(row))
                dropped += len(batch.rows) - len(kept)
                kept_batches.append(replace(batch, rows=kept))
            self._batches = kept_batches
            self._rows = [row for row in self._rows if not predicate(row)]
            return dropped

    def age(self, seconds: float) -> None:
        """Make every mail row stored so far look as if it arrived ``seconds`` earlier (time passing)."""
        with self._lock:
            self._batches = [replace(batch, time=batch.time - seconds) for batch in self._batches]

    def duplicate_rows(self, predicate: Callable[[dict[str, Any]], bool], *, age_seconds: float = 0.0) -> int:
        """Store another copy of the mail rows ``predicate`` picks (a planted duplicate).

        The copies arrive now, or ``age_seconds`` ago (queryable at once, past the latency).
        """
        with self._lock:
            copies = [dict(row) for row in self._rows if predicate(row)]
            if copies:
                self._rows.extend(dict(row) for row in copies)
                self._batches.append(
                    IngestedBatch(
                        rows=tuple(copies),
                        content_encoding="",
                        body_bytes=0,
                        uncompressed_bytes=0,
                        time=time.monotonic() - age_seconds,
                        stream=self._server.schema.stream,
                        dcr=self.dcr_immutable_id,
                    )
                )
            return len(copies)

    def _count_request(self) -> None:
        with self._lock:
            self._request_count += 1

    def _store(self, schema: TableSchema, batch: IngestedBatch, document: list[dict[str, Any]]) -> None:
        with self._lock:
            if schema is self._server.schema:
                self._rows.extend(dict(r) for r in document)
                self._batches.append(batch)
            else:
                self._other_rows[schema.table].extend(dict(r) for r in document)
                self._other_batches[schema.table].append(batch)


class IngestionServer(SimulatedHttpServer):
    """Fake DCR ingestion endpoint for a default DCR (and any added ones) with one mail stream.

    Args:
        ssl_context: server TLS context.
        validate_token: ``EntraServer.validate_bearer``.
        dcr_immutable_id: the default DCR (:meth:`add_dcr` adds more).
        schema: the mail table's schema (``rows()`` and ``/admin/rows`` serve it).
        other_schemas: further tables, each fed by its own stream of the same DCR (the health rows).
        tenant_id: the Azure tenant the DCRs belong to: a token of another tenant (a customer
            tenant's Graph credential used by mistake) is refused 401; ``None`` takes any.

    Attributes (settable at any time; those of the default DCR, :attr:`default_dcr`):
        role_assigned: ``False`` answers 403 (no Monitoring Metrics Publisher).
        on_accepted: called with each accepted batch before the success status is sent.
        accept_status: the status an accepted request is answered with: the documented 204, or
            another 2xx (200, 202) to check that a client counts any 2xx as stored rows
            (azure-monitor-ingestion 1.1.0 raises ``HttpResponseError`` for anything but 204).
        refuse_row: the workspace's own rule for rows it will not take (a row → the reason, or
            ``None``); one such row makes the whole request a 400, as a bad value does.
        admin_token: the secret ``GET /admin/rows`` wants in ``X-Simulator-Admin-Token``. That
            route lets ``python -m connector.simulator rows`` (another process) show what the
            workspace stored; the token keeps other local users from reading it.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        validate_token: TokenValidator,
        dcr_immutable_id: str,
        schema: TableSchema,
        other_schemas: tuple[TableSchema, ...] = (),
        tenant_id: str | None = None,
    ) -> None:
        super().__init__("ingestion", ssl_context)
        self._validate = validate_token
        self.tenant_id = tenant_id
        self.schema = schema
        self.schemas = {each.stream: each for each in (schema, *other_schemas)}
        self.dcr_immutable_id = dcr_immutable_id
        self.stream_name = schema.stream
        self.default_dcr = DataCollectionRule(self, dcr_immutable_id, self._faults)
        self._dcrs: dict[str, DataCollectionRule] = {dcr_immutable_id: self.default_dcr}
        self._dcrs_lock = threading.Lock()
        self.admin_token = secrets.token_urlsafe(24)
        self.route("POST", r"/dataCollectionRules/(?P<dcr>[^/]+)/streams/(?P<stream>[^/]+)", self._ingest)
        self.route("GET", r"/admin/rows", self._admin_rows)

    # ------------------------------------------------------------------ DCRs
    def add_dcr(self, dcr_immutable_id: str | None = None) -> DataCollectionRule:
        """Add a DCR with the same streams (default id: a new ``dcr-<hex>``); returns it."""
        dcr = DataCollectionRule(self, dcr_immutable_id or "dcr-" + uuid.uuid4().hex)
        with self._dcrs_lock:
            if dcr.dcr_immutable_id in self._dcrs:
                raise ValueError(f"DCR {dcr.dcr_immutable_id} exists already")
            self._dcrs[dcr.dcr_immutable_id] = dcr
        return dcr

    def remove_dcr(self, dcr_immutable_id: str) -> None:
        """Delete an added DCR (requests to it get 404)."""
        if dcr_immutable_id == self.dcr_immutable_id:
            raise ValueError("the default DCR cannot be removed")
        with self._dcrs_lock:
            self._dcrs.pop(dcr_immutable_id, None)

    def dcr(self, dcr_immutable_id: str) -> DataCollectionRule:
        """The DCR ``dcr_immutable_id`` (KeyError if unknown)."""
        with self._dcrs_lock:
            return self._dcrs[dcr_immutable_id]

    @property
    def dcrs(self) -> tuple[DataCollectionRule, ...]:
        """Every DCR, the default first."""
        with self._dcrs_lock:
            return tuple(self._dcrs.values())

    def _dcr_of(self, request: Request) -> DataCollectionRule | None:
        match = _DCR_IN_PATH.match(request.path)
        if match is None:
            return None
        with self._dcrs_lock:
            return self._dcrs.get(match["dcr"])

    def scope_of(self, request: Request) -> str | None:
        """An added DCR's immutable id when the request names it; else ``None``."""
        dcr = self._dcr_of(request)
        return None if dcr is None or dcr.is_default else dcr.dcr_immutable_id

    def fault_queue_for(self, request: Request) -> FaultQueue:
        """The faults of the DCR the request names (the default DCR's otherwise)."""
        dcr = self._dcr_of(request)
        return self._faults if dcr is None else dcr.faults

    # ---------------------------------------------------------------- results
    def rows(self, table: str | None = None) -> list[dict[str, Any]]:
        """Copies of every row the default DCR accepted for ``table`` (the mail table unless named)."""
        return self.default_dcr.rows(table)

    def batches(self) -> list[IngestedBatch]:
        """Every request the default DCR's mail stream accepted, in arrival order."""
        return self.default_dcr.batches()

    @property
    def request_count(self) -> int:
        """POSTs to the default DCR's mail stream (any outcome, faults included); health rows not counted."""
        return self.default_dcr.request_count

    @property
    def role_assigned(self) -> bool:
        """False: the default DCR answers 403 (no Monitoring Metrics Publisher)."""
        return self.default_dcr.role_assigned

    @role_assigned.setter
    def role_assigned(self, value: bool) -> None:
        self.default_dcr.role_assigned = value

    @property
    def on_accepted(self) -> Callable[[IngestedBatch], None] | None:
        """Called with each batch the default DCR accepted, before the success status is sent."""
        return self.default_dcr.on_accepted

    @on_accepted.setter
    def on_accepted(self, value: Callable[[IngestedBatch], None] | None) -> None:
        self.default_dcr.on_accepted = value

    @property
    def refuse_row(self) -> Callable[[dict[str, Any]], str | None] | None:
        """The default DCR's rule for rows it will not take."""
        return self.default_dcr.refuse_row

    @refuse_row.setter
    def refuse_row(self, value: Callable[[dict[str, Any]], str | None] | None) -> None:
        self.default_dcr.refuse_row = value

    @property
    def refuse_other_row(self) -> dict[str, Callable[[dict[str, Any]], str | None]]:
        """The default DCR's rules for rows of the other tables, by table name (a dict to fill)."""
        return self.default_dcr.refuse_other_row

    @property
    def accept_status(self) -> int:
        """The status the default DCR answers an accepted request with."""
        return self.default_dcr.accept_status

    @accept_status.setter
    def accept_status(self, value: int) -> None:
        self.default_dcr.accept_status = value

    def reset(self) -> None:
        """Clear rows, batches, counters, faults, logs and flags of every DCR (DCRs stay)."""
        super().reset()
        for dcr in self.dcrs:
            dcr.reset()

    # -------------------------------------------------------------- plumbing
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Count every request to a mail stream, including those answered by an injected fault."""
        if request.method == "POST" and request.path.endswith(f"/streams/{self.schema.stream}"):
            dcr = self._dcr_of(request)
            if dcr is not None:
                dcr._count_request()
        return super().dispatch(request)

    def error_response(self, status: int, message: str) -> Response:
        """The Logs Ingestion API's error shape."""
        codes = {
            413: "ContentLengthLimitExceeded",
            429: "TooManyRequests",
            500: "InternalServerError",
            503: "ServiceUnavailable",
        }
        return _error(
            IngestionError(
                status, codes.get(status, "OperationFailed" if status >= 500 else "BadRequest"), message
            )
        )

    def decorate(self, request: Request, response: Response) -> Response:
        """Echo the client's request id and add a server request id."""
        response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        client_id = request.header("x-ms-client-request-id")
        if client_id:
            response.headers.setdefault("x-ms-client-request-id", client_id)
        return response

    # ---------------------------------------------------------------- handler
    def _admin_rows(self, request: Request) -> Response:
        """Every row a DCR stored (``?dcr=<id>``, default: the default DCR) as JSON lines (not a real service route)."""
        if not hmac.compare_digest(request.header(ADMIN_TOKEN_HEADER).encode(), self.admin_token.encode()):
            return self.error_response(403, f"{ADMIN_TOKEN_HEADER} is missing or wrong.")
        wanted = request.query.get("dcr")
        try:
            dcr = self.default_dcr if wanted is None else self.dcr(wanted)
        except KeyError:
            return self.error_response(404, f"Data collection rule with immutable Id '{wanted}' not found.")
        lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in dcr.rows()]
        body = "".join(lines).encode("utf-8", "backslashreplace")
        return Response(200, body, {"Content-Type": "application/x-ndjson; charset=utf-8"})

    def _ingest(self, request: Request) -> Response:
        try:
            return self._ingest_or_raise(request)
        except IngestionError as error:
            response = _error(error)
            response.headers["x-ms-error-code"] = error.code
            return response

    def _ingest_or_raise(self, request: Request) -> Response:
        version = request.query.get("api-version")
        if not version:
            raise IngestionError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in SUPPORTED_API_VERSIONS:
            raise IngestionError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{', '.join(sorted(SUPPORTED_API_VERSIONS))}'.",
            )
        claims = self._validate(request.header("authorization") or None, MONITOR_RESOURCE)
        if isinstance(claims, str):
            messages = {
                REASON_MISSING: "Authorization header is missing or empty.",
                REASON_EXPIRED: "The provided authentication token has expired.",
            }
            raise IngestionError(
                401,
                "InvalidToken",
                messages.get(claims, f"The provided authentication token is not valid ({claims})."),
            )
        if self.tenant_id is not None and claims.tid.lower() != self.tenant_id.lower():
            raise IngestionError(
                401,
                "InvalidToken",
                f"The provided authentication token was issued by tenant '{claims.tid}', not by the tenant "
                f"'{self.tenant_id}' of the data collection rule.",
            )
        dcr = request.params["dcr"]
        with self._dcrs_lock:
            rule = self._dcrs.get(dcr)
        if rule is None:
            raise IngestionError(
                404, "NotFound", f"Data collection rule with immutable Id '{dcr}' not found."
            )
        stream = request.params["stream"]
        schema = self.schemas.get(stream)
        if schema is None:
            raise IngestionError(
                404,
                "InvalidStream",
                f"Stream '{stream}' is not declared in data collection rule with immutable Id '{dcr}'.",
            )
        if not rule.role_assigned:
            raise IngestionError(
                403,
                "OperationFailed",
                "The authentication token provided does not have access to ingest data for the data collection rule "
                f"with immutable Id '{dcr}'.",
            )
        body = request.body
        if len(body) > MAX_CONTENT_LENGTH:
            raise _too_large(len(body))
        encoding = request.header("content-encoding").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = decompressor.decompress(body, DECOMPRESSION_CAP)
                if decompressor.unconsumed_tail or not decompressor.eof:
                    raise IngestionError(
                        400,
                        "InvalidContentEncoding",
                        "The gzip body is truncated or too large to decompress.",
                    )
            except zlib.error:
                raise IngestionError(
                    400, "InvalidContentEncoding", "The request body is not valid gzip data."
                ) from None
        elif encoding in ("", "identity"):
            raw = body
        else:
            raise IngestionError(
                400, "InvalidContentEncoding", f"Content-Encoding '{encoding}' is not supported; use gzip."
            )
        content_type = request.header("content-type").lower()
        if content_type and "json" not in content_type:
            raise IngestionError(
                415,
                "UnsupportedMediaType",
                f"Content-Type '{content_type}' is not supported; use application/json.",
            )
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError):
            if len(raw) > MAX_CONTENT_LENGTH:
                raise _too_large(len(raw)) from None
            raise IngestionError(
                400, "InvalidPayload", "The request body is not valid UTF-8 JSON (malformed JSON)."
            ) from None
        if not isinstance(document, list):
            raise IngestionError(400, "InvalidPayload", "The request body must be a JSON array of objects.")
        # Measure like azure-monitor-ingestion: brackets and ", " separators excluded.
        framing = 2 + 2 * max(0, len(document) - 1)
        if len(raw) - framing > MAX_CONTENT_LENGTH:
            raise _too_large(len(raw))
        if not document:
            raise IngestionError(400, "InvalidPayload", "The request body contains no records.")
        for index, record in enumerate(document):
            self._check_record(index, record, schema, rule)
        batch = IngestedBatch(
            rows=tuple(dict(r) for r in document),
            content_encoding=encoding or "identity",
            body_bytes=len(body),
            uncompressed_bytes=len(raw),
            time=time.monotonic(),
            stream=stream,
            dcr=dcr,
        )
        rule._store(schema, batch, document)
        on_accepted = rule.on_accepted
        if on_accepted is not None:
            # e.g. kill the client now: the service has the rows, the client never hears 204
            on_accepted(batch)
        return Response(rule.accept_status)

    def _check_record(self, index: int, record: Any, schema: TableSchema, rule: DataCollectionRule) -> None:
        if not isinstance(record, dict):
            raise IngestionError(400, "InvalidPayload", f"Record {index} is not a JSON object.")
        for name, value in record.items():
            try:
                column_type = schema.type_of(name)
            except KeyError:
                raise IngestionError(
                    400,
                    "InvalidPayload",
                    f"Record {index}: column '{name}' is not declared in stream '{schema.stream}' "
                    f"(table {schema.table}).",
                ) from None
            problem = _type_problem(column_type, value)
            if problem is not None:
                raise IngestionError(
                    400,
                    "InvalidPayload",
                    f"Record {index}: column '{name}' of type '{column_type}' {problem}: {value!r:.80}.",
                )
        refuse_row = rule.refuse_row if schema is self.schema else rule.refuse_other_row.get(schema.table)
        reason = None if refuse_row is None else refuse_row(record)
        if reason is not None:
            raise IngestionError(400, "InvalidPayload", f"Record {index}: {reason}")


def _type_problem(column_type: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``column_type``, or ``None`` if it does."""
    if value is None or column_type == "dynamic":
        return None
    if column_type == "string":
        return None if isinstance(value, str) else "needs a string"
    if column_type in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return "needs an integer"
        low, high = INT32 if column_type == "int" else INT64
        return None if low <= value <= high else "is out of range"
    if column_type == "real":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "needs a number"
        return None if math.isfinite(float(value)) else "needs a finite number"
    if column_type == "boolean":
        return None if isinstance(value, bool) else "needs true or false"
    if column_type == "datetime":
        if isinstance(value, str) and _ISO_DATETIME.fullmatch(value.strip()):
            return None
        return "needs an ISO 8601 date-time string"
    return f"has unknown column type {column_type}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_large(actual: int) -> IngestionError:
    return IngestionError(
        413,
        "ContentLengthLimitExceeded",
        f"Maximum allowed content length: {MAX_CONTENT_LENGTH} bytes (1 MB). Provided content length: {actual} bytes.",
    )


def _error(error: IngestionError) -> Response:
    return Response.json(error.status, {"error": {"code": error.code, "message": error.message}})
