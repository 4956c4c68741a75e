"""``python -m connector reconcile``: compare Graph with the table for a range, and repair gaps.

The wiring of :mod:`connector.reconcile` (the pure comparison) to Graph, the workspace
query and the live feed's lock and checkpoint. Reading and comparing takes no lock and
writes nothing. ``--repair`` then takes the live feed's lock, waits until everything the
feed sent has had time to become queryable (the ingestion latency, as intent verification
does), reads the hours with missing rows from the table again, and sends only what is
still missing through :meth:`connector.sync.FeedSync.repair`.

Every Graph request is paid from the tenant's quota budget as a backfill's are
(:class:`~connector.quota.Caller` ``OTHER``), so the live feed keeps its reserve however
long the range; before the first Graph request the command says how many it will spend.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from connector.checkpoint import BACKFILL_PREFIX, LIVE_FEED
from connector.errors import ArgumentError, ConfigError, ReconcileError, RecordError, ThrottledError
from connector.graph import GraphMessageTraceSource
from connector.ledger import ledger_key
from connector.mapping import format_datetime, parse_trace_record
from connector.ports import Clock, Deadline
from connector.precedence import SliceObservations
from connector.quota import Caller, QuotaBudget
from connector.reconcile import (
    GraphFinal,
    Missing,
    NothingToReconcile,
    PieceResult,
    ReconcilePlan,
    Totals,
    compare_piece,
    confirm_piece,
    estimate_requests,
    never_loaded,
    plan_reconcile,
    still_missing,
    unfinished_backfills,
)
from connector.report import RunReport
from connector.runner import (
    build_connector,
    build_graph_source,
    build_lock,
    build_query_client,
    build_store,
    load_settings,
    shared_table_tenant,
    utc_now,
)
from connector.schema import load_table_schema
from connector.settings import Settings
from connector.state import Checkpoint
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.windows import Window
from connector.workspace import TableReader

logger = logging.getLogger(__name__)

RECONCILE_TIME_BUDGET = timedelta(hours=24)
"""How long the comparison may run: a 90-day range is ~2,200 hours, each at least one Graph request."""

__all__ = ["Announcement", "NothingToReconcile", "Reconciliation", "reconcile"]


@dataclass(frozen=True, slots=True)
class Announcement:
    """What reconcile tells before its first Graph request: the range and what it will cost."""

    plan: ReconcilePlan
    graph_requests: int
    requests_per_window: int
    """The tenant's quota share of commands and backfills per 5 minutes (the live reserve excluded)."""
    table_rows: int

    @property
    def minutes_at_least(self) -> int:
        """How long the requests take at the full share (longer while the live feed or a backfill reads)."""
        return math.ceil(self.graph_requests * 5 / self.requests_per_window)

    def text(self) -> str:
        """One line for the operator."""
        window = self.plan.window
        hours = len(self.plan.pieces)
        return (
            f"reconcile {format_datetime(window.start)}..{format_datetime(window.end)}: {hours} hour"
            f"{'s' if hours != 1 else ''}, {self.table_rows:,} rows in the table; about {self.graph_requests:,} "
            f"Graph requests from the tenant's quota ({self.requests_per_window} per 5 minutes for commands and "
            f"backfills, the live feed keeps its reserve): about {self.minutes_at_least} min of quota or more"
        )


