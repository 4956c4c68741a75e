"""Trying it locally: ``python -m connector.simulator serve`` and ``rows`` as a user runs them.

The simulator CLI runs as a child process, as in a terminal: its printed environment must
be complete (the connector's settings reader accepts it as is), its CA bundle must trust
the system's CAs and the simulator's and outlive it, and ``rows`` must show what a real
``python -m connector run`` stored.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from connector.settings import Settings, StoreKind
from connector.simulator import Simulator
from connector.simulator.ingestion import ADMIN_TOKEN_HEADER
from connector.simulator.local import split_pem, summarise_rows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="uses SIGINT"),
]

REPO = Path(__file__).resolve().parents[2]
# Settings the connector reads; a developer's shell may hold any of them, the test's must not.
_CONNECTOR_NAMES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CONNECTOR_NAMES}
    env["PYTHONPATH"] = str(REPO)
    return env


@contextmanager
def serving(state_dir: Path, *extra: str) -> Iterator[tuple[dict[str, str], subprocess.Popen[str]]]:
    """Run ``serve`` until its ready line; yield the exported environment; Ctrl-C it after."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector.simulator",
            "serve",
            "--messages",
            "60",
            "--future-hours",
            "0",
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        cwd=REPO,
        env=_base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("# ready"):
                break
            key, _, value = line.removeprefix("export ").rstrip("\n").partition("=")
            exports[key] = shlex.split(value)[0]
        else:
            pytest.fail(
                "serve ended before it was ready: " + (process.stderr.read() if process.stderr else "")
            )
        yield exports, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def _sourced(script: Path) -> dict[str, str]:
    """What ``. script`` sets, as a POSIX shell sees it."""
    out = subprocess.run(
        ["sh", "-c", f'. "{script}" && env -0'], env={}, capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@pytest.mark.parametrize("storage", ["azurite", "file"])
def test_serve_prints_every_setting_the_connector_needs(tmp_path: Path, storage: str) -> None:
    state = tmp_path / "state"
    dotenv_file = tmp_path / "local.env"
    extra = ["--env-file", str(dotenv_file)] + (["--no-azurite"] if storage == "file" else [])
    with serving(state, *extra) as (exports, _):
        settings = Settings.from_env(exports)
        assert settings.workspace_id == exports["WORKSPACE_ID"]
        assert settings.ca_bundle == str(state.resolve() / "ca-bundle.pem")
        if storage == "azurite":
            assert settings.checkpoint.kind is StoreKind.BLOB
            assert settings.checkpoint.connection_string == exports["STORAGE_CONNECTION_STRING"]
            assert exports["CHECKPOINT_CONTAINER"]
        else:
            assert settings.checkpoint.kind is StoreKind.FILE
            assert settings.checkpoint.directory == str(state.resolve() / "checkpoints")
        # The same environment for a second shell: `. STATE/env.sh`, or the .env file.
        sourced = _sourced(state / "env.sh")
        assert {k: sourced[k] for k in exports} == exports
        from_dotenv = _sourced_with_set_a(dotenv_file)
        assert {k: from_dotenv[k] for k in exports} == exports
        assert (state / "env.sh").stat().st_mode & 0o077 == 0  # it holds the simulator's client secret


def _sourced_with_set_a(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["sh", "-c", f'set -a; . "{path}"; env -0'], env={}, capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_ca_bundle_trusts_the_system_and_the_simulator_and_outlives_it(tmp_path: Path) -> None:
    with serving(tmp_path, "--no-azurite") as (exports, _):
        bundle = Path(exports["REQUESTS_CA_BUNDLE"])
        assert exports["SSL_CERT_FILE"] == str(bundle)
        held = set(split_pem(bundle.read_text(encoding="utf-8")))
        assert set(split_pem(Path(DEFAULT_CA_BUNDLE_PATH).read_text(encoding="utf-8"))) <= held
        # Every certificate parses, and the simulator's servers verify against it.
        context = ssl.create_default_context(cafile=str(bundle))
        assert len(context.get_ca_certs()) >= len(held) - 5  # OpenSSL drops the odd duplicate
        graph = requests.get(exports["GRAPH_BASE_URL"] + "/v1.0/x", verify=str(bundle), timeout=5)
        assert graph.status_code == 404
        content = bundle.read_bytes()
    assert bundle.read_bytes() == content
    assert not (tmp_path / "simulator.json").exists()


def test_rows_shows_what_a_connector_run_stored_as_json_lines(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as (exports, _):
        run = subprocess.run(
            [sys.executable, "-m", "connector", "--no-progress", "run"],
            cwd=tmp_path,
            env={**_base_env(), **exports},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        uploaded = int(
            next(ln.split()[-1] for ln in run.stdout.splitlines() if ln.startswith("rows uploaded"))
        )
        assert uploaded > 0
        output = tmp_path / "rows.jsonl"
        rows_cmd = [sys.executable, "-m", "connector.simulator", "rows", "--state-dir", str(state)]
        to_file = subprocess.run(
            [*rows_cmd, "--output", str(output)],
            cwd=tmp_path,
            env=_base_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert to_file.returncode == 0, to_file.stderr
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == uploaded
        assert len({row["RowId"] for row in rows}) == uploaded
        assert to_file.stderr.startswith(
            f"rows {uploaded}, distinct RowId {uploaded}, duplicates by RowId 0;"
        )
        to_stdout = subprocess.run(
            rows_cmd, cwd=tmp_path, env=_base_env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert to_stdout.returncode == 0, to_stdout.stderr
        assert [json.loads(line) for line in to_stdout.stdout.splitlines()] == rows
    stopped = subprocess.run(
        rows_cmd, cwd=tmp_path, env=_base_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert stopped.returncode == 2
    assert "no simulator is running" in stopped.stderr


def test_summary_counts_a_row_stored_twice_as_one_duplicate_and_a_status_change_as_none() -> None:
    rows = [
        {"RowId": "a", "Status": "Pending"},
        {"RowId": "b", "Status": "Delivered"},  # the same message, its new status: a new RowId
        {"RowId": "b", "Status": "Delivered"},  # sent again after a crash
        {"RowId": "", "Status": "Failed"},
    ]
    assert summarise_rows(rows) == (
        "rows 4, distinct RowId 2, duplicates by RowId 1, without RowId 1; "
        "per status: Delivered 2, Failed 1, Pending 1"
    )


def test_admin_rows_route_wants_the_admin_token(sim: Simulator) -> None:
    url = f"{sim.ingestion.url}/admin/rows"
    assert requests.get(url, timeout=5).status_code == 403
    assert requests.get(url, headers={ADMIN_TOKEN_HEADER: "guess"}, timeout=5).status_code == 403
    answer = requests.get(url, headers={ADMIN_TOKEN_HEADER: sim.ingestion.admin_token}, timeout=5)
    assert answer.status_code == 200
    assert answer.text == ""
    assert all(ADMIN_TOKEN_HEADER.lower() not in r.headers for r in sim.ingestion.requests())


def test_serve_with_tenants_sets_tenants_and_gives_each_tenant_its_own_traffic(tmp_path: Path) -> None:
    import msal

    state = tmp_path / "state"
    with serving(state, "--no-azurite", "--tenants", "3") as (exports, _):
        tenants = json.loads(exports["TENANTS"])
        assert [entry["tenantId"] for entry in tenants][0] == exports["TENANT_ID"]
        assert len({entry["name"] for entry in tenants}) == len({entry["tenantId"] for entry in tenants}) == 3
        assert set(tenants[0]) == {"name", "tenantId", "localDomains"}  # the deployment's own destination
        for entry in tenants[1:]:
            assert entry["ingestionEndpoint"] == exports["INGESTION_ENDPOINT"]
            assert entry["dcrImmutableId"] not in (
                exports["DCR_IMMUTABLE_ID"],
                tenants[0].get("dcrImmutableId"),
            )
            assert entry["workspaceId"] != exports["WORKSPACE_ID"]
        seen: list[set[str]] = []
        session = requests.Session()
        session.verify = exports["REQUESTS_CA_BUNDLE"]
        session.trust_env = False  # else this process's own REQUESTS_CA_BUNDLE (if any) wins over verify
        for entry in tenants:
            app = msal.ConfidentialClientApplication(
                exports["CLIENT_ID"],
                client_credential=exports["CLIENT_SECRET"],
                authority=f"{exports['AUTHORITY_HOST']}/{entry['tenantId']}",
                instance_discovery=False,
                http_client=session,
            )
            token = app.acquire_token_for_client([exports["GRAPH_SCOPE"]])["access_token"]
            page = session.get(
                exports["GRAPH_BASE_URL"] + "/v1.0/admin/exchange/tracing/messageTraces",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert page.status_code == 200, page.text
            rows = page.json()["value"]
            assert rows
            addresses = {row[key].lower() for row in rows for key in ("senderAddress", "recipientAddress")}
            own_domains = tuple("@" + domain for domain in entry["localDomains"])
            theirs = tuple("@" + d for other in tenants if other is not entry for d in other["localDomains"])
            assert any(address.endswith(own_domains) for address in addresses)
            assert not any(address.endswith(theirs) for address in addresses)
            seen.append({row["id"] for row in rows})
        assert not seen[0] & seen[1]  # each tenant its own mail
        assert not seen[1] & seen[2]
        rows_cmd = [sys.executable, "-m", "connector.simulator", "rows", "--state-dir", str(state)]
        own = subprocess.run(
            [*rows_cmd, "--dcr", tenants[1]["dcrImmutableId"]],
            cwd=tmp_path,
            env=_base_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert own.returncode == 0, own.stderr
        assert own.stdout == ""
        assert own.stderr.startswith("rows 0,")


def test_serve_with_a_shared_table_lists_no_destinations(tmp_path: Path) -> None:
    with serving(tmp_path / "state", "--no-azurite", "--tenants", "2", "--shared-table") as (exports, _):
        tenants = json.loads(exports["TENANTS"])
        assert [set(entry) for entry in tenants] == [{"name", "tenantId", "localDomains"}] * 2
