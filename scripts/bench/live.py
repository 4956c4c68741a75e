"""Benchmarks (g) and (h) of issue 13: the live feed's Graph requests per tick and its delay.

Not a test: prints figures beside their targets. For each tenant size it runs the
live feed tick by tick on the simulator, one data clock for Graph and the runs
(advanced 5 minutes per tick, the default timer schedule), with the connector's own
Graph client over HTTPS. Traffic comes from the simulator's generator, added a tick
ahead of its receive times; each message becomes visible 5-10 minutes after it was
received (98 %) or 10-60 minutes after (2 %, the late tail the deep re-read is for),
and pending records settle 2-45 minutes after receipt.

(h) Graph requests per live tick: counted from the simulator's request log, over the
    ticks after a warm-up (the first pass of the deep re-read), mean and max, as a
    share of the quota (100 requests per 5 minutes); target at 500 k records an hour:
    mean <= 50 %.
(g) Delay from a record becoming visible in Graph to its row being stored: per
    first row of a record (StatusRevision 0), the data-clock time of the tick that
    stored it minus its visible_at; target p95 <= schedule + settle + 1 min.

The checkpoint is kept in memory (its cost is benchmark (e)) and rows go to an
in-memory sink that notes the tick; the quota is not enforced (requests are counted).

    .venv/bin/python scripts/bench/live.py                      # 10 k, 100 k (3 h), 500 k (2 h)
    .venv/bin/python scripts/bench/live.py --rates 10000 --hours 3
    .venv/bin/python scripts/bench/live.py --untiered            # every tick re-reads the whole overlap
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connector.auth import graph_token_provider  # noqa: E402
from connector.graph import GraphMessageTraceSource  # noqa: E402
from connector.ports import Deadline, FeedPorts, StoredCheckpoint, UploadResult  # noqa: E402
from connector.settings import Settings  # noqa: E402
from connector.simulator import ManualClock, Simulator, generate_traffic, plan_status_changes  # noqa: E402
from connector.simulator.graph import parse_graph_datetime  # noqa: E402
from connector.state import Checkpoint  # noqa: E402
from connector.sync import FeedSync, SyncPolicy  # noqa: E402
from connector.transport import ConnectorSession  # noqa: E402

TICK = timedelta(minutes=5)
QUOTA_PER_TICK = 100  # Graph: 100 requests per 5 minutes per tenant, and a tick is 5 minutes
MINUTE = timedelta(minutes=1)


def visible_at(row: Mapping[str, Any]) -> datetime:
    """98 % of messages 5-10 min after receipt, 2 % 10-60 min (stable per message id)."""
    digest = hashlib.sha256(str(row["id"]).encode()).digest()
    pick = int.from_bytes(digest[:4], "big") / 2**32
    fraction = int.from_bytes(digest[4:12], "big") / 2**64
    received = parse_graph_datetime(str(row["receivedDateTime"]))
    if pick < 0.02:
        return received + 10 * MINUTE + 50 * MINUTE * fraction
    return received + 5 * MINUTE + 5 * MINUTE * fraction


class MemoryStore:
    """The live checkpoint kept as objects (no encoding: that cost is benchmark (e))."""

    def __init__(self) -> None:
        self._saved: Checkpoint | None = None
        self._etag = 0

    def load(self, feed: str) -> StoredCheckpoint | None:
        if self._saved is None:
            return None
        # The saved ledger is a view of the last run's ledger, unchanged since its final save: copy it once.
        saved = Checkpoint(progress=self._saved.progress, ledger=dict(self._saved.ledger))
        return StoredCheckpoint(checkpoint=saved, etag=str(self._etag))

    def save(self, checkpoint: Checkpoint, etag: str | None, changes: object = None) -> str:
        self._saved = checkpoint
        self._etag += 1
        return str(self._etag)

    def list_feeds(self, prefix: str) -> list[str]:
        return []

    def put_dead_letter(self, letter: object) -> str:
        raise AssertionError("no record should be dead-lettered")


@dataclass
class TickSink:
    """Rows accepted, each with the data-clock time of the tick that stored it."""

    clock: ManualClock
    stored: list[tuple[str, int, datetime]] = field(default_factory=list)

    def upload(self, rows: Sequence[Mapping[str, object]]) -> UploadResult:
        now = self.clock()
        self.stored.extend((str(r["MessageTraceId"]), int(str(r["StatusRevision"])), now) for r in rows)
        return UploadResult()


@dataclass
class Result:
    rate: int
    hours: float
    warmup_ticks: int
    requests: list[int]
    delays: list[float]
    rows: int
    lookbacks: dict[str, int]
    seconds: float


def rows_per_message(sample_seed: int = 99) -> float:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = generate_traffic(start, start + timedelta(hours=1), 2000, seed=sample_seed)
    return len(rows) / 2000


def run(rate: int, hours: float, *, warmup: timedelta, tiered: bool, ratio: float) -> Result:
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = ManualClock(t0)
    per_tick_messages = max(1, round(rate / ratio / 12))
    started = time.monotonic()
    with Simulator(clock=clock, graph_quota=(10**9, 300.0)) as sim, ExitStack() as resources:
        env = {
            **sim.connector_env(),
            "CHECKPOINT_STORE": "file",
            "INITIAL_LOOKBACK_HOURS": str(max(warmup / timedelta(hours=1), 1.0)),
            "HEALTH_ROWS": "off",
            "HTTP_TIMEOUT_SECONDS": "120",
        }
        if not tiered:
            env["SHORT_LOOKBACK_MINUTES"] = "60"
        settings = Settings.from_env(env)
        session = ConnectorSession(ca_bundle=settings.ca_bundle, timeout_seconds=120, connection_retries=0)
        resources.callback(session.close)
        tokens = graph_token_provider(settings)
        store = MemoryStore()
        sink = TickSink(clock)
        visible: dict[str, datetime] = {}

        def add(start: datetime, end: datetime, seed: int) -> None:
            messages = max(1, round(per_tick_messages * (end - start) / TICK))
            rows = generate_traffic(start, end, messages, seed=seed)
            sim.graph.add(rows, visible_at=visible_at)
            sim.graph.schedule(plan_status_changes(rows, seed=seed))
            for row in rows:
                visible.setdefault(str(row["id"]), visible_at(row))

        # History before the first tick (read by the first run), then traffic a tick ahead of each tick.
        add(t0 - warmup, t0 + TICK, seed=1)
        ticks = int(timedelta(hours=hours) / TICK)
        requests: list[int] = []
        lookbacks: dict[str, int] = {}
        for index in range(ticks):
            now = t0 + index * TICK
            clock.set(now)
            add(now + TICK, now + 2 * TICK, seed=index + 2)
            deadline = Deadline(settings.run_time_budget)
            source = GraphMessageTraceSource(
                base_url=settings.graph_base_url,
                tokens=tokens,
                session=session,
                timeout_seconds=120,
                max_retries=settings.http_max_retries,
                backoff_seconds=settings.http_retry_backoff_seconds,
                deadline=deadline,
            )
            ports = FeedPorts(
                source=source,
                sink=sink,
                store=store,
                dead_letters=store,
                verifier=None,
                claims=None,
                domains=None,
            )
            sync = FeedSync(ports, SyncPolicy.from_settings(settings), clock=clock, deadline=deadline)
            before = len(sim.graph.requests(path="messageTraces"))
            report = sync.run_live()
            if report.error is not None:
                raise SystemExit(f"tick {index} failed: {report.error}")
            requests.append(len(sim.graph.requests(path="messageTraces")) - before)
            key = str(report.lookback)
            lookbacks[key] = lookbacks.get(key, 0) + 1
            if index % 6 == 5:
                print(
                    f"  {rate:>7,}/h tick {index + 1}/{ticks}: {requests[-1]} requests, {report.lookback}, "
                    f"ledger {report.ledger_entries:,}, {time.monotonic() - started:.0f} s",
                    flush=True,
                )
        warmup_ticks = int(warmup / TICK)
        measured_from = t0 + warmup_ticks * TICK
        delays = [
            (stored_at - visible[trace_id]).total_seconds() / 60
            for trace_id, revision, stored_at in sink.stored
            if revision == 0 and visible[trace_id] >= measured_from
        ]
    return Result(
        rate=rate,
        hours=hours,
        warmup_ticks=warmup_ticks,
        requests=requests[warmup_ticks:],
        delays=delays,
        rows=len(sink.stored),
        lookbacks=lookbacks,
        seconds=time.monotonic() - started,
    )


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="*", default=[10_000, 100_000, 500_000])
    parser.add_argument("--hours", type=float, default=3.0, help="hours of ticks (500 k: --hours-500k)")
    parser.add_argument("--hours-500k", type=float, default=2.0)
    parser.add_argument(
        "--warmup-minutes", type=int, default=60, help="history before the first tick, not measured"
    )
    parser.add_argument("--untiered", action="store_true", help="SHORT_LOOKBACK_MINUTES = overlap (no tiers)")
    args = parser.parse_args(argv)
    settings_note = (
        "untiered: every tick re-reads the 60-min overlap"
        if args.untiered
        else ("SHORT_LOOKBACK_MINUTES 10, FULL_REREAD_MINUTES 60, OVERLAP_LOOKBACK_MINUTES 60")
    )
    print(f"live feed, ticks every 5 min, SETTLE_DELAY_MINUTES 2, {settings_note}")
    ratio = rows_per_message()
    target_delay = 5 + 2 + 1
    for rate in args.rates:
        hours = args.hours_500k if rate >= 500_000 else args.hours
        result = run(
            rate, hours, warmup=timedelta(minutes=args.warmup_minutes), tiered=not args.untiered, ratio=ratio
        )
        mean = statistics.fmean(result.requests)
        peak = max(result.requests)
        p95 = percentile(result.delays, 0.95)
        print(
            f"{rate:>7,} records/h, {hours:g} h of ticks ({len(result.requests)} measured after "
            f"{result.warmup_ticks} warm-up), {result.rows:,} rows stored, {result.seconds:.0f} s; "
            f"tiers {result.lookbacks}"
        )
        target = "  target <= 50 %" if rate >= 500_000 else ""
        print(
            f"  (h) Graph requests per tick: mean {mean:.1f} ({mean / QUOTA_PER_TICK:.0%} of the quota), "
            f"max {peak} ({peak / QUOTA_PER_TICK:.0%}){target}"
        )
        print(
            f"  (g) visible -> stored: p50 {percentile(result.delays, 0.5):.1f} min, p95 {p95:.1f} min, "
            f"p99 {percentile(result.delays, 0.99):.1f} min, max {max(result.delays):.1f} min "
            f"over {len(result.delays):,} records; target p95 <= {target_delay} min (5 + 2 + 1)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
