"""What a reader of the storage account or of the logs can learn: no secret, no SAS, no recipient, no subject.

Everything the connector writes to Blob Storage goes through a recording proxy, and
its logs are read at INFO (the level the Functions host records), over a run that
dead-letters a row the service refuses (with words that echo the address), is killed
after the service took a batch (so an intent stays in the checkpoint), and is run
again. Only the dead letters may hold raw records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import AccountSasPermissions, BlobLeaseClient, ResourceTypes, generate_account_sas

from connector.simulator.azurite import ACCOUNT, ACCOUNT_KEY
from tests.crash.blob_proxy import KillingBlobProxy, requests_in
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 60


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def recipient(number: int) -> str:
    return f"victim{number:03d}@fabrikam.example"


def subject(number: int) -> str:
    return f"Merger terms draft {number:03d}"


@pytest.fixture
def recording_proxy(azurite):
    proxy = KillingBlobProxy(azurite.port, record=True)
    yield proxy
    proxy.close()


def run_cli(env: dict[str, str], *args: str, kill: threading.Event | None = None) -> tuple[int, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "--log-level", "INFO", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill is not None:
        threading.Thread(
            target=lambda: kill.wait(60) and os.kill(process.pid, signal.SIGKILL), daemon=True
        ).start()
    out, err = process.communicate(timeout=120)
    return process.returncode, out + err


def test_storage_and_logs_hold_no_secret_sas_recipient_or_subject(
    sim, azurite, recording_proxy, container, container_name
):
    sas = generate_account_sas(
        ACCOUNT,
        ACCOUNT_KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, create=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = next(part.split("=", 1)[1] for part in sas.split("&") if part.startswith("sig="))
    env = {
        **os.environ,
        **sim.connector_env(),
        "STORAGE_CONNECTION_STRING": (
            f"BlobEndpoint=http://127.0.0.1:{recording_proxy.port}/{ACCOUNT};SharedAccessSignature={sas}"
        ),
        "CHECKPOINT_CONTAINER": container_name,
        "INITIAL_LOOKBACK_HOURS": "2",
        "SETTLE_DELAY_MINUTES": "1",
        "HTTP_MAX_RETRIES": "2",
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
        "WORKSPACE_ID": sim.workspace_id,
        "VERIFY_INGESTION_DELAY_MINUTES": "0",
        "PYTHONPATH": str(ROOT),
    }
    now = sim.now()
    sim.graph.add(
        [
            trace(
                f"mail-{i:03d}",
                recipient(i),
                at(now - timedelta(minutes=10 + i)),
                sender=f"sender{i:03d}@contoso.com",
                subject=subject(i),
            )
            for i in range(MESSAGES)
        ]
    )
    refused_id = "mail-007"
    sim.ingestion.refuse_row = lambda row: (
        f"row with RecipientAddress {row['RecipientAddress']} refused"
        if row["MessageTraceId"] == refused_id
        else None
    )
    accepted = threading.Event()
    sim.ingestion.on_accepted = lambda batch: accepted.set()

    killed_code, killed_log = run_cli(env, "run", kill=accepted)
    sim.ingestion.on_accepted = None
    BlobLeaseClient(container.get_blob_client("locks/live.lock")).break_lease(lease_break_period=0)
    code, log = run_cli(env, "run")

    assert killed_code == -signal.SIGKILL
    assert code == 0, log
    assert "dead-lettered" in log
    writes = [
        (line, body)
        for stream in recording_proxy.sent
        for line, body in requests_in(stream)
        if line.startswith(("PUT ", "POST ")) and "/deadletter/" not in line.split("?", 1)[0]
    ]
    assert any(b'"pending_batch":{' in body for _, body in writes), "no intent was written"
    written = b"\n".join(body for _, body in writes).decode("utf-8", "replace")
    secrets = [signature, sim.client_secret, "eyJ"]
    for text, where in ((written, "storage"), (killed_log + log, "logs")):
        for secret in secrets:
            assert secret not in text, f"{secret[:6]}… in {where}"
        for number in range(MESSAGES):
            assert recipient(number) not in text.lower(), f"recipient in {where}"
            assert subject(number) not in text, f"subject in {where}"
    # Nor a trace id: beside the ledger's digests of (trace id, recipient) it would let a list of
    # addresses be tried against them.
    for number in range(MESSAGES):
        assert f"mail-{number:03d}" not in written
