"""Benchmark: one catch-up run of the connector over N generated records.

Runs ``python -m connector run`` as a child process against the simulator and
Azurite, and prints records/s, requests per 1,000 records (Graph, ingestion,
checkpoint saves) and the child's peak RSS. Figures, not assertions: compare
runs on the same machine.

    .venv/bin/python scripts/bench/catchup.py --messages 50000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connector.simulator import Simulator, generate_traffic  # noqa: E402
from connector.simulator.azurite import start_azurite  # noqa: E402


def high_water_rss_kib(pid: int) -> int:
    """VmHWM of a running process. (getrusage's ru_maxrss would count the parent's memory,
    which Linux carries across fork and exec, and the parent here holds the simulator's data.)"""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="one catch-up run over generated message trace")
    parser.add_argument("--messages", type=int, default=50_000, help="messages to generate (rows ~1.9x)")
    parser.add_argument("--hours", type=float, default=48.0, help="span of the generated traffic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the connector process to FILE")
    args = parser.parse_args()

    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="connector-bench-")))
    try:
        with Simulator(graph_quota=(100_000, 300.0)) as sim:
            now = sim.now()
            rows = generate_traffic(
                now - timedelta(hours=args.hours), now - timedelta(minutes=5), args.messages, seed=args.seed
            )
            sim.graph.add(rows)
            env = {
                **os.environ,
                **sim.connector_env(),
                "STORAGE_CONNECTION_STRING": azurite.connection_string,
                "CHECKPOINT_CONTAINER": "bench",
                "INITIAL_LOOKBACK_HOURS": str(args.hours + 1),
                "RUN_TIME_BUDGET_SECONDS": "3600",
                # CPU and throughput, not the quota (benchmark (a)): the governor must not pace this run.
                "GRAPH_QUOTA_REQUESTS": "10000",
                "PYTHONPATH": str(ROOT),
            }
            started = time.perf_counter()
            child = subprocess.Popen(
                [
                    sys.executable,
                    *(["-m", "cProfile", "-o", args.profile] if args.profile else []),
                    "-m",
                    "connector",
                    "--no-progress",
                    "run",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            peak_kib = 0
            while child.poll() is None:
                peak_kib = max(peak_kib, high_water_rss_kib(child.pid))
                time.sleep(0.02)
            stdout, stderr = child.communicate()
            elapsed = time.perf_counter() - started
            if child.returncode != 0:
                print(stdout, stderr)
                return 1
            stored = len(sim.ingestion.rows())
            graph_requests = len(sim.graph.requests(path="messageTraces"))
            ingestion_requests = sim.ingestion.request_count
            saves = next(
                int(line.split()[-1]) for line in stdout.splitlines() if line.startswith("checkpoint saves")
            )
            uncompressed = sum(batch.uncompressed_bytes for batch in sim.ingestion.batches())
            sent = sum(batch.body_bytes for batch in sim.ingestion.batches())
            per_k = 1000 / max(stored, 1)
            print(f"records generated            {len(rows)}")
            print(f"rows stored                  {stored}")
            print(f"wall time                    {elapsed:.2f} s (child process, incl. interpreter start)")
            print(f"records/s                    {stored / elapsed:,.0f}")
            print(f"graph requests / 1k rows     {graph_requests * per_k:.2f} ({graph_requests} total)")
            print(
                f"ingestion requests / 1k rows {ingestion_requests * per_k:.2f} ({ingestion_requests} total)"
            )
            print(f"checkpoint saves / 1k rows   {saves * per_k:.2f} ({saves} total)")
            print(
                f"upload bytes per row         {uncompressed / max(stored, 1):.0f} json, {sent / max(stored, 1):.0f} gzip"
            )
            print(f"peak RSS of the connector    {peak_kib / 1024:.1f} MiB")
            return 0 if stored == len(rows) else 1
    finally:
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
