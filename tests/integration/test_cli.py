"""``python -m connector`` commands against the simulator and Azurite."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from connector.cli import main
from connector.simulator import generate_traffic
from tests.fakes.memory import trace
from tests.integration.cli_run import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stored(sim) -> Counter:
    return Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )


def test_run_prints_a_summary_and_status_reports_the_checkpoint(sim, environment):
    sim.graph.add(
        generate_traffic(sim.now() - timedelta(hours=2), sim.now() - timedelta(minutes=5), 30, seed=2)
    )

    code, out = run_cli("run")

    assert code == 0, out
    assert "outcome           completed" in out
    assert f"rows uploaded     {len(sim.graph.rows())}" in out
    code, out = run_cli("status")
    assert code == 0
    assert "[live]" in out
    assert "ledger entries" in out
    assert "last run" in out


def test_status_json_is_machine_readable(sim, environment):
    run_cli("run")

    code, out = run_cli("status", "--json")

    assert code == 0
    (live,) = json.loads(out)
    assert live["feed"] == "live"
    assert live["lag_seconds"] >= 60


def test_backfill_loads_history_without_moving_the_live_mark_and_without_duplicates(
    sim, environment, blob_store
):
    now = sim.now()
    sim.graph.add(generate_traffic(now - timedelta(days=3), now - timedelta(minutes=5), messages=300, seed=9))
    run_cli("run")
    live_before = blob_store.load("live").checkpoint

    code, out = run_cli("backfill", "--start", iso(now - timedelta(days=4)), "--end", iso(now))

    assert code == 0, out
    assert blob_store.load("live").checkpoint.progress.high_water_mark == live_before.progress.high_water_mark
    counts = stored(sim)
    assert max(counts.values()) == 1
    assert {(i, r) for i, r, _ in counts} == {
        (r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()
    }

    code, out = run_cli("backfill", "--start", iso(now - timedelta(days=4)), "--end", iso(now))

    assert code == 0
    assert "rows uploaded     0" in out


def test_overlapping_backfill_is_refused_in_one_line_before_any_lock_or_graph_call(
    sim, environment, container, capsys
):
    now = sim.now()
    run_cli("run")
    run_cli("backfill", "--start", iso(now - timedelta(days=5)), "--end", iso(now - timedelta(days=3)))
    capsys.readouterr()
    graph_calls = len(sim.graph.requests(path="messageTraces"))
    overlapping = "backfill/" + iso(now - timedelta(days=4)).replace("-", "").replace(":", "")

    code, out = run_cli(
        "backfill", "--start", iso(now - timedelta(days=4)), "--end", iso(now - timedelta(days=2))
    )

    assert code == 2
    assert out == ""
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: backfill [")
    assert "overlaps the earlier backfill" in line
    assert len(sim.graph.requests(path="messageTraces")) == graph_calls
    names = [blob.name for blob in container.list_blobs()]
    assert not any(name.startswith(f"locks/{overlapping}") for name in names), names
    assert not any(name.startswith(overlapping) for name in names), names


def test_bad_timestamp_argument_is_refused(environment, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["backfill", "--start", "yesterday", "--end", "2026-01-01T00:00:00Z"])

    assert caught.value.code == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_module_entry_point_runs_as_a_process(sim, environment):
    sim.graph.add(
        [
            trace(
                "mail-1",
                "bob@contoso.com",
                (sim.now() - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        ]
    )

    result = subprocess.run(
        [sys.executable, "-m", "connector", "--no-progress", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "rows uploaded     1" in result.stdout
