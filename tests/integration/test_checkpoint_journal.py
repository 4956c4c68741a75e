"""The Blob checkpoint's journal (format 2) on Azurite: O(batch) saves, compaction, conflicts, old documents.

What a save writes is counted from the blobs themselves (sizes, ETags), never timed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient

from connector.checkpoint import encode_checkpoint, encode_journal_line, journal_prefix
from connector.errors import CheckpointConflictError
from connector.intent import intent_for
from connector.ledger import Decision, DedupLedger, LedgerChange, LedgerEntry, epoch_ms
from connector.state import Checkpoint, CommitRules, Committed, FeedProgress, FeedState
from connector.store import BlobCheckpointStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def decision(n: int, status: str = "Delivered", revision: int = 0, at: datetime = T0) -> Decision:
    entry = LedgerEntry(epoch_ms(at + timedelta(seconds=n)), status, revision)
    return Decision(key=f"{n:032x}", entry=entry, previous_status=None)


def big_ledger(n: int) -> dict[str, LedgerEntry]:
    return {d.key: d.entry for d in (decision(i) for i in range(n))}


class Feed:
    """A feed's state saved the way the sync loop saves it: progress + the changes since the last save."""

    def __init__(self, store: BlobCheckpointStore, ledger: dict[str, LedgerEntry] | None = None) -> None:
        self.store = store
        self.state = FeedState(
            progress=FeedProgress(feed="live", high_water_mark=T0), ledger=DedupLedger(ledger)
        )
        self.state.saved(store.save(self.state.checkpoint(), None))

    def commit(self, *decisions: Decision, prune_before: datetime | None = None) -> None:
        change = LedgerChange(committed=decisions, prune_before=prune_before)
        self.state.ledger.apply(change)
        self.state.unsaved.append(change)
        self.state.saved(self.store.save(self.state.checkpoint(), self.state.etag, self.state.unsaved))


def blob_sizes(container: ContainerClient) -> dict[str, int]:
    return {blob.name: int(blob.size) for blob in container.list_blobs()}


@pytest.fixture
def store(container: ContainerClient) -> BlobCheckpointStore:
    return BlobCheckpointStore(container)


def test_a_save_appends_its_rows_to_the_journal_and_leaves_the_big_snapshot_alone(store, container):
    feed = Feed(store, big_ledger(20_000))
    snapshot_etag = container.get_blob_client("live.json").get_blob_properties().etag
    before = blob_sizes(container)

    feed.commit(*(decision(100_000 + i) for i in range(10)))

    after = blob_sizes(container)
    assert container.get_blob_client("live.json").get_blob_properties().etag == snapshot_etag
    (journal,) = [name for name in after if name.startswith(journal_prefix("live"))]
    written = after[journal] - before[journal]
    assert 0 < written < 3_000  # ten entries and the progress, not the 20,000-entry ledger (~1.3 MB)
    assert after["live.json"] > 1_000_000


def test_the_loaded_state_is_the_snapshot_with_every_journal_line_applied(store):
    feed = Feed(store, big_ledger(50))
    feed.commit(decision(100), decision(101))
    feed.commit(decision(100, status="Failed", revision=1))
    feed.commit(decision(102, at=T0 + timedelta(hours=2)), prune_before=T0 + timedelta(minutes=30))
    feed.state.progress = FeedProgress(feed="live", high_water_mark=T0 + timedelta(hours=3))
    feed.commit()

    loaded = store.load("live")

    assert loaded is not None
    assert loaded.checkpoint.progress == feed.state.progress
    assert dict(loaded.checkpoint.ledger) == feed.state.ledger.entries()
    assert set(loaded.checkpoint.ledger) == {f"{102:032x}"}  # the prune applied after the commits before it
    assert loaded.etag == feed.state.etag


def test_a_journal_longer_than_its_snapshot_is_compacted_into_a_new_snapshot(store, container):
    feed = Feed(store, big_ledger(10))
    first_journal = {name for name in blob_sizes(container) if name.startswith("journal/")}

    for batch in range(40):  # ~36 KB of entries a save: past the 1 MiB floor within 40 saves
        feed.commit(*(decision(1_000 * batch + i) for i in range(600)))

    journals = {name for name in blob_sizes(container) if name.startswith("journal/")}
    assert len(journals) == 1
    assert journals != first_journal  # the old journal is gone, a new one took over
    loaded = store.load("live")
    assert loaded is not None
    assert dict(loaded.checkpoint.ledger) == feed.state.ledger.entries()
    assert len(loaded.checkpoint.ledger) == 40 * 600  # the first ten keys are batch 0's too


