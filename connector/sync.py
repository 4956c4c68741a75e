"""The sync loop: read slices from the source, drop what is stored, upload, commit.

This module ties the pure core (windows, ledger, mapping, batching, checkpoint)
to three seams defined here as Protocols: a :class:`TraceSource` (Graph), a
:class:`RowSink` (Logs Ingestion) and a :class:`CheckpointStore` (Blob or file).
It imports no HTTP or Azure library, so it runs against in-memory fakes as well
as against the real adapters.

The commit rule, which is what makes the feed exactly-once:

1. rows are uploaded in batches that are each one request;
2. after a batch is accepted, its ledger entries are committed and the checkpoint
   is saved (ETag-guarded) before the next batch is sent;
3. the high-water mark moves past a slice only once every row of it is committed;
4. a refused batch stops the run: its rows stay uncommitted, the checkpoint stays at
   the last accepted batch, and the next run reads the slice again and sends exactly
   the rows the ledger does not hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from connector.batching import Batch, Batcher
from connector.checkpoint import (
    LIVE_FEED,
    Checkpoint,
    IntentEntry,
    PendingBatch,
    RunSummary,
    backfill_feed_name,
)
from connector.deadletter import DeadLetter
from connector.errors import CheckpointError, ConnectorError, GraphThrottledError, RecordError
from connector.ledger import Decision, DedupLedger, LedgerEntry, ledger_key
from connector.mapping import RowMapper, format_datetime, parse_trace_record
from connector.windows import (
    INITIAL_SLICE,
    Window,
    WindowPlan,
    adapt_slice_span,
    next_slice,
    plan_backfill_window,
    plan_live_window,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class TraceSource(Protocol):
    """Message trace records of one window, page by page (Graph's order, newest first)."""

    def pages(self, window: Window) -> Iterator[list[Mapping[str, object]]]:
        """Yield the records of ``window`` one page at a time."""
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

    def save(self, checkpoint: Checkpoint, etag: str | None) -> str:
        """Write if the stored ETag still equals ``etag`` (None: only if absent); return the new ETag.

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

    def rows_present(self, batch: PendingBatch, now: datetime) -> set[tuple[str, str]]:
        """Return the (ledger key, status) pairs of ``batch`` found in the table.

        Raises:
            ConnectorError: the workspace could not be queried.
        """
        ...


class HeldLock(Protocol):
    """The run's lock on its feed (see :mod:`connector.locks`)."""

    def check(self) -> None:
        """Raise LockLostError if the lock can no longer be trusted."""
        ...


class Deadline:
    """The run's time budget, on a monotonic clock."""

    def __init__(self, budget: timedelta, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._ends_at = monotonic() + budget.total_seconds()

    def remaining(self) -> float:
        """Seconds left (negative once over)."""
        return self._ends_at - self._monotonic()

    def expired(self) -> bool:
        """True once the budget is used up."""
        return self.remaining() <= 0


class BackfillError(ConnectorError):
    """A backfill request that would lose or duplicate rows."""

    exit_code = 2


@dataclass(slots=True)
class RunReport:
    """What one run did; printed by the CLI and logged by the function."""

    feed: str
    started: datetime
    outcome: str = "running"
    finished: datetime | None = None
    window: Window | None = None
    high_water_mark_before: datetime | None = None
    high_water_mark_after: datetime | None = None
    slices: int = 0
    pages: int = 0
    records_seen: int = 0
    rows_uploaded: int = 0
    revisions: int = 0
    duplicates_dropped: int = 0
    outside_range: int = 0
    dead_lettered: int = 0
    intent_rows_found: int = 0
    intent_rows_resent: int = 0
    possible_duplicates: int = 0
    batches: int = 0
    checkpoint_saves: int = 0
    ledger_entries: int = 0
    unrecoverable: timedelta = timedelta(0)
    error: ConnectorError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True unless the run stopped on an error."""
        return self.error is None

    def lag(self, now: datetime) -> timedelta | None:
        """How far the committed high-water mark trails ``now``."""
        return None if self.high_water_mark_after is None else now - self.high_water_mark_after

    def as_fields(self) -> dict[str, object]:
        """Flat key/value form for structured logs (no secrets, no subjects)."""
        return {
            "feed": self.feed,
            "outcome": self.outcome,
            "window_start": None if self.window is None else format_datetime(self.window.start),
            "window_end": None if self.window is None else format_datetime(self.window.end),
            "high_water_mark": None
            if self.high_water_mark_after is None
            else format_datetime(self.high_water_mark_after),
            "slices": self.slices,
            "pages": self.pages,
            "records_seen": self.records_seen,
            "rows_uploaded": self.rows_uploaded,
            "revisions": self.revisions,
            "duplicates_dropped": self.duplicates_dropped,
            "outside_range": self.outside_range,
            "dead_lettered": self.dead_lettered,
            "intent_rows_found": self.intent_rows_found,
            "intent_rows_resent": self.intent_rows_resent,
            "possible_duplicates": self.possible_duplicates,
            "batches": self.batches,
            "checkpoint_saves": self.checkpoint_saves,
            "ledger_entries": self.ledger_entries,
            "unrecoverable_hours": round(self.unrecoverable.total_seconds() / 3600, 2),
            "error": None if self.error is None else str(self.error),
        }


ProgressCallback = Callable[[Window, datetime], None]


@dataclass(slots=True)
class _FeedState:
    checkpoint: Checkpoint
    etag: str | None
    ledger: DedupLedger
    high_water_mark: datetime | None
    slice_span: timedelta
    warned_ledger: bool = False


class FeedSync:
    """Runs one feed (live, or one backfill) to its end, its budget, or its first error."""

    def __init__(
        self,
        *,
        source: TraceSource,
        sink: RowSink,
        store: CheckpointStore,
        dead_letters: DeadLetterSink,
        mapper: RowMapper,
        clock: Clock,
        deadline: Deadline,
        overlap_lookback: timedelta,
        settle_delay: timedelta,
        initial_lookback: timedelta,
        max_slice_span: timedelta,
        target_records_per_slice: int,
        ledger_warn_entries: int,
        progress: ProgressCallback | None = None,
        batch_budget_bytes: int | None = None,
        verifier: WorkspaceVerifier | None = None,
        verify_delay: timedelta = timedelta(minutes=10),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._source = source
        self._sink = sink
        self._store = store
        self._dead_letters = dead_letters
        self._mapper = mapper
        self._clock = clock
        self._deadline = deadline
        self._lookback = overlap_lookback
        self._settle = settle_delay
        self._initial_lookback = initial_lookback
        self._max_slice = max_slice_span
        self._target_records = target_records_per_slice
        self._ledger_warn = ledger_warn_entries
        self._progress = progress
        self._batch_budget = batch_budget_bytes
        self._lock: HeldLock | None = None
        self._verifier = verifier
        self._verify_delay = verify_delay
        self._sleep = sleep

    # ------------------------------------------------------------------ feeds

    def run_live(self, lock: HeldLock | None = None) -> RunReport:
        """Read from the high-water mark (minus the overlap) to now (minus the settle delay)."""
        self._lock = lock
        report = RunReport(feed=LIVE_FEED, started=self._clock())
        try:
            state = self._load(LIVE_FEED)
            report.high_water_mark_before = state.high_water_mark
            if not self._resolve_pending_batch(report, state):
                return report
            plan = plan_live_window(
                high_water_mark=state.high_water_mark,
                now=report.started,
                overlap_lookback=self._lookback,
                settle_delay=self._settle,
                initial_lookback=self._initial_lookback,
                coverage_start=state.checkpoint.coverage_start,
            )
            self._note_plan(report, plan)
            if plan.window is not None and state.checkpoint.coverage_start is None:
                state.checkpoint = state.checkpoint.with_changes(coverage_start=plan.window.start)
            self._run_window(report, state, plan.window, keep_lookback=self._lookback, exclude_from=None)
        except ConnectorError as err:
            report.error = err
        return report

    def run_backfill(self, start: datetime, end: datetime, lock: HeldLock | None = None) -> RunReport:
        """Fill ``[start, end)`` from history without touching the live checkpoint.

        Rows at or after the live feed's coverage start are the live feed's and are
        skipped, and ranges overlapping another backfill are refused, so a backfill
        never stores a row twice.
        """
        self._lock = lock
        feed = backfill_feed_name(start, end)
        report = RunReport(feed=feed, started=self._clock())
        try:
            if end <= start:
                raise BackfillError(
                    f"backfill end {end.isoformat()} must be after its start {start.isoformat()}"
                )
            live = self._store.load(LIVE_FEED)
            if live is None or live.checkpoint.coverage_start is None:
                raise BackfillError(
                    "no live checkpoint yet: run the connector once (`python -m connector run`) so the backfill "
                    "knows where the live feed starts and can stop there without duplicates"
                )
            self._refuse_overlapping_backfills(feed, start, end)
            live_start = live.checkpoint.coverage_start
            stop_before = min(end, live_start)
            if stop_before < end:
                logger.info(
                    "backfill end moved to the live feed's start %s (rows from then on are already stored)",
                    format_datetime(live_start),
                )
            state = self._load(feed)
            if not self._resolve_pending_batch(report, state):
                return report
            if state.checkpoint.range_start is None:
                state.checkpoint = state.checkpoint.with_changes(range_start=start, range_end=end)
            report.high_water_mark_before = state.high_water_mark
            plan = plan_backfill_window(
                start=start, end=stop_before, now=report.started, settle_delay=self._settle
            )
            self._note_plan(report, plan)
            window = plan.window
            if window is not None and state.high_water_mark is not None:
                window = (
                    None
                    if state.high_water_mark >= window.end
                    else Window(max(window.start, state.high_water_mark), window.end)
                )
            self._run_window(report, state, window, keep_lookback=timedelta(0), exclude_from=stop_before)
        except ConnectorError as err:
            report.error = err
        return report

    # ------------------------------------------------------------------ internals

    def _load(self, feed: str) -> _FeedState:
        stored = self._store.load(feed)
        checkpoint = stored.checkpoint if stored else Checkpoint(feed=feed)
        return _FeedState(
            checkpoint=checkpoint,
            etag=stored.etag if stored else None,
            ledger=DedupLedger(checkpoint.ledger),
            high_water_mark=checkpoint.high_water_mark,
            slice_span=checkpoint.slice_span or INITIAL_SLICE,
        )

    def _resolve_pending_batch(self, report: RunReport, state: _FeedState) -> bool:
        """Settle a batch whose upload outcome a killed run never recorded; False = defer the run.

        With workspace verification the rows already in the table are committed (the
        rest are sent again when their slice is read again); without it all of them
        are sent again and counted as possible duplicates.
        """
        pending = state.checkpoint.pending_batch
        if pending is None:
            return True
        if self._verifier is None:
            report.possible_duplicates += len(pending.entries)
            state.checkpoint = state.checkpoint.with_changes(
                possible_duplicates_total=state.checkpoint.possible_duplicates_total + len(pending.entries)
            )
            logger.warning(
                "an earlier run stopped while sending %d rows and workspace verification is off "
                "(WORKSPACE_ID unset): sending them again; up to %d rows may be duplicated",
                len(pending.entries),
                len(pending.entries),
            )
        else:
            wait = (self._verify_delay - (self._clock() - pending.created)).total_seconds()
            if wait > 0:
                if wait > self._deadline.remaining() / 2:
                    logger.info("unresolved batch is %.0f s too young to verify; deferring this run", wait)
                    report.outcome = "deferred"
                    report.finished = self._clock()
                    self._save_summary(report, state)
                    return False
                logger.info(
                    "waiting %.0f s for ingestion latency before verifying the unresolved batch", wait
                )
                self._sleep(wait)
            present = self._verifier.rows_present(pending, self._clock())
            found = [
                Decision(
                    key=entry.key,
                    entry=LedgerEntry(
                        received_ms=entry.received_ms, status=entry.status, revision=entry.revision
                    ),
                    previous_status=None,
                )
                for entry in pending.entries
                if (entry.key, entry.status) in present
            ]
            state.ledger.commit(found)
            report.intent_rows_found += len(found)
            report.intent_rows_resent += len(pending.entries) - len(found)
            logger.warning(
                "resolved the batch an earlier run left unconfirmed: %d of %d rows are in the workspace, "
                "%d will be sent again",
                len(found),
                len(pending.entries),
                len(pending.entries) - len(found),
            )
        state.checkpoint = state.checkpoint.with_changes(pending_batch=None)
        self._save(report, state)
        return True

    def _note_plan(self, report: RunReport, plan: WindowPlan) -> None:
        report.window = plan.window
        report.unrecoverable = plan.unrecoverable
        if plan.clamped:
            logger.warning(
                "message trace history older than Graph's 90-day retention cannot be fetched: "
                "%.1f days between %s and %s are missing (the checkpoint or the requested start was too old); "
                "continuing from %s",
                plan.unrecoverable.total_seconds() / 86400,
                format_datetime(plan.requested_start),
                format_datetime(plan.retention_floor),
                format_datetime(plan.retention_floor),
            )

    def _run_window(
        self,
        report: RunReport,
        state: _FeedState,
        window: Window | None,
        *,
        keep_lookback: timedelta,
        exclude_from: datetime | None,
    ) -> None:
        try:
            if window is None:
                report.outcome = "up_to_date"
            else:
                report.outcome = self._run_slices(report, state, window, keep_lookback, exclude_from)
        except GraphThrottledError as err:
            # Not a fault: the quota is shared and refills; what is committed stays committed.
            logger.warning("%s", err)
            report.outcome = "throttled"
        except ConnectorError as err:
            report.outcome = "failed"
            report.error = err
        finally:
            state.ledger.discard_staged()
            report.high_water_mark_after = state.high_water_mark
            report.ledger_entries = len(state.ledger)
            report.finished = self._clock()
        if not isinstance(report.error, CheckpointError):
            self._save_summary(report, state)

    def _run_slices(
        self,
        report: RunReport,
        state: _FeedState,
        window: Window,
        keep_lookback: timedelta,
        exclude_from: datetime | None,
    ) -> str:
        cursor = window.start
        while True:
            if self._deadline.expired():
                logger.info("run time budget used up at %s; the next run continues", format_datetime(cursor))
                return "budget_exhausted"
            current = next_slice(cursor, window.end, state.slice_span)
            records = self._run_slice(report, state, current, exclude_from)
            report.slices += 1
            if state.high_water_mark is None or current.end > state.high_water_mark:
                state.high_water_mark = current.end
            state.ledger.prune(state.high_water_mark - keep_lookback)
            state.slice_span = adapt_slice_span(
                state.slice_span, records, target_records=self._target_records, maximum=self._max_slice
            )
            logger.debug("slice %s..%s done: %d records", current.start, current.end, records)
            if self._progress is not None:
                self._progress(window, current.end)
            if current.end >= window.end:
                return "completed"
            cursor = current.end

    def _run_slice(
        self, report: RunReport, state: _FeedState, current: Window, exclude_from: datetime | None
    ) -> int:
        batcher: Batcher[Decision] = Batcher() if self._batch_budget is None else Batcher(self._batch_budget)
        records = 0
        for page in self._source.pages(current):
            report.pages += 1
            for raw in page:
                records += 1
                report.records_seen += 1
                try:
                    record = parse_trace_record(raw)
                except RecordError as err:
                    self._dead_letter(report, raw, err, current)
                    continue
                if not current.contains(record.received) or (
                    exclude_from is not None and record.received >= exclude_from
                ):
                    report.outside_range += 1
                    continue
                decision = state.ledger.decide(
                    ledger_key(record.trace_id, record.recipient), record.received, record.status
                )
                if decision is None:
                    report.duplicates_dropped += 1
                    continue
                row = self._mapper.to_row(
                    record, revision=decision.entry.revision, previous_status=decision.previous_status
                )
                try:
                    full = batcher.add(row, decision)
                except RecordError as err:
                    state.ledger.forget_staged(decision)
                    self._dead_letter(report, raw, err, current)
                    continue
                if full is not None:
                    self._upload(report, state, full)
        last = batcher.flush()
        if last is not None:
            self._upload(report, state, last)
        return records

    def _dead_letter(self, report: RunReport, raw: object, err: RecordError, current: Window) -> None:
        letter = DeadLetter(
            feed=report.feed, reason=err.problem, record=raw, window=current, seen_at=self._clock()
        )
        where = self._dead_letters.put_dead_letter(letter)
        report.dead_lettered += 1
        logger.warning("message trace record dead-lettered to %s: %s", where, err)

    def _upload(self, report: RunReport, state: _FeedState, batch: Batch[Decision]) -> None:
        if self._lock is not None:
            self._lock.check()
        # Intent first: if the process dies after the service took the batch but before the
        # commit below is saved, the next run finds this record and resolves it.
        state.checkpoint = state.checkpoint.with_changes(
            pending_batch=PendingBatch(
                created=self._clock(),
                entries=tuple(
                    IntentEntry(
                        key=decision.key,
                        received_ms=decision.entry.received_ms,
                        status=decision.entry.status,
                        revision=decision.entry.revision,
                        trace_id=str(row["MessageTraceId"]),
                    )
                    for decision, row in zip(batch.tags, batch.rows, strict=True)
                ),
            )
        )
        self._save(report, state)
        result = self._sink.upload(batch.rows)
        accepted = [tag for index, tag in enumerate(batch.tags) if index not in result.failed_indexes]
        report.batches += 1
        state.ledger.commit(accepted)
        report.rows_uploaded += len(accepted)
        report.revisions += sum(1 for decision in accepted if decision.entry.revision > 0)
        # The outcome is known either way: the refused rows are simply not committed.
        state.checkpoint = state.checkpoint.with_changes(pending_batch=None)
        self._save(report, state)
        if result.error is not None:
            raise result.error

    def _save(self, report: RunReport, state: _FeedState, last_run: RunSummary | None = None) -> None:
        checkpoint = state.checkpoint.with_changes(
            high_water_mark=state.high_water_mark,
            ledger=state.ledger.entries(),
            slice_span=state.slice_span,
            updated=self._clock(),
            last_run=last_run or state.checkpoint.last_run,
        )
        state.etag = self._store.save(checkpoint, state.etag)
        state.checkpoint = checkpoint
        report.checkpoint_saves += 1
        if len(state.ledger) > self._ledger_warn and not state.warned_ledger:
            state.warned_ledger = True
            logger.warning(
                "dedup ledger holds %d entries (warning threshold %d): lower OVERLAP_LOOKBACK_MINUTES or "
                "MAX_SLICE_HOURS to keep the checkpoint small",
                len(state.ledger),
                self._ledger_warn,
            )

    def _save_summary(self, report: RunReport, state: _FeedState) -> None:
        summary = RunSummary(
            started=format_datetime(report.started),
            finished=format_datetime(report.finished or self._clock()),
            outcome=report.outcome,
            rows_uploaded=report.rows_uploaded,
            revisions=report.revisions,
            duplicates_dropped=report.duplicates_dropped,
            batches=report.batches,
            dead_lettered=report.dead_lettered,
            possible_duplicates=report.possible_duplicates,
            error=None if report.error is None else str(report.error),
        )
        try:
            self._save(report, state, last_run=summary)
        except ConnectorError as err:
            if report.error is None:
                report.error = err
                report.outcome = "failed"
            else:
                logger.warning("could not record the run summary in the checkpoint: %s", err)

    def _refuse_overlapping_backfills(self, feed: str, start: datetime, end: datetime) -> None:
        for other in self._store.list_feeds("backfill/"):
            if other == feed:
                continue
            stored = self._store.load(other)
            if stored is None:
                continue
            other_start, other_end = stored.checkpoint.range_start, stored.checkpoint.range_end
            if other_start is not None and other_end is not None and start < other_end and other_start < end:
                raise BackfillError(
                    f"backfill [{format_datetime(start)}, {format_datetime(end)}) overlaps the earlier backfill "
                    f"[{format_datetime(other_start)}, {format_datetime(other_end)}) ({other}); rows in the "
                    "overlap would be stored twice. Re-run that backfill's exact range to resume it, or pick a "
                    "range that does not overlap."
                )
