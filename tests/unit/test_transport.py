"""What an unreachable host looks like: a short connect timeout, and the host and cause in words."""

from __future__ import annotations

import socket

import requests
from azure.core.exceptions import ServiceRequestError

from connector.errors import ErrorKind
from connector.transport import (
    CONNECT_TIMEOUT_SECONDS,
    ConnectorSession,
    EnvironmentOnceSession,
    describe_failure,
    sdk_transport,
    timeouts,
)


def _failed(error: BaseException, url: str) -> requests.ConnectionError:
    """How requests reports it: the socket error inside, the request beside."""
    return requests.ConnectionError(error, request=requests.Request("GET", url).prepare())


def test_connecting_gives_up_long_before_the_read_timeout():
    assert timeouts(60) == (CONNECT_TIMEOUT_SECONDS, 60) == (10.0, 60)
    assert timeouts(4) == (4, 4)


def test_a_connect_timeout_names_the_host_and_says_it_timed_out():
    error = requests.ConnectTimeout(
        "pool timed out", request=requests.Request("GET", "https://graph.example/x").prepare()
    )

    kind, text = describe_failure(ServiceRequestError("wrapped", error=error))

    assert kind is ErrorKind.TRANSIENT
    assert text == "cannot connect to graph.example: timed out connecting"


def test_a_name_that_does_not_resolve_and_a_refused_port_are_told_apart():
    dns = _failed(socket.gaierror(-2, "Name or service not known"), "https://acct.blob.example/c")
    refused = _failed(ConnectionRefusedError(111, "Connection refused"), "https://127.0.0.1:9/c")

    assert describe_failure(dns)[1] == "cannot connect to acct.blob.example: DNS name not found"
    assert describe_failure(refused)[1] == "cannot connect to 127.0.0.1: connection refused"


# ---------------------------------------------------------------- the environment, read once per origin


def _proxies_for(session: requests.Session, url: str) -> dict[str, str]:
    return dict(session.merge_environment_settings(url, {}, None, None, None)["proxies"])


def test_a_session_takes_the_environments_proxy_and_its_no_proxy_exemption(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "blob.example")
    session = EnvironmentOnceSession()

    assert _proxies_for(session, "https://graph.example/v1.0/x")["https"] == "http://proxy.example:3128"
    assert "https" not in _proxies_for(session, "https://blob.example/container/blob")


def test_a_session_looks_at_the_environment_once_per_origin(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = EnvironmentOnceSession()
    assert _proxies_for(session, "https://graph.example/a")["https"] == "http://proxy.example:3128"

    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:8080")

    assert _proxies_for(session, "https://graph.example/b?x=1")["https"] == "http://proxy.example:3128"
    assert _proxies_for(session, "https://login.example/t")["https"] == "http://other.example:8080"


def test_a_callers_own_proxy_wins_over_the_environments(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = EnvironmentOnceSession()

    merged = session.merge_environment_settings(
        "https://graph.example/a", {"https": "http://mine.example:1"}, None, None, None
    )

    assert merged["proxies"]["https"] == "http://mine.example:1"


def test_a_netrc_never_adds_credentials_and_the_sdk_cannot_turn_the_environment_back_on(
    tmp_path, monkeypatch
):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine graph.example login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    transport = sdk_transport(ca_bundle=None, connect_timeout=1.0, read_timeout=1.0)
    transport.open()  # azure-core sets trust_env from use_env_settings here
    session = transport.session
    assert session is not None

    prepared = session.prepare_request(requests.Request("GET", "https://graph.example/v1.0/x"))

    assert session.trust_env is False
    assert "Authorization" not in prepared.headers
    assert isinstance(ConnectorSession(ca_bundle=None, timeout_seconds=5), EnvironmentOnceSession)
