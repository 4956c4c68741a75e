"""A feed's state: its progress and its dedup ledger, and the one step that commits to them. Pure.

Progress is what a feed has durably done: the high-water mark (every row of every
slice before it is in the table), where its coverage starts (or the range of a
backfill), the adaptive slice span, the batch in flight (the *intent*), the last
run's summary. The ledger (:mod:`connector.ledger`) says which rows the table
already holds. A run keeps exactly one of each, in :class:`FeedState`.

Everything that makes rows durable goes through :func:`commit`: the outcome of a
batch became known (the service accepted some rows, or an unconfirmed batch was
resolved), or a whole slice is stored. It returns the new progress and what
changes in the ledger, never a copy of the ledger, so its cost follows the rows
committed rather than the ledger's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from connector.ledger import Decision, DedupLedger, LedgerChange, LedgerEntry
from connector.tenant_domains import DiscoveredDomains
from connector.windows import INITIAL_SLICE, DeepPass, Window, adapt_slice_span, split_slice_span

LastRun = Mapping[str, object]
"""The last run's summary as the checkpoint keeps it (see :mod:`connector.report`)."""


class IntentEntry(NamedTuple):
    """One row of a batch about to be sent: enough to find it in the workspace and commit it.

    The row is looked up by its ``RowId`` (:func:`~connector.ledger.row_id`); the entry
    holds no trace id, so neither it nor the ledger's digests, which both need the trace
    id to be tried against a list of addresses, lets a reader of the checkpoint recover a
    recipient. ``legacy_trace_id`` is set only on entries read from an intent written by
    a version before ``RowId`` (looked up by trace id, as that version did).

    A named tuple (immutable, and a quarter of a frozen dataclass's cost to build: one per
    row sent); its first five fields are the intent's row as the checkpoint writes it.
    """

    key: str
    received_ms: int
    status: str
    revision: int
    row_id: str
    legacy_trace_id: str | None = None

    def decision(self) -> Decision:
        """The ledger decision this row stands for (committed when the row is found stored)."""
        entry = LedgerEntry(received_ms=self.received_ms, status=self.status, revision=self.revision)
        return Decision(key=self.key, entry=entry, previous_status=None)


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """The batch in flight: written before the upload, cleared once the upload's outcome is known.

    Found on load, it means the process stopped between sending a batch and learning
    (or recording) whether the service took it; :mod:`connector.intent` resolves it.
    """

    created: datetime
    entries: tuple[IntentEntry, ...]


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """How a backfill run on Azure is cut into queued slices (:mod:`connector.queued`); kept in its document."""

    slice_span: timedelta
    stop: datetime
    """Where the whole job stops: its end, or the live feed's coverage start when it claimed its range."""


