"""Checkpoint stores: Azure Blob Storage (production) and a local directory (CLI, demo).

Both implement :class:`connector.ports.CheckpointStore` with optimistic concurrency:
``save`` succeeds only if the document still has the ETag the run loaded (or, for
a first save, does not exist yet). A second writer, e.g. a manual run next to the
timer, therefore gets :class:`~connector.errors.CheckpointConflictError` and stops
instead of silently overwriting progress.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings, StorageStreamDownloader

from connector.checkpoint import (
    JOURNAL_MIN_BYTES,
    compaction_due,
    decode_checkpoint,
    decode_snapshot,
    encode_checkpoint,
    encode_journal_line,
    iter_snapshot,
    journal_prefix,
    replay_journal,
    seal_line,
)
from connector.deadletter import DEAD_LETTER_PREFIX, DeadLetter
from connector.errors import CheckpointConflictError, CheckpointError, ErrorKind
from connector.ledger import LedgerChange
from connector.ports import StoredCheckpoint
from connector.redact import safe_url, scrub
from connector.state import Checkpoint
from connector.transport import describe_failure

logger = logging.getLogger(__name__)


def storage_error(action: str, err: AzureError) -> CheckpointError:
    """The error for a failed storage call, with the kind of its cause and what to do about it.

    The whole text is scrubbed: ``action`` names a blob URL, and the SDK's text may
    carry one, both with the SAS of a connection string in their query.
    """
    kind, detail = describe_failure(err)
    if kind is ErrorKind.PERMISSION:
        detail += (
            ". Give the connector's identity 'Storage Blob Data Contributor' on the storage account "
            "(or fix STORAGE_CONNECTION_STRING)"
        )
    return CheckpointError(scrub(f"{action}: {detail}"), kind=kind)


def file_error(action: str, err: OSError) -> CheckpointError:
    """The error for a failed file-store call (a refused path is a permission problem)."""
    kind = ErrorKind.PERMISSION if isinstance(err, PermissionError) else ErrorKind.FATAL
    return CheckpointError(f"{action}: {err}", kind=kind)


_CONFLICT_HINT = (
    "another run of the connector (a second timer host, or a manual `run`/`backfill`) wrote it since this run "
    "loaded it; this run stopped without overwriting it, and what it had committed is safe"
)


def _blob_name(feed: str) -> str:
    return f"{feed}.json"


_LOAD_ATTEMPTS = 3


class _Download:
    """A blob's chunks as they download (4 MiB each), counted: a reader keeps one chunk, not the blob.

    A failure mid-way (the blob replaced under the download, the network) surfaces as a
    :class:`~connector.errors.CheckpointError` naming the blob, from the loop that reads it.
    """

    def __init__(self, downloader: StorageStreamDownloader[bytes], url: str) -> None:
        self._downloader = downloader
        self.properties = downloader.properties
        self._url = url
        self.bytes = 0
        self.lines = 0

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._downloader.chunks():
                self.bytes += len(chunk)
                self.lines += chunk.count(b"\n")
                yield chunk
        except AzureError as err:
            raise storage_error(f"cannot read checkpoint {self._url}", err) from err


@dataclass(frozen=True, slots=True)
class _Version:
    """What a blob checkpoint's ETag token says: the snapshot's ETag and where its journal ends.

    The sync loop treats the token as opaque, as it treated the single document's ETag.
    """

    snapshot_etag: str
    journal: str
    journal_bytes: int
    journal_blocks: int
    snapshot_bytes: int

    def token(self) -> str:
        if not self.journal:
            return self.snapshot_etag  # a format 1 document: its ETag, as before
        return "\t".join(
            [
                self.snapshot_etag,
                self.journal,
                str(self.journal_bytes),
                str(self.journal_blocks),
                str(self.snapshot_bytes),
            ]
        )

    @classmethod
    def parse(cls, token: str) -> _Version:
        parts = token.split("\t")
        if len(parts) == 1:
            return cls(token, "", 0, 0, 0)
        etag, journal, journal_bytes, blocks, snapshot_bytes = parts
        return cls(etag, journal, int(journal_bytes), int(blocks), int(snapshot_bytes))


class BlobCheckpointStore:
    """Checkpoint documents as block blobs ``<feed>.json`` in one container."""

    def __init__(self, container: ContainerClient, *, journal_min_bytes: int = JOURNAL_MIN_BYTES) -> None:
        self._container = container
        self._container_checked = False
        self._journal_min_bytes = journal_min_bytes
        # The journal being appended to: a client made once, not per save (the SDK builds a pipeline each time).
        self._journal: BlobClient | None = None

    @property
    def where(self) -> str:
        """Human-readable location for messages (no query string: it may hold a SAS)."""
        return safe_url(self._container.url)

    @property
    def container(self) -> ContainerClient:
        """The container (the run lock lives in it too)."""
        self._ensure_container()
        return self._container

    def _ensure_container(self) -> None:
        if self._container_checked:
            return
        try:
            self._container.create_container()
            logger.info("created checkpoint container %s", self._container.container_name)
        except ResourceExistsError:
            pass
        except ClientAuthenticationError as err:
            raise storage_error(
                f"blob storage refused the connector's identity for {self.where}", err
            ) from err
        except HttpResponseError as err:
            if err.status_code != 403:
                raise storage_error(f"cannot create checkpoint container {self.where}", err) from err
            # No right to create containers: fine if it exists (Bicep creates it); reads tell.
        except AzureError as err:
            raise storage_error(f"cannot reach checkpoint storage {self.where}", err) from err
        self._container_checked = True

    def load(self, feed: str) -> StoredCheckpoint | None:
        """Download ``<feed>.json`` and replay its journal; None if there is no checkpoint.

        A compaction by another writer can replace the journal between the two reads (its
        old journal then ends with a seal, or is gone): the snapshot is read again.
        """
        self._ensure_container()
        blob = self._container.get_blob_client(_blob_name(feed))
        for _ in range(_LOAD_ATTEMPTS):
            try:
                downloader = blob.download_blob()
            except ResourceNotFoundError:
                return None
            except AzureError as err:
                raise storage_error(f"cannot read checkpoint {safe_url(blob.url)}", err) from err
            snapshot_etag = str(downloader.properties.etag)
            snapshot = _Download(downloader, safe_url(blob.url))
            checkpoint, journal = decode_snapshot(snapshot, where=safe_url(blob.url))
            if journal is None:
                return StoredCheckpoint(checkpoint, _Version(snapshot_etag, "", 0, 0, snapshot.bytes).token())
            client = self._container.get_blob_client(journal)
            try:
                journal_download = _Download(client.download_blob(), safe_url(client.url))
            except ResourceNotFoundError:
                continue  # replaced by a compaction since the snapshot was read
            except AzureError as err:
                raise storage_error(f"cannot read checkpoint journal {safe_url(client.url)}", err) from err
            replayed, sealed = replay_journal(
                checkpoint, journal_download, where=safe_url(blob.url) + f" ({journal})"
            )
            if sealed and self._snapshot_etag(blob) != snapshot_etag:
                continue  # a compaction finished meanwhile: read its snapshot
            counted = journal_download.properties.append_blob_committed_block_count
            # One line per append block (a save, or a seal) where the service does not say.
            blocks = int(counted) if counted is not None else journal_download.lines
            version = _Version(snapshot_etag, journal, journal_download.bytes, blocks, snapshot.bytes)
            return StoredCheckpoint(replayed, version.token())
        raise CheckpointConflictError(
            f"checkpoint {safe_url(blob.url)} kept changing while it was read: {_CONFLICT_HINT}"
        )

    def _snapshot_etag(self, blob: BlobClient) -> str | None:
        try:
            return str(blob.get_blob_properties().etag)
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise storage_error(f"cannot read checkpoint {safe_url(blob.url)}", err) from err

    def save(
        self, checkpoint: Checkpoint, etag: str | None, changes: Sequence[LedgerChange] | None = None
    ) -> str:
        """Append the save to the feed's journal, or write a new snapshot (first save, or compaction).

        See :mod:`connector.checkpoint` (format 2) for why an appended line is as atomic as
        the whole document was, and when the journal is compacted.
        """
        self._ensure_container()
        version = None if etag is None else _Version.parse(etag)
        if version is not None and version.journal and changes is not None:
            line = encode_journal_line(checkpoint.progress, changes)
            if not compaction_due(
                journal_bytes=version.journal_bytes,
                journal_blocks=version.journal_blocks,
                snapshot_bytes=version.snapshot_bytes,
                next_line=len(line),
                minimum_bytes=self._journal_min_bytes,
            ):
                self._append(checkpoint.progress.feed, version.journal, line, version.journal_bytes)
                return replace(
                    version,
                    journal_bytes=version.journal_bytes + len(line),
                    journal_blocks=version.journal_blocks + 1,
                ).token()
        return self._write_snapshot(checkpoint, version)

    def _append(self, feed: str, name: str, line: bytes, position: int) -> None:
        """Append ``line`` at ``position``.

        The append-position condition makes a retried append that already landed fail
        (412): the journal then ends with exactly ``line`` at ``position``, and that is a
        success. Anything else at that position is another writer's: a conflict.
        """
        journal = self._journal
        if journal is None or journal.blob_name != name:
            journal = self._journal = self._container.get_blob_client(name)
        try:
            journal.append_block(line, length=len(line), appendpos_condition=position)
        except ResourceNotFoundError as err:
            raise CheckpointConflictError(
                f"checkpoint {self._url(feed)} changed under this run (its journal was replaced): {_CONFLICT_HINT}"
            ) from err
        except HttpResponseError as err:
            if err.status_code != 412:
                raise storage_error(f"cannot write checkpoint journal {safe_url(journal.url)}", err) from err
            if self._tail(journal, position) == line:
                logger.info("checkpoint journal append was retried after it landed; kept once")
                return
            raise CheckpointConflictError(
                f"checkpoint {self._url(feed)} changed under this run (its journal grew): {_CONFLICT_HINT}"
            ) from err
        except AzureError as err:
            raise storage_error(f"cannot write checkpoint journal {safe_url(journal.url)}", err) from err

    def _url(self, feed: str) -> str:
        """Where ``feed``'s checkpoint is, for a message (no query string)."""
        return safe_url(self._container.get_blob_client(_blob_name(feed)).url)

    @staticmethod
    def _tail(journal: BlobClient, position: int) -> bytes | None:
        try:
            return journal.download_blob(offset=position).readall()
        except (ResourceNotFoundError, HttpResponseError):
            return None  # gone, or nothing past ``position`` (416): not our line
        except AzureError as err:
            raise storage_error(f"cannot read checkpoint journal {safe_url(journal.url)}", err) from err

    def _write_snapshot(self, checkpoint: Checkpoint, version: _Version | None) -> str:
        """Start a new journal, seal the old one, then replace the snapshot (If-Match its ETag).

        The order makes a compaction safe next to a stale writer: the seal moves the old
        journal's append position, so a writer still appending there gets a conflict,
        and the snapshot's ETag condition stops two compactions from both winning. A
        crash before the snapshot is written leaves an unused journal (deleted by the
        next compaction) and, at worst, a seal line in the current one (replay skips it).
        """
        feed = checkpoint.progress.feed
        blob = self._container.get_blob_client(_blob_name(feed))
        journal = f"{journal_prefix(feed)}{uuid.uuid4().hex}.jsonl"
        written = [0]

        def snapshot() -> Iterator[bytes]:
            # Streamed: the SDK stages 4 MiB blocks and commits them under the ETag condition,
            # so a large snapshot is never held in memory whole; uncommitted blocks are invisible.
            for piece in iter_snapshot(checkpoint, journal=journal):
                written[0] += len(piece)
                yield piece

        try:
            self._container.get_blob_client(journal).create_append_blob()
        except AzureError as err:
            raise storage_error(
                f"cannot write checkpoint {safe_url(blob.url)} (creating its journal)", err
            ) from err
        if version is not None and version.journal:
            self._append(feed, version.journal, seal_line(journal), version.journal_bytes)
        try:
            if version is None:
                result = blob.upload_blob(
                    snapshot(),
                    overwrite=True,
                    match_condition=MatchConditions.IfMissing,
                    content_settings=ContentSettings(content_type="application/x-ndjson"),
                )
            else:
                result = blob.upload_blob(
                    snapshot(),
                    overwrite=True,
                    etag=version.snapshot_etag,
                    match_condition=MatchConditions.IfNotModified,
                    content_settings=ContentSettings(content_type="application/x-ndjson"),
                )
        except (ResourceModifiedError, ResourceExistsError) as err:
            raise CheckpointConflictError(
                f"checkpoint {safe_url(blob.url)} changed under this run: {_CONFLICT_HINT}"
            ) from err
        except HttpResponseError as err:
            if err.status_code in (409, 412):
                raise CheckpointConflictError(
                    f"checkpoint {safe_url(blob.url)} changed under this run: {_CONFLICT_HINT}"
                ) from err
            raise storage_error(f"cannot write checkpoint {safe_url(blob.url)}", err) from err
        except AzureError as err:
            raise storage_error(f"cannot write checkpoint {safe_url(blob.url)}", err) from err
        self._delete_journals(feed, keep=journal)
        return _Version(str(result["etag"]), journal, 0, 0, written[0]).token()

    def _delete_journals(self, feed: str, *, keep: str | None) -> None:
        """Best effort: journals a compaction replaced (a failure leaves them for the next one)."""
        try:
            for item in self._container.list_blobs(name_starts_with=journal_prefix(feed)):
                if item.name != keep:
                    self._container.delete_blob(item.name)
        except AzureError as err:
            logger.info(
                "old checkpoint journals of %s stay until the next compaction: %s", feed, scrub(str(err))
            )

    def delete(self, feed: str, etag: str) -> None:
        """Delete ``<feed>.json`` (and its journals) if it is still at ``etag`` (``forget-backfill``).

        Raises:
            CheckpointConflictError: it was written since ``etag`` (or is gone).
        """
        self._ensure_container()
        version = _Version.parse(etag)
        blob = self._container.get_blob_client(_blob_name(feed))
        if version.journal:
            # Moving the journal's end first stops a run that appends to it meanwhile.
            self._append(feed, version.journal, seal_line(""), version.journal_bytes)
        try:
            blob.delete_blob(etag=version.snapshot_etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as err:
            raise CheckpointConflictError(
                f"checkpoint {safe_url(blob.url)} changed under this command: {_CONFLICT_HINT}"
            ) from err
        except AzureError as err:
            raise storage_error(f"cannot delete checkpoint {safe_url(blob.url)}", err) from err
        self._delete_journals(feed, keep=None)

    def put_dead_letter(self, letter: DeadLetter) -> str:
        """Write the dead-letter document (overwrites the same record's earlier copy); return where, for the log."""
        self._ensure_container()
        blob = self._container.get_blob_client(letter.name)
        try:
            blob.upload_blob(
                letter.encode(),
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
            )
        except AzureError as err:
            raise storage_error(f"cannot write dead-letter record {safe_url(blob.url)}", err) from err
        return safe_url(blob.url)

    def purge_dead_letters(self, written_before: datetime, *, dry_run: bool = False) -> list[str]:
        """Delete the dead-letter documents last written before ``written_before``; return their names.

        The last write is when the record was last dead-lettered (the same record
        rewrites its document). Each delete is conditional on the ETag listed, so a
        document a run rewrites meanwhile stays. ``dry_run`` only lists.
        """
        self._ensure_container()
        try:
            old = [
                (blob.name, blob.etag)
                for blob in self._container.list_blobs(name_starts_with=DEAD_LETTER_PREFIX)
                if blob.last_modified < written_before
            ]
        except AzureError as err:
            raise storage_error(f"cannot list dead letters in {self.where}", err) from err
        if dry_run:
            return sorted(name for name, _ in old)
        purged: list[str] = []
        for name, etag in old:
            try:
                self._container.delete_blob(name, etag=etag, match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # rewritten since listed (seen again: young), or already gone
            except HttpResponseError as err:
                if err.status_code == 412:
                    continue
                raise storage_error(
                    f"cannot delete dead letter {self.where}/{name} (after deleting {len(purged)})", err
                ) from err
            except AzureError as err:
                raise storage_error(
                    f"cannot delete dead letter {self.where}/{name} (after deleting {len(purged)})", err
                ) from err
            purged.append(name)
        return sorted(purged)

    def list_feeds(self, prefix: str) -> list[str]:
        """Feeds whose blob name starts with ``prefix``."""
        self._ensure_container()
        try:
            names = [blob.name for blob in self._container.list_blobs(name_starts_with=prefix)]
        except AzureError as err:
            raise storage_error(f"cannot list checkpoints in {self.where}", err) from err
        return sorted(
            name.removesuffix(".json")
            for name in names
            if name.endswith(".json") and not name.startswith(DEAD_LETTER_PREFIX)
        )


class FileCheckpointStore:
    """Checkpoint documents as files ``<directory>/<feed>.json`` (CLI and demo).

    The ETag is a digest of the content: a writer whose content changed since it was
    read is always detected, and the only "change" a digest misses is a rewrite with
    identical bytes, which loses nothing. Compare-and-swap runs under an ``flock`` on
    a lock file so two local processes cannot both win; files are replaced atomically.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._directory = Path(directory)

    @property
    def where(self) -> str:
        """Human-readable location for messages."""
        return str(self._directory)

    @property
    def directory(self) -> Path:
        """The directory holding the documents (the run lock lives there too)."""
        return self._directory

    def _path(self, feed: str) -> Path:
        return self._directory / _blob_name(feed)

    @staticmethod
    def _etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'

    @classmethod
    def _read(cls, path: Path) -> tuple[bytes, str] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, cls._etag(data)

    def load(self, feed: str) -> StoredCheckpoint | None:
        """Read ``<feed>.json``; None if it does not exist."""
        path = self._path(feed)
        try:
            current = self._read(path)
        except OSError as err:
            raise file_error(f"cannot read checkpoint {path}", err) from err
        if current is None:
            return None
        data, etag = current
        return StoredCheckpoint(checkpoint=decode_checkpoint(data, where=str(path)), etag=etag)

    def save(
        self, checkpoint: Checkpoint, etag: str | None, changes: Sequence[LedgerChange] | None = None
    ) -> str:
        """Compare-and-swap the file: write only if its digest still equals ``etag``.

        The whole document every time (``changes`` are not needed): the file store serves
        the CLI and the demo, whose ledgers are small; the Blob store journals.
        """
        path = self._path(checkpoint.progress.feed)
        data = encode_checkpoint(checkpoint)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._directory / ".lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current = self._read(path)
                    if (None if current is None else current[1]) != etag:
                        raise CheckpointConflictError(
                            f"checkpoint {path} changed under this run: {_CONFLICT_HINT}"
                        )
                    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-")
                    with os.fdopen(handle, "wb") as tmp:
                        tmp.write(data)
                        tmp.flush()
                        os.fsync(tmp.fileno())
                    os.replace(tmp_name, path)
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as err:
            raise file_error(f"cannot write checkpoint {path}", err) from err
        return self._etag(data)

    def delete(self, feed: str, etag: str) -> None:
        """Delete ``<feed>.json`` if its digest still equals ``etag`` (``forget-backfill``)."""
        path = self._path(feed)
        try:
            with open(self._directory / ".lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current = self._read(path)
                    if current is None or current[1] != etag:
                        raise CheckpointConflictError(
                            f"checkpoint {path} changed under this command: {_CONFLICT_HINT}"
                        )
                    path.unlink()
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as err:
            raise file_error(f"cannot delete checkpoint {path}", err) from err

    def put_dead_letter(self, letter: DeadLetter) -> str:
        """Write the dead-letter document as a file under the store's directory."""
        path = self._directory / letter.name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(letter.encode())
        except OSError as err:
            raise file_error(f"cannot write dead-letter record {path}", err) from err
        return str(path)

    def purge_dead_letters(self, written_before: datetime, *, dry_run: bool = False) -> list[str]:
        """Delete the dead-letter files last written (mtime) before ``written_before``; return their names."""
        root = self._directory / DEAD_LETTER_PREFIX
        purged: list[str] = []
        try:
            for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
                try:
                    if datetime.fromtimestamp(path.stat().st_mtime, UTC) >= written_before:
                        continue
                    if not dry_run:
                        path.unlink()
                except FileNotFoundError:
                    continue
                purged.append(path.relative_to(self._directory).as_posix())
        except OSError as err:
            raise file_error(f"cannot purge dead letters in {root} (after {len(purged)})", err) from err
        return purged

    def list_feeds(self, prefix: str) -> list[str]:
        """Feeds whose relative path starts with ``prefix``."""
        if not self._directory.exists():
            return []
        feeds = [
            path.relative_to(self._directory).as_posix().removesuffix(".json")
            for path in self._directory.rglob("*.json")
        ]
        return sorted(
            feed for feed in feeds if feed.startswith(prefix) and not feed.startswith(DEAD_LETTER_PREFIX)
        )
