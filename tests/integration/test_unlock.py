"""``python -m connector unlock``: never breaks a live run's lock; asks for --force after a recent renewal."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.errors import RunLockedError
from connector.locks import BlobRunLock, FileRunLock
from connector.runner import run_feed
from tests.integration.cli_run import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container(container):
    container.create_container()
    return container


def killed_holder(azurite, container_name: str, *, clock_behind_seconds: int = 0) -> None:
    """A process that takes the live lease (15 s) and is SIGKILLed holding it: a killed run."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from datetime import UTC, datetime, timedelta\n"
            "from azure.storage.blob import ContainerClient\n"
            "from connector.locks import BlobRunLock\n"
            f"c = ContainerClient.from_connection_string({azurite.connection_string!r}, {container_name!r})\n"
            "clock = lambda: datetime.now(UTC) - timedelta(seconds="
            f"{clock_behind_seconds})\n"
            "with BlobRunLock(c, lease_seconds=15, clock=clock).hold('live'):\n"
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


def test_the_lock_records_host_pid_since_and_every_renewal(container):
    now = [datetime(2026, 3, 10, 12, 0, tzinfo=UTC)]
    lock = BlobRunLock(container, lease_seconds=15, clock=lambda: now[0])

    with lock.hold("live") as held:
        first = lock.inspect("live")
        now[0] += timedelta(seconds=5)
        held.renew()
        renewed = lock.inspect("live")
        metadata = container.get_blob_client("locks/live.lock").get_blob_properties().metadata

    assert first.held
    assert (first.host, first.pid) == (socket.gethostname(), os.getpid())
    assert first.holder == f"{socket.gethostname()} pid {os.getpid()}"
    assert first.since == first.renewed == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert first.lease_seconds == 15
    assert renewed.since == first.since
    assert renewed.renewed == datetime(2026, 3, 10, 12, 0, 5, tzinfo=UTC)
    assert {"holder", "host", "pid", "since", "renewed", "lease_seconds"} <= set(metadata)
    assert not lock.inspect("live").held


def test_unlock_with_no_lock_held_says_so_and_exits_0(environment, container):
    code, out = run_cli("unlock")

    assert code == 0
    assert out == "live: the lock is already free (no run holds it); nothing to unlock\n"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_unlock_refuses_to_break_the_lock_of_a_run_alive_on_this_host(environment, container, force, capsys):
    with BlobRunLock(container).hold("live") as held:
        code, _ = run_cli("unlock", *force)
        held.check()  # still this run's
        with pytest.raises(RunLockedError), BlobRunLock(container).hold("live"):
            pass

    assert code == 5
    assert f"alive on this host ({socket.gethostname()} pid {os.getpid()}" in capsys.readouterr().err


def test_unlock_of_a_just_killed_run_asks_for_force_then_breaks_it(environment, azurite, container, capsys):
    killed_holder(azurite, container.container_name)

    code, _ = run_cli("unlock")

    assert code == 5
    err = capsys.readouterr().err
    assert "the lock was last renewed" in err
    assert "python -m connector unlock --force" in err
    code, out = run_cli("unlock", "--force")
    assert code == 0
    assert out.startswith(f"lock on live broken (was held by {socket.gethostname()} pid ")
    assert run_feed(environment).ok


def test_unlock_breaks_without_force_once_the_dead_holder_missed_its_renewal(environment, azurite, container):
    killed_holder(azurite, container.container_name, clock_behind_seconds=30)  # renewed 30 s ago, every 5 s

    code, out = run_cli("unlock")

    assert code == 0, out
    assert re.search(r"last renewed 3\d s ago", out), out
    assert not BlobRunLock(container).inspect("live").held


def test_break_refuses_when_the_holder_renewed_after_unlock_looked(container):
    lock = BlobRunLock(container, lease_seconds=15)

    with lock.hold("live") as held:
        seen = lock.inspect("live")
        held.renew()
        with pytest.raises(
            RunLockedError, match="its holder renewed it, so its run is alive; nothing was broken"
        ):
            lock.break_lock("live", seen=seen)
        held.check()
        assert lock.inspect("live").held


def test_unlock_on_the_file_store_only_reports_a_held_flock(environment, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHECKPOINT_STORE", "file")
    monkeypatch.setenv("CHECKPOINT_DIRECTORY", str(tmp_path))

    with FileRunLock(tmp_path).hold("live"):
        state = FileRunLock(tmp_path).inspect("live")
        code, _ = run_cli("unlock", "--force")
        with pytest.raises(RunLockedError), FileRunLock(tmp_path).hold("live"):
            pass

    assert code == 5
    assert state.held
    assert (state.host, state.pid) == (socket.gethostname(), os.getpid())
    assert "alive on this host" in capsys.readouterr().err
    assert run_cli("unlock") == (0, "live: the lock is already free (no run holds it); nothing to unlock\n")