@dataclass(frozen=True, slots=True)
class SliceFailure:
    """Why a queued slice last failed, on which delivery, and whether it was given up (the poison queue)."""

    failures: int
    """Failed deliveries of this slice so far (all its messages)."""
    attempt: int
    """The failed message's delivery count (the host's dequeue count)."""
    reason: str
    poisoned: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class FeedProgress:
    """What one feed (live, or one backfill) has durably done."""

    feed: str
    high_water_mark: datetime | None = None
    coverage_start: datetime | None = None
    range_start: datetime | None = None
    range_end: datetime | None = None
    slice_span: timedelta | None = None
    pending_batch: PendingBatch | None = None
    last_run: LastRun | None = None
    updated: datetime | None = None
    possible_duplicates_total: int = 0
    stalled_runs: int = 0
    """Runs in a row that ended with message trace due and the high-water mark where it was."""
    waiting_for_permission_since: datetime | None = None
    """When Graph first answered the service-principal 401 (missing or still activating); None once it reads."""
    discovered_domains: DiscoveredDomains | None = None
    """The tenant's verified domains as last read from Graph (:mod:`connector.tenant_domains`); None before."""
    deep_reread: DeepPass | None = None
    """The live feed's deep re-read in progress (:mod:`connector.windows`); None: a new one is due."""
    queue_plan: QueuePlan | None = None
    """A backfill run on Azure: its slices (each its own feed, ``<job>/<start>_<end>``); None: a local one."""
    slice_failure: SliceFailure | None = None
    """A queued slice's last failure (the host's poison queue keeps no reason); None: none yet."""

    @property
    def next_slice_span(self) -> timedelta:
        """The span the next slice is read with (a new feed starts at one hour)."""
        return self.slice_span or INITIAL_SLICE


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The stored document of one feed: its progress and its committed ledger entries.

    When built from a running :class:`FeedState`, ``ledger`` is a live read-only view of
    the ledger (no copy): encode it before the ledger changes again.
    """

    progress: FeedProgress
    ledger: Mapping[str, LedgerEntry]


@dataclass(frozen=True, slots=True)
class CommitRules:
    """How a finished slice moves progress: ledger retention and slice sizing."""

    keep_lookback: timedelta
    """Committed entries received this long before the high-water mark stay: the span runs re-read.

    For the live feed, the longest: the deep re-read's (:func:`connector.windows.deep_floor`).
    """
    target_records: int
    max_slice_span: timedelta
    max_pages_per_slice: int | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """One step that made rows durable.

    Attributes:
        accepted: decisions whose rows are now in the table (clears the batch in flight).
        dead_lettered: decisions whose rows the service refused on their own and that are now
            dead letters: the ledger holds them as handled, so a re-read does not send them again.
        possible_duplicates: rows of an unconfirmed batch that will be sent again unverified.
        finished_slice: set once every row of this slice is committed.
        slice_records: records Graph returned for that slice (sizes the next one).
        slice_pages: pages Graph returned for that slice (sizes the next one against the page cap).
        unfinished_slice: a slice whose reading stopped before its end (page cap, budget, quota);
            the high-water mark stays and the slice is read again smaller.
        covered_from: for an unfinished slice read newest first: after this time it was read in full.
    """

    accepted: tuple[Decision, ...] = ()
    dead_lettered: tuple[Decision, ...] = ()
    possible_duplicates: int = 0
    finished_slice: Window | None = None
    slice_records: int = 0
    slice_pages: int = 0
    unfinished_slice: Window | None = None
    covered_from: datetime | None = None


def commit(progress: FeedProgress, step: Committed, rules: CommitRules) -> tuple[FeedProgress, LedgerChange]:
    """Return the progress after ``step`` and what it changes in the ledger.

    The batch in flight is settled by any commit. A finished slice moves the
    high-water mark to its end (never backwards), ages ledger entries out of the
    re-read span, and sizes the next slice from how full this one was. An
    unfinished slice leaves the high-water mark and shrinks the span it is read
    with next (:func:`~connector.windows.split_slice_span`).
    """
    high_water_mark = progress.high_water_mark
    slice_span = progress.slice_span
    prune_before: datetime | None = None
    if step.finished_slice is not None:
        end = step.finished_slice.end
        if high_water_mark is None or end > high_water_mark:
            high_water_mark = end
        prune_before = high_water_mark - rules.keep_lookback
        slice_span = adapt_slice_span(
            progress.next_slice_span,
            step.slice_records,
            target_records=rules.target_records,
            maximum=rules.max_slice_span,
            pages_in_slice=step.slice_pages,
            page_cap=rules.max_pages_per_slice,
        )
    elif step.unfinished_slice is not None:
        slice_span = split_slice_span(step.unfinished_slice, step.covered_from)
    after = replace(
        progress,
        high_water_mark=high_water_mark,
        slice_span=slice_span,
        pending_batch=None,
        possible_duplicates_total=progress.possible_duplicates_total + step.possible_duplicates,
    )
    return after, LedgerChange(committed=step.accepted + step.dead_lettered, prune_before=prune_before)


STALL_LIMIT = 3
"""Runs in a row without high-water mark progress, while data is due, after which a run reports an error."""


def after_run(progress: FeedProgress, *, due: bool, moved: bool) -> FeedProgress:
    """Progress with the stall count updated for a run that just ended.

    ``due``: the run had message trace to read (a window, or an unconfirmed batch it
    deferred). ``moved``: the high-water mark advanced. A run that moves, or has nothing
    to do, resets the count.
    """
    return replace(progress, stalled_runs=0 if moved or not due else progress.stalled_runs + 1)


@dataclass(slots=True)
class FeedState:
    """The one in-memory state of a feed during a run, and the ETag its next save must match."""

    progress: FeedProgress
    ledger: DedupLedger
    etag: str | None = None
    unsaved: list[LedgerChange] = field(default_factory=list)
    """Ledger changes since the last save, in order: what the next save appends to the journal."""
    saved_intent: PendingBatch | None = None
    """The batch in flight as the last save (or the load) recorded it: a commit of exactly its rows
    can name it instead of listing them (:attr:`~connector.ledger.LedgerChange.settles_intent`)."""

    @classmethod
    def new(cls, feed: str) -> FeedState:
        """The state of a feed that has no checkpoint yet (its first save must create one)."""
        return cls(progress=FeedProgress(feed=feed), ledger=DedupLedger(), etag=None)

    @classmethod
    def resume(cls, stored: Checkpoint, etag: str) -> FeedState:
        """The state of a loaded checkpoint, whose next save must match ``etag``."""
        return cls(
            progress=stored.progress,
            ledger=DedupLedger(stored.ledger),
            etag=etag,
            saved_intent=stored.progress.pending_batch,
        )

    def apply(self, step: Committed, rules: CommitRules) -> None:
        """Commit ``step`` to progress and ledger."""
        settled = self.progress.pending_batch
        self.progress, change = commit(self.progress, step, rules)
        if settled is not None and settled is self.saved_intent and _commits_exactly(change, settled):
            change = replace(change, settles_intent=True)
        self.ledger.apply(change)
        if change.committed or change.prune_before is not None:
            self.unsaved.append(change)

    def saved(self, etag: str) -> None:
        """Record a save: its ETag guards the next one, and the changes it carried are durable."""
        self.etag = etag
        self.unsaved.clear()
        self.saved_intent = self.progress.pending_batch

    def checkpoint(self) -> Checkpoint:
        """The document to save now (a view of the ledger, not a copy)."""
        return Checkpoint(progress=self.progress, ledger=self.ledger.committed)


def _commits_exactly(change: LedgerChange, intent: PendingBatch) -> bool:
    """True when ``change`` commits the rows of ``intent``, all of them, as recorded and in order."""
    if len(change.committed) != len(intent.entries):
        return False
    for decision, entry in zip(change.committed, intent.entries, strict=True):
        committed = decision.entry
        if (
            decision.key != entry.key
            or committed.received_ms != entry.received_ms
            or committed.status != entry.status
            or committed.revision != entry.revision
        ):
            return False
    return True
