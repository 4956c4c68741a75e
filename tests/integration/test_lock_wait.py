"""``hold(feed, wait_seconds=…)``: a lock another run holds is tried again until the wait is over."""

from __future__ import annotations

import pytest

from connector.errors import RunLockedError
from connector.locks import BLOB_POLL_SECONDS, FILE_POLL_SECONDS, BlobRunLock, FileRunLock

pytestmark = pytest.mark.integration


class FakeTime:
    """A monotonic clock that only sleeping moves; runs ``on_sleep`` after each sleep."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


@pytest.fixture(params=["blob", "file"])
def kind(request):
    return request.param


def make_lock(kind, container, tmp_path, fake: FakeTime | None = None):
    timing = {} if fake is None else {"monotonic": fake.monotonic, "sleep": fake.sleep}
    if kind == "blob":
        return BlobRunLock(container, **timing)
    return FileRunLock(tmp_path, **timing)


@pytest.fixture
def container(container):
    container.create_container()
    return container


def test_without_a_wait_a_held_lock_fails_at_once(kind, container, tmp_path):
    fake = FakeTime()
    waiter = make_lock(kind, container, tmp_path, fake)

    with (
        make_lock(kind, container, tmp_path).hold("live"),
        pytest.raises(RunLockedError, match="did nothing"),
        waiter.hold("live"),
    ):
        pass

    assert fake.sleeps == []


def test_waiting_hold_takes_the_lock_once_the_holder_lets_go(kind, container, tmp_path):
    fake = FakeTime()
    waiter = make_lock(kind, container, tmp_path, fake)
    holder = make_lock(kind, container, tmp_path).hold("live")
    holder.__enter__()

    def release_on_third_sleep() -> None:
        if len(fake.sleeps) == 3:
            holder.__exit__(None, None, None)

    fake.on_sleep = release_on_third_sleep

    with waiter.hold("live", wait_seconds=30) as held:
        held.check()

    assert len(fake.sleeps) == 3
    assert max(fake.sleeps) == (BLOB_POLL_SECONDS if kind == "blob" else FILE_POLL_SECONDS)
    with make_lock(kind, container, tmp_path).hold("live"):  # the waiter let go in turn
        pass


def test_waiting_hold_gives_up_with_run_locked_once_the_wait_is_over(kind, container, tmp_path):
    fake = FakeTime()
    waiter = make_lock(kind, container, tmp_path, fake)

    with (
        make_lock(kind, container, tmp_path).hold("live"),
        pytest.raises(
            RunLockedError, match=r"another run holds the lock since .* waited 2 s for it and did nothing"
        ),
        waiter.hold("live", wait_seconds=2),
    ):
        pass

    assert sum(fake.sleeps) == pytest.approx(2)
    assert all(0 < pause <= 0.5 for pause in fake.sleeps)
