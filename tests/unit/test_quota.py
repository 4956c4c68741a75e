"""The tenant's Graph quota budget: pacing, hard cap, live reserve, admin headroom, 429s."""

from __future__ import annotations

import pytest

from connector.quota import (
    WINDOW_SLACK,
    Admission,
    Caller,
    QuotaBudget,
    QuotaPolicy,
    admit,
    throttled,
)

POLICY = QuotaPolicy(limit=100, window_seconds=300.0, headroom=0, live_reserve_percent=20.0)
WINDOW = 300.0 * (1 + WINDOW_SLACK)


def drive(policy: QuotaPolicy, caller: Caller, until: float, budget: QuotaBudget | None = None):
    """Ask for a slot as often as allowed until ``until``; return the grant times and the budget."""
    budget = budget or QuotaBudget()
    now, grants = 0.0, []
    while now < until:
        answer = admit(budget, policy, caller, now)
        if answer.wait > 0:
            now += answer.wait
            continue
        assert answer.budget is not None
        budget = answer.budget
        grants.append(now)
    return grants, budget


def most_in_any_window(grants: list[float], window: float) -> int:
    return max(sum(1 for t in grants if start - window < t <= start) for start in grants)


def test_a_busy_caller_is_paced_evenly_after_a_small_burst_and_never_exceeds_the_limit():
    grants, _ = drive(POLICY, Caller.LIVE, until=3 * 300.0)

    assert grants[:10] == [0.0] * 10  # the burst: a live tick's few pages do not wait
    first_window = grants[10:100]
    gaps = [later - earlier for earlier, later in zip(first_window, first_window[1:], strict=False)]
    assert gaps == pytest.approx([WINDOW / 100] * len(gaps))
    assert most_in_any_window(grants, 300.0) <= 100
    assert len(grants) >= 0.95 * 3 * 100  # the window is used, not wasted


def test_backfills_leave_the_live_reserve_alone_and_the_live_feed_may_use_it():
    grants, budget = drive(POLICY, Caller.OTHER, until=300.0)
    assert most_in_any_window(grants, 300.0) <= 80

    live = admit(budget, POLICY, Caller.LIVE, grants[-1] + 0.001)

    assert live.wait == 0  # the reserved fifth is there for the live feed at once
    assert admit(budget, POLICY, Caller.OTHER, grants[-1] + 0.001).wait > 0


def test_admin_headroom_is_never_used_by_any_caller():
    policy = QuotaPolicy(limit=100, window_seconds=300.0, headroom=30, live_reserve_percent=0.0)

    grants, _ = drive(policy, Caller.LIVE, until=600.0)

    assert most_in_any_window(grants, 300.0) <= 70


def test_a_429_blocks_every_caller_for_its_retry_after_and_halves_the_usable_limit():
    _, budget = drive(POLICY, Caller.LIVE, until=10.0)

    after = throttled(budget, POLICY, now=10.0, retry_after=42.0)

    assert admit(after, POLICY, Caller.LIVE, 10.0).wait == pytest.approx(42.0)
    assert admit(after, POLICY, Caller.OTHER, 10.0).wait == pytest.approx(42.0)
    assert POLICY.usable_limit(after, 10.0) == 50
    assert after.throttled == 1


def test_429s_arriving_together_shrink_the_limit_once():
    once = throttled(QuotaBudget(), POLICY, now=10.0, retry_after=5.0)
    twice = throttled(once, POLICY, now=10.5, retry_after=5.0)

    assert POLICY.usable_limit(twice, 11.0) == 50
    assert twice.blocked_until == pytest.approx(15.5)


def test_the_shrunk_limit_recovers_additively_per_window_without_a_429_and_never_below_the_floor():
    budget = QuotaBudget()
    for moment in range(0, 100, 10):  # ten separate 429s: 100 -> 50 -> 25 -> 12 -> 10 (floor)
        budget = throttled(budget, POLICY, now=float(moment), retry_after=1.0)
    assert POLICY.usable_limit(budget, 91.0) == 10

    shrunk_at = budget.shrunk_at
    assert POLICY.usable_limit(budget, shrunk_at + 299.0) == 10
    assert POLICY.usable_limit(budget, shrunk_at + 300.0) == 20
    assert POLICY.usable_limit(budget, shrunk_at + 9 * 300.0) == 100


def test_a_shrunk_limit_paces_wider_until_it_recovers():
    budget = throttled(QuotaBudget(), POLICY, now=0.0, retry_after=1.0)

    grants, _ = drive(POLICY, Caller.LIVE, until=290.0, budget=budget)

    assert most_in_any_window(grants, 300.0) <= 50


def test_without_retry_after_a_429_waits_one_request_spacing():
    after = throttled(QuotaBudget(), POLICY, now=0.0, retry_after=None)

    assert admit(after, POLICY, Caller.LIVE, 0.0).wait == pytest.approx(WINDOW / 100)


def test_the_budget_round_trips_through_its_json_and_a_damaged_one_starts_empty():
    _, budget = drive(POLICY, Caller.LIVE, until=30.0)
    budget = throttled(budget, POLICY, now=30.0, retry_after=3.0)

    again = QuotaBudget.decode(budget.encode())

    assert again.sent == pytest.approx(budget.sent)
    assert again.blocked_until == pytest.approx(budget.blocked_until)
    assert again.shrunk_limit == budget.shrunk_limit
    assert again.next_due == pytest.approx(budget.next_due)
    assert QuotaBudget.decode(b"{not json") == QuotaBudget()
    assert QuotaBudget.decode(b'{"version": 99}') == QuotaBudget()


def test_only_the_counted_window_is_kept_so_the_blob_stays_small():
    grants, budget = drive(POLICY, Caller.LIVE, until=5 * 300.0)

    assert len(budget.sent) <= 100
    assert len(budget.encode()) < 2_500
    assert isinstance(admit(budget, POLICY, Caller.LIVE, grants[-1]), Admission)
