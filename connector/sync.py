"""The sync loop: read slices from the source, drop what is stored, upload, commit.

The loop reaches Graph, Logs Ingestion and storage only through
:mod:`connector.ports`, so it runs against in-memory fakes as well as the real
adapters. The commit rule, which is what makes the feed exactly-once:

1. rows are uploaded in batches that are each one request;
2. before a batch is sent its intent is saved; after it is accepted, its ledger
   entries are committed and the checkpoint is saved (ETag-guarded) before the next
   batch is sent;
3. the high-water mark moves past a slice only once every row of it is committed;
4. a refused batch stops the run: its rows stay uncommitted, the checkpoint stays at
   the last accepted batch, and the next run reads the slice again and sends exactly
   the rows the ledger does not hold.

Every change to progress and ledger is a :func:`connector.state.commit`; the
intent and backfill rules live in :mod:`connector.intent` and :mod:`connector.backfill`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from connector.backfill import BackfillRange, backfill_stop, resume_window
from connector.batching import DEFAULT_BATCH_BUDGET_BYTES, Batch, Batcher
from connector.checkpoint import LIVE_FEED, backfill_feed_name
from connector.deadletter import DeadLetter
from connector.errors import CheckpointError, ConnectorError, RecordError, ThrottledError
from connector.intent import IntentResolver, intent_for
from connector.ledger import Decision, ledger_key
from connector.mapping import RowMapper, format_datetime, parse_trace_record
from connector.ports import Clock, Deadline, FeedPorts, HeldLock, ProgressCallback
from connector.report import RunReport, last_run_summary
from connector.settings import Settings
from connector.state import CommitRules, Committed, FeedState
from connector.windows import Window, WindowPlan, next_slice, plan_backfill_window, plan_live_window

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """How the loop reads, sizes and keeps: the settings it needs, nothing else."""

    local_domains: tuple[str, ...]
    overlap_lookback: timedelta
    settle_delay: timedelta
    initial_lookback: timedelta
    max_slice_span: timedelta
    target_records_per_slice: int
    ledger_warn_entries: int
    verify_delay: timedelta
    batch_budget_bytes: int = DEFAULT_BATCH_BUDGET_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncPolicy:
        """The policy the settings describe."""
        return cls(
            local_domains=settings.local_domains,
            overlap_lookback=settings.overlap_lookback,
            settle_delay=settings.settle_delay,
            initial_lookback=settings.initial_lookback,
            max_slice_span=settings.max_slice_span,
            target_records_per_slice=settings.target_records_per_slice,
            ledger_warn_entries=settings.ledger_warn_entries,
            verify_delay=settings.verify_delay,
        )

    def commit_rules(self, keep_lookback: timedelta) -> CommitRules:
        """Commit rules for a feed that re-reads ``keep_lookback`` before its high-water mark."""
        return CommitRules(
            keep_lookback=keep_lookback,
            target_records=self.target_records_per_slice,
            max_slice_span=self.max_slice_span,
        )


@dataclass(slots=True)
class _Run:
    """One run of one feed: what it reports, the feed's state, and how it commits."""

    report: RunReport
    state: FeedState
    rules: CommitRules
    lock: HeldLock | None
    exclude_from: datetime | None = None
    warned_ledger: bool = False


