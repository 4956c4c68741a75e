"""Backfill on Azure: a claimed range cut into slices, one Storage queue message per slice. Pure.

``backfill --on-azure`` claims the whole range exactly as a local backfill does
(:func:`connector.backfill.claim_backfill`: same overlap refusal, same stop at the live
feed's coverage start) and keeps the plan (slice span, stop) in the job's document. Each
slice ``[s, e)`` is then a feed of its own, ``<job>/<s>_<e>``: its own checkpoint,
ledger, intent and lock, so a slice resumes where it stopped and two deliveries of one
message never both write. The queue-triggered function runs one slice per message
(:func:`connector.runner.run_queued_slice`). The host retries a failed message and,
after ``maxDequeueCount`` deliveries, moves it to ``<queue>-poison`` without a reason,
so the slice's document keeps the reason (:class:`connector.state.SliceFailure`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from connector.checkpoint import BACKFILL_PREFIX, check_feed_name, slice_feed_name
from connector.errors import ConnectorError, ErrorKind
from connector.mapping import format_datetime, parse_datetime
from connector.ports import LockState
from connector.redact import hide_addresses
from connector.report import backfill_finished
from connector.settings import TENANT_NAME
from connector.state import Checkpoint, FeedProgress, SliceFailure
from connector.windows import Window

MAX_DEQUEUE_COUNT = 5
"""The host's ``extensions.queues.maxDequeueCount`` in host.json (a test keeps the two equal):
the delivery on which a failure is the last one, so the slice is recorded as poisoned."""
DEFAULT_SLICE_HOURS = 24.0
"""One day per message: a 90-day backfill is 90 messages, each a few runs of the run budget at most."""
MAX_SLICE_HOURS = 240.0
"""Graph reads at most 10 days per query; a longer slice gains nothing."""
MESSAGE_VERSION = 1
THROTTLED_DELAY = timedelta(minutes=1)
"""How long a continuation waits after a slice stopped on Graph's quota or an unconfirmed batch."""
PERMISSION_DELAY = timedelta(minutes=10)
"""How long a continuation waits while Graph's service principal is still activating."""
REASON_CHARS = 500


class SliceMessageError(ConnectorError):
    """A queue message that is not a slice of a queued backfill: it fails for good (the poison queue)."""


@dataclass(frozen=True, slots=True)
class SliceMessage:
    """One queue message: run the slice ``[start, end)`` of the backfill ``job``."""

    job: str
    start: datetime
    end: datetime
    tenant: str | None = None
    """The ``TENANTS`` entry whose backfill this is (its own container); None for a single-tenant deployment."""

    @property
    def feed(self) -> str:
        """The slice's own progress document (and lock)."""
        return slice_feed_name(self.job, self.start, self.end)


def encode_message(message: SliceMessage) -> str:
    """The message text (the queue client base64-encodes it, as the Functions host expects by default)."""
    document = {
        "v": MESSAGE_VERSION,
        "job": message.job,
        "start": format_datetime(message.start),
        "end": format_datetime(message.end),
    }
    if message.tenant is not None:
        document["tenant"] = message.tenant
    return json.dumps(document, separators=(",", ":"))


