"""Fixtures for tests over real sockets: Azurite (session) and a fresh container per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import ContainerClient

from tests.fakes.azurite import Azurite, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture
def container_name() -> str:
    return f"cp-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def container(azurite: Azurite, container_name: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, container_name)
