"""BlobCheckpointStore against Azurite: first run, round trip, ETag conflicts."""

from datetime import UTC, datetime

import pytest

from connector.errors import CheckpointConflictError, CheckpointFormatError
from connector.ledger import LedgerEntry, epoch_ms
from connector.state import Checkpoint, FeedProgress
from connector.store import BlobCheckpointStore, FileCheckpointStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def sample(feed="live", status="Delivered"):
    return Checkpoint(
        progress=FeedProgress(feed=feed, high_water_mark=T0),
        ledger={"k": LedgerEntry(epoch_ms(T0), status, 0)},
    )


@pytest.fixture(params=["blob", "file"])
def store(request, container, tmp_path):
    if request.param == "blob":
        return BlobCheckpointStore(container)
    return FileCheckpointStore(tmp_path / "state")


def test_first_load_is_none_and_creates_nothing_wrong(store):
    assert store.load("live") is None


def test_saved_checkpoint_loads_back_with_its_etag(store):
    etag = store.save(sample(), None)

    loaded = store.load("live")

    assert loaded is not None
    assert loaded.checkpoint == sample()
    assert loaded.etag == etag


def test_save_with_a_stale_etag_is_a_conflict(store):
    first = store.save(sample(), None)
    store.save(sample(status="Failed"), first)

    with pytest.raises(CheckpointConflictError, match="another run of the connector"):
        store.save(sample(status="Quarantined"), first)


def test_two_first_runs_cannot_both_create_the_checkpoint(store):
    store.save(sample(), None)

    with pytest.raises(CheckpointConflictError):
        store.save(sample(), None)


def test_backfill_documents_are_listed_by_prefix(store):
    store.save(sample("live"), None)
    store.save(sample("backfill/20260101T000000Z_20260102T000000Z"), None)

    assert store.list_feeds("backfill/") == ["backfill/20260101T000000Z_20260102T000000Z"]


def test_unreadable_blob_is_a_format_error_naming_it(container):
    store = BlobCheckpointStore(container)
    store.load("live")  # creates the container
    container.upload_blob("live.json", b"{broken")

    with pytest.raises(CheckpointFormatError, match="live.json is not valid JSON"):
        store.load("live")
