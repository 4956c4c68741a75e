"""In-memory implementations of the ports (no Mock): source, sink, store, verifier, clock."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector.checkpoint import decode_checkpoint, encode_checkpoint
from connector.deadletter import DeadLetter
from connector.errors import CheckpointConflictError, ConnectorError, SinkError
from connector.ledger import LedgerChange, ledger_key
from connector.mapping import parse_datetime
from connector.ports import SourcePage, StoredCheckpoint, UploadResult
from connector.state import Checkpoint
from connector.windows import Window


class FakeClock:
    """A settable aware clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def _in_window(record: Mapping[str, object], window: Window) -> bool:
    try:
        return window.contains(parse_datetime(str(record["receivedDateTime"])))
    except (KeyError, ValueError):
        return True  # a malformed record is served, as a broken server would


@dataclass
class MemorySource:
    """Serves Graph-shaped records newest first, in pages, honouring the closed window."""

    records: list[dict[str, object]] = field(default_factory=list)
    page_size: int = 3
    windows: list[Window] = field(default_factory=list)
    fail_after_pages: int | None = None
    failure: ConnectorError | None = None
    pages_served: int = 0
    oldest_first: bool = False

    def pages(self, window: Window) -> Generator[SourcePage, None, None]:
        self.windows.append(window)
        matching = [r for r in self.records if _in_window(r, window)]
        matching.sort(key=lambda r: str(r["receivedDateTime"]), reverse=not self.oldest_first)
        for offset in range(0, max(len(matching), 1), self.page_size):
            if self.fail_after_pages is not None and self.pages_served >= self.fail_after_pages:
                assert self.failure is not None
                raise self.failure
            self.pages_served += 1
            more = offset + self.page_size < len(matching)
            yield SourcePage(records=list(matching[offset : offset + self.page_size]), more=more)


@dataclass
class MemorySink:
    """Stores rows; can refuse the n-th upload (whole batch) to simulate a failing service."""

    rows: list[Mapping[str, object]] = field(default_factory=list)
    uploads: int = 0
    fail_on_upload: set[int] = field(default_factory=set)
    refuse_row: Callable[[Mapping[str, object]], str | None] | None = None
    """The service's words for a row it refuses (None: taken); one such row fails the whole request."""

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        self.uploads += 1
        if self.uploads in self.fail_on_upload:
            return UploadResult(
                failed_indexes=frozenset(range(len(rows))),
                error=SinkError("injected 500", rows_failed=len(rows), status=500),
            )
        if self.refuse_row is not None:
            reasons = [reason for reason in map(self.refuse_row, rows) if reason is not None]
            if reasons:
                return UploadResult(
                    failed_indexes=frozenset(range(len(rows))),
                    error=SinkError(
                        f"refused: {reasons[0]}",
                        rows_failed=len(rows),
                        status=400,
                        service_message=reasons[0],
                    ),
                )
        self.rows.extend(dict(row) for row in rows)
        return UploadResult()


class MemoryStore:
    """ETag-checked documents kept as encoded bytes (so the JSON round trip is exercised)."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[bytes, str]] = {}
        self.dead_letters: dict[str, DeadLetter] = {}
        self.saves = 0
        self._counter = 0

    def load(self, feed: str) -> StoredCheckpoint | None:
        if feed not in self.documents:
            return None
        data, etag = self.documents[feed]
        return StoredCheckpoint(checkpoint=decode_checkpoint(data, where=feed), etag=etag)

    def save(
        self, checkpoint: Checkpoint, etag: str | None, changes: Sequence[LedgerChange] | None = None
    ) -> str:
        feed = checkpoint.progress.feed
        current = self.documents.get(feed)
        if (current[1] if current else None) != etag:
            raise CheckpointConflictError(f"{feed} changed")
        self._counter += 1
        new_etag = f'"{self._counter}"'
        self.documents[feed] = (encode_checkpoint(checkpoint), new_etag)
        self.saves += 1
        return new_etag

    def list_feeds(self, prefix: str) -> list[str]:
        return sorted(name for name in self.documents if name.startswith(prefix))

    def put_dead_letter(self, letter: DeadLetter) -> str:
        letter.encode()  # what the blob store writes must be writable
        self.dead_letters[letter.name] = letter
        return f"memory://{letter.name}"

    def checkpoint(self, feed: str = "live") -> Checkpoint:
        stored = self.load(feed)
        assert stored is not None
        return stored.checkpoint

    def touch_behind_the_back(self, feed: str = "live") -> None:
        """Another writer saves the document: the ETag changes."""
        data, _ = self.documents[feed]
        self._counter += 1
        self.documents[feed] = (data, f'"other-{self._counter}"')


def trace(
    trace_id: str,
    recipient: str,
    received: str,
    status: str = "delivered",
    sender: str = "alice@contoso.com",
    subject: str = "hello",
    size: int = 1234,
) -> dict[str, object]:
    """A Graph exchangeMessageTrace record."""
    return {
        "id": trace_id,
        "senderAddress": sender,
        "recipientAddress": recipient,
        "messageId": f"<{trace_id}@contoso.com>",
        "receivedDateTime": received,
        "subject": subject,
        "size": size,
        "fromIP": "203.0.113.25",
        "toIP": "",
        "status": status,
    }


class ProcessKilled(BaseException):
    """Stands for SIGKILL inside a unit test: nothing after it runs, no handler catches it."""


@dataclass
class KillingSink(MemorySink):
    """Stores the n-th batch, then 'dies' before the connector learns the outcome."""

    kill_on_upload: int = 1
    stored_before_death: bool = True
    """False: the process dies while the batch is on the wire, before the service stores it."""

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        if not self.stored_before_death and self.uploads + 1 == self.kill_on_upload:
            self.uploads += 1
            raise ProcessKilled
        result = super().upload(rows)
        if self.uploads == self.kill_on_upload:
            raise ProcessKilled
        return result


@dataclass
class MemoryVerifier:
    """Answers from what a MemorySink holds, like a Log Analytics query would."""

    sink: MemorySink
    queries: int = 0

    def rows_stored(self, row_ids: Sequence[str], since: datetime, until: datetime) -> set[str]:
        self.queries += 1
        return {str(row["RowId"]) for row in self.sink.rows} & set(row_ids)

    def legacy_rows_present(
        self, trace_ids: Sequence[str], since: datetime, until: datetime
    ) -> set[tuple[str, str, int]]:
        self.queries += 1
        return {
            (
                ledger_key(str(row["MessageTraceId"]), str(row["RecipientAddress"])),
                str(row["Status"]),
                int(str(row["StatusRevision"])),
            )
            for row in self.sink.rows
            if row["MessageTraceId"] in trace_ids
        }
