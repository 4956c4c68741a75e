"""Reconcile: prove the table holds what Graph holds, hour by hour, and say what to repair. Pure.

After an outage, a lost lease or a doubt, a SOC needs more than "the feed says it is up to
date": ``python -m connector reconcile --start --end`` reads Graph's message trace for a
range again and compares it with what ``EmailEvents_CL`` holds, through the workspace query
the connector already uses for verification, one clock hour at a time (an hour of a large
tenant stays well under Log Analytics' query limits of 500,000 rows and 64 MB).

What is compared, per (trace id, case-insensitive recipient):

* **Graph's final status**: one read of the hour gives each key one status, by the feed's
  own precedence (:mod:`connector.precedence`), so reconcile judges a key exactly as a run
  would have stored it.
* **The table's newest status**: the row of the key with the highest ``StatusRevision``
  (revisions are the feed's record of a status changing between reads).

A key Graph holds whose newest row in the table is absent, or carries another status, is
**missing**: the row that says what Graph says now was never stored (a gap) or a later
status was not (stale). Rows with the same identity (trace id, recipient, status, revision:
the ``RowId``) more than once are **duplicated**: Log Analytics cannot delete them, so they
are reported (the ``MessageTrace`` parser drops them at query time), never "repaired". Keys
in the table that Graph no longer lists are counted as **unknown to Graph** (report only).
Records Graph returns that the feed would dead-letter (:func:`connector.mapping.parse_trace_record`
refuses them) are counted as **unreadable**, not as missing.

``--repair`` sends exactly the missing rows, through the live feed's ledger and intent
(:meth:`connector.sync.FeedSync.repair`), holding the live feed's lock: the revision of each
row is the one the feed itself would give it (:func:`repair_decision`), from the ledger
where it still holds the key and otherwise from the table ("ranges older than the ledger are
compared on what the table holds"), so a repaired row is indistinguishable from one the
feed stored, and the feed's later re-reads see it as stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from connector.checkpoint import slice_feed_name
from connector.ledger import Decision, LedgerEntry, epoch_ms, ledger_key
from connector.mapping import TraceRecord, format_datetime, normalise_status
from connector.precedence import supersedes
from connector.queued import job_slices
from connector.report import backfill_finished, live_start
from connector.state import Checkpoint
from connector.windows import PAGE_RECORDS, Window, floor_second, retention_floor

HOUR = timedelta(hours=1)
MAX_MISSING_SHOWN = 20
"""Missing rows listed per hour in the JSON report (the counts are always complete)."""


class NothingToReconcile(Exception):  # noqa: N818 - an outcome, not a failure
    """The range holds nothing reconcile could compare; the message says why (exit 0)."""


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """The range reconcile compares, cut into clock hours, and why it differs from the one asked for."""

    requested: Window
    window: Window
    pieces: tuple[Window, ...]
    notes: tuple[str, ...] = ()


def floor_hour(moment: datetime) -> datetime:
    """The clock hour ``moment`` falls in (UTC)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_pieces(window: Window) -> tuple[Window, ...]:
    """``[start, end)`` cut at clock hours: the first and last piece may be shorter than an hour."""
    pieces: list[Window] = []
    cursor = window.start
    while cursor < window.end:
        stop = min(floor_hour(cursor) + HOUR, window.end)
        pieces.append(Window(cursor, stop))
        cursor = stop
    return tuple(pieces)


