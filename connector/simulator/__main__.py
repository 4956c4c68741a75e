"""``python -m connector.simulator serve|rows``: try the connector locally.

Why: a developer can point a locally running connector (or curl) at the simulator
without writing a test. ``serve`` starts Azurite (blob checkpoint) and the simulator,
generates traffic for the last two days (plus the next day, which appears as the real
clock reaches it, 5-10 minutes late, like the real service), prints the complete
connector environment as ``export K=V`` lines (also written to ``STATE_DIR/env.sh``),
and serves until Ctrl-C. ``rows`` prints what the simulated workspace stored, as JSON
lines, with a summary (rows, distinct RowId, duplicates, per status) on stderr.

``serve --tenants N`` adds N-1 customer tenants, each with its own traffic (its own
domains), DCR and workspace, and puts the connector's ``TENANTS`` setting listing all N
in the environment (``--shared-table``: every tenant writes to the deployment's table).
``rows --dcr ID`` shows what one tenant's own DCR stored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import requests

from . import Simulator, generate_traffic, plan_status_changes, realistic_visibility
from .azurite import Azurite, start_azurite
from .ingestion import ADMIN_TOKEN_HEADER
from .local import (
    CA_BUNDLE_NAME,
    CHECKPOINT_CONTAINER,
    DEFAULT_STATE_DIR,
    ENV_SCRIPT_NAME,
    RUNNING_NAME,
    RunningSimulator,
    dotenv,
    local_environment,
    shell_exports,
    summarise_rows,
    write_ca_bundle,
    write_private,
)

EXIT_ARGUMENT = 2


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m connector.simulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="start Azurite and the simulator, print the environment, serve until Ctrl-C"
    )
    serve.add_argument(
        "--messages", type=_positive, default=3000, help="messages in the past 2 days (default 3000)"
    )
    serve.add_argument(
        "--future-hours",
        type=_non_negative,
        default=24,
        help="hours of traffic that appears live (default 24)",
    )
    serve.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    serve.add_argument(
        "--no-azurite",
        action="store_true",
        help="no Azurite: the connector keeps its checkpoint in STATE_DIR/checkpoints (file store)",
    )
    serve.add_argument(
        "--env-file", type=Path, help="also write the environment to this .env file (K='V' lines)"
    )
    serve.add_argument(
        "--tenants",
        type=_positive,
        default=1,
        help="customer tenants, each with its own traffic; more than 1 sets TENANTS (default 1)",
    )
    serve.add_argument(
        "--shared-table",
        action="store_true",
        help="with --tenants: every tenant writes to the deployment's DCR (default: each its own DCR)",
    )
    _state_dir_option(serve)
    rows = commands.add_parser(
        "rows", help="the rows the running simulator's workspace stored, as JSON lines"
    )
    rows.add_argument("--output", type=Path, help="write the JSON lines to this file (default stdout)")
    rows.add_argument(
        "--dcr", help="the rows of this DCR (a tenant's dcrImmutableId; default: the deployment's)"
    )
    _state_dir_option(rows)
    args = parser.parse_args(argv)
    if args.command == "rows":
        return _rows(args.state_dir, args.output, args.dcr)
    return _serve(args)


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"CA bundle, env.sh and the running simulator's address (default {DEFAULT_STATE_DIR}/)",
    )


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC)
    start = now - timedelta(days=2)
    end = now + timedelta(hours=args.future_hours)
    total_hours = 48 + args.future_hours
    messages = max(1, args.messages * total_hours // 48)
    rows = generate_traffic(start, end, messages, seed=args.seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    azurite: Azurite | None = None
    if args.no_azurite:
        checkpoints = state_dir / "checkpoints"
        shutil.rmtree(checkpoints, ignore_errors=True)  # a new simulator's workspace is empty
        storage = {"CHECKPOINT_STORE": "file", "CHECKPOINT_DIRECTORY": str(checkpoints)}
    else:
        try:
            azurite = start_azurite(state_dir)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            print(f"cannot start Azurite: {first}; or pass --no-azurite", file=sys.stderr)
            return EXIT_ARGUMENT
        storage = {
            "CHECKPOINT_STORE": "blob",
            "STORAGE_CONNECTION_STRING": azurite.connection_string,
            "CHECKPOINT_CONTAINER": CHECKPOINT_CONTAINER,
        }
    running = state_dir / RUNNING_NAME
    try:
        with Simulator() as sim:
            sim.graph.add(rows, visible_at=realistic_visibility(args.seed))
            sim.graph.schedule(plan_status_changes(rows, seed=args.seed))
            for index in range(1, args.tenants):
                tenant = sim.add_tenant()
                seed = args.seed + index
                traffic = generate_traffic(
                    start, end, messages, seed=seed, local_domains=tenant.local_domains
                )
                tenant.graph.add(traffic, visible_at=realistic_visibility(seed))
                tenant.graph.schedule(plan_status_changes(traffic, seed=seed))
            bundle = write_ca_bundle(state_dir, Path(sim.ca_bundle_path).read_text(encoding="utf-8"))
            env = local_environment(
                sim.connector_env(),
                workspace_id=sim.workspace_id,
                ca_bundle=bundle,
                storage=storage,
                initial_lookback_hours=48,
            )
            if args.tenants > 1:
                env["TENANTS"] = sim.tenants_setting(own_destination=not args.shared_table)
            write_private(state_dir / ENV_SCRIPT_NAME, shell_exports(env))
            if args.env_file is not None:
                write_private(args.env_file.resolve(), dotenv(env))
            RunningSimulator(f"{sim.ingestion.url}/admin/rows", sim.ingestion.admin_token, os.getpid()).save(
                state_dir
            )
            signal.signal(signal.SIGTERM, on_signal)
            try:  # Ctrl-C may come as soon as the ready line is out, even before it is all written
                sys.stdout.write(shell_exports(env))
                total = sum(len(tenant.graph.rows()) for tenant in sim.tenants)
                sys.stdout.write(
                    f"# ready: {total} trace rows in {len(sim.tenants)} tenant(s), state in {state_dir}\n"
                )
                sys.stdout.flush()
                print(
                    f"# {len(rows)} trace rows from {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z; "
                    f"storage: {'file store' if azurite is None else 'Azurite'}. In another shell:\n"
                    f"#   . {state_dir / ENV_SCRIPT_NAME} && python -m connector run\n"
                    f"#   python -m connector.simulator rows --state-dir {state_dir} --output rows.jsonl\n"
                    "# Ctrl-C to stop (the CA bundle and env.sh stay)",
                    file=sys.stderr,
                )
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        running.unlink(missing_ok=True)
        if azurite is not None:
            azurite.stop()
    return 0


def _rows(state_dir: Path, output: Path | None, dcr: str | None = None) -> int:
    """Fetch the stored rows from the running simulator; JSON lines out, summary on stderr."""
    running = RunningSimulator.load(state_dir)
    if running is None:
        print(
            f"no simulator is running with state directory {state_dir}: start "
            "`python -m connector.simulator serve` (or pass its --state-dir)",
            file=sys.stderr,
        )
        return EXIT_ARGUMENT
    try:
        response = requests.get(
            running.admin_url,
            params={"dcr": dcr} if dcr else None,
            headers={ADMIN_TOKEN_HEADER: running.admin_token},
            verify=str(state_dir / CA_BUNDLE_NAME),
            timeout=60,
        )
    except requests.RequestException as error:
        print(
            f"the simulator recorded in {state_dir / RUNNING_NAME} (pid {running.pid}) does not answer "
            f"({type(error).__name__}): start it again",
            file=sys.stderr,
        )
        return EXIT_ARGUMENT
    if response.status_code != 200:
        print(f"the simulator refused the rows request (HTTP {response.status_code})", file=sys.stderr)
        return 1
    text = response.content.decode("utf-8")
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        output.write_text(text, encoding="utf-8")
    print(summarise_rows(json.loads(line) for line in text.splitlines() if line), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
