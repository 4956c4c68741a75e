"""The HTTP server base: keep-alive framing, clean shutdown, plain HTTP, Simulator wiring."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from connector.simulator import Request, Response, SimulatedHttpServer, Simulator, TestCertificateAuthority

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _echo(request: Request) -> Response:
    return Response.json(200, {"path": request.path, "query": dict(request.query), "body": len(request.body)})


def test_keep_alive_many_requests_on_one_connection() -> None:
    with TestCertificateAuthority() as ca, SimulatedHttpServer("echo", ca.server_ssl_context()) as server:
        server.route("POST", r"/echo/(?P<name>\w+)", _echo)
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=ca.client_ssl_context(), timeout=5
        )
        for index in range(5):
            connection.request("POST", f"/echo/x{index}?a=1&a=2&b=%20c", body=b"x" * index)
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Length") is not None
            assert json.loads(response.read()) == {
                "path": f"/echo/x{index}",
                "query": {"a": "1", "b": " c"},
                "body": index,
            }
        connection.request("GET", "/echo/x")  # wrong method: 405 on the same connection
        not_allowed = connection.getresponse()
        assert not_allowed.status == 405
        assert not_allowed.getheader("Allow") == "POST"
        not_allowed.read()
        connection.request("GET", "/nope")
        missing = connection.getresponse()
        assert missing.status == 404
        missing.read()
        sock = connection.sock
        connection.close()
        assert sock is not None
        assert len(server.requests()) == 7
        started = time.monotonic()
        # A second idle keep-alive connection must not delay shutdown.
        idle = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=ca.client_ssl_context(), timeout=5
        )
        idle.request("POST", "/echo/y")
        idle.getresponse().read()
    assert time.monotonic() - started < 2


def test_chunked_request_body_is_read() -> None:
    with SimulatedHttpServer("plain") as server:
        server.route("POST", r"/echo/(?P<name>\w+)", _echo)

        def chunks() -> object:
            yield b"abc"
            yield b"defg"

        response = requests.post(f"{server.url}/echo/c", data=chunks(), timeout=5)  # type: ignore[arg-type]
        assert response.json()["body"] == 7
        assert server.requests()[0].headers["transfer-encoding"] == "chunked"
        assert server.url.startswith("http://127.0.0.1:")


def test_handler_exception_becomes_500_without_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    with SimulatedHttpServer("broken") as server:
        server.route("GET", "/x", broken)
        response = requests.get(f"{server.url}/x", timeout=5)
        assert response.status_code == 500
        assert "boom" in response.json()["error"]["message"]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_reset_fault_is_a_tcp_rst_with_no_response_bytes(tls: bool) -> None:
    with (
        TestCertificateAuthority() as ca,
        SimulatedHttpServer("rst", ca.server_ssl_context() if tls else None) as server,
    ):
        server.route("GET", "/x", _echo)
        server.inject("reset")
        sock, session = _raw_request(server.port, ca if tls else None, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        with sock:
            received, error = _read_until_closed(sock)
        assert isinstance(error, ConnectionResetError), error  # None would mean a FIN
        if session is None:
            assert received == b""
        else:
            session[0].write(received)
            with pytest.raises(ssl.SSLWantReadError):
                session[1].read()  # the TLS records hold no application data
        assert [r.status for r in server.requests()] == [0]


def _read_until_closed(sock: socket.socket) -> tuple[bytes, OSError | None]:
    """Everything received (TLS 1.3 session tickets may come before the reset) and how it ended."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError as exc:
        return received, exc
    return received, None


