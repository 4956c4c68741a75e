"""What an unreachable host looks like: a short connect timeout, and the host and cause in words."""

from __future__ import annotations

import socket

import requests
from azure.core.exceptions import ServiceRequestError

from connector.errors import ErrorKind
from connector.transport import CONNECT_TIMEOUT_SECONDS, describe_failure, timeouts


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
