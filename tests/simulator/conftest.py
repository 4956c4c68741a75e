"""Fixtures for the simulator's own tests.

One :class:`Simulator` is started per session (starting it costs an RSA key
and a CA) and reset before every test, so tests stay independent and fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from azure.identity import ClientSecretCredential
from azure.monitor.query import LogsQueryClient

from connector.simulator import Simulator


def _real_clock() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="session")
def running_simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
def sim(running_simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """A clean simulator whose CA is trusted by requests (REQUESTS_CA_BUNDLE)."""
    running_simulator.reset()
    running_simulator.clock = _real_clock
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", running_simulator.ca_bundle_path)
    for name in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    yield running_simulator
    running_simulator.clock = _real_clock


@pytest.fixture
def graph_token(sim: Simulator) -> str:
    """A valid Graph access token for the secret app, issued without msal."""
    app = sim.entra.app(sim.client_id)
    token, _ = sim.entra.issue_token(
        sim.client_id,
        "https://graph.microsoft.com",
        object_id=app.object_id,
        roles=("ExchangeMessageTrace.Read.All",),
    )
    return token


@pytest.fixture
def credential(sim: Simulator) -> ClientSecretCredential:
    """The simulator's default app, as the SDK clients authenticate (client secret, its Entra)."""
    return ClientSecretCredential(
        sim.tenant_id,
        sim.client_id,
        sim.client_secret,
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )


@pytest.fixture
def query_client(sim: Simulator, credential: ClientSecretCredential) -> Iterator[LogsQueryClient]:
    """The SDK's Log Analytics query client on the simulator (no retries: a fault is seen as it is)."""
    with LogsQueryClient(
        credential,
        endpoint=sim.logs_query.url,
        credential_scopes=["https://api.loganalytics.io/.default"],
        connection_verify=sim.ca_bundle_path,
        retry_total=0,
    ) as client:
        yield client
