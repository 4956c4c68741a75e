"""Time windows to query: lookback, settle delay, 90-day clamp, slices. Pure: no I/O.

Graph's ``$filter=receivedDateTime ge {start} and receivedDateTime le {end}`` is
closed on both ends and takes whole seconds, so every bound here is a whole
second and consecutive slices share their boundary second; the dedup ledger makes
the record that sits exactly on a boundary land once.

A live run reads ``[high-water mark - short lookback, now - settle delay]`` (the
*main window*); the settle delay keeps ``end`` safely before Graph's "now". Records
Microsoft publishes late and status changes inside the overlap are caught by the
*deep re-read*: a pass over an older span of receive times, read a chunk per run
after the main window (:func:`plan_deep_pass`, :func:`deep_chunk`). With the short
lookback equal to the overlap there is no deep re-read: every run reads the whole
overlap, as before the tiers.

Why nothing is missed. Notation: O the overlap (``OVERLAP_LOOKBACK_MINUTES``), L
the short lookback, S the settle delay, H_t the high-water mark when the run at
time t starts (H only grows, and H_t <= t' - S for the run t' before t, since no
window ends after its run's now - S). A record received at r becomes visible at
v <= r + O (a status change: the key "becomes visible" again, with its new status,
at the change c <= r + O; the argument is the same with v = c). Pass j is created
at the start of the run at s_j, with the range ``[a_j, b_j]``: b_j = H_{s_j} - L,
a_j = b_{j-1} - O (a_1 = H_{s_1} - O), never before the coverage start; it is read
in chunks at runs >= s_j, and pass j+1 is created by the first run after pass j
is read to its end. Let t be the first run at or after v.

1. If H_t <= r + L: the main window of run t starts at H_t - L <= r, and its
   slices are read in order from there at times >= t >= v. If the run stops before
   r, no slice past r was finished, so H stays <= r and the next run starts its
   window before r again; H cannot pass r before a slice holding r, read after v,
   is finished. Caught.
2. Otherwise r < H_t - L. Let j be the first pass created at a run s_j >= t. Its
   reads happen at >= s_j >= v. b_j = H_{s_j} - L >= H_t - L > r. Pass j-1 was
   created at a run s_{j-1} < t, so s_{j-1} < v (t is the first run at or after v),
   and a_j = H_{s_{j-1}} - L - O <= s_{j-1} - S - L - O < v - O <= r. So
   a_j <= r <= b_j: pass j reads r after it became visible. Caught.

For j = 1 (no pass before: a new feed, or a checkpoint written before the tiers,
whose runs read the whole overlap every time), a_1 = H_{s_1} - O <= t_p - S - O
for the last run t_p before s_1, and every record visible before t_p was in t_p's
own window (the old guarantee), so records visible after t_p have r >= t_p - O.

A pass needs no clock: it is paced by the high-water mark (:func:`deep_chunk`), so
it spans about FULL_REREAD_MINUTES (F) of feed progress, and a record published
later than L + S after it was received (or a status change) is stored within about
2F of being visible (the next pass starts within F, and reaches it within F).
The dedup ledger must hold every entry a later read can reach: the oldest is
min(cursor, b_j - O) (:func:`deep_floor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

RETENTION = timedelta(days=90)
# Start a little inside the 90 days, so a request sent later in the run (or to a server
# whose clock runs ahead) is not refused for asking past the retention.
RETENTION_MARGIN = timedelta(minutes=15)
MAX_GRAPH_WINDOW = timedelta(days=10)
MIN_SLICE = timedelta(minutes=5)
ONE_SECOND = timedelta(seconds=1)
INITIAL_SLICE = timedelta(hours=1)


def floor_second(value: datetime) -> datetime:
    """Drop sub-second precision (Graph's filter takes whole seconds)."""
    return value.replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class Window:
    """A closed interval ``[start, end]`` of receive times, in whole seconds."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before its start {self.start}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")

    @property
    def span(self) -> timedelta:
        """Length of the window."""
        return self.end - self.start

    def contains(self, moment: datetime) -> bool:
        """True if ``moment`` falls inside the closed window."""
        return self.start <= moment <= self.end


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """The window a run will read, and what the retention clamp cut off (if anything)."""

    window: Window | None
    requested_start: datetime
    retention_floor: datetime
    unrecoverable: timedelta

    @property
    def clamped(self) -> bool:
        """True when history that was never fetched is older than Graph keeps."""
        return self.unrecoverable > timedelta(0)


def retention_floor(now: datetime) -> datetime:
    """Oldest receive time the connector asks Graph for."""
    return floor_second(now - RETENTION + RETENTION_MARGIN)


def plan_live_window(
    *,
    high_water_mark: datetime | None,
    now: datetime,
    overlap_lookback: timedelta,
    settle_delay: timedelta,
    initial_lookback: timedelta,
    coverage_start: datetime | None = None,
) -> WindowPlan:
    """Plan a live run: from the high-water mark minus the lookback up to now minus the settle delay.

    A first run (no high-water mark) starts ``initial_lookback`` before now, or where
    an interrupted first run started (``coverage_start``), so the feed's coverage has
    no hole between its recorded start and its first committed slice. A later run
    re-reads the overlap, but never from before the coverage start: what lies before
    it belongs to backfills, which stop there. The start is clamped to the retention
    floor; ``unrecoverable`` measures history that was never fetched and now never can
    be (the overlap part was fetched before, so clamping it loses nothing).

    """
    end = floor_second(now - settle_delay)
    floor = retention_floor(now)
    if high_water_mark is None:
        requested = floor_second(coverage_start or now - initial_lookback)
        never_fetched_from = requested
    else:
        requested = floor_second(high_water_mark - overlap_lookback)
        if coverage_start is not None:
            # Before its coverage start the rows are a backfill's: re-reading them would store them twice.
            requested = max(requested, coverage_start)
        never_fetched_from = high_water_mark
    start = max(requested, floor)
    unrecoverable = max(timedelta(0), floor - never_fetched_from)
    window = Window(start, end) if start < end else None
    return WindowPlan(
        window=window, requested_start=requested, retention_floor=floor, unrecoverable=unrecoverable
    )


@dataclass(frozen=True, slots=True)
class DeepPass:
    """The deep re-read in progress: ``[cursor, end]`` is what is left of its range.

    Kept in the live checkpoint; ``end`` is fixed when the pass is created
    (the high-water mark then, minus the short lookback), ``cursor`` moves as each
    slice of it is finished. The next pass starts at ``end - overlap``.
    """

    cursor: datetime
    end: datetime

    @property
    def done(self) -> bool:
        """True once the pass is read to its end."""
        return self.cursor >= self.end


def plan_deep_pass(
    *,
    current: DeepPass | None,
    high_water_mark: datetime | None,
    overlap_lookback: timedelta,
    short_lookback: timedelta,
    now: datetime,
    coverage_start: datetime | None = None,
) -> DeepPass | None:
    """The pass a live run works on, decided when the run starts (before its main window).

    None while the feed has no high-water mark (its first run reads from the coverage
    start anyway) or when the short lookback is the whole overlap (no tiers). An
    unfinished pass goes on; a finished one (or none: a new feed, or a checkpoint
    written before the tiers, which is read as "a full re-read is due") is followed
    by a new one from ``end - overlap`` (``H - overlap`` with none before) to
    ``H - short lookback``. It never starts before ``coverage_start``: what lies
    before it belongs to backfills, nor before the retention floor (a pass left
    behind by a long stop skips what Graph no longer keeps, instead of never ending).
    """
    if high_water_mark is None or short_lookback >= overlap_lookback:
        return None
    floor = retention_floor(now)
    if current is not None:
        current = DeepPass(cursor=max(current.cursor, floor), end=current.end)
        if not current.done:
            return current
    start = high_water_mark - overlap_lookback if current is None else current.end - overlap_lookback
    if coverage_start is not None:
        start = max(start, coverage_start)
    return DeepPass(
        cursor=max(floor_second(start), floor), end=floor_second(high_water_mark - short_lookback)
    )


def deep_chunk(
    deep: DeepPass,
    *,
    high_water_mark: datetime,
    overlap_lookback: timedelta,
    short_lookback: timedelta,
    full_reread: timedelta,
) -> Window | None:
    """The part of ``deep`` this run reads after its main window, or None.

    Paced by the feed, not a clock: the pass is due in full once the high-water mark
    is ``full_reread`` past where it was when the pass was created (``end + short
    lookback``), and before that the part left may be at most ``k`` times the
    progress still to come, ``k = (full_reread + overlap) / full_reread`` (a pass
    spans about that much more than the feed moves meanwhile). A run whose main window
    did not move the feed therefore reads none of it. A chunk shorter than five
    minutes waits (one request for a few seconds of records is poor use of the quota),
    except the last one of the pass.
    """
    if deep.done:
        return None
    still_to_come = max(timedelta(0), deep.end + short_lookback + full_reread - high_water_mark)
    allowed_left = still_to_come * ((full_reread + overlap_lookback) / full_reread)
    target = min(deep.end, floor_second(deep.end - allowed_left))
    start = deep.cursor
    if target <= start or (target < deep.end and target - start < MIN_SLICE):
        return None
    return Window(start, target)


def deep_floor(deep: DeepPass | None, *, overlap_lookback: timedelta) -> datetime | None:
    """The oldest receive time a later read may reach through the deep re-read (the ledger keeps from here)."""
    if deep is None:
        return None
    return min(deep.cursor, deep.end - overlap_lookback)


def plan_backfill_window(
    *, start: datetime, end: datetime, now: datetime, settle_delay: timedelta
) -> WindowPlan:
    """Plan a backfill of ``[start, end)``: clamp to retention and to now minus the settle delay."""
    floor = retention_floor(now)
    requested = floor_second(start)
    capped_end = min(_ceil_second(end), floor_second(now - settle_delay))
    clamped_start = max(requested, floor)
    unrecoverable = max(timedelta(0), min(floor, capped_end) - requested)
    window = Window(clamped_start, capped_end) if clamped_start < capped_end else None
    return WindowPlan(
        window=window, requested_start=requested, retention_floor=floor, unrecoverable=unrecoverable
    )


def _ceil_second(value: datetime) -> datetime:
    floored = floor_second(value)
    return floored if floored == value else floored + timedelta(seconds=1)


def next_slice(cursor: datetime, end: datetime, span: timedelta) -> Window:
    """The slice starting at ``cursor``: ``span`` long (at most 10 days), cut at ``end``."""
    width = max(timedelta(seconds=1), min(span, MAX_GRAPH_WINDOW))
    return Window(cursor, min(floor_second(cursor + width), end))


PAGE_RECORDS = 5000
"""Records in a full Graph page (``$top=5000``, the most Graph gives)."""
PAGE_AIM_SLACK = 0.25
"""A slice aims this many pages under its whole number of pages, so a little more traffic than the
last slice had does not spill into one almost empty extra page."""


def adapt_slice_span(
    span: timedelta,
    records_in_slice: int,
    *,
    target_records: int,
    maximum: timedelta,
    pages_in_slice: int = 0,
    page_cap: int | None = None,
) -> timedelta:
    """Size the next slice from how full the last one was, aiming at whole 5,000-record pages.

    Every request counts against the tenant's 100-per-5-minutes quota, and only the last
    page of a slice is partial, so a catch-up gets the most records per request from
    slices of several full pages. The next span is scaled by how far the last slice's
    records were from the aim: ``target_records`` rounded down to whole pages (at most
    half the page cap), less ``PAGE_AIM_SLACK`` of a page. One step at most doubles or
    halves (density changes, bounded memory and ledger); a slice over half the page cap
    halves, and one of pages smaller than 5,000 grows to half the cap at most, so the next
    stays under the cap.
    Halving stops at five minutes; a span already below that (a split slice, see
    :func:`split_slice_span`) may halve down to one second and grows back by doubling.
    """
    pages_aim = max(1, target_records // PAGE_RECORDS)
    if page_cap is not None:
        pages_aim = min(pages_aim, max(1, page_cap // 2))
    aim = (pages_aim - PAGE_AIM_SLACK) * PAGE_RECORDS if target_records >= PAGE_RECORDS else target_records
    factor = 2.0 if records_in_slice <= 0 else min(2.0, max(0.5, aim / records_in_slice))
    # Pages of 5,000 make the records-based aim exact; smaller pages (a server that caps $top lower)
    # are sized by their count, so the next slice grows to half the page cap at most.
    full_pages = pages_in_slice <= math.ceil(records_in_slice / PAGE_RECORDS)
    if page_cap is not None and pages_in_slice * 2 > page_cap:
        factor = min(factor, 0.5)
    elif page_cap is not None and pages_in_slice > 0 and not full_pages:
        factor = min(factor, page_cap / 2 / pages_in_slice)
    proposed = span * factor
    upper = min(maximum, MAX_GRAPH_WINDOW)
    lower = MIN_SLICE if span >= MIN_SLICE else ONE_SECOND
    return max(lower, min(upper, floor_timedelta(proposed)))


def split_slice_span(unfinished: Window, covered_from: datetime | None) -> timedelta:
    """The span to read a slice with again after it stopped unfinished (page cap, budget, quota).

    The high-water mark moves only past a slice read to its end, so a slice that needs
    more pages than one run can read must get smaller or the feed never moves. Halving
    always works, whatever order Graph returns records in. When every page was newest
    first (``covered_from`` set: the pages read hold everything after that time), the
    density is known: the part read took all those pages, so half of it takes half as
    many, and the slice shrinks to that at once instead of halving run after run.
    """
    read = unfinished.span if covered_from is None else min(unfinished.span, unfinished.end - covered_from)
    return max(ONE_SECOND, floor_timedelta(read / 2))


@dataclass(slots=True)
class SliceReading:
    """How far the reading of one slice got, and what the order of its records shows.

    Graph documents no order for message trace results (it returns newest first
    today). The order is checked on every record of every page: while it holds,
    ``covered_from`` says which part of the slice the pages read so far hold in full;
    once one record breaks it, nothing is assumed (None). It only ever sizes a split
    (:func:`split_slice_span`), never what is committed.
    """

    slice: Window
    pages: int = 0
    records: int = 0
    newest_first: bool = True
    oldest_seen: datetime | None = None

    def observe(self, received: datetime) -> None:
        """Note the receive time of the next record of the slice, in the order Graph sent it."""
        if self.oldest_seen is not None and received > self.oldest_seen:
            self.newest_first = False
        if self.oldest_seen is None or received < self.oldest_seen:
            self.oldest_seen = received

    @property
    def covered_from(self) -> datetime | None:
        """With newest-first order held so far: the time after which the slice is read in full."""
        return self.oldest_seen if self.newest_first else None


def floor_timedelta(value: timedelta) -> timedelta:
    """Whole seconds only."""
    return timedelta(seconds=int(value.total_seconds()))