@dataclass(slots=True)
class Reconciliation:
    """What a reconcile did: its plan, each piece's comparison, and the repair's report."""

    plan: ReconcilePlan
    announcement: Announcement
    results: list[PieceResult] = field(default_factory=list)
    graph_requests: int = 0
    outcome: str = "completed"
    """``completed``, ``interrupted`` (Ctrl-C or the time budget) or ``throttled`` (Graph's quota)."""
    stopped_at: datetime | None = None
    """Where the comparison stopped early (the rest of the range was not compared)."""
    repair: RunReport | None = None
    never_loaded: list[Window] = field(default_factory=list)
    """Parts of the range no feed loaded (a backfill fills them; ``--repair`` refuses them)."""
    unfinished_backfills: list[str] = field(default_factory=list)
    """Backfills still writing the range (its rows may be missing for now; ``--repair`` refuses it)."""

    @property
    def totals(self) -> Totals:
        """The range's counts."""
        return Totals.of(self.results)

    def fields(self) -> dict[str, object]:
        """JSON-ready: the range, totals and each hour with a difference."""
        window = self.plan.window
        return {
            "start": format_datetime(window.start),
            "end": format_datetime(window.end),
            "notes": list(self.plan.notes),
            "unfinishedBackfills": self.unfinished_backfills,
            "neverLoaded": [
                {"start": format_datetime(gap.start), "end": format_datetime(gap.end)}
                for gap in self.never_loaded
            ],
            "outcome": self.outcome,
            "stoppedAt": None if self.stopped_at is None else format_datetime(self.stopped_at),
            "graphRequestsEstimated": self.announcement.graph_requests,
            "graphRequests": self.graph_requests,
            "totals": self.totals.fields(),
            "hours": [
                result.fields() for result in self.results if not result.clean or result.unknown_to_graph
            ],
            "repair": None
            if self.repair is None
            else {
                "outcome": self.repair.outcome,
                "rowsUploaded": self.repair.rows_uploaded,
                "deadLettered": self.repair.dead_lettered,
                "error": None if self.repair.error is None else str(self.repair.error),
            },
        }