def plan_reconcile(
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    settle_delay: timedelta,
    live_high_water_mark: datetime | None,
) -> ReconcilePlan:
    """The part of ``[start, end)`` that can be compared now, in hour pieces.

    Graph keeps 90 days (older is gone from both sides' reach), publishes late (the settle
    delay), and the live feed has read only up to its high-water mark: rows after it are
    not due in the table yet, so they would all look missing.

    Raises:
        ValueError: ``start`` is not before ``end`` (an argument error).
        NothingToReconcile: nothing of the range is both in Graph's reach and read by the feed.
    """
    if start >= end:
        raise ValueError(f"--start ({format_datetime(start)}) must be before --end ({format_datetime(end)})")
    requested = Window(start, end)
    if live_high_water_mark is None:
        raise NothingToReconcile(
            "nothing to reconcile: the live feed has stored nothing yet (no high-water mark); run it first, "
            "reconcile compares "
            "what it stored with Graph"
        )
    floor = retention_floor(now)
    published = floor_second(now - settle_delay)
    stop = min(end, published, live_high_water_mark)
    begin = max(start, floor)
    notes: list[str] = []
    if begin > start:
        notes.append(
            f"start moved to {format_datetime(begin)}: Graph keeps message trace for 90 days, nothing older "
            "can be compared"
        )
    if stop < end:
        if stop == live_high_water_mark:
            notes.append(
                f"end moved to {format_datetime(stop)}, the live feed's high-water mark: rows after it are "
                "not due in the table yet"
            )
        else:
            notes.append(f"end moved to {format_datetime(stop)}: Graph has not published the rest yet")
    if begin >= stop:
        raise NothingToReconcile(
            f"nothing to reconcile in [{format_datetime(start)}, {format_datetime(end)}): "
            + ("; ".join(notes) if notes else "the range is empty")
        )
    window = Window(begin, stop)
    return ReconcilePlan(requested=requested, window=window, pieces=hour_pieces(window), notes=tuple(notes))


def unfinished_backfills(checkpoints: Sequence[Checkpoint], window: Window) -> list[str]:
    """Backfills (local, or queued on Azure with their slices) that overlap ``window`` and have not finished.

    Such a backfill still sends rows of the range: a row reconcile repaired would be sent
    again by it (a backfill's ledger holds only what it read), so the range must wait.
    """
    start = live_start(checkpoints)
    by_feed = {checkpoint.progress.feed: checkpoint for checkpoint in checkpoints}
    busy: list[str] = []
    for checkpoint in checkpoints:
        progress = checkpoint.progress
        if progress.range_start is None or progress.range_end is None:
            continue  # the live feed
        if progress.feed.count("/") == 2:
            continue  # a queued slice: judged with its job below
        if not (progress.range_start < window.end and window.start < progress.range_end):
            continue
        plan = progress.queue_plan
        if plan is None:
            if not backfill_finished(checkpoint, start):
                busy.append(progress.feed)
            continue
        for piece in job_slices(progress):
            if not (piece.start < window.end and window.start < piece.end):
                continue
            document = by_feed.get(slice_feed_name(progress.feed, piece.start, piece.end))
            if document is None or not backfill_finished(document, start):
                busy.append(progress.feed)
                break
    return busy