def decode_message(body: bytes | str) -> SliceMessage:
    """Parse and check a message: version 1, a backfill job's name, a slice inside its range.

    Raises:
        SliceMessageError: anything else, saying what was wrong (never the body itself).
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SliceMessageError(
            f"queue message is not JSON ({err.__class__.__name__}): {_expected()}"
        ) from None
    if not isinstance(document, dict) or document.get("v") != MESSAGE_VERSION:
        raise SliceMessageError(
            f"queue message is not a version {MESSAGE_VERSION} slice message: {_expected()}"
        )
    job, start, end = document.get("job"), document.get("start"), document.get("end")
    if not (isinstance(job, str) and isinstance(start, str) and isinstance(end, str)):
        raise SliceMessageError(f"queue message lacks job, start or end: {_expected()}")
    tenant = document.get("tenant")
    if tenant is not None and not (isinstance(tenant, str) and TENANT_NAME.fullmatch(tenant)):
        raise SliceMessageError(f"queue message names no tenant of TENANTS: {_expected()}")
    try:
        message = SliceMessage(job=job, start=parse_datetime(start), end=parse_datetime(end), tenant=tenant)
        if job.count("/") != 1 or not job.startswith(BACKFILL_PREFIX):
            raise ValueError("job is not a backfill's name")
        check_feed_name(job)
        check_feed_name(message.feed)
    except ValueError as err:
        raise SliceMessageError(
            f"queue message names no slice of a backfill ({err}): {_expected()}"
        ) from None
    return message


def _expected() -> str:
    return (
        f'expected {{"v":{MESSAGE_VERSION},"job":"backfill/<start>_<end>","start":"...Z","end":"...Z"}} '
        "as `backfill --on-azure` enqueues it"
    )


def plan_slices(start: datetime, stop: datetime, span: timedelta) -> list[Window]:
    """``[start, stop)`` cut into slices of ``span`` from ``start`` (the last one shorter)."""
    slices: list[Window] = []
    cursor = start
    while cursor < stop:
        slices.append(Window(cursor, min(cursor + span, stop)))
        cursor += span
    return slices


def job_slices(job: FeedProgress) -> list[Window]:
    """The slices of a queued job's document (none for a local backfill)."""
    plan = job.queue_plan
    if plan is None or job.range_start is None:
        return []
    return plan_slices(job.range_start, plan.stop, plan.slice_span)


def check_in_plan(message: SliceMessage, job: FeedProgress | None) -> None:
    """Refuse a message whose job is not queued or whose slice is not one of its job's plan.

    Raises:
        SliceMessageError: no such queued job, or a slice it does not have.
    """
    if job is None or job.queue_plan is None:
        raise SliceMessageError(
            f"{message.job} is not a queued backfill (no such document, or it runs locally): "
            "queue it with `backfill --on-azure`"
        )
    if Window(message.start, message.end) not in job_slices(job):
        raise SliceMessageError(f"{message.feed} is not one of the slices {message.job} planned")


PERMANENT_KINDS = frozenset({ErrorKind.SETTING, ErrorKind.PERMISSION, ErrorKind.FATAL})
"""Failures that a retry of the same message cannot fix: a setting, a permission, a fault."""


def is_permanent(error: ConnectorError) -> bool:
    """A failure no retry fixes: recorded as poisoned at once (transient, lock, conflict: retried)."""
    return error.kind in PERMANENT_KINDS


def with_failure(
    progress: FeedProgress, error: ConnectorError, *, attempt: int, poisoned: bool, now: datetime
) -> FeedProgress:
    """The slice's progress with this failure recorded (the reason scrubbed, addresses hidden, cut short)."""
    previous = progress.slice_failure
    reason = hide_addresses(f"{error.__class__.__name__}: {error}")[:REASON_CHARS]
    failure = SliceFailure(
        failures=(0 if previous is None else previous.failures) + 1,
        attempt=attempt,
        reason=reason,
        poisoned=poisoned,
        at=now,
    )
    return replace(progress, slice_failure=failure)


def continuation_delay(outcome: str) -> timedelta | None:
    """How long the continuation of a slice that stopped unfinished waits; None: no continuation.

    A slice stopped by its run budget continues at once (it is a normal return, so the
    message it came in is deleted and burns no delivery); one stopped by Graph's quota, an
    unconfirmed batch or a service principal still activating waits before it tries again.
    """
    return {
        "budget_exhausted": timedelta(0),
        "interrupted": timedelta(0),
        "throttled": THROTTLED_DELAY,
        "deferred": THROTTLED_DELAY,
        "waiting_for_permission": PERMISSION_DELAY,
    }.get(outcome)


