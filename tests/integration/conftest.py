"""Fixtures for tests over real sockets: Azurite (session) and a fresh container per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import ContainerClient

from connector.simulator.azurite import Azurite, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite_queues(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Azurite:
    """Azurite with its queue service started too (backfill slices, tenant runs)."""
    azurite.start_queues(tmp_path_factory.mktemp("azurite-queue"))
    return azurite


@pytest.fixture
def container_name() -> str:
    return f"cp-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def container(azurite: Azurite, container_name: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, container_name)


# --------------------------------------------------------------------------- simulator

from connector.simulator import Simulator  # noqa: E402


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    simulator.reset()
    yield simulator
    simulator.reset()


@pytest.fixture
def connector_env(sim: Simulator, azurite: Azurite, container_name: str) -> dict[str, str]:
    """Settings pointing the connector at the simulator and Azurite, tuned for fast tests."""
    return {
        **sim.connector_env(),
        "STORAGE_CONNECTION_STRING": azurite.connection_string,
        "CHECKPOINT_CONTAINER": container_name,
        "INITIAL_LOOKBACK_HOURS": "6",
        "SETTLE_DELAY_MINUTES": "1",
        "HTTP_MAX_RETRIES": "3",
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
        "HTTP_TIMEOUT_SECONDS": "10",
    }


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, connector_env: dict[str, str]) -> dict[str, str]:
    """The connector's settings set in the process environment (for commands run through the CLI)."""
    for name, value in connector_env.items():
        monkeypatch.setenv(name, value)
    return connector_env


@pytest.fixture
def blob_store(azurite: Azurite, container_name: str):
    from connector.store import BlobCheckpointStore

    return BlobCheckpointStore(
        ContainerClient.from_connection_string(azurite.connection_string, container_name)
    )
