"""Backfill rules: which part of a requested past range a backfill may load without duplicates.

A backfill of ``[start, end)`` keeps its own progress (``backfill/<start>_<end>``)
and never moves the live feed's. Rows from the live feed's coverage start on are
the live feed's, so a backfill stops there; a range that overlaps another
backfill is refused; re-running the same range resumes it from its own
high-water mark. Following dlt's rule for a bounded load: the request, not stored
state, says what to load.

Two backfills started at the same moment must not both pass the overlap check, so a
backfill *claims* its range before any other work (:func:`claim_backfill`): under one
shared, short-held lock it checks the other ranges and creates its own document
(only if it does not exist). The second claimant waits for the lock, then sees the
first one's document and is refused, naming it.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from connector.checkpoint import BACKFILL_PREFIX, LIVE_FEED, backfill_feed_name
from connector.errors import BackfillError
from connector.mapping import format_datetime
from connector.ports import CheckpointStore, HeldLock, RunLock
from connector.state import Checkpoint, FeedProgress, QueuePlan
from connector.windows import Window, floor_second, retention_floor

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackfillRange:
    """A requested range ``[start, end)``; refused at once if it is empty or reversed."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise BackfillError(
                f"backfill end {self.end.isoformat()} must be after its start {self.start.isoformat()}"
            )

    @property
    def feed(self) -> str:
        """The name of this backfill's own progress document."""
        return backfill_feed_name(self.start, self.end)


CLAIMS_LOCK = "backfill-claims"
"""The lock (``locks/backfill-claims.lock``) a backfill holds while it claims its range."""
CLAIM_WAIT_SECONDS = 30.0
"""How long a claim waits for another one (a claim takes a few storage calls; a killed claimant's
lease expires within the lease time, at most 60 s, so a claim waiting longer than this exits 5)."""


def claim_backfill(
    store: CheckpointStore,
    claims: RunLock | None,
    request: BackfillRange,
    *,
    queued: timedelta | None = None,
) -> datetime:
    """Claim ``request``'s range before any work; return where the backfill must stop.

    Under the claims lock: the live feed's start and the other backfills' ranges are
    checked (:func:`backfill_stop`) and this backfill's document is created with its
    range, so any claim after this one sees it. Without a claims lock (in-memory
    tests) the same steps run unguarded.

    ``queued`` (a slice span) claims it for a backfill run on Azure as queued slices: its
    document then holds the plan, and its rows are stored by its slices' own documents. A
    range is run one way only: locally, or queued with one slice span, because two ways
    would keep two progress records over the same rows (each would store them).

    Raises:
        BackfillError: no live checkpoint yet, the range overlaps another backfill, or it
            was started the other way (or queued with another slice span).
        RunLockedError: another claim held the lock for longer than ``CLAIM_WAIT_SECONDS``.
    """
    guard: AbstractContextManager[HeldLock | None] = (
        nullcontext() if claims is None else claims.hold(CLAIMS_LOCK, wait_seconds=CLAIM_WAIT_SECONDS)
    )
    with guard:
        stop = backfill_stop(store, request)
        stored = store.load(request.feed)
        if stored is None:
            plan = None if queued is None else QueuePlan(slice_span=queued, stop=stop)
            progress = FeedProgress(
                feed=request.feed, range_start=request.start, range_end=request.end, queue_plan=plan
            )
            store.save(Checkpoint(progress=progress, ledger={}), None)
            return stop
        plan = stored.checkpoint.progress.queue_plan
        if queued is None and plan is not None:
            raise BackfillError(
                f"{request.feed} runs on Azure as queued slices: re-run it with --on-azure "
                "(a local run beside its slices would store their rows twice)"
            )
        if queued is not None and plan is None:
            progress = stored.checkpoint.progress
            if progress.high_water_mark is not None or stored.checkpoint.ledger or progress.pending_batch:
                raise BackfillError(
                    f"{request.feed} was started locally and has stored rows: resume it without --on-azure "
                    "(queued slices beside it would store its rows twice)"
                )
            progress = replace(progress, queue_plan=QueuePlan(slice_span=queued, stop=stop))
            store.save(Checkpoint(progress=progress, ledger={}), stored.etag)
            return stop
        if queued is not None and plan is not None and plan.slice_span != queued:
            raise BackfillError(
                f"{request.feed} is queued in slices of {_hours(plan.slice_span)} h: re-run it with "
                f"--slice-hours {_hours(plan.slice_span)} (other slices would overlap the stored ones)"
            )
        return stop if plan is None else plan.stop


