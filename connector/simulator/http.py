"""A small threaded HTTP(S) server base shared by every simulated service.

Why not a mocking library: the connector's tests must exercise the real msal,
azure-identity, azure-core and requests code paths, including TLS
verification, connection pooling (keep-alive), retries on dropped
connections and timeouts. Only a real socket gives that, so each simulated
service is a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` port 0 with:

* routing by method + full-match path regex (named groups become
  ``Request.params``) to plain functions ``Request -> Response``; 404 and 405
  (with ``Allow``) in the service's error shape;
* HTTP/1.1 keep-alive done right: every response carries ``Content-Length``
  (except 1xx/204/304, which must not), request bodies are read fully
  (``Content-Length`` or chunked) so the next request on the connection parses;
* a thread-safe request log for assertions (method, path, query, URL, headers
  with secrets removed, status, ``time.monotonic()``, fault);
* fault injection consumed in FIFO order (status codes, slow answers, dropped
  connections, truncated or HTML bodies) so a test can script outages, and an
  ``on_request`` hook that can drop a connection (the crash harness kills its
  client there);
* no stderr noise: access logs and handler tracebacks are swallowed.

TLS is negotiated in the per-connection thread (not in the accept loop), so a
client that stalls the handshake cannot block other clients. A dropped
connection is a TCP RST (``SO_LINGER`` 0) with no response bytes.

Why the stdlib server and not werkzeug (3.1.9, installed with azure-functions):
its server answers every request with ``Connection: close`` (no keep-alive, so
pooling bugs would hide), wraps the listening socket in TLS (the handshake runs
in the accept loop) and has no way to drop a connection without writing a
response. Its ``routing.Map`` works, but replacing the dozen lines of regex
table below with it is not shorter and changes the route syntax and 405 answers
(it adds HEAD to GET routes). So the plumbing stays here, trimmed.
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args

FaultKind = Literal["status", "timeout", "reset", "truncated", "html", "loop", "bad_skiptoken"]
SPECIAL_FAULTS: frozenset[str] = frozenset(get_args(FaultKind)) - {"status"}
# Never logged: the managed identity secret, the simulator's admin token and cookies.
# Authorization is logged as its scheme only.
SECRET_HEADERS: frozenset[str] = frozenset(
    {"authorization", "x-identity-header", "cookie", "x-simulator-admin-token"}
)
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
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
        url: ``server.url`` + the request target as sent, i.e. the full URL the client used.
        query: decoded query parameters, first value per name (names as sent).
        headers: header names lower-cased, last value wins.
        body: raw body bytes (still gzip-compressed if the client compressed it).
        params: named groups of the route regex that matched.
        fault: the injected fault being applied (``"loop"`` and ``"bad_skiptoken"`` are up to the handler).
    """

    method: str
    path: str
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
        return next((value for key, value in self.query.items() if key.lower() == wanted), None)


@dataclass(slots=True)
class Response:
    """What a handler returns. ``abort=True`` drops the connection unanswered."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    abort: bool = False

    @classmethod
    def json(cls, status: int, document: Any, headers: Mapping[str, str] | None = None) -> Response:
        """Build a JSON response (UTF-8, compact, non-ASCII kept as is); ``headers`` may override Content-Type.

        An unpaired surrogate (hostile text in a test record) goes out as the ``\\udXXX`` escape a
        real service sends for it, since it has no UTF-8 form.
        """
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )
        return cls(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One entry of a server's request log.

    Attributes:
        method, path, url, query: as in :class:`Request`.
        headers: request headers without ``SECRET_HEADERS``; ``authorization``
            is kept as its scheme only (``"Bearer"``).
        status: response status; 0 if the connection was dropped on purpose.
        time: ``time.monotonic()`` when the request was answered.
        fault: the injected fault applied to this request (``"503"``, ``"reset"``,
            ``"hook"`` for an ``on_request`` drop), if any.
        body: the request body as sent (gzip-compressed if the client compressed it), so
            a test can check what left the client, refused requests included.
        scope: the part of a multi-part service the request was for (Graph: an added
            tenant, by its token; ingestion: an added DCR; logs query: an added workspace);
            ``None`` for the default part and for requests no part claims.
    """

    method: str
    path: str
    url: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    status: int
    time: float
    fault: str | None = None
    body: bytes = b""
    scope: str | None = None


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
            ``"loop"`` (Graph: a nextLink that returns the same page forever).
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