def never_loaded(checkpoints: Sequence[Checkpoint], window: Window) -> list[Window]:
    """The parts of ``window`` neither the live feed (from its coverage start) nor any backfill's claim covers.

    Reconcile reports them (every row there is missing), but ``--repair`` must not fill
    them: no feed's record claims them, so a backfill run over them later would store
    the repaired rows again. A backfill is the tool for a range never loaded.
    """
    claimed: list[Window] = []
    for checkpoint in checkpoints:
        progress = checkpoint.progress
        if progress.range_start is None:
            if progress.coverage_start is not None:
                claimed.append(Window(progress.coverage_start, max(window.end, progress.coverage_start)))
        elif progress.range_end is not None and progress.feed.count("/") < 2:
            claimed.append(Window(progress.range_start, progress.range_end))
    gaps: list[Window] = []
    cursor = window.start
    for covered in sorted(claimed, key=lambda w: w.start):
        if covered.start > cursor:
            gaps.append(Window(cursor, min(covered.start, window.end)))
        cursor = max(cursor, covered.end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        gaps.append(Window(cursor, window.end))
    return [gap for gap in gaps if gap.start < gap.end]


def estimate_requests(pieces: Sequence[Window], rows_by_hour: Mapping[datetime, int]) -> int:
    """Graph requests reading ``pieces`` takes: one per piece, more where an hour fills pages.

    ``rows_by_hour`` is what the table holds per clock hour (its start); Graph holds at
    least as many, so an hour with gaps may take a page more than said.
    """
    total = 0
    for piece in pieces:
        hour = floor_hour(piece.start)
        share = (piece.end - piece.start) / HOUR
        rows = rows_by_hour.get(hour, 0) * share
        total += max(1, math.ceil(rows / PAGE_RECORDS))
    return total


class TableRow(NamedTuple):
    """Rows of the table with one identity (trace id, recipient, status, revision) and how many there are."""

    trace_id: str
    recipient: str
    status: str
    revision: int
    copies: int
    ingested: datetime | None = None
    """When the newest of them arrived in the workspace (``ingestion_time()``); None when not known."""


class GraphFinal(NamedTuple):
    """A key's observation in Graph's answer for one piece (what :mod:`connector.precedence` holds)."""

    key: str
    received: datetime
    status: str
    record: TraceRecord
    raw: object


@dataclass(frozen=True, slots=True)
class Missing:
    """A row the table lacks: Graph's final observation of a key, and what the table holds of that key."""

    graph: GraphFinal
    table_status: str | None
    """The status of the key's newest row in the table; None when the table holds no row of it."""
    table_revision: int | None
    """The highest ``StatusRevision`` of the key in the table; None when it holds none."""

    @property
    def stale(self) -> bool:
        """The table holds the key, but its newest row says another status than Graph does now."""
        return self.table_status is not None

    def fields(self) -> dict[str, object]:
        """JSON-ready, without the subject or any other field of the record but its identity."""
        record = self.graph.record
        return {
            "messageTraceId": record.trace_id,
            "recipient": record.recipient,
            "received": format_datetime(record.received),
            "graphStatus": self.graph.status,
            "tableStatus": self.table_status,
        }


@dataclass(slots=True)
class PieceResult:
    """The comparison of one piece (an hour, or less at the range's edges)."""

    piece: Window
    graph_keys: int = 0
    table_rows: int = 0
    missing: list[Missing] = field(default_factory=list)
    duplicated_rows: int = 0
    """Copies beyond the first of a row identity (can never be deleted; reported)."""
    unknown_to_graph: int = 0
    unreadable: int = 0
    """Records Graph returned that the feed would dead-letter (not comparable)."""
    repaired: int = 0
    repair_skipped: int = 0
    """Missing rows the table gained, or whose key changed, between the comparison and the repair."""
    graph_read_at: datetime | None = None
    """When Graph's answer for the piece was asked for (rows that arrived after it may be newer than it)."""

    @property
    def stale(self) -> int:
        """Missing rows whose key the table holds with an older status."""
        return sum(1 for missing in self.missing if missing.stale)

    @property
    def clean(self) -> bool:
        """Nothing missing and nothing duplicated."""
        return not self.missing and not self.duplicated_rows

    def fields(self) -> dict[str, object]:
        """JSON-ready counts, and the first missing rows' identities."""
        return {
            "start": format_datetime(self.piece.start),
            "end": format_datetime(self.piece.end),
            "graphRows": self.graph_keys,
            "tableRows": self.table_rows,
            "missing": len(self.missing),
            "stale": self.stale,
            "duplicated": self.duplicated_rows,
            "unknownToGraph": self.unknown_to_graph,
            "unreadable": self.unreadable,
            "repaired": self.repaired,
            "repairSkipped": self.repair_skipped,
            "missingRows": [missing.fields() for missing in self.missing[:MAX_MISSING_SHOWN]],
        }


class _KeyView(NamedTuple):
    newest_status: str
    newest_revision: int
    ingested: datetime | None


def _newest(rows: Iterable[TableRow]) -> dict[str, _KeyView]:
    """Each key's newest row: the highest revision; between equal revisions, the more advanced status."""
    newest: dict[str, _KeyView] = {}
    for row in rows:
        key = ledger_key(row.trace_id, row.recipient)
        status = normalise_status(row.status)
        held = newest.get(key)
        if (
            held is None
            or row.revision > held.newest_revision
            or (row.revision == held.newest_revision and supersedes(status, held.newest_status))
        ):
            newest[key] = _KeyView(status, row.revision, row.ingested)
    return newest


def compare_piece(
    piece: Window, finals: Iterable[GraphFinal], rows: Sequence[TableRow], *, unreadable: int = 0
) -> PieceResult:
    """Compare Graph's final observations of ``piece`` with the table's rows of it."""
    result = PieceResult(piece=piece, unreadable=unreadable)
    identities: dict[tuple[str, str, int], int] = {}
    for row in rows:
        identity = (ledger_key(row.trace_id, row.recipient), normalise_status(row.status), row.revision)
        identities[identity] = identities.get(identity, 0) + row.copies
        result.table_rows += row.copies
    result.duplicated_rows = sum(copies - 1 for copies in identities.values() if copies > 1)
    newest = _newest(rows)
    graph_keys: set[str] = set()
    for final in finals:
        graph_keys.add(final.key)
        held = newest.get(final.key)
        if held is None:
            result.missing.append(Missing(final, None, None))
        elif held.newest_status != final.status:
            result.missing.append(Missing(final, held.newest_status, held.newest_revision))
    result.graph_keys = len(graph_keys)
    result.unknown_to_graph = sum(1 for key in newest if key not in graph_keys)
    result.missing.sort(key=lambda missing: (missing.graph.received, missing.graph.key))
    return result


INGESTION_CLOCK_MARGIN = timedelta(minutes=1)
"""How much earlier than Graph's answer a row's arrival must be to be judged against it (clocks differ)."""


def _judged(result: PieceResult, fresh_rows: Sequence[TableRow], finals: Iterable[GraphFinal]) -> PieceResult:
    """``result``'s piece compared again on ``fresh_rows``, leaving out keys the feed wrote after Graph answered.

    A key whose newest row arrived after Graph's answer was asked for (less a margin for
    clocks) may hold a status newer than that answer: the feed read Graph after this
    comparison did. It is neither missing nor stale by this comparison, so it is left to
    the feed, which re-reads recent hours anyway.
    """
    fresh = compare_piece(result.piece, finals, fresh_rows, unreadable=result.unreadable)
    fresh.graph_read_at = result.graph_read_at
    if result.graph_read_at is not None:
        cutoff = result.graph_read_at - INGESTION_CLOCK_MARGIN
        newest = _newest(fresh_rows)

        def written_since(key: str) -> bool:
            held = newest.get(key)
            return held is not None and held.ingested is not None and held.ingested >= cutoff

        fresh.missing = [missing for missing in fresh.missing if not written_since(missing.graph.key)]
    return fresh


def confirm_piece(
    result: PieceResult, finals: Iterable[GraphFinal], fresh_rows: Sequence[TableRow]
) -> PieceResult:
    """``result`` read again once what the feed sent before Graph's answer is queryable.

    The first read may have missed rows the feed sent moments before (the ingestion
    latency); this one sees them, so a key is judged on what the table held when Graph
    answered. Keys written after that are left out (see :func:`_judged`).
    """
    return _judged(result, fresh_rows, finals)


def still_missing(result: PieceResult, fresh_rows: Sequence[TableRow]) -> list[Missing]:
    """The missing rows of ``result`` the table still lacks, read again under the live feed's lock.

    After the ingestion latency: a row the feed stored in between is no longer missing,
    and a key the feed wrote after Graph's answer is left to it (see :func:`_judged`).
    Only keys ``result`` reported are returned (with what the table holds of them now);
    each one not returned is counted in ``result.repair_skipped``.
    """
    reported = {missing.graph.key for missing in result.missing}
    fresh = _judged(result, fresh_rows, (missing.graph for missing in result.missing))
    left = [missing for missing in fresh.missing if missing.graph.key in reported]
    result.repair_skipped += len(result.missing) - len(left)
    return left


def repair_decision(missing: Missing, entry: LedgerEntry | None) -> Decision:
    """The ledger decision of a repaired row: the revision the feed would give it.

    * The ledger holds the key in Graph's status at a revision the table lacks: the row
      the feed stored was lost; it is sent again as it was (same revision, same ``RowId``).
    * Otherwise the row is the next revision after everything the ledger and the table
      know of the key (0 for a key neither holds), superseding the table's newest status.
    """
    graph = missing.graph
    table_revision = -1 if missing.table_revision is None else missing.table_revision
    if entry is not None and entry.status == graph.status and entry.revision > table_revision:
        revision = entry.revision
    else:
        revision = max(table_revision, -1 if entry is None else entry.revision) + 1
    previous = missing.table_status
    if previous is None and entry is not None and entry.status != graph.status:
        previous = entry.status
    received_ms = epoch_ms(graph.received) if entry is None else entry.received_ms
    return Decision(
        key=graph.key,
        entry=LedgerEntry(received_ms=received_ms, status=graph.status, revision=revision),
        previous_status=previous,
    )


@dataclass(slots=True)
class Totals:
    """The whole range's counts."""

    pieces: int = 0
    graph_keys: int = 0
    table_rows: int = 0
    missing: int = 0
    stale: int = 0
    duplicated: int = 0
    unknown_to_graph: int = 0
    unreadable: int = 0
    repaired: int = 0
    repair_skipped: int = 0

    @classmethod
    def of(cls, results: Iterable[PieceResult]) -> Totals:
        """Sum the pieces' counts."""
        totals = cls()
        for result in results:
            totals.pieces += 1
            totals.graph_keys += result.graph_keys
            totals.table_rows += result.table_rows
            totals.missing += len(result.missing)
            totals.stale += result.stale
            totals.duplicated += result.duplicated_rows
            totals.unknown_to_graph += result.unknown_to_graph
            totals.unreadable += result.unreadable
            totals.repaired += result.repaired
            totals.repair_skipped += result.repair_skipped
        return totals

    @property
    def missing_left(self) -> int:
        """Missing rows neither repaired nor found stored (or superseded) by the feed before the repair."""
        return self.missing - self.repaired - self.repair_skipped

    def fields(self) -> dict[str, int]:
        """JSON-ready."""
        return {
            "hours": self.pieces,
            "graphRows": self.graph_keys,
            "tableRows": self.table_rows,
            "missing": self.missing,
            "stale": self.stale,
            "duplicated": self.duplicated,
            "unknownToGraph": self.unknown_to_graph,
            "unreadable": self.unreadable,
            "repaired": self.repaired,
            "repairSkipped": self.repair_skipped,
            "missingLeft": self.missing_left,
        }


def render_piece(result: PieceResult) -> str:
    """One line for an hour with a difference (a clean hour is only counted)."""
    parts = [f"graph {result.graph_keys:,}", f"table {result.table_rows:,}"]
    if result.missing:
        stale = f" ({result.stale} stale)" if result.stale else ""
        parts.append(f"missing {len(result.missing):,}{stale}")
    if result.duplicated_rows:
        parts.append(f"duplicated {result.duplicated_rows:,}")
    if result.unknown_to_graph:
        parts.append(f"unknown to Graph {result.unknown_to_graph:,}")
    if result.unreadable:
        parts.append(f"unreadable {result.unreadable:,}")
    if result.repaired or result.repair_skipped:
        parts.append(f"repaired {result.repaired:,}")
    if result.repair_skipped:
        parts.append(f"left to the feed {result.repair_skipped:,}")
    start, end = result.piece.start, result.piece.end
    label = f"{format_datetime(start)[:16]}Z..{format_datetime(end)[11:16]}"
    return f"  {label}  " + "  ".join(parts)
