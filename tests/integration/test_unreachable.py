"""An endpoint that cannot be reached: a short connect, few retries, and a message naming host and cause.

Only a closed local port and the reserved ``.invalid`` name (RFC 6761: never resolves) are
used, so these tests need no internet.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from connector.auth import clear_credential_cache
from connector.errors import CheckpointError, ErrorKind
from connector.runner import run_feed
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def fresh_credentials():
    clear_credential_cache()
    yield
    clear_credential_cache()


@pytest.fixture
def slow_backoff(connector_env):
    """The default backoff: the old code spent its retries waiting on an unreachable host."""
    return {**connector_env, "HTTP_RETRY_BACKOFF_SECONDS": "2", "HTTP_MAX_RETRIES": "6"}


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1:{port}", "connection refused"), ("graph.nothing.invalid", "DNS name not found")],
)
def test_an_unreachable_graph_is_named_by_host_and_cause_within_seconds(sim, slow_backoff, host, cause):
    url = "https://" + host.format(port=closed_port())
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    started = time.monotonic()

    report = run_feed({**slow_backoff, "GRAPH_BASE_URL": url})

    assert time.monotonic() - started < 20
    assert report.error is not None
    assert report.error.kind is ErrorKind.TRANSIENT
    message = str(report.error)
    assert f"cannot connect to {host.split(':')[0]}: {cause}" in message
    assert "ConnectionError" not in message


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1:{port}", "connection refused"), ("acct.nothing.invalid", "DNS name not found")],
)
def test_an_unreachable_storage_account_is_named_by_host_and_cause_within_seconds(
    sim, slow_backoff, host, cause
):
    env = {k: v for k, v in slow_backoff.items() if k != "STORAGE_CONNECTION_STRING"}
    env["STORAGE_ACCOUNT_URL"] = "https://" + host.format(port=closed_port()) + "/devstoreaccount1"
    started = time.monotonic()

    with pytest.raises(CheckpointError) as caught:
        run_feed(env)

    assert time.monotonic() - started < 20
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert f"cannot connect to {host.split(':')[0]}: {cause}" in str(caught.value)
