"""Operating the command line: what each command needs, says and refuses (simulator and Azurite)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.cli import main
from connector.simulator import generate_traffic
from tests.integration.cli_run import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_ONLY = ("TENANT_ID", "LOCAL_DOMAINS", "INGESTION_ENDPOINT", "DCR_IMMUTABLE_ID")


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_status_unlock_and_purge_need_no_setting_only_a_run_uses(sim, environment, monkeypatch, capsys):
    run_cli("run")
    for name in RUN_ONLY:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OVERLAP_LOOKBACK_MINUTES", "bogus")  # a run's setting: not read by these

    assert run_cli("status")[0] == 0
    assert run_cli("unlock")[0] == 0
    assert run_cli("purge-dead-letters", "--older-than", "30d", "--dry-run")[0] == 0
    assert "setting" not in capsys.readouterr().err


def test_status_still_refuses_a_bad_storage_setting(sim, environment, monkeypatch, capsys):
    monkeypatch.delenv("TENANT_ID")
    monkeypatch.setenv("CHECKPOINT_CONTAINER", "Bad_Name")

    assert run_cli("status")[0] == 2
    err = capsys.readouterr().err
    assert "CHECKPOINT_CONTAINER" in err
    assert "TENANT_ID" not in err


def test_storage_account_url_with_an_app_secret_needs_the_tenant_but_a_managed_identity_does_not():
    from connector.errors import ConfigError
    from connector.settings import Settings

    account = {"STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net"}
    Settings.for_storage({**account, "AZURE_AUTH_MODE": "managed_identity"})
    with pytest.raises(ConfigError, match="TENANT_ID"):
        Settings.for_storage(
            {**account, "AZURE_AUTH_MODE": "client_secret", "CLIENT_ID": "x", "CLIENT_SECRET": "y"}
        )


def test_status_shows_who_holds_a_feed_lock_and_since_when(sim, environment, blob_store):
    from connector.locks import BlobRunLock

    run_cli("run")
    lock = BlobRunLock(blob_store.container, lease_seconds=60)
    with lock.hold("live"):
        code, out = run_cli("status")
        _, as_json = run_cli("status", "--json")

    assert code == 0
    assert f"lock              held by {socket.gethostname()} pid {os.getpid()} since " in out
    (live,) = json.loads(as_json)
    assert live["lock"]["since"] is not None
    _, after = run_cli("status")
    assert "held by" not in after


def test_unlock_twice_says_the_lock_is_already_free(sim, environment, azurite, container_name, container):
    from tests.integration.test_unlock import killed_holder

    container.create_container()
    killed_holder(azurite, container_name)

    first = run_cli("unlock", "--force")
    second = run_cli("unlock")

    assert first[0] == 0
    assert "broken" in first[1]
    assert second == (0, "live: the lock is already free (no run holds it); nothing to unlock\n")


def test_backfill_wholly_older_than_retention_is_refused_with_the_reason(sim, environment, capsys):
    now = sim.now()
    run_cli("run")
    capsys.readouterr()

    code, out = run_cli(
        "backfill", "--start", iso(now - timedelta(days=120)), "--end", iso(now - timedelta(days=100))
    )

    assert code == 2
    assert out == ""
    (line,) = capsys.readouterr().err.splitlines()
    assert "wholly older than Graph's 90-day message trace retention" in line


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        (timedelta(hours=-1), timedelta(hours=-2), "has not been published yet"),
        (timedelta(hours=2), timedelta(hours=1), "the live feed stores everything from"),
    ],
)
def test_backfill_of_the_future_or_inside_the_live_feed_explains_there_is_nothing_to_do(
    sim, environment, container, start, end, why
):
    now = sim.now()
    run_cli("run")
    before = {blob.name for blob in container.list_blobs()}

    code, out = run_cli("backfill", "--start", iso(now - start), "--end", iso(now - end))

    assert code == 0
    assert out.count("\n") == 1
    assert "nothing to do" in out
    assert why in out
    assert {blob.name for blob in container.list_blobs()} == before


def test_backfill_end_before_start_is_one_line_exit_2_without_a_lock(sim, environment, container, capsys):
    now = sim.now()

    code, out = run_cli(
        "backfill", "--start", iso(now - timedelta(days=2)), "--end", iso(now - timedelta(days=3))
    )

    assert code == 2
    assert out == ""
    (line,) = capsys.readouterr().err.splitlines()
    assert "must be after its start" in line
    assert not container.exists() or not list(container.list_blobs())


def test_status_hides_finished_backfills_unless_all(sim, environment):
    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(days=3), now - timedelta(minutes=5), messages=40, seed=4))
    run_cli("run")
    run_cli("backfill", "--start", iso(now - timedelta(days=2)), "--end", iso(now - timedelta(days=1)))

    _, default = run_cli("status")
    _, every = run_cli("status", "--all")
    _, as_json = run_cli("status", "--json", "--all")

    assert "[backfill/" not in default
    assert "(1 finished backfill hidden; `status --all` shows them)" in default
    assert "[backfill/" in every
    assert [feed["finished"] for feed in json.loads(as_json)] == [False, True]


def test_forget_backfill_removes_a_record_that_stored_nothing_and_keeps_a_finished_one(
    sim, environment, blob_store, capsys
):
    from connector.state import Checkpoint, FeedProgress

    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(days=3), now - timedelta(minutes=5), messages=40, seed=5))
    run_cli("run")
    finished_range = ("--start", iso(now - timedelta(days=2)), "--end", iso(now - timedelta(days=1)))
    run_cli("backfill", *finished_range)
    empty_start, empty_end = (
        now.replace(microsecond=0) - timedelta(days=5),
        now.replace(microsecond=0) - timedelta(days=4),
    )
    empty = f"backfill/{empty_start:%Y%m%dT%H%M%SZ}_{empty_end:%Y%m%dT%H%M%SZ}"
    blob_store.save(
        Checkpoint(
            progress=FeedProgress(feed=empty, range_start=empty_start, range_end=empty_end), ledger={}
        ),
        None,
    )
    finished = [
        line.strip("[]")
        for line in run_cli("status", "--all")[1].splitlines()
        if line.startswith("[backfill/") and line.strip("[]") != empty
    ][0]
    capsys.readouterr()

    assert run_cli("forget-backfill", "--feed", finished)[0] == 2
    assert "its record stays" in capsys.readouterr().err
    code, out = run_cli("forget-backfill", "--feed", empty)

    assert code == 0
    assert "record removed" in out
    assert blob_store.load(empty) is None
    assert blob_store.load(finished) is not None


def test_a_failed_run_shows_its_error_once(sim, environment, monkeypatch, capsys):
    sim.graph.add(
        generate_traffic(sim.now() - timedelta(hours=2), sim.now() - timedelta(minutes=5), 5, seed=3)
    )
    monkeypatch.setenv("DCR_IMMUTABLE_ID", "dcr-" + "0" * 32)  # the simulator knows no such DCR: 404, exit 2

    code, out = run_cli("run")
    err = capsys.readouterr().err

    assert code == 2
    text = out + err
    assert text.count("Logs Ingestion API answered 404") == 1, text


def test_log_level_bogus_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "bogus", "status"])

    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--log-level" in line
    assert "'bogus'" in line


@pytest.mark.parametrize(
    "command", ["run", "status", "backfill", "forget-backfill", "unlock", "purge-dead-letters"]
)
def test_every_subcommand_help_has_a_description(command, capsys):
    from connector.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and command in action.choices)
    assert subparsers.choices[command].description


def _slow_cli(env: dict[str, str], *args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        text=True,
        **kwargs,
    )


def test_ctrl_c_during_a_run_stops_at_a_safe_point_says_what_is_committed_and_exits_130(sim, connector_env):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=6), now - timedelta(minutes=5), messages=600, seed=6)
    )
    sim.graph.max_page_size = 20
    sim.graph.inject("timeout", times=None, seconds=0.3, path="messageTraces")
    # About 60 pages of 20: paced at Graph's 3 s per request the resuming run would take minutes.
    connector_env = {**connector_env, "GRAPH_QUOTA_WINDOW_SECONDS": "10"}
    process = _slow_cli(
        {**connector_env, "MAX_SLICE_HOURS": "0.5"},
        "--no-progress",
        "run",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "outcome           interrupted" in out
    assert "run the same command again to resume" in out
    assert len(sim.ingestion.rows()) < len(sim.graph.rows())
    sim.graph.clear_faults()
    again = subprocess.run(
        [sys.executable, "-m", "connector", "--no-progress", "run"],
        cwd=ROOT,
        env={**os.environ, **connector_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr


def test_second_ctrl_c_aborts_at_once_in_one_line(sim, connector_env):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=6), now - timedelta(minutes=5), messages=600, seed=7)
    )
    sim.graph.max_page_size = 20
    sim.graph.inject("timeout", times=None, seconds=2, path="messageTraces")
    process = _slow_cli(connector_env, "--no-progress", "run", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert err.count("aborted at once") == 1


def test_progress_bar_on_a_terminal_shows_rows_rate_and_eta_in_one_line(sim, connector_env):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=6), now - timedelta(minutes=5), messages=300, seed=8)
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with a terminal as its stdout and stderr
        os.chdir(ROOT)
        os.execve(  # noqa: S606 - the CLI itself, no shell
            sys.executable,
            [sys.executable, "-m", "connector", "run"],
            {**os.environ, **connector_env, "MAX_SLICE_HOURS": "1"},
        )
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")

    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "0.0/0.0" not in text
    assert "rows/s" in text
    assert "ETA" in text
    assert "\r" in text  # redrawn in place, one line
    assert " rows," in text


@pytest.mark.parametrize(("waited", "code"), [(timedelta(hours=3), 0), (timedelta(hours=25), 3)])
def test_status_exits_3_once_a_feed_has_waited_a_day_for_graphs_permission(
    sim, environment, blob_store, waited, code
):
    from connector.state import Checkpoint, FeedProgress

    since = datetime.now(UTC) - waited
    progress = FeedProgress(feed="live", coverage_start=since, waiting_for_permission_since=since)
    blob_store.save(Checkpoint(progress=progress, ledger={}), None)

    status, out = run_cli("status")

    assert status == code
    assert "waiting" in out.lower()
