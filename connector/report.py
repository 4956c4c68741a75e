"""What a run did, in one model, and the one way it is shown. Pure.

:class:`RunCounters` declares every counter once, with its label. A
:class:`RunReport` is the counters plus the run's context (feed, outcome, window,
high-water mark, error). Every view comes from :func:`report_fields`, one flat
mapping: the structured log line, the last-run summary the checkpoint keeps (a
subset, :data:`LAST_RUN_FIELDS`), and the text :func:`render_fields` prints for
``run``, ``backfill`` and ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from connector.errors import ConnectorError
from connector.mapping import format_datetime, parse_datetime
from connector.ports import LockState
from connector.redact import hide_addresses, scrub
from connector.state import Checkpoint, FeedProgress
from connector.windows import Window

_LABEL_WIDTH = 17
STATUS_LABEL_WIDTH = _LABEL_WIDTH
"""The width of the labels of `status` lines (a queued job's lines line up with them)."""


def _counter(label: str, *, quiet: bool = False) -> Any:
    """A counter field: its label in text output; ``quiet`` ones are shown only when non-zero."""
    return field(default=0, metadata={"label": label, "quiet": quiet})


@dataclass(slots=True, kw_only=True)
class RunCounters:
    """Every count a run keeps, in display order."""

    slices: int = _counter("slices")
    pages: int = _counter("pages")
    records_seen: int = _counter("records read")
    rows_uploaded: int = _counter("rows uploaded")
    revisions: int = _counter("status revisions")
    batches: int = _counter("batches")
    duplicates_dropped: int = _counter("duplicates")
    outside_range: int = _counter("outside range")
    dead_lettered: int = _counter("dead-lettered")
    intent_rows_found: int = _counter("unconfirmed found", quiet=True)
    intent_rows_resent: int = _counter("unconfirmed sent", quiet=True)
    possible_duplicates: int = _counter("possible dups", quiet=True)
    checkpoint_saves: int = _counter("checkpoint saves")


COUNTER_FIELDS = tuple(fields(RunCounters))


@dataclass(slots=True, kw_only=True)
class RunReport(RunCounters):
    """What one run did: its counters and where the feed stood before and after."""

    feed: str
    started: datetime
    outcome: str = "running"
    finished: datetime | None = None
    window: Window | None = None
    high_water_mark_before: datetime | None = None
    high_water_mark_after: datetime | None = None
    ledger_entries: int = 0
    unrecoverable: timedelta = timedelta(0)
    lookback: str | None = None
    """Which live tier ran: ``short`` (main window), ``short+deep`` (and a deep re-read chunk), ``overlap`` (no tiers)."""
    deep_window: Window | None = None
    """The deep re-read chunk this run read, if any."""
    domains: str | None = None
    """Where this run's local domains came from (:func:`connector.tenant_domains.choose_local_domains`)."""
    error: ConnectorError | None = field(default=None, repr=False)
    throttled: ConnectorError | None = field(default=None, repr=False)
    """The throttling that ended the run early (outcome ``throttled``): Graph's or Logs Ingestion's."""
    health_row: str | None = None
    """Whether the run's ``MessageTraceHealth_CL`` row was sent: ``sent``, ``failed``, ``skipped``, ``off``."""
    tenant: str | None = None
    """The name of the ``TENANTS`` entry the run read; None for a single-tenant deployment."""
    source_tenant_id: str = ""
    """The directory id of the tenant the run read (the health row's ``SourceTenantId``)."""

    @property
    def ok(self) -> bool:
        """True unless the run stopped on an error."""
        return self.error is None

    def fail(self, error: ConnectorError) -> None:
        """Record the error the run stops with."""
        self.outcome = "failed"
        self.error = error


LAST_RUN_FIELDS = (
    "started",
    "finished",
    "outcome",
    "rows_uploaded",
    "revisions",
    "duplicates_dropped",
    "batches",
    "error",
    "dead_lettered",
    "possible_duplicates",
)
"""The fields the checkpoint keeps of the last run: exactly those every version has written and read."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_datetime(value)


def report_fields(report: RunReport) -> dict[str, object]:
    """The report as one flat, JSON-ready mapping (no secrets, no subjects)."""
    return {
        "tenant": report.tenant,
        "feed": report.feed,
        "outcome": report.outcome,
        "started": _time(report.started),
        "finished": _time(report.finished),
        "window_start": None if report.window is None else _time(report.window.start),
        "window_end": None if report.window is None else _time(report.window.end),
        "high_water_mark_before": _time(report.high_water_mark_before),
        "high_water_mark": _time(report.high_water_mark_after),
        **{counter.name: getattr(report, counter.name) for counter in COUNTER_FIELDS},
        "lookback": report.lookback,
        "deep_window_start": None if report.deep_window is None else _time(report.deep_window.start),
        "deep_window_end": None if report.deep_window is None else _time(report.deep_window.end),
        "ledger_entries": report.ledger_entries,
        "unrecoverable_hours": round(report.unrecoverable.total_seconds() / 3600, 2),
        "domains": report.domains,
        # Scrubbed once more here: this text is logged and kept in the checkpoint's last run.
        "error": None if report.error is None else hide_addresses(scrub(str(report.error))),
        "health_row": report.health_row,
    }


MAX_STORED_ERROR_CHARS = 500
"""The last run's error as the checkpoint keeps it: what failed and what to do, not every service word."""


def last_run_summary(report: RunReport) -> dict[str, object]:
    """The part of the report the checkpoint keeps as its last run."""
    every = report_fields(report)
    summary = {name: every[name] for name in LAST_RUN_FIELDS}
    error = summary.get("error")
    if isinstance(error, str) and len(error) > MAX_STORED_ERROR_CHARS:
        # The checkpoint is rewritten after every batch: it keeps the gist; the log has the whole text.
        summary["error"] = error[: MAX_STORED_ERROR_CHARS - 1] + "…"
    return summary


def health_row(report: RunReport, now: datetime) -> dict[str, object]:
    """The run's one ``MessageTraceHealth_CL`` row, from the same fields the log and the checkpoint get.

    Nothing is counted twice: every value comes from :func:`report_fields` (the error
    scrubbed and its addresses hidden, cut like the checkpoint's last run), so the
    table says what ``status`` and the run's log line say. Unset values are left out
    (the table shows them empty). ``now`` is the run's end when the report has none.
    """
    every = report_fields(report)
    ended = report.finished or now
    mark = report.high_water_mark_after
    error = last_run_summary(report)["error"]
    row: dict[str, object | None] = {
        "TimeGenerated": format_datetime(ended),
        "Feed": report.feed,
        "Outcome": report.outcome,
        "RunStarted": every["started"],
        "WindowStart": every["window_start"],
        "WindowEnd": every["window_end"],
        "HighWaterMarkBefore": every["high_water_mark_before"],
        "HighWaterMark": every["high_water_mark"],
        "LagMinutes": None if mark is None else round((ended - mark).total_seconds() / 60, 1),
        "RowsStored": report.rows_uploaded,
        "Revisions": report.revisions,
        "DeadLettered": report.dead_lettered,
        "PossibleDuplicates": report.possible_duplicates,
        "Pages": report.pages,
        "Error": error,
        "ErrorKind": None if report.error is None else report.error.kind.name.lower(),
        "SourceTenantId": report.source_tenant_id or None,
    }
    return {name: value for name, value in row.items() if value is not None}


def log_line(values: Mapping[str, object]) -> str:
    """``key=value`` pairs for one structured log line (unset values left out)."""
    return " ".join(f"{key}={value}" for key, value in values.items() if value is not None)


def _lag(high_water_mark: object, now: datetime) -> str:
    if not isinstance(high_water_mark, str):
        return "-"
    return str(now - parse_datetime(high_water_mark)).split(".")[0]


def render_fields(values: Mapping[str, object], now: datetime) -> list[str]:
    """Text lines for whichever report fields ``values`` holds (a whole report or a last-run summary)."""
    lines: list[str] = []

    def line(label: str, text: object) -> None:
        lines.append(f"{label:<{_LABEL_WIDTH}} {text}")

    def shown(name: str) -> str:
        value = values.get(name)
        return "-" if value is None else str(value)

    if "feed" in values:
        line("feed", values["feed"])
    if "started" in values and "window_start" not in values:
        line("run", f"{shown('started')} .. {shown('finished')}")
    line("outcome", shown("outcome"))
    if "window_start" in values:
        line(
            "window",
            "-" if values["window_start"] is None else f"{shown('window_start')} .. {shown('window_end')}",
        )
    if "high_water_mark" in values:
        line("high-water mark", f"{shown('high_water_mark_before')} -> {shown('high_water_mark')}")
        line("lag", _lag(values["high_water_mark"], now))
    for counter in COUNTER_FIELDS:
        value = values.get(counter.name)
        if value is not None and (value or not counter.metadata["quiet"]):
            line(counter.metadata["label"], value)
    if "ledger_entries" in values:
        line("ledger entries", values["ledger_entries"])
    hours = values.get("unrecoverable_hours")
    if isinstance(hours, int | float) and hours > 0:
        line("NOT FETCHABLE", f"{hours} h of history was older than the 90-day retention")
    if values.get("domains"):
        line("local domains", values["domains"])
    if values.get("error"):
        line("error", values["error"])
    if values.get("health_row") == "failed":
        line("health row", "not written (see the warning above); the run itself is unaffected")
    return lines


def backfill_finished(checkpoint: Checkpoint, live_start: datetime | None) -> bool:
    """A backfill that has stored its whole range (up to the live feed's start, where it stops)."""
    progress = checkpoint.progress
    mark, end = progress.high_water_mark, progress.range_end
    if progress.range_start is None or end is None or mark is None or progress.pending_batch is not None:
        return False
    return mark >= (end if live_start is None else min(end, live_start))


def live_start(checkpoints: Iterable[Checkpoint]) -> datetime | None:
    """The live feed's coverage start, where backfills stop (None before its first run)."""
    for checkpoint in checkpoints:
        if checkpoint.progress.range_start is None:  # the live feed (a backfill has a range)
            return checkpoint.progress.coverage_start
    return None


def shown_feeds(checkpoints: Iterable[Checkpoint], *, show_all: bool) -> tuple[list[Checkpoint], int]:
    """The feeds ``status`` shows, and how many finished backfills it hides (unless ``show_all``).

    A finished backfill's record stays (it refuses an overlapping re-run) but has
    nothing left to tell an operator day to day.
    """
    every = list(checkpoints)
    start = live_start(every)
    shown = [c for c in every if show_all or not backfill_finished(c, start)]
    return shown, len(every) - len(shown)


def lock_fields(lock: LockState | None) -> dict[str, object] | None:
    """Who holds a feed's lock, JSON-ready; None when it is free (or was not read)."""
    if lock is None or not lock.held:
        return None
    return {"holder": lock.holder, "since": _time(lock.since), "renewed": _time(lock.renewed)}


def _lock_text(lock: LockState, now: datetime) -> str:
    since = "-" if lock.since is None else f"{_time(lock.since)} ({str(now - lock.since).split('.')[0]} ago)"
    text = f"held by {lock.holder or 'an unrecorded holder'} since {since}"
    if lock.renewed is not None:
        text += f", renewed {_time(lock.renewed)}"
    return text


def status_fields(
    checkpoint: Checkpoint, now: datetime, lock: LockState | None = None, *, finished: bool = False
) -> dict[str, object]:
    """One feed's stored progress, JSON-ready (``status --json``)."""
    progress = checkpoint.progress
    mark = progress.high_water_mark
    return {
        "feed": progress.feed,
        "lock": lock_fields(lock),
        "finished": finished,
        "high_water_mark": _time(mark) or "-",
        "lag_seconds": None if mark is None else int((now - mark).total_seconds()),
        "coverage_start": _time(progress.coverage_start) or "-",
        "ledger_entries": len(checkpoint.ledger),
        "possible_duplicates_total": progress.possible_duplicates_total,
        "stalled_runs": progress.stalled_runs,
        "waiting_for_permission_since": _time(progress.waiting_for_permission_since),
        "unconfirmed_batch_rows": 0
        if progress.pending_batch is None
        else len(progress.pending_batch.entries),
        "last_run": None if progress.last_run is None else dict(progress.last_run),
        "discovered_domains": _discovered(progress),
    }


def _discovered(progress: FeedProgress) -> dict[str, object] | None:
    """The cached list of the tenant's verified domains, JSON-ready (None before the first discovery)."""
    found = progress.discovered_domains
    if found is None:
        return None
    return {"domains": list(found.domains), "fetched_at": format_datetime(found.fetched_at)}


def render_status(
    checkpoints: Iterable[Checkpoint],
    now: datetime,
    locks: Mapping[str, LockState] | None = None,
    *,
    hidden: int = 0,
    extra: Mapping[str, list[str]] | None = None,
) -> list[str]:
    """Text lines for ``status``: every feed's progress, its lock's holder and its last run.

    ``extra`` holds more lines for a feed, shown after its own (a queued backfill's slices).
    """
    lines: list[str] = []
    locks = locks or {}

    def line(label: str, text: object) -> None:
        lines.append(f"  {label:<{_LABEL_WIDTH}} {text}")

    for checkpoint in checkpoints:
        progress = checkpoint.progress
        mark = progress.high_water_mark
        lines.append(f"[{progress.feed}]")
        if progress.range_start is not None:
            line("range", f"{_time(progress.range_start)} .. {_time(progress.range_end) or '-'}")
        lock = locks.get(progress.feed)
        if lock is not None and lock.held:
            line("lock", _lock_text(lock, now))
        line("high-water mark", _time(mark) or "-")
        line("lag", "-" if mark is None else str(now - mark).split(".")[0])
        line("coverage start", _time(progress.coverage_start) or "-")
        line("ledger entries", len(checkpoint.ledger))
        if progress.possible_duplicates_total:
            line(
                "possible dups",
                f"{progress.possible_duplicates_total} rows re-sent after interrupted uploads "
                "(set WORKSPACE_ID to verify instead)",
            )
        if progress.stalled_runs:
            line("stalled runs", f"{progress.stalled_runs} in a row without moving the high-water mark")
        if progress.waiting_for_permission_since is not None:
            since = progress.waiting_for_permission_since
            line(
                "waiting",
                f"for permission since {_time(since)} ({str(now - since).split('.')[0]} ago): Graph answers 401 for "
                "the Transport Data Platform service principal, missing or still activating (hours); "
                "after 24 h runs fail with exit 3",
            )
        if progress.discovered_domains is not None:
            found = progress.discovered_domains
            line(
                "tenant domains",
                f"{len(found.domains)} discovered {_time(found.fetched_at)} ({', '.join(found.domains[:5])}"
                f"{', ...' if len(found.domains) > 5 else ''})",
            )
        if progress.pending_batch is not None:
            line("unconfirmed batch", f"{len(progress.pending_batch.entries)} rows, resolved by the next run")
        if progress.last_run is not None:
            lines.append("  last run")
            lines.extend(f"    {text}" for text in render_fields(progress.last_run, now))
        lines.extend((extra or {}).get(progress.feed, []))
    if hidden:
        lines.append(
            f"({hidden} finished backfill{'s' if hidden != 1 else ''} hidden; `status --all` shows them)"
        )
    return lines or ["no checkpoint yet: the connector has not committed a run"]
