"""The seams between the sync loop and the services: Protocols, the values they pass, the deadline.

The loop (:mod:`connector.sync`, :mod:`connector.intent`, :mod:`connector.backfill`)
reaches Graph, Logs Ingestion, Blob Storage and Log Analytics only through these;
the adapters (:mod:`connector.graph`, :mod:`connector.ingestion`, :mod:`connector.store`,
:mod:`connector.locks`, :mod:`connector.workspace`, :mod:`connector.auth`) implement
them and import nothing from the loop. The import contracts in ``pyproject.toml``
check both directions. Tests implement the same Protocols in memory
(``tests/fakes/memory.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from connector.deadletter import DeadLetter
from connector.errors import ConnectorError
from connector.ledger import LedgerChange
from connector.state import Checkpoint
from connector.windows import Window

Clock = Callable[[], datetime]
"""The wall clock (aware UTC); injected so tests choose "now"."""

ProgressCallback = Callable[[Window, datetime, int], None]
"""Told when a run's window is planned, after each uploaded batch and after each slice: the
window, how far it is covered (committed slices) and how many rows the run has stored (the
CLI's progress bar)."""


class Deadline:
    """The run's time budget, on a monotonic clock."""

    def __init__(
        self,
        budget: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self._monotonic = monotonic
        self._ends_at = monotonic() + budget.total_seconds()
        self._stop_requested = stop_requested

    @property
    def interrupted(self) -> bool:
        """True once the operator asked the run to stop (Ctrl-C on the command line).

        The loop checks it where it checks the budget, so a stop lands at the same safe
        points: between pages and slices, after the rows read so far are committed.
        """
        return self._stop_requested is not None and self._stop_requested()

    def remaining(self) -> float:
        """Seconds left (negative once over)."""
        return self._ends_at - self._monotonic()

    def expired(self) -> bool:
        """True once the budget is used up, or the operator asked the run to stop."""
        return self.interrupted or self.remaining() <= 0


@dataclass(frozen=True, slots=True)
class SourcePage:
    """One page of a window's records, and whether another page follows.

    ``more`` lets the loop stop between pages (page cap, run budget) without asking
    for a page that is not there: a slice whose last page was read is finished.
    """

    records: list[Mapping[str, object]]
    more: bool


class TraceSource(Protocol):
    """Message trace records of one window, page by page, in whatever order the service sends them."""

    def pages(self, window: Window) -> Generator[SourcePage, None, None]:
        """Yield the records of ``window`` one page at a time; the next page is fetched only when asked for."""
        ...


class DomainSource(Protocol):
    """Lists the tenant's verified mail domains (Graph ``/domains``, see :mod:`connector.tenant_domains`)."""

    def tenant_domains(self) -> tuple[str, ...]:
        """The verified domains, canonical; raises a ConnectorError when Graph cannot say."""
        ...


class RequestGate(Protocol):
    """The tenant's shared Graph quota budget (:mod:`connector.quota_store`), asked before each request."""

    def acquire(self, deadline: Deadline) -> None:
        """Wait for a slot; raise a ThrottledError when none frees before ``deadline``."""
        ...

    def throttled(self, retry_after: float | None) -> None:
        """Record a 429 Graph answered anyway (every caller of the budget honours its Retry-After)."""
        ...


@dataclass(frozen=True, slots=True)
class UploadResult:
    """Which rows of a batch the service did not take, and why."""

    failed_indexes: frozenset[int] = frozenset()
    error: ConnectorError | None = None


class RowSink(Protocol):
    """The Logs Ingestion stream."""

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        """Send ``rows``; report any that were not accepted instead of raising."""
        ...


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as loaded, with the ETag that guards the next save."""

    checkpoint: Checkpoint
    etag: str


class CheckpointStore(Protocol):
    """Durable, optimistic-concurrency storage for checkpoint documents."""

    def load(self, feed: str) -> StoredCheckpoint | None:
        """Return the document for ``feed``, or None if there is none yet."""
        ...

    def save(
        self, checkpoint: Checkpoint, etag: str | None, changes: Sequence[LedgerChange] | None = None
    ) -> str:
        """Write if the stored ETag still equals ``etag`` (None: only if absent); return the new ETag.

        ``changes`` are the ledger changes since the save that returned ``etag`` (in order):
        a store that journals (:class:`connector.store.BlobCheckpointStore`) appends them with
        the progress instead of rewriting the whole ledger; None, or a store that does not
        journal, writes the whole ``checkpoint``. Either way the stored state equals ``checkpoint``.

        Raises:
            CheckpointConflictError: someone else wrote it since ``etag``.
        """
        ...

    def list_feeds(self, prefix: str) -> list[str]:
        """Names of the stored documents starting with ``prefix``."""
        ...


class DeadLetterSink(Protocol):
    """Where records that cannot be mapped are kept (next to the checkpoint)."""

    def put_dead_letter(self, letter: DeadLetter) -> str:
        """Store ``letter`` (idempotent by its name); return where it went.

        Raises:
            CheckpointError: it could not be written (the run must stop: nothing is dropped silently).
        """
        ...


class WorkspaceVerifier(Protocol):
    """Reads the workspace to learn which rows of an interrupted batch arrived."""

    def rows_stored(self, row_ids: Sequence[str], since: datetime, until: datetime) -> set[str]:
        """Return the ``row_ids`` the table holds between ``since`` and ``until``.

        Raises:
            VerificationError: the workspace could not be queried.
        """
        ...

    def legacy_rows_present(
        self, trace_ids: Sequence[str], since: datetime, until: datetime
    ) -> set[tuple[str, str, int]]:
        """(ledger key, status, revision) of the rows of ``trace_ids``: for an intent from before RowId.

        Raises:
            VerificationError: the workspace could not be queried.
        """
        ...


class HeldLock(Protocol):
    """The run's lock on its feed (see :mod:`connector.locks`)."""

    def check(self) -> None:
        """Raise LockLostError if the lock can no longer be trusted."""
        ...


@dataclass(frozen=True, slots=True)
class LockState:
    """What a feed's lock records about the run holding it, as ``unlock`` reads it.

    ``unlock`` must not break the lock of a run that is still going (both would upload
    the same rows), so the holder records where it runs and, for a lease, when it last
    renewed it. Fields a holder did not record (an older version) are None.
    """

    where: str
    """The lock blob (no query string) or file, for messages."""
    held: bool
    holder: str | None = None
    """``<host> pid <pid>``, for messages."""
    host: str | None = None
    pid: int | None = None
    since: datetime | None = None
    renewed: datetime | None = None
    """The holder's clock at its last renewal (or at acquiring)."""
    lease_seconds: int | None = None
    """The lease's length (renewed every third of it); None for a lock that dies with its process (flock)."""
    version: str | None = None
    """Opaque (the lock blob's ETag): a break given this state refuses if the holder renewed since."""


class RunLock(Protocol):
    """Acquires the per-feed lock for the length of a ``with`` block."""

    def hold(self, feed: str, *, wait_seconds: float = 0.0) -> AbstractContextManager[HeldLock]:
        """Take the lock or raise RunLockedError naming the holder.

        With ``wait_seconds`` above 0, a lock another run holds is tried again until
        that much time has passed (for a short lock that runs take in turn); 0 fails at once.
        """
        ...

    def inspect(self, feed: str) -> LockState:
        """Read whether the feed's lock is held, and what its holder recorded."""
        ...

    def break_lock(self, feed: str, *, seen: LockState | None = None) -> str | None:
        """Free a lock left by a killed run at once; return who held it, if recorded.

        With ``seen`` (from :meth:`inspect`), refuse with RunLockedError if the lock
        changed since (its holder renewed it: it is alive). The decision whether to
        break at all is the caller's (:mod:`connector.unlocking`).
        """
        ...


class TokenProvider(Protocol):
    """Hands out a bearer token for one resource."""

    def token(self, *, force_refresh: bool = False) -> str:
        """Return a valid access token; ``force_refresh`` skips any cached one."""
        ...


@dataclass(frozen=True, slots=True)
class FeedPorts:
    """Everything a feed's run reads from or writes to."""

    source: TraceSource
    sink: RowSink
    store: CheckpointStore
    dead_letters: DeadLetterSink
    verifier: WorkspaceVerifier | None = None
    claims: RunLock | None = None
    """The lock backfills take in turn to claim their range (see :func:`connector.backfill.claim_backfill`)."""
    domains: DomainSource | None = None
    """Where the tenant's verified domains are read (None: LOCAL_DOMAINS alone)."""
