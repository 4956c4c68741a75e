"""When ``python -m connector unlock`` may break a feed's lock: never under a run that is still going. Pure.

Breaking the lease of a live run lets a second run start next to it, and both upload
the same rows (it happened: 520 duplicates). What the holder recorded on the lock
(:class:`connector.ports.LockState`) decides:

* **held by a live process on this host** (same host name, the pid exists): refused,
  ``--force`` or not. Stop that process first, or let it finish.
* **an flock** (the local file store): refused while held; there is nothing to break,
  since the kernel frees it when its process ends.
* **renewed within one renewal interval** (a live run renews every third of the lease;
  :data:`RENEWAL_GRACE_SECONDS` more for a renewal in flight and clocks that differ a
  little), or no renewal recorded: its run may be alive on another host, so ``unlock``
  says when it was renewed and asks for ``--force``.
* otherwise the holder missed its renewal: it is dead or cut off, and the lease is
  broken (conditionally: if it renews in between, the break is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from connector.errors import RunLockedError
from connector.ports import LockState

RENEWAL_GRACE_SECONDS = 5.0


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "at an unknown time"
    return f"{max((now - moment).total_seconds(), 0):.0f} s ago ({_time(moment)})"


def describe_holder(state: LockState, now: datetime) -> str:
    """``<host> pid <pid> since <time>, last renewed <n> s ago``: who held the lock, for messages."""
    since = "an unknown time" if state.since is None else _time(state.since)
    text = f"{state.holder or 'an unrecorded holder'} since {since}"
    if state.lease_seconds is not None:
        text += f", last renewed {_ago(state.renewed, now)}"
    return text


def check_unlock(
    state: LockState,
    *,
    feed: str,
    now: datetime,
    this_host: str,
    process_alive: Callable[[int], bool],
    force: bool,
) -> None:
    """Return if the held lock in ``state`` may be broken; raise why not otherwise.

    Raises:
        RunLockedError: its run may be alive (the message says how to tell and what to do).
    """
    command = "python -m connector unlock" + ("" if feed == "live" else f" --feed {feed}")
    who = describe_holder(state, now)
    if (
        state.host is not None
        and state.host == this_host
        and state.pid is not None
        and process_alive(state.pid)
    ):
        raise RunLockedError(
            f"{feed}: the run holding the lock is alive on this host ({who}; {state.where}); unlock never breaks "
            f"a live run's lock, as both runs would upload the same rows. Let it finish, or stop process "
            f"{state.pid} first"
        )
    if state.lease_seconds is None:
        raise RunLockedError(
            f"{feed}: the lock {state.where} is held by {who}. It is an flock, freed when its process ends: "
            "there is nothing to break; let that run finish or stop it"
        )
    renew_every = state.lease_seconds / 3
    if force:
        return
    if state.renewed is None:
        raise RunLockedError(
            f"{feed}: the lock is held by {who} ({state.where}) and does not record when it was last renewed, "
            f"so its run may be alive. If you know it is dead, run `{command} --force`; otherwise its lease "
            f"expires within {state.lease_seconds} s of its last renewal"
        )
    age = (now - state.renewed).total_seconds()
    if age <= renew_every + RENEWAL_GRACE_SECONDS:
        expires_in = max(state.lease_seconds - age, 0)
        local = state.host == this_host and state.pid is not None
        running = (
            f"its process {state.pid} is gone from this host, but it renewed the lease moments ago"
            if local
            else "so that run may still be going (on another host)"
        )
        raise RunLockedError(
            f"{feed}: the lock was last renewed {_ago(state.renewed, now)} by {state.holder or 'its holder'} "
            f"({state.where}); a live run renews it every {renew_every:.0f} s, {running}. "
            f"Wait: its lease expires within {expires_in:.0f} s if it is dead. "
            f"If you know it is dead, run `{command} --force`"
        )
