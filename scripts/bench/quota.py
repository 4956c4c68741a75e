"""Benchmark (a): a catch-up under the modelled Graph quota, and the live feed beside a backfill.

Runs ``python -m connector run`` (and ``backfill``) as child processes against the
simulator (Graph quota modelled: 100 requests per 5 minutes, 429 + Retry-After, and a
fixed latency per page) and Azurite, all sharing one quota budget blob. Prints figures
beside their targets; figures, not assertions.

Time can be scaled: ``--time-scale 5`` shrinks the quota window (300 s -> 60 s, the
simulator's and the connector's alike) and the per-page latency (2 s -> 0.4 s) by 5, and
rates are scaled back (one second here stands for 5). The connector's own CPU is not
scaled, so a scale is only fair while the connector's work per page stays well under the
scaled spacing between requests (3 s / scale): the script prints the CPU-seconds the
connector used beside the wall time. At about 1 CPU-second per 5,000-record page on this
(shared, 2-core) machine that means real time (the default, about 15 minutes for 1 M).

    .venv/bin/python scripts/bench/quota.py                       # 1 M records, real time (~15 min)
    .venv/bin/python scripts/bench/quota.py --time-scale 2        # where the connector's CPU allows
    .venv/bin/python scripts/bench/quota.py --records 200000      # quicker
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connector.simulator import Simulator, generate_traffic  # noqa: E402
from connector.simulator.azurite import start_azurite  # noqa: E402

QUOTA_REQUESTS = 100
QUOTA_WINDOW = 300.0
PAGE = 5000
ROWS_PER_MESSAGE = 1.9  # generate_traffic: one row per recipient


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(env: dict[str, str], *args: str) -> tuple[int, float, float, str]:
    """Run one connector command; return (exit code, wall seconds, CPU seconds, output)."""
    cpu_before, started = children_cpu(), time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "connector", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        done.returncode,
        time.perf_counter() - started,
        children_cpu() - cpu_before,
        done.stdout + done.stderr,
    )


def graph_answers(sim: Simulator, since: float = 0.0) -> tuple[int, int]:
    """(message trace requests answered, of which 429) since ``since`` (monotonic)."""
    answers = [r for r in sim.graph.requests(path="messageTraces") if r.time >= since]
    return len(answers), sum(1 for r in answers if r.status == 429)


def main() -> int:
    parser = argparse.ArgumentParser(description="benchmark (a): catch-up under the modelled Graph quota")
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the catch-up (about)")
    parser.add_argument("--days", type=float, default=10.0, help="range of the catch-up")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="quota window and latency divided by this"
    )
    parser.add_argument("--latency", type=float, default=2.0, help="Graph seconds per page (unscaled)")
    parser.add_argument("--headroom", type=int, default=0, help="GRAPH_QUOTA_HEADROOM")
    parser.add_argument("--live-ticks", type=int, default=3, help="live runs without, then with, a backfill")
    parser.add_argument("--skip-live", action="store_true", help="only the catch-up")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scale = args.time_scale
    window = QUOTA_WINDOW / scale

    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="connector-bench-quota-")))
    try:
        with Simulator(graph_quota=(QUOTA_REQUESTS, window)) as sim:
            sim.graph.page_latency = args.latency / scale
            now = sim.now()
            started_at = now - timedelta(days=args.days) + timedelta(minutes=10)
            messages = max(1, round(args.records / ROWS_PER_MESSAGE))
            rows = generate_traffic(started_at, now - timedelta(minutes=10), messages, seed=args.seed)
            sim.graph.add(rows)
            env = {
                **os.environ,
                **sim.connector_env(),
                "STORAGE_CONNECTION_STRING": azurite.connection_string,
                "CHECKPOINT_CONTAINER": "bench-quota",
                "INITIAL_LOOKBACK_HOURS": f"{args.days * 24 + 1:g}",
                "RUN_TIME_BUDGET_SECONDS": str(24 * 3600),
                "GRAPH_QUOTA_WINDOW_SECONDS": f"{window:g}",
                "GRAPH_QUOTA_REQUESTS": str(QUOTA_REQUESTS),
                "GRAPH_QUOTA_HEADROOM": str(args.headroom),
                "SETTLE_DELAY_MINUTES": "0",
                "PYTHONPATH": str(ROOT),
            }
            print(
                f"time scale {scale:g}: quota {QUOTA_REQUESTS} requests per {window:g} s (300 s / {scale:g}), "
                f"Graph latency {args.latency / scale:g} s per page ({args.latency:g} s / {scale:g}); "
                "rates below are scaled back to real time"
            )
            print(f"records generated                 {len(rows):,} over {args.days:g} days")

            since = time.monotonic()
            code, wall, cpu, output = run_child(env, "run")
            if code != 0:
                print(output)
                return 1
            answered, refused = graph_answers(sim, since)
            stored = len(sim.ingestion.rows())
            times = [r.time for r in sim.graph.requests(path="messageTraces") if r.time >= since]
            graph_span = max(times) - min(times) if times else wall
            budget_per_hour = (QUOTA_REQUESTS - args.headroom) * PAGE * 3600 / QUOTA_WINDOW
            per_hour = stored / (graph_span * scale) * 3600
            per_hour_run = stored / (wall * scale) * 3600
            print(f"rows stored                       {stored:,} (of {len(rows):,})")
            print(f"graph requests                    {answered} ({refused} answered 429)")
            print(
                f"mean page                         {stored / max(1, answered - refused):,.0f} records "
                f"({stored / max(1, answered - refused) / PAGE:.1%} full)   target >= 90%"
            )
            print(
                f"records/hour (first to last page) {per_hour:,.0f} = {per_hour / budget_per_hour:.3f} of the budget "
                f"({budget_per_hour:,.0f}/h: ({QUOTA_REQUESTS} - {args.headroom} headroom) x {PAGE} per 5 min)"
                "   target >= 0.95"
            )
            print(
                f"records/hour (whole run)          {per_hour_run:,.0f} = {per_hour_run / budget_per_hour:.3f} of the "
                "budget (incl. process start and the last uploads)"
            )
            print(f"429 share                         {refused / max(1, answered):.2%}   target <= 1%")
            print(
                f"connector CPU                     {cpu:.1f} CPU-s in {wall:.1f} s wall "
                f"({cpu / wall:.0%} of one core; the pace needs it below 100%)"
            )
            if stored != len(rows):
                print("NOT every record was stored")
                return 1
            if args.skip_live:
                return 0
            return live_beside_backfill(sim, env, args, window)
    finally:
        azurite.stop()


def live_beside_backfill(sim: Simulator, env: dict[str, str], args: argparse.Namespace, window: float) -> int:
    """Live ticks with no backfill, then the same with a backfill running; the live feed's lag in each."""
    stop = threading.Event()
    rate = 40.0  # new records per real second while the ticks run (about 6 pages per 60-minute overlap)

    def publish() -> None:
        number = 0
        while not stop.is_set():
            moment = datetime.now(UTC) - timedelta(seconds=1)
            batch = generate_traffic(
                moment - timedelta(seconds=1), moment, int(rate / ROWS_PER_MESSAGE) or 1, seed=10_000 + number
            )
            for row in batch:
                row["id"] = f"live-{number}-{row['id']}"
            sim.graph.add(batch)
            number += 1
            stop.wait(1.0)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    tick = window / 15  # ticks closer than the timer's 5 minutes, so the comparison takes minutes

    def ticks() -> list[tuple[float, float]]:
        lags = []
        for _ in range(args.live_ticks):
            began = time.perf_counter()
            code, wall, _, output = run_child(env, "run")
            if code != 0:
                print(output)
                raise SystemExit(1)
            lags.append((wall, live_lag(env)))
            time.sleep(max(0.0, tick - (time.perf_counter() - began)))
        return lags

    try:
        alone = ticks()
        now = sim.now()
        end = now - timedelta(days=args.days) - timedelta(hours=2)
        start = end - timedelta(days=args.days)
        history = generate_traffic(
            start, end, max(1, round(args.records / ROWS_PER_MESSAGE)), seed=args.seed + 1
        )
        for row in history:
            row["id"] = f"old-{row['id']}"
        sim.graph.add(history)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        backfill = subprocess.Popen(  # noqa: S603 - our own module
            [
                sys.executable,
                "-m",
                "connector",
                "--no-progress",
                "backfill",
                "--start",
                start.strftime(fmt),
                "--end",
                end.strftime(fmt),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(window / 10)  # let the backfill reach its pace
        beside = ticks()
        backfill_running = backfill.poll() is None
        backfill.terminate()
        backfill.wait()
    finally:
        stop.set()
        publisher.join()
    scale = args.time_scale

    def show(name: str, lags: list[tuple[float, float]]) -> None:
        walls = [w * scale for w, _ in lags]
        behind = [lag for _, lag in lags]
        print(
            f"live tick {name:<16} run {statistics.median(walls):6.1f} s median (scaled), "
            f"high-water mark {statistics.median(behind):5.1f} s behind now at its end (median, max {max(behind):.1f} s)"
        )

    print(
        f"live feed beside a backfill ({args.live_ticks} ticks each, ~{rate:g} new records/s; "
        "lag = now - high-water mark at a tick's end, real seconds)"
    )
    show("alone", alone)
    show("beside backfill", beside)
    print(f"backfill still running during every tick: {backfill_running}   target: live lag unchanged")
    return 0


def live_lag(env: dict[str, str]) -> float:
    from azure.storage.blob import ContainerClient

    from connector.checkpoint import decode_checkpoint

    container = ContainerClient.from_connection_string(
        env["STORAGE_CONNECTION_STRING"], env["CHECKPOINT_CONTAINER"]
    )
    checkpoint = decode_checkpoint(container.download_blob("live.json").readall(), where="live")
    mark = checkpoint.progress.high_water_mark
    return (datetime.now(UTC) - mark).total_seconds() if mark else float("nan")


if __name__ == "__main__":
    sys.exit(main())
