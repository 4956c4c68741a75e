"""An endpoint that cannot be reached: a short connect, few retries, and a message naming host and cause.

Attempts are counted rather than timed: a wall-clock bound failed on a loaded CI machine,
where Blob's jittered backoff alone can take 13 s.

Only a closed local port and the reserved ``.invalid`` name (RFC 6761: never resolves) are
used, so these tests need no internet.
"""

from __future__ import annotations

import logging
import re
import socket
from datetime import UTC, datetime, timedelta

import pytest

from connector.auth import clear_credential_cache
from connector.errors import CheckpointError, ErrorKind
from connector.runner import run_feed
from connector.transport import CONNECT_RETRIES
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
def quick_backoff(connector_env):
    """Short waits: what is checked is how often the connector knocks, not how long it waits."""
    return {**connector_env, "HTTP_RETRY_BACKOFF_SECONDS": "0.1", "HTTP_MAX_RETRIES": "6"}


def attempts_on(caplog, host: str) -> list[str]:
    """The requests azure-core's HTTP logging policy saw leave for ``host`` (one per attempt)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "azure.core.pipeline.policies.http_logging_policy"
        and r.getMessage().startswith(f"Request URL: 'https://{host}/")
    ]


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1:{port}", "connection refused"), ("graph.nothing.invalid", "DNS name not found")],
)
def test_an_unreachable_graph_is_named_by_host_and_cause_after_few_attempts(
    sim, quick_backoff, caplog, host, cause
):
    url = "https://" + host.format(port=closed_port())
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    caplog.set_level(logging.WARNING, logger="connector.graph")

    report = run_feed({**quick_backoff, "GRAPH_BASE_URL": url})

    assert report.error is not None
    assert report.error.kind is ErrorKind.TRANSIENT
    message = str(report.error)
    assert f"cannot connect to {host.split(':')[0]}: {cause}" in message
    assert "ConnectionError" not in message
    retries = [
        int(found.group(1))
        for r in caplog.records
        if r.name == "connector.graph" and (found := re.search(r"; retry (\d+) in ", r.getMessage()))
    ]
    # HTTP_MAX_RETRIES is 6, but a connection that fails is retried at most CONNECT_RETRIES times.
    assert retries
    assert max(retries) == CONNECT_RETRIES


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1:{port}", "connection refused"), ("acct.nothing.invalid", "DNS name not found")],
)
def test_an_unreachable_storage_account_is_named_by_host_and_cause_after_few_attempts(
    sim, quick_backoff, caplog, host, cause
):
    account = host.format(port=closed_port())
    env = {k: v for k, v in quick_backoff.items() if k != "STORAGE_CONNECTION_STRING"}
    env["STORAGE_ACCOUNT_URL"] = f"https://{account}/devstoreaccount1"
    caplog.set_level(logging.INFO, logger="azure.core.pipeline.policies.http_logging_policy")

    with pytest.raises(CheckpointError) as caught:
        run_feed(env)

    assert caught.value.kind is ErrorKind.TRANSIENT
    assert f"cannot connect to {host.split(':')[0]}: {cause}" in str(caught.value)
    # Blob's own default is 3 connect retries 15 s apart; the first operation gives up after 1 + 2.
    assert len(attempts_on(caplog, account)) == 1 + CONNECT_RETRIES
