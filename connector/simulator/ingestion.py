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
from dataclasses import dataclass
from typing import Any

from connector.schema import TableSchema

from .entra import MONITOR_RESOURCE, REASON_EXPIRED, REASON_MISSING, TokenValidator
from .http import Request, Response, SimulatedHttpServer

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


class IngestionError(Exception):
    """An ingestion error response in the making."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class IngestionServer(SimulatedHttpServer):
    """Fake DCR ingestion endpoint for one DCR and one stream.

    Args:
        ssl_context: server TLS context.
        validate_token: ``EntraServer.validate_bearer``.
        dcr_immutable_id: the only known DCR.
        schema: the mail table's schema (``rows()`` and ``/admin/rows`` serve it).
        other_schemas: further tables, each fed by its own stream of the same DCR (the health rows).

    Attributes (settable at any time):
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
    ) -> None:
        super().__init__("ingestion", ssl_context)
        self._validate = validate_token
        self.schema = schema
        self.schemas = {each.stream: each for each in (schema, *other_schemas)}
        self._other_rows: dict[str, list[dict[str, Any]]] = {each.table: [] for each in other_schemas}
        self.dcr_immutable_id = dcr_immutable_id
        self.stream_name = schema.stream
        self.role_assigned = True
        self.on_accepted: Callable[[IngestedBatch], None] | None = None
        self.refuse_row: Callable[[dict[str, Any]], str | None] | None = None
        self.accept_status = 204
        self._rows: list[dict[str, Any]] = []
        self._batches: list[IngestedBatch] = []
        self._request_count = 0
        self._data_lock = threading.Lock()
        self.admin_token = secrets.token_urlsafe(24)
        self.route("POST", r"/dataCollectionRules/(?P<dcr>[^/]+)/streams/(?P<stream>[^/]+)", self._ingest)
        self.route("GET", r"/admin/rows", self._admin_rows)

    # ---------------------------------------------------------------- results
    def rows(self, table: str | None = None) -> list[dict[str, Any]]:
        """Copies of every accepted row of ``table`` (the mail table unless named), in arrival order."""
        with self._data_lock:
            stored = self._rows if table in (None, self.schema.table) else self._other_rows[table or ""]
            return [dict(row) for row in stored]

    def batches(self) -> list[IngestedBatch]:
        """Every accepted request to the mail stream, in arrival order."""
        with self._data_lock:
            return list(self._batches)

    @property
    def request_count(self) -> int:
        """POSTs to the mail stream's ingestion route (any outcome, faults included); health rows not counted."""
        with self._data_lock:
            return self._request_count

    def reset(self) -> None:
        """Clear rows, batches, counters, faults, logs and flags."""
        super().reset()
        with self._data_lock:
            self._rows.clear()
            for stored in self._other_rows.values():
                stored.clear()
            self._batches.clear()
            self._request_count = 0
        self.role_assigned = True
        self.on_accepted = None
        self.refuse_row = None
        self.accept_status = 204

    # -------------------------------------------------------------- plumbing
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Count every request to the mail stream, including those answered by an injected fault."""
        if request.method == "POST" and request.path.endswith(f"/streams/{self.schema.stream}"):
            with self._data_lock:
                self._request_count += 1
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
        """Every stored row as JSON lines, in arrival order (not a real service route)."""
        if not hmac.compare_digest(request.header(ADMIN_TOKEN_HEADER).encode(), self.admin_token.encode()):
            return self.error_response(403, f"{ADMIN_TOKEN_HEADER} is missing or wrong.")
        lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in self.rows()]
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
        dcr = request.params["dcr"]
        if dcr != self.dcr_immutable_id:
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
        if not self.role_assigned:
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
            self._check_record(index, record, schema)
        batch = IngestedBatch(
            rows=tuple(dict(r) for r in document),
            content_encoding=encoding or "identity",
            body_bytes=len(body),
            uncompressed_bytes=len(raw),
            time=time.monotonic(),
            stream=stream,
        )
        with self._data_lock:
            if schema is self.schema:
                self._rows.extend(dict(r) for r in document)
                self._batches.append(batch)
            else:
                self._other_rows[schema.table].extend(dict(r) for r in document)
        if self.on_accepted is not None:
            # e.g. kill the client now: the service has the rows, the client never hears 204
            self.on_accepted(batch)
        return Response(self.accept_status)

    def _check_record(self, index: int, record: Any, schema: TableSchema) -> None:
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
        reason = None if self.refuse_row is None or schema is not self.schema else self.refuse_row(record)
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
