"""A small threaded HTTP(S) server base shared by every simulated service.

Why not a mocking library: the connector's tests must exercise the real msal,
azure-identity, azure-core and requests code paths, including TLS
verification, connection pooling (keep-alive), retries on dropped
connections and timeouts. Only a real socket gives that, so each simulated
service is a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` port 0 with:

* routing by method + path regex to plain functions (``Request -> Response``);
* HTTP/1.1 keep-alive done right: every response carries ``Content-Length``
  (except 1xx/204/304, which must not), request bodies are read fully
  (``Content-Length`` or chunked) so the next request on the connection parses;
* a thread-safe request log for assertions (method, path, query, URL, a
  header subset, status, ``time.monotonic()``);
* fault injection consumed in FIFO order (status codes, slow answers, dropped
  connections, truncated or HTML bodies) so a test can script outages;
* no stderr noise: access logs and handler tracebacks are swallowed.

TLS is negotiated in the per-connection thread (not in the accept loop), so a
client that stalls the handshake cannot block other clients.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

FaultKind = Literal["status", "timeout", "reset", "truncated", "html", "loop", "bad_skiptoken"]
SPECIAL_FAULTS: frozenset[str] = frozenset({"timeout", "reset", "truncated", "html", "loop", "bad_skiptoken"})

# Headers copied into the request log. Authorization is reduced to its scheme
# so logs never hold bearer tokens or client secrets.
LOGGED_HEADERS: tuple[str, ...] = (
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "prefer",
    "client-request-id",
    "x-ms-client-request-id",
    "return-client-request-id",
    "user-agent",
    "x-client-sku",
    "x-client-ver",
    "metadata",
    "connection",
)

MAX_REQUEST_BODY_BYTES = 64 * 1024 * 1024
HANDSHAKE_TIMEOUT_SECONDS = 10.0
IDLE_CONNECTION_TIMEOUT_SECONDS = 120.0

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to your account</title></head>"
    b"<body><h1>Service temporarily unavailable</h1>"
    b"<p>The page you requested is being served by a proxy, not by the API.</p>"
    b"</body></html>\n"
)


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request as a route handler sees it.

    Attributes:
        method: upper-case HTTP method.
        path: percent-decoded path without the query string.
        target: the request target exactly as sent (path + raw query).
        url: ``server.url + target``, i.e. the full URL the client used.
        query: decoded query parameters, first value per name (names as sent).
        headers: header names lower-cased, last value wins.
        body: raw body bytes (still gzip-compressed if the client compressed it).
        params: named groups of the route regex that matched.
        fault: the special fault (``"loop"``) a handler must apply, if any.
    """

    method: str
    path: str
    target: str
    url: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)
    fault: str | None = None

    def header(self, name: str, default: str = "") -> str:
        """Return header ``name`` (case-insensitive) or ``default``."""
        return self.headers.get(name.lower(), default)

    def query_ci(self, name: str) -> str | None:
        """Return query parameter ``name`` matched case-insensitively (OData style)."""
        wanted = name.lower()
        for key, value in self.query.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(slots=True)
