"""The sync loop: read slices from the source, drop what is stored, upload, commit.

The loop reaches Graph, Logs Ingestion and storage only through
:mod:`connector.ports`, so it runs against in-memory fakes as well as the real
adapters. The commit rule, which is what makes the feed exactly-once:

1. rows are uploaded in batches that are each one request;
2. before batches are sent their intent is saved (one intent for a group of up to
   :data:`GROUP_MAX_ROWS` rows, sent one batch after another); once they are answered,
   the accepted rows' ledger entries are committed and the checkpoint is saved
   (ETag-guarded) before anything else is sent;
3. the high-water mark moves past a slice only once every row of it is committed;
4. a refused batch stops the run: its rows stay uncommitted, the checkpoint stays at
   the last accepted batch, and the next run reads the slice again and sends exactly
   the rows the ledger does not hold. The exception is a refusal of the rows' content
   (:mod:`connector.refusal`): the batch is split until the rows refused on their own
   are found; those are dead-lettered with the service's reason, the rest stored.

A run never waits on a slice it cannot finish: the page cap and the run budget are
checked between pages, and a slice that stops early is read again smaller (in the
same run after the page cap, in the next after the budget or Graph's quota), so the
high-water mark keeps moving however big the tenant. A feed whose runs keep ending
without moving it, while data is due, reports :class:`~connector.errors.FeedStalledError`.

Within one read of a slice a key counts once, in its most advanced status
(:mod:`connector.precedence`), so re-reading an answer that holds a key twice adds
nothing. Every change to progress and ledger is a :func:`connector.state.commit`; the
intent and backfill rules live in :mod:`connector.intent` and :mod:`connector.backfill`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from connector.backfill import BackfillRange, claim_backfill, resume_window
from connector.batching import DEFAULT_BATCH_BUDGET_BYTES, Batch, Batcher
from connector.checkpoint import LIVE_FEED, backfill_feed_name
from connector.deadletter import DeadLetter
from connector.errors import (
    SERVICE_PRINCIPAL_WAIT,
    AuthenticationError,
    CheckpointError,
    ConfigError,
    ConnectorError,
    ErrorKind,
    FeedStalledError,
    PermissionWaitExpiredError,
    ReconcileError,
    RecordError,
    ServicePrincipalMissingError,
    SinkError,
    ThrottledError,
    service_principal_advice,
)
from connector.intent import IntentResolver, Resolution, intent_for
from connector.ledger import Decision, key_state
from connector.mapping import RowMapper, TraceRecord, format_datetime, parse_trace_record
from connector.ports import Clock, Deadline, FeedPorts, HeldLock, ProgressCallback, UploadResult
from connector.precedence import SliceObservations
from connector.reconcile import Missing, repair_decision
from connector.redact import hide_addresses
from connector.refusal import Refusal, RowIsolation, classify_refusal, deployment_refused
from connector.report import RunReport, last_run_summary
from connector.settings import Settings
from connector.state import STALL_LIMIT, CommitRules, Committed, FeedState, after_run
from connector.subjects import KEEP_SUBJECTS, SubjectPolicy
from connector.tenant_domains import DiscoveredDomains, choose_local_domains, discovery_failure, needs_refresh
from connector.windows import (
    ONE_SECOND,
    SliceReading,
    Window,
    WindowPlan,
    deep_chunk,
    deep_floor,
    next_slice,
    plan_backfill_window,
    plan_deep_pass,
    plan_live_window,
)

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
    max_pages_per_slice: int = 20
    batch_budget_bytes: int = DEFAULT_BATCH_BUDGET_BYTES
    subjects: SubjectPolicy = KEEP_SUBJECTS
    discover_domains: bool = False
    """Read the tenant's verified domains from Graph (daily, cached in the checkpoint) besides local_domains."""
    short_lookback: timedelta | None = None
    """What every live run re-reads before its high-water mark; None: the whole overlap (no deep re-read)."""
    full_reread: timedelta = timedelta(minutes=60)
    """Feed progress one deep re-read of the overlap is spread over (:func:`connector.windows.deep_chunk`)."""
    tenant: str | None = None
    """The ``TENANTS`` entry read (named in the run's report); None for a single-tenant deployment."""
    source_tenant_id: str = ""
    """The directory id every row and the health row carry as ``SourceTenantId``."""

    @property
    def tiered(self) -> bool:
        """True when runs read a short lookback and the rest of the overlap by a deep re-read."""
        return self.short_lookback is not None and self.short_lookback < self.overlap_lookback

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
            max_pages_per_slice=settings.max_pages_per_slice,
            subjects=settings.subjects,
            discover_domains=settings.discover_domains,
            short_lookback=settings.short_lookback,
            full_reread=settings.full_reread,
            tenant=None if settings.tenant is None else settings.tenant.name,
            source_tenant_id=settings.source_tenant_id,
        )

    def commit_rules(self, keep_lookback: timedelta) -> CommitRules:
        """Commit rules for a feed that re-reads ``keep_lookback`` before its high-water mark."""
        return CommitRules(
            keep_lookback=keep_lookback,
            target_records=self.target_records_per_slice,
            max_slice_span=self.max_slice_span,
            max_pages_per_slice=self.max_pages_per_slice,
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
    outside_warnings: int = 0
    graph_refused: AuthenticationError | None = None
    """Entra refused a Graph token at domain discovery: the run fails with it on reaching Graph."""
    reading_deep: bool = False
    """The slices being read are the deep re-read's: each finished one moves its cursor."""


class _Seen(NamedTuple):
    """A record a read holds until it knows no later record of the read supersedes it (one per record read).

    The observation itself (:class:`~connector.precedence.Observed`) and everything storing it needs.
    """

    key: str
    received: datetime
    status: str
    record: TraceRecord
    raw: object
    key_state: hashlib.blake2b  # ledger_key's hash state, carried on to the row's RowId


class _Staged(NamedTuple):
    """What a batch row stands for: the ledger decision it commits and the record Graph sent."""

    decision: Decision
    raw: object


_tuple_new = tuple.__new__

# Records outside their slice are each logged at WARNING up to this many per run, then counted only.
MAX_OUTSIDE_WARNINGS = 20

GROUP_MAX_ROWS = 5_000
"""Rows at most sent under one intent (:meth:`FeedSync._send`): about one Graph page, so one
intent line stays near half a megabyte and a kill leaves at most this many rows to verify."""


def _note_resolution(report: RunReport, resolution: Resolution) -> None:
    """Count what settling an unconfirmed batch found (stored, sent again, possibly duplicated)."""
    report.possible_duplicates += resolution.possible_duplicates
    report.intent_rows_found += len(resolution.found)
    report.intent_rows_resent += resolution.resent


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
        self._progress_window: Window | None = None
        # Built by _start for each run: its domains are known only once the checkpoint is read.
        self._mapper: RowMapper
        self._intents = IntentResolver(
            ports.verifier, clock=clock, deadline=deadline, verify_delay=policy.verify_delay, sleep=sleep
        )

    def _report(self, feed: str) -> RunReport:
        """A new run's report, naming the feed and the tenant read."""
        return RunReport(
            feed=feed,
            started=self._clock(),
            tenant=self._policy.tenant,
            source_tenant_id=self._policy.source_tenant_id,
        )

    def run_live(self, lock: HeldLock | None = None) -> RunReport:
        """Read from the high-water mark (minus the short lookback) to now (minus the settle delay).

        Then, if the main window was read to its end, a chunk of the deep re-read
        (:mod:`connector.windows` says why the two together miss nothing).
        """
        report = self._report(LIVE_FEED)
        policy = self._policy
        try:
            run = self._start(report, LIVE_FEED, lock, keep_lookback=policy.overlap_lookback)
            if run is None:
                return report
            progress = run.state.progress
            deep = None
            if not policy.tiered:
                # Every run reads the whole overlap: a pass left from tiered runs would be stale if they return.
                run.state.progress = progress = replace(progress, deep_reread=None)
            elif policy.short_lookback is not None:
                deep = plan_deep_pass(
                    current=progress.deep_reread,
                    high_water_mark=progress.high_water_mark,
                    overlap_lookback=policy.overlap_lookback,
                    short_lookback=policy.short_lookback,
                    now=report.started,
                    coverage_start=progress.coverage_start,
                )
                run.state.progress = progress = replace(progress, deep_reread=deep)
                # The ledger keeps what any later read can reach: the deep re-read goes furthest back.
                floor = deep_floor(deep, overlap_lookback=policy.overlap_lookback)
                if floor is not None:
                    keep = max(policy.overlap_lookback, report.started - policy.settle_delay - floor)
                    run.rules = replace(run.rules, keep_lookback=keep)
            plan = plan_live_window(
                high_water_mark=progress.high_water_mark,
                now=report.started,
                overlap_lookback=policy.short_lookback
                if policy.tiered and policy.short_lookback is not None
                else policy.overlap_lookback,
                settle_delay=policy.settle_delay,
                initial_lookback=policy.initial_lookback,
                coverage_start=progress.coverage_start,
            )
            self._note_plan(report, plan)
            report.lookback = "short" if policy.tiered else "overlap"
            if plan.window is not None and progress.coverage_start is None:
                run.state.progress = replace(progress, coverage_start=plan.window.start)
            self._run_window(run, plan.window, then=self._read_deep if deep is not None else None)
        except ConnectorError as err:
            report.fail(err)
        return report

    def _read_deep(self, run: _Run) -> str | None:
        """After a main window read to its end: this run's chunk of the deep re-read, if one is due."""
        policy, progress = self._policy, run.state.progress
        deep, mark = progress.deep_reread, progress.high_water_mark
        if deep is None or mark is None or policy.short_lookback is None:
            return None
        chunk = deep_chunk(
            deep,
            high_water_mark=mark,
            overlap_lookback=policy.overlap_lookback,
            short_lookback=policy.short_lookback,
            full_reread=policy.full_reread,
        )
        if chunk is None:
            return None
        run.report.lookback = "short+deep"
        run.report.deep_window = chunk
        logger.info(
            "deep re-read of %s..%s (pass to %s)",
            format_datetime(chunk.start),
            format_datetime(chunk.end),
            format_datetime(deep.end),
        )
        run.reading_deep = True
        try:
            return self._run_slices(run, chunk)
        finally:
            run.reading_deep = False

    def _note_stall(self, run: _Run) -> None:
        """Count runs that leave the high-water mark where it was while data is due; fail the third."""
        report, progress = run.report, run.state.progress
        # An operator's stop (Ctrl-C) says nothing about the feed: it neither counts nor resets.
        if report.outcome == "interrupted":
            return
        if report.pages and progress.waiting_for_permission_since is not None:
            run.state.progress = progress = replace(progress, waiting_for_permission_since=None)
        # Waiting for a service principal is its own state, not a stall.
        due = (
            report.window is not None or report.outcome == "deferred"
        ) and progress.waiting_for_permission_since is None
        moved = progress.high_water_mark != report.high_water_mark_before
        run.state.progress = progress = after_run(progress, due=due, moved=moved)
        if progress.stalled_runs >= STALL_LIMIT and report.error is None:
            mark = progress.high_water_mark
            report.fail(
                FeedStalledError(
                    f"feed {report.feed} is stalled: its high-water mark has stayed at "
                    f"{'(none yet)' if mark is None else format_datetime(mark)} for {progress.stalled_runs} runs "
                    f"while message trace was due (this run: {report.outcome}). Runs keep ending before a slice "
                    "is read to its end: check what else uses the tenant's Graph message trace quota "
                    "(100 requests per 5 minutes), the run budget (RUN_TIME_BUDGET_SECONDS), and whether "
                    "re-reading OVERLAP_LOOKBACK_MINUTES alone takes most of the quota (every run re-reads it); "
                    "the feed keeps trying, smaller slices each run"
                )
            )

    def run_backfill(
        self, start: datetime, end: datetime, lock: HeldLock | None = None, *, queued_slice: str | None = None
    ) -> RunReport:
        """Fill ``[start, end)`` from history without touching the live checkpoint (see :mod:`connector.backfill`).

        ``queued_slice`` names the document of one slice of a backfill run on Azure
        (:mod:`connector.queued`): the slice keeps its own progress there and claims
        nothing, as its job claimed the whole range when it was queued.
        """
        report = self._report(queued_slice or backfill_feed_name(start, end))
        try:
            request = BackfillRange(start, end)
            stop_before = (
                claim_backfill(self._ports.store, self._ports.claims, request)
                if queued_slice is None
                else end
            )
            run = self._start(report, report.feed, lock, keep_lookback=timedelta(0))
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

    def repair(
        self, pieces: Sequence[tuple[Window, Sequence[Missing]]], lock: HeldLock | None = None
    ) -> tuple[RunReport, list[int]]:
        """Send the rows reconcile found missing through the live feed's ledger and intent.

        The caller holds the live feed's lock. Each row gets the revision the feed would
        give it (:func:`connector.reconcile.repair_decision`), is recorded as intent before
        it is sent and committed to the live ledger once accepted, so a crash mid-repair is
        settled by the next run like any batch, and the feed's later re-reads of the range
        find the rows stored. A row the service refuses on its own is dead-lettered, as in
        a run. The live feed's high-water mark, slices and run summary are left as they are.

        Returns:
            The report (rows uploaded, batches, dead letters) and each piece's rows stored.
        """
        report = self._report(LIVE_FEED)
        stored_per_piece: list[int] = []
        try:
            stored = self._ports.store.load(LIVE_FEED)
            if stored is None:
                raise ReconcileError("the live feed has no checkpoint yet: run it once before repairing")
            state = FeedState.resume(stored.checkpoint, stored.etag)
            run = _Run(
                report=report,
                state=state,
                # Nothing here finishes a slice, so nothing is pruned whatever the lookback.
                rules=self._policy.commit_rules(self._policy.overlap_lookback),
                lock=lock,
            )
            self._mapper = RowMapper(
                self._local_domains(run),
                subjects=self._policy.subjects,
                source_tenant_id=self._policy.source_tenant_id,
            )
            if run.graph_refused is not None:
                raise run.graph_refused  # no domains to classify the rows' direction with
            self._settle_before_repair(run)
            for piece, missing in pieces:
                before = report.rows_uploaded
                self._repair_piece(run, piece, missing)
                stored_per_piece.append(report.rows_uploaded - before)
            report.outcome = "completed"
        except ConnectorError as err:
            report.fail(err)
        finally:
            report.finished = self._clock()
        stored_per_piece += [0] * (len(pieces) - len(stored_per_piece))
        return report, stored_per_piece

    def _settle_before_repair(self, run: _Run) -> None:
        """Resolve a batch the live feed left unconfirmed: a repair's intent must not replace it."""
        pending = run.state.progress.pending_batch
        if pending is None:
            return
        resolution = self._intents.resolve(pending)
        if resolution.deferred:
            raise ReconcileError(
                "the live feed's last batch is not confirmed yet (it is younger than "
                "VERIFY_INGESTION_DELAY_MINUTES): run reconcile --repair again in a few minutes",
                kind=ErrorKind.TRANSIENT,
            )
        _note_resolution(run.report, resolution)
        run.state.apply(resolution.committed(), run.rules)
        self._save(run)

    def _repair_piece(self, run: _Run, piece: Window, missing: Sequence[Missing]) -> None:
        batcher: Batcher[_Staged] = Batcher(self._policy.batch_budget_bytes)
        ready: list[Batch[_Staged]] = []
        committed = run.state.ledger.committed
        for row_missing in missing:
            graph = row_missing.graph
            decision = repair_decision(row_missing, committed.get(graph.key))
            row = self._mapper.to_row(
                graph.record,
                revision=decision.entry.revision,
                previous_status=decision.previous_status,
                key_state=key_state(graph.record.trace_id, graph.record.recipient),
            )
            try:
                full = batcher.add(row, _tuple_new(_Staged, (decision, graph.raw)))
            except RecordError as err:
                self._dead_letter(run, graph.raw, err.problem, piece)
                continue
            if full is not None:
                self._hold(run, ready, full, piece)
        last = batcher.flush()
        if last is not None:
            ready.append(last)
        self._upload(run, ready, piece)

    # ------------------------------------------------------------------ a run's steps

    def _start(
        self, report: RunReport, feed: str, lock: HeldLock | None, *, keep_lookback: timedelta
    ) -> _Run | None:
        """Load the feed and settle a batch an earlier run left unconfirmed; None: the run defers."""
        stored = self._ports.store.load(feed)
        state = FeedState.new(feed) if stored is None else FeedState.resume(stored.checkpoint, stored.etag)
        run = _Run(report=report, state=state, rules=self._policy.commit_rules(keep_lookback), lock=lock)
        self._mapper = RowMapper(
            self._local_domains(run),
            subjects=self._policy.subjects,
            source_tenant_id=self._policy.source_tenant_id,
        )
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
        _note_resolution(report, resolution)
        state.apply(resolution.committed(), run.rules)
        self._save(run)
        return run

    def _local_domains(self, run: _Run) -> tuple[str, ...]:
        """The domains this run's rows are classified with: discovered (refreshed daily) plus LOCAL_DOMAINS.

        Runs before anything is uploaded, so rows of one run share one list. A failed
        refresh never fails the run: the cached list (else LOCAL_DOMAINS) is used and the
        report says why; only no domain from any source is an error (a setting).
        """
        policy, progress = self._policy, run.state.progress
        source = self._ports.domains if policy.discover_domains else None
        cached = progress.discovered_domains if source is not None else None
        failure: str | None = None
        if source is not None and needs_refresh(cached, run.report.started):
            try:
                found = source.tenant_domains()
            except AuthenticationError as err:
                # No Graph token: message trace cannot be read either. The run fails with this
                # error where it would reach Graph (_run_window), so it is recorded and counted
                # like any failed run, without asking Entra (and waiting out its retries) again.
                run.graph_refused = err
                failure = discovery_failure(err)
            except ConnectorError as err:
                failure = discovery_failure(err)
                logger.warning(
                    "could not read the tenant's domains from Microsoft Graph (%s); using %s",
                    failure,
                    "the list read before" if cached is not None else "LOCAL_DOMAINS",
                )
            else:
                cached = DiscoveredDomains(domains=found, fetched_at=run.report.started)
                run.state.progress = replace(progress, discovered_domains=cached)
        try:
            chosen = choose_local_domains(policy.local_domains, cached, failure=failure)
        except ConfigError:
            if run.graph_refused is not None:
                return ()  # no row is mapped: the run fails with Entra's refusal first
            raise
        run.report.domains = chosen.summary
        return chosen.domains

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
        self, run: _Run, window: Window | None, *, then: Callable[[_Run], str | None] | None = None
    ) -> None:
        """Read ``window``; if that ends with the feed up to date, ``then`` may read more (its outcome wins)."""
        report = run.report
        try:
            if run.graph_refused is not None:
                raise run.graph_refused
            report.outcome = "up_to_date" if window is None else self._run_slices(run, window)
            if then is not None and report.outcome in ("up_to_date", "completed"):
                after = then(run)
                if after is not None and after != "completed":
                    report.outcome = after
        except ThrottledError as err:
            # Not a fault: the quota is shared and refills; what is committed stays committed.
            logger.warning("%s", err)
            report.outcome = "throttled"
            report.throttled = err
        except ServicePrincipalMissingError as err:
            self._wait_for_permission(run, err)
        except ConnectorError as err:
            report.fail(err)
        finally:
            run.state.ledger.discard_staged()
            report.high_water_mark_after = run.state.progress.high_water_mark
            report.ledger_entries = len(run.state.ledger)
            report.finished = self._clock()
        if not isinstance(report.error, CheckpointError):
            self._save_summary(run)

    def _wait_for_permission(self, run: _Run, err: ServicePrincipalMissingError) -> None:
        """Graph's service-principal 401: a state for a day after it is first seen, then an error.

        A service principal created minutes ago answers this 401 for hours; failing every
        tick would page someone for a wait. The first sighting is kept in the checkpoint,
        so the state says since when, and a day later the 401 fails the run (exit 3).
        """
        report, progress = run.report, run.state.progress
        since = progress.waiting_for_permission_since or report.started
        run.state.progress = replace(progress, waiting_for_permission_since=since)
        if report.started - since >= SERVICE_PRINCIPAL_WAIT:
            report.fail(PermissionWaitExpiredError(since, err.detail))
            return
        logger.warning(
            "waiting for permission since %s: %s; the next run tries again",
            format_datetime(since),
            service_principal_advice(),
        )
        report.outcome = "waiting_for_permission"

    def _run_slices(self, run: _Run, window: Window) -> str:
        cursor = window.start
        self._tell_progress(window, cursor, run)
        while True:
            if self._deadline.interrupted:
                logger.info("stopped on request at %s; the next run continues", format_datetime(cursor))
                return "interrupted"
            if self._deadline.expired():
                logger.info("run time budget used up at %s; the next run continues", format_datetime(cursor))
                return "budget_exhausted"
            current = next_slice(cursor, window.end, run.state.progress.next_slice_span)
            reading, stopped = self._run_slice(run, current)
            run.report.slices += 1
            if stopped == "interrupted":
                return "interrupted"  # not a sign the slice is too big: it is read again as it is
            if stopped is not None:
                # A page cap always splits. A budget or quota stop splits only a slice that took at least
                # half of the run's pages itself: if earlier slices used the run up, this one is not too big,
                # and shrinking it would only spend more requests on more, smaller slices.
                if stopped == "page_cap" or reading.pages * 2 >= run.report.pages > 0:
                    self._split(run, reading, stopped)
                if isinstance(stopped, ThrottledError):
                    raise stopped
                if stopped == "budget":
                    return "budget_exhausted"
                continue  # the page cap: read the same start again with the smaller span, now
            run.state.apply(
                Committed(
                    finished_slice=current,
                    slice_records=reading.records,
                    slice_pages=reading.pages,
                ),
                run.rules,
            )
            deep = run.state.progress.deep_reread
            if run.reading_deep and deep is not None:
                run.state.progress = replace(
                    run.state.progress, deep_reread=replace(deep, cursor=current.end)
                )
            logger.debug("slice %s..%s done: %d records", current.start, current.end, reading.records)
            self._tell_progress(window, current.end, run)
            if current.end >= window.end:
                return "completed"
            cursor = current.end

    def _tell_progress(self, window: Window, covered_until: datetime, run: _Run) -> None:
        self._progress_window = window
        if self._progress is not None:
            self._progress(window, covered_until, run.report.rows_uploaded)

    def _run_slice(self, run: _Run, current: Window) -> tuple[SliceReading, str | ThrottledError | None]:
        """Read one slice and store its rows; also say why it stopped early, if it did.

        Between pages the page cap and the run budget are checked, so neither a dense
        slice nor an endless nextLink chain can hold a run. Rows of the pages read are
        uploaded in every case (they are stored and in the ledger, so reading the slice
        again does not send them twice); only a slice read to its last page is finished.
        """
        batcher: Batcher[_Staged] = Batcher(self._policy.batch_budget_bytes)
        ready: list[Batch[_Staged]] = []  # full batches not sent: up to GROUP_MAX_ROWS rows share an intent
        reading = SliceReading(current)
        seen: SliceObservations[_Seen] = SliceObservations()
        stopped: str | ThrottledError | None = None
        pages = self._ports.source.pages(current)
        try:
            while True:
                try:
                    page = next(pages)
                except StopIteration:
                    break
                except ThrottledError as err:  # Graph's quota: only a throttled read stops the slice here
                    stopped = err
                    break
                run.report.pages += 1
                reading.pages += 1
                self._take(run, page.records, current, seen, reading)
                if reading.covered_from is not None:
                    self._store(run, seen.release_newer_than(reading.covered_from), batcher, ready, current)
                if not page.more:
                    break
                if reading.pages >= self._policy.max_pages_per_slice and current.span > ONE_SECOND:
                    stopped = "page_cap"
                    break
                if self._deadline.expired():
                    stopped = "interrupted" if self._deadline.interrupted else "budget"
                    break
        finally:
            pages.close()
        self._store(run, seen.release_all(), batcher, ready, current)
        run.report.duplicates_dropped += seen.superseded
        last = batcher.flush()
        if last is not None:
            ready.append(last)
        self._upload(run, ready, current)
        return reading, stopped

    def _take(
        self,
        run: _Run,
        records: Iterable[object],
        current: Window,
        seen: SliceObservations[_Seen],
        reading: SliceReading,
    ) -> None:
        """Each record of a page: dead-letter it, leave it to its own slice, or hold it as this read's observation.

        One loop per page with what it reads held in locals (this runs for every record):
        ``current.contains`` and :meth:`SliceReading.observe` are spelled out here, and the
        counts and order found are written back when the page ends, however it ends.
        """
        report = run.report
        start, end, exclude_from = current.start, current.end, run.exclude_from
        oldest, newest_first = reading.oldest_seen, reading.newest_first
        hold, state_of, parse = seen.hold, key_state, parse_trace_record
        taken = 0
        try:
            for raw in records:
                taken += 1
                try:
                    record = parse(raw)  # type: ignore[arg-type]  # anything JSON; parse checks
                except RecordError as err:
                    self._dead_letter(run, raw, err.problem, current)
                    continue
                received = record.received
                if not start <= received <= end:  # current.contains
                    self._outside(run, record.trace_id, received, current)
                    continue
                # reading.observe(received)
                if oldest is None or received < oldest:
                    oldest = received
                elif received > oldest:
                    newest_first = False
                if exclude_from is not None and received >= exclude_from:
                    report.outside_range += 1  # the live feed's: a backfill stops where live coverage starts
                    continue
                state = state_of(record.trace_id, record.recipient)  # ledger_key, and later the RowId
                hold(_tuple_new(_Seen, (state.hexdigest(), received, record.status, record, raw, state)))
        finally:
            reading.records += taken
            report.records_seen += taken
            reading.oldest_seen, reading.newest_first = oldest, newest_first

    def _store(
        self,
        run: _Run,
        released: Iterator[_Seen],
        batcher: Batcher[_Staged],
        ready: list[Batch[_Staged]],
        current: Window,
    ) -> None:
        """Decide each key the read is done with against the ledger; batch what is new.

        Full batches wait in ``ready``; once they hold :data:`GROUP_MAX_ROWS` rows they are
        sent together, and the slice's end sends what is left with its last batch.
        """
        ledger = run.state.ledger
        decide, to_row, add = ledger.decide, self._mapper.to_row, batcher.add
        for key, received, status, record, raw, state in released:
            decision = decide(key, received, status)
            if decision is None:
                run.report.duplicates_dropped += 1
                continue
            row = to_row(
                record,
                revision=decision.entry.revision,
                previous_status=decision.previous_status,
                key_state=state,
            )
            try:
                full = add(row, _tuple_new(_Staged, (decision, raw)))
            except RecordError as err:
                ledger.forget_staged(decision)
                self._dead_letter(run, raw, err.problem, current)
                continue
            if full is not None:
                self._hold(run, ready, full, current)

    def _outside(self, run: _Run, trace_id: str, received: datetime, current: Window) -> None:
        """Graph returned a record its filter excludes: counted, logged, left to the slice that holds it."""
        run.report.outside_range += 1
        run.outside_warnings += 1
        if run.outside_warnings <= MAX_OUTSIDE_WARNINGS:
            logger.warning(
                "message trace record id=%r received %s is outside the slice %s..%s Graph returned it for; "
                "not stored from this slice (the slice that holds its time stores it)%s",
                trace_id,
                format_datetime(received),
                format_datetime(current.start),
                format_datetime(current.end),
                "; further ones this run are only counted"
                if run.outside_warnings == MAX_OUTSIDE_WARNINGS
                else "",
            )

    def _split(self, run: _Run, reading: SliceReading, stopped: str | ThrottledError) -> None:
        """Shrink the span a slice that stopped unfinished is read with next; the high-water mark stays."""
        run.state.apply(
            Committed(unfinished_slice=reading.slice, covered_from=reading.covered_from), run.rules
        )
        why = {"page_cap": f"the page cap ({self._policy.max_pages_per_slice})", "budget": "the run budget"}
        logger.warning(
            "slice %s..%s stopped unfinished after %d pages (%s); it is read again %s long%s",
            format_datetime(reading.slice.start),
            format_datetime(reading.slice.end),
            reading.pages,
            why.get(str(stopped), "Graph's quota"),
            run.state.progress.next_slice_span,
            ""
            if reading.covered_from is not None or not reading.records
            else " (records not newest first: halved)",
        )

    def _dead_letter(self, run: _Run, raw: object, reason: str, current: Window) -> None:
        # SUBJECT_MODE holds for the kept record too (its name is a digest of what is kept). The reason
        # needs nothing: parse errors never quote a subject, and a refusal echoes the row as sent.
        letter = DeadLetter(
            feed=run.report.feed,
            reason=reason,
            record=self._policy.subjects.scrub_record(raw),
            window=current,
            seen_at=self._clock(),
        )
        where = self._ports.dead_letters.put_dead_letter(letter)
        run.report.dead_lettered += 1
        # The document keeps the reason as it is; the log shows it without addresses (services echo them).
        logger.warning("message trace record dead-lettered to %s: %s", where, hide_addresses(reason)[:400])

    # ------------------------------------------------------------------ uploads

    def _hold(self, run: _Run, ready: list[Batch[_Staged]], full: Batch[_Staged], current: Window) -> None:
        """Add a full batch to the group in ``ready``; send the group once it holds :data:`GROUP_MAX_ROWS` rows."""
        ready.append(full)
        if sum(map(len, ready)) >= GROUP_MAX_ROWS:
            self._upload(run, ready, current)

    def _upload(self, run: _Run, ready: list[Batch[_Staged]], current: Window) -> None:
        """Send the ``ready`` batches (emptied); a batch whose rows' content is refused is split to find them.

        The batches go under one intent and one commit (:meth:`_send`) until one is
        refused; that one is settled on its own, and the rest go on under a new intent.
        """
        batches = ready[:]
        ready.clear()
        while batches:
            sent, result = self._send(run, batches)
            batch, batches = batches[sent - 1], batches[sent:]
            if result.error is None:
                if self._progress is not None and self._progress_window is not None:
                    self._progress(self._progress_window, current.start, run.report.rows_uploaded)
                continue
            error = self._row_refusal(result, rows=len(batch))
            taken = len(batch) - len(result.failed_indexes)
            # Rows stored before this batch, the rest of its group's included: evidence the deployment takes rows.
            isolation = RowIsolation(accepted_before=run.report.rows_uploaded - taken)
            isolation.note_accepted(taken)
            self._isolate(run, batch, sorted(result.failed_indexes), error, isolation)
            if isolation.gave_up or not isolation.deployment_takes_rows:
                raise deployment_refused(
                    error, rows=len(batch), why="every row it was sent, each on its own too"
                )
            refused = [(batch.tags[position], reason) for position, reason in isolation.refused_alone]
            for staged, reason in refused:
                self._dead_letter(run, staged.raw, reason, current)
            # Held as handled: reading the slice again must not send them (and split a batch) again.
            run.state.apply(
                Committed(dead_lettered=tuple(staged.decision for staged, _ in refused)), run.rules
            )
            self._save(run)

    @staticmethod
    def _row_refusal(result: UploadResult, *, rows: int) -> SinkError:
        """The error of a refused upload if it is about the rows' content; otherwise it stops the run."""
        assert result.error is not None  # noqa: S101 - only called for a refused upload
        refusal = classify_refusal(result.error)
        if refusal is Refusal.NOT_ROWS or not isinstance(result.error, SinkError):
            raise result.error
        if refusal is Refusal.DEPLOYMENT:
            raise deployment_refused(result.error, rows=rows, why="a column or type of the rows")
        return result.error

    def _isolate(
        self, run: _Run, batch: Batch[_Staged], refused: list[int], error: SinkError, isolation: RowIsolation
    ) -> None:
        """Resend the refused rows of ``batch`` in halves, halving what is refused again, until each stands alone."""
        to_send: list[list[int]] = []

        def split(positions: list[int], refusal: SinkError) -> None:
            if len(positions) == 1:
                isolation.note_refused_alone(positions[0], refusal)
                return
            middle = (len(positions) + 1) // 2
            to_send.extend([positions[middle:], positions[:middle]])  # the first half goes first

        split(refused, error)
        while to_send and not isolation.gave_up:
            positions = to_send.pop()
            _, result = self._send(run, [batch.select(positions)])
            isolation.note_accepted(len(positions) - len(result.failed_indexes))
            if result.error is not None:
                split(
                    [positions[index] for index in sorted(result.failed_indexes)],
                    self._row_refusal(result, rows=len(positions)),
                )

    def _send(self, run: _Run, batches: Sequence[Batch[_Staged]]) -> tuple[int, UploadResult]:
        """Requests under one intent: the intent saved, the batches uploaded in turn, what was accepted committed.

        Stops after the first batch the service refuses (any rows of it); returns how many
        batches were sent and the last one's result. One intent lists every row of every
        batch: if the process dies after the service took any of them but before the commit
        is saved, the next run finds the intent and resolves it (each row is either found
        stored or sent again), exactly as for one batch. So a group costs two checkpoint
        appends, not two per batch.
        """
        if run.lock is not None:
            run.lock.check()
        decisions = [staged.decision for batch in batches for staged in batch.tags]
        rows = batches[0].rows if len(batches) == 1 else [row for batch in batches for row in batch.rows]
        run.state.progress = replace(
            run.state.progress, pending_batch=intent_for(decisions, rows, self._clock())
        )
        self._save(run)
        accepted: list[Decision] = []
        sent = 0
        result = UploadResult()
        for batch in batches:
            if sent and run.lock is not None:
                # A holder that lost its lease stops sending: the next holder settles this intent.
                run.lock.check()
            result = self._ports.sink.upload(batch.payload())
            sent += 1
            run.report.batches += 1
            failed = result.failed_indexes
            accepted += (
                [staged.decision for index, staged in enumerate(batch.tags) if index not in failed]
                if failed
                else [staged.decision for staged in batch.tags]
            )
            if result.error is not None:
                break  # the batches after it go under an intent of their own, once this one is settled
        # The outcome is known either way: the refused rows are simply not committed.
        run.state.apply(Committed(accepted=tuple(accepted)), run.rules)
        run.report.rows_uploaded += len(accepted)
        run.report.revisions += sum([decision.entry.revision > 0 for decision in accepted])
        self._save(run)
        return sent, result

    def _save(self, run: _Run) -> None:
        state = run.state
        state.progress = replace(state.progress, updated=self._clock())
        state.saved(self._ports.store.save(state.checkpoint(), state.etag, state.unsaved))
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
        self._note_stall(run)
        run.state.progress = replace(run.state.progress, last_run=last_run_summary(report))
        try:
            self._save(run)
        except ConnectorError as err:
            if report.error is None:
                report.fail(err)
            else:
                logger.warning("could not record the run summary in the checkpoint: %s", err)
