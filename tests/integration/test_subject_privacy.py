"""SUBJECT_MODE hash and drop: no subject leaves the function, whatever path it takes.

A run through the command line against the simulator and Azurite, with every storage
write recorded by a proxy and every ingestion request body logged by the simulator. The
traffic has subjects built to go everywhere: a 200 KB one (over the 64 KB cut), one with
an unpaired surrogate, one with control characters, one on a record that cannot be
parsed (a dead letter of the raw record) and one on a row the workspace refuses (a
dead letter found by splitting the batch). Each subject holds a word found nowhere
else, which must not appear in the rows, the request bodies, any write to or blob in
the storage account (checkpoint, locks, dead letters) or the logs.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from connector.simulator.azurite import ACCOUNT
from connector.subjects import SubjectMode, SubjectPolicy, parse_hash_key
from tests.crash.blob_proxy import KillingBlobProxy, requests_in
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = base64.b64encode(bytes(range(100, 132))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()

# id -> subject; each subject's secret word appears nowhere but in it.
SUBJECTS = {
    "mail-000": "Merger Zanzibar terms",
    "mail-001": "Merger Zanzibar terms",  # equal subjects must still group in hash mode
    "mail-002": "Layoffs Quokkaplan list",
    "mail-003": "Huge " + "Xylophonic " * 20_000,  # 220 KB, over the 64 KB cut
    "mail-004": "Payroll Marzipanic \ud83d update",  # unpaired surrogate
    "mail-005": "Board\x00Nightjarish\x1b[31m minutes\r\n",  # control characters
    "mail-006": "Refused Obsidianite row",  # the workspace refuses this row
    "mail-007": "Broken Tamarindo size",  # size is not a number: cannot be parsed
}
WORDS = ["Zanzibar", "Quokkaplan", "Xylophonic", "Marzipanic", "Nightjarish", "Obsidianite", "Tamarindo"]
REFUSED = "mail-006"
BROKEN = "mail-007"


def at(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "connector", "--log-level", "DEBUG", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def recording_proxy(azurite):
    proxy = KillingBlobProxy(azurite.port, record=True)
    yield proxy
    proxy.close()


def _run(sim, azurite, proxy, container_name, mode: str, key: str | None = None) -> tuple[int, str]:
    env = {
        **os.environ,
        **sim.connector_env(),
        "STORAGE_CONNECTION_STRING": azurite.connection_string.replace(
            f"127.0.0.1:{azurite.port}", f"127.0.0.1:{proxy.port}"
        ),
        "CHECKPOINT_CONTAINER": container_name,
        "INITIAL_LOOKBACK_HOURS": "2",
        "SETTLE_DELAY_MINUTES": "1",
        "HTTP_MAX_RETRIES": "2",
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
        "SUBJECT_MODE": mode,
        "PYTHONPATH": str(ROOT),
    }
    if key is not None:
        env["SUBJECT_HASH_KEY"] = key
    now = sim.now()
    records = [
        trace(trace_id, f"victim{n}@fabrikam.example", at(now - timedelta(minutes=10 + n)), subject=subject)
        for n, (trace_id, subject) in enumerate(SUBJECTS.items())
    ]
    records[-1]["size"] = "large"  # not an integer: the raw record is dead-lettered
    sim.graph.add(records)
    sim.ingestion.refuse_row = lambda row: "row refused" if row["MessageTraceId"] == REFUSED else None
    return run_cli(env, "run")


def _sent_to_ingestion(sim) -> str:
    bodies = []
    for request in sim.ingestion.requests(method="POST"):
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        bodies.append(body.decode("utf-8", "surrogatepass"))
    assert bodies, "nothing was sent"
    return "\n".join(bodies)


def _stored(azurite, proxy, container) -> str:
    written = [
        body
        for stream in proxy.sent
        for line, body in requests_in(stream)
        if line.startswith(("PUT ", "POST "))
    ]
    blobs = [container.download_blob(blob.name).readall() for blob in container.list_blobs()]
    names = [blob.name for blob in container.list_blobs()]
    assert any(name.startswith("deadletter/") for name in names), names
    return b"\n".join(written + blobs).decode("utf-8", "replace") + "\n".join(names)


def _assert_no_subject(*texts: str) -> None:
    for text in texts:
        for word in WORDS:
            assert word.lower() not in text.lower(), f"{word!r} left the function"


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_no_subject_leaves_in_rows_requests_storage_or_logs(
    mode, sim, azurite, recording_proxy, container, container_name
):
    code, log = _run(sim, azurite, recording_proxy, container_name, mode, KEY if mode == "hash" else None)

    assert code == 0, log
    assert "dead-lettered" in log
    rows = {row["MessageTraceId"]: row for row in sim.ingestion.rows()}
    assert sorted(rows) == sorted(set(SUBJECTS) - {REFUSED, BROKEN})
    _assert_no_subject(
        json.dumps(sim.ingestion.rows()),
        _sent_to_ingestion(sim),
        _stored(azurite, recording_proxy, container),
        log,
    )
    assert all(row["TruncatedFields"] == "" for row in rows.values())
    letters = [
        json.loads(container.download_blob(blob.name).readall())
        for blob in container.list_blobs(name_starts_with="deadletter/")
    ]
    assert sorted(letter["record"]["id"] for letter in letters) == [REFUSED, BROKEN]
    policy = SubjectPolicy(SubjectMode(mode), parse_hash_key(KEY) if mode == "hash" else None)
    for trace_id, row in rows.items():
        assert row["Subject"] == policy.apply(SUBJECTS[trace_id])
    for letter in letters:
        assert letter["record"]["subject"] == policy.apply(SUBJECTS[letter["record"]["id"]])
    if mode == "hash":
        assert rows["mail-000"]["Subject"] == rows["mail-001"]["Subject"] != rows["mail-002"]["Subject"]
    else:
        assert {row["Subject"] for row in rows.values()} == {""}


def test_another_key_gives_other_values_and_the_row_ids_do_not_change(
    sim, azurite, recording_proxy, container, container_name
):
    first_code, first_log = _run(sim, azurite, recording_proxy, container_name, "hash", KEY)
    first = {row["MessageTraceId"]: row for row in sim.ingestion.rows()}
    sim.reset()
    for blob in container.list_blobs():
        container.delete_blob(blob.name)
    second_code, second_log = _run(sim, azurite, recording_proxy, container_name, "hash", OTHER_KEY)
    second = {row["MessageTraceId"]: row for row in sim.ingestion.rows()}

    assert (first_code, second_code) == (0, 0), first_log + second_log
    assert sorted(first) == sorted(second)
    for trace_id in first:
        assert first[trace_id]["Subject"] != second[trace_id]["Subject"]
        assert first[trace_id]["RowId"] == second[trace_id]["RowId"]


def test_a_bad_subject_mode_is_refused_before_any_request(sim, azurite, recording_proxy, container_name):
    code, log = _run(sim, azurite, recording_proxy, container_name, "redact")

    assert code == 2, log
    assert "SUBJECT_MODE" in log
    assert "keep, hash, drop" in log
    assert not sim.graph.requests()
    assert not sim.ingestion.requests()
    assert not list(recording_proxy.sent)
    assert ACCOUNT  # the proxy stands for this account: nothing reached it
