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

Then the live feed beside a backfill (target: its lag unchanged). New live records
appear in Graph every second (visible at once); live ``run`` ticks on a fixed grid
(every 60 s / scale, so the live feed asks for about 5-10 requests per window, inside
its 20 % reserve) store them. Measured as in ``live.py`` (benchmark (g)): per row of
revision 0, the time the simulator accepted it minus the time the record became
visible, p50/p95, over the same number of ticks with the quota idle ("alone") and then
beside a backfill that holds the shared budget blob at its cap. The grid makes the wait
for the next tick identical in both phases, so the difference is the backfill's cost to
a tick; the target allows one more page (2 s latency + 3 s live pacing, scaled). Each
phase's 429 share (live and backfill apart) is printed, and at the end every generated
record (catch-up, live, backfill) is checked stored exactly once by (trace id,
recipient, status, revision).

    .venv/bin/python scripts/bench/quota.py                       # 1 M records, real time (~25 min)
    .venv/bin/python scripts/bench/quota.py --records 200000      # quicker (~17 min)
    .venv/bin/python scripts/bench/quota.py --time-scale 2        # where the connector's CPU allows
    .venv/bin/python scripts/bench/quota.py --skip-catchup        # only the live feed beside a backfill (~12 min)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connector.simulator import Simulator, generate_traffic  # noqa: E402
from connector.simulator.azurite import start_azurite  # noqa: E402
from scripts.bench.live import percentile  # noqa: E402

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
    parser.add_argument(
        "--live-ticks", type=int, default=5, help="measured live ticks alone, then as many beside a backfill"
    )
    parser.add_argument(
        "--tick-seconds", type=float, default=60.0, help="live tick spacing (unscaled; a fifth of the window)"
    )
    parser.add_argument("--live-rate", type=float, default=5.0, help="new live records per real second")
    parser.add_argument(
        "--backfill-records",
        type=int,
        default=0,
        help="records of the backfill (default: enough to outlast the ticks beside it)",
    )
    parser.add_argument("--skip-live", action="store_true", help="only the catch-up")
    parser.add_argument("--skip-catchup", action="store_true", help="only the live feed beside a backfill")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.skip_live and args.skip_catchup:
        parser.error("--skip-live and --skip-catchup leave nothing to measure")
    scale = args.time_scale
    window = QUOTA_WINDOW / scale

    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="connector-bench-quota-")))
    try:
        with Simulator(graph_quota=(QUOTA_REQUESTS, window)) as sim:
            sim.graph.page_latency = args.latency / scale
            now = sim.now()
            started_at = now - timedelta(days=args.days) + timedelta(minutes=10)
            messages = max(1, round(args.records / ROWS_PER_MESSAGE))
            rows = (
                []
                if args.skip_catchup
                else generate_traffic(started_at, now - timedelta(minutes=10), messages, seed=args.seed)
            )
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
            if args.skip_catchup:
                return live_beside_backfill(sim, env, args, window, catch_up=rows)
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
            return live_beside_backfill(sim, env, args, window, catch_up=rows)
    finally:
        azurite.stop()


LIVE_ID = "live-"
OLD_ID = "old-"


@dataclass
class Phase:
    """One measured stretch of live ticks: when it ran, the ticks' runs, the records published in it."""

    name: str
    began: float = 0.0
    ended: float = 0.0
    ticks: list[tuple[float, float]] = field(default_factory=list)
    """Per tick: (monotonic start, wall seconds of the ``run`` process)."""
    ids: set[str] = field(default_factory=set)


class Publisher(threading.Thread):
    """New live traffic every second, visible in Graph from the moment it is added.

    Each record's receive time is a second or two in the past, and the simulator's
    publication delay is 0, so the record shows in query results as soon as ``add``
    returns: that monotonic moment is its ``visible`` time (an upper bound, so delays
    are if anything under-stated by the few milliseconds ``add`` takes). Records are
    tagged with the phase running when they appeared.
    """

    def __init__(self, sim: Simulator, rate: float) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.messages = max(1, round(rate / ROWS_PER_MESSAGE))
        self.visible: dict[str, float] = {}
        self.generated: list[dict[str, object]] = []
        self.phase: Phase | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.halt.is_set():
            moment = datetime.now(UTC)
            batch = generate_traffic(
                moment - timedelta(seconds=2),
                moment - timedelta(seconds=1),
                self.messages,
                seed=10_000 + number,
            )
            for row in batch:
                row["id"] = f"{LIVE_ID}{number}-{row['id']}"
            self.sim.graph.add(batch)
            shown, phase = time.monotonic(), self.phase
            for row in batch:
                trace_id = str(row["id"])
                self.visible.setdefault(trace_id, shown)
                if phase is not None:
                    phase.ids.add(trace_id)
            self.generated.extend(batch)
            number += 1
            self.halt.wait(1.0)


