"""Crash harness: SIGKILL the connector at seeded points, re-run, check nothing lost or twice.

The connector runs as a real process (``python -m connector run``) against the
simulator and Azurite. Each attempt arms one kill point, chosen by a seeded RNG:

* ``paging``        while Graph answers a ``messageTraces`` page
* ``mid_batch``     while the ingestion service receives a batch (not stored)
* ``accepted``      after the service stored a batch, before the client hears 204
* ``save_before``   during a checkpoint snapshot write (first save, compaction), before it reaches storage
* ``save_after``    during a checkpoint snapshot write, after storage took it
* ``journal_before`` during a checkpoint journal append (intent or commit), before it reaches storage
* ``journal_after``  during a checkpoint journal append, after storage took it
* ``random_time``   at a random moment (0.3-1.0 s into the process)
* ``health_write``  while the ingestion service receives the run's health row (after its checkpoint work)

and fault storms (Graph 429/5xx/timeouts/resets, ingestion 500/503/429) are mixed
in. Between attempts new mail arrives and in-flight mail changes status. After a
kill the dead run's lease is broken (as ``python -m connector unlock --force`` does:
the run renewed it moments before it died, so plain ``unlock`` would ask for
``--force``); the high-water mark must never move backwards. At the end the table must hold every
(trace id, recipient) with its final status, and no (trace id, recipient, status)
twice. The health rows (``MessageTraceHealth_CL``, the DCR's second stream) are kept
apart by the simulator and never counted as mail rows; ``health_rows`` says how many arrived.

    .venv/bin/python -m tests.crash.harness --kills 200 --seed 7
    .venv/bin/python -m tests.crash.harness --kills 60 --seed 7 --big-tenant
    .venv/bin/python -m tests.crash.harness --kills 40 --seed 2030 --queue

``--big-tenant`` gives the tenant a first slice that needs more Graph pages than the
quota allows one run (small server pages, a small quota that refills between runs, as
five minutes would), and also counts the unkilled runs after which the high-water
mark did not move although data was due (``hwm_stalls``; must be 0).

``--reconcile`` makes every third attempt an operator's repair: a few stored rows (inside the
live feed's coverage, over 30 minutes old) are dropped from the table, as a lost batch would
leave them, and ``reconcile --repair`` runs instead of ``run``, armed with the same kill points
(its Graph reads, its uploads, its live-checkpoint writes). A last, unkilled repair runs before
the final check, which must then find every planted row back, once.

``--queue`` adds a backfill on Azure: ``backfill --on-azure --slice-hours 2`` (a real
CLI process) queues a band of history older than the live feed's coverage start on
Azurite's queue service, and about half of the attempts are then queue workers
(tests/crash/queue_worker.py: one message, handled as the Functions host would, in a
process of its own) instead of live runs. A worker is killed at the same points while it
runs its slice (``worker paging``, ...; ``worker random_time`` counts from its receipt of
the message), or at ``worker before_delete``: after the function returned, before the
message's delete, so the message comes back and its slice runs again. A killed worker's
message reappears when its visibility timeout lapses, its dequeue count one higher; the
slice's lease is broken as for the live feed. A message received a sixth time is moved to
the poison queue (as the host does after ``maxDequeueCount`` = 5), and the harness then
re-runs the same ``backfill --on-azure`` command, as an operator reading ``status``
would. To make sure that path is taken, a second one-slice job's message is killed five
times in a row at the end (``poison_streak``). The queue is then drained without kills,
and the final check covers the queued history too.

The last line printed is ``kills=N, lost=N, duplicated=N``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from connector.checkpoint import slice_feed_name
from connector.locks import BlobRunLock
from connector.mapping import format_datetime, normalise_status
from connector.queued import job_slices, slice_state
from connector.quota_store import quota_blob_name
from connector.simulator import Simulator, generate_traffic
from connector.simulator.azurite import ACCOUNT, ACCOUNT_KEY, start_azurite
from connector.simulator.http import Request
from connector.slice_queue import POISON_SUFFIX
from connector.store import BlobCheckpointStore
from tests.crash.blob_proxy import KillingBlobProxy

ROOT = Path(__file__).resolve().parents[2]
PHASES = (
    "paging",
    "mid_batch",
    "accepted",
    "save_before",
    "save_after",
    "journal_before",
    "journal_after",
    "random_time",
    "health_write",
)
WORKER_PHASES = (
    "before_delete",
    "paging",
    "mid_batch",
    "accepted",
    "journal_before",
    "journal_after",
    "random_time",
    "save_before",
    "save_after",
)
"""Where a queue worker is killed: while its slice runs, or between the function's success and the delete.