class FeedSync:
    """Runs one feed (live, or one backfill) to its end, its budget, or its first error."""

    def __init__(
        self,
        ports: FeedPorts,
        policy: SyncPolicy,
        *,
        clock: Clock,
        deadline: Deadline,
        progress: ProgressCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ports = ports
        self._policy = policy
        self._clock = clock
        self._deadline = deadline
        self._progress = progress
        self._mapper = RowMapper(policy.local_domains)
        self._intents = IntentResolver(
            ports.verifier, clock=clock, deadline=deadline, verify_delay=policy.verify_delay, sleep=sleep
        )

    def run_live(self, lock: HeldLock | None = None) -> RunReport:
        """Read from the high-water mark (minus the overlap) to now (minus the settle delay)."""
        report = RunReport(feed=LIVE_FEED, started=self._clock())
        try:
            run = self._start(report, LIVE_FEED, lock, keep_lookback=self._policy.overlap_lookback)
            if run is None:
                return report
            progress = run.state.progress
            plan = plan_live_window(
                high_water_mark=progress.high_water_mark,
                now=report.started,
                overlap_lookback=self._policy.overlap_lookback,
                settle_delay=self._policy.settle_delay,
                initial_lookback=self._policy.initial_lookback,
                coverage_start=progress.coverage_start,
            )
            self._note_plan(report, plan)
            if plan.window is not None and progress.coverage_start is None:
                run.state.progress = replace(progress, coverage_start=plan.window.start)
            self._run_window(run, plan.window)
        except ConnectorError as err:
            report.fail(err)
        return report

    def run_backfill(self, start: datetime, end: datetime, lock: HeldLock | None = None) -> RunReport:
        """Fill ``[start, end)`` from history without touching the live checkpoint (see :mod:`connector.backfill`)."""
        report = RunReport(feed=backfill_feed_name(start, end), started=self._clock())
        try:
            request = BackfillRange(start, end)
            stop_before = backfill_stop(self._ports.store, request)
            run = self._start(report, request.feed, lock, keep_lookback=timedelta(0))
            if run is None:
                return report
            if run.state.progress.range_start is None:
                run.state.progress = replace(run.state.progress, range_start=start, range_end=end)
            plan = plan_backfill_window(
                start=start, end=stop_before, now=report.started, settle_delay=self._policy.settle_delay
            )
            self._note_plan(report, plan)
            run.exclude_from = stop_before
            self._run_window(run, resume_window(plan.window, run.state.progress.high_water_mark))
        except ConnectorError as err:
            report.fail(err)
        return report

    # ------------------------------------------------------------------ a run's steps

    def _start(
        self, report: RunReport, feed: str, lock: HeldLock | None, *, keep_lookback: timedelta
    ) -> _Run | None:
        """Load the feed and settle a batch an earlier run left unconfirmed; None: the run defers."""
        stored = self._ports.store.load(feed)
        state = FeedState.new(feed) if stored is None else FeedState.resume(stored.checkpoint, stored.etag)
        run = _Run(report=report, state=state, rules=self._policy.commit_rules(keep_lookback), lock=lock)
        report.high_water_mark_before = state.progress.high_water_mark
        pending = state.progress.pending_batch
        if pending is None:
            return run
        resolution = self._intents.resolve(pending)
        if resolution.deferred:
            report.outcome = "deferred"
            report.finished = self._clock()
            self._save_summary(run)
            return None
        report.possible_duplicates += resolution.possible_duplicates
        report.intent_rows_found += len(resolution.found)
        report.intent_rows_resent += resolution.resent
        state.apply(resolution.committed(), run.rules)
        self._save(run)
        return run

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

    def _run_window(self, run: _Run, window: Window | None) -> None:
        report = run.report
        try:
            report.outcome = "up_to_date" if window is None else self._run_slices(run, window)
        except ThrottledError as err:
            # Not a fault: the quota is shared and refills; what is committed stays committed.
            logger.warning("%s", err)
            report.outcome = "throttled"
        except ConnectorError as err:
            report.fail(err)
        finally:
            run.state.ledger.discard_staged()
            report.high_water_mark_after = run.state.progress.high_water_mark
            report.ledger_entries = len(run.state.ledger)
            report.finished = self._clock()
        if not isinstance(report.error, CheckpointError):
            self._save_summary(run)

    def _run_slices(self, run: _Run, window: Window) -> str:
        cursor = window.start
        while True:
            if self._deadline.expired():
                logger.info("run time budget used up at %s; the next run continues", format_datetime(cursor))
                return "budget_exhausted"
            current = next_slice(cursor, window.end, run.state.progress.next_slice_span)
            records = self._run_slice(run, current)
            run.report.slices += 1
            run.state.apply(Committed(finished_slice=current, slice_records=records), run.rules)
            logger.debug("slice %s..%s done: %d records", current.start, current.end, records)
            if self._progress is not None:
                self._progress(window, current.end)
            if current.end >= window.end:
                return "completed"
            cursor = current.end

    def _run_slice(self, run: _Run, current: Window) -> int:
        report, ledger = run.report, run.state.ledger
        batcher: Batcher[Decision] = Batcher(self._policy.batch_budget_bytes)
        records = 0
        for page in self._ports.source.pages(current):
            report.pages += 1
            for raw in page:
                records += 1
                report.records_seen += 1
                try:
                    record = parse_trace_record(raw)
                except RecordError as err:
                    self._dead_letter(run, raw, err, current)
                    continue
                if not current.contains(record.received) or (
                    run.exclude_from is not None and record.received >= run.exclude_from
                ):
                    report.outside_range += 1
                    continue
                decision = ledger.decide(
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
                    ledger.forget_staged(decision)
                    self._dead_letter(run, raw, err, current)
                    continue
                if full is not None:
                    self._upload(run, full)
        last = batcher.flush()
        if last is not None:
            self._upload(run, last)
        return records

    def _dead_letter(self, run: _Run, raw: object, err: RecordError, current: Window) -> None:
        letter = DeadLetter(
            feed=run.report.feed, reason=err.problem, record=raw, window=current, seen_at=self._clock()
        )
        where = self._ports.dead_letters.put_dead_letter(letter)
        run.report.dead_lettered += 1
        logger.warning("message trace record dead-lettered to %s: %s", where, err)

    def _upload(self, run: _Run, batch: Batch[Decision]) -> None:
        if run.lock is not None:
            run.lock.check()
        # Intent first: if the process dies after the service took the batch but before the
        # commit below is saved, the next run finds this record and resolves it.
        run.state.progress = replace(run.state.progress, pending_batch=intent_for(batch, self._clock()))
        self._save(run)
        result = self._ports.sink.upload(batch.rows)
        accepted = tuple(tag for index, tag in enumerate(batch.tags) if index not in result.failed_indexes)
        run.report.batches += 1
        # The outcome is known either way: the refused rows are simply not committed.
        run.state.apply(Committed(accepted=accepted), run.rules)
        run.report.rows_uploaded += len(accepted)
        run.report.revisions += sum(1 for decision in accepted if decision.entry.revision > 0)
        self._save(run)
        if result.error is not None:
            raise result.error

    def _save(self, run: _Run) -> None:
        state = run.state
        state.progress = replace(state.progress, updated=self._clock())
        state.etag = self._ports.store.save(state.checkpoint(), state.etag)
        run.report.checkpoint_saves += 1
        if len(state.ledger) > self._policy.ledger_warn_entries and not run.warned_ledger:
            run.warned_ledger = True
            logger.warning(
                "dedup ledger holds %d entries (warning threshold %d): lower OVERLAP_LOOKBACK_MINUTES or "
                "MAX_SLICE_HOURS to keep the checkpoint small",
                len(state.ledger),
                self._policy.ledger_warn_entries,
            )

    def _save_summary(self, run: _Run) -> None:
        report = run.report
        if report.finished is None:
            report.finished = self._clock()
        run.state.progress = replace(run.state.progress, last_run=last_run_summary(report))
        try:
            self._save(run)
        except ConnectorError as err:
            if report.error is None:
                report.fail(err)
            else:
                logger.warning("could not record the run summary in the checkpoint: %s", err)