def slice_state(checkpoint: Checkpoint | None, *, running: bool, live_start: datetime | None) -> str:
    """One word: ``done``, ``poisoned``, ``running``, ``failed``, ``queued`` or ``not queued``."""
    if checkpoint is None:
        return "not queued"
    if backfill_finished(checkpoint, live_start):
        return "done"
    failure = checkpoint.progress.slice_failure
    if failure is not None and failure.poisoned:
        return "poisoned"
    if running:
        return "running"
    return "failed" if failure is not None else "queued"


def _slice_text(state: str, failure: SliceFailure | None) -> str:
    if failure is None or state in ("done", "not queued"):
        return state
    if state == "poisoned":
        return f"poisoned: {failure.reason} (delivery {failure.attempt}/{MAX_DEQUEUE_COUNT})"
    times = "once" if failure.failures == 1 else f"{failure.failures} times"
    return f"{state}, failed {times}: {failure.reason}"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A queued job's slices as ``status`` shows them."""

    job: FeedProgress
    slices: list[dict[str, Any]]
    poison_messages: int | None

    @property
    def finished(self) -> bool:
        """Every slice stored: the job has nothing left to tell day to day."""
        return bool(self.slices) and all(item["state"] == "done" for item in self.slices)

    def fields(self) -> dict[str, Any]:
        """JSON-ready (``status --json``: the job document's ``queue`` field)."""
        plan = self.job.queue_plan
        counts: dict[str, int] = {}
        for item in self.slices:
            counts[item["state"]] = counts.get(item["state"], 0) + 1
        return {
            "slice_hours": None if plan is None else plan.slice_span / timedelta(hours=1),
            "stop": None if plan is None else format_datetime(plan.stop),
            "counts": counts,
            "poison_messages": self.poison_messages,
            "slices": self.slices,
        }

    def lines(self, label_width: int) -> list[str]:
        """Text lines for ``status`` under the job's own."""
        values = self.fields()
        counts = ", ".join(f"{n} {state}" for state, n in sorted(values["counts"].items()))
        poison = (
            "unknown (queue not readable)"
            if self.poison_messages is None
            else f"{self.poison_messages} message{'s' if self.poison_messages != 1 else ''}"
        )
        lines = [
            f"  {'queued slices':<{label_width}} {len(self.slices)} of {values['slice_hours']:g} h: {counts}",
            f"  {'poison queue':<{label_width}} {poison}",
        ]
        lines.extend(f"    {item['start']} .. {item['end']}  {item['text']}" for item in self.slices)
        if any(item["state"] == "poisoned" for item in self.slices) or self.poison_messages:
            lines.append(
                "    poisoned slices are queued again by re-running the same `backfill --on-azure` command "
                "(after fixing the reason shown)"
            )
        return lines


def job_status(
    job: FeedProgress,
    slices: Mapping[str, Checkpoint],
    locks: Mapping[str, LockState],
    *,
    live_start: datetime | None,
    poison_messages: int | None,
) -> JobStatus:
    """Each planned slice of ``job`` with its state, from the slices' own documents and locks."""
    items: list[dict[str, Any]] = []
    for window in job_slices(job):
        feed = slice_feed_name(job.feed, window.start, window.end)
        checkpoint = slices.get(feed)
        lock = locks.get(feed)
        state = slice_state(checkpoint, running=lock is not None and lock.held, live_start=live_start)
        failure = None if checkpoint is None else checkpoint.progress.slice_failure
        mark = None if checkpoint is None else checkpoint.progress.high_water_mark
        items.append(
            {
                "feed": feed,
                "start": format_datetime(window.start),
                "end": format_datetime(window.end),
                "state": state,
                "text": _slice_text(state, failure),
                "high_water_mark": None if mark is None else format_datetime(mark),
                "failures": 0 if failure is None else failure.failures,
                "reason": None if failure is None else failure.reason,
            }
        )
    return JobStatus(job=job, slices=items, poison_messages=poison_messages)