A slice's snapshot is written by ``backfill --on-azure`` (its first save) and by the worker only
when its journal is compacted, so ``save_*`` come last: a worker often finishes without reaching them.
"""
STREAK_PHASES = ("paging", "mid_batch", "accepted", "journal_before", "paging")
"""Kill points every delivery of an unfinished slice with data reaches (first occurrence): the poison
streak's. Not ``before_delete``: the slice would be done, and a done slice's deliveries reach none."""
QUEUE = "crash-backfill"
WORKER_VISIBILITY_SECONDS = 2
HEALTH_TABLE = "MessageTraceHealth_CL"
CONTAINER = "crash-harness"


@dataclass
class HarnessResult:
    kills: int
    lost: int
    duplicated: int
    attempts: int
    phases: Counter[str] = field(default_factory=Counter)
    hwm_regressions: int = 0
    hwm_stalls: int = 0
    concurrency_faults: list[str] = field(default_factory=list)
    """Concurrent commands that did not end as they must (both overlapping backfills ran, say)."""
    caught_up: bool = False
    possible_duplicates_reported: int = 0
    health_rows: int = 0
    """Health rows that arrived (at most one per attempt: a killed run may not send its own)."""
    worker_deliveries: int = 0
    """Queue messages a worker received (killed or not); ``--queue`` only."""
    poisoned: int = 0
    """Messages the emulated host moved to the poison queue (each followed by a re-run of its command)."""
    poison_messages: int = 0
    """What the poison queue holds at the end (equals ``poisoned``: nothing else puts messages there)."""
    queue_left: int = 0
    """Messages still on the backfill queue at the end (must be 0: every slice ran to its end)."""
    slices_not_done: list[str] = field(default_factory=list)
    """Queued slices whose document does not say done at the end (must be empty)."""
    queue_faults: list[str] = field(default_factory=list)
    """What the queue did not do as it must (a poison streak that did not poison, say)."""
    planted_gaps: int = 0
    """Rows dropped from the table before ``reconcile --repair`` attempts (``--reconcile`` only)."""
    reconcile_runs: int = 0
    """``reconcile --repair`` attempts (killed or not)."""
    reconcile_kills: int = 0
    """``reconcile --repair`` attempts that were killed."""
    reconcile_faults: list[str] = field(default_factory=list)
    """What reconcile did not do as it must (the last, unkilled one left rows missing, say)."""

    @property
    def summary(self) -> str:
        return f"kills={self.kills}, lost={self.lost}, duplicated={self.duplicated}"


class _Child:
    """The connector process of one attempt, and a kill switch the servers can pull."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.killed = threading.Event()

    def kill(self) -> None:
        if self.process is not None and not self.killed.is_set():
            self.killed.set()
            os.kill(self.process.pid, signal.SIGKILL)


def _counting_hook(path_part: str, occurrence: int, child: _Child, method: str | None = None):  # noqa: ANN202
    seen = [0]

    def hook(request: Request) -> bool:
        if path_part not in request.path or (method is not None and request.method != method):
            return False
        seen[0] += 1
        if seen[0] == occurrence:
            child.kill()
            return True
        return False

    return hook


def _storm(sim: Simulator, rng: random.Random) -> None:
    """Maybe queue a few transient faults that the connector must ride out."""
    if rng.random() < 0.3:
        sim.graph.inject(
            rng.choice([429, 500, 502, 503, 504, "timeout", "reset"]),
            headers={"Retry-After": "0"},
            seconds=0.5,
        )
    if rng.random() < 0.3:
        sim.ingestion.inject(rng.choice([500, 503]))
    if rng.random() < 0.15:
        sim.ingestion.inject(429, headers={"Retry-After": "0"})


def _new_traffic(
    sim: Simulator, rng: random.Random, attempt: int, messages: int = 10, changes_within: int = 45
) -> None:
    """New mail, and status changes of mail received within ``changes_within`` minutes.

    The connector promises status changes only within OVERLAP_LOOKBACK_MINUTES of receipt,
    so ``changes_within`` stays below the overlap the run uses.
    """
    now = sim.now()
    fresh = generate_traffic(
        now - timedelta(minutes=4), now - timedelta(seconds=90), messages, seed=10_000 + attempt
    )
    sim.graph.add(fresh, visible_at=now)
    recent = [
        row
        for row in sim.graph.rows(visible_only=True)
        if row["status"].lower() in ("pending", "gettingstatus")
        and datetime.fromisoformat(row["receivedDateTime"].replace("Z", "+00:00"))
        > now - timedelta(minutes=changes_within)
    ]
    for row in rng.sample(recent, min(3, len(recent))):
        sim.graph.set_status(
            row["id"], row["recipientAddress"], rng.choice(["delivered", "quarantined", "failed"])
        )


