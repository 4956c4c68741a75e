"""One writer per feed: the blob lease held for a whole run."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient

from connector.backfill import BackfillRange
from connector.cli import main
from connector.errors import BackfillError, LockLostError, RunLockedError
from connector.locks import BlobRunLock, FileRunLock
from connector.report import RunReport
from connector.runner import run_feed
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container(container):
    container.create_container()
    return container


def at(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_second_run_while_one_holds_the_lock_stops_with_who_and_since(connector_env, container):
    lock = BlobRunLock(container)

    with (
        lock.hold("live"),
        pytest.raises(RunLockedError, match=r"another run holds the lock since 20\d\d-.*pid"),
    ):
        run_feed(connector_env)


def test_cli_exits_5_when_the_feed_is_locked(connector_env, container, monkeypatch):
    for name, value in connector_env.items():
        monkeypatch.setenv(name, value)

    with BlobRunLock(container).hold("live"):
        code = main(["--no-progress", "run"], out=io.StringIO())

    assert code == 5


def test_two_runs_started_together_store_nothing_twice(sim, connector_env):
    now = sim.now()
    sim.graph.add(
        [trace(f"id-{i}", "bob@contoso.com", at(now - timedelta(minutes=5 + i))) for i in range(200)]
    )
    sim.graph.inject("timeout", seconds=1.0)  # keep the first run busy while the second starts
    outcomes: list[object] = []

    def one_run():
        try:
            outcomes.append(run_feed(connector_env))
        except RunLockedError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(o, RunLockedError) for o in outcomes) == 1
    keys = [(r["MessageTraceId"], r["RecipientAddress"]) for r in sim.ingestion.rows()]
    assert len(keys) == len(set(keys)) == 200


def test_lease_left_by_a_killed_run_expires_and_is_taken_over(sim, connector_env, azurite, container_name):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from azure.storage.blob import ContainerClient\n"
            "from connector.locks import BlobRunLock\n"
            f"c = ContainerClient.from_connection_string({azurite.connection_string!r}, {container_name!r})\n"
            "c.create_container()\n"
            "lock = BlobRunLock(c, lease_seconds=15)\n"
            "with lock.hold('live'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    env = {**connector_env, "LOCK_LEASE_SECONDS": "15"}

    with pytest.raises(RunLockedError, match="expires within 15 s"):
        run_feed(env)
    deadline = time.monotonic() + 30
    while True:
        try:
            report = run_feed(env)
            break
        except RunLockedError:
            assert time.monotonic() < deadline, "the dead run's lease never expired"
            time.sleep(1)

    assert report.ok, report.error


def test_a_background_renewal_that_fell_behind_is_made_up_before_the_upload(container, caplog):
    clock = [0.0]
    lock = BlobRunLock(container, lease_seconds=15, monotonic=lambda: clock[0])

    with lock.hold("live") as held:
        held.check()
        renewed = lock.inspect("live").renewed
        clock[0] = (
            11.0  # the renewal thread has not renewed for 11 s of a 15 s lease (a slow answer, a retry)
        )

        held.check()

        assert "background renewal was 11 s late" in caplog.text
        assert lock.inspect("live").renewed is not None
        assert renewed is None or lock.inspect("live").renewed >= renewed
        clock[0] = 15.0
        held.check()  # renewed at 11 s: good until well after this
        assert caplog.text.count("background renewal was") == 1


def test_a_run_whose_lease_another_run_took_stops_before_its_next_upload(container):
    clock = [0.0]
    lock = BlobRunLock(container, lease_seconds=15, monotonic=lambda: clock[0])

    with lock.hold("live") as held:
        held.check()
        # Its lease was broken and taken meanwhile (an operator's `unlock --force`, then another run).
        BlobLeaseClient(container.get_blob_client("locks/live.lock")).break_lease(lease_break_period=0)
        with BlobRunLock(container, lease_seconds=15).hold("live"):
            clock[0] = 11.0
            with pytest.raises(LockLostError, match="stopping before the next upload"):
                held.check()
            with pytest.raises(LockLostError, match="renewing it now failed"):
                held.check()  # and it stays lost


def test_file_lock_refuses_a_second_holder_and_frees_when_released(tmp_path):
    lock = FileRunLock(tmp_path)

    with (
        lock.hold("live"),
        pytest.raises(RunLockedError, match="another run holds the lock since"),
        FileRunLock(tmp_path).hold("live"),
    ):
        pass
    with lock.hold("live"):
        pass


@pytest.mark.parametrize("store", ["blob", "file"])
def test_two_overlapping_backfills_started_together_run_one_and_refuse_the_other_naming_it(
    sim, connector_env, tmp_path, store
):
    """Both pass the overlap check if neither has written its range yet: a claim must be atomic."""
    env = dict(connector_env)
    if store == "file":
        env.update({"CHECKPOINT_STORE": "file", "CHECKPOINT_DIRECTORY": str(tmp_path / "state")})
    now = sim.now()
    sim.graph.add(
        [trace(f"old-{i}", "bob@contoso.com", at(now - timedelta(hours=30, seconds=i))) for i in range(300)]
    )
    run_feed(env)  # the live feed: backfills stop at its coverage start
    requests = [
        BackfillRange(now - timedelta(hours=36), now - timedelta(hours=20)),
        BackfillRange(now - timedelta(hours=34), now - timedelta(hours=18)),
    ]
    start = threading.Barrier(len(requests))
    reports: dict[str, RunReport] = {}

    def one_backfill(request: BackfillRange) -> None:
        start.wait()
        reports[request.feed] = run_feed(env, backfill=request)

    threads = [threading.Thread(target=one_backfill, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    refused = [report for report in reports.values() if report.error is not None]
    assert len(refused) == 1, [report.error for report in reports.values()]
    (winner,) = (feed for feed, report in reports.items() if report.error is None)
    assert isinstance(refused[0].error, BackfillError)
    assert refused[0].error.exit_code == 2
    assert winner in str(refused[0].error)
    keys = [(r["MessageTraceId"], r["RecipientAddress"]) for r in sim.ingestion.rows()]
    assert len(keys) == len(set(keys)) == 300
