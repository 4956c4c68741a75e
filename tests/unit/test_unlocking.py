"""When unlock may break a lock: never under a live run on this host, only with --force after a recent renewal. Pure."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import ErrorKind, RunLockedError
from connector.ports import LockState
from connector.unlocking import RENEWAL_GRACE_SECONDS, check_unlock, describe_holder

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
HERE = "host-a"


def lease(
    *, host=HERE, pid=4242, renewed_ago: float | None = 2.0, lease_seconds: int | None = 60
) -> LockState:
    return LockState(
        where="http://127.0.0.1/acct/cp/locks/live.lock",
        held=True,
        holder=f"{host} pid {pid}",
        host=host,
        pid=pid,
        since=NOW - timedelta(minutes=3),
        renewed=None if renewed_ago is None else NOW - timedelta(seconds=renewed_ago),
        lease_seconds=lease_seconds,
        version='"0x1"',
    )


def check(state: LockState, *, alive: bool = False, force: bool = False, feed: str = "live") -> None:
    check_unlock(state, feed=feed, now=NOW, this_host=HERE, process_alive=lambda pid: alive, force=force)


@pytest.mark.parametrize("force", [False, True])
def test_a_holder_alive_on_this_host_is_never_broken_even_with_force(force):
    with pytest.raises(RunLockedError, match=r"alive on this host .*stop process 4242 first") as caught:
        check(lease(renewed_ago=600), alive=True, force=force)

    assert caught.value.kind is ErrorKind.LOCK


def test_a_dead_local_holder_renewed_moments_ago_needs_force_and_says_when():
    with pytest.raises(
        RunLockedError,
        match=r"last renewed 2 s ago \(2026-03-10T11:59:58Z\).*its process 4242 is gone from this host.*unlock --force",
    ):
        check(lease(renewed_ago=2))

    check(lease(renewed_ago=2), force=True)


def test_a_holder_on_another_host_renewed_within_the_interval_needs_force():
    state = lease(host="host-b", renewed_ago=20 + RENEWAL_GRACE_SECONDS - 1)

    with pytest.raises(RunLockedError, match=r"renews it every 20 s, so that run may still be going"):
        check(state, alive=True)  # a pid on another host says nothing about this one

    check(state, alive=True, force=True)


def test_a_holder_that_missed_its_renewal_is_broken_without_force():
    check(lease(host="host-b", renewed_ago=20 + RENEWAL_GRACE_SECONDS + 1))
    check(lease(renewed_ago=40))  # this host, its process gone


def test_a_lock_without_a_recorded_renewal_needs_force():
    state = lease(host=None, pid=None, renewed_ago=None)

    with pytest.raises(RunLockedError, match=r"does not record when it was last renewed.*--force"):
        check(state)

    check(state, force=True)


@pytest.mark.parametrize("force", [False, True])
def test_an_flock_is_only_reported_never_broken(force):
    state = lease(host="host-b", renewed_ago=None, lease_seconds=None)

    with pytest.raises(
        RunLockedError, match=r"It is an flock, freed when its process ends: there is nothing to break"
    ):
        check(state, force=force)


def test_the_force_hint_names_a_backfill_feed():
    with pytest.raises(RunLockedError, match=r"`python -m connector unlock --feed backfill/x --force`"):
        check(lease(), feed="backfill/x")


def test_holder_description_says_who_since_when_and_the_last_renewal():
    assert describe_holder(lease(renewed_ago=31), NOW) == (
        "host-a pid 4242 since 2026-03-10T11:57:00Z, last renewed 31 s ago (2026-03-10T11:59:29Z)"
    )