# Two bands of history before the live feed's coverage start, as (newest, oldest) ages.
HISTORY_BANDS = ((timedelta(hours=16), timedelta(hours=20)), (timedelta(hours=10), timedelta(hours=14)))
HISTORY_MESSAGES = 150
# ``--queue``: history from 24 h back queued with `backfill --on-azure` in two-hour slices (one slice
# per four kills asked, at least four: work for the workers all along), and an older one-slice job
# whose message the poison streak kills five times.
QUEUED_FROM = timedelta(hours=24)
QUEUED_SLICE = timedelta(hours=2)
QUEUED_MESSAGES_PER_SLICE = 75
STREAK_MESSAGES = 40
DRAIN_SECONDS = 300.0
"""How long the final drain waits for the queue to empty (a deferred slice's continuation waits a minute)."""


RECONCILE_SPAN = timedelta(hours=6)
"""``--reconcile``: how far back from the harness's start reconcile compares (the live feed's coverage: 7 h)."""


def _connector_argv(env: dict[str, str], command: list[str]) -> list[str]:
    """The connector process's command line; with ``--tenants``, every command names the one tenant."""
    tenant = ["--tenant", json.loads(env["TENANTS"])[0]["name"]] if "TENANTS" in env else []
    return [sys.executable, "-m", "connector", "--no-progress", *command, *tenant]