def _hours(span: timedelta) -> str:
    return f"{span / timedelta(hours=1):g}"


def backfill_stop(store: CheckpointStore, request: BackfillRange) -> datetime:
    """Where the backfill must stop: its end, or the live feed's coverage start if earlier.

    Raises:
        BackfillError: there is no live checkpoint yet, or the range overlaps another backfill.
    """
    live = store.load(LIVE_FEED)
    live_start = None if live is None else live.checkpoint.progress.coverage_start
    if live_start is None:
        raise BackfillError(
            "no live checkpoint yet: run the connector once (`python -m connector run`) so the backfill "
            "knows where the live feed starts and can stop there without duplicates"
        )
    _refuse_overlaps(store, request)
    if live_start < request.end:
        logger.info(
            "backfill end moved to the live feed's start %s (rows from then on are already stored)",
            format_datetime(live_start),
        )
    return min(request.end, live_start)


def _refuse_overlaps(store: CheckpointStore, request: BackfillRange) -> None:
    for other in store.list_feeds(BACKFILL_PREFIX):
        if other == request.feed or other.startswith(f"{request.feed}/"):
            continue  # itself, or one of its own queued slices
        stored = store.load(other)
        if stored is None:
            continue
        other_start, other_end = stored.checkpoint.progress.range_start, stored.checkpoint.progress.range_end
        if other_start is None or other_end is None:
            continue
        if request.start < other_end and other_start < request.end:
            raise BackfillError(
                f"backfill [{format_datetime(request.start)}, {format_datetime(request.end)}) overlaps the "
                f"earlier backfill [{format_datetime(other_start)}, {format_datetime(other_end)}) ({other}); "
                "rows in the overlap would be stored twice. Re-run that backfill's exact range to resume it, "
                "or pick a range that does not overlap."
            )


class NothingToBackfill(Exception):  # noqa: N818 - an outcome, not a failure
    """The requested range holds nothing a backfill could add; the message says why (exit 0)."""


def precheck_backfill(
    store: CheckpointStore, request: BackfillRange, *, now: datetime, settle_delay: timedelta
) -> datetime:
    """Read-only checks before the backfill takes any lock or calls Graph; return where it stops.

    A refusal here costs no lock, no claim document and no network call beyond reading
    the store. It is not the guard against a race: :func:`claim_backfill` checks the
    overlap again, atomically, under the claims lock.

    Raises:
        BackfillError: no live checkpoint yet, an overlap with another backfill, or a
            range wholly older than Graph's 90-day retention.
        NothingToBackfill: the range lies in the future or inside the live feed.
    """
    floor = retention_floor(now)
    span = f"[{format_datetime(request.start)}, {format_datetime(request.end)})"
    if request.end <= floor:
        raise BackfillError(
            f"backfill {span} is wholly older than Graph's 90-day message trace retention (nothing before "
            f"{format_datetime(floor)} can be fetched any more): pick a range that ends after that"
        )
    stop = backfill_stop(store, request)
    if request.start >= floor_second(now - settle_delay):
        raise NothingToBackfill(
            f"backfill {span}: nothing to do, the range has not been published yet (message trace is readable "
            f"up to {format_datetime(floor_second(now - settle_delay))}); the live feed will store it"
        )
    if request.start >= stop:
        raise NothingToBackfill(
            f"backfill {span}: nothing to do, the live feed stores everything from {format_datetime(stop)} on "
            "(a backfill stops where the live feed starts)"
        )
    return stop


def check_forgettable(checkpoint: Checkpoint) -> None:
    """Refuse to forget a backfill record unless its backfill stored nothing.

    A record whose backfill stored rows (finished or not) is what refuses an
    overlapping backfill; without it the overlap's rows would be stored twice.

    Raises:
        BackfillError: the feed is not a backfill, or its backfill stored rows.
    """
    progress = checkpoint.progress
    if progress.range_start is None:
        raise BackfillError(f"{progress.feed} is not a backfill; only a backfill's record can be forgotten")
    if progress.high_water_mark is not None or checkpoint.ledger or progress.pending_batch is not None:
        raise BackfillError(
            f"{progress.feed} has stored rows (or finished): its record stays, it keeps an overlapping "
            "backfill from storing them twice; re-run its exact range to resume it"
        )


def resume_window(planned: Window | None, high_water_mark: datetime | None) -> Window | None:
    """The part of the planned window a re-run still has to read (after its own high-water mark)."""
    if planned is None or high_water_mark is None:
        return planned
    if high_water_mark >= planned.end:
        return None
    return Window(max(planned.start, high_water_mark), planned.end)
