"""A SAS in STORAGE_CONNECTION_STRING never reaches a message: lock, checkpoint errors, dead-letter location."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import AccountSasPermissions, ContainerClient, ResourceTypes, generate_account_sas

from connector.deadletter import DeadLetter
from connector.errors import CheckpointConflictError, CheckpointError, RunLockedError
from connector.locks import BlobRunLock
from connector.simulator.azurite import ACCOUNT, ACCOUNT_KEY
from connector.store import BlobCheckpointStore
from connector.windows import Window
from tests.integration.test_blob_store import T0, sample

pytestmark = pytest.mark.integration


def account_sas(**permissions: bool) -> str:
    return generate_account_sas(
        ACCOUNT,
        ACCOUNT_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(**permissions),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


FULL = {
    "read": True,
    "write": True,
    "delete": True,
    "list": True,
    "create": True,
    "add": True,
    "update": True,
}


def sas_store(endpoint: str, container_name: str, sas: str, **options: object) -> BlobCheckpointStore:
    connection_string = f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"
    return BlobCheckpointStore(
        ContainerClient.from_connection_string(connection_string, container_name, **options)
    )


def test_the_sas_store_really_carries_the_sas_in_its_urls(azurite, container_name):
    store = sas_store(azurite.blob_endpoint, container_name, account_sas(**FULL))

    assert "sig=" in store.container.url
    assert "sig=" not in store.where


def test_lock_held_message_names_the_lock_blob_without_the_sas(azurite, container_name):
    store = sas_store(azurite.blob_endpoint, container_name, account_sas(**FULL))
    lock = BlobRunLock(store.container)

    with (
        lock.hold("live"),
        pytest.raises(RunLockedError) as caught,
        BlobRunLock(store.container).hold("live"),
    ):
        pass

    assert "locks/live.lock" in str(caught.value)
    assert "sig=" not in str(caught.value)


def test_checkpoint_conflict_names_the_blob_without_the_sas(azurite, container_name):
    store = sas_store(azurite.blob_endpoint, container_name, account_sas(**FULL))
    first = store.save(sample(), None)
    store.save(sample(status="Failed"), first)

    with pytest.raises(CheckpointConflictError) as caught:
        store.save(sample(status="Quarantined"), first)

    assert "live.json" in str(caught.value)
    assert "sig=" not in str(caught.value)


def test_refused_write_names_the_blob_without_the_sas(azurite, container_name):
    sas_store(azurite.blob_endpoint, container_name, account_sas(**FULL)).load("live")  # the container
    read_only = sas_store(azurite.blob_endpoint, container_name, account_sas(read=True, list=True))

    with pytest.raises(CheckpointError, match="cannot write checkpoint") as caught:
        read_only.save(sample(), None)

    assert "sig=" not in str(caught.value)


def test_unreachable_storage_error_has_no_sas(container_name):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = sas_store(
        f"http://127.0.0.1:{port}/{ACCOUNT}", container_name, account_sas(**FULL), retry_total=0
    )

    with pytest.raises(CheckpointError, match="cannot reach checkpoint storage") as caught:
        store.load("live")

    assert "sig=" not in str(caught.value)


def test_dead_letter_location_has_no_sas(azurite, container_name):
    store = sas_store(azurite.blob_endpoint, container_name, account_sas(**FULL))
    letter = DeadLetter(feed="live", reason="r", record={"id": "x"}, window=Window(T0, T0), seen_at=T0)

    where = store.put_dead_letter(letter)

    assert where.endswith(letter.name)
    assert "sig=" not in where
