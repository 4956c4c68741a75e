"""Demo: the connector against the bundled simulator and Azurite, run twice.

1. Starts Azurite (blob checkpoint) and the simulator (Entra ID, Graph message trace
   with two days of generated traffic published 5-10 minutes late, Logs Ingestion).
2. Runs ``python -m connector run`` exactly as a user would.
3. Lets time "pass": new mail arrives, late records are published, pending mail
   changes status.
4. Runs it again, shows ``status``, and checks the ingested table: every record
   once, one revision row per status change, no duplicate.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.storage.blob import ContainerClient  # noqa: E402

from connector.mapping import normalise_status, parse_datetime  # noqa: E402
from connector.simulator import Simulator, generate_traffic, realistic_visibility  # noqa: E402
from connector.simulator.azurite import start_azurite  # noqa: E402
from connector.store import BlobCheckpointStore  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text}")


def connector(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector", "--no-progress", *args], cwd=ROOT, env=env, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"connector {' '.join(args)} exited with {result.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=2000, help="messages in the last two days (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="connector-demo-"))
    azurite = start_azurite(workdir)
    try:
        with Simulator() as sim:
            now = sim.now()
            history = generate_traffic(
                now - timedelta(days=2), now - timedelta(minutes=1), args.messages, seed=args.seed
            )
            sim.graph.add(history, visible_at=realistic_visibility(args.seed))
            recent = [
                r
                for r in sim.graph.rows(visible_only=True)
                if parse_datetime(r["receivedDateTime"]) > now - timedelta(minutes=45)
            ][:8]
            for row in recent:  # still in flight when the first run reads them
                sim.graph.set_status(row["id"], row["recipientAddress"], "pending")
            env = {
                **os.environ,
                **sim.connector_env(),
                "STORAGE_CONNECTION_STRING": azurite.connection_string,
                "CHECKPOINT_CONTAINER": "message-trace-demo",
                "INITIAL_LOOKBACK_HOURS": "48",
                "PYTHONPATH": str(ROOT),
            }
            store = BlobCheckpointStore(
                ContainerClient.from_connection_string(azurite.connection_string, "message-trace-demo")
            )
            banner(
                f"simulator: {len(sim.graph.rows())} trace rows ({args.messages} messages) over the last 2 days"
            )

            banner("run 1: python -m connector run")
            connector(env, "run")
            after_first = len(sim.ingestion.rows())

            banner("time passes: new mail arrives, late records are published, in-flight mail settles")
            rng = random.Random(args.seed)
            fresh = generate_traffic(
                now - timedelta(minutes=9), now - timedelta(minutes=3), 40, seed=args.seed + 1
            )
            sim.graph.add(fresh, visible_at=now)
            unpublished = len(sim.graph.rows()) - len(sim.graph.rows(visible_only=True))
            sim.graph.publish_all()
            for row in recent:
                sim.graph.set_status(
                    row["id"], row["recipientAddress"], rng.choice(["delivered", "quarantined"])
                )
            print(f"{len(fresh)} new rows, {unpublished} late rows published, {len(recent)} status changes")

            banner("run 2: python -m connector run")
            connector(env, "run")

            banner("python -m connector status")
            connector(env, "status")

            checkpoint = store.load("live")
            assert checkpoint is not None
            assert checkpoint.checkpoint.progress.high_water_mark is not None
            window_end = checkpoint.checkpoint.progress.high_water_mark
            rows = sim.ingestion.rows()
            per_row = Counter((r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in rows)
            due = [r for r in sim.graph.rows() if parse_datetime(r["receivedDateTime"]) <= window_end]
            due_keys = {(r["id"], r["recipientAddress"].lower()) for r in due}
            stored_keys = {(i, rcpt) for i, rcpt, _ in per_row}
            revisions = sum(1 for r in rows if r["StatusRevision"] > 0)
            final_missing = [
                r
                for r in due
                if (r["id"], r["recipientAddress"].lower(), normalise_status(r["status"])) not in per_row
            ]
            banner("summary")
            print(
                f"rows in EmailEvents_CL       {len(rows)} (run 1: {after_first}, run 2: {len(rows) - after_first})"
            )
            print(f"trace rows due (<= {window_end:%H:%M:%S})  {len(due_keys)}")
            print(
                f"not due yet (settle delay)   {len(sim.graph.rows()) - len(due)} (the next run takes them)"
            )
            print(f"missing from the table       {len(due_keys - stored_keys)}")
            print(f"duplicate rows               {sum(n - 1 for n in per_row.values())}")
            print(f"status revision rows         {revisions}")
            print(f"final status missing         {len(final_missing)}")
            print(f"ingestion requests           {sim.ingestion.request_count}")
            print(f"graph requests               {len(sim.graph.requests(path='messageTraces'))}")
            ok = not (due_keys - stored_keys) and max(per_row.values()) == 1 and not final_missing
            print("\nOK: every record once, status changes as revisions" if ok else "\nFAILED")
            return 0 if ok else 1
    finally:
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
