"""Dead letters hold raw records; ``purge-dead-letters`` deletes those last written before an age."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from connector.cli import main
from connector.deadletter import DeadLetter
from connector.runner import purge_dead_letters
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.windows import Window
from tests.integration.test_blob_store import T0, sample

pytestmark = pytest.mark.integration

SUBJECT = "Quarterly results, confidential"


def letter(message_id: str) -> DeadLetter:
    record = {"id": message_id, "recipientAddress": "bob@contoso.com", "subject": SUBJECT}
    return DeadLetter(
        feed="live", reason="missing receivedDateTime", record=record, window=Window(T0, T0), seen_at=T0
    )


@pytest.fixture(params=["blob", "file"])
def store(request, container, tmp_path):
    if request.param == "blob":
        return BlobCheckpointStore(container)
    return FileCheckpointStore(tmp_path / "state")


def written(store, name: str) -> datetime:
    if isinstance(store, BlobCheckpointStore):
        return store.container.get_blob_client(name).get_blob_properties().last_modified
    return datetime.fromtimestamp((store.directory / name).stat().st_mtime, UTC)


def exists(store, name: str) -> bool:
    if isinstance(store, BlobCheckpointStore):
        return store.container.get_blob_client(name).exists()
    return (store.directory / name).exists()


def age(store, name: str) -> None:
    """Make ``name`` older than anything written after this call."""
    if isinstance(store, BlobCheckpointStore):
        time.sleep(1.1)  # Blob Storage keeps the last write to the second
    else:
        hour_ago = time.time() - 3600
        os.utime(store.directory / name, (hour_ago, hour_ago))


def test_purge_deletes_only_dead_letters_written_before_the_cutoff_and_dry_run_deletes_nothing(store):
    store.save(sample(), None)
    old, young = letter("old"), letter("young")
    store.put_dead_letter(old)
    age(store, old.name)
    store.put_dead_letter(young)
    cutoff = written(store, young.name)

    assert store.purge_dead_letters(cutoff, dry_run=True) == [old.name]
    assert exists(store, old.name)

    assert store.purge_dead_letters(cutoff) == [old.name]
    assert not exists(store, old.name)
    assert exists(store, young.name)
    assert store.load("live") is not None  # checkpoints are not dead letters
    assert store.purge_dead_letters(cutoff) == []


def test_a_record_dead_lettered_again_is_young_again(store):
    again, other = letter("again"), letter("other")
    store.put_dead_letter(again)
    age(store, again.name)
    store.put_dead_letter(other)
    store.put_dead_letter(again)  # the same record, dead-lettered again: its document is rewritten

    assert store.purge_dead_letters(written(store, other.name)) == []


def test_purge_over_azurite_through_the_runner_counts_what_it_deleted(connector_env, blob_store):
    blob_store.put_dead_letter(letter("a"))
    blob_store.put_dead_letter(letter("b"))

    kept = purge_dead_letters(timedelta(days=30), connector_env)
    month_later = purge_dead_letters(
        timedelta(days=30), connector_env, clock=lambda: datetime.now(UTC) + timedelta(days=31)
    )

    assert kept.names == []
    assert sorted(month_later.names) == sorted([letter("a").name, letter("b").name])
    assert not blob_store.container.get_blob_client(letter("a").name).exists()


def test_cli_dry_run_lists_names_and_the_purge_prints_a_count_never_the_records(
    connector_env, tmp_path, monkeypatch
):
    for name, value in {
        **connector_env,
        "CHECKPOINT_STORE": "file",
        "CHECKPOINT_DIRECTORY": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    store = FileCheckpointStore(tmp_path)
    old, young = letter("old"), letter("young")
    store.put_dead_letter(old)
    store.put_dead_letter(young)
    month_ago = time.time() - 31 * 86400
    os.utime(tmp_path / old.name, (month_ago, month_ago))

    out = io.StringIO()
    assert main(["purge-dead-letters", "--older-than", "30d", "--dry-run"], out=out) == 0
    dry = out.getvalue()
    assert dry.splitlines()[0] == old.name
    assert "would delete 1 dead letters last written before" in dry
    assert (tmp_path / old.name).exists()

    out = io.StringIO()
    assert main(["purge-dead-letters", "--older-than", "30d"], out=out) == 0
    assert out.getvalue().startswith("deleted 1 dead letters last written before ")
    assert not (tmp_path / old.name).exists()
    assert (tmp_path / young.name).exists()
    for text in (dry, out.getvalue()):
        assert SUBJECT not in text
        assert "bob@contoso.com" not in text
