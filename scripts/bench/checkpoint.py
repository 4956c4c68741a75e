"""Benchmarks (c) and (e): the connector's peak memory, and checkpoint bytes written per 1,000 rows.

Runs ``python -m connector run`` as a child process against the simulator and Azurite
(through a byte-counting proxy), and prints each figure beside its target:

(e) checkpoint bytes written per 1,000 rows stored, with the live feed's dedup ledger
    already holding 10 k, 100 k and 500 k entries (target: flat, within 2x across them);
(c) the connector's peak RSS with a 500 k-entry ledger, and over a 1 M-record range
    spread over 10 days (target: <= 200 MB each).

    .venv/bin/python scripts/bench/checkpoint.py                  # all of it (a few minutes)
    .venv/bin/python scripts/bench/checkpoint.py --ledgers 10000,100000 --range-records 0

Figures, not assertions: nothing here is run by the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from azure.storage.blob import ContainerClient  # noqa: E402

from connector.checkpoint import LIVE_FEED, encode_snapshot  # noqa: E402
from connector.ledger import LedgerEntry, epoch_ms  # noqa: E402
from connector.simulator import Simulator, generate_traffic  # noqa: E402
from connector.simulator.azurite import ACCOUNT, ACCOUNT_KEY, start_azurite  # noqa: E402
from connector.state import Checkpoint, FeedProgress  # noqa: E402
from connector.store import BlobCheckpointStore  # noqa: E402
from scripts.bench.catchup import high_water_rss_kib  # noqa: E402
from tests.crash.blob_proxy import KillingBlobProxy, requests_in  # noqa: E402

MEMORY_TARGET_MB = 200.0


def run_child(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Run the connector; return (exit code, peak RSS in MB, output)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "connector", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_kib = 0
    started = time.monotonic()
    timeline: list[tuple[float, int]] = []
    while child.poll() is None:
        now_kib = high_water_rss_kib(child.pid)
        if now_kib > peak_kib:
            timeline.append((time.monotonic() - started, now_kib))
        peak_kib = max(peak_kib, now_kib)
        time.sleep(0.01)
    if os.environ.get("BENCH_TIMELINE"):
        print(
            "rss timeline:",
            [(round(t, 1), k // 1024) for t, k in timeline][::25],
            "end",
            round(time.monotonic() - started, 2),
        )
    output, _ = child.communicate()
    return child.returncode, peak_kib / 1024, output


def checkpoint_bytes_written(proxy: KillingBlobProxy, feed: str) -> tuple[int, int]:
    """Bytes of request bodies the connector PUT to the feed's snapshot and to its journal."""
    snapshot = journal = 0
    for stream in proxy.sent:
        for line, body in requests_in(stream):
            if not line.startswith("PUT "):
                continue
            path = line.split()[1].split("?")[0]
            if path.endswith(f"/{feed}.json"):
                snapshot += len(body)
            elif f"/journal/{feed}/" in path:
                journal += len(body)
    return snapshot, journal


def seeded_ledger(entries: int, received: datetime) -> dict[str, LedgerEntry]:
    """``entries`` ledger entries received inside the re-read span (so no run prunes them)."""
    at = epoch_ms(received)
    return {
        hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest(): LedgerEntry(
            at + i % 600_000, "Delivered", 0
        )
        for i in range(entries)
    }


def ledger_case(
    azurite_port: int, connection: str, ledger_entries: int, messages: int, *, compact_first: bool
) -> tuple[float, float, int]:
    """One live run of ``messages`` messages over a ledger of ``ledger_entries``: (bytes/1k rows, peak MB, rows).

    ``compact_first``: seed a snapshot without a journal, so the run's first save writes a
    whole new snapshot (the memory case must include a compaction of the large ledger);
    otherwise the feed is in its steady state, a snapshot and its journal.
    """
    proxy = KillingBlobProxy(azurite_port, record=True)
    container_name = f"bench-{ledger_entries}-{'c' if compact_first else 's'}"
    try:
        with Simulator() as sim:
            now = sim.now()
            mark = now - timedelta(hours=1)
            sim.graph.add(
                generate_traffic(mark - timedelta(minutes=30), now - timedelta(minutes=5), messages, seed=3)
            )
            container = ContainerClient.from_connection_string(connection, container_name)
            store = BlobCheckpointStore(container)
            seeded = Checkpoint(
                progress=FeedProgress(
                    feed=LIVE_FEED, high_water_mark=mark, coverage_start=mark - timedelta(days=1)
                ),
                ledger=seeded_ledger(ledger_entries, mark - timedelta(minutes=20)),
            )
            if compact_first:
                store.load(LIVE_FEED)  # creates the container
                container.upload_blob(f"{LIVE_FEED}.json", encode_snapshot(seeded, journal=""))
            else:
                store.save(seeded, None)
            del seeded
            proxy.sent.clear()
            endpoint = f"http://127.0.0.1:{proxy.port}/{ACCOUNT}"
            env = {
                **os.environ,
                **sim.connector_env(),
                "STORAGE_CONNECTION_STRING": (
                    f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={endpoint};"
                ),
                "CHECKPOINT_CONTAINER": container_name,
                "LEDGER_WARN_ENTRIES": "10000000",
                "RUN_TIME_BUDGET_SECONDS": "3600",
                "PYTHONPATH": str(ROOT),
            }
            code, peak_mb, output = run_child(["run"], env)
            if code != 0:
                print(output)
                raise SystemExit(f"the connector exited {code}")
            rows = len(sim.ingestion.rows())
            snapshot, journal = checkpoint_bytes_written(proxy, LIVE_FEED)
            return (snapshot + journal) * 1000 / max(rows, 1), peak_mb, rows
    finally:
        proxy.close()