def test_a_second_writer_at_a_stale_position_gets_a_conflict_and_writes_nothing(store):
    feed = Feed(store)
    stale = Feed.__new__(Feed)
    stale.store, stale.state = (
        store,
        FeedState(progress=feed.state.progress, ledger=DedupLedger(), etag=feed.state.etag),
    )
    feed.commit(decision(1))

    with pytest.raises(CheckpointConflictError, match="another run of the connector"):
        stale.commit(decision(2))

    loaded = store.load("live")
    assert loaded is not None
    assert set(loaded.checkpoint.ledger) == {decision(1).key}


def test_a_writer_whose_journal_was_compacted_by_another_gets_a_conflict(store):
    feed = Feed(store)
    feed.commit(decision(1))
    stale_etag = feed.state.etag
    # Another writer compacts (a whole save): the old journal is sealed and replaced.
    feed.state.saved(store.save(feed.state.checkpoint(), feed.state.etag))

    with pytest.raises(CheckpointConflictError):
        store.save(feed.state.checkpoint(), stale_etag, [LedgerChange(committed=(decision(2),))])


def test_an_append_the_sdk_retried_after_it_landed_is_kept_once(store, container):
    feed = Feed(store)
    progress = feed.state.progress
    change = LedgerChange(committed=(decision(7),))
    line = encode_journal_line(progress, [change])
    (journal,) = [name for name in blob_sizes(container) if name.startswith("journal/")]
    container.get_blob_client(journal).append_block(line)  # the first attempt landed; its answer was lost

    etag = store.save(feed.state.checkpoint(), feed.state.etag, [change])  # the retry

    assert container.get_blob_client(journal).download_blob().readall() == line
    loaded = store.load("live")
    assert loaded is not None
    assert loaded.etag == etag
    assert set(loaded.checkpoint.ledger) == {decision(7).key}


def test_a_format_1_document_reads_and_its_first_save_upgrades_it_in_place(store, container):
    store.load("live")  # creates the container
    old = Checkpoint(progress=FeedProgress(feed="live", high_water_mark=T0), ledger=big_ledger(3))
    container.upload_blob("live.json", encode_checkpoint(old))

    loaded = store.load("live")
    assert loaded is not None
    assert loaded.checkpoint == old
    state = FeedState.resume(loaded.checkpoint, loaded.etag)
    state.ledger.apply(LedgerChange(committed=(decision(9),)))
    state.unsaved.append(LedgerChange(committed=(decision(9),)))
    state.saved(store.save(state.checkpoint(), state.etag, state.unsaved))

    assert container.download_blob("live.json").readall().startswith(b'{"format_version":2,')
    again = store.load("live")
    assert again is not None
    assert len(again.checkpoint.ledger) == 4


def test_forgetting_a_feed_deletes_its_snapshot_and_journals(store, container):
    feed = Feed(store)
    feed.commit(decision(1))

    store.delete("live", feed.state.etag)

    assert blob_sizes(container) == {}
    assert store.load("live") is None


def test_a_batch_accepted_whole_is_committed_by_naming_its_intent_and_loads_back_in_full(store, container):
    feed = Feed(store, big_ledger(20))
    rules = CommitRules(
        keep_lookback=timedelta(hours=1), target_records=1000, max_slice_span=timedelta(days=1)
    )
    batches = [[decision(1_000 + 100 * b + i) for i in range(100)] for b in range(3)]
    (journal,) = [name for name in blob_sizes(container) if name.startswith("journal/")]
    commit_lines = []
    for rows in batches:
        feed.state.progress = replace(
            feed.state.progress, pending_batch=intent_for(rows, [{"RowId": f"r{d.key}"} for d in rows], T0)
        )
        feed.state.saved(store.save(feed.state.checkpoint(), feed.state.etag, feed.state.unsaved))
        before = blob_sizes(container)[journal]
        feed.state.apply(Committed(accepted=tuple(rows)), rules)
        feed.state.saved(store.save(feed.state.checkpoint(), feed.state.etag, feed.state.unsaved))
        commit_lines.append(blob_sizes(container)[journal] - before)

    loaded = store.load("live")

    assert loaded is not None
    assert loaded.checkpoint.progress.pending_batch is None
    assert dict(loaded.checkpoint.ledger) == feed.state.ledger.entries()
    assert len(loaded.checkpoint.ledger) == 20 + 300
    assert max(commit_lines) < 1_000  # the progress and a reference, not 100 entries of ~65 bytes