def build_fault(
    status: int | str = 500,
    *,
    times: int | None = 1,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | Mapping[str, Any] | None = None,
    seconds: float = 30.0,
    path: str | None = None,
    after: int = 0,
) -> Fault:
    """A :class:`Fault` from :meth:`SimulatedHttpServer.inject`'s arguments (validated)."""
    if isinstance(status, str) and status not in SPECIAL_FAULTS:
        raise ValueError(f"unknown fault {status!r}; use a status code or one of {sorted(SPECIAL_FAULTS)}")
    if times is not None and times < 1:
        raise ValueError("times must be >= 1 or None")
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    return Fault(
        kind=status if isinstance(status, str) else "status",  # type: ignore[arg-type]
        status=200 if isinstance(status, str) else int(status),
        remaining=times,
        headers=dict(headers or {}),
        body=body,
        seconds=seconds,
        path=path,
        after=after,
    )


class FaultQueue:
    """Thread-safe FIFO of :class:`Fault` s; a server has one, and one per extra part (tenant, DCR)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        """Queue ``fault`` behind the others."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """Faults not used up yet (head first)."""
        with self._lock:
            return list(self._faults)

    def take(self, path: str) -> Fault | None:
        """The first queued fault whose path matches; counts it down (or its ``after``)."""
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


def filter_records(records: list[RequestRecord], path: str | None, method: str | None) -> list[RequestRecord]:
    """``records`` whose path matches the regex ``path`` (search) and whose method is ``method``."""
    return [
        r
        for r in records
        if (path is None or re.search(path, r.path)) and (method is None or r.method == method.upper())
    ]


class SimulatedHttpServer:
    """Base class of every simulated service: routes, request log, faults.

    Subclasses register routes in ``__init__`` with :meth:`route` and may
    override :meth:`error_response` (body used for injected status faults and
    for 404/405) and :meth:`decorate` (headers added to every response).

    Args:
        name: a label used in thread names.
        ssl_context: server TLS context; ``None`` serves plain HTTP (the App
            Service managed identity endpoint is plain HTTP on loopback).
        host: bind address; always loopback in tests.
    """

    def __init__(self, name: str, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self._ssl_context = ssl_context
        self._host = host
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._log: list[RequestRecord] = []
        self._faults = FaultQueue()
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
        self._httpd = _ThreadingServer((self._host, 0), self)
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end slow answers, drop open keep-alive connections and join the thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> SimulatedHttpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
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

    # ------------------------------------------------------------------- routing
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` and a path regex (full match)."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def _route(self, request: Request) -> Response:
        allowed: set[str] = set()
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match is not None and method == request.method:
                return handler(replace(request, params=match.groupdict()))
            if match is not None:
                allowed.add(method)
        if not allowed:
            return self.error_response(404, f"Resource not found for the segment '{request.path}'.")
        response = self.error_response(405, f"The HTTP method '{request.method}' is not supported.")
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    # ------------------------------------------------------------- request log
    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Logged requests of the default part, oldest first, optionally filtered by path regex (search) and method.

        On a server with several parts (Graph tenants, DCRs, workspaces) this leaves out the
        requests an added part claimed (``scope`` set); :meth:`all_requests` has every one.
        """
        return [r for r in self.all_requests(path, method) if r.scope is None]

    def all_requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Every logged request, whichever part it was for."""
        with self._lock:
            records = list(self._log)
        return filter_records(records, path, method)

    def scoped_requests(
        self, scope: str, path: str | None = None, method: str | None = None
    ) -> list[RequestRecord]:
        """The logged requests of one added part (``scope`` as :meth:`scope_of` names it)."""
        return [r for r in self.all_requests(path, method) if r.scope == scope]

    def clear_requests(self) -> None:
        """Forget every logged request."""
        with self._lock:
            self._log.clear()

    def _record(self, request: Request, status: int, fault: str | None) -> None:
        headers = {k: v for k, v in request.headers.items() if k not in SECRET_HEADERS}
        if "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"].split(" ", 1)[0]
        record = RequestRecord(
            request.method,
            request.path,
            request.url,
            dict(request.query),
            headers,
            status,
            time.monotonic(),
            fault,
            request.body,
            self.scope_of(request),
        )
        with self._lock:
            self._log.append(record)

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
                ``"truncated"``, ``"html"``, ``"loop"``, ``"bad_skiptoken"``.
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
        return self._faults.add(
            build_fault(
                status, times=times, headers=headers, body=body, seconds=seconds, path=path, after=after
            )
        )

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        """Faults not used up yet (head first)."""
        return self._faults.pending()

    def _take_fault(self, path: str) -> Fault | None:
        """The first queued fault whose path matches; counts it down (or its ``after``)."""
        return self._faults.take(path)

    def reset(self) -> None:
        """Clear the request log, faults and hook; subclasses also clear their state."""
        self.clear_requests()
        self.clear_faults()
        self.on_request = None

    # ----------------------------------------------------------- subclass hooks
    def error_response(self, status: int, message: str) -> Response:
        """The service's error shape for ``status`` (used by faults, 404, 405)."""
        try:
            code = re.sub(
                r"[^A-Za-z]", "", HTTPStatus(status).phrase
            )  # "Too Many Requests" -> TooManyRequests
        except ValueError:
            code = f"Http{status}"
        return Response.json(status, {"error": {"code": code, "message": message}})

    def decorate(self, request: Request, response: Response) -> Response:
        """Add service-wide headers to every response (default: none)."""
        return response

    def scope_of(self, request: Request) -> str | None:
        """The added part (tenant, DCR, workspace) ``request`` is for, or ``None`` for the default part.

        A request's faults come from that part's queue (:meth:`fault_queue_for`) and its log
        record carries it (:attr:`RequestRecord.scope`). Default: one part only.
        """
        return None

    def fault_queue_for(self, request: Request) -> FaultQueue:
        """The fault queue that applies to ``request`` (default: the server's own)."""
        return self._faults

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """Apply the hook, faults and routing; returns the response and the fault used."""
        if self.on_request is not None and self.on_request(request):
            return Response(0, abort=True), "hook"
        fault = self.fault_queue_for(request).take(request.path)
        if fault is None:
            return self.decorate(request, self._route(request)), None
        name = str(fault.status) if fault.kind == "status" else fault.kind
        if fault.kind == "reset":
            return Response(0, abort=True), name
        if fault.kind == "html":
            html = Response(200, fault.body or HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
            html.headers.update(fault.headers)
            return html, name  # a proxy's page: none of the service's headers
        if fault.kind == "status" and fault.body is not None:
            response = Response(fault.status, fault.body, {"Content-Type": JSON_CONTENT_TYPE})
        elif fault.kind == "status":
            response = self.error_response(fault.status, f"Injected fault: HTTP {fault.status}.")
        else:
            if fault.kind == "timeout":
                self._stopping.wait(fault.seconds)  # interruptible, so stop() ends it
            response = self._route(replace(request, fault=fault.kind))
            if fault.kind == "truncated" and response.body:
                response.body = response.body[: max(1, len(response.body) // 2)]
        response.headers.update(fault.headers)
        return self.decorate(request, response), name


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
        """Handshake here, in the connection's thread, then serve; always close the socket here.

        Closing here (not in ``shutdown_request``, which sends a FIN first) keeps a dropped
        connection a bare RST on plain HTTP too.
        """
        sock: socket.socket = request
        try:
            if self.owner._ssl_context is not None:
                sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                sock = self.owner._ssl_context.wrap_socket(sock, server_side=True)
            with self._connections_lock:
                self._connections.add(sock)
            _RequestHandler(sock, client_address, self)
        except Exception:  # noqa: BLE001, S110 - a failed handshake or broken client must never print
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(sock)
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
    timeout = IDLE_CONNECTION_TIMEOUT_SECONDS
    server: _ThreadingServer

    def version_string(self) -> str:
        """The ``Server`` header value (no Python version suffix)."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default access log on stderr."""

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
        path = urllib.parse.unquote(split.path)
        request = Request(self.command, path, owner.url + self.path, query, headers, body)
        try:
            response, fault = owner.dispatch(request)
        except Exception as exc:  # noqa: BLE001 - a simulator bug becomes a visible 500
            response, fault = owner.error_response(500, f"Simulator error: {type(exc).__name__}: {exc}"), None
        owner._record(request, 0 if response.abort else response.status, fault)
        if response.abort:  # close with a TCP RST and no response bytes
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self._write(response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # stdlib dispatches on these names

    def _read_body(self) -> bytes | None:
        """Read the request body; ``None`` if it is malformed or too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                try:
                    size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
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
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if not 0 <= length <= MAX_REQUEST_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _write(self, response: Response) -> None:
        """Send ``response`` with a Content-Length we compute, so keep-alive framing is always right."""
        bodyless = response.status in (204, 304) or response.status < 200
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)  # "Connection: close" also ends the connection
        if not bodyless:
            self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection and "connection" not in {name.lower() for name in response.headers}:
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodyless:
            self.wfile.write(response.body)
