"""The tenant's Graph message trace budget: who may send the next request, and when. Pure: no I/O.

Why it exists: Graph allows 100 message trace requests per rolling 5 minutes per tenant,
shared by every caller (the timer, ``run``, backfills, detail calls and the admins' own
searches). A connector that sends as fast as it can bursts into 429s and leaves nothing
for anyone else. So every request first asks this module for a slot, against one
shared record of the tenant's recent requests (:class:`QuotaBudget`, kept as one small
JSON blob per tenant by :mod:`connector.quota_store`).

The rules, each a promise:

* **Hard cap.** Never more requests in any rolling window than the usable limit allows
  the caller. The window is counted a little longer than Graph's
  (``WINDOW_SLACK``), so clock skew between instances and network jitter do not turn
  the last request of a window into a 429.
* **Pacing.** Requests of one caller class are spaced ``window / cap`` apart (a
  generic cell rate algorithm), so the window is used evenly. **Bursts**: after a quiet
  spell a class may send ``BURST_SHARE`` of its cap (at least one) back to back, so a
  live tick needing a few pages does not wait; a catch-up then settles into the even
  pace. The cap above still holds whatever the burst.
* **Admin headroom.** ``headroom`` requests per window are never used by the connector:
  they are the admins' own searches.
* **Live reserve.** Callers other than the live feed (backfills, later detail calls)
  may not use the last ``live_reserve_percent`` of the connector's share: the live
  feed always finds a slot, so a backfill does not delay it.
* **Adaptive shrink.** A 429 means someone else uses the quota (or Graph counts
  differently): the usable limit halves (never below ``MIN_LIMIT_SHARE`` of the
  limit) and grows back by ``RECOVERY_SHARE`` of the limit for every whole window
  without a 429. ``Retry-After`` blocks every caller sharing the budget until it ends.

Times are seconds since the epoch from an injected clock (wall time: the budget is
shared between processes and hosts, which share no monotonic clock).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

WINDOW_SLACK = 0.01
"""The window is counted 1 % longer than Graph's: the margin for clock skew and jitter."""
BURST_SHARE = 0.1
"""After a quiet spell a caller class may send this share of its cap back to back."""
MIN_LIMIT_SHARE = 0.1
"""Adaptive shrinking never goes below this share of the limit."""
SHRINK_FACTOR = 0.5
"""A 429 multiplies the usable limit by this."""
RECOVERY_SHARE = 0.1
"""Each whole window without a 429 gives back this share of the limit."""
FORMAT_VERSION = 1
_EPSILON = 1e-6


class Caller(StrEnum):
    """Who asks for a slot: the live feed has priority over everything else."""

    LIVE = "live"
    OTHER = "other"
    """Backfills and anything else that must leave the live reserve alone."""


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """The settings of the budget (``GRAPH_QUOTA_*``), checked by :mod:`connector.settings`."""

    limit: int = 100
    window_seconds: float = 300.0
    headroom: int = 0
    live_reserve_percent: float = 20.0
    burst_share: float = BURST_SHARE
    """Not a setting: tests raise it to make the hard cap, not the pace, the binding rule."""

    @property
    def counted_window(self) -> float:
        """The window as counted here: Graph's plus the slack."""
        return self.window_seconds * (1 + WINDOW_SLACK)

    def usable_limit(self, budget: QuotaBudget, now: float) -> float:
        """The limit after adaptive shrinking and the recovery since the last 429."""
        if budget.shrunk_limit is None:
            return float(self.limit)
        windows = max(0.0, now - budget.shrunk_at) // self.window_seconds
        return min(float(self.limit), budget.shrunk_limit + windows * RECOVERY_SHARE * self.limit)

    def cap(self, caller: Caller, budget: QuotaBudget, now: float) -> int:
        """Requests per window ``caller`` may have in flight in the counted window (at least one)."""
        live = max(1, math.floor(self.usable_limit(budget, now)) - self.headroom)
        if caller is Caller.LIVE:
            return live
        return max(1, math.floor(live * (1 - self.live_reserve_percent / 100)))