class Response:
    """What a handler returns. ``abort=True`` drops the connection unanswered."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    abort: bool = False

    @classmethod
    def json(
        cls,
        status: int,
        document: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> Response:
        """Build a JSON response (UTF-8, compact, non-ASCII kept as is)."""
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        all_headers = {"Content-Type": content_type}
        all_headers.update(headers or {})
        return cls(status=status, body=body, headers=all_headers)

    @classmethod
    def empty(cls, status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
        """Build a body-less response (e.g. the Logs Ingestion API's 204)."""
        return cls(status=status, body=b"", headers=dict(headers or {}))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One entry of a server's request log.

    Attributes:
        method, path, target, url: as in :class:`Request`.
        query: decoded query parameters (first value per name).
        headers: a subset of request headers (see ``LOGGED_HEADERS``) plus
            ``authorization`` reduced to its scheme (``"Bearer"``).
        status: response status; 0 if the connection was dropped on purpose.
        body_size: request body size in bytes as received.
        time: ``time.monotonic()`` when the request was fully read.
        fault: the injected fault applied to this request, if any.
    """

    method: str
    path: str
    target: str
    url: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    status: int
    body_size: int
    time: float
    fault: str | None = None


@dataclass(slots=True)
class Fault:
    """A scripted misbehaviour, applied to the next matching requests.

    Attributes:
        kind: ``"status"`` (answer ``status`` with ``headers``/``body``),
            ``"timeout"`` (wait ``seconds`` then answer normally), ``"reset"``
            (drop the connection without answering), ``"truncated"`` (answer
            normally but cut the body in half, with a matching Content-Length,
            so the JSON does not parse), ``"html"`` (200 with an HTML page),
            ``"bad_skiptoken"`` (Graph: the page's nextLink carries a corrupt
            ``$skiptoken`` that the next request is refused for),
            ``"loop"`` (service specific: Graph answers with a nextLink that
            returns the same page forever).
        status: status code for ``kind == "status"``.
        remaining: how many more requests it applies to; ``None`` = until cleared.
        headers: extra response headers (e.g. ``{"Retry-After": "2"}``).
        body: response body; ``None`` = the service's usual error body.
        seconds: delay for ``"timeout"``.
        path: optional regex; the fault only applies to paths it matches (search).
        after: matching requests to let through untouched before the fault starts
            (e.g. fail the second upload of a run, not the first).
    """

    kind: FaultKind
    status: int = 500
    remaining: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    seconds: float = 30.0
    path: str | None = None
    after: int = 0


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class SimulatedHttpServer:
    """Base class of every simulated service: routes, request log, faults.

    Subclasses register routes in ``__init__`` with :meth:`route` and may
    override :meth:`error_response` (body used for injected status faults and
    for 404/405) and :meth:`decorate` (headers added to every response).

    Args:
        name: a label used in thread names and ``repr``.
        ssl_context: server TLS context; ``None`` serves plain HTTP (the App
            Service managed identity endpoint is plain HTTP on loopback).
        host: bind address; always loopback in tests.
    """

    def __init__(self, name: str, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self._ssl_context = ssl_context
        self._host = host
        self._routes: list[_Route] = []
        self._log: list[RequestRecord] = []
        self._faults: list[Fault] = []
        # Called with every request before faults and routing; returning True drops the
        # connection without an answer (the crash harness kills the client here).
        self.on_request: Callable[[Request], bool] | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> SimulatedHttpServer:
        """Bind port 0 and serve in a daemon thread. Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _ThreadingServer((self._host, 0), self)
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and join the thread."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimulatedHttpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``https://127.0.0.1:50123``."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def stopping(self) -> threading.Event:
        """Set while the server shuts down; handlers that wait should wait on it."""
        return self._stopping

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url}>"

    # ------------------------------------------------------------------- routing
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` and a path regex (full match)."""
        self._routes.append(_Route(method.upper(), re.compile(pattern), handler))

    # ------------------------------------------------------------- request log
    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Logged requests, oldest first, optionally filtered by path regex and method."""
        with self._lock:
            records = list(self._log)
        if path is not None:
            pattern = re.compile(path)
            records = [r for r in records if pattern.search(r.path)]
        if method is not None:
            records = [r for r in records if r.method == method.upper()]
        return records

    def clear_requests(self) -> None:
        """Forget every logged request."""
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------- faults
    def inject(
        self,
        status: int | str = 500,
        *,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        seconds: float = 30.0,
        path: str | None = None,
        after: int = 0,
    ) -> Fault:
        """Queue a fault for the next ``times`` matching requests (FIFO).

        Args:
            status: an HTTP status code, or one of ``"timeout"``, ``"reset"``,
                ``"truncated"``, ``"html"``, ``"loop"``.
            times: number of requests it applies to; ``None`` = until
                :meth:`clear_faults`.
            headers: extra response headers, e.g. ``{"Retry-After": "1"}``.
            body: response body (a mapping is JSON-encoded); default: the
                service's own error body for ``status``.
            seconds: how long ``"timeout"`` waits before answering.
            path: regex limiting the fault to matching request paths.
            after: let this many matching requests through before the fault applies.

        Returns:
            The queued :class:`Fault` (mutable; ``remaining`` counts down).
        """
        if isinstance(status, str):
            if status not in SPECIAL_FAULTS:
                raise ValueError(
                    f"unknown fault {status!r}; use a status code or one of {sorted(SPECIAL_FAULTS)}"
                )
            kind: FaultKind = status  # type: ignore[assignment]
            code = 200
        else:
            kind, code = "status", int(status)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        raw: bytes | None
        if body is None or isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode("utf-8")
        else:
            raw = json.dumps(body).encode("utf-8")
        fault = Fault(
            kind=kind,
            status=code,
            remaining=times,
            headers=dict(headers or {}),
            body=raw,
            seconds=seconds,
            path=path,
            after=after,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        """Faults not used up yet (copies of the queue, head first)."""
        with self._lock:
            return list(self._faults)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path is not None and not re.search(fault.path, path):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    return None
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[index]
                return fault
        return None

    def reset(self) -> None:
        """Clear the request log, faults and hook; subclasses also clear their state."""
        self.clear_requests()
        self.clear_faults()
        self.on_request = None

    # ----------------------------------------------------------- subclass hooks
    def error_response(self, status: int, message: str) -> Response:
        """The service's error shape for ``status`` (used by faults, 404, 405)."""
        return Response.json(status, {"error": {"code": _reason(status), "message": message}})

    def decorate(self, request: Request, response: Response) -> Response:
        """Add service-wide headers to every response (default: none)."""
        return response

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Apply faults and routing; returns the response and the fault used."""
        hook = self.on_request
        if hook is not None and hook(request):
            return Response(status=0, abort=True), "hook"
        fault = self._take_fault(request.path)
        fault_name: str | None = (
            None if fault is None else (fault.kind if fault.kind != "status" else str(fault.status))
        )
        if fault is not None:
            if fault.kind == "reset":
                return Response(status=0, abort=True), fault_name
            if fault.kind == "status":
                if fault.body is not None:
                    response = Response(
                        fault.status, fault.body, {"Content-Type": "application/json; charset=utf-8"}
                    )
                else:
                    response = self.error_response(fault.status, f"Injected fault: HTTP {fault.status}.")
                response.headers.update(fault.headers)
                return self.decorate(request, response), fault_name
            if fault.kind == "html":
                response = Response(
                    200, fault.body or HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"}
                )
                response.headers.update(fault.headers)
                return response, fault_name
            if fault.kind == "timeout":
                # Wait (interruptibly, so stop() is quick), then answer normally.
                self._stopping.wait(fault.seconds)
            if fault.kind in ("loop", "bad_skiptoken"):
                request = replace(request, fault=fault.kind)
        response = self._route(request)
        if fault is not None and fault.kind == "truncated" and response.body:
            response.body = response.body[: max(1, len(response.body) // 2)]
        if fault is not None:
            response.headers.update(fault.headers)
        return self.decorate(request, response), fault_name

    def _route(self, request: Request) -> Response:
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            return route.handler(replace(request, params=match.groupdict()))
        if allowed:
            response = self.error_response(405, f"The HTTP method '{request.method}' is not supported.")
            response.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return response
        return self.error_response(404, f"Resource not found for the segment '{request.path}'.")

    def _record(self, request: Request, status: int, fault: str | None) -> None:
        headers = {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers}
        auth = request.headers.get("authorization")
        if auth is not None:
            headers["authorization"] = auth.split(" ", 1)[0]
        record = RequestRecord(
            method=request.method,
            path=request.path,
            target=request.target,
            url=request.url,
            query=dict(request.query),
            headers=headers,
            status=status,
            body_size=len(request.body),
            time=time.monotonic(),
            fault=fault,
        )
        with self._lock:
            self._log.append(record)


def _reason(status: int) -> str:
    """A PascalCase error code for a status (``TooManyRequests`` for 429)."""
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        409: "Conflict",
        413: "RequestEntityTooLarge",
        429: "TooManyRequests",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }
    return names.get(status, f"Http{status}")


class _ThreadingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with per-thread TLS, connection tracking and no noise."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: SimulatedHttpServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        context = self.owner._ssl_context
        if context is not None:
            try:
                sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                sock = context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError):
                return  # failed handshake (e.g. client does not trust the CA): drop quietly
        with self._connections_lock:
            self._connections.add(sock)
        try:
            _RequestHandler(sock, client_address, self)
        except Exception:  # noqa: BLE001, S110 - a broken client connection must never print
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(sock)
            if sock is not request:
                with contextlib.suppress(OSError):
                    sock.close()

    def close_all_connections(self) -> None:
        """Shut down idle keep-alive sockets so their threads end promptly."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow handler errors: the test sees the client-side effect instead."""


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns one HTTP/1.1 exchange into a :class:`Request` and back."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = IDLE_CONNECTION_TIMEOUT_SECONDS
    server: _ThreadingServer

    def version_string(self) -> str:
        """The ``Server`` header value (no Python version suffix)."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default access log on stderr."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle()

    def _read_body(self) -> bytes | None:
        """Read the request body; ``None`` if it is malformed or too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # CRLF after the chunk
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if length < 0 or length > MAX_REQUEST_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._write(
                Response.json(400, {"error": {"code": "BadRequest", "message": "Malformed request body."}})
            )
            return
        split = urllib.parse.urlsplit(self.path)
        query: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(key, value)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(
            method=self.command.upper(),
            path=urllib.parse.unquote(split.path),
            target=self.path,
            url=owner.url + self.path,
            query=query,
            headers=headers,
            body=body,
        )
        try:
            response, fault = owner.dispatch(request)
        except Exception as exc:  # noqa: BLE001 - a simulator bug becomes a visible 500
            response, fault = owner.error_response(500, f"Simulator error: {type(exc).__name__}: {exc}"), None
        owner._record(request, 0 if response.abort else response.status, fault)
        if response.abort:
            self._abort()
            return
        if self.headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self._write(response, head_only=request.method == "HEAD")

    def _write(self, response: Response, head_only: bool = False) -> None:
        self.send_response(response.status)
        bodyless = response.status in (204, 304) or 100 <= response.status < 200
        sent_length = False
        for name, value in response.headers.items():
            if name.lower() == "content-length":
                continue  # always computed below, so keep-alive framing is right
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
            self.send_header(name, value)
        if not bodyless:
            self.send_header("Content-Length", str(len(response.body)))
            sent_length = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if sent_length and response.body and not head_only:
            self.wfile.write(response.body)
        self.wfile.flush()

    def _abort(self) -> None:
        """Drop the connection with a TCP RST and no response bytes."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