def range_case(connection: str, records: int) -> tuple[float, int]:
    """A first run over ``records`` rows spread over 10 days: (peak MB, rows stored)."""
    # The quota is not what this measures (benchmark (a) does): the simulator's and the governor's are lifted.
    with Simulator(graph_quota=(100_000, 300.0)) as sim:
        now = sim.now()
        messages = max(1, int(records / 1.9))  # about 1.9 rows per message
        sim.graph.add(
            generate_traffic(now - timedelta(days=10), now - timedelta(minutes=5), messages, seed=5)
        )
        env = {
            **os.environ,
            **sim.connector_env(),
            "STORAGE_CONNECTION_STRING": connection,
            "CHECKPOINT_CONTAINER": "bench-range",
            "INITIAL_LOOKBACK_HOURS": str(10 * 24 + 1),
            "GRAPH_QUOTA_REQUESTS": "10000",
            "LEDGER_WARN_ENTRIES": "10000000",
            "RUN_TIME_BUDGET_SECONDS": "7200",
            "PYTHONPATH": str(ROOT),
        }
        code, peak_mb, output = run_child(["run"], env)
        if code != 0:
            print(output)
            raise SystemExit(f"the connector exited {code}")
        return peak_mb, len(sim.ingestion.rows())


def main() -> int:
    parser = argparse.ArgumentParser(description="checkpoint bytes per 1,000 rows, and peak memory")
    parser.add_argument("--ledgers", default="10000,100000,500000", help="ledger sizes, comma-separated")
    parser.add_argument(
        "--messages", type=int, default=20_000, help="messages each ledger case reads (~1.9 rows each)"
    )
    parser.add_argument(
        "--range-records", type=int, default=1_000_000, help="rows of the 10-day case (0: skip)"
    )
    args = parser.parse_args()

    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="connector-bench-")))
    try:
        per_k: dict[int, float] = {}
        sizes = [int(part) for part in args.ledgers.split(",") if part]
        for size in sizes:
            per_k[size], peak, rows = ledger_case(
                azurite.port, azurite.connection_string, size, args.messages, compact_first=False
            )
            print(
                f"(e) ledger {size:>7,} entries: {per_k[size]:>9,.0f} checkpoint bytes per 1,000 rows "
                f"({rows:,} rows, snapshot and journal, compactions included); peak RSS {peak:.0f} MB"
            )
        if per_k:
            spread = max(per_k.values()) / min(per_k.values())
            verdict = "OK" if spread <= 2 else "MISSED"
            print(f"(e) spread across ledger sizes: {spread:.2f}x   target: <= 2x (flat)  {verdict}")
            print(
                "    (a compaction rewrites the snapshot once the journal outgrows it, so over a long run it adds "
                "at most the journal's own bytes again: within 2x whatever the ledger)"
            )
            largest = max(sizes)
            _, peak, _ = ledger_case(
                azurite.port, azurite.connection_string, largest, args.messages, compact_first=True
            )
            verdict = "OK" if peak <= MEMORY_TARGET_MB else "MISSED"
            print(
                f"(c) peak RSS with a {largest:,}-entry ledger, a compaction of it included: {peak:.0f} MB   "
                f"target: <= {MEMORY_TARGET_MB:.0f} MB  {verdict}"
            )
        if args.range_records:
            peak, rows = range_case(azurite.connection_string, args.range_records)
            print(
                f"(c) peak RSS over a {rows:,}-row 10-day range: {peak:.0f} MB   "
                f"target: <= {MEMORY_TARGET_MB:.0f} MB  {'OK' if peak <= MEMORY_TARGET_MB else 'MISSED'}"
            )
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