def reconcile(
    start: datetime,
    end: datetime,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    repair: bool = False,
    max_requests: int | None = None,
    clock: Clock = utc_now,
    announce: Callable[[Announcement], None] | None = None,
    progress: Callable[[PieceResult], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Reconciliation:
    """Compare ``[start, end)`` of Graph with the table, hour by hour; with ``repair``, send what is missing.

    Raises:
        ArgumentError: ``start`` not before ``end``, a bad ``--tenant``, or an estimate above
            ``max_requests`` (before any Graph request).
        ConfigError: a bad setting, or ``WORKSPACE_ID`` unset (before any network call).
        ReconcileError: ``repair`` of a range an unfinished backfill still writes, or no feed loaded.
        NothingToReconcile: nothing of the range can be compared yet (exit 0; the message says why).
        ConnectorError: a service failed, as for a run (its kind is the exit code).
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        raise ArgumentError(
            f"--start ({format_datetime(start)}) must be before --end ({format_datetime(end)})"
        )
    if max_requests is not None and max_requests < 1:
        raise ArgumentError("--max-requests: must be at least 1")
    settings = load_settings(env, tenant)
    if settings.workspace_id is None:
        raise ConfigError(
            [
                (
                    "WORKSPACE_ID",
                    "reconcile reads what the table holds through the workspace query: set it to the "
                    "workspace's id (a GUID) and give the identity Log Analytics Reader on EmailEvents_CL",
                )
            ]
        )
    store = build_store(settings)
    checkpoints = _checkpoints(store)
    live = next((c for c in checkpoints if c.progress.feed == LIVE_FEED), None)
    now = clock()
    plan = plan_reconcile(
        start,
        end,
        now=now,
        settle_delay=settings.settle_delay,
        live_high_water_mark=None if live is None else live.progress.high_water_mark,
    )
    unloaded = never_loaded(checkpoints, plan.window)
    if repair and unloaded:
        spans = ", ".join(f"{format_datetime(gap.start)}..{format_datetime(gap.end)}" for gap in unloaded[:3])
        raise ReconcileError(
            f"--repair: {spans} {'was' if len(unloaded) == 1 else 'were'} never loaded by the live feed or a "
            "backfill, so a backfill could store a repaired row again later: run `backfill` for that range "
            "instead, or reconcile --repair a range the feed has loaded"
        )
    busy = unfinished_backfills(checkpoints, plan.window)
    if repair and busy:
        raise ReconcileError(
            f"backfill {', '.join(busy)} overlaps {format_datetime(plan.window.start)}.."
            f"{format_datetime(plan.window.end)} and has not finished: a row repaired now would be stored "
            "again by it. Let it finish (`status` shows it), or reconcile a range outside it"
        )
    with ExitStack() as resources:
        deadline = Deadline(RECONCILE_TIME_BUDGET, stop_requested=stop_requested)
        reader = TableReader(
            build_query_client(settings, deadline, resources),
            workspace_id=settings.workspace_id,
            table=load_table_schema().table,
            source_tenant_id=shared_table_tenant(settings),
            clock=clock,
        )
        per_hour = reader.rows_per_hour(plan.window)
        announcement = Announcement(
            plan=plan,
            graph_requests=estimate_requests(plan.pieces, per_hour),
            requests_per_window=settings.graph_quota.cap(Caller.OTHER, QuotaBudget(), 0.0),
            table_rows=sum(per_hour.values()),
        )
        if max_requests is not None and announcement.graph_requests > max_requests:
            raise ArgumentError(
                f"--max-requests {max_requests}: reconciling {len(plan.pieces)} hours takes about "
                f"{announcement.graph_requests} Graph requests; narrow the range or raise the cap"
            )
        if announce is not None:
            announce(announcement)
        outcome = Reconciliation(
            plan=plan, announcement=announcement, never_loaded=unloaded, unfinished_backfills=busy
        )
        source = build_graph_source(settings, store, deadline, resources, caller=Caller.OTHER, sleep=sleep)
        unconfirmed = _compare(outcome, source, reader, deadline, progress, clock=clock)
        _confirm(outcome, unconfirmed, reader, store, settings.verify_delay, clock=clock, sleep=sleep)
        if repair and outcome.outcome != "interrupted" and any(r.missing for r in outcome.results):
            outcome.repair = _repair(settings, outcome.results, reader, clock=clock, sleep=sleep)
    totals = outcome.totals
    logger.info(
        "reconcile %s..%s: %s",
        format_datetime(plan.window.start),
        format_datetime(plan.window.end),
        ", ".join(f"{name}={value}" for name, value in totals.fields().items()),
        extra={"connector_reconcile": {"outcome": outcome.outcome, **totals.fields()}},
    )
    return outcome


def _checkpoints(store: BlobCheckpointStore | FileCheckpointStore) -> list[Checkpoint]:
    """The live checkpoint and every backfill record (what decides which part of a range is settled)."""
    found: list[Checkpoint] = []
    for feed in [LIVE_FEED, *store.list_feeds(BACKFILL_PREFIX)]:
        stored = store.load(feed)
        if stored is not None:
            found.append(stored.checkpoint)
    return found


class _Unconfirmed(NamedTuple):
    """A piece with missing rows: Graph's observations and when the table was read (to read it again)."""

    position: int
    finals: list[GraphFinal]
    read_at: datetime


def _compare(
    outcome: Reconciliation,
    source: GraphMessageTraceSource,
    reader: TableReader,
    deadline: Deadline,
    progress: Callable[[PieceResult], None] | None,
    *,
    clock: Clock,
) -> list[_Unconfirmed]:
    """Compare each piece in turn, until the range ends, the operator stops it, or Graph's quota does.

    Returns the pieces with missing rows, to confirm once what the feed sent is queryable.
    """
    unconfirmed: list[_Unconfirmed] = []
    for piece in outcome.plan.pieces:
        if deadline.expired():
            outcome.outcome, outcome.stopped_at = "interrupted", piece.start
            break
        # The table before Graph: a row the feed stores in between then looks missing (and is cleared
        # by the second read) rather than the table looking newer than Graph's answer.
        read_at = clock()
        rows = reader.piece_rows(piece)
        asked_at = clock()
        try:
            finals, unreadable, pages = _read_graph(source, piece)
        except ThrottledError as err:
            logger.warning("%s", err)
            outcome.outcome, outcome.stopped_at = "throttled", piece.start
            break
        outcome.graph_requests += pages
        result = compare_piece(piece, finals, rows, unreadable=unreadable)
        result.graph_read_at = asked_at
        if result.missing:
            unconfirmed.append(_Unconfirmed(len(outcome.results), finals, read_at))
        outcome.results.append(result)
        if progress is not None:
            progress(result)
    return unconfirmed


def _confirm(
    outcome: Reconciliation,
    unconfirmed: Sequence[_Unconfirmed],
    reader: TableReader,
    store: BlobCheckpointStore | FileCheckpointStore,
    delay: timedelta,
    *,
    clock: Clock,
    sleep: Callable[[float], None],
) -> None:
    """Read the pieces with missing rows again once rows the live feed sent before the first read are queryable.

    A row the feed stored moments before its hour was read is not queryable yet (the
    ingestion latency, ``VERIFY_INGESTION_DELAY_MINUTES``): without this it would be
    reported missing, and a proof of completeness must not cry wolf. Nothing to wait for
    when the feed has not saved since ``delay`` before the first read.
    """
    if not unconfirmed:
        return
    stored = store.load(LIVE_FEED)
    updated = None if stored is None else stored.checkpoint.progress.updated
    if updated is None or updated < unconfirmed[0].read_at - delay:
        return
    # Everything sent before Graph answered the last such piece is queryable after this wait.
    last = outcome.results[unconfirmed[-1].position].graph_read_at or unconfirmed[-1].read_at
    wait = (last + delay - clock()).total_seconds()
    if wait > 0:
        logger.info(
            "waiting %.0f s for rows the live feed just sent to become queryable, then reading again", wait
        )
        sleep(wait)
    for piece in unconfirmed:
        earlier = outcome.results[piece.position]
        outcome.results[piece.position] = confirm_piece(
            earlier, piece.finals, reader.piece_rows(earlier.piece)
        )


def _read_graph(source: GraphMessageTraceSource, piece: Window) -> tuple[list[GraphFinal], int, int]:
    """Graph's final observation of each key received in ``piece``, the unreadable records, and the pages read.

    Graph's filter is closed at both ends to the second; a record at the piece's end
    belongs to the next piece, so only ``[start, end)`` is kept.
    """
    seen: SliceObservations[GraphFinal] = SliceObservations()
    unreadable = pages_read = 0
    pages = source.pages(piece)
    try:
        for page in pages:
            pages_read += 1
            for raw in page.records:
                try:
                    record = parse_trace_record(raw)
                except RecordError:
                    unreadable += 1
                    continue
                if piece.start <= record.received < piece.end:
                    key = ledger_key(record.trace_id, record.recipient)
                    seen.hold(GraphFinal(key, record.received, record.status, record, raw))
    finally:
        pages.close()
    return list(seen.release_all()), unreadable, pages_read


def _repair(
    settings: Settings,
    results: Sequence[PieceResult],
    reader: TableReader,
    *,
    clock: Clock,
    sleep: Callable[[float], None],
) -> RunReport:
    """Under the live feed's lock: wait out the ingestion latency, read the table again, send what is still missing."""
    with ExitStack() as resources:
        store = build_store(settings)
        # A live run may be under way: wait for it (it ends within its budget) rather than fail.
        wait = settings.run_time_budget.total_seconds() + settings.lock_lease_seconds
        with build_lock(store, settings).hold(LIVE_FEED, wait_seconds=wait) as held:
            _wait_for_latency(store, settings.verify_delay, clock=clock, sleep=sleep)
            # Built after the waits, so the repair's time budget (RUN_TIME_BUDGET_SECONDS) starts now.
            connector = build_connector(settings, resources, clock=clock, sleep=sleep, caller=Caller.OTHER)
            pieces: list[tuple[Window, list[Missing]]] = []
            with_missing = [result for result in results if result.missing]
            for result in with_missing:
                pieces.append((result.piece, still_missing(result, reader.piece_rows(result.piece))))
            report, stored = connector.sync.repair(pieces, lock=held)
        for result, count in zip(with_missing, stored, strict=True):
            result.repaired = count
    return report


def _wait_for_latency(
    store: BlobCheckpointStore | FileCheckpointStore,
    delay: timedelta,
    *,
    clock: Clock,
    sleep: Callable[[float], None],
) -> None:
    """Sleep until the live feed's last save is ``delay`` old: what it sent is queryable by then."""
    stored = store.load(LIVE_FEED)
    updated = None if stored is None else stored.checkpoint.progress.updated
    if updated is None:
        return
    wait = (delay - (clock() - updated)).total_seconds()
    if wait > 0:
        logger.info(
            "waiting %.0f s (VERIFY_INGESTION_DELAY_MINUTES) for the live feed's last rows to become queryable",
            wait,
        )
        sleep(wait)
