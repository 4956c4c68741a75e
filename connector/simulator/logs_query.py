"""Fake Log Analytics query API over the rows the ingestion simulator accepted.

Why: the connector's workspace verification must be tested against what a real
workspace shows, including ingestion latency: a row accepted by the Logs
Ingestion API becomes queryable only ``latency_seconds`` later (20 s to a few
minutes in Azure). Only the query shape the connector sends is understood::

    EmailEvents_CL
    | where MessageTraceId in ("id-1", "id-2")
    | project MessageTraceId, RecipientAddress, Status

Anything else is a 400 (``BadArgumentError``), as a real workspace would answer a
query it cannot run. ``TimeGenerated`` older than two days at arrival is replaced
by the arrival time, as Log Analytics does, and the request's ``timespan`` filters
on it.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.schema import TableSchema

from .entra import TokenValidator
from .http import Request, Response, SimulatedHttpServer
from .ingestion import IngestionServer

LOGS_QUERY_RESOURCE = "https://api.loganalytics.io"
_QUERY = re.compile(
    r"^\s*(?P<table>\w+)\s*\|\s*where\s+MessageTraceId\s+in\s*\((?P<ids>[^)]*)\)\s*"
    r"\|\s*project\s+(?P<columns>[\w\s,]+?)\s*$",
    re.DOTALL,
)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class LogsQueryServer(SimulatedHttpServer):
    """``POST /v1/workspaces/{id}/query`` answering from ``IngestionServer`` batches."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        validate_token: TokenValidator,
        ingestion: IngestionServer,
        schema: TableSchema,
        workspace_id: str,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__("logs-query", ssl_context)
        self._validate = validate_token
        self._ingestion = ingestion
        self._schema = schema
        self._clock = clock
        self.workspace_id = workspace_id
        self.latency_seconds = 0.0
        self.read_access = True
        self.route("POST", r"/v1/workspaces/(?P<workspace>[^/]+)/query", self._query)

    def reset(self) -> None:
        """Clear faults and logs; restore latency and access."""
        super().reset()
        self.latency_seconds = 0.0
        self.read_access = True

    def _error(self, status: int, code: str, message: str) -> Response:
        return Response.json(status, {"error": {"code": code, "message": message}})

    def _query(self, request: Request) -> Response:
        claims = self._validate(request.header("authorization") or None, LOGS_QUERY_RESOURCE)
        if isinstance(claims, str):
            return self._error(
                401, "InvalidTokenError", f"The provided authentication is not valid ({claims})."
            )
        if request.params["workspace"] != self.workspace_id:
            return self._error(404, "WorkspaceNotFoundError", "The workspace could not be found")
        if not self.read_access:
            return self._error(
                403,
                "InsufficientAccessError",
                "The provided credentials have insufficient access to perform the requested operation",
            )
        try:
            body = json.loads(request.body)
            match = _QUERY.match(body["query"])
        except (ValueError, KeyError, TypeError):
            match = None
        if match is None or match.group("table") != self._schema.table:
            return self._error(400, "BadArgumentError", "The request had some invalid properties")
        ids = {
            bytes(m.group(1), "utf-8").decode("unicode_escape") for m in _STRING.finditer(match.group("ids"))
        }
        columns = [c.strip() for c in match.group("columns").split(",")]
        if any(c not in self._schema.column_names for c in columns):
            return self._error(400, "SemanticError", "A semantic error occurred.")
        start, end = self._timespan(body.get("timespan"))
        now_mono = time.monotonic()
        rows: list[list[Any]] = []
        for batch in self._ingestion.batches():
            if batch.time + self.latency_seconds > now_mono:
                continue  # not queryable yet
            arrived = self._clock() - timedelta(seconds=now_mono - batch.time)
            for row in batch.rows:
                if row.get("MessageTraceId") not in ids:
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

    @staticmethod
    def _timespan(value: object) -> tuple[datetime | None, datetime | None]:
        if not isinstance(value, str) or "/" not in value:
            return None, None
        first, second = value.split("/", 1)
        try:
            return _parse_time(first), _parse_time(second)
        except ValueError:
            return None, None