def _started_together(env: dict[str, str], commands: list[list[str]]) -> list[tuple[int, str]]:
    """Start one connector process per command at the same moment; (exit code, stderr + stdout) of each."""
    processes = [
        subprocess.Popen(
            _connector_argv(env, command),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        if "Traceback" in err:
            raise RuntimeError(f"connector crashed on its own:\n{err}")
        outcomes.append((process.returncode, err + out))
    return outcomes


def _ends(outcomes: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Each command's exit code with its error and warning lines (what a fault report needs, not the summary)."""
    return [
        (code, [line for line in output.splitlines() if "error" in line.lower() or " WARNING " in line][-6:])
        for code, output in outcomes
    ]


def _backfill(start: datetime, end: datetime) -> list[str]:
    return [
        "backfill",
        "--start",
        start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--end",
        end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]


BIG_TENANT_ROWS = 2400
BIG_TENANT_PAGE = 20
BIG_TENANT_QUOTA = 40


def _on_azure(ages: tuple[timedelta, timedelta], now: datetime, slice_hours: int) -> list[str]:
    oldest, newest = ages
    return [*_backfill(now - oldest, now - newest), "--on-azure", "--slice-hours", str(slice_hours)]


def run_harness(
    kills: int,
    seed: int,
    *,
    verification: bool = True,
    log: bool = False,
    big_tenant: bool = False,
    queue: bool = False,
    tenants: bool = False,
    reconcile: bool = False,
) -> HarnessResult:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="crash-harness-"))
    azurite = start_azurite(workdir, queues=queue)
    proxy = KillingBlobProxy(azurite.port)
    try:
        with Simulator(graph_quota=(1_000_000, 300.0)) as sim:
            now = sim.now()
            if big_tenant:
                # A dense first hour: 2,400 messages (more recipients still) in 120 pages of 20,
                # three times what the quota gives one run.
                sim.graph.add(
                    generate_traffic(
                        now - timedelta(hours=7),
                        now - timedelta(hours=6),
                        BIG_TENANT_ROWS,
                        seed=seed + 50_000,
                    )
                )
                sim.graph.max_page_size = BIG_TENANT_PAGE
                sim.graph.quota.limit = BIG_TENANT_QUOTA
            sim.graph.add(
                generate_traffic(now - timedelta(hours=6), now - timedelta(minutes=5), 800, seed=seed)
            )
            # History before the live feed's coverage start (7 h back): only backfills store it.
            for number, (newest, oldest) in enumerate(HISTORY_BANDS):
                sim.graph.add(
                    generate_traffic(
                        now - oldest, now - newest, HISTORY_MESSAGES, seed=seed + 70_000 + number
                    )
                )
            queued_job = (QUEUED_FROM + QUEUED_SLICE * max(4, kills // 4), QUEUED_FROM)
            streak_job = (queued_job[0] + timedelta(hours=2), queued_job[0] + timedelta(hours=1))
            if queue:
                for number, ((oldest, newest), count) in enumerate(
                    (
                        (queued_job, QUEUED_MESSAGES_PER_SLICE * max(4, kills // 4)),
                        (streak_job, STREAK_MESSAGES),
                    )
                ):
                    margin = timedelta(minutes=10)  # no mail on the jobs' edges
                    sim.graph.add(
                        generate_traffic(
                            now - oldest + margin, now - newest - margin, count, seed=seed + 80_000 + number
                        )
                    )
            sim.logs_query.latency_seconds = 0.3
            via_proxy = (
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{proxy.port}/{ACCOUNT};"
            )
            env = {
                **os.environ,
                **sim.connector_env(),
                "STORAGE_CONNECTION_STRING": via_proxy,
                "CHECKPOINT_CONTAINER": CONTAINER,
                "INITIAL_LOOKBACK_HOURS": "7",
                "MAX_SLICE_HOURS": "1",
                "SETTLE_DELAY_MINUTES": "1",
                # Untiered: status changes up to 45 min old are checked after about a minute of real time,
                # and the deep re-read is paced by feed progress (tests/integration/test_live_tiers.py).
                "SHORT_LOOKBACK_MINUTES": "60",
                "HTTP_MAX_RETRIES": "4",
                "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
                "HTTP_TIMEOUT_SECONDS": "5",
                "LOCK_LEASE_SECONDS": "15",
                # Compact the checkpoint every few saves, so kills land in compactions too.
                "CHECKPOINT_JOURNAL_MIN_KIB": "8",
                "PYTHONPATH": str(ROOT),
                # What the harness models is Graph's quota (the simulator's); the connector's own pacing
                # to it is tested in tests/integration/test_quota_*. A 1-second budget window never holds a run.
                "GRAPH_QUOTA_WINDOW_SECONDS": "1",
            }
            if big_tenant:
                # A budget well under the quota's Retry-After (up to 300 s), so a run that meets the
                # quota ends "throttled" instead of sleeping, as a timer run with a 10-minute limit does.
                env |= {
                    "MAX_PAGES_PER_SLICE": "8",
                    # Every run re-reads the overlap: 5 minutes of the dense hour is 18 of the 40 requests.
                    "OVERLAP_LOOKBACK_MINUTES": "5",
                    "SHORT_LOOKBACK_MINUTES": "5",
                    "RUN_TIME_BUDGET_SECONDS": "60",
                }
            if queue:
                # The queue service directly (the proxy is for blob kill points); the workers' queue.
                env["STORAGE_CONNECTION_STRING"] += f"QueueEndpoint={azurite.queue_endpoint};"
                env["BACKFILL_QUEUE"] = QUEUE
            if verification:
                env |= {"WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0.02"}
            if tenants:
                # The simulator's tenant as a tenant of TENANTS in the shared table (verification keeps to its
                # SourceTenantId), continuing in the deployment's container where the kill points are armed.
                entry = {"name": "home", "tenantId": sim.tenant_id, "useDeploymentContainer": True}
                env["TENANTS"] = json.dumps([entry])
            container = ContainerClient.from_connection_string(azurite.connection_string, CONTAINER)
            store = BlobCheckpointStore(container)
            lock = BlobRunLock(container)
            result = HarnessResult(kills=0, lost=0, duplicated=0, attempts=0)
            last_hwm: datetime | None = None

            def arm(
                phase: str | None,
                child: _Child,
                occurrence: int,
                *,
                snapshot: bytes,
                journal: bytes,
                random_time: tuple[float, float],
            ) -> float | None:
                """Set the kill point ``phase`` (its ``occurrence``-th hit) for ``child``; a random_time's delay."""
                delay = None
                if phase == "paging":
                    sim.graph.on_request = _counting_hook("messageTraces", occurrence, child)
                elif phase == "mid_batch":
                    sim.ingestion.on_request = _counting_hook(
                        "dataCollectionRules", occurrence, child, "POST"
                    )
                elif phase == "accepted":
                    accepted = [0]

                    def on_accepted(batch: object) -> None:
                        accepted[0] += 1
                        if accepted[0] == occurrence:
                            child.kill()

                    sim.ingestion.on_accepted = on_accepted
                elif phase in ("save_before", "save_after"):
                    # The snapshot: the first save and each compaction (CHECKPOINT_JOURNAL_MIN_KIB is small here).
                    proxy.arm(snapshot, occurrence, landed=phase == "save_after", kill=child.kill)
                elif phase in ("journal_before", "journal_after"):
                    # A journal append (an intent, or a commit with its ledger entries).
                    proxy.arm(journal, occurrence, landed=phase == "journal_after", kill=child.kill)
                elif phase == "health_write":
                    # One health row per run: kill on the first POST to its stream.
                    sim.ingestion.on_request = _counting_hook("MessageTraceHealth", 1, child, "POST")
                elif phase == "random_time":
                    delay = rng.uniform(*random_time)
                if phase is not None:
                    _storm(sim, rng)
                return delay

            def disarm() -> None:
                sim.graph.on_request = None
                sim.ingestion.on_request = None
                sim.ingestion.on_accepted = None
                sim.graph.clear_faults()
                sim.ingestion.clear_faults()
                proxy.disarm()
                sim.graph.quota.reset()  # the quota refills between timer runs
                with contextlib.suppress(
                    ResourceNotFoundError
                ):  # and a 429's Retry-After in the budget is over
                    container.delete_blob(quota_blob_name(env["TENANT_ID"]))

            def attempt(phase: str | None, command: list[str] | None = None) -> bool:
                """One run of the connector (or ``command``); True if it was killed."""
                nonlocal last_hwm
                child = _Child()
                occurrence = rng.randint(1, 3)
                delay = arm(
                    phase,
                    child,
                    occurrence,
                    snapshot=b"/live.json",
                    journal=b"/journal/live/",
                    random_time=(0.3, 1.0),
                )
                timer = None if delay is None else threading.Timer(delay, child.kill)
                child.process = subprocess.Popen(
                    _connector_argv(env, command or ["run"]),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                if timer is not None:
                    timer.start()
                out, err = child.process.communicate(timeout=300)
                if timer is not None:
                    timer.cancel()
                disarm()
                result.attempts += 1
                killed = child.killed.is_set() and child.process.returncode == -signal.SIGKILL
                if killed:
                    # The low-level break: the process is dead, so no check whether it is alive.
                    lock.break_lock("live")
                elif child.process.returncode != 0 and "Traceback" in err:
                    # A run that stopped on an injected fault is fine; a traceback is a bug.
                    raise RuntimeError(f"connector crashed on its own:\n{err}")
                stored = store.load("live")
                hwm = None if stored is None else stored.checkpoint.progress.high_water_mark
                if last_hwm is not None and (hwm is None or hwm < last_hwm):
                    result.hwm_regressions += 1
                outcome = (
                    None
                    if stored is None or stored.checkpoint.progress.last_run is None
                    else (stored.checkpoint.progress.last_run["outcome"])
                )
                if (
                    big_tenant
                    and not killed
                    and outcome in ("completed", "budget_exhausted", "throttled")
                    and (hwm is None or (last_hwm is not None and hwm <= last_hwm))
                ):
                    # A run that ended normally (not killed, not failed on an injected fault, not deferred
                    # while a killed run's batch ages) had data due, so it must have moved the mark.
                    result.hwm_stalls += 1
                last_hwm = hwm or last_hwm
                if log:
                    print(
                        f"attempt {result.attempts}: phase={phase} killed={killed} rc={child.process.returncode} "
                        f"outcome={outcome} hwm={hwm}"
                    )
                return killed

            queued_commands: dict[str, list[str]] = {}
            """Each queued job's ``backfill --on-azure`` command, by the job's name (re-run after a poison)."""

            def enqueue(command: list[str]) -> None:
                ((code, output),) = _started_together(env, [command])
                if code != 0:
                    raise RuntimeError(f"backfill --on-azure exited {code}: {output}")
                (job,) = {
                    line.split(": ", 1)[0]
                    for line in output.splitlines()
                    if line.startswith("backfill/") and " slices of " in line
                }
                queued_commands[job] = command

            def worker(phase: str | None, *, occurrence: int | None = None, wait: float = 0.0) -> str:
                """One queue worker process: ``killed``, ``empty`` (no message), ``poisoned``, ``failed`` or ``ran``."""
                child = _Child()
                occurrence = occurrence or rng.randint(1, 3)
                # A slice's snapshot is `backfill/<job>/<start>_<end>.json`, its journal under journal/backfill/.
                delay = arm(
                    phase,
                    child,
                    occurrence,
                    snapshot=b"Z.json",
                    journal=b"/journal/backfill/",
                    random_time=(0.05, 0.8),  # from the worker's receipt of its message
                )
                timer = None if delay is None else threading.Timer(delay, child.kill)
                lines: list[str] = []

                def read(stream: Any) -> None:
                    for line in stream:
                        lines.append(line.strip())
                        if line.startswith("received") and timer is not None:
                            timer.start()
                        elif line.startswith("ran") and phase == "before_delete":
                            child.kill()

                child.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.crash.queue_worker",
                        f"--visibility-seconds={WORKER_VISIBILITY_SECONDS}",
                        f"--wait-seconds={wait}",
                        *(["--hold-before-delete"] if phase == "before_delete" else []),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                reader = threading.Thread(target=read, args=(child.process.stdout,), daemon=True)
                reader.start()
                assert child.process.stderr is not None
                err = child.process.stderr.read()
                child.process.wait(timeout=300)
                reader.join()
                if timer is not None:
                    timer.cancel()
                disarm()
                received = [line.split() for line in lines if line.startswith("received")]
                if not received:
                    if child.process.returncode != 0:
                        raise RuntimeError(f"queue worker crashed before receiving:\n{err}")
                    return "empty"
                result.attempts += 1
                result.worker_deliveries += 1
                feed = received[0][2]
                killed = child.killed.is_set() and child.process.returncode == -signal.SIGKILL
                if killed:
                    lock.break_lock(feed)  # the slice's lease: as for the live feed's, after a kill
                    ended = "killed"
                elif child.process.returncode != 0:
                    raise RuntimeError(f"queue worker crashed on its own:\n{err}")
                elif "poisoned" in lines:
                    # The host's poison queue keeps no reason; an operator reads `status` and re-runs the command.
                    result.poisoned += 1
                    job = feed.rsplit("/", 1)[0]
                    enqueue(queued_commands[job])
                    ended = "poisoned"
                else:
                    ended = "failed" if any(line.startswith("failed") for line in lines) else "ran"
                if log:
                    print(
                        f"worker {result.attempts}: phase={phase} delivery={received[0][1]} {feed} -> {ended}"
                        f" {[line for line in lines if not line.startswith('received')]}"
                    )
                return ended

            queue_client = (
                QueueClient.from_connection_string(env["STORAGE_CONNECTION_STRING"], QUEUE) if queue else None
            )
            poison_client = (
                QueueClient.from_connection_string(env["STORAGE_CONNECTION_STRING"], QUEUE + POISON_SUFFIX)
                if queue
                else None
            )

            def waiting(client: QueueClient | None) -> int:
                """Messages on ``client``'s queue, hidden ones (killed deliveries, delayed continuations) too."""
                assert client is not None
                with contextlib.suppress(ResourceNotFoundError):
                    return int(client.get_queue_properties().approximate_message_count or 0)
                return 0

            def drain() -> None:
                """Unkilled workers until the queue holds nothing, hidden messages included."""
                deadline = time.monotonic() + DRAIN_SECONDS
                while waiting(queue_client) and time.monotonic() < deadline:
                    worker(None, wait=WORKER_VISIBILITY_SECONDS + 1.0)

            def check_queue() -> None:
                """The queue empty, each poisoned message counted, every queued slice's document done."""
                result.queue_left = waiting(queue_client)
                result.poison_messages = waiting(poison_client)
                live = store.load("live")
                live_start = None if live is None else live.checkpoint.progress.coverage_start
                for job_name in queued_commands:
                    job = store.load(job_name)
                    assert job is not None
                    for window in job_slices(job.checkpoint.progress):
                        feed = slice_feed_name(job_name, window.start, window.end)
                        piece = store.load(feed)
                        state = slice_state(
                            None if piece is None else piece.checkpoint, running=False, live_start=live_start
                        )
                        if state != "done":
                            result.slices_not_done.append(f"{feed}: {state}")

            def worker_kill(phase: str, **options: Any) -> str:
                ended = worker(phase, **options)
                if ended == "killed":
                    result.kills += 1
                    result.phases[f"worker {phase}"] += 1
                return ended

            def plant_gap() -> None:
                """Drop up to three stored rows more than 30 minutes old, as a lost batch would leave them.

                Only rows inside what reconcile compares: not the history only backfills store.
                """
                oldest, newest = now - RECONCILE_SPAN, sim.now() - timedelta(minutes=30)
                candidates = sorted(
                    str(row["RowId"])
                    for row in sim.ingestion.rows()
                    if oldest <= datetime.fromisoformat(str(row["Received"]).replace("Z", "+00:00")) < newest
                )
                chosen = set(rng.sample(candidates, min(3, len(candidates))))
                result.planted_gaps += sim.ingestion.default_dcr.drop_rows(lambda row: row["RowId"] in chosen)

            def reconcile_command() -> list[str]:
                # Inside the live feed's coverage (INITIAL_LOOKBACK_HOURS=7 from the first run) up to now.
                start, end = now - RECONCILE_SPAN, sim.now()
                return [
                    "reconcile",
                    "--start",
                    format_datetime(start),
                    "--end",
                    format_datetime(end),
                    "--repair",
                ]

            while result.kills < kills:
                if queue and not queued_commands and store.load("live") is not None:
                    # History older than the live feed's coverage start, queued once the feed has started.
                    enqueue(_on_azure(queued_job, now, 2))
                if queued_commands and rng.random() < 0.5:
                    # A queue worker instead of a live run: each kill point in turn first, then at random.
                    tried = result.worker_deliveries
                    phase = (
                        WORKER_PHASES[tried % len(WORKER_PHASES)]
                        if tried < 2 * len(WORKER_PHASES)
                        else rng.choice(WORKER_PHASES)
                    )
                    if worker_kill(phase) != "empty":
                        _new_traffic(sim, rng, result.attempts)
                        continue
                phase = (
                    PHASES[result.kills % len(PHASES)] if result.kills < len(PHASES) else rng.choice(PHASES)
                )
                command = None
                if reconcile and result.attempts % 3 == 2 and store.load("live") is not None:
                    # An operator's repair instead of a timer run, after an outage dropped a few rows.
                    plant_gap()
                    command = reconcile_command()
                    result.reconcile_runs += 1
                if attempt(phase, command):
                    result.kills += 1
                    result.reconcile_kills += command is not None
                    result.phases[phase] += 1
                # Attempts follow each other in seconds, not the five minutes between timer runs, so new
                # mail piles up near "now"; with the big tenant's tiny pages it is kept light, so the
                # stress stays the dense first hour.
                _new_traffic(
                    sim,
                    rng,
                    result.attempts,
                    messages=2 if big_tenant else 10,
                    changes_within=3 if big_tenant else 45,  # overlap: 5 min (big tenant), 60 min
                )
                if result.attempts > kills * 6 + 20:
                    raise RuntimeError(
                        "kill points are not being reached; the harness is not exercising anything"
                    )
            # Operators at the same moment: two overlapping backfills of the first band started together
            # (one runs, the other is refused naming it), then a live run next to a backfill of the second.
            first, second = (
                _backfill(now - timedelta(hours=22), now - timedelta(hours=15)),
                _backfill(now - timedelta(hours=21), now - timedelta(hours=15, minutes=30)),
            )
            quota, sim.graph.quota.limit = sim.graph.quota.limit, 1_000_000  # backfills are not re-run below
            codes = sorted(code for code, _ in _started_together(env, [first, second]))
            if codes != [0, 2]:
                result.concurrency_faults.append(f"two overlapping backfills exited {codes}, not [0, 2]")
            beside = _started_together(env, [["run"], _backfill(now - timedelta(hours=15), now)])
            if [code for code, _ in beside] != [0, 0]:
                result.concurrency_faults.append(f"a live run beside a backfill: {_ends(beside)}")
            sim.graph.quota.limit = quota
            sim.graph.quota.reset()
            if queue:
                drain()
                # The poison streak: the one message of a one-slice job killed on five deliveries in a row;
                # the sixth is poisoned (and the command re-run), then the queue is drained.
                enqueue(_on_azure(streak_job, now, 1))
                poisoned = result.poisoned
                for delivery in range(len(STREAK_PHASES) + 3):
                    phase = STREAK_PHASES[delivery % len(STREAK_PHASES)]
                    ended = worker_kill(phase, occurrence=1, wait=WORKER_VISIBILITY_SECONDS + 5.0)
                    if ended in ("poisoned", "ran", "empty"):
                        break
                if result.poisoned == poisoned:
                    result.queue_faults.append(f"the poison streak ended {ended}, not poisoned")
                drain()
                check_queue()
            # Let the connector finish: runs without kills until one completes with nothing left to do.
            for _ in range(40 if big_tenant else 10):  # the big tenant needs many quota-sized runs
                attempt(None)
                stored = store.load("live")
                last = None if stored is None else stored.checkpoint.progress.last_run
                if last is not None and last["outcome"] == "completed" and last["rows_uploaded"] == 0:
                    break
            if reconcile:
                # The last repair runs without a kill: every planted gap (and any still open) is filled.
                plant_gap()
                child_env_command = reconcile_command()
                ((code, output),) = _started_together(env, [child_env_command])
                result.reconcile_runs += 1
                if code != 0:
                    result.reconcile_faults.append(
                        f"the last reconcile --repair exited {code}: {output[-400:]}"
                    )
            stored = store.load("live")
            assert stored is not None
            last_run = stored.checkpoint.progress.last_run
            # "Nothing lost" below counts only rows before the high-water mark: the feed must have caught up.
            result.caught_up = last_run is not None and last_run["outcome"] == "completed"
            result.possible_duplicates_reported = stored.checkpoint.progress.possible_duplicates_total
            window_end = stored.checkpoint.progress.high_water_mark
            assert window_end is not None
            rows = sim.ingestion.rows()  # EmailEvents_CL only: the health rows are another table
            result.health_rows = len(sim.ingestion.rows(HEALTH_TABLE))
            per_status = Counter(
                (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in rows
            )
            per_row = Counter(str(r["RowId"]) for r in rows)
            due = [
                r
                for r in sim.graph.rows()
                if datetime.fromisoformat(r["receivedDateTime"].replace("Z", "+00:00")) <= window_end
            ]
            missing = [
                r
                for r in due
                if (r["id"], r["recipientAddress"].lower(), normalise_status(r["status"])) not in per_status
            ]
            result.lost = len(missing)
            if log:
                for r in missing:
                    held = [
                        (row["Status"], row["StatusRevision"])
                        for row in rows
                        if row["MessageTraceId"] == r["id"]
                        and row["RecipientAddress"].lower() == r["recipientAddress"].lower()
                    ]
                    print(f"lost: {r['id']} {r['receivedDateTime']} graph={r['status']} table={held}")
            result.duplicated = sum(count - 1 for count in per_row.values())
            return result
    finally:
        proxy.close()
        azurite.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SIGKILL the connector at seeded points and check the table")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-verification", action="store_true", help="run without WORKSPACE_ID")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--big-tenant", action="store_true", help="a first slice that needs more pages than one run's quota"
    )
    parser.add_argument(
        "--queue", action="store_true", help="a backfill on Azure whose queue workers are killed too"
    )
    parser.add_argument(
        "--tenants",
        action="store_true",
        help="the tenant as an entry of TENANTS (every command with --tenant)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="every third attempt drops rows from the table and runs reconcile --repair instead of run",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_harness(
        args.kills,
        args.seed,
        verification=not args.no_verification,
        log=args.verbose,
        big_tenant=args.big_tenant,
        queue=args.queue,
        tenants=args.tenants,
        reconcile=args.reconcile,
    )
    print(
        f"attempts={result.attempts} phases={dict(result.phases)} hwm_regressions={result.hwm_regressions}"
        f" hwm_stalls={result.hwm_stalls} caught_up={result.caught_up} health_rows={result.health_rows}"
    )
    for fault in result.concurrency_faults:
        print(f"concurrency fault: {fault}")
    if args.queue:
        print(
            f"worker_deliveries={result.worker_deliveries} poisoned={result.poisoned}"
            f" poison_messages={result.poison_messages} queue_left={result.queue_left}"
            f" slices_not_done={result.slices_not_done}"
        )
    for fault in result.queue_faults:
        print(f"queue fault: {fault}")
    if args.reconcile:
        print(
            f"reconcile_runs={result.reconcile_runs} reconcile_kills={result.reconcile_kills} "
            f"planted_gaps={result.planted_gaps}"
        )
    for fault in result.reconcile_faults:
        print(f"reconcile fault: {fault}")
    print(f"possible duplicates reported by the connector: {result.possible_duplicates_reported}")
    print(f"elapsed {time.monotonic() - started:.0f} s")
    print(result.summary)
    healthy = (
        result.hwm_regressions == 0
        and result.hwm_stalls == 0
        and result.caught_up
        and not result.concurrency_faults
        and not result.queue_faults
        and not result.reconcile_faults
        and result.queue_left == 0
        and not result.slices_not_done
        and result.poison_messages == result.poisoned
    )
    return 0 if result.lost == 0 and result.duplicated == 0 and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
