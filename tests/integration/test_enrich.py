"""`enrich`: chosen messages' journeys land in MessageTraceDetail_CL, over the simulator and Azurite.

Each selector (named pairs, a trace id alone, an ids file, final statuses in a range) stores
one row per detail event; running again adds nothing twice (also within the ingestion
latency); an upload killed after the service stored it, or refused before, is settled
without duplicates; the quota budget and the cap stop it cleanly; a bad argument is
refused in one line before any network call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest

from connector.enrichment import PendingDetail
from connector.errors import ErrorKind
from connector.simulator import generate_traffic
from tests.integration.cli_run import run_cli

pytestmark = pytest.mark.integration

DETAIL = "MessageTraceDetail_CL"


@pytest.fixture
def workspace_env(sim, environment, monkeypatch):
    """The connector's settings with workspace verification, rows queryable at once."""
    monkeypatch.setenv("WORKSPACE_ID", sim.workspace_id)
    monkeypatch.setenv("VERIFY_INGESTION_DELAY_MINUTES", "0")
    return {**environment, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0"}


def traffic(sim, statuses: dict[int, str], messages: int = 8) -> list[dict]:
    now = sim.now()
    records = generate_traffic(now - timedelta(hours=3), now - timedelta(minutes=10), messages, seed=11)
    for index, status in statuses.items():
        records[index]["status"] = status
    sim.graph.add(records)
    return records


def stored_mail(sim) -> None:
    code, out = run_cli("run")
    assert code == 0, out


def detail_rows(sim) -> list[dict]:
    return sim.ingestion.rows(DETAIL)


def pairs_of(rows) -> set[tuple[str, str]]:
    return {(r["MessageTraceId"], r["RecipientAddress"].lower()) for r in rows}


def enrich_json(*args: str) -> tuple[int, dict]:
    code, out = run_cli("enrich", *args, "--json")
    return code, json.loads(out)


def test_a_named_pair_s_events_land_one_row_each_and_the_spend_is_said_first(sim, workspace_env, capsys):
    record = traffic(sim, {0: "quarantined"})[0]

    code, out = run_cli("enrich", "--trace-id", record["id"], "--recipient", record["recipientAddress"])

    assert code == 0, out
    rows = detail_rows(sim)
    assert [(r["Event"], r["EventIndex"], r["Reason"]) for r in rows] == [
        ("Receive", 0, "requested"),
        ("Quarantine", 1, "requested"),
    ]
    assert rows[1]["Data"] == {"FilteringAgent": "SpamFilter"}
    assert {r["MessageTraceId"] for r in rows} == {record["id"].lower()}
    assert "spending 1 Graph requests" in capsys.readouterr().err
    assert "2 events, 2 rows uploaded" in out
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == 1


def test_a_trace_id_alone_is_enriched_for_every_recipient_the_mail_table_holds(sim, workspace_env):
    records = traffic(sim, {})
    second = dict(records[0], recipientAddress="second.recipient@contoso.com", status="delivered")
    sim.graph.add([second])
    stored_mail(sim)

    code, counts = enrich_json("--trace-id", records[0]["id"])

    assert code == 0, counts
    assert pairs_of(detail_rows(sim)) == {
        (records[0]["id"].lower(), records[0]["recipientAddress"].lower()),
        (records[0]["id"].lower(), "second.recipient@contoso.com"),
    }
    assert (counts["pairs"], counts["requests"], counts["not_found"]) == (2, 2, 0)


def test_an_ids_file_a_playbook_wrote_is_enriched_and_an_unknown_id_is_counted_not_found(
    sim, workspace_env, tmp_path
):
    records = traffic(sim, {0: "failed", 1: "delivered"})
    stored_mail(sim)
    ids = tmp_path / "ids.csv"
    ids.write_text(
        "MessageTraceId,RecipientAddress,Status\n"
        f"{records[0]['id']},{records[0]['recipientAddress']},Failed\n"
        f"{records[1]['id']},,Delivered\n"
        "00000000-0000-4000-8000-000000000000,nobody@contoso.com,Failed\n"
    )

    code, counts = enrich_json("--ids-file", str(ids))

    assert code == 0, counts
    every_recipient = pairs_of(r for r in sim.ingestion.rows() if r["MessageTraceId"] == records[1]["id"])
    wanted = {(records[0]["id"].lower(), records[0]["recipientAddress"].lower()), *every_recipient}
    assert pairs_of(detail_rows(sim)) == wanted
    assert any(r["Event"] == "Fail" and r["Data"] == {"ErrorCode": "550 5.1.10"} for r in detail_rows(sim))
    assert (counts["pairs"], counts["requests"], counts["not_found"]) == (len(wanted) + 1, len(wanted) + 1, 1)


def test_the_status_selector_enriches_the_newest_quarantined_and_failed_rows_of_the_range(sim, workspace_env):
    traffic(sim, {0: "quarantined", 1: "failed", 2: "failed", 3: "delivered"}, messages=6)
    stored_mail(sim)
    mail = sim.ingestion.rows()
    wanted = {
        (r["MessageTraceId"].lower(), r["RecipientAddress"].lower())
        for r in mail
        if r["Status"] in ("Quarantined", "Failed")
    }
    start = (sim.now() - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = sim.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    code, counts = enrich_json("--status", "quarantined,Failed", "--start", start, "--end", end)

    assert code == 0, counts
    assert wanted
    assert pairs_of(detail_rows(sim)) == wanted
    assert {r["Reason"] for r in detail_rows(sim)} <= {"status:Quarantined", "status:Failed"}
    assert counts["requests"] == len(wanted)


def test_running_again_adds_nothing_twice_and_spends_no_graph_request(sim, workspace_env):
    record = traffic(sim, {0: "quarantined"})[0]
    pair = ("--trace-id", record["id"], "--recipient", record["recipientAddress"].upper())
    assert run_cli("enrich", *pair)[0] == 0
    before = detail_rows(sim)

    code, counts = enrich_json(*pair)

    assert code == 0
    assert detail_rows(sim) == before
    assert (counts["already_enriched"], counts["requests"], counts["rows_uploaded"]) == (1, 0, 0)
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == 1


def test_running_again_before_the_workspace_shows_the_rows_adds_nothing_twice(
    sim, workspace_env, monkeypatch
):
    monkeypatch.setenv("VERIFY_INGESTION_DELAY_MINUTES", "10")
    sim.logs_query.latency_seconds = 3600  # nothing uploaded is queryable during this test
    record = traffic(sim, {0: "failed"})[0]
    pair = ("--trace-id", record["id"], "--recipient", record["recipientAddress"])
    assert run_cli("enrich", *pair)[0] == 0

    code, counts = enrich_json(*pair)

    assert code == 0
    assert len(detail_rows(sim)) == 2
    assert (counts["already_enriched"], counts["requests"]) == (1, 0)


def _killed_enrich(sim, env, tmp_path, *args: str) -> None:
    """Run `enrich` in a child process and kill it the moment the service stored its first upload."""
    child = subprocess.Popen(
        [sys.executable, "-m", "connector", "--no-progress", "enrich", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sim.ingestion.on_accepted = lambda batch: os.kill(child.pid, signal.SIGKILL)
    try:
        assert child.wait(timeout=120) == -signal.SIGKILL
    finally:
        sim.ingestion.on_accepted = None


@pytest.fixture
def file_store_env(workspace_env, monkeypatch, tmp_path):
    """The local file store: a killed run's flock is freed with its process (a blob lease would hold 60 s)."""
    settings = {"CHECKPOINT_STORE": "file", "CHECKPOINT_DIRECTORY": str(tmp_path / "state")}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return {**workspace_env, **settings}


def test_an_upload_killed_after_the_service_stored_it_is_settled_without_a_duplicate(
    sim, file_store_env, tmp_path
):
    records = traffic(sim, {0: "quarantined", 1: "failed"})
    args = [
        "--trace-id", records[0]["id"], "--recipient", records[0]["recipientAddress"],
        "--trace-id", records[1]["id"], "--recipient", records[1]["recipientAddress"],
    ]  # fmt: skip
    _killed_enrich(sim, file_store_env, tmp_path, *args)
    assert pairs_of(detail_rows(sim)) == {(records[0]["id"].lower(), records[0]["recipientAddress"].lower())}
    assert (tmp_path / "state" / "enrich" / "pending.json").exists()

    code, counts = enrich_json(*args)

    assert code == 0, counts
    row_ids = Counter(r["RowId"] for r in detail_rows(sim))
    assert max(row_ids.values()) == 1
    assert len(pairs_of(detail_rows(sim))) == 2
    assert (counts["settled"], counts["already_enriched"], counts["requests"]) == (1, 1, 1)
    pending = PendingDetail.decode((tmp_path / "state" / "enrich" / "pending.json").read_bytes())
    assert all(pair.sent for pair in pending.pairs)  # only accepted uploads, kept until queryable


def test_a_refused_upload_is_reported_and_fetched_again_by_the_next_run_stored_once(
    sim, workspace_env, monkeypatch
):
    record = traffic(sim, {0: "quarantined"})[0]
    pair = ("--trace-id", record["id"], "--recipient", record["recipientAddress"])
    sim.ingestion.inject(500, times=None)

    code, _ = run_cli("enrich", *pair)

    assert code == 6
    assert detail_rows(sim) == []
    sim.ingestion.clear_faults()
    code, counts = enrich_json(*pair)
    assert code == 0, counts
    assert counts["settled"] == 1
    assert counts["rows_uploaded"] == 2
    assert len(detail_rows(sim)) == 2


def test_an_unconfirmed_upload_too_young_to_verify_stops_the_next_run_before_it_sends(
    sim, file_store_env, tmp_path, monkeypatch, capsys
):
    records = traffic(sim, {0: "quarantined"})
    args = ["--trace-id", records[0]["id"], "--recipient", records[0]["recipientAddress"]]
    _killed_enrich(sim, {**file_store_env, "VERIFY_INGESTION_DELAY_MINUTES": "30"}, tmp_path, *args)
    monkeypatch.setenv("VERIFY_INGESTION_DELAY_MINUTES", "30")
    requests_before = len(sim.graph.requests(path="getDetailsByRecipient"))

    code, _ = run_cli("enrich", *args)

    assert code == 6
    assert "run enrich again after" in capsys.readouterr().err
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == requests_before
    assert len(detail_rows(sim)) == 2


def _dead_letters(tmp_path) -> list[dict]:
    folder = tmp_path / "state" / "deadletter" / "enrich"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.exists() else []


@pytest.mark.parametrize(
    "refused_first", [False, True], ids=["after-a-stored-pair", "before-any-stored-pair"]
)
def test_a_pair_whose_rows_the_service_refuses_is_dead_lettered_with_the_reason_and_not_fetched_again(
    sim, file_store_env, tmp_path, refused_first
):
    records = traffic(sim, {0: "quarantined", 1: "failed"})
    refused, stored = (records[1], records[0])
    sim.ingestion.refuse_other_row[DETAIL] = lambda row: (
        "this value is not accepted" if row["MessageTraceId"] == refused["id"].lower() else None
    )
    order = [refused, stored] if refused_first else [stored, refused]
    args = [arg for r in order for arg in ("--trace-id", r["id"], "--recipient", r["recipientAddress"])]

    code, counts = enrich_json(*args)

    assert code == 0, counts
    assert (counts["refused"], counts["rows_uploaded"], counts["left"]) == (1, 2, 0)
    assert pairs_of(detail_rows(sim)) == {(stored["id"].lower(), stored["recipientAddress"].lower())}
    [letter] = _dead_letters(tmp_path)
    assert "this value is not accepted" in letter["reason"]
    assert letter["record"]["MessageTraceId"] == refused["id"].lower()
    assert [row["Event"] for row in letter["record"]["rows"]] == ["Receive", "Fail"]
    code, counts = enrich_json(*args)
    assert code == 0, counts
    assert (counts["refused_earlier"], counts["already_enriched"], counts["requests"]) == (1, 1, 0)
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == 2
    assert len(_dead_letters(tmp_path)) == 1


def test_detail_rows_refused_before_any_pair_is_stored_blame_the_deployment_and_dead_letter_nothing(
    sim, file_store_env, tmp_path, capsys
):
    records = traffic(sim, {0: "quarantined", 1: "failed"})
    sim.ingestion.refuse_other_row[DETAIL] = lambda row: "this value is not accepted"
    args = [arg for r in records[:2] for arg in ("--trace-id", r["id"], "--recipient", r["recipientAddress"])]

    code, _ = run_cli("enrich", *args)

    assert code == ErrorKind.SETTING.exit_code
    assert "connector/data/MessageTraceDetail_CL.json" in capsys.readouterr().err
    assert _dead_letters(tmp_path) == []
    pending = tmp_path / "state" / "enrich" / "pending.json"
    assert (
        not pending.exists() or PendingDetail.decode(pending.read_bytes()) == PendingDetail()
    )  # nothing remembered
    sim.ingestion.refuse_other_row.clear()
    code, counts = enrich_json(*args)
    assert code == 0, counts
    assert (counts["requests"], counts["rows_uploaded"], counts["refused_earlier"]) == (2, 4, 0)


def test_the_request_cap_leaves_the_rest_for_a_later_run(sim, workspace_env):
    records = traffic(sim, {0: "failed", 1: "failed", 2: "failed"})
    args = [arg for r in records[:3] for arg in ("--trace-id", r["id"], "--recipient", r["recipientAddress"])]

    code, counts = enrich_json(*args, "--max-requests", "2")

    assert code == 0
    assert (counts["requests"], counts["over_cap"], counts["max_requests"]) == (2, 1, 2)
    code, counts = enrich_json(*args, "--max-requests", "2")
    assert (counts["already_enriched"], counts["requests"], counts["over_cap"]) == (2, 1, 0)
    assert len(pairs_of(detail_rows(sim))) == 3


def test_a_used_up_quota_budget_stops_cleanly_between_pairs_saying_what_is_left(
    sim, workspace_env, monkeypatch
):
    monkeypatch.setenv("GRAPH_QUOTA_REQUESTS", "1")  # the tenant's budget: one request per window
    monkeypatch.setenv("RUN_TIME_BUDGET_SECONDS", "10")
    records = traffic(sim, {0: "failed", 1: "failed"})
    args = [arg for r in records[:2] for arg in ("--trace-id", r["id"], "--recipient", r["recipientAddress"])]

    code, counts = enrich_json(*args)

    assert code == 6  # transient: the quota refills; running again skips what is stored
    assert (counts["requests"], counts["left"], counts["rows_uploaded"]) == (1, 1, 2)
    assert "pairs left: run the same command again" in counts["error"]
    assert len(sim.graph.requests(path="getDetailsByRecipient")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trace-id", "not-a-guid"], "--trace-id: must be a message trace id"),
        (["--recipient", "a@contoso.com"], "--recipient: must follow the --trace-id"),
        (["--status", "Failed"], "--status: needs --start and --end"),
        (
            ["--status", "Lost", "--start", "2026-01-01T00:00:00Z", "--end", "2026-01-02T00:00:00Z"],
            "--status: 'Lost'",
        ),
        ([], "enrich: choose messages with"),
        (
            ["--trace-id", "0a1b2c3d-0000-4000-8000-000000000001", "--max-requests", "500"],
            "argument --max-requests",
        ),
    ],
)
def test_a_bad_argument_exits_2_in_one_line_before_any_network_call(sim, monkeypatch, capsys, args, message):
    monkeypatch.delenv("TENANT_ID", raising=False)

    try:
        code, _ = run_cli("enrich", *args)
    except SystemExit as refused:  # argparse's own refusal
        code = refused.code

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert sim.graph.requests() == []
    assert sim.logs_query.requests() == []


def test_a_bad_line_of_the_ids_file_is_named_before_any_network_call(sim, workspace_env, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("0a1b2c3d-0000-4000-8000-000000000001,a@contoso.com\n\n0a1b2c3d,b@contoso.com\n")

    code, _ = run_cli("enrich", "--ids-file", str(ids))

    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "error: --ids-file line 3: must be a message trace id (a GUID, the MessageTraceId column), got '0a1b2c3d'"
    )
    assert sim.graph.requests() == []
    assert sim.logs_query.requests() == []


def test_without_workspace_id_enrich_is_a_setting_error_naming_it(sim, environment, capsys):
    code, _ = run_cli(
        "enrich", "--status", "Failed", "--start", "2026-01-01T00:00:00Z", "--end", "2026-01-02T00:00:00Z"
    )

    assert code == 2
    assert "WORKSPACE_ID" in capsys.readouterr().err
    assert sim.graph.requests() == []