@dataclass(frozen=True, slots=True)
class QuotaBudget:
    """The shared record of one tenant's recent requests; what the quota blob holds."""

    sent: tuple[float, ...] = ()
    """When each request of the counted window was granted, oldest first."""
    next_due: dict[str, float] = field(default_factory=dict)
    """Per caller class, the theoretical time of its next request (the pacing state)."""
    shrunk_limit: float | None = None
    """The usable limit set by the last 429 (None: never shrunk, or fully recovered)."""
    shrunk_at: float = 0.0
    blocked_until: float = 0.0
    """No caller sends before this (Retry-After)."""
    throttled: int = 0
    """429s recorded in total (for status and the benchmark)."""

    def encode(self) -> bytes:
        """The blob's JSON."""
        document = {
            "version": FORMAT_VERSION,
            "sent": [round(moment, 3) for moment in self.sent],
            "nextDue": {name: round(moment, 3) for name, moment in sorted(self.next_due.items())},
            "shrunkLimit": self.shrunk_limit,
            "shrunkAt": round(self.shrunk_at, 3),
            "blockedUntil": round(self.blocked_until, 3),
            "throttled": self.throttled,
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> QuotaBudget:
        """Read the blob; anything unreadable starts an empty budget (it only ever holds the last 5 minutes).

        Losing the record costs at most one window of pacing history, so a damaged or
        foreign document must not stop the feed; the hard cap refills from the next grant.
        """
        try:
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
                return cls()
            shrunk = document.get("shrunkLimit")
            return cls(
                sent=tuple(sorted(float(moment) for moment in document.get("sent", []))),
                next_due={str(name): float(at) for name, at in dict(document.get("nextDue", {})).items()},
                shrunk_limit=None if shrunk is None else float(shrunk),
                shrunk_at=float(document.get("shrunkAt", 0.0)),
                blocked_until=float(document.get("blockedUntil", 0.0)),
                throttled=int(document.get("throttled", 0)),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True, slots=True)
class Admission:
    """What the budget answers a caller: go now (with the budget to store), or wait this long."""

    wait: float
    budget: QuotaBudget | None = None
    """The budget with this request recorded; set only when ``wait`` is 0."""


def admit(budget: QuotaBudget, policy: QuotaPolicy, caller: Caller, now: float) -> Admission:
    """Grant ``caller`` one request at ``now``, or say how long until one could be granted.

    The wait is the longest of: Retry-After still running, the hard cap (until enough
    of the window's requests age out), and the caller's pace.
    """
    window = policy.counted_window
    sent = tuple(moment for moment in budget.sent if moment > now - window)
    cap = policy.cap(caller, budget, now)
    spacing = window / cap
    burst = max(1, math.floor(cap * policy.burst_share))
    due = budget.next_due.get(caller.value, 0.0)
    waits = [budget.blocked_until - now, due - (burst - 1) * spacing - now]
    if len(sent) >= cap:
        # The request that must age out for the count to fall below the cap.
        waits.append(sent[len(sent) - cap] + window - now)
    wait = max(waits)
    if wait > _EPSILON:  # float sums of the spacing must not turn "now" into a wait of 1e-15 s
        return Admission(wait=wait)
    shrunk = budget.shrunk_limit
    if shrunk is not None and policy.usable_limit(budget, now) >= policy.limit:
        shrunk = None  # fully recovered
    recorded = replace(
        budget,
        sent=(*sent, now),
        next_due={**budget.next_due, caller.value: max(due, now) + spacing},
        shrunk_limit=shrunk,
    )
    return Admission(wait=0.0, budget=recorded)


def throttled(budget: QuotaBudget, policy: QuotaPolicy, now: float, retry_after: float | None) -> QuotaBudget:
    """Record a 429: block every caller for ``Retry-After`` and shrink the usable limit.

    A 429 that arrives while an earlier one's block still runs (another instance hit the
    same throttle at the same moment) extends the block but does not shrink again, so
    simultaneous 429s count as one signal.
    """
    window = policy.counted_window
    block = retry_after if retry_after is not None and retry_after > 0 else window / max(1, policy.limit)
    already_blocked = budget.blocked_until > now
    shrunk_limit, shrunk_at = budget.shrunk_limit, budget.shrunk_at
    if not already_blocked:
        floor = max(1.0, policy.limit * MIN_LIMIT_SHARE)
        shrunk_limit = max(floor, math.floor(policy.usable_limit(budget, now) * SHRINK_FACTOR))
        shrunk_at = now
    return replace(
        budget,
        sent=tuple(moment for moment in budget.sent if moment > now - window),
        blocked_until=max(budget.blocked_until, now + block),
        shrunk_limit=shrunk_limit,
        shrunk_at=shrunk_at,
        throttled=budget.throttled + 1,
    )