def classify(request_url: str, cutoff: datetime) -> str:
    """``live`` or ``backfill``: a message trace request's filter starts after ``cutoff`` or before it."""
    found = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", urllib.parse.unquote(request_url))
    if found is None:
        return "live"
    start = datetime.strptime(found.group(0), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return "backfill" if start < cutoff else "live"


def live_beside_backfill(
    sim: Simulator,
    env: dict[str, str],
    args: argparse.Namespace,
    window: float,
    *,
    catch_up: list[dict[str, object]],
) -> int:
    """The live feed's delay from visible to stored, alone and then beside a running backfill.

    What is compared: live ticks on a fixed grid (every ``--tick-seconds`` / scale, a fifth
    of the quota window, so the live feed asks for about 5-10 requests per window, well
    inside its reserve of 20), over the same number of ticks, with the same new traffic,
    first with Graph's quota idle and then beside a backfill that keeps the shared budget
    at its own cap. The wait for the next tick is the same in both phases by construction
    (the grid), so a difference between the phases is what the backfill does to a tick's
    own run. Both start from an idle quota (simulator count and budget blob cleared),
    so the catch-up's requests in the last window do not throttle the "alone" ticks.
    """
    scale = args.time_scale
    tick = args.tick_seconds / scale
    live_env = env
    # The budget of the catch-up's window is spent: start the comparison with an idle quota, as if a
    # window had passed (the simulator's count and the shared budget blob). The live checkpoint is kept:
    # a fresh one would re-read the catch-up's last hour with an empty ledger and store it twice.
    from azure.storage.blob import ContainerClient

    from connector.quota_store import quota_blob_name

    sim.graph.quota.reset()
    container = ContainerClient.from_connection_string(
        env["STORAGE_CONNECTION_STRING"], env["CHECKPOINT_CONTAINER"]
    )
    if container.exists():
        container.get_blob_client(quota_blob_name(sim.tenant_id)).delete_blob(delete_snapshots="include")
    reserve = 20.0
    backfill_cap = math.floor((QUOTA_REQUESTS - args.headroom) * (1 - reserve / 100))
    warm_up = window / 10
    records = args.backfill_records or round(
        1.2 * (warm_up + (args.live_ticks + 1) * tick) / (window / backfill_cap) * PAGE * 0.85
    )
    now = sim.now()
    end = (now - timedelta(days=args.days, hours=2)).replace(microsecond=0)
    start = end - timedelta(days=args.days)
    history = generate_traffic(start, end, max(1, round(records / ROWS_PER_MESSAGE)), seed=args.seed + 1)
    for row in history:
        row["id"] = f"{OLD_ID}{row['id']}"
    sim.graph.add(history)
    cutoff = end + timedelta(hours=1)

    publisher = Publisher(sim, args.live_rate)
    publisher.start()

    def run_tick(phase: Phase | None) -> None:
        began = time.monotonic()
        code, wall, _, output = run_child(live_env, "run")
        if code != 0:
            print(output)
            raise SystemExit(1)
        if phase is not None:
            phase.ticks.append((began, wall))

    def measure(phase: Phase) -> Phase:
        """Ticks at the end of each interval; the records of the last interval are stored by the last tick."""
        phase.began = time.monotonic()
        publisher.phase = phase
        for index in range(1, args.live_ticks + 1):
            due = phase.began + index * tick
            time.sleep(max(0.0, due - time.monotonic()))
            if index == args.live_ticks:
                publisher.phase = None  # what appears from now on belongs to no phase
            run_tick(phase)
        phase.ended = time.monotonic()
        return phase

    fmt = "%Y-%m-%dT%H:%M:%SZ"
    backfill_log = Path(tempfile.mkdtemp(prefix="connector-bench-backfill-")) / "backfill.log"
    try:
        run_tick(None)  # warm-up: the fresh live feed's first run reads its initial hour
        time.sleep(tick)
        alone = measure(Phase("alone"))
        with backfill_log.open("w") as log:
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
                env=live_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        backfill_began = time.monotonic()
        time.sleep(warm_up)  # let the backfill reach its pace
        beside = measure(Phase("beside backfill"))
        backfill_running = backfill.poll() is None
        backfill_code = backfill.wait()
        backfill_wall = time.monotonic() - backfill_began
    finally:
        publisher.halt.set()
        publisher.join()
    run_tick(None)  # stores what appeared after the last measured tick
    if backfill_code != 0:
        print(backfill_log.read_text()[-3000:])
        print(f"the backfill failed with exit code {backfill_code}")
        return 1

    batches = sim.ingestion.batches()
    stored_at: dict[str, list[float]] = {}
    for batch in batches:
        for row in batch.rows:
            if str(row["MessageTraceId"]).startswith(LIVE_ID) and int(row["StatusRevision"]) == 0:
                stored_at.setdefault(str(row["MessageTraceId"]), []).append(batch.time)
    requests = sim.graph.requests(path="messageTraces")

    def report(phase: Phase) -> tuple[float, int]:
        """Print one phase's figures; return (p95 delay, stored-by-its-ticks count)."""
        delays = [
            at - publisher.visible[trace_id] for trace_id in phase.ids for at in stored_at.get(trace_id, [])
        ]
        walls = [wall for _, wall in phase.ticks]
        late = max(0.0, *(began - (phase.began + (i + 1) * tick) for i, (began, _) in enumerate(phase.ticks)))
        counted = [r for r in requests if phase.began <= r.time <= phase.ended]
        by_caller: dict[str, list[int]] = {"live": [0, 0], "backfill": [0, 0]}
        for r in counted:
            entry = by_caller[classify(r.url, cutoff)]
            entry[0] += 1
            entry[1] += r.status == 429
        span_windows = (phase.ended - phase.began) / window
        p95 = percentile(delays, 0.95) if delays else math.nan
        print(
            f"  {phase.name:<16} visible -> stored p50 {percentile(delays, 0.5) if delays else math.nan:5.1f} s, "
            f"p95 {p95:5.1f} s, max {max(delays, default=math.nan):5.1f} s over {len(delays):,} rows; "
            f"tick run p50 {statistics.median(walls):4.1f} s, max {max(walls):4.1f} s, started late by <= {late:.1f} s"
        )
        live, backfill = by_caller["live"], by_caller["backfill"]
        total, refused = live[0] + backfill[0], live[1] + backfill[1]
        print(
            f"  {'':<16} Graph requests {total} ({refused} answered 429 = {refused / max(1, total):.1%}): "
            f"live {live[0]} ({live[0] / len(phase.ticks):.1f} per tick, {live[1]} x 429), "
            f"backfill {backfill[0]} ({backfill[0] / span_windows:.0f} per window, its cap {backfill_cap}; "
            f"{backfill[1]} x 429)"
        )
        return p95, len(delays)

    allowance = (args.latency + QUOTA_WINDOW / QUOTA_REQUESTS) / scale
    print(
        f"live feed beside a backfill: {args.live_ticks} ticks per phase every {tick:g} s "
        f"({args.tick_seconds:g} s / {scale:g}), ~{publisher.messages * ROWS_PER_MESSAGE:.0f} new records/s "
        f"visible at once, SETTLE_DELAY_MINUTES 0; delays in seconds at this scale"
    )
    p95_alone, _ = report(alone)
    p95_beside, _ = report(beside)
    ratio = p95_beside / p95_alone if p95_alone else math.nan
    verdict = "met" if p95_beside <= p95_alone + allowance else "NOT met"
    print(
        f"  p95 beside / alone = {ratio:.2f} ({p95_beside - p95_alone:+.1f} s)   target: unchanged, "
        f"p95 beside <= p95 alone + {allowance:g} s (one more page: {args.latency:g} s latency + "
        f"{QUOTA_WINDOW / QUOTA_REQUESTS:g} s live pacing, / {scale:g}): {verdict}"
    )
    print(
        f"  backfill: {len(history):,} records, {backfill_wall:.0f} s, "
        f"still running after the last tick beside it: {backfill_running}"
    )
    return exactly_once(
        sim,
        {"catch-up": catch_up, "live": publisher.generated, "backfill": history},
    ) or (0 if backfill_running else 1)


def exactly_once(sim: Simulator, groups: dict[str, list[dict[str, object]]]) -> int:
    """Every generated record stored once: count (trace id, recipient, status, revision) rows; 0 when so."""
    stored = Counter(
        (str(r["MessageTraceId"]), str(r["RecipientAddress"]), str(r["Status"]), int(r["StatusRevision"]))
        for r in sim.ingestion.rows()
    )
    by_record = Counter((trace_id, recipient) for trace_id, recipient, _, _ in stored.elements())
    failed = 0
    for name, rows in groups.items():
        keys = {(str(r["id"]), str(r["recipientAddress"])) for r in rows}
        missing = sum(1 for key in keys if key not in by_record)
        extra_rows = sum(
            count - 1
            for (trace_id, recipient, _, _), count in stored.items()
            if (trace_id, recipient) in keys and count > 1
        )
        revisions = sum(by_record[key] - 1 for key in keys if by_record[key] > 1)
        print(
            f"  exactly once, {name:<8} {len(keys):,} records: {missing} lost, {extra_rows} duplicated rows, "
            f"{revisions} extra revisions (no status changes were scheduled)   target 0, 0, 0"
        )
        failed += missing + extra_rows + revisions
    every = set().union(
        *({(str(r["id"]), str(r["recipientAddress"])) for r in rows} for rows in groups.values())
    )
    strangers = sum(1 for key in by_record if key not in every)
    if strangers:
        print(f"  {strangers} stored records were never generated")
    return 1 if failed or strangers else 0


if __name__ == "__main__":
    sys.exit(main())