def _raw_request(
    port: int, ca: TestCertificateAuthority | None, request: bytes
) -> tuple[socket.socket, tuple[ssl.MemoryBIO, ssl.SSLObject] | None]:
    """Send ``request`` and leave the TCP socket itself to the caller, so its recv shows RST vs FIN.

    TLS runs over memory BIOs for that reason (an SSLSocket reports both as EOF).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if ca is None:
        sock.sendall(request)
        return sock, None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ca.client_ssl_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    tls.write(request)
    sock.sendall(outgoing.read())
    return sock, (incoming, tls)


def test_truncated_fault_sends_half_the_body_with_a_matching_content_length() -> None:
    with TestCertificateAuthority() as ca, SimulatedHttpServer("cut", ca.server_ssl_context()) as server:
        server.route("POST", r"/echo/(?P<name>\w+)", _echo)
        server.inject("truncated")
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=ca.client_ssl_context(), timeout=5
        )
        connection.request("POST", "/echo/a", body=b"abc")
        cut = connection.getresponse()
        body = cut.read()
        assert int(cut.getheader("Content-Length", "-1")) == len(body) > 0
        with pytest.raises(ValueError, match="."):
            json.loads(body)
        connection.request("POST", "/echo/b", body=b"abc")  # the same connection still frames correctly
        assert json.loads(connection.getresponse().read())["path"] == "/echo/b"
        connection.close()


def test_stop_interrupts_a_slow_answer() -> None:
    server = SimulatedHttpServer("slow").start()
    server.route("GET", "/x", _echo)
    server.inject("timeout", seconds=30)
    client = threading.Thread(target=lambda: _get_quietly(f"{server.url}/x"), daemon=True)
    client.start()
    deadline = time.monotonic() + 5
    while server.pending_faults() and time.monotonic() < deadline:
        time.sleep(0.01)  # the fault is taken: the handler is now waiting
    started = time.monotonic()
    server.stop()
    while not server.requests() and time.monotonic() - started < 5:
        time.sleep(0.01)  # the handler logs the request once its wait ends
    assert server.requests(), "the handler was still waiting 5 s after stop()"
    assert time.monotonic() - started < 2
    client.join(timeout=5)


def _get_quietly(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.get(url, timeout=10)


def test_tls_rejects_untrusting_clients_quietly(sim: Simulator, capfd: pytest.CaptureFixture[str]) -> None:
    session = requests.Session()
    session.trust_env = False  # ignore REQUESTS_CA_BUNDLE: system CAs only
    with pytest.raises(requests.exceptions.SSLError):
        session.get(sim.graph.url, timeout=5)
    assert (
        requests.get(
            f"https://localhost:{sim.graph.port}/x", verify=sim.ca_bundle_path, timeout=5
        ).status_code
        == 404
    )
    assert capfd.readouterr().err == ""


def test_connector_env_and_reset(sim: Simulator) -> None:
    env = sim.connector_env()
    assert env["TENANT_ID"] == sim.tenant_id
    assert env["AUTHORITY_HOST"] == sim.entra.url
    assert env["GRAPH_BASE_URL"] == sim.graph.url
    assert env["INGESTION_ENDPOINT"] == sim.ingestion.url
    assert env["DCR_STREAM_NAME"] == "Custom-EmailEvents"
    assert env["DCR_IMMUTABLE_ID"].startswith("dcr-")
    assert len(env["DCR_IMMUTABLE_ID"]) == 36
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == sim.ca_bundle_path
    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    assert env["LOCAL_DOMAINS"] == "contoso.com,fabrikam.com"
    assert "CLIENT_CERTIFICATE_PATH" in sim.connector_env("certificate")

    now = datetime.now(UTC)
    sim.graph.add(
        [
            {
                "id": "a",
                "senderAddress": "s@x.com",
                "recipientAddress": "r@contoso.com",
                "messageId": "<m>",
                "receivedDateTime": (now - timedelta(minutes=5)).isoformat(),
                "subject": "",
                "size": 1,
                "fromIP": "",
                "toIP": "",
                "status": "Delivered",
            }
        ]
    )
    sim.graph.inject(500, times=None)
    sim.graph.service_principal_missing = True
    sim.reset()
    assert sim.graph.rows() == []
    assert sim.graph.pending_faults() == []
    assert sim.graph.requests() == []
    assert not sim.graph.service_principal_missing


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGINT")
def test_serve_entry_point_prints_exports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector.simulator",
            "serve",
            "--messages",
            "50",
            "--future-hours",
            "1",
            "--no-azurite",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        exports = dict(process.stdout.readline().strip()[len("export ") :].split("=", 1) for _ in range(17))
        assert exports["GRAPH_SCOPE"] == "https://graph.microsoft.com/.default"
        ca = exports["REQUESTS_CA_BUNDLE"]
        assert requests.get(exports["GRAPH_BASE_URL"] + "/v1.0/x", verify=ca, timeout=5).status_code == 404
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
